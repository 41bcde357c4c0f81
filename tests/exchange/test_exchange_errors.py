"""Every fault the venue can throw arrives as the right bkit error, with the real ccxt client
doing the HTTP and the error mapping, and no credential ever shows up in an error or a log."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable

import ccxt
import pytest

from bkit.core.candles import Candle
from bkit.exchange import (
    CcxtExchange,
    DefinitiveExchangeError,
    ExchangeError,
    OrderNotFoundError,
    TransientExchangeError,
    translate_ccxt_error,
)
from bkit.testing import FakeExchange, Fault

ORDER = "/api/v3/order"
KLINES = "/api/v3/klines"
ExchangeFactory = Callable[..., CcxtExchange]


def place(exchange: CcxtExchange, client_order_id: str = "bk-7-XRPETH-1") -> object:
    return exchange.create_order("XRP/ETH", "limit", "buy", 10, 0.001, client_order_id)


@pytest.mark.parametrize(("fault", "rate_limited", "ccxt_error"), [
    (Fault.rate_limit(), True, "DDoSProtection"),  # binance maps HTTP 429 to DDoSProtection
    (Fault.unavailable(), False, "OperationFailed"),  # 503 {"code": -1001}
    (Fault.bad_gateway(), False, "ExchangeNotAvailable"),  # 502 from a proxy
    (Fault.disconnect(), False, "NetworkError"),
])
def test_transient_faults_on_order_placement(
        fake: FakeExchange, exchange: CcxtExchange, fault: Fault, rate_limited: bool,
        ccxt_error: str) -> None:
    fake.fail_next(ORDER, fault)
    with pytest.raises(TransientExchangeError) as caught:
        place(exchange)
    assert caught.value.rate_limited is rate_limited
    assert caught.value.ccxt_error == ccxt_error
    assert caught.value.operation == "create_order"
    assert fake.orders_for("bk-7-XRPETH-1") == []


def test_rate_limit_carries_retry_after(fake: FakeExchange, exchange: CcxtExchange,
                                        xrp_candles: list[Candle]) -> None:
    fake.fail_next(KLINES, Fault.rate_limit())
    with pytest.raises(TransientExchangeError) as caught:
        exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
    assert caught.value.rate_limited is True
    assert caught.value.retry_after_s == 1.0


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.insufficient_balance(), "insufficient_funds"),
    (Fault.duplicate(), "duplicate_order"),
    (Fault.invalid_order(), "invalid_order"),
])
def test_definitive_faults_on_order_placement(
        fake: FakeExchange, exchange: CcxtExchange, fault: Fault, kind: str) -> None:
    fake.fail_next(ORDER, fault)
    with pytest.raises(DefinitiveExchangeError) as caught:
        place(exchange)
    assert caught.value.kind == kind


def test_a_second_order_with_the_same_client_id_is_a_duplicate(
        fake: FakeExchange, exchange: CcxtExchange) -> None:
    place(exchange, "bk-8-XRPETH-1")
    with pytest.raises(DefinitiveExchangeError) as caught:
        place(exchange, "bk-8-XRPETH-1")
    assert caught.value.kind == "duplicate_order"
    assert caught.value.ccxt_error == "InvalidOrder"  # binance's answer, classified by text
    assert len(fake.orders_for("bk-8-XRPETH-1")) == 1


def test_orders_below_the_minimum_notional_are_refused(exchange: CcxtExchange) -> None:
    with pytest.raises(DefinitiveExchangeError) as caught:
        exchange.create_order("XRP/ETH", "limit", "buy", 1, 0.0001, "bk-9-XRPETH-1")
    assert caught.value.kind in ("invalid_order", "bad_request")
    assert "NOTIONAL" in str(caught.value)


def test_unknown_client_order_id_is_order_not_found(exchange: CcxtExchange) -> None:
    with pytest.raises(OrderNotFoundError):
        exchange.fetch_order_by_client_id("XRP/ETH", "never-sent")
    with pytest.raises(OrderNotFoundError):
        exchange.cancel_order_by_client_id("XRP/ETH", "never-sent")


def test_a_timeout_is_transient_and_quick(
        fake: FakeExchange, make_exchange: ExchangeFactory, xrp_candles: list[Candle]) -> None:
    exchange = make_exchange(timeout_ms=300)
    fake.fail_next(KLINES, Fault.timeout(2.0))
    started = time.monotonic()
    with pytest.raises(TransientExchangeError) as caught:
        exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
    assert caught.value.ccxt_error == "RequestTimeout"
    assert time.monotonic() - started < 1.5


def test_an_order_accepted_then_timed_out_is_found_by_client_id(
        fake: FakeExchange, make_exchange: ExchangeFactory) -> None:
    exchange = make_exchange(timeout_ms=300)
    fake.fail_next(ORDER, Fault.accepted_then_timeout(1.0))
    with pytest.raises(TransientExchangeError):
        place(exchange, "bk-10-XRPETH-1")  # outcome unknown to the caller...

    found = exchange.fetch_order_by_client_id("XRP/ETH", "bk-10-XRPETH-1")
    assert found.status == "open"  # ...but the venue has it: adopt, never re-send
    assert len(fake.orders_for("bk-10-XRPETH-1")) == 1


def test_service_comes_back_after_the_fault_is_cleared(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    fake.set_fault(KLINES, Fault.unavailable())
    for _ in range(2):
        with pytest.raises(TransientExchangeError):
            exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
    fake.set_fault(KLINES, None)
    assert exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5) == (
        xrp_candles[:5])


def test_queued_faults_fail_exactly_n_requests(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    fake.fail_next(KLINES, Fault.unavailable(), count=2)
    outcomes = []
    for _ in range(3):
        try:
            exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
            outcomes.append("ok")
        except TransientExchangeError:
            outcomes.append("transient")
    assert outcomes == ["transient", "transient", "ok"]


def test_a_refused_connection_is_transient(make_exchange: ExchangeFactory,
                                           xrp_candles: list[Candle]) -> None:
    with FakeExchange() as gone:
        url = gone.base_url
    exchange = make_exchange(api_base_url=url)
    with pytest.raises(TransientExchangeError) as caught:
        exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
    assert caught.value.ccxt_error in ("NetworkError", "ExchangeNotAvailable")


def test_credentials_never_appear_in_errors_reprs_or_logs(
        fake: FakeExchange, make_exchange: ExchangeFactory, xrp_candles: list[Candle],
        caplog: pytest.LogCaptureFixture) -> None:
    key, secret = "CANARYKEY5f1e2d3c4b5a", "CANARYSECRET9a8b7c6d5e"
    exchange = make_exchange(timeout_ms=300, env={"BKIT_FAKE_BINANCE_API_KEY": key,
                                                  "BKIT_FAKE_BINANCE_SECRET": secret})
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    for fault in (Fault.rate_limit(), Fault.unavailable(), Fault.insufficient_balance(),
                  Fault.timeout(1.0), Fault.bad_gateway()):
        fake.fail_next(ORDER, fault)
        with pytest.raises(ExchangeError) as caught:
            place(exchange, f"canary-{fault.kind}")
        failures.append(caught.value)
    with pytest.raises(OrderNotFoundError) as missing:
        exchange.fetch_order_by_client_id("XRP/ETH", "none")
    failures.append(missing.value)
    with pytest.raises(ExchangeError) as bad:
        exchange.get_candles("NOPE/USDT", "1m", xrp_candles[0].opened_at, 5)
    failures.append(bad.value)

    texts = [repr(exchange), str(exchange), caplog.text]
    for error in failures:
        texts += [str(error), repr(error), repr(error.args), repr(vars(error))]
        assert error.__cause__ is None and error.__context__ is None  # no ccxt object inside
    for text in texts:
        assert key not in text and secret not in text
    assert any(r.api_key == key for r in fake.requests)  # the canary was really in use
    assert "'X-MBX-APIKEY': '***'" in caplog.text  # ccxt's DEBUG request log, masked


def test_secrets_inside_a_ccxt_message_are_scrubbed() -> None:
    error = translate_ccxt_error(ccxt.AuthenticationError("bad key CANARY123 for you"),
                                 "venue", "create_order", None, ["CANARY123"])
    assert "CANARY123" not in str(error)
    assert isinstance(error, DefinitiveExchangeError) and error.kind == "auth"


@pytest.mark.parametrize(("raised", "expected", "kind"), [
    (ccxt.AuthenticationError("x"), DefinitiveExchangeError, "auth"),
    (ccxt.PermissionDenied("x"), DefinitiveExchangeError, "auth"),
    (ccxt.AccountSuspended("x"), DefinitiveExchangeError, "auth"),
    (ccxt.InsufficientFunds("x"), DefinitiveExchangeError, "insufficient_funds"),
    (ccxt.DuplicateOrderId("x"), DefinitiveExchangeError, "duplicate_order"),
    (ccxt.InvalidOrder("binance Duplicate order sent."), DefinitiveExchangeError,
     "duplicate_order"),
    (ccxt.InvalidOrder("x"), DefinitiveExchangeError, "invalid_order"),
    (ccxt.BadSymbol("x"), DefinitiveExchangeError, "bad_symbol"),
    (ccxt.BadRequest("x"), DefinitiveExchangeError, "bad_request"),
    (ccxt.ArgumentsRequired("x"), DefinitiveExchangeError, "bad_request"),
    (ccxt.NotSupported("x"), DefinitiveExchangeError, "not_supported"),
    (ccxt.MarketClosed("x"), DefinitiveExchangeError, "rejected"),
    (ccxt.ExchangeError("x"), DefinitiveExchangeError, "exchange_error"),
    (ccxt.BaseError("x"), DefinitiveExchangeError, "exchange_error"),
    (ccxt.OrderNotFound("x"), OrderNotFoundError, None),
    (ccxt.RateLimitExceeded("x"), TransientExchangeError, True),
    (ccxt.DDoSProtection("x"), TransientExchangeError, True),
    (ccxt.RequestTimeout("x"), TransientExchangeError, False),
    (ccxt.ExchangeNotAvailable("x"), TransientExchangeError, False),
    (ccxt.OnMaintenance("x"), TransientExchangeError, False),
    (ccxt.InvalidNonce("x"), TransientExchangeError, False),
    (ccxt.BadResponse("x"), TransientExchangeError, False),
    (ccxt.NullResponse("x"), TransientExchangeError, False),
    (KeyError("price"), TransientExchangeError, False),  # a parser choking: outcome unknown
])
def test_translation_table(raised: BaseException, expected: type[ExchangeError],
                           kind: str | bool | None) -> None:
    error = translate_ccxt_error(raised, "venue", "op")
    assert type(error) is expected
    if expected is DefinitiveExchangeError:
        assert getattr(error, "kind", None) == kind
    if expected is TransientExchangeError:
        assert getattr(error, "rate_limited", None) is kind
    assert error.ccxt_error == type(raised).__name__
    assert str(error).startswith("venue op failed")


def test_errors_survive_pickling_for_celery() -> None:
    errors: list[ExchangeError] = [
        TransientExchangeError("busy", rate_limited=True, retry_after_s=3.0, exchange_name="b"),
        DefinitiveExchangeError("no", kind="insufficient_funds", operation="create_order"),
        OrderNotFoundError("gone", exchange_name="b"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert vars(copy) == vars(error)
        assert str(copy) == str(error)


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown definitive error kind"):
        DefinitiveExchangeError("x", kind="oops")

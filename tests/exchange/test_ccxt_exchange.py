"""`CcxtExchange` with the real `ccxt.binance` client against the fake binance server:
paging, precision, limits, markets, the per-process client, credentials and registration."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bkit.core.candles import Candle
from bkit.core.registry import REGISTRY
from bkit.exchange import (
    MARKETS_DIR,
    CachingCandleSource,
    CcxtExchange,
    DefinitiveExchangeError,
    MemoryCandleCache,
    MissingCredentialsError,
    UnknownExchangeError,
    add_ccxt_exchange,
    reset_clients,
)
from bkit.testing import DEFAULT_MARKETS, FakeExchange, Fault

ExchangeFactory = Callable[..., CcxtExchange]

KLINES = "/api/v3/klines"


# --- candles and paging ---------------------------------------------------------------------
def test_2500_candles_come_in_three_requests_sorted_without_duplicates(
        fake: FakeExchange, exchange: CcxtExchange, btc_candles: list[Candle]) -> None:
    got = exchange.get_candles("UNITTEST/BTC", "1m", btc_candles[0].opened_at, 2500)

    assert got == btc_candles[:2500]
    stamps = [c.timestamp for c in got]
    assert stamps == sorted(set(stamps))
    klines = [r for r in fake.requests if r.path == KLINES]
    assert [r.params["limit"] for r in klines] == ["1000", "1000", "500"]
    # each page starts one minute after the last candle of the previous page
    assert [int(r.params["startTime"]) for r in klines[1:]] == [
        btc_candles[999].timestamp + 60_000, btc_candles[1999].timestamp + 60_000]


def test_paging_across_real_gaps_stops_when_the_venue_runs_out(
        fake: FakeExchange, make_exchange: ExchangeFactory, xrp_candles: list[Candle]) -> None:
    exchange = make_exchange(page_limit=100)
    got = exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5000)

    assert got == xrp_candles  # 2,469 candles, gaps kept as the venue reports them
    assert fake.request_count(KLINES) == -(-len(xrp_candles) // 100)


def test_duplicated_and_shuffled_rows_are_deduped_and_sorted(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    fake.set_fault(KLINES, Fault.shuffled_rows(seed=7))
    got = exchange.get_candles("XRP/ETH", "1m", xrp_candles[100].opened_at, 1500)

    assert got == xrp_candles[100:1600]


def test_since_inside_a_gap_starts_at_the_next_real_candle(
        exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    i = next(i for i in range(1, len(xrp_candles))
             if xrp_candles[i].timestamp - xrp_candles[i - 1].timestamp >= 3 * 60_000)
    since = xrp_candles[i - 1].opened_at + timedelta(minutes=1)
    got = exchange.get_candles("XRP/ETH", "1m", since, 3)

    assert got == xrp_candles[i:i + 3]


def test_five_minute_candles_open_on_the_five_minute_grid(
        exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    got = exchange.get_candles("XRP/ETH", "5m", xrp_candles[0].opened_at, 12)

    assert len(got) == 12
    assert all(c.timestamp % 300_000 == 0 for c in got)
    first_bucket = [c for c in xrp_candles if c.timestamp < got[0].timestamp + 300_000]
    assert got[0].high == max(c.high for c in first_bucket)
    assert got[0].volume == pytest.approx(sum(c.volume for c in first_bucket))


def test_bad_interval_and_limit_are_refused_before_any_request(
        fake: FakeExchange, exchange: CcxtExchange) -> None:
    with pytest.raises(ValueError, match="unknown interval '7m'"):
        exchange.get_candles("XRP/ETH", "7m", datetime(2019, 10, 11, tzinfo=UTC), 5)
    with pytest.raises(ValueError, match="limit"):
        exchange.get_candles("XRP/ETH", "1m", datetime(2019, 10, 11, tzinfo=UTC), 0)
    assert fake.request_count() == 0


# --- precision, limits, markets --------------------------------------------------------------
@pytest.mark.parametrize(("symbol", "price", "price_text", "amount", "amount_text"), [
    ("BTC/USDT", 64123.4567, "64123.46", 0.123456789, "0.12345"),
    ("ETH/USDT", 3456.789, "3456.79", 1.23456789, "1.2345"),
    ("XRP/ETH", 0.001414186, "0.00141419", 12.9, "12"),
    ("UNITTEST/BTC", 0.0016200849, "0.00162008", 1000.999, "1000"),
])
def test_prices_round_to_the_tick_and_amounts_truncate_to_the_step(
        exchange: CcxtExchange, symbol: str, price: float, price_text: str, amount: float,
        amount_text: str) -> None:
    assert exchange.format_price(symbol, price) == price_text
    assert exchange.format_quantity(symbol, amount) == amount_text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, "1.5", True])
def test_formatting_refuses_values_that_are_not_positive_numbers(
        exchange: CcxtExchange, value: object) -> None:
    with pytest.raises(ValueError, match="finite number > 0"):
        exchange.format_price("BTC/USDT", value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite number > 0"):
        exchange.format_quantity("BTC/USDT", value)  # type: ignore[arg-type]


def test_an_amount_below_one_step_is_an_invalid_order(exchange: CcxtExchange) -> None:
    with pytest.raises(DefinitiveExchangeError, match="minimum amount precision") as caught:
        exchange.format_quantity("BTC/USDT", 0.000001)
    assert caught.value.kind == "invalid_order"


def test_market_limits_come_from_the_venue_filters(exchange: CcxtExchange) -> None:
    btc = exchange.market_limits("BTC/USDT")
    assert (btc.min_amount, btc.min_cost, btc.amount_step, btc.price_step) == (
        1e-05, 5.0, 1e-05, 0.01)
    xrp = exchange.market_limits("XRP/ETH")
    assert (xrp.min_amount, xrp.max_amount, xrp.min_cost, xrp.price_step) == (
        1.0, 90_000_000.0, 0.001, 1e-08)


def test_offline_markets_cost_no_request(fake: FakeExchange, exchange: CcxtExchange) -> None:
    exchange.format_price("BTC/USDT", 1.0)
    exchange.market_limits("XRP/ETH")
    assert fake.request_count("/api/v3/exchangeInfo") == 0


def test_markets_load_once_from_the_venue(
        fake: FakeExchange, make_exchange: ExchangeFactory, xrp_candles: list[Candle]) -> None:
    exchange = make_exchange(markets=None)
    for _ in range(3):
        exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 2)
    exchange.format_quantity("XRP/ETH", 3.5)

    assert fake.request_count("/api/v3/exchangeInfo") == 1
    reset_clients()  # a rebuilt client reuses the cached markets
    exchange.format_quantity("XRP/ETH", 3.5)
    assert fake.request_count("/api/v3/exchangeInfo") == 1


def test_the_shipped_fixture_matches_what_ccxt_parses_from_the_venue(
        make_exchange: ExchangeFactory) -> None:
    live = make_exchange(markets=None).load_markets()
    fixture = json.loads((MARKETS_DIR / "binance_markets.json").read_text())

    assert sorted(m["symbol"] for m in fixture) == sorted(s.symbol for s in DEFAULT_MARKETS)
    for market in fixture:
        assert market["precision"] == live[market["symbol"]]["precision"]
        assert market["limits"] == live[market["symbol"]]["limits"]
        assert {"LIMIT", "MARKET"} <= set(market["info"]["orderTypes"])


def test_set_markets_accepts_json_text_and_refuses_junk(
        fake: FakeExchange, make_exchange: ExchangeFactory) -> None:
    exchange = make_exchange(markets=None)
    text = (MARKETS_DIR / "binance_markets.json").read_text()
    exchange.set_markets(text)
    assert exchange.format_price("ETH/USDT", 1.006) == "1.01"
    assert fake.request_count() == 0
    with pytest.raises(ValueError, match="market"):
        exchange.set_markets("[]")


# --- the client: one per process -----------------------------------------------------------
def test_client_settings(exchange: CcxtExchange) -> None:
    client = exchange.client
    assert client.enableRateLimit is True
    assert client.timeout == 2_000
    assert exchange.client is client  # one client per process


def _child_fetch(exchange: CcxtExchange, since: datetime, queue: multiprocessing.Queue) -> None:
    candles = exchange.get_candles("XRP/ETH", "1m", since, 3)
    queue.put((os.getpid(), id(exchange.client), [c.timestamp for c in candles]))


def test_a_forked_child_builds_its_own_client(
        exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    parent_client = exchange.client
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = ctx.Queue()
    child = ctx.Process(target=_child_fetch, args=(exchange, xrp_candles[0].opened_at, queue))
    child.start()
    pid, _client_id, stamps = queue.get(timeout=20)
    child.join(timeout=20)

    assert child.exitcode == 0
    assert pid != os.getpid()
    assert stamps == [c.timestamp for c in xrp_candles[:3]]
    assert exchange.client is parent_client  # the parent's slot is untouched


def test_reset_clients_drops_the_client(exchange: CcxtExchange) -> None:
    before = exchange.client
    reset_clients()
    assert exchange.client is not before


def test_a_copy_carries_settings_and_markets_but_no_client_or_keys(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 2)
    blob = pickle.dumps(exchange)
    assert b"test-secret" not in blob and b"test-key" not in blob
    copy = pickle.loads(blob)
    assert copy.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 2) == xrp_candles[:2]
    assert copy.client is not exchange.client
    assert "credentials=missing" in repr(copy)  # env mappings stay behind; os.environ is used
    assert fake.request_count("/api/v3/exchangeInfo") == 0


def test_sandbox_switches_to_the_testnet_urls() -> None:
    exchange = CcxtExchange("binance", sandbox=True, env={})
    assert exchange.client.urls["api"]["public"].startswith("https://testnet.binance.vision")


# --- bad input ---------------------------------------------------------------------------------
def test_unknown_ccxt_id_is_named_with_suggestions() -> None:
    with pytest.raises(UnknownExchangeError, match=r"'binanse'.*did you mean binance"):
        CcxtExchange("binanse")


def test_unknown_symbol_fails_before_any_request(
        fake: FakeExchange, exchange: CcxtExchange) -> None:
    with pytest.raises(DefinitiveExchangeError) as caught:
        exchange.get_candles("DOGE/USDT", "1m", datetime(2024, 1, 1, tzinfo=UTC), 5)
    assert caught.value.kind == "bad_symbol"
    assert "DOGE/USDT" in str(caught.value)
    with pytest.raises(DefinitiveExchangeError, match="no market"):
        exchange.format_price("DOGE/USDT", 1.0)
    assert fake.request_count() == 0


def test_a_symbol_the_venue_does_not_list_is_bad_symbol(
        make_exchange: ExchangeFactory, xrp_candles: list[Candle]) -> None:
    with FakeExchange(markets=[s for s in DEFAULT_MARKETS if s.symbol != "XRP/ETH"]) as other:
        # the markets fixture still lists XRP/ETH, this venue does not
        exchange = make_exchange(api_base_url=other.base_url)
        with pytest.raises(DefinitiveExchangeError) as caught:
            exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5)
    assert caught.value.kind == "bad_symbol"
    assert caught.value.ccxt_error == "BadSymbol"


def test_private_calls_without_keys_say_which_variables_to_set(
        fake: FakeExchange, make_exchange: ExchangeFactory) -> None:
    exchange = make_exchange(env={})
    for call in (lambda: exchange.create_order("XRP/ETH", "limit", "buy", 10, 0.001, "c-1"),
                 lambda: exchange.fetch_order_by_client_id("XRP/ETH", "c-1"),
                 lambda: exchange.cancel_order_by_client_id("XRP/ETH", "c-1"),
                 lambda: exchange.fetch_open_orders("XRP/ETH")):
        with pytest.raises(MissingCredentialsError) as caught:
            call()
        assert "BKIT_FAKE_BINANCE_API_KEY" in str(caught.value)
        assert "BKIT_FAKE_BINANCE_SECRET" in str(caught.value)
        assert caught.value.kind == "auth"
    assert fake.request_count() == 0
    assert "credentials=missing" in repr(exchange)


def test_keys_are_read_from_the_environment(
        make_exchange: ExchangeFactory, credentials: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKIT_ENV_BINANCE_API_KEY", credentials["BKIT_FAKE_BINANCE_API_KEY"])
    monkeypatch.setenv("BKIT_ENV_BINANCE_SECRET", credentials["BKIT_FAKE_BINANCE_SECRET"])
    exchange = make_exchange(exchange_name="env-binance", env=None)
    assert exchange.fetch_open_orders("XRP/ETH") == []
    assert "credentials=set" in repr(exchange)


# --- orders -----------------------------------------------------------------------------------
def test_limit_order_rests_then_is_found_listed_and_cancelled(
        fake: FakeExchange, exchange: CcxtExchange) -> None:
    placed = exchange.create_order("XRP/ETH", "limit", "buy", 10, 0.001, "bk-1-XRPETH-1")
    assert (placed.status, placed.client_order_id, placed.amount, placed.price) == (
        "open", "bk-1-XRPETH-1", 10.0, 0.001)

    fetched = exchange.fetch_order_by_client_id("XRP/ETH", "bk-1-XRPETH-1")
    assert (fetched.order_id, fetched.status) == (placed.order_id, "open")
    assert [o.client_order_id for o in exchange.fetch_open_orders("XRP/ETH")] == [
        "bk-1-XRPETH-1"]

    cancelled = exchange.cancel_order_by_client_id("XRP/ETH", "bk-1-XRPETH-1")
    assert cancelled.status == "canceled"
    assert exchange.fetch_open_orders("XRP/ETH") == []
    assert len(fake.orders_for("bk-1-XRPETH-1")) == 1
    sent = next(r for r in fake.requests if r.method == "POST")
    assert (sent.params["newClientOrderId"], sent.params["quantity"], sent.params["price"]) == (
        "bk-1-XRPETH-1", "10", "0.001")


def test_market_order_fills_at_the_last_close(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    filled = exchange.create_order("XRP/ETH", "market", "sell", 25, None, "bk-2-XRPETH-1")
    assert filled.status == "closed"
    assert filled.filled == 25.0
    assert filled.average == pytest.approx(xrp_candles[-1].close)


# --- registration ------------------------------------------------------------------------------
def test_add_ccxt_exchange_registers_candles_and_formatters(
        fake: FakeExchange, xrp_candles: list[Candle]) -> None:
    name = "fake-binance-registered"
    try:
        exchange = add_ccxt_exchange(
            "binance", exchange_name=name, markets=MARKETS_DIR / "binance_markets.json",
            api_base_url=fake.base_url, timeout_ms=2_000, env={}, candle_cache=None)
        schema = REGISTRY.exchange(name)
        assert schema.source is exchange
        assert schema.format_price("BTC/USDT", 64123.4567) == "64123.46"
        assert schema.format_quantity("BTC/USDT", 0.123456789) == "0.12345"
        assert schema.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 4) == (
            xrp_candles[:4])
    finally:
        REGISTRY.exchanges.pop(name, None)


def test_add_ccxt_exchange_with_a_cache_reads_through_it(
        fake: FakeExchange, xrp_candles: list[Candle]) -> None:
    name = "fake-binance-cached"
    try:
        add_ccxt_exchange("binance", exchange_name=name,
                          markets=MARKETS_DIR / "binance_markets.json",
                          api_base_url=fake.base_url, candle_cache=MemoryCandleCache(), env={})
        get_candles = REGISTRY.exchange(name).get_candles
        assert isinstance(get_candles, CachingCandleSource)
        for _ in range(3):  # 2019 candles are long closed: one upstream request
            assert get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 5) == [
                c for c in xrp_candles if c.timestamp < xrp_candles[0].timestamp + 300_000]
        assert fake.request_count(KLINES) == 1
    finally:
        REGISTRY.exchanges.pop(name, None)


def test_add_ccxt_exchange_shares_candles_through_the_settings_cache_by_default(
        fake: FakeExchange) -> None:
    from bkit.exchange.default_cache import SettingsCandleCache

    name = "fake-binance-default-cache"
    try:
        add_ccxt_exchange("binance", exchange_name=name,
                          markets=MARKETS_DIR / "binance_markets.json",
                          api_base_url=fake.base_url, env={})
        get_candles = REGISTRY.exchange(name).get_candles
        assert isinstance(get_candles, CachingCandleSource)
        assert isinstance(get_candles.cache, SettingsCandleCache)
    finally:
        REGISTRY.exchanges.pop(name, None)

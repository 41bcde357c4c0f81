"""The fake binance server itself, over plain HTTP: the test tool must behave like the venue
where the tests rely on it (klines windows, clock, counters, order log, faults)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import ccxt
import pytest

from bkit.core.candles import Candle
from bkit.testing import FakeExchange, Fault, point_ccxt_at, synthetic_candles


def get(fake: FakeExchange, path: str, **params: Any) -> tuple[int, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{fake.base_url}{path}?{query}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_klines_follow_start_end_and_limit(fake: FakeExchange,
                                          xrp_candles: list[Candle]) -> None:
    start = xrp_candles[10].timestamp
    status, rows = get(fake, "/api/v3/klines", symbol="XRPETH", interval="1m",
                       startTime=start, limit=4)
    assert status == 200
    assert [r[0] for r in rows] == [c.timestamp for c in xrp_candles[10:14]]
    assert all(isinstance(v, str) and "e" not in v for v in rows[0][1:6])  # like binance
    assert float(rows[0][4]) == xrp_candles[10].close and rows[0][6] == start + 59_999

    _, rows = get(fake, "/api/v3/klines", symbol="XRPETH", interval="1m",
                  startTime=start, endTime=xrp_candles[11].timestamp, limit=10)
    assert len(rows) == 2
    _, rows = get(fake, "/api/v3/klines", symbol="XRPETH", interval="1m", limit=3)
    assert [r[0] for r in rows] == [c.timestamp for c in xrp_candles[-3:]]  # the latest


@pytest.mark.parametrize(("params", "code"), [
    ({"symbol": "NOPE", "interval": "1m"}, -1121),
    ({"symbol": "XRPETH", "interval": "7m"}, -1120),
    ({"symbol": "XRPETH", "interval": "1m", "limit": 1001}, -1130),
])
def test_bad_kline_requests_get_binance_errors(fake: FakeExchange, params: dict[str, Any],
                                               code: int) -> None:
    status, body = get(fake, "/api/v3/klines", **params)
    assert (status, body["code"]) == (400, code)


def test_the_clock_hides_the_future_and_serves_the_forming_candle_partial(
        fake: FakeExchange) -> None:
    candles = synthetic_candles(seed=3, start_ms=1_700_000_040_000, count=10)
    fake.load_candles("BTC/USDT", candles)
    fake.set_clock(candles[5].timestamp + 15_000)  # a quarter into candle 5
    _, rows = get(fake, "/api/v3/klines", symbol="BTCUSDT", interval="1m",
                  startTime=candles[0].timestamp, limit=100)
    assert [r[0] for r in rows] == [c.timestamp for c in candles[:6]]
    assert float(rows[4][5]) == candles[4].volume
    assert float(rows[5][5]) == pytest.approx(candles[5].volume / 4)


def test_counters_and_fault_queue(fake: FakeExchange) -> None:
    fake.fail_next("/api/v3/ping", Fault.unavailable(), count=2)
    statuses = [get(fake, "/api/v3/ping")[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    get(fake, "/api/v3/klines", symbol="XRPETH", interval="1m", limit=1)
    assert fake.request_count("/api/v3/ping") == 3
    assert fake.request_count("/api/v3/klines", symbol="XRP/ETH") == 1
    assert fake.request_count() == 4
    fake.reset_counters()
    assert fake.request_count() == 0


def test_signed_endpoints_need_an_api_key_header(fake: FakeExchange) -> None:
    status, body = get(fake, "/api/v3/openOrders", symbol="XRPETH")
    assert (status, body["code"]) == (401, -2014)


def test_client_ids_unique_among_open_orders_like_binance(fake: FakeExchange) -> None:
    client = ccxt.binance({"apiKey": "k", "secret": "s",
                           "options": {"fetchCurrencies": False, "fetchMargins": False}})
    point_ccxt_at(client, fake.base_url)
    fake.set_last_price("XRP/ETH", "0.0015")
    client.create_order("XRP/ETH", "market", "buy", 10, None, {"clientOrderId": "same"})
    client.create_order("XRP/ETH", "market", "buy", 10, None, {"clientOrderId": "same"})
    # binance only refuses a client id in use by an OPEN order: two fills, two orders
    assert [o.status for o in fake.orders_for("same")] == ["FILLED", "FILLED"]
    assert str(fake.orders_for("same")[0].fill_price) == "0.0015"

    strict = FakeExchange(unique_client_ids="all")
    with strict:
        point_ccxt_at(client, strict.base_url)
        strict.set_last_price("XRP/ETH", "0.0015")
        client.create_order("XRP/ETH", "market", "buy", 10, None, {"clientOrderId": "same"})
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
            client.create_order("XRP/ETH", "market", "buy", 10, None, {"clientOrderId": "same"})
        assert len(strict.orders_for("same")) == 1


def test_a_resting_order_can_be_filled_by_the_test(fake: FakeExchange) -> None:
    client = ccxt.binance({"apiKey": "k", "secret": "s",
                           "options": {"fetchCurrencies": False, "fetchMargins": False}})
    point_ccxt_at(client, fake.base_url)
    client.create_order("XRP/ETH", "limit", "buy", 10, 0.001, {"clientOrderId": "rest"})
    fake.fill_order("rest")
    order = client.fetch_order(None, "XRP/ETH", {"clientOrderId": "rest"})
    assert (order["status"], order["filled"], order["average"]) == ("closed", 10.0, 0.001)


def test_point_ccxt_at_rewrites_every_api_url_and_keeps_paths() -> None:
    client = ccxt.binance()
    before = dict(client.urls["api"])
    point_ccxt_at(client, "http://127.0.0.1:9")
    after = client.urls["api"]
    assert len(after) == len(before) >= 20
    for name, url in after.items():
        assert url.startswith("http://127.0.0.1:9/")
        assert url.split("://", 1)[1].split("/", 1)[1] == before[name].split(
            "://", 1)[1].split("/", 1)[1]
    assert client.options["adjustForTimeDifference"] is False


def test_synthetic_candles_are_seeded_and_valid() -> None:
    a = synthetic_candles(seed=1, start_ms=0, count=500)
    assert a == synthetic_candles(seed=1, start_ms=0, count=500)
    assert a != synthetic_candles(seed=2, start_ms=0, count=500)
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in a)


def test_time_and_account_answer_like_binance(fake: FakeExchange) -> None:
    client = ccxt.binance({"apiKey": "k", "secret": "s",
                           "options": {"fetchCurrencies": False, "fetchMargins": False}})
    point_ccxt_at(client, fake.base_url)
    fake.set_clock(1_700_000_000_123)
    assert client.fetch_time() == 1_700_000_000_123
    balance = client.fetch_balance()
    assert balance["USDT"]["free"] == 1_000_000.0 and balance["BTC"]["used"] == 0.0

"""The venue against reality: every ccxt method bkit uses, called through the real ccxt client,
must parse into the same keys and value types as the captured Binance case (ccxt's own static
test fixtures, tests/venue/fixtures), and the raw answer must carry the captured keys."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from bkit.core.candles import MINUTE_MS, Candle
from bkit.venue import Venue
from tests.venue.conftest import MARKETS, NOW_MS, make_client
from tests.venue.shapes import kind, shape_diff

#: Keys Binance adds only to trailing orders (the captured market case is a trailing one).
TRAILING_KEYS = {"trailingDelta", "trailingTime"}


#: The keys of one entry of a FULL answer's `fills` (Binance API docs).
FILL_KEYS = {"price", "qty", "commission", "commissionAsset", "tradeId"}


def outside(diff: list[str], *prefixes: str) -> list[str]:
    """`diff` without the entries under `prefixes` (asserted separately)."""
    return [d for d in diff if not any(d.startswith(p) for p in prefixes)]


def case(captured: dict[str, list[dict[str, Any]]], method: str, index: int = 0
         ) -> dict[str, Any]:
    return captured[method][index]


def trade_shape(captured: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return case(captured, "fetchMyTrades")["parsedResponse"][0]


def test_create_limit_order_matches_captured(venue: Venue, client: Any,
                                             captured: dict[str, Any]) -> None:
    reference = case(captured, "createOrder", 0)
    venue.set_price("SOL/USDT", 250)
    order = client.create_order(*reference["input"])
    assert shape_diff(reference["parsedResponse"], order) == []
    assert set(order["info"]) == set(reference["httpResponse"])
    assert order["status"] == "open" and order["info"]["icebergQty"] == "0.03000000"
    assert order["info"]["selfTradePreventionMode"] == "EXPIRE_MAKER"


def test_create_market_order_matches_captured(venue: Venue, client: Any,
                                              captured: dict[str, Any]) -> None:
    reference = case(captured, "createOrder", 1)
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    trade = trade_shape(captured)
    diff = shape_diff(reference["parsedResponse"], order,
                      item_shapes={"fee": trade["fee"], "trades": trade, "fees": trade["fee"]},
                      allow_none=False)
    diff = outside(diff, "$.info:", "$.trades[0].info:")
    # ccxt parses a FULL answer's fills without time, order id or side: None there is ccxt's.
    fills_none = [d for d in diff if d.startswith("$.trades[") and ": None" in d]
    assert [d for d in diff if d not in fills_none] == []
    assert {d.split(":")[0].rsplit(".", 1)[1] for d in fills_none} <= {
        "timestamp", "datetime", "order", "side", "takerOrMaker"}
    assert set(order["info"]) == set(reference["httpResponse"]) - TRAILING_KEYS
    assert [set(t["info"]) for t in order["trades"]] == [FILL_KEYS]
    assert order["status"] == "closed" and order["filled"] == 0.01


def _ltc_sell(venue: Venue, client: Any) -> dict[str, Any]:
    venue.set_balance("LTC", "1")
    venue.set_price("LTC/USDT", "90.8")
    return client.create_order("LTC/USDT", "market", "sell", 0.1)


def test_fetch_order_matches_captured(venue: Venue, client: Any,
                                      captured: dict[str, Any]) -> None:
    reference = case(captured, "fetchOrder")
    placed = _ltc_sell(venue, client)
    order = client.fetch_order(placed["id"], "LTC/USDT")
    assert shape_diff(reference["parsedResponse"], order) == []
    assert set(order["info"]) == set(reference["httpResponse"])
    assert (order["status"], order["filled"], order["cost"]) == ("closed", 0.1, 9.08)
    by_client_id = client.fetch_order(None, "LTC/USDT",
                                      {"clientOrderId": placed["clientOrderId"]})
    assert by_client_id["id"] == placed["id"]


def test_fetch_open_orders_matches_captured(venue: Venue, client: Any,
                                            captured: dict[str, Any]) -> None:
    reference = case(captured, "fetchOpenOrders")
    venue.set_price("LTC/USDT", "70")
    client.create_order("LTC/USDT", "limit", "buy", 0.2, 50, {"postOnly": True})
    orders = client.fetch_open_orders(*reference["input"])
    assert len(orders) == 1 and orders[0]["info"]["type"] == "LIMIT_MAKER"
    assert shape_diff(reference["parsedResponse"], orders) == []
    assert set(orders[0]["info"]) == set(reference["httpResponse"][0])


def test_cancel_order_has_the_order_keys(venue: Venue, client: Any,
                                         captured: dict[str, Any]) -> None:
    """No captured cancel case: the parsed cancel must have the keys of a parsed order, and the
    raw answer Binance's documented cancel keys."""
    reference = case(captured, "fetchOpenOrders")["parsedResponse"][0]
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "c1"})
    cancelled = client.cancel_order(None, "BTC/USDT", {"clientOrderId": "c1"})
    assert set(cancelled) == set(reference)
    assert outside(shape_diff(reference, cancelled), "$.info:") == []
    assert set(cancelled["info"]) == {
        "symbol", "origClientOrderId", "orderId", "orderListId", "clientOrderId",
        "transactTime", "price", "origQty", "executedQty", "origQuoteOrderQty",
        "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
        "selfTradePreventionMode"}
    assert cancelled["status"] == "canceled"
    # Binance quirk: the cancel's own client id is reported; the order's is origClientOrderId.
    assert cancelled["clientOrderId"] != "c1" and cancelled["info"]["origClientOrderId"] == "c1"


def test_fetch_my_trades_matches_captured(venue: Venue, client: Any,
                                          captured: dict[str, Any]) -> None:
    reference = case(captured, "fetchMyTrades")
    _ltc_sell(venue, client)
    trades = client.fetch_my_trades(*reference["input"])
    assert shape_diff(reference["parsedResponse"], trades) == []
    assert set(trades[0]["info"]) == set(reference["httpResponse"][0])
    assert trades[0]["fee"] == {"cost": 0.00908, "currency": "USDT"}
    assert (trades[0]["side"], trades[0]["takerOrMaker"]) == ("sell", "taker")


def test_fetch_balance_matches_captured(captured: dict[str, Any]) -> None:
    reference = case(captured, "fetchBalance")
    held = {b["asset"]: b["free"] for b in reference["httpResponse"]["balances"]}
    with Venue(MARKETS, balances=held) as venue:
        venue.set_clock(NOW_MS)
        balance = make_client(venue).fetch_balance()
    assert shape_diff(reference["parsedResponse"], balance) == []
    assert set(balance["info"]) == set(reference["httpResponse"])
    assert set(balance["info"]["balances"][0]) == {"asset", "free", "locked"}
    assert balance["LTC"] == {"free": 0.919741, "used": 0.0, "total": 0.919741}


def test_fetch_ohlcv_matches_captured(venue: Venue, client: Any,
                                      captured: dict[str, Any]) -> None:
    reference = case(captured, "fetchOHLCV")
    start = 1706628000000 - 60 * MINUTE_MS  # 1m candles from 13:20 to 17:20 UTC
    candles = [Candle(start + i * MINUTE_MS, 43000.0 + i, 43010.5 + i, 42990.0 + i, 43005.25 + i,
                      1.5) for i in range(300)]
    venue.load_candles("BTC/USDT", candles)
    venue.set_clock(start + 300 * MINUTE_MS)
    rows = client.fetch_ohlcv(*reference["input"])
    assert shape_diff(reference["parsedResponse"], rows) == []
    assert [r[0] for r in rows] == [r[0] for r in reference["parsedResponse"]]
    url = (f"{venue.base_url}/api/v3/klines?symbol=BTCUSDT&interval=1h"
           f"&startTime={reference['input'][2]}&limit=3")
    with urllib.request.urlopen(url, timeout=5) as answer:
        raw = json.loads(answer.read())
    assert [[kind(v) for v in row] for row in raw] == [
        [kind(v) for v in row] for row in reference["httpResponse"]]

"""Order behaviour through the real ccxt client, checked against notes/ccxt-binance-facts.md:
filters, response types, partial fills, client-id reuse, lookup lag, myTrades."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import ccxt
import pytest

from bkit.venue import Venue


@pytest.mark.parametrize(("amount", "price", "error", "message"), [
    (0.000015, 40000, ccxt.InvalidOrder, "LOT_SIZE"),        # not a multiple of the step
    (0.000001, 40000, ccxt.InvalidOrder, "LOT_SIZE"),        # below minQty
    (0.01, 40000.005, ccxt.InvalidOrder, "PRICE_FILTER"),    # off the tick
    (0.0001, 40000, ccxt.BadRequest, "NOTIONAL"),            # 4 USDT < 5
])
def test_filters_refuse_exactly(venue: Venue, client: Any, amount: float, price: float,
                                error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"Filter failure: {message}"):
        # ccxt would round amount/price to precision: send the raw values as Binance params
        client.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                   "timeInForce": "GTC", "quantity": f"{amount:.8f}",
                                   "price": f"{price:.3f}"})
    assert venue.orders() == []


def test_notional_raises_bad_request_not_invalid_order(venue: Venue, client: Any) -> None:
    with pytest.raises(ccxt.BadRequest) as caught:
        client.create_order("BTC/USDT", "market", "buy", 0.00005)  # 2.5 USDT
    assert not isinstance(caught.value, ccxt.InvalidOrder)


def test_market_lot_size_and_min_qty_on_market_orders(venue: Venue, client: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        client.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                   "quantity": "0.000015"})


def test_ack_answer_has_no_status_and_filled_zero(venue: Venue, client: Any) -> None:
    order = client.create_order("BTC/USDT", "market", "buy", 0.01,
                                None, {"newOrderRespType": "ACK"})
    assert set(order["info"]) == {"symbol", "orderId", "orderListId", "clientOrderId",
                                  "transactTime"}
    assert (order["status"], order["amount"], order["filled"]) == (None, None, 0.0)
    assert venue.balance("BTC") == D("0.00999")  # it did fill


def test_forced_ack_overrides_the_request(venue: Venue, client: Any) -> None:
    venue.set_response_type("ACK")
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)  # ccxt asks FULL
    assert order["status"] is None and "fills" not in order["info"]


def test_result_answer_has_status_but_no_fills(venue: Venue, client: Any) -> None:
    order = client.create_order("BTC/USDT", "market", "buy", 0.01,
                                None, {"newOrderRespType": "RESULT"})
    assert "fills" not in order["info"]
    assert (order["status"], order["filled"], order["cost"]) == ("closed", 0.01, 500.0)
    assert order["trades"] == [] and order["fee"] is None


def test_partial_market_fill_expires(venue: Venue, client: Any) -> None:
    venue.set_fill_fraction(0.5)
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["info"]["status"] == "EXPIRED"
    assert (order["status"], order["filled"], order["amount"]) == ("expired", 0.005, 0.01)
    assert venue.balance("BTC") == D("0.004995")
    assert venue.balances()["USDT"] == (D("9750"), D(0))  # the unfilled half released


def test_fill_fraction_per_symbol(venue: Venue, client: Any) -> None:
    venue.set_fill_fraction(0.5, symbol="ETH/USDT")
    assert client.create_order("BTC/USDT", "market", "buy", 0.01)["status"] == "closed"


def test_partially_filled_limit_order_rests_open(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "P"})
    venue.fill_order("P", fraction=0.3)
    order = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "P"})
    assert order["info"]["status"] == "PARTIALLY_FILLED"
    assert (order["status"], order["filled"], order["remaining"]) == ("open", 0.003, 0.007)
    assert venue.balances()["USDT"] == (D("9600"), D("280"))
    assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
    venue.fill_order("P")
    assert client.fetch_order(None, "BTC/USDT", {"clientOrderId": "P"})["status"] == "closed"
    assert venue.balances()["USDT"] == (D("9600"), D(0))


def test_duplicate_open_client_id_refused_reuse_after_fill(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.ExchangeError, match="Duplicate order sent") as caught:
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "dup"})
    assert type(caught.value) is ccxt.InvalidOrder  # measured: -2010 without the balance text
    venue.fill_order("dup")
    again = client.create_order("BTC/USDT", "market", "buy", 0.001, None,
                                {"clientOrderId": "dup"})
    assert again["status"] == "closed"
    assert len(venue.orders_for("dup")) == 2
    # a lookup by client id answers the most recent order under it
    assert client.fetch_order(None, "BTC/USDT", {"clientOrderId": "dup"})["id"] == again["id"]


def test_reuse_after_cancel(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "x"})
    client.cancel_order(None, "BTC/USDT", {"clientOrderId": "x"})
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "x"})
    assert [o.status for o in venue.orders_for("x")] == ["CANCELED", "NEW"]
    with pytest.raises(ccxt.OrderNotFound):
        client.cancel_order(None, "BTC/USDT", {"clientOrderId": "nope"})


def test_lookup_lag_gives_not_found_then_the_order(venue: Venue, client: Any) -> None:
    venue.set_lookup_lag(0.3)
    placed = client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000,
                                 {"clientOrderId": "lag"})
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(None, "BTC/USDT", {"clientOrderId": "lag"})
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(placed["id"], "BTC/USDT")
    # openOrders stays truthful during the lag
    assert [o["clientOrderId"] for o in client.fetch_open_orders("BTC/USDT")] == ["lag"]
    time.sleep(0.35)
    assert client.fetch_order(None, "BTC/USDT", {"clientOrderId": "lag"})["id"] == placed["id"]


def test_my_trades_filters(venue: Venue, client: Any) -> None:
    first = client.create_order("BTC/USDT", "market", "buy", 0.01)
    venue.set_clock(venue.now_ms() + 60_000)
    client.create_order("BTC/USDT", "market", "sell", 0.005)
    trades = client.fetch_my_trades("BTC/USDT")
    assert [(t["side"], t["amount"]) for t in trades] == [("buy", 0.01), ("sell", 0.005)]
    assert trades[0]["fee"] == {"cost": 0.00001, "currency": "BTC"}
    assert trades[1]["fee"] == {"cost": 0.25, "currency": "USDT"}
    assert trades[0]["info"]["isBuyer"] is True and trades[1]["info"]["isBuyer"] is False
    assert [t["id"] for t in client.fetch_my_trades(
        "BTC/USDT", None, None, {"orderId": first["id"]})] == [trades[0]["id"]]
    assert len(client.fetch_my_trades("BTC/USDT", trades[1]["timestamp"])) == 1
    assert len(client.fetch_my_trades("BTC/USDT", None, None, {"fromId": 2})) == 1
    assert len(client.fetch_my_trades("BTC/USDT", None, 1)) == 1


def test_candles_drive_the_price_and_cross_limits(venue: Venue, client: Any) -> None:
    from bkit.core.candles import Candle
    start = venue.now_ms()
    venue.set_price("BTC/USDT", None)
    candles = [Candle(start + i * 60_000, 50000, 50100, 49900, 50000 + i * 10, 1.0)
               for i in range(5)]
    candles[3] = Candle(start + 180_000, 50030, 50040, 48000, 50030, 1.0)  # a wick down
    venue.load_candles("BTC/USDT", candles)
    assert venue.price("BTC/USDT") is None  # nothing closed yet
    venue.set_clock(start + 60_000)
    assert venue.price("BTC/USDT") == D("50000")
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 49000, {"clientOrderId": "w"})
    venue.set_clock(start + 3 * 60_000)
    assert venue.open_orders("BTC/USDT")[0].client_order_id == "w"
    assert [r[0] for r in client.fetch_ohlcv("BTC/USDT", "1m")] == [start, start + 60_000,
                                                                    start + 120_000]
    venue.set_clock(start + 4 * 60_000)  # the wick closed: crossed at 49,000
    assert venue.open_orders() == []
    assert venue.trades()[0].price == D("49000") and venue.trades()[0].is_maker

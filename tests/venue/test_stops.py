"""Spot stop orders through the real ccxt client: STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT rest
untriggered (status NEW, isWorking false) with the coins locked, trigger on the venue's price or
a closed candle's wick, then fill as a limit (or rest when the market gapped past the limit)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import ccxt
import pytest

from bkit.core.candles import Candle
from bkit.venue import Venue


@pytest.fixture
def holder(venue: Venue) -> Venue:
    venue.set_balance("BTC", "0.1")
    return venue


@pytest.mark.parametrize(("kind", "params"), [
    ("STOP_LOSS_LIMIT", {"stopPrice": 49500}),
    ("stop_loss_limit", {"triggerPrice": 49500}),
    ("limit", {"triggerPrice": 49500}),
    ("limit", {"stopLossPrice": 49500}),
])
def test_ccxt_sends_stop_loss_limit(holder: Venue, client: Any, kind: str,
                                    params: dict[str, Any]) -> None:
    order = client.create_order("BTC/USDT", kind, "sell", 0.01, 49000, params)
    sent = holder.orders()[-1]
    assert (sent.type, sent.stop_price, sent.price, sent.time_in_force) == (
        "STOP_LOSS_LIMIT", D("49500"), D("49000"), "GTC")
    # ccxt 4.5 maps spot stop_loss_limit to type 'limit'; the raw type stays in info
    assert (order["status"], order["type"], order["info"]["type"]) == (
        "open", "limit", "STOP_LOSS_LIMIT")
    assert order["triggerPrice"] == 49500.0 and order["info"]["stopPrice"] == "49500.00000000"
    assert holder.balances()["BTC"] == (D("0.09"), D("0.01"))


def test_untriggered_stop_is_new_and_not_working(holder: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000,
                        {"stopPrice": 49500, "clientOrderId": "sl"})
    fetched = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "sl"})
    assert fetched["info"]["status"] == "NEW" and fetched["info"]["isWorking"] is False
    assert fetched["info"]["workingTime"] == -1
    # ccxt 4.5 fills triggerPrice only; stopLossPrice stays None (takeProfitPrice is set for
    # the take-profit types)
    assert fetched["triggerPrice"] == 49500.0 and fetched["stopLossPrice"] is None
    [listed] = client.fetch_open_orders("BTC/USDT")
    assert listed["clientOrderId"] == "sl" and listed["triggerPrice"] == 49500.0


def test_locked_coins_refuse_a_second_sell(holder: Venue, client: Any) -> None:
    """The race protection: the stop holds the coins, so bkit's own exit sell is refused."""
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.1, 49000, {"stopPrice": 49500})
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 0.1)
    assert holder.balances()["BTC"] == (D(0), D("0.1"))


def test_triggers_on_the_price_and_fills_at_market(holder: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000,
                        {"stopPrice": 49500, "clientOrderId": "sl"})
    holder.set_price("BTC/USDT", 49600)
    assert holder.open_orders()[0].client_order_id == "sl"
    holder.set_price("BTC/USDT", 49400)
    order = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "sl"})
    assert (order["status"], order["filled"], order["cost"]) == ("closed", 0.01, 494.0)
    assert order["info"]["isWorking"] is True
    [trade] = holder.trades()
    assert (trade.price, trade.is_maker, trade.commission) == (D("49400"), False, D("0.494"))
    assert holder.balances()["BTC"] == (D("0.09"), D(0))
    assert holder.balance("USDT") == D("10000") + D("494") - D("0.494")


def test_triggers_on_a_candle_wick_at_the_stop(holder: Venue, client: Any) -> None:
    start = holder.now_ms()
    holder.set_price("BTC/USDT", None)
    candles = [Candle(start + i * 60_000, 50000, 50100, 49900, 50000, 1.0) for i in range(4)]
    candles[2] = Candle(start + 120_000, 50000, 50010, 49200, 49990, 1.0)  # wick to 49,200
    holder.load_candles("BTC/USDT", candles)
    holder.set_clock(start + 60_000)
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000, {"stopPrice": 49500})
    holder.set_clock(start + 2 * 60_000)
    assert len(holder.open_orders()) == 1
    holder.set_clock(start + 3 * 60_000)  # the wick closed: triggered at 49,500, filled there
    assert holder.open_orders() == []
    assert holder.trades()[0].price == D("49500")


def test_gap_past_the_limit_rests_as_a_limit(holder: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000,
                        {"stopPrice": 49500, "clientOrderId": "sl"})
    holder.set_price("BTC/USDT", 48000)  # gapped through stop and limit
    [resting] = holder.open_orders()
    assert resting.is_working and resting.status == "NEW" and holder.trades() == []
    holder.set_price("BTC/USDT", 49100)
    assert holder.open_orders() == [] and holder.trades()[0].price == D("49000")
    assert holder.trades()[0].is_maker


def test_stop_that_would_trigger_now_is_refused(holder: Venue, client: Any) -> None:
    with pytest.raises(ccxt.ExchangeError, match="Stop price would trigger immediately"):
        client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 50000,
                            {"stopPrice": 50500})
    assert holder.orders() == [] and holder.balances()["BTC"] == (D("0.1"), D(0))


def test_take_profit_limit_triggers_on_a_rise(holder: Venue, client: Any) -> None:
    order = client.create_order("BTC/USDT", "limit", "sell", 0.01, 51000,
                                {"takeProfitPrice": 51000})
    assert order["info"]["type"] == "TAKE_PROFIT_LIMIT" and order["takeProfitPrice"] == 51000.0
    holder.set_price("BTC/USDT", 50900)
    assert len(holder.open_orders()) == 1
    holder.set_price("BTC/USDT", 51200)
    assert holder.open_orders() == [] and holder.trades()[0].price == D("51200")


def test_buy_stop_reserves_quote_and_triggers_on_a_rise(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "buy", 0.01, 51000, {"stopPrice": 50500})
    assert venue.balances()["USDT"] == (D("9490"), D("510"))
    venue.set_price("BTC/USDT", 50600)
    assert venue.trades()[0].price == D("50600")
    assert venue.balances()["USDT"] == (D("9494"), D(0))  # the limit's excess released


def test_cancel_a_stop_releases_the_coins(holder: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000,
                        {"stopPrice": 49500, "clientOrderId": "sl"})
    cancelled = client.cancel_order(None, "BTC/USDT", {"clientOrderId": "sl"})
    assert cancelled["status"] == "canceled" and cancelled["info"]["type"] == "STOP_LOSS_LIMIT"
    assert holder.balances()["BTC"] == (D("0.1"), D(0))
    holder.set_price("BTC/USDT", 49000)
    assert holder.trades() == []


def test_exchange_info_lists_the_stop_types(client: Any) -> None:
    types = client.market("BTC/USDT")["info"]["orderTypes"]
    assert {"STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"} <= set(types)


def test_stop_order_answers_have_the_captured_keys(holder: Venue, client: Any,
                                                   captured: dict[str, Any]) -> None:
    from tests.venue.shapes import shape_diff
    reference = captured["fetchOrder"][0]
    placed = client.create_order("BTC/USDT", "STOP_LOSS_LIMIT", "sell", 0.01, 49000,
                                 {"stopPrice": 49500})
    assert set(placed["info"]) - set(captured["createOrder"][0]["httpResponse"]) == {"stopPrice"}
    order = client.fetch_order(placed["id"], "BTC/USDT")
    assert set(order["info"]) == set(reference["httpResponse"])
    # the captured order is a filled one: an open stop has no last trade (None there is ccxt's)
    assert shape_diff(reference["parsedResponse"], order, allow_none=True) == []

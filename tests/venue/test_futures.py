"""USDⓈ-M futures through the real ccxt `binanceusdm` client, with exact numbers: leverage and
isolated margin, a long's realised PnL and fees, liquidation at the computed price, funding at
08:00 UTC, reduce-only refusals, hedge mode, STOP_MARKET reduce-only (ccxt 4.5: an algo order)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import ccxt
import pytest

from bkit.venue import Venue

SYMBOL = "BTC/USDT:USDT"
EIGHT_UTC = 1_700_035_200_000  # 2023-11-15T08:00:00Z


def _long(fc: Any, amount: float = 0.1) -> dict[str, Any]:
    fc.set_leverage(5, SYMBOL)
    fc.set_margin_mode("isolated", SYMBOL)
    return fc.create_order(SYMBOL, "market", "buy", amount)


def test_market_has_contract_size_and_filters(fc: Any) -> None:
    market = fc.market(SYMBOL)
    assert (market["contractSize"], market["linear"], market["settle"]) == (1.0, True, "USDT")
    assert market["limits"]["cost"]["min"] == 100.0 and market["precision"]["amount"] == 0.001


def test_leverage_and_isolated_margin(fut: Venue, fc: Any) -> None:
    assert fc.set_leverage(5, SYMBOL)["leverage"] == 5
    assert fut.margin_type(SYMBOL) == "CROSSED"  # Binance's default
    assert fc.set_margin_mode("isolated", SYMBOL) == {"code": 200, "msg": "success"}
    with pytest.raises(ccxt.MarginModeAlreadySet):  # -4046, ccxt raises it by default
        fc.set_margin_mode("isolated", SYMBOL)
    order = fc.create_order(SYMBOL, "market", "buy", 0.1)
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.1, 50000.0)
    [pos] = fut.positions()
    assert (pos.amount, pos.entry, pos.margin) == (D("0.1"), D("50000"), D("1000"))
    assert fut.wallet() == D("9998")  # 5,000 x 0.04 % taker fee
    assert fut.available() == D("8998")
    [parsed] = fc.fetch_positions()
    assert (parsed["marginMode"], parsed["side"], parsed["contracts"]) == ("isolated", "long", 0.1)
    assert parsed["collateral"] == 1000.0 and parsed["liquidationPrice"] == 40160.64257028
    assert parsed["leverage"] is None  # fapi/v3/positionRisk carries no leverage
    assert fc.fetch_balance()["USDT"] == {"free": 8998.0, "used": 1000.0, "total": 9998.0}
    with pytest.raises(ccxt.ExchangeError, match="-4048"):
        fc.set_margin_mode("cross", SYMBOL)


def test_long_realised_pnl_and_fees(fut: Venue, fc: Any) -> None:
    _long(fc)
    fut.set_price("BTC/USDT", 51000)
    fc.create_order(SYMBOL, "market", "sell", 0.1, None, {"reduceOnly": True})
    assert fut.positions() == []
    assert fut.wallet() == D("10000") - D("2") + D("100") - D("2.04") == D("10095.96")
    trades = fc.fetch_my_trades(SYMBOL)
    assert [t["info"]["realizedPnl"] for t in trades] == ["0.00000000", "100.00000000"]
    assert [t["fee"]["cost"] for t in trades] == [2.0, 2.04]
    assert [(i.income_type, i.income) for i in fut.incomes()] == [
        ("COMMISSION", D("-2")), ("REALIZED_PNL", D("100")), ("COMMISSION", D("-2.04"))]


def test_liquidation_at_the_computed_price(fut: Venue, fc: Any) -> None:
    _long(fc)
    assert fut.liquidation_price(SYMBOL) == D("40160.64257028")
    fut.set_price("BTC/USDT", 40200)
    assert len(fut.positions()) == 1
    fut.set_price("BTC/USDT", 40100)
    assert fut.positions() == []
    liq = fut.futures_orders()[-1]
    assert liq.client_order_id.startswith("autoclose-") and liq.status == "FILLED"
    assert (liq.type, liq.time_in_force, liq.price) == ("LIMIT", "IOC", D("40160.6"))
    assert fut.wallet() == D("9998") - D("1000")  # the whole isolated margin is lost
    kinds = [(i.income_type, i.income) for i in fut.incomes()][-2:]
    assert kinds == [("REALIZED_PNL", D("-983.94")), ("INSURANCE_CLEAR", D("-16.06"))]
    fetched = fc.fetch_order(str(liq.order_id), SYMBOL)
    assert fetched["clientOrderId"] == liq.client_order_id and fetched["status"] == "closed"
    assert fc.fetch_my_trades(SYMBOL)[-1]["price"] == 40160.6
    assert fc.fetch_positions() == []


def test_funding_at_eight_utc(fut: Venue, fc: Any) -> None:
    fut.set_clock(EIGHT_UTC - 1000)
    _long(fc)
    fut.set_funding_rate(SYMBOL, "0.0001")
    assert fc.fetch_funding_history(SYMBOL) == []
    fut.set_clock(EIGHT_UTC)
    [row] = fc.fetch_funding_history(SYMBOL)
    assert (row["amount"], row["timestamp"], row["code"]) == (-0.5, EIGHT_UTC, "USDT")
    assert fut.wallet() == D("9997.5")
    fut.set_funding_rate(SYMBOL, "-0.0002")
    fut.set_clock(EIGHT_UTC + 8 * 3600 * 1000)  # 16:00: a long is paid a negative rate
    assert fut.wallet() == D("9998.5")
    premium = fc.fapiPublicGetPremiumIndex({"symbol": "BTCUSDT"})
    assert premium["lastFundingRate"] == "-0.00020000"
    assert premium["nextFundingTime"] == EIGHT_UTC + 16 * 3600 * 1000


def test_reduce_only_refused_when_it_would_increase_or_flip(fut: Venue, fc: Any) -> None:
    # against a local URL ccxt applies only its global table: -2022 is an ExchangeError
    with pytest.raises(ccxt.ExchangeError, match="ReduceOnly Order is rejected"):
        fc.create_order(SYMBOL, "market", "sell", 0.1, None, {"reduceOnly": True})
    _long(fc)
    with pytest.raises(ccxt.ExchangeError, match="ReduceOnly Order is rejected"):
        fc.create_order(SYMBOL, "market", "buy", 0.1, None, {"reduceOnly": True})
    with pytest.raises(ccxt.ExchangeError, match="ReduceOnly Order is rejected"):
        fc.create_order(SYMBOL, "market", "sell", 0.2, None, {"reduceOnly": True})
    assert [p.amount for p in fut.positions()] == [D("0.1")]


def test_hedge_mode_two_positions(fut: Venue, fc: Any) -> None:
    assert fc.set_position_mode(True) == {"code": 200, "msg": "success"}
    assert fc.fapiPrivateGetPositionSideDual()["dualSidePosition"] is True
    fc.create_order(SYMBOL, "market", "buy", 0.1, None, {"hedged": True})
    fut.set_price("BTC/USDT", 51000)
    fc.create_order(SYMBOL, "market", "sell", 0.05, None, {"positionSide": "SHORT"})
    positions = {p["side"]: p for p in fc.fetch_positions()}
    assert {s: (p["contracts"], p["entryPrice"], p["hedged"]) for s, p in positions.items()} == {
        "long": (0.1, 50000.0, True), "short": (0.05, 51000.0, True)}
    assert positions["long"]["unrealizedPnl"] == 100.0
    # closing the long: ccxt sends positionSide LONG and drops reduceOnly
    fc.create_order(SYMBOL, "market", "sell", 0.1, None, {"hedged": True, "reduceOnly": True})
    assert [(p.side, p.amount) for p in fut.positions()] == [("SHORT", D("-0.05"))]
    with pytest.raises(ccxt.ExchangeError, match="position side does not match"):
        fc.create_order(SYMBOL, "market", "buy", 0.1)  # positionSide BOTH in hedge mode


def test_stop_market_reduce_only_triggers_and_closes(fut: Venue, fc: Any) -> None:
    _long(fc)
    stop = fc.create_order(SYMBOL, "market", "sell", 0.1, None,
                           {"stopLossPrice": 49000, "reduceOnly": True, "clientOrderId": "sl"})
    assert (stop["status"], stop["triggerPrice"], stop["reduceOnly"]) == ("open", 49000.0, True)
    assert stop["info"]["orderType"] == "STOP_MARKET" and stop["clientOrderId"] == "sl"
    assert fc.fetch_open_orders(SYMBOL) == []  # conditional orders are listed apart
    assert [o["id"] for o in fc.fetch_open_orders(SYMBOL, None, None, {"trigger": True})] == [
        stop["id"]]
    fut.set_price("BTC/USDT", 49100)
    assert len(fut.positions()) == 1
    fut.set_price("BTC/USDT", 48900)
    assert fut.positions() == []
    done = fc.fetch_order(stop["id"], SYMBOL, {"trigger": True})
    assert (done["status"], done["info"]["algoStatus"]) == ("closed", "FINISHED")
    fill = fc.fetch_order(done["info"]["actualOrderId"], SYMBOL)
    assert (fill["clientOrderId"], fill["average"], fill["reduceOnly"]) == ("sl", 48900.0, True)
    assert fut.wallet() == D("9998") - D("110") - D("1.9560")


def test_stop_that_finds_no_position_expires(fut: Venue, fc: Any) -> None:
    """The exit race on futures: bkit closed first, the reduce-only stop then fires: no
    reverse position."""
    _long(fc)
    stop = fc.create_order(SYMBOL, "market", "sell", 0.1, None,
                           {"stopLossPrice": 49000, "reduceOnly": True})
    fc.create_order(SYMBOL, "market", "sell", 0.1, None, {"reduceOnly": True})
    fut.set_price("BTC/USDT", 48000)
    assert fut.positions() == []
    assert fc.fetch_order(stop["id"], SYMBOL, {"trigger": True})["status"] == "expired"


def test_stop_market_on_the_order_endpoint_is_refused(fc: Any) -> None:
    with pytest.raises(ccxt.ExchangeError, match="Algo Order API"):
        fc.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                 "quantity": "0.1", "stopPrice": "49000"})


def test_cancel_a_conditional_order(fut: Venue, fc: Any) -> None:
    _long(fc)
    stop = fc.create_order(SYMBOL, "market", "sell", 0.1, None,
                           {"stopLossPrice": 49000, "reduceOnly": True})
    cancelled = fc.cancel_order(stop["id"], SYMBOL, {"trigger": True})
    assert cancelled["id"] == stop["id"]
    assert fc.fetch_open_orders(SYMBOL, None, None, {"trigger": True}) == []
    fut.set_price("BTC/USDT", 48000)
    assert [p.amount for p in fut.positions()] == [D("0.1")]


def test_limit_order_rests_and_fills_as_maker(fut: Venue, fc: Any) -> None:
    fc.set_leverage(10, SYMBOL)
    fc.create_order(SYMBOL, "limit", "buy", 0.01, 49000, {"clientOrderId": "L"})
    assert fc.fetch_balance()["USDT"]["used"] == 49.0  # open-order margin
    fut.set_price("BTC/USDT", 48900)
    [trade] = fut.futures_trades()
    assert (trade.price, trade.is_maker, trade.commission) == (D("49000"), True, D("0.098"))

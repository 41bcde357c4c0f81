"""Money through the real ccxt client: balances, reservations and fees per fee rule, with
Decimal-exact expected values."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import ccxt
import pytest

from bkit.venue import Venue
from tests.venue.conftest import MARKETS, NOW_MS, make_client


def test_base_fee_buy_then_sell(venue: Venue, client: Any) -> None:
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["fee"] == {"currency": "BTC", "cost": 0.00001}
    assert venue.balances()["BTC"] == (D("0.00999"), D(0))
    assert venue.balance("USDT") == D("9500")
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 0.01)
    assert len(venue.orders()) == 1  # refused, not logged
    client.create_order("BTC/USDT", "market", "sell", 0.00999)
    expected = D("9500") + D("0.00999") * D("50000") * (1 - D("0.001"))
    assert venue.balance("USDT") == expected == D("9999.0005")
    assert venue.balance("BTC") == 0
    sold = venue.trades("BTC/USDT")[-1]
    assert (sold.commission, sold.commission_asset) == (D("0.4995"), "USDT")


def test_fetch_balance_free_used_total(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000)
    balance = client.fetch_balance()
    assert balance["USDT"] == {"free": 9600.0, "used": 400.0, "total": 10000.0}
    assert venue.balances()["USDT"] == (D("9600"), D("400"))


def test_limit_buy_reserves_and_fills_at_its_price(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 49000, {"clientOrderId": "L"})
    assert venue.balances()["USDT"] == (D("9510"), D("490"))
    venue.set_price("BTC/USDT", 48000)  # crosses: the resting order fills at its limit
    order = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "L"})
    assert (order["status"], order["average"]) == ("closed", 49000.0)
    assert venue.balances()["USDT"] == (D("9510"), D(0))
    assert venue.balance("BTC") == D("0.00999")
    assert client.fetch_my_trades("BTC/USDT")[0]["takerOrMaker"] == "maker"


def test_marketable_limit_takes_at_the_better_price(venue: Venue, client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 51000)
    assert venue.balance("USDT") == D("9500")  # filled at 50,000, the surplus released
    assert venue.balances()["USDT"][1] == 0


def test_quote_fee_rule() -> None:
    with Venue(MARKETS, balances={"USDT": 10000}, fee_rule="quote") as venue:
        venue.set_clock(NOW_MS)
        venue.set_price("BTC/USDT", 50000)
        client = make_client(venue)
        order = client.create_order("BTC/USDT", "market", "buy", 0.01)
        assert order["fee"] == {"currency": "USDT", "cost": 0.5}
        assert venue.balance("BTC") == D("0.01")
        assert venue.balance("USDT") == D("9499.5")
        client.create_order("BTC/USDT", "market", "sell", 0.01)
        assert venue.balance("USDT") == D("9499.5") + D("500") - D("0.5")


def test_third_asset_fee_rule_falls_back_to_base() -> None:
    with Venue(MARKETS, balances={"USDT": 10000, "BNB": "0.001"}, fee_rule="BNB",
               fee_asset_price=500) as venue:
        venue.set_clock(NOW_MS)
        venue.set_price("BTC/USDT", 50000)
        client = make_client(venue)
        client.create_order("BTC/USDT", "market", "buy", 0.01)  # fee 0.5 USDT = 0.001 BNB
        assert venue.balance("BNB") == 0 and venue.balance("BTC") == D("0.01")
        client.create_order("BTC/USDT", "market", "buy", 0.01)  # no BNB left: base rule
        assert venue.balance("BTC") == D("0.01") + D("0.00999")
        assert [t.commission_asset for t in venue.trades()] == ["BNB", "BTC"]
        assert venue.balance("USDT") == D("9000")


def test_slippage_moves_market_fills_against_us(venue: Venue, client: Any) -> None:
    venue.set_slippage("0.001")
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["average"] == 50050.0
    assert venue.balance("USDT") == D("10000") - D("500.5")


def test_quote_order_qty_market_buy(venue: Venue, client: Any) -> None:
    venue.set_price("BTC/USDT", "30000")
    order = client.create_order("BTC/USDT", "market", "buy", None, None,
                                {"quoteOrderQty": 100})
    # 100 / 30,000 = 0.0033333.. floored to the 0.00001 step
    assert order["filled"] == 0.00333 and order["cost"] == 99.9
    assert venue.balance("USDT") == D("10000") - D("99.9")
    assert venue.balances()["USDT"][1] == 0


def test_insufficient_quote_is_refused(venue: Venue, client: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "limit", "buy", 0.3, 40000)  # 12,000 > 10,000
    assert venue.balances()["USDT"] == (D("10000"), D(0))


def test_every_coin_is_accounted_for(venue: Venue, client: Any) -> None:
    """Balances = initial + the fills in the trade log (quote, base and commissions)."""
    venue.set_fill_fraction("0.7")
    client.create_order("BTC/USDT", "market", "buy", 0.02)
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 49000, {"clientOrderId": "r"})
    venue.fill_order("r", fraction=0.5)
    client.create_order("BTC/USDT", "market", "sell", 0.004)
    held = {"USDT": D(10000), "BTC": D(0)}
    for t in venue.trades():
        sign = 1 if t.side == "BUY" else -1
        held["BTC"] += sign * t.qty
        held["USDT"] -= sign * t.quote_qty
        held[t.commission_asset] -= t.commission
    assert {a: venue.balance(a) for a in held} == held
    assert client.public_get_ticker_price({"symbol": "BTCUSDT"}) == {
        "symbol": "BTCUSDT", "price": "50000.00000000"}
    assert client.fetch_time() == venue.now_ms()

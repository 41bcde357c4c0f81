"""`CC_STOP_LOSS_TRIGGER = "touch"` (SPEC §11) on the shipped real candles: the live tick and
the backtest give the same transitions with it, it gives a different trade list from "vwap",
and on a stop it never closes later than "vwap" does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bkit import add_strategy, set_config
from bkit.backtest import Backtest, add_frame
from tests.backtest import strategies
from tests.backtest.test_parity import XRP_START, _assert_same, _live, _setup


@pytest.mark.parametrize(("name", "symbol", "offset", "minutes"), [
    ("market_long", "XRP/ETH", 0, 500), ("mixed", "UNITTEST/BTC", 1500, 500),
    ("limit_short", "XRP/ETH", 900, 500)])
def test_touch_backtest_equals_live_ticks(name: str, symbol: str, offset: int,
                                          minutes: int) -> None:
    clock = _setup()
    set_config(CC_STOP_LOSS_TRIGGER="touch")
    add_strategy(name, getattr(strategies, name), interval="1m")
    start = XRP_START + timedelta(minutes=offset)
    add_frame("f", start, start + timedelta(minutes=minutes - 1))
    backtest = list(Backtest.run([symbol], name, "csv", "f"))
    live = _live(clock, [symbol], name, start, minutes)
    assert any(r.close_reason == "stop_loss" for r in live), "the case must hit stops"
    _assert_same(live, backtest)


def _trades(trigger: str) -> list:
    set_config(CC_STOP_LOSS_TRIGGER=trigger)
    return [r for r in Backtest.run(["UNITTEST/BTC"], "market_long", "csv", "day")
            if r.action == "closed"]


def test_touch_differs_from_vwap_and_never_stops_later() -> None:
    _setup()
    add_strategy("market_long", strategies.market_long, interval="15m")
    add_frame("day", XRP_START, XRP_START + timedelta(minutes=2999))
    vwap, touch = _trades("vwap"), _trades("touch")
    assert [(t.created_at, t.close_reason) for t in vwap] != \
        [(t.created_at, t.close_reason) for t in touch]
    by_entry = {t.signal.pending_at: t for t in touch if t.signal is not None}
    compared = 0
    for trade in vwap:
        assert trade.signal is not None
        same = by_entry.get(trade.signal.pending_at)
        if trade.close_reason != "stop_loss" or same is None:
            continue
        compared += 1
        assert same.created_at <= trade.created_at  # the touch rule is never later
        if same.close_reason == "stop_loss":
            assert same.current_price == trade.signal.price_stop_loss  # exactly at SL
    assert compared >= 3
    assert sum(t.close_reason == "stop_loss" for t in touch) >= \
        sum(t.close_reason == "stop_loss" for t in vwap)

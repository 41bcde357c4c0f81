"""Backtest = live: `Backtest.run` over a frame gives the transitions that `Live.tick`,
called for each minute of the frame on a fresh SQLite database, gives (same times, prices,
reasons and PnL) on the shipped real candles, gaps included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bkit import add_risk, add_strategy, set_config
from bkit.backtest import Backtest, add_frame
from bkit.backtest.engine import TRANSITIONS
from bkit.clock import ManualClock
from bkit.core.results import TickResult
from bkit.exchange.paper import add_paper_exchange, shipped_series
from tests.backtest import strategies

XRP_START = datetime(2019, 10, 11, 0, 10, tzinfo=UTC)  # both samples on this clock


def _setup() -> ManualClock:
    clock = ManualClock(XRP_START)
    add_paper_exchange("csv", clock=clock, series=shipped_series())
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4, CC_MIN_STOPLOSS_DISTANCE_PERCENT=0.4)
    return clock


def _live(clock: ManualClock, symbols: list[str], strategy: str, start: datetime,
          minutes: int) -> list[TickResult]:
    from bkit.live import Live

    out = []
    for minute in range(minutes):
        when = start + timedelta(minutes=minute)
        clock.current = when  # the paper feed has closed every candle before `when`
        for symbol in symbols:
            result = Live.tick(symbol, strategy, "csv", when)
            if result is not None and result.action in TRANSITIONS:
                out.append(result)
    return out


def _shape(result: TickResult) -> tuple[Any, ...]:
    s = result.signal
    assert s is not None
    return (result.action, result.symbol, result.created_at, result.current_price,
            result.reason, result.close_reason, result.close_timestamp, s.position,
            s.price_open, s.price_take_profit, s.price_stop_loss, s.minute_estimated_time,
            s.scheduled_at, s.pending_at, s.cost)


def _assert_same(live: list[TickResult], backtest: list[TickResult]) -> None:
    assert [_shape(r) for r in backtest] == [_shape(r) for r in live]
    for lr, br in zip(live, backtest, strict=True):
        if lr.pnl is None:
            assert br.pnl is None
            continue
        assert br.pnl is not None
        assert br.pnl.pnl_percentage == pytest.approx(lr.pnl.pnl_percentage, abs=1e-9)
        assert br.pnl.pnl_cost == pytest.approx(lr.pnl.pnl_cost, abs=1e-9)


CASES = [
    # (strategy function, interval, symbols, start offset in minutes, minutes)
    ("market_long", "15m", ["XRP/ETH"], 0, 700),
    ("market_long", "5m", ["UNITTEST/BTC"], 300, 500),
    ("limit_short", "5m", ["XRP/ETH"], 900, 600),
    ("mixed", "1m", ["UNITTEST/BTC"], 1500, 600),
    ("unruly", "1m", ["XRP/ETH"], 2000, 300),
]


@pytest.mark.parametrize(("name", "interval", "symbols", "offset", "minutes"), CASES)
def test_backtest_transitions_equal_live_ticks(name: str, interval: str, symbols: list[str],
                                               offset: int, minutes: int) -> None:
    clock = _setup()
    add_strategy(name, getattr(strategies, name), interval=interval)
    start = XRP_START + timedelta(minutes=offset)
    add_frame("f", start, start + timedelta(minutes=minutes - 1))
    backtest = list(Backtest.run(symbols, name, "csv", "f"))
    live = _live(clock, symbols, name, start, minutes)
    assert len(live) >= 10, "the case must exercise the machine"
    _assert_same(live, backtest)
    actions = {r.action for r in live}
    if name in ("limit_short", "mixed"):
        assert {"scheduled", "opened", "cancelled", "closed"} <= actions


def test_shared_risk_budget_across_symbols_equals_live() -> None:
    """Two symbols, one risk profile (one position at a time, a validation rejecting some
    minutes): the backtest counts the budget across its symbols as the database does."""
    clock = _setup()
    add_risk("one-at-a-time", validations=[strategies.risk_odd_minutes],
             max_concurrent_positions=1)
    add_strategy("shared", strategies.mixed, interval="1m", risk_name="one-at-a-time")
    start = XRP_START + timedelta(minutes=60)
    add_frame("f", start, start + timedelta(minutes=399))
    symbols = ["XRP/ETH", "UNITTEST/BTC"]
    backtest = list(Backtest.run(symbols, "shared", "csv", "f"))
    live = _live(clock, symbols, "shared", start, 400)
    assert {r.symbol for r in live if r.action == "opened"} == set(symbols)
    _assert_same(live, backtest)

"""Sizing and position commands in backtests (SPEC §11, §12), on the shipped real candles:
a starting balance that moves with the realised PnL, the same entry costs as `Live.tick`
minute by minute (fixed %, ATR on 1m and on a 5m interval), refusals as error events, and
callbacks that take 50 % at the 50 % milestone giving the same partials and PnL as live."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bkit import add_sizing, add_strategy, listen_error, set_config
from bkit.backtest import Backtest, add_frame
from bkit.core.results import TickResult
from bkit.core.signals import PublicSignal
from tests.backtest import strategies
from tests.backtest.test_parity import XRP_START, _assert_same, _live, _setup


def _frame(offset: int, minutes: int) -> datetime:
    start = XRP_START + timedelta(minutes=offset)
    add_frame("f", start, start + timedelta(minutes=minutes - 1))
    return start


def _costs(results: list[TickResult], action: str = "opened") -> list[float]:
    return [r.signal.cost for r in results if r.action == action and r.signal is not None]


def test_a_starting_balance_tracked_with_realised_pnl() -> None:
    _setup()
    add_sizing("two-pct", "fixed_percentage", risk_percentage=2)
    add_strategy("sized", strategies.market_long, interval="15m", sizing_name="two-pct")
    _frame(0, 700)
    run = list(Backtest.run("XRP/ETH", "sized", "csv", "f", balance=1000))
    opened = [r for r in run if r.action == "opened"]
    assert len(opened) >= 5
    balance = 1000.0
    realised: list[float] = []
    for result in run:
        signal = result.signal
        assert signal is not None
        if result.action == "opened":
            # qty = balance × 2 % / |open − SL|; cost = qty × open, on the account so far
            balance = 1000.0 + math.fsum(realised)
            expected = balance * 2 / 100 / abs(signal.price_open - signal.price_stop_loss) \
                * signal.price_open
            assert signal.cost == pytest.approx(expected, rel=1e-12)
        elif result.action == "closed":
            assert result.pnl is not None
            realised.append(result.pnl.pnl_cost)
    assert len(set(_costs(run))) > 1, "the balance moved with the realised PnL"
    data = Backtest.get_data("XRP/ETH", "sized", "csv", "f")
    assert data["total_closed"] == len(realised)


def test_entries_refused_without_a_balance_or_history() -> None:
    _setup()
    errors: list[dict[str, Any]] = []
    listen_error(errors.append)
    add_sizing("pct", "fixed_percentage", risk_percentage=2)
    add_sizing("kelly", "kelly")
    add_strategy("no-balance", strategies.market_long, interval="15m", sizing_name="pct")
    add_strategy("no-history", strategies.market_long, interval="15m", sizing_name="kelly")
    _frame(0, 120)
    assert list(Backtest.run("XRP/ETH", "no-balance", "csv", "f")) == []
    assert list(Backtest.run("XRP/ETH", "no-history", "csv", "f", balance=1000)) == []
    sizing = [e for e in errors if e["data"].get("stage") == "sizing"]
    assert {e["strategy_name"] for e in sizing} == {"no-balance", "no-history"}
    assert all(e["backtest"] for e in sizing)
    messages = {e["message"] for e in sizing}
    assert "entry refused: sizing 'pct': no balance to size from: the backtest has no " \
        "starting balance: pass Backtest.run(..., balance=…) or set CC_SIZING_BALANCE " \
        "(quote currency)" in messages
    assert "entry refused: sizing 'kelly': Kelly needs 10 closed trades, the key has 0" \
        in messages
    with pytest.raises(ValueError, match="balance must be a finite number > 0"):
        Backtest.run("XRP/ETH", "no-balance", "csv", "f", balance=-5)


@pytest.mark.parametrize(("method", "params", "interval", "symbol", "offset", "minutes"), [
    ("fixed_percentage", {"risk_percentage": 1.5, "max_position_size": 4000}, "15m",
     "XRP/ETH", 0, 700),
    ("atr", {"risk_percentage": 0.5}, "1m", "UNITTEST/BTC", 1500, 400),
    ("atr", {"risk_percentage": 1, "atr_period": 5}, "5m", "UNITTEST/BTC", 300, 500),
])
def test_sized_backtest_equals_live_ticks(method: str, params: dict[str, float],
                                          interval: str, symbol: str, offset: int,
                                          minutes: int) -> None:
    clock = _setup()
    set_config(CC_SIZING_BALANCE=1000)  # live, signals only: the notional account
    add_sizing("sizing", method, **params)
    add_strategy("sized", strategies.mixed if interval == "1m" else strategies.market_long,
                 interval=interval, sizing_name="sizing")
    start = _frame(offset, minutes)
    backtest = list(Backtest.run(symbol, "sized", "csv", "f", balance=1000))
    live = _live(clock, [symbol], "sized", start, minutes)
    assert len(_costs(live)) >= 4
    _assert_same(live, backtest)  # the shape includes each signal's cost
    assert _costs(backtest) == _costs(live)  # bit for bit
    assert len(set(_costs(live))) > 1


def take_half_at_fifty(symbol: str, signal: PublicSignal, level: int, price: float,
                       when: datetime) -> None:
    """The callback of the brief: take 50 % at the 50 % milestone, live or in a backtest."""
    from bkit.live import Live

    if level == 50:
        Live.commit_partial_profit(symbol, signal.strategy_name, signal.exchange_name, 50)


def trail_at_breakeven(symbol: str, signal: PublicSignal, price: float,
                       when: datetime) -> None:
    from bkit.live import Live

    Live.commit_breakeven(symbol, signal.strategy_name, signal.exchange_name)


def _position(result: TickResult) -> tuple[Any, ...]:
    s = result.signal
    assert s is not None
    return (s.total_entries, s.total_partials, s.partial_executed, s.price_stop_loss)


@pytest.mark.parametrize(("name", "interval", "offset", "minutes"), [
    ("market_long", "15m", 0, 700),
    ("mixed", "1m", 1500, 600),
])
def test_callback_commands_in_a_backtest_equal_live(name: str, interval: str, offset: int,
                                                    minutes: int) -> None:
    clock = _setup()
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4, CC_MIN_STOPLOSS_DISTANCE_PERCENT=0.4,
               CC_BREAKEVEN_THRESHOLD=0.0, CC_PERCENT_FEE=0.05, CC_PERCENT_SLIPPAGE=0.05)
    add_strategy("managed", getattr(strategies, name), interval=interval,
                 callbacks={"on_partial_profit": take_half_at_fifty,
                            "on_breakeven": trail_at_breakeven})
    start = _frame(offset, minutes)
    symbol = "UNITTEST/BTC" if interval == "1m" else "XRP/ETH"
    backtest = list(Backtest.run(symbol, "managed", "csv", "f"))
    live = _live(clock, [symbol], "managed", start, minutes)
    _assert_same(live, backtest)
    closed = [r for r in live if r.action == "closed"]
    assert [_position(r) for r in backtest if r.action == "closed"] == \
        [_position(r) for r in closed]
    partials = [r for r in closed if r.signal is not None and r.signal.total_partials]
    assert len(partials) >= 2, "the case must take partials"
    assert all(r.signal is not None and r.signal.partial_executed == 50.0 for r in partials)
    moved = [r for r in closed if r.signal is not None and r.close_reason == "stop_loss"
             and r.signal.price_stop_loss == r.signal.price_open]
    assert moved, "the case must move a stop to breakeven"


def test_backtest_commands_outside_or_for_another_key() -> None:
    _setup()
    errors: list[dict[str, Any]] = []
    listen_error(errors.append)
    with pytest.raises(ValueError, match="inside a running backtest"):
        Backtest.commit_partial_profit("XRP/ETH", "x", "csv", 50)
    statuses: list[tuple[str, str | None]] = []

    def on_open(symbol: str, signal: PublicSignal, price: float, when: datetime) -> None:
        from bkit.live import Live

        command_id = Backtest.commit_trailing_stop(symbol, signal.strategy_name,
                                                   signal.exchange_name, -100)
        statuses.append(Live.command_status(command_id))
        Live.commit_breakeven("BTC/USDT", signal.strategy_name, signal.exchange_name)

    add_strategy("foreign", strategies.market_long, interval="15m",
                 callbacks={"on_open": on_open})
    _frame(0, 120)
    run = list(Backtest.run("XRP/ETH", "foreign", "csv", "f"))
    assert run and statuses and statuses[0] == ("pending", None)
    foreign = [e for e in errors if e["data"].get("stage") == "callback"]
    assert foreign and "not a key of the running backtest" in foreign[0]["message"]
    refused = [e for e in errors if e["data"].get("stage") == "command"]
    assert refused and "trailing stop refused" in refused[0]["message"]  # −100 reaches the entry
    assert datetime.now(UTC) > run[0].created_at


def test_sizing_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`examples/backtest_sizing.py`, the README's sizing example (on a fresh registry, so
    `my_strategy` is imported afresh and registers its exchange again)."""
    import runpy
    import sys

    from tests.backtest.conftest import REPO

    monkeypatch.delitem(sys.modules, "my_strategy", raising=False)
    data = runpy.run_path(str(REPO / "examples" / "backtest_sizing.py"))["main"]()
    assert data["total_closed"] >= 1

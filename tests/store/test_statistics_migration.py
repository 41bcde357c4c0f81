"""Migration 0004 moves a database of revision 0003 over with the same numbers: each key's
running statistics folded from its closed trades in close-time order, each transition event's
report columns from its payload (SPEC §9, §13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, select
from sqlmodel import Session

from bkit.core.pnl import Pnl
from bkit.core.results import TickResult
from bkit.core.running_statistics import RunningStatistics, running_statistics, statistics_from
from bkit.core.signals import PublicSignal
from bkit.core.statistics import ClosedTrade, compute_statistics
from bkit.store import migrations
from bkit.store.closed_trades import closed_trades, key_statistics
from bkit.store.event_log import report_rows, result_event
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol
from tests.store.conftest import stored_json

T0 = datetime(2019, 9, 1, 0, 0, tzinfo=UTC)
#: (pnl %, opens after T0, closes after T0), in the order the rows were written: the third
#: row closed first (its close was booked late), the fifth never opened (no pending_at).
TRADES = [(0.4, 0, 1), (-0.2, 3, 4), (1.5, -2, -1), (0.0, 6, 7), (-0.9, None, 9),
          (0.6, 10, 11), (-0.4, 13, 14), (0.3, 15, 16), (0.1, 17, 18), (-0.1, 19, 20),
          (0.5, 21, 22), (0.25, 23, 24)]


def _result(action: str, n: int, pnl: float | None, when: datetime) -> TickResult:
    signal = PublicSignal(id=f"t{n}", position="short" if n % 2 else "long",
                          price_open=100.0 + n, price_take_profit=110.0 + n,
                          price_stop_loss=90.0 + n, minute_estimated_time=60, note="",
                          cost=100.0, scheduled_at=when, pending_at=when, symbol="XRP/ETH",
                          strategy_name="s", exchange_name="paper")
    closed = action == "closed"
    return TickResult(action, "XRP/ETH", "s", "paper", 100.0, when, signal=signal,
                      pnl=Pnl(pnl or 0.0, pnl or 0.0, 100.0 + n, 100.0) if closed else None,
                      close_reason="take_profit" if closed else None,
                      close_timestamp=when if closed else None)


def _database_at_0003(engine: Engine) -> tuple[int, int]:
    """A key with TRADES (closed signals and their opened / closed events, an error event)
    and a key without trades, written at revision 0003."""
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0003_tick_history")
    meta = sa.MetaData()
    meta.reflect(engine)
    key, event, signal = (meta.tables[name] for name in ("strategy_symbol", "event", "signal"))
    stored = (lambda m: m.replace(tzinfo=None)) if engine.dialect.name == "sqlite" else \
        (lambda m: m)
    with engine.begin() as conn:
        ids = [conn.execute(sa.insert(key).values(
            strategy_name="s", exchange_name="paper", symbol=symbol, status="enabled",
            last_bucket=-1, lease_version=0, ticks_total=0, ticks_failed=0, errors_total=0,
            closed_total=0, closed_wins=0, closed_pnl_total=0.0).returning(key.c.id))
            .scalar_one() for symbol in ("XRP/ETH", "BTC/ETH")]
        events: list[dict[str, Any]] = []
        for n, (pnl, opens, closes) in enumerate(TRADES):
            opened_at = None if opens is None else T0 + timedelta(days=opens)
            closed_at = T0 + timedelta(days=closes)
            created_at = (opened_at or closed_at) - timedelta(minutes=5)
            conn.execute(sa.insert(signal).values(
                key_id=ids[0], signal_id=f"t{n}", symbol="XRP/ETH", strategy_name="s",
                exchange_name="paper", position="long", state="closed", price_open=100.0,
                price_take_profit=110.0, price_stop_loss=90.0, minute_estimated_time=60,
                note="", cost=100.0, created_at=stored(created_at),
                pending_at=None if opened_at is None else stored(opened_at),
                closed_at=stored(closed_at), close_reason="take_profit", pnl_percentage=pnl,
                pnl_cost=pnl, partial_profit_level=0, partial_loss_level=0,
                breakeven_fired=False, close_rejections=0, order_in_flight=False,
                exit_filled=0.0, exit_cost=0.0, fees_quote=0.0, fees_paid_quote=0.0,
                stuck=False, exit_orders=0))
            for action, when in (("opened", opened_at), ("closed", closed_at)):
                if when is not None:
                    result = _result(action, n, pnl, when)
                    events.append({"key_id": ids[0], "kind": "signal", "action": action,
                                   "symbol": "XRP/ETH", "signal_id": f"t{n}", "message": "",
                                   "created_at": stored(when),
                                   "payload": stored_json(result.to_dict())})
        events.append({"key_id": ids[0], "kind": "error", "action": None, "symbol": "XRP/ETH",
                       "signal_id": None, "message": "failed", "created_at": stored(T0),
                       "payload": stored_json({"stage": "tick"})})
        conn.execute(sa.insert(event), events)
    return ids[0], ids[1]


def _trades() -> list[ClosedTrade]:
    out = []
    for n, (pnl, opens, closes) in enumerate(TRADES):
        closed_at = T0 + timedelta(days=closes)
        opened_at = T0 + timedelta(days=opens) if opens is not None else \
            closed_at - timedelta(minutes=5)
        out.append(ClosedTrade(f"t{n}", "XRP/ETH", "long", pnl, pnl, opened_at, closed_at,
                               "take_profit"))
    return out


def test_0004_folds_each_keys_trades_and_fills_the_report_columns(engine: Engine) -> None:
    key_id, idle_id = _database_at_0003(engine)
    migrations.upgrade(engine)
    with Session(engine) as session:
        key, idle = session.get(StrategySymbol, key_id), session.get(StrategySymbol, idle_id)
        assert key is not None and idle is not None
        # exactly what the code's fold gives over the trades in close-time order
        assert key_statistics(key) == running_statistics(_trades())
        assert key_statistics(idle) == RunningStatistics()
        stats = statistics_from(key_statistics(key))
        stored = closed_trades(session, key_id)
        assert [t.signal_id for t in stored[:3]] == ["t2", "t0", "t1"]  # close-time order
        over_list = compute_statistics(stored)
        for name in ("total_closed", "win_count", "loss_count"):
            assert getattr(stats, name) == getattr(over_list, name)
        for name in ("win_rate", "avg_pnl", "total_pnl", "std_dev", "sharpe_ratio",
                     "annualized_sharpe_ratio", "certainty_ratio", "expected_yearly_returns",
                     "max_drawdown"):
            assert getattr(stats, name) == pytest.approx(getattr(over_list, name), rel=1e-12)
        # by hand: 12 trades, 7 wins, 4 losses, one at 0; Σ = 2.05; running (close order)
        # 1.5 1.9 1.7 1.7 0.8 1.4 1.0 1.3 1.4 1.3 1.8 2.05: peak 1.9, trough 0.8 → 1.1
        assert (stats.total_closed, stats.win_count, stats.loss_count) == (12, 7, 4)
        assert stats.total_pnl == pytest.approx(2.05, abs=1e-12)
        assert stats.max_drawdown == pytest.approx(1.1, abs=1e-12)
        # history from the first open (day −2) to the last close (day 24): 26 days ≥ 14
        assert stats.expected_yearly_returns == pytest.approx(
            2.05 / 12 * 12 * 365 / 26, abs=1e-9)
        assert (key.closed_first_opened_at, key.closed_last_at) == (
            T0 - timedelta(days=2), T0 + timedelta(days=24))

        # every transition's report columns are what result_event writes for a new one
        events = list(session.execute(select(EventRecord).where(EventRecord.key_id == key_id)
                                      .order_by(EventRecord.id)).scalars())
        columns = ("position", "price_open", "price_take_profit", "price_stop_loss",
                   "pnl_percentage", "reason")
        for record in events:
            if record.kind == "signal":
                made = result_event(key_id, TickResult.from_dict(record.payload or {}), "x")
                assert [getattr(record, c) for c in columns] == [
                    getattr(made, c) for c in columns]
            else:
                assert [getattr(record, c) for c in columns] == [None] * 6
        closed = next(r for r in events if r.action == "closed" and r.signal_id == "t1")
        assert (closed.position, closed.price_open, closed.pnl_percentage, closed.reason) == (
            "short", 101.0, -0.2, "take_profit")
        rows = report_rows(session, key_id, 250)
        assert len(rows) == 23 and rows[-1].signal_id == "t11"  # t4 never opened
        assert session.execute(select(sa.func.count(SignalRecord.id))).scalar() == 12

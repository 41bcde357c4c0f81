"""History that does not grow the cost (SPEC §13): the 0003 migration moves an old event log
over without losing a trade, pruning deletes only what is past its time, and the tick feed is
written only while a listener is present."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from bkit.store import migrations
from bkit.store.tables import (
    EventRecord,
    ListenerPresence,
    SignalRecord,
    StrategySymbol,
    TickFeedRecord,
    TickHistoryRecord,
)
from bkit.store.tick_history import (
    ACTION_CODES,
    FEED_KEEP_SECONDS,
    forget_presence_cache,
    listeners_present,
    prune,
    say_gone,
    say_present,
)
from tests.store.conftest import stored_json

NOW = datetime(2019, 10, 20, 12, 0, tzinfo=UTC)


def _minute(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _old_log(engine: Engine) -> int:
    """A database at revision 0002 whose event log holds a tick event per minute (the old
    way) for 10 days, two closed trades with their transitions, and errors."""
    with engine.begin() as conn:
        config = migrations._config(conn)
        command.upgrade(config, "0002_position_commands")
    meta = sa.MetaData()
    meta.reflect(engine)
    # the signal table is the same at 0002 and now: the model's defaults fill its columns
    key, event, signal = meta.tables["strategy_symbol"], meta.tables["event"], \
        SignalRecord.__table__  # type: ignore[attr-defined]
    stored = (lambda m: m.replace(tzinfo=None)) if engine.dialect.name == "sqlite" else \
        (lambda m: m)
    with engine.begin() as conn:
        key_id = conn.execute(sa.insert(key).values(
            strategy_name="s", exchange_name="paper", symbol="XRP/ETH", status="enabled",
            last_bucket=-1, lease_version=0).returning(key.c.id)).scalar_one()
        rows = []
        for n in range(10 * 24 * 6):  # a tick every 10 minutes for 10 days
            at = NOW - timedelta(minutes=10 * n)
            payload = {"action": "active", "current_price": 0.025 + n * 1e-6,
                       "created_at": at.isoformat(), "duration_ms": 4.0,
                       "pnl": {"pnl_percentage": 0.1, "pnl_cost": 0.1,
                               "price_open": 0.025, "price_close": 0.025}}
            rows.append({"key_id": key_id, "kind": "signal", "action": "active",
                         "created_at": stored(at), "message": "",
                         "payload": stored_json(payload)})
        for sid, at in (("t1", NOW - timedelta(days=9)), ("t2", NOW - timedelta(days=1))):
            for action in ("opened", "closed"):
                rows.append({"key_id": key_id, "kind": "signal", "action": action,
                             "signal_id": sid, "created_at": stored(at), "message": "",
                             "payload": stored_json({"action": action, "current_price": 0.03,
                                                    "created_at": at.isoformat()})})
            conn.execute(sa.insert(signal).values(
                key_id=key_id, signal_id=sid, symbol="XRP/ETH", strategy_name="s",
                exchange_name="paper", position="long", state="closed", price_open=0.025,
                price_take_profit=0.03, price_stop_loss=0.02, minute_estimated_time=60,
                cost=100.0, created_at=at, pnl_percentage=1.5 if sid == "t1" else -0.5,
                realised_pnl_cost=1.25 if sid == "t1" else None))
        for n in range(3):
            rows.append({"key_id": key_id, "kind": "error", "created_at": stored(NOW),
                         "message": f"failed {n}", "payload": stored_json({"stage": "tick"})})
        base = {"action": None, "signal_id": None}
        conn.execute(sa.insert(event), [base | row for row in rows])
    return key_id


def test_the_migration_moves_ticks_out_of_the_log_and_keeps_every_trade(
        engine: Engine) -> None:
    key_id = _old_log(engine)
    migrations.upgrade(engine)
    with Session(engine) as session:
        key = session.get(StrategySymbol, key_id)
        assert key is not None
        # every tick and transition event counted; newest tick's price kept
        assert key.ticks_total == 10 * 24 * 6 + 4
        assert (key.errors_total, key.ticks_failed) == (3, 3)
        assert key.last_error_message == "failed 2"
        assert (key.closed_total, key.closed_wins) == (2, 1)
        assert key.closed_pnl_total == pytest.approx(1.0)
        assert key.closed_realised_total == pytest.approx(1.25)
        left = session.execute(select(EventRecord.kind, EventRecord.action, func.count())
                               .group_by(EventRecord.kind, EventRecord.action)).all()
        assert sorted(left, key=str) == sorted(
            [("error", None, 3), ("signal", "opened", 2), ("signal", "closed", 2)], key=str)
        ticks = list(session.execute(select(TickHistoryRecord)).scalars())
        # the newest 7 days of ticks became compact rows, the older ones are gone
        newest = _minute(NOW)
        assert {t.minute for t in ticks} == {
            _minute(NOW - timedelta(minutes=10 * n)) for n in range(7 * 24 * 6 + 1)}
        assert all(t.action == ACTION_CODES["active"] and t.pnl == pytest.approx(0.1)
                   and t.duration_ms == pytest.approx(4.0) for t in ticks)
        assert next(t.price for t in ticks if t.minute == newest) == pytest.approx(0.025)
        assert session.execute(select(func.count()).select_from(SignalRecord)).scalar() == 2


def _history(engine: Engine, minutes: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(TickHistoryRecord), [
            {"key_id": 1, "minute": m, "action": 0, "price": 1.0} for m in minutes])


def test_pruning_deletes_only_past_the_kept_days_in_batches(engine: Engine) -> None:
    migrations.upgrade(engine)
    start = _minute(NOW - timedelta(days=9))
    _history(engine, list(range(start, _minute(NOW), 60)))  # 9 days, one row an hour
    with engine.begin() as conn:
        conn.execute(sa.insert(EventRecord), [{"key_id": 1, "kind": "signal",
                                               "action": "opened", "message": "",
                                               "created_at": NOW - timedelta(days=30)}])
    done = prune(engine, NOW, 7, batch=10)
    cutoff = _minute(NOW - timedelta(days=7))
    assert done.history_rows == 48 and done.batches == 5  # 2 days of hourly rows, 10 a batch
    with Session(engine) as session:
        kept = list(session.execute(select(TickHistoryRecord.minute)).scalars())
        assert kept and min(kept) >= cutoff and len(kept) == 9 * 24 - 48
        assert session.execute(select(func.count()).select_from(EventRecord)).scalar() == 1
    assert prune(engine, NOW, 7, batch=10).history_rows == 0  # nothing more is due
    assert prune(engine, NOW, 0).history_rows == len(kept)  # 0 days: none kept


def test_the_feed_is_written_only_while_a_listener_is_present(engine: Engine) -> None:
    migrations.upgrade(engine)
    forget_presence_cache()
    with Session(engine) as session:
        assert not listeners_present(session)
        say_present(session, "host:1:abc")
        session.commit()
        forget_presence_cache()
        assert listeners_present(session)
        say_present(session, "host:1:abc")  # a refresh updates the same row
        session.commit()
        assert session.execute(select(func.count()).select_from(ListenerPresence)).scalar() == 1
        say_gone(session, "host:1:abc")
        session.commit()
        forget_presence_cache()
        assert not listeners_present(session)
        old = time.time() - FEED_KEEP_SECONDS - 5
        session.add_all([TickFeedRecord(written_at=old, payload={"a": 1}),
                         TickFeedRecord(written_at=time.time(), payload={"a": 2})])
        session.commit()
    prune(engine, NOW, 7)
    with Session(engine) as session:
        assert [r.payload for r in session.execute(select(TickFeedRecord)).scalars()] == [
            {"a": 2}]

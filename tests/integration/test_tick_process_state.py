"""What a tick process keeps between ticks is bounded by its keys, not by the signals or
minutes ever ticked (issue 15: worker memory stays flat), and the restored-signal detection
it keeps never forgets a live signal. Two `TickEnv`s stand for two pool children ticking the
same keys in turn, as the prefork workers do. PostgreSQL and SQLite."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bkit.clock import ManualClock
from bkit.core.registry import add_strategy
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import SignalRecord
from bkit.ticking import TickEnv, bucket_of, run_ticks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("in_process_runtime")]
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
SYMBOLS = [f"M{i}/ETH" for i in range(5)]


def _one_minute_long(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    """Opens at once and closes (time_expired) on the next tick."""
    return {"position": "long", "price_take_profit": price * 1.1,
            "price_stop_loss": price * 0.9, "minute_estimated_time": 1}


def _hour_long(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": price * 1.1,
            "price_stop_loss": price * 0.9, "minute_estimated_time": 60}


def _env() -> TickEnv:
    return TickEnv(engine=get_engine(), clock=ManualClock(START))


def _keys(strategy_name: str) -> list[int]:
    upgrade(get_engine())
    return [ensure_key(get_engine(), strategy_name, "paper", s) for s in SYMBOLS]


def _signals(state: str | None = None) -> int:
    with session_scope(get_engine()) as session:
        stmt = select(func.count()).select_from(SignalRecord)
        if state is not None:
            stmt = stmt.where(SignalRecord.state == state)
        return int(session.execute(stmt).scalar_one())


def test_restored_signal_detection_keeps_one_entry_per_live_key_however_many_closed() -> None:
    """Child A opens every signal, child B closes it: A never sees a close, yet after 40
    signals per key A holds one entry per key (it held one per signal it ever opened)."""
    restored: Counter[str] = Counter()
    add_strategy("mem-flip", _one_minute_long, interval="1m", callbacks={
        "on_active": lambda symbol, signal, price, when: restored.update([signal.id])})
    ids = _keys("mem-flip")
    opener, closer = _env(), _env()
    for minute in range(80):
        env = opener if minute % 2 == 0 else closer
        results = run_ticks(env, ids, bucket_of(START + timedelta(minutes=minute))).results
        expected = "opened" if minute % 2 == 0 else "closed"
        assert [r.action for r in results.values() if r] == [expected] * len(ids)
    assert _signals("closed") == 40 * len(ids)
    # Nothing is live. B saw every close; A still names the signals it opened last, closed
    # since by B: one entry per key until A ticks the key again.
    assert len(closer.seen_signals) == 0 and len(opener.seen_signals) == len(ids)
    # B met each of A's signals first as a restored one, once; A never did for its own.
    assert len(restored) == 40 * len(ids) and set(restored.values()) == {1}
    # One more opening minute: A holds exactly the live signals, one per key.
    run_ticks(opener, ids, bucket_of(START + timedelta(minutes=80)))
    with session_scope(get_engine()) as session:
        live = dict(session.execute(select(SignalRecord.key_id, SignalRecord.signal_id).where(
            SignalRecord.state == "opened")).all())
    assert opener.seen_signals == live and len(live) == len(ids)


def test_a_live_signal_is_never_forgotten_nor_restored_twice() -> None:
    """The process that opened a signal does not 'restore' it on later ticks, a process that
    did not open it restores it exactly once, and each keeps it while it is live."""
    restored: list[tuple[str, str]] = []
    add_strategy("mem-hold", _hour_long, interval="1m", callbacks={
        "on_active": lambda symbol, signal, price, when: restored.append((symbol, signal.id))})
    ids = _keys("mem-hold")
    owner, other = _env(), _env()
    run_ticks(owner, ids, bucket_of(START))
    for minute in range(1, 12):  # the owner and another process take turns, twice each
        env = owner if (minute // 2) % 2 == 0 else other
        results = run_ticks(env, ids, bucket_of(START + timedelta(minutes=minute))).results
        assert all(r is not None and r.action == "active" for r in results.values())
    with session_scope(get_engine()) as session:
        live = dict(session.execute(select(SignalRecord.key_id, SignalRecord.signal_id).where(
            SignalRecord.state == "opened")).all())
    assert len(live) == len(ids) and _signals() == len(ids)
    assert owner.seen_signals == live and other.seen_signals == live
    assert sorted(signal_id for _, signal_id in restored) == sorted(live.values())

"""Real worker processes on Redis + PostgreSQL: fan-out idempotency, no concurrent ticks of
one key, crash recovery, cross-process Live.run, stop semantics, disable."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import psutil
import pytest
from sqlalchemy import func, select

from bkit import listen_done_live
from bkit.clock import clock_from_settings
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key, set_status
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol, TickHistoryRecord
from bkit.ticking import bucket_of
from tests.integration.conftest import Runtime, wait_until

pytestmark = pytest.mark.integration


def _app():  # the app as configured for this test's broker (reloaded by the runtime)
    import bkit.celery

    return bkit.celery.app


def _signal_events(key_id: int) -> list[EventRecord]:
    with session_scope(get_engine()) as session:
        return list(session.execute(select(EventRecord).where(
            EventRecord.key_id == key_id, EventRecord.kind == "signal")
            .order_by(EventRecord.id)).scalars())


def _ticks(key_id: int) -> list[TickHistoryRecord]:
    """The key's completed ticks (compact tick history, SPEC §13)."""
    with session_scope(get_engine()) as session:
        return list(session.execute(select(TickHistoryRecord).where(
            TickHistoryRecord.key_id == key_id).order_by(TickHistoryRecord.id)).scalars())


def _key(key_id: int) -> StrategySymbol:
    with session_scope(get_engine()) as session:
        key = session.get(StrategySymbol, key_id)
        assert key is not None
        return key


def test_each_key_ticks_once_per_minute_despite_two_beats_and_redelivery(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    # Speed 1: market time runs like real time from hh:mm:05, so every message below lands
    # in the same tick minute.
    runtime = make_runtime(pg_url, redis_broker_url, speed=1.0)
    engine = get_engine()
    upgrade(engine)
    key_ids = [ensure_key(engine, "it-long", "paper", f"SYM{i:02d}/ETH") for i in range(20)]
    runtime.start_worker(concurrency=2)
    app = _app()
    bucket = bucket_of(clock_from_settings().now())
    app.send_task("bkit.fanout_ticks")
    app.send_task("bkit.fanout_ticks")  # a second beat
    for key_id in key_ids:  # redelivered copies of the same tick
        app.send_task("bkit.tick", args=[key_id, bucket])
        app.send_task("bkit.tick", args=[key_id, bucket])
    wait_until(lambda: all(_key(k).last_bucket == bucket and _key(k).lease_owner is None
                           for k in key_ids), 30, message="every key ticked")
    time.sleep(2)  # let the duplicates drain through the worker
    assert clock_from_settings().now().minute == 0, "test must finish inside one minute"
    for key_id in key_ids:
        events = _signal_events(key_id)
        assert len(_ticks(key_id)) == 1, f"key {key_id} ticked {len(_ticks(key_id))} times"
        assert [e.action for e in events] == ["opened"]
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(SignalRecord)).scalar_one() \
            == len(key_ids)


def test_two_workers_never_tick_the_same_key_at_once(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    runtime = make_runtime(pg_url, redis_broker_url, speed=60.0, lease_seconds=5.0)
    engine = get_engine()
    upgrade(engine)
    key_id = ensure_key(engine, "it-slow-none", "paper", "XRP/ETH")
    runtime.start_worker(concurrency=2)
    runtime.start_worker(concurrency=2)
    app = _app()
    clock = clock_from_settings()
    deadline = time.monotonic() + 12
    sent_minutes: set[int] = set()
    while time.monotonic() < deadline:  # like beats at 4x the rate, each message twice
        bucket = bucket_of(clock.now())
        sent_minutes.add(bucket)
        app.send_task("bkit.tick", args=[key_id, bucket])
        app.send_task("bkit.tick", args=[key_id, bucket])
        time.sleep(0.25)
    time.sleep(3)
    intervals = sorted(runtime.jsonl("slow"), key=lambda r: r["start"])
    # Each tick takes longer than a market minute, so ticks cannot have been more than the
    # minutes sent; the essential checks are below: no overlap, no minute twice.
    assert 5 <= len(intervals) <= len(sent_minutes), intervals
    for earlier, later in itertools.pairwise(intervals):
        assert later["start"] >= earlier["end"], f"overlapping ticks: {earlier} {later}"
    ticked_minutes = [r["when"] for r in intervals]
    assert len(ticked_minutes) == len(set(ticked_minutes)), "a minute ticked twice"
    assert len({r["pid"] for r in intervals}) >= 2, "both workers should have taken turns"


def test_sigkilled_worker_loses_nothing_and_opens_nothing_twice(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    runtime = make_runtime(pg_url, redis_broker_url, speed=40.0, lease_seconds=3.0)
    engine = get_engine()
    upgrade(engine)
    mid = ensure_key(engine, "it-kill-mid", "paper", "XRP/ETH")
    after = ensure_key(engine, "it-kill-after-open", "paper", "XRP/ETH")
    worker = runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    # Both self-kills happen once (a child dies mid-tick, another right after commit).
    wait_until(lambda: (runtime.home / "killed-mid-tick").exists()
               and (runtime.home / "killed-after-open").exists(), 60, message="both kills")
    wait_until(lambda: any(e.action == "opened" for e in _signal_events(mid)), 60,
               message="the mid-tick key opens after its lease expires")
    # Now kill the whole worker (main process and children) and start a new one.
    for proc in psutil.Process(worker.pid).children(recursive=True):
        proc.send_signal(signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    live_before = {k: _live_signal_id(k) for k in (mid, after)}
    assert all(live_before.values()), f"positions must survive the kill: {live_before}"
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule2"))
    wait_until(lambda: {r["signal_id"] for r in runtime.jsonl("callbacks")
                        if r["callback"] == "on_active"} >= set(live_before.values()), 60,
               message="on_active for restored positions")
    wait_until(lambda: all(any(e.action == "closed" for e in _signal_events(k))
                           for k in (mid, after)), 90, message="positions close")
    for key_id in (mid, after):
        actions = Counter(e.action for e in _signal_events(key_id))
        with session_scope(engine) as session:
            signals = list(session.execute(select(SignalRecord).where(
                SignalRecord.key_id == key_id)).scalars())
        assert actions["opened"] == len(signals), (actions, len(signals))
        opened_ids = [e.signal_id for e in _signal_events(key_id) if e.action == "opened"]
        assert len(opened_ids) == len(set(opened_ids)), "a signal was opened twice"
        assert live_before[key_id] in {s.signal_id for s in signals if s.state == "closed"}


def _live_signal_id(key_id: int) -> str | None:
    with session_scope(get_engine()) as session:
        row = session.execute(select(SignalRecord.signal_id).where(
            SignalRecord.key_id == key_id,
            SignalRecord.state.in_(["scheduled", "opened"]))).first()  # type: ignore
        return None if row is None else row[0]


def test_live_run_follows_a_worker_and_stop_lets_the_position_close_then_done_once(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    runtime = make_runtime(pg_url, redis_broker_url, speed=60.0)
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    done: list[dict] = []
    listen_done_live(done.append)
    results = Live.run("XRP/ETH", "it-long-brief", "paper")
    opened = next(results)  # produced by the worker process
    assert opened.action == "opened" and opened.signal is not None
    assert opened.signal.pending_at is not None
    Live.stop("XRP/ETH", "it-long-brief", "paper")
    rest = list(results)  # ends when the stopped key has finished
    assert [r.action for r in rest] == ["closed"]
    closed = rest[0]
    assert closed.signal is not None and closed.signal.id == opened.signal.id
    assert closed.close_reason in ("take_profit", "stop_loss", "time_expired")
    wait_until(lambda: done, 10, message="done listener")
    time.sleep(1.5)
    assert len(done) == 1 and done[0]["symbol"] == "XRP/ETH"
    assert [k["status"] for k in Live.list()] == ["disabled"]


def test_a_disabled_key_stops_ticking_on_the_next_fanout(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    runtime = make_runtime(pg_url, redis_broker_url, speed=60.0)
    engine = get_engine()
    upgrade(engine)
    keep = ensure_key(engine, "it-slow-none", "paper", "XRP/ETH")
    off = ensure_key(engine, "it-slow-none", "paper", "OTHER/ETH")
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    wait_until(lambda: _ticks(off) and _ticks(keep), 30, message="ticks")
    set_status(engine, [off], "disabled", actor="test")
    time.sleep(1.5)  # a fan-out already in flight may still tick it once
    frozen = len(_ticks(off))
    kept = len(_ticks(keep))
    # the enabled key goes on ticking (two more fan-outs, however slow the machine) while
    # the disabled one does not move at all over the same time
    wait_until(lambda: len(_ticks(keep)) >= kept + 2, 30, message="keep ticks on")
    assert len(_ticks(off)) == frozen

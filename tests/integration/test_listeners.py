"""Listeners in another process receive every tick result (SPEC §9) without each one being a
permanent row (SPEC §13): a real worker ticks, this process listens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from bkit import events, listen_performance, listen_signal
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, ListenerPresence, TickFeedRecord, TickHistoryRecord
from tests.integration.conftest import Runtime, wait_until

pytestmark = pytest.mark.integration


def _count(table: Any, *where: Any) -> int:
    with session_scope(get_engine()) as session:
        return int(session.execute(select(func.count()).select_from(table).where(*where))
                   .scalar_one())


def test_a_listener_in_another_process_gets_every_tick_and_the_log_keeps_transitions(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    runtime = make_runtime(pg_url, redis_broker_url, speed=60.0)
    engine = get_engine()
    upgrade(engine)
    key_id = ensure_key(engine, "it-slow-none", "paper", "XRP/ETH")
    results: list[Any] = []
    timings: list[dict[str, Any]] = []
    listen_signal(results.append)
    listen_performance(timings.append)
    # the follower says it is present before the worker's first tick
    wait_until(lambda: _count(ListenerPresence) == 1, 10, message="presence")
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    wait_until(lambda: len(results) >= 3, 60, message="three tick results")

    ticked = _count(TickHistoryRecord, TickHistoryRecord.key_id == key_id)
    assert ticked >= 3
    assert {r.action for r in results} == {"idle"}
    assert all(r.symbol == "XRP/ETH" and r.strategy_name == "it-slow-none" for r in results)
    minutes = [r.created_at for r in results]
    assert minutes == sorted(minutes) and len(set(minutes)) == len(minutes)
    assert timings and all(t["metric_type"] == "live_tick" and t["duration"] >= 0
                           for t in timings)
    # none of those idle ticks is a permanent event row
    assert _count(EventRecord, EventRecord.kind == "signal") == 0

    # once nobody listens, the worker stops writing the feed (after the presence lapses)
    events.stop_follower()
    wait_until(lambda: _count(ListenerPresence) == 0, 10, message="presence removed")
    time.sleep(1.5)  # a worker trusts its last look at the presence table for 1 s
    fed = _count(TickFeedRecord)
    assert fed >= 3  # the results above came through the feed
    before = _count(TickHistoryRecord, TickHistoryRecord.key_id == key_id)
    wait_until(lambda: _count(TickHistoryRecord, TickHistoryRecord.key_id == key_id)
               >= before + 2, 30, message="two more ticks")
    assert _count(TickFeedRecord) == fed

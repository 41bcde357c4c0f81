"""The invariant checker that judges the crash matrix and the soak must itself catch what it
claims to: a real run's state passes, and each kind of damage done to it by hand is reported."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bkit.clock import ManualClock
from bkit.core.registry import REGISTRY
from bkit.exchange.paper import add_paper_exchange
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import (
    EventRecord,
    OrderIntent,
    RiskSlot,
    SignalRecord,
    TickHistoryRecord,
)
from bkit.testing.invariants import check_invariants
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)


@pytest.fixture
def opened(make_runtime: Callable[..., Runtime], pg_url: str) -> SignalRecord:
    """A real run: one key opens a position and is ticked for a few minutes."""
    make_runtime(pg_url)
    REGISTRY.exchanges.pop("paper")
    add_paper_exchange("paper", clock=ManualClock(datetime(2019, 10, 14, tzinfo=UTC)))
    first = Live.tick("XRP/ETH", "it-long", "paper", START)
    assert first is not None and first.action == "opened"
    Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=1))
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord)).scalars().one()


def _copy_event(action: str | None = None) -> None:
    with session_scope(get_engine()) as session:
        event = session.execute(select(EventRecord).where(EventRecord.kind == "signal")
                                .order_by(EventRecord.id)).scalars().first()
        assert event is not None
        session.add(EventRecord(key_id=event.key_id, kind="signal",
                                action=action or event.action, signal_id=event.signal_id,
                                created_at=event.created_at, payload=dict(event.payload or {})))
        tick = session.execute(select(TickHistoryRecord).order_by(TickHistoryRecord.id)
                               ).scalars().first()
        assert tick is not None  # and its compact tick row: the same minute ticked again
        session.add(TickHistoryRecord(key_id=tick.key_id, minute=tick.minute,
                                      action=tick.action, price=tick.price))


def test_a_clean_run_passes(opened: SignalRecord) -> None:
    assert check_invariants(get_engine(), monitored_since=START) == []


def test_a_minute_ticked_twice_and_a_double_open_are_reported(opened: SignalRecord) -> None:
    _copy_event()  # the opening tick's event again: same key, same minute, "opened" again
    problems = check_invariants(get_engine())
    assert f"key {opened.key_id} ticked 2 times for minute {START}" in problems
    assert f"signal {opened.signal_id} of key {opened.key_id} opened 2 times" in problems


def test_a_lost_position_is_reported(opened: SignalRecord) -> None:
    with session_scope(get_engine()) as session:
        row = session.get(SignalRecord, opened.id)
        assert row is not None
        row.state = "cancelled"  # a position that vanished without a close
    problems = check_invariants(get_engine())
    assert f"opened signal {opened.signal_id} is now 'cancelled' (lost position)" in problems


def test_an_unmonitored_position_is_reported(opened: SignalRecord) -> None:
    later = START + timedelta(minutes=30)
    problems = check_invariants(get_engine(), monitored_since=later)
    assert any(p.startswith(f"open signal {opened.signal_id} of key {opened.key_id} is not "
                            "monitored") for p in problems)


def test_orphan_slots_and_intents_are_reported(opened: SignalRecord) -> None:
    with session_scope(get_engine()) as session:
        session.add(RiskSlot(risk_name="r", key_id=opened.key_id, signal_id="gone",
                             symbol="XRP/ETH", strategy_name="it-long", exchange_name="paper"))
        session.add(OrderIntent(key_id=opened.key_id, signal_id="gone", kind="open",
                                client_order_id="bk-orphan", exchange_name="paper",
                                symbol="XRP/ETH", side="buy", price=1.0, cost=100.0))
    problems = check_invariants(get_engine(), risk_strategies={"it-long"})
    assert "risk slot of signal gone is held by a signal that is not live" in problems
    assert any(p.endswith("points to a missing signal") for p in problems)
    assert f"live signal {opened.signal_id} holds no risk slot" in problems

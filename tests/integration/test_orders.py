"""Orders through the `orders` queue with the real ccxt client against the fake exchange
server, a real worker, PostgreSQL and Redis: exactly one exchange order per intent, rollback,
retries, forced close, and an orders worker that was down."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from sqlalchemy import select

from bkit import listen_exit
from bkit.broker import Broker
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import EventRecord, OrderIntent, RiskSlot, SignalRecord
from bkit.testing import FakeExchange
from bkit.testing.fake_exchange import ORDER_PATH, Fault
from tests.integration.conftest import Runtime, wait_until
from tests.real_candles import XRP_ETH_CSV, real_candles

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
SYMBOL, STRATEGY, EXCHANGE = "XRP/ETH", "ord-long", "fakebin"


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with FakeExchange() as server:
        server.load_candles(SYMBOL, real_candles(XRP_ETH_CSV))
        yield server


@pytest.fixture
def orders_runtime(make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str,
                   fake: FakeExchange, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("FAKE_EXCHANGE_URL", fake.base_url)
    monkeypatch.setenv("BKIT_FAKEBIN_API_KEY", "canary-key-5f1d")
    monkeypatch.setenv("BKIT_FAKEBIN_SECRET", "canary-secret-9a7e")
    Broker.clear()
    runtime = make_runtime(pg_url, redis_broker_url,
                           strategies="tests.integration.strategies_orders")
    runtime.env.update({
        "FAKE_EXCHANGE_URL": fake.base_url, "BKIT_FAKEBIN_API_KEY": "canary-key-5f1d",
        "BKIT_FAKEBIN_SECRET": "canary-secret-9a7e", "BKIT_ORDER_SEND_LEASE_SECONDS": "4",
        "BKIT_ORDER_BACKOFF_MAX_SECONDS": "2", "BKIT_ORDER_RATE_LIMIT_BACKOFF_SECONDS": "1",
        "BKIT_RELAY_SECONDS": "2"})
    sys.modules.pop("tests.integration.strategies_orders", None)
    importlib.import_module("tests.integration.strategies_orders")
    return runtime


def _intents(kind: str | None = None) -> list[OrderIntent]:
    with session_scope(get_engine()) as session:
        stmt = select(OrderIntent).order_by(OrderIntent.id)
        if kind:
            stmt = stmt.where(OrderIntent.kind == kind)
        return list(session.execute(stmt).scalars())


def _signal() -> SignalRecord:
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord).order_by(SignalRecord.id.desc())  # type: ignore
                               ).scalars().first()


def _open_intent(fake: FakeExchange) -> OrderIntent:
    result = Live.tick(SYMBOL, STRATEGY, EXCHANGE, START)
    assert result is not None and result.action == "idle" and result.signal is not None
    (intent,) = _intents("open")
    assert intent.status == "pending" and intent.amount and intent.amount >= 1
    return intent


def _filled(intent_id: int) -> bool:
    return any(i.id == intent_id and i.status == "filled" for i in _intents())


def test_a_submit_delivered_twice_places_one_order(orders_runtime: Runtime,
                                                   fake: FakeExchange) -> None:
    intent = _open_intent(fake)  # the tick also enqueued one submit
    import bkit.celery

    bkit.celery.app.send_task("bkit.orders.submit", args=[intent.id], queue="orders")
    orders_runtime.start_worker("-Q", "orders", concurrency=2)
    wait_until(lambda: _filled(intent.id), 30, message="entry filled")
    time.sleep(1.5)
    assert len(fake.orders_for(intent.client_order_id)) == 1
    signal_row = _signal()
    assert signal_row.state == "opened" and signal_row.fill_price_open is not None
    with session_scope(get_engine()) as session:
        opened = session.execute(select(EventRecord).where(
            EventRecord.action == "opened")).scalars().all()
    assert len(opened) == 1


def test_worker_killed_after_the_exchange_accepted_places_one_order(
        orders_runtime: Runtime, fake: FakeExchange) -> None:
    fake.fail_next(ORDER_PATH, Fault.accepted_then_timeout(1.8), count=1)
    worker = orders_runtime.start_worker("-Q", "orders", "-B", "-s",
                                         str(orders_runtime.home / "beat"), concurrency=1)
    intent = _open_intent(fake)
    wait_until(lambda: fake.orders_for(intent.client_order_id), 20, message="order accepted")
    for child in psutil.Process(worker.pid).children(recursive=True):
        child.send_signal(signal.SIGKILL)  # before the response reaches the database
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    # marked unknown before the send: the restarted worker looks before it sends again
    assert _intents("open")[0].status == "unknown"
    orders_runtime.start_worker("-Q", "orders", "-B", "-s", str(orders_runtime.home / "beat2"),
                                concurrency=1)
    wait_until(lambda: _filled(intent.id), 40, message="entry recorded after restart")
    assert len(fake.orders_for(intent.client_order_id)) == 1
    assert _signal().state == "opened"


def test_timeout_after_acceptance_is_resolved_by_lookup(orders_runtime: Runtime,
                                                        fake: FakeExchange) -> None:
    fake.fail_next(ORDER_PATH, Fault.accepted_then_timeout(3.0), count=1)  # > 2 s client timeout
    orders_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    wait_until(lambda: _filled(intent.id), 40, message="entry filled after the timeout")
    (stored,) = _intents("open")
    # resolved by looking, not by sending again
    assert stored.attempts == 1 and "Timeout" in (stored.last_error or "")
    assert len(fake.orders_for(intent.client_order_id)) == 1


def test_rate_limit_and_server_errors_then_success_places_one_order(
        orders_runtime: Runtime, fake: FakeExchange) -> None:
    fake.fail_next(ORDER_PATH, Fault.rate_limit(), count=1)
    fake.fail_next(ORDER_PATH, Fault.unavailable(), count=2)
    orders_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    wait_until(lambda: _filled(intent.id), 60, message="entry filled after 3 failures")
    (stored,) = _intents("open")
    # the 429 left the outcome unknown; the 503s hit the lookups; after the settle window
    # showed no order, it was sent once more
    assert (stored.attempts, stored.resends) == (2, 1)
    assert len(fake.orders_for(intent.client_order_id)) == 1


@pytest.mark.parametrize("fault", [Fault.insufficient_balance(), Fault.invalid_order()],
                         ids=["insufficient_funds", "invalid_order"])
def test_definitive_rejection_rolls_the_entry_back(orders_runtime: Runtime, fake: FakeExchange,
                                                   fault: Fault) -> None:
    fake.fail_next(ORDER_PATH, fault, count=1)
    orders_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    wait_until(lambda: _intents("open")[0].status == "rejected", 30, message="rejection")
    dropped = _signal()
    assert dropped.state == "cancelled" and dropped.cancel_reason == "rejected"
    assert fake.orders_for(intent.client_order_id) == []
    with session_scope(get_engine()) as session:
        assert session.execute(select(RiskSlot)).scalars().all() == []
        errors = session.execute(select(EventRecord).where(
            EventRecord.kind == "error")).scalars().all()
    assert any("rolled back" in e.message for e in errors)
    # New signals are allowed again on the next tick.
    again = Live.tick(SYMBOL, STRATEGY, EXCHANGE, START + timedelta(minutes=1))
    assert again is not None and again.signal is not None and again.signal.id != dropped.signal_id


def test_exit_refused_five_times_is_stuck_not_closed(
        orders_runtime: Runtime, fake: FakeExchange) -> None:
    exits: list[dict] = []
    listen_exit(exits.append)
    entry = _open_intent(fake)  # pending: no worker has taken its submit yet
    orders_runtime.start_worker("-Q", "orders", concurrency=2)
    wait_until(lambda: _filled(entry.id), 30, message="entry filled")
    fake.set_fault(ORDER_PATH, Fault.invalid_order())  # every exit order is refused
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    Live.tick(SYMBOL, STRATEGY, EXCHANGE, START + timedelta(minutes=1))
    wait_until(lambda: _signal().stuck, 60, message="exit stuck after 5 refusals")
    final = _signal()
    assert final.state == "closing" and final.close_reason is None  # no close recorded
    (close,) = _intents("close")  # refused creates: nothing exists, the same id is retried
    assert (close.status, close.refusals) == ("stuck", 5)
    assert fake.orders_for(close.client_order_id) == []
    for minute in (2, 3, 4):  # a stuck position blocks new entries and is not re-sent
        result = Live.tick(SYMBOL, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
        assert result is not None and result.action == "idle"
    assert len(_intents()) == 2
    with session_scope(get_engine()) as session:
        assert len(session.execute(select(RiskSlot)).scalars().all()) in (0, 1)
    wait_until(lambda: exits, 10, message="exit listener")
    assert "stuck" in exits[0]["message"] and "refused 5 times" in exits[0]["message"]


def test_intents_wait_while_the_orders_worker_is_down_then_go_out(
        orders_runtime: Runtime, fake: FakeExchange) -> None:
    intent = _open_intent(fake)  # its submit message waits in the broker; no worker yet
    time.sleep(3)
    assert _intents("open")[0].status == "pending"
    assert fake.orders_for(intent.client_order_id) == []
    orders_runtime.start_worker("-Q", "orders", "-B", "-s", str(orders_runtime.home / "beat"),
                                concurrency=1)
    wait_until(lambda: _filled(intent.id), 30, message="entry sent once the worker is back")
    assert len(fake.orders_for(intent.client_order_id)) == 1

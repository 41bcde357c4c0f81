"""A SIGKILL between a partial close's command and its order, and between the order and its
confirmation (issue 14): real worker processes (Celery on Redis, PostgreSQL), the real ccxt
client on the venue model. Whatever dies, the partial is sold exactly once (one order on the
venue under its client id), recorded once, its command ends `filled`, the exchange-side stop
is back for the remainder, and the venue's balances equal bkit's recorded fills."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from bkit.clock import clock_from_settings
from bkit.core.candles import Candle
from bkit.core.position_commands import position_of
from bkit.faults import fired
from bkit.store import signal_rows
from bkit.store.commands import command_status, queue_command
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, OrderIntent, SignalRecord
from bkit.testing.ledger import venue_problems
from bkit.venue import Venue
from tests.integration.conftest import Runtime, wait_until

pytestmark = pytest.mark.integration
SYMBOL, STRATEGY, EXCHANGE = "BTC/USDT", "pc-long", "pcbin"
INITIAL = {"USDT": "10000", "BTC": "0"}
WORKER = ("-Q", "ticks,orders,maint", "-B")


def _candles(start: datetime, rise_at: datetime | None) -> list[Candle]:
    """Flat 50,000 for hours around `start`; 50,500 from `rise_at` on (if given)."""
    first = int((start - timedelta(hours=1)).replace(second=0, microsecond=0).timestamp()
                * 1000)
    rise = None if rise_at is None else int(rise_at.timestamp() * 1000)
    out = []
    for m in range(0, 6 * 60):
        ts = first + m * 60_000
        price = 50_500.0 if rise is not None and ts >= rise else 50_000.0
        out.append(Candle(ts, price, price, price, price, 10.0))
    return out


@pytest.fixture
def venue() -> Iterator[Venue]:
    with Venue(balances=INITIAL) as v:
        v.set_lookup_lag(0.5)
        yield v


def _intents(kind: str) -> list[OrderIntent]:
    with session_scope(get_engine()) as session:
        return list(session.execute(select(OrderIntent).where(OrderIntent.kind == kind)
                                    .order_by(OrderIntent.id)).scalars())  # type: ignore


def _signal() -> SignalRecord | None:
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord)).scalars().first()


def _dump(command: int | None) -> None:
    """What the run did, printed when a wait times out (pytest shows it with the failure)."""
    with session_scope(get_engine()) as session:
        for e in session.execute(select(EventRecord).order_by(EventRecord.id)).scalars():
            if e.action != "idle":
                print("EV", e.kind, e.action, e.message)
        for i in session.execute(select(OrderIntent)).scalars():
            print("IN", i.kind, i.status, i.amount, i.filled_amount, i.last_error)
    if command is not None:
        print("CMD", command_status(get_engine(), command))
    print("ROW", _signal())


@pytest.mark.parametrize("point", ["tick.after_commit.command", "submit.partial.before_send",
                                   "submit.partial.after_send"])
def test_sigkill_around_a_partial_neither_loses_nor_repeats_it(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str,
        venue: Venue, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    monkeypatch.setenv("FAKE_EXCHANGE_URL", venue.base_url)
    runtime = make_runtime(pg_url, redis_broker_url, speed=30.0, lease_seconds=3.0,
                           strategies="tests.e2e.position_crash_strategies")
    runtime.env.update({"FAKE_EXCHANGE_URL": venue.base_url,
                        "BKIT_PCBIN_API_KEY": "k-pc", "BKIT_PCBIN_SECRET": "s-pc",
                        "BKIT_ORDER_SEND_LEASE_SECONDS": "3",
                        "BKIT_ORDER_BACKOFF_MAX_SECONDS": "2", "BKIT_RELAY_SECONDS": "2",
                        "BKIT_CRASH_POINTS": point})
    clock = clock_from_settings()
    venue.set_clock(lambda: int(clock.now().timestamp() * 1000))
    venue.load_candles(SYMBOL, _candles(clock.now(), None))
    upgrade(get_engine())
    key_id = ensure_key(get_engine(), STRATEGY, EXCHANGE, SYMBOL)
    worker = runtime.start_worker(*WORKER, "-s", str(runtime.home / "beat1"))

    # the entry fills and its stop rests on the venue
    try:
        wait_until(lambda: (row := _signal()) is not None and row.state == "opened" and
                   (row.extra or {}).get("protection") == "open", 60, interval=0.2,
                   message="an open, protected position")
    except AssertionError:
        _dump(None)
        raise
    row = _signal()
    assert row is not None and row.amount == pytest.approx(0.00999, abs=1e-15)
    # the market rises from the next minute: the partial is in profit
    rise = clock.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    venue.load_candles(SYMBOL, _candles(clock.now(), rise))
    # … and the next tick prices from a closed candle of the rise (VWAP > the entry)
    wait_until(lambda: clock.now() >= rise + timedelta(seconds=65), 10, message="the rise")
    # what `Live.commit_partial_profit` writes (this process has no strategy registered)
    command = queue_command(get_engine(), key_id, "partial_profit", 50, actor="test")

    try:
        wait_until(lambda: fired(runtime.home, point), 30, message=f"crash at {point}")
        wait_until(lambda: command_status(get_engine(), command)[0] == "filled", 45,
                   interval=0.3, message="the partial filled after the crash")
    except AssertionError:
        _dump(command)
        raise
    assert worker.poll() is None, "only a child died; the worker replaced it"
    wait_until(lambda: [i.status for i in _intents("stop")][-1:] == ["open"], 20,
               interval=0.3, message="the stop back on the venue")
    runtime.stop_all()

    (partial,) = _intents("partial")  # one intent for the command …
    assert partial.status == "filled" and partial.amount == 0.00499
    placed = venue.orders_for(partial.client_order_id)
    assert len(placed) == 1 and placed[0].executed_qty == Decimal("0.00499")  # … one order
    row = _signal()
    assert row is not None and row.state == "opened"
    assert row.amount == pytest.approx(0.005, abs=1e-15)
    (booked,) = position_of(signal_rows.to_core(row)).partials  # recorded once
    assert booked.percent == pytest.approx(0.00499 / 0.00999 * 100, rel=1e-12)
    assert venue.balance("BTC") == Decimal("0.005")
    assert venue_problems(get_engine(), venue, INITIAL, protected=True) == []

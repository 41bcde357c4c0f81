"""Reconciliation (every `BKIT_RECONCILE_SECONDS` on a worker) reads an amount of data bounded
by the markets and the orders in flight, not by the order history (SPEC §13; issue 15: a
worker's memory stays flat). Before, each run loaded every intent and every paper order ever
filled as ORM objects: ~34 MB at 7,000 intents, a step in a worker's RSS that grew with every
trade. The sums it needs are made by the database; the figures stay exactly those of the
per-order formula."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from bkit.broker import Broker, broker_for
from bkit.broker.paper_broker import PaperBroker
from bkit.clock import ManualClock
from bkit.core.orders import base_of
from bkit.core.registry import add_strategy
from bkit.exchange.paper import add_paper_exchange
from bkit.live import Live
from bkit.orders import OrdersEnv, submit_intent
from bkit.reconcile import _fills_left, _final_ids, reconcile
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import OrderIntent, PaperOrder, SignalRecord
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
EXCHANGE, STRATEGY = "hist", "hist-flip"
SYMBOLS = ["HA/ETH", "HB/ETH", "HC/ETH"]


def _one_minute_long(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": price * 1.1,
            "price_stop_loss": price * 0.9, "minute_estimated_time": 1, "cost": 0.1}


@contextmanager
def _rows_read() -> Iterator[list[int]]:
    """Rows returned by every SELECT on the engine inside the block (psycopg's rowcount)."""
    engine = get_engine()
    counted = [0]

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
            counted[0] += cursor.rowcount

    event.listen(engine, "after_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(engine, "after_cursor_execute", count)


@dataclass
class Trading:
    env: OrdersEnv
    clock: ManualClock

    def trade(self, minutes: range) -> None:
        """Each symbol opens on even minutes and closes (time_expired) on odd ones; every
        order is filled by the paper broker within its minute."""
        for minute in minutes:
            when = START + timedelta(minutes=minute)
            self.clock.current = when + timedelta(seconds=30)
            for symbol in SYMBOLS:
                Live.tick(symbol, STRATEGY, EXCHANGE, when)
            with session_scope(get_engine()) as session:
                pending = list(session.execute(select(OrderIntent.id).where(
                    OrderIntent.status == "pending")).scalars())
            for intent_id in pending:
                assert submit_intent(self.env, intent_id) == "filled"


@pytest.fixture
def trading(make_runtime: Callable[..., Runtime], pg_url: str) -> Iterator[Trading]:
    make_runtime(pg_url)
    clock = ManualClock(START)
    add_paper_exchange(EXCHANGE, clock=clock)
    add_strategy(STRATEGY, _one_minute_long, interval="1m")
    Broker.clear()
    Broker.use(EXCHANGE, PaperBroker(get_engine(), slippage_percent=0.1, fee_percent=0.1,
                                     exchange_name=EXCHANGE))
    yield Trading(OrdersEnv(engine=get_engine(), clock=clock, brokers=broker_for,
                            enqueue=lambda _id, _delay: None), clock)
    Broker.clear()


def _reconcile_rows(env: OrdersEnv) -> tuple[int, list[Any]]:
    with _rows_read() as rows:
        views = reconcile(env)
    return rows[0], views


def _per_order_fills_left() -> dict[str, float]:
    """The per-intent formula (buys net of base fees − sells − dust), row by row."""
    left: dict[str, float] = {}
    with session_scope(get_engine()) as session:
        for i in session.execute(select(OrderIntent).where(
                OrderIntent.filled_amount > 0)).scalars():  # type: ignore[operator]
            filled, fee = float(i.filled_amount or 0.0), float(i.base_fee or 0.0)
            left[base_of(i.symbol)] = left.get(base_of(i.symbol), 0.0) + (
                filled - fee if i.side == "buy" else -filled - fee)
        for r in session.execute(select(SignalRecord).where(SignalRecord.state == "closed")
                                 ).scalars():
            left[base_of(r.symbol)] = left.get(base_of(r.symbol), 0.0) - float(r.dust or 0.0)
    return left


def _per_order_holdings() -> dict[str, float]:
    held: dict[str, float] = {}
    with session_scope(get_engine()) as session:
        for o in session.execute(select(PaperOrder)).scalars():
            base = base_of(o.symbol)
            fee = o.fee if (o.fee_currency or "") == base else 0.0
            held[base] = held.get(base, 0.0) + (o.amount - fee if o.side == "buy"
                                                else -o.amount)
    return held


def _closed() -> int:
    with session_scope(get_engine()) as session:
        return len(list(session.execute(select(SignalRecord.id).where(
            SignalRecord.state == "closed")).scalars()))


def test_reconciliation_reads_as_many_rows_after_four_times_the_trades(
        trading: Trading) -> None:
    trading.trade(range(0, 10))
    assert _closed() == 5 * len(SYMBOLS)
    reconcile(trading.env)  # the first run also creates its settings row
    small, views = _reconcile_rows(trading.env)
    assert [d for v in views for d in v.differences] == []
    trading.trade(range(10, 40))
    assert _closed() == 20 * len(SYMBOLS)
    large, views = _reconcile_rows(trading.env)
    assert [d for v in views for d in v.differences] == []
    # Before: 6 more rows per trade (its two intents twice, its two paper orders).
    assert large == small


def test_database_sums_equal_the_per_order_formula(trading: Trading) -> None:
    trading.trade(range(0, 21))  # ends with every symbol holding an open position
    with session_scope(get_engine()) as session:
        left = _fills_left(session, EXCHANGE)
    expected = _per_order_fills_left()
    assert left.keys() == expected.keys() == {"HA", "HB", "HC"}
    for asset, amount in expected.items():
        assert left[asset] == pytest.approx(amount, rel=1e-12, abs=1e-15)
        assert amount > 0  # the open position's coins
    balances = broker_for(EXCHANGE).balances()  # type: ignore[union-attr]
    for asset, amount in _per_order_holdings().items():
        assert balances[asset][1] == pytest.approx(max(0.0, amount), rel=1e-12, abs=1e-15)


def test_final_intents_are_found_among_the_ids_asked_only(trading: Trading) -> None:
    trading.trade(range(0, 4))
    with session_scope(get_engine()) as session:
        ids = list(session.execute(select(OrderIntent.client_order_id)).scalars())
        asked = {ids[0], ids[-1], "bk-not-ours"}
        assert _final_ids(session, EXCHANGE, asked) == {ids[0], ids[-1]}
        assert _final_ids(session, "another-exchange", asked) == set()
        assert _final_ids(session, EXCHANGE, set()) == set()

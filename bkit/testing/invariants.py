"""The invariant checker of the crash matrix and the soak: compares the database, the event
log and (optionally) the fake exchange's order book after a run, and lists every broken
promise. An empty list means: no lost signal, no duplicate open, exactly one exchange order
per intent, every open position still monitored, every risk slot accounted for."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from bkit.core.config import Config
from bkit.core.pnl import pnl_for
from bkit.core.signals import LIVE_STATES
from bkit.store.engine import session_scope
from bkit.store.tables import (
    EventRecord,
    OrderIntent,
    RiskSlot,
    SignalRecord,
    StrategySymbol,
    TickHistoryRecord,
)

CLOSE_REASONS = {"take_profit", "stop_loss", "time_expired", "closed"}


def check_invariants(engine: Engine, *, fake: Any = None, config: Config | None = None,
                     monitored_since: datetime | None = None,
                     risk_strategies: set[str] | None = None) -> list[str]:
    """Every violation found, as sentences. `monitored_since` (market time): every open
    position's key must have ticked at or after it. `risk_strategies`: strategies whose live
    signals must each hold a risk slot."""
    config = config or Config()
    with session_scope(engine) as session:
        keys = {k.id: k for k in session.execute(select(StrategySymbol)).scalars()}
        signals = list(session.execute(select(SignalRecord)).scalars())
        events = list(session.execute(select(
            EventRecord.key_id, EventRecord.signal_id, EventRecord.action).where(
            EventRecord.kind == "signal",
            EventRecord.action.in_(["opened", "closed"]))))  # type: ignore[union-attr]
        ticked = _minutes_ticked_twice(session)
        intents = list(session.execute(select(OrderIntent)).scalars())
        slots = list(session.execute(select(RiskSlot)).scalars())
    problems: list[str] = []
    by_id = {(s.key_id, s.signal_id): s for s in signals}

    live_per_key = Counter(s.key_id for s in signals if s.state in LIVE_STATES)
    problems += [f"key {k} has {n} live signals" for k, n in live_per_key.items() if n > 1]

    problems += [f"key {k} ticked {n} times for minute {minute}"
                 for (k, minute), n in ticked.items() if n > 1]

    opened = Counter((e.key_id, e.signal_id) for e in events if e.action == "opened")
    closed = Counter((e.key_id, e.signal_id) for e in events if e.action == "closed")
    problems += [f"signal {sid} of key {k} opened {n} times" for (k, sid), n in opened.items()
                 if n > 1]
    problems += [f"signal {sid} of key {k} closed {n} times" for (k, sid), n in closed.items()
                 if n > 1]
    for (key_id, signal_id) in opened:
        row = by_id.get((key_id, signal_id))
        if row is None:
            problems.append(f"opened signal {signal_id} of key {key_id} has no row (lost)")
        elif row.state not in ("opened", "closing", "closed", "quarantined"):
            problems.append(f"opened signal {signal_id} is now {row.state!r} (lost position)")
    for row in signals:
        if row.state == "closed":
            problems += _closed_row_problems(row, config)
            if (row.key_id, row.signal_id) not in closed:
                problems.append(f"closed signal {row.signal_id} has no closed event")
        if row.state in ("opened", "closing") and (row.key_id, row.signal_id) not in opened:
            problems.append(f"open signal {row.signal_id} has no opened event")

    problems += _intent_problems(intents, by_id, fake)
    problems += _slot_problems(slots, signals, keys, risk_strategies)
    if monitored_since is not None:
        for row in signals:
            key = keys.get(row.key_id)
            if row.state in ("opened", "closing") and key is not None and (
                    key.last_tick_at is None or key.last_tick_at < monitored_since):
                problems.append(f"open signal {row.signal_id} of key {row.key_id} is not "
                                f"monitored (last tick {key.last_tick_at})")
    return problems


def _minutes_ticked_twice(session: Any) -> Counter[tuple[int, datetime]]:
    """Completed ticks per (key, minute), for the minutes ticked more than once (from the
    compact tick history, SPEC §13: it needs `BKIT_TICK_HISTORY_DAYS` > 0)."""
    rows = session.execute(select(
        TickHistoryRecord.key_id, TickHistoryRecord.minute, func.count()).group_by(
        TickHistoryRecord.key_id, TickHistoryRecord.minute).having(func.count() > 1))
    return Counter({(key_id, datetime.fromtimestamp(minute * 60, tz=UTC)): count
                    for key_id, minute, count in rows})


def _closed_row_problems(row: SignalRecord, config: Config) -> list[str]:
    if row.close_reason not in CLOSE_REASONS:
        return [f"closed signal {row.signal_id} has close reason {row.close_reason!r}"]
    if row.price_close is None or row.pnl_percentage is None:
        return [f"closed signal {row.signal_id} lacks its close price or PnL"]
    expected = pnl_for(row.position, row.price_open, row.price_close, row.cost, config)
    problems = []
    if abs(expected.pnl_percentage - row.pnl_percentage) > 1e-9:
        problems.append(f"closed signal {row.signal_id}: PnL {row.pnl_percentage} != "
                        f"{expected.pnl_percentage}")
    exact = {"take_profit": row.price_take_profit, "stop_loss": row.price_stop_loss}
    if row.close_reason in exact and row.price_close != exact[row.close_reason]:
        problems.append(f"closed signal {row.signal_id}: {row.close_reason} at "
                        f"{row.price_close}, not exactly {exact[row.close_reason]}")
    return problems


def _intent_problems(intents: list[OrderIntent], by_id: dict, fake: Any) -> list[str]:
    problems = []
    ids = Counter(i.client_order_id for i in intents)
    problems += [f"client order id {c} used by {n} intents" for c, n in ids.items() if n > 1]
    for intent in intents:
        if (intent.key_id, intent.signal_id) not in by_id:
            problems.append(f"intent {intent.id} points to a missing signal")
        if fake is None:
            continue
        placed = len(fake.orders_for(intent.client_order_id))
        if placed > 1:
            problems.append(f"intent {intent.id} has {placed} exchange orders")
        if intent.status == "filled" and placed != 1:
            problems.append(f"filled intent {intent.id} has {placed} exchange orders")
        if intent.status in ("rejected", "abandoned", "stuck") and placed:
            problems.append(f"{intent.status} intent {intent.id} has an exchange order")
    if fake is not None:
        known = set(ids)
        orders = fake.orders() if callable(fake.orders) else fake.orders  # venue / fake
        for order in orders:
            if order.client_order_id.startswith("bk") and order.client_order_id not in known:
                problems.append(f"exchange order {order.client_order_id} has no intent")
    return problems


def _slot_problems(slots: list[RiskSlot], signals: list[SignalRecord], keys: dict,
                   risk_strategies: set[str] | None) -> list[str]:
    live = {(s.key_id, s.signal_id) for s in signals if s.state in LIVE_STATES}
    problems = [f"risk slot of signal {s.signal_id} is held by a signal that is not live"
                for s in slots if (s.key_id, s.signal_id) not in live]
    if risk_strategies:
        held = {(s.key_id, s.signal_id) for s in slots}
        for key_id, signal_id in live:
            key = keys.get(key_id)
            if key is not None and key.strategy_name in risk_strategies and \
                    (key_id, signal_id) not in held:
                problems.append(f"live signal {signal_id} holds no risk slot")
    return problems

"""Writing a state-machine outcome: signal row, risk slot, order intent, events, key fields.

Shared by the tick's write-back and the orders worker's confirmations. The caller holds the
key row lock (lock discipline: every writer of a key's signal rows locks the key first).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import Session

from bkit.core.machine import TickOutcome
from bkit.core.registry import REGISTRY
from bkit.core.results import Notice, OrderRequest
from bkit.core.signals import SignalRow
from bkit.store import signal_rows
from bkit.store.closed_trades import count_close
from bkit.store.event_log import (
    count_errors,
    insert_events,
    notice_values,
    result_values,
    values_as_dict,
)
from bkit.store.row_updates import LoadedRow
from bkit.store.tables import EventRecord, OrderIntent, RiskSlot, SignalRecord, StrategySymbol
from bkit.store.tick_history import TRANSITIONS


def client_order_id(key_id: int, signal_id: str, kind: str, attempt: int) -> str:
    """Deterministic, short, venue-safe id: `bk` + 30 hex of (key, signal, kind, attempt)."""
    digest = hashlib.sha256(f"{key_id}:{signal_id}:{kind}:{attempt}".encode()).hexdigest()
    return f"bk{digest[:30]}"


def new_intent(key: StrategySymbol | LoadedRow, order: OrderRequest, row: SignalRow | None,
               now: datetime, amount: float | None) -> OrderIntent:
    """An outbox row for `order`; each exit order of a signal (a remainder after a partial
    fill, an operator's retry) gets its own number, so its own client order id. A position
    command's order (`partial`, `dca`) is numbered by the command's id: one order per
    command, whatever crashes and re-deliveries happen."""
    command = None if row is None else row.extra.get("command")
    if row is None or order.kind == "open":
        attempt = 0
    elif order.kind == "stop":
        attempt = int(row.extra.get("stop_orders", 0))
    elif order.kind in ("partial", "dca") and isinstance(command, dict):
        attempt = int(command["id"])
    else:
        attempt = row.exit_orders
    assert key.id is not None
    return OrderIntent(key_id=key.id, signal_id=order.signal_id, kind=order.kind,
                       client_order_id=client_order_id(key.id, order.signal_id, order.kind,
                                                       attempt),
                       exchange_name=key.exchange_name, symbol=order.symbol, side=order.side,
                       amount=amount, price=order.price, cost=order.cost, status="pending",
                       next_attempt_at=now, created_at=now, updated_at=now)


def _apply_slot(session: Session, key: StrategySymbol | LoadedRow, row: SignalRow, change: str,
                when: datetime, held_slots: set[tuple[int, str]] | None) -> None:
    strategy = REGISTRY.strategies.get(key.strategy_name)
    if change == "acquire":
        if strategy is None or strategy.risk_name is None:
            return
        session.add(RiskSlot(risk_name=strategy.risk_name, key_id=key.id, signal_id=row.id,
                             symbol=key.symbol, strategy_name=key.strategy_name,
                             exchange_name=key.exchange_name, acquired_at=when))
    elif held_slots is None or (key.id, row.id) in held_slots:
        # Release whatever this signal holds, even if the profile was renamed since.
        session.execute(delete(RiskSlot).where(RiskSlot.key_id == key.id,
                                               RiskSlot.signal_id == row.id))


def _count_close(session: Session, key: StrategySymbol | LoadedRow, row: SignalRow) -> None:
    """A trade closed: add it to the key's closed-trade totals and statistics (SPEC §9, §13)."""
    count_close(session, key, row)
    if row.realised_pnl_cost is not None:
        key.closed_realised_total = (key.closed_realised_total or 0.0) + row.realised_pnl_cost


@dataclass
class BatchInserts:
    """The new rows of a tick batch, inserted with one statement per table once every key
    of the batch is written (`write`): new signals, and events with the dicts that go to
    listeners (their ids filled in by the insert)."""

    signals: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dispatched: list[dict[str, Any]] = field(default_factory=list)

    def add_event(self, values: dict[str, Any]) -> dict[str, Any]:
        self.events.append(values)
        self.dispatched.append(values_as_dict(values, None))
        return self.dispatched[-1]

    def write(self, session: Session) -> None:
        if self.signals:
            session.connection().execute(insert(SignalRecord.__table__), self.signals)  # type: ignore[attr-defined]
        for event, event_id in zip(self.dispatched, insert_events(session, self.events),
                                   strict=True):
            event["id"] = event_id
        self.signals, self.events, self.dispatched = [], [], []


def store_outcome(session: Session, key: StrategySymbol | LoadedRow, record: Any,
                  outcome: TickOutcome,
                  when: datetime, now: datetime, origin: str, *,
                  duration_ms: float | None = None, order_amount: float | None = None,
                  held_slots: set[tuple[int, str]] | None = None,
                  inserts: BatchInserts | None = None) -> tuple[list[Any], list[int]]:
    """Persist `outcome` for `key` (an ORM row, or the tick's `LoadedRow` that its caller
    writes back) whose live signal row is `record`, or None. Returns the
    event rows added (the result's, if it is a transition, then the notices) and the ids of
    new order intents. `held_slots`:
    the (key id, signal id) risk slots the caller read under the key locks, so a close of a
    signal holding none costs no statement (None: look). `inserts`: the new signal and
    event rows go there instead of the session (the caller writes them), and the events
    come back as the dicts listeners get (`event_as_dict`'s shape)."""
    assert key.id is not None
    row = outcome.signal
    if row is not None and row.state == "closed" and not (
            record is not None and record.signal_id == row.id and record.state == "closed"):
        _count_close(session, key, row)
    if row is not None:
        if record is not None and record.signal_id == row.id:
            signal_rows.apply_to_record(record, row, now)
        elif inserts is not None:
            inserts.signals.append(signal_rows.new_values(key.id, row, now))
        else:
            session.add(signal_rows.new_record(key.id, row, now))
    if row is not None and outcome.slot is not None:
        _apply_slot(session, key, row, outcome.slot, when, held_slots)
    intent_ids: list[int] = []
    if outcome.order is not None:
        intent = new_intent(key, outcome.order, row, now, order_amount)
        session.add(intent)
        session.flush()
        assert intent.id is not None
        intent_ids.append(intent.id)

    names = {"symbol": key.symbol, "strategy_name": key.strategy_name,
             "exchange_name": key.exchange_name, "when": when, "origin": origin}
    notices = [notice_values(key.id, n, **names) for n in outcome.notices]
    if outcome.finished:
        notices.append(notice_values(key.id, Notice("done", "stopped key finished"), **names))
        key.status = "disabled"
    if outcome.signal_window is not None:
        key.signal_window = outcome.signal_window
    if outcome.clear_command:
        key.command = None
    count_errors(session, notices)  # the key row is already locked by this transaction
    # Only transitions stay in the event log (SPEC §13); the tick's caller hands an idle /
    # active / waiting result to listeners without a row (bkit.store.tick_history).
    rows = [result_values(key.id, outcome.result, origin, duration_ms)] \
        if outcome.result.action in TRANSITIONS else []
    rows += notices
    if inserts is not None:
        return [inserts.add_event(values) for values in rows], intent_ids
    records = [EventRecord(**values) for values in rows]
    session.add_all(records)
    session.flush()
    return records, intent_ids

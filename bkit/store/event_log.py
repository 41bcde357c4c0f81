"""Appending to and reading the event log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from bkit.core.results import Notice, TickResult, jsonable
from bkit.store.tables import EventRecord, StrategySymbol


def result_payload(result: TickResult, duration_ms: float | None = None) -> dict[str, Any]:
    payload = result.to_dict()
    if duration_ms is not None:
        payload["duration_ms"] = duration_ms
    return payload


def result_event(key_id: int | None, result: TickResult, origin: str,
                 duration_ms: float | None = None) -> EventRecord:
    return EventRecord(key_id=key_id, kind="signal", action=result.action, symbol=result.symbol,
                       strategy_name=result.strategy_name, exchange_name=result.exchange_name,
                       signal_id=None if result.signal is None else result.signal.id,
                       origin=origin, created_at=result.created_at,
                       payload=result_payload(result, duration_ms))


def result_as_dict(key_id: int | None, result: TickResult, origin: str,
                   duration_ms: float | None = None) -> dict[str, Any]:
    """What `event_as_dict(result_event(...))` gives, for a result that is not stored
    (no ORM object made: this runs once per tick that has a listener)."""
    return {"id": None, "kind": "signal", "action": result.action, "symbol": result.symbol,
            "strategy_name": result.strategy_name, "exchange_name": result.exchange_name,
            "signal_id": None if result.signal is None else result.signal.id, "message": "",
            "created_at": result.created_at, "origin": origin,
            "payload": result_payload(result, duration_ms)}


def notice_event(key_id: int | None, notice: Notice, *, symbol: str | None,
                 strategy_name: str | None, exchange_name: str | None, when: datetime,
                 origin: str) -> EventRecord:
    data = jsonable(dict(notice.data))
    return EventRecord(key_id=key_id, kind=notice.kind, symbol=symbol,
                       strategy_name=strategy_name, exchange_name=exchange_name,
                       signal_id=data.get("signal_id"), message=notice.message, origin=origin,
                       created_at=when, payload=data)


def count_errors(session: Session, records: Sequence[EventRecord], *,
                 failed_tick: bool = False) -> None:
    """Add `records`' error events to their keys' counters (SPEC §13: metrics and status read
    the key row, never a count over the log); `last_error_at` is the newest error's minute
    (market time, like `last_tick_at`, so "failing" compares the two)."""
    per_key: dict[int, list[EventRecord]] = {}
    for record in records:
        if record.kind == "error" and record.key_id is not None:
            per_key.setdefault(record.key_id, []).append(record)
    for key_id, errors in per_key.items():
        column = StrategySymbol.__table__.c  # type: ignore[attr-defined]
        values: dict[str, object] = {
            "errors_total": column.errors_total + len(errors),
            "last_error_at": max(e.created_at for e in errors),
            "last_error_message": errors[-1].message[:500]}
        if failed_tick:
            values["ticks_failed"] = column.ticks_failed + 1
        session.execute(update(StrategySymbol).where(column.id == key_id).values(**values)
                        .execution_options(synchronize_session=False))


def last_event_id(session: Session) -> int:
    return int(session.execute(select(func.max(EventRecord.id))).scalar() or 0)


def events_after(session: Session, after_id: int, *, key_id: int | None = None,
                 kinds: Sequence[str] | None = None, limit: int = 500) -> list[EventRecord]:
    stmt = select(EventRecord).where(EventRecord.id > after_id)  # type: ignore[operator]
    if key_id is not None:
        stmt = stmt.where(EventRecord.key_id == key_id)
    if kinds:
        stmt = stmt.where(EventRecord.kind.in_(list(kinds)))  # type: ignore[attr-defined]
    stmt = stmt.order_by(EventRecord.id).limit(limit)  # type: ignore[arg-type]
    return list(session.execute(stmt).scalars())


def event_as_dict(record: EventRecord) -> dict[str, Any]:
    return {"id": record.id, "kind": record.kind, "action": record.action,
            "symbol": record.symbol, "strategy_name": record.strategy_name,
            "exchange_name": record.exchange_name, "signal_id": record.signal_id,
            "message": record.message, "created_at": record.created_at,
            "origin": record.origin,
            "payload": record.payload or {}}

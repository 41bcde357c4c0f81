"""Appending to and reading the event log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Select, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.engine import Dialect
from sqlmodel import Session

from bkit.core.results import Notice, TickResult, jsonable
from bkit.core.statistics import ReportRow, report_row
from bkit.store.tables import (
    REPORT_ONLY_COLUMNS,
    REPORT_ROW_COLUMNS,
    EventRecord,
    StrategySymbol,
)

#: The tick results a report lists (SPEC §9): the transitions the event log keeps (SPEC §13).
REPORT_ACTIONS = ("scheduled", "opened", "closed", "cancelled")
_NO_REPORT_ROW = dict.fromkeys(REPORT_ONLY_COLUMNS)


def result_payload(result: TickResult, duration_ms: float | None = None) -> dict[str, Any]:
    payload = result.to_dict()
    if duration_ms is not None:
        payload["duration_ms"] = duration_ms
    return payload


def result_values(key_id: int | None, result: TickResult, origin: str,
                  duration_ms: float | None = None) -> dict[str, Any]:
    """The `event` row of a tick result, as column values (its report row among them)."""
    row = report_row(result)
    return {"key_id": key_id, "kind": "signal", "action": result.action,
            "symbol": result.symbol, "strategy_name": result.strategy_name,
            "exchange_name": result.exchange_name, "signal_id": row.signal_id, "message": "",
            "origin": origin, "created_at": result.created_at,
            "payload": result_payload(result, duration_ms), "position": row.position,
            "price_open": row.price_open, "price_take_profit": row.price_take_profit,
            "price_stop_loss": row.price_stop_loss, "pnl_percentage": row.pnl_percentage,
            "reason": row.close_reason}


def notice_values(key_id: int | None, notice: Notice, *, symbol: str | None,
                  strategy_name: str | None, exchange_name: str | None, when: datetime,
                  origin: str) -> dict[str, Any]:
    """The `event` row of a notice (error, milestone, …), as column values."""
    data = jsonable(dict(notice.data))
    # no report row, but the same columns as a result's: a batch inserts both in one statement
    return {"key_id": key_id, "kind": notice.kind, "action": None, "symbol": symbol,
            "strategy_name": strategy_name, "exchange_name": exchange_name,
            "signal_id": data.get("signal_id"), "message": notice.message, "origin": origin,
            "created_at": when, "payload": data, **_NO_REPORT_ROW}


def result_event(key_id: int | None, result: TickResult, origin: str,
                 duration_ms: float | None = None) -> EventRecord:
    return EventRecord(**result_values(key_id, result, origin, duration_ms))


def result_as_dict(key_id: int | None, result: TickResult, origin: str,
                   duration_ms: float | None = None) -> dict[str, Any]:
    """What `event_as_dict(result_event(...))` gives, for a result that is not stored
    (no ORM object made: this runs once per tick that has a listener)."""
    return values_as_dict(result_values(key_id, result, origin, duration_ms), None)


def notice_event(key_id: int | None, notice: Notice, *, symbol: str | None,
                 strategy_name: str | None, exchange_name: str | None, when: datetime,
                 origin: str) -> EventRecord:
    return EventRecord(**notice_values(key_id, notice, symbol=symbol,
                                       strategy_name=strategy_name,
                                       exchange_name=exchange_name, when=when, origin=origin))


def count_errors(session: Session, records: Sequence[EventRecord | dict[str, Any]], *,
                 failed_tick: bool = False) -> None:
    """Add `records`' error events (rows, or their column values) to their keys' counters
    (SPEC §13: metrics and status read the key row, never a count over the log);
    `last_error_at` is the newest error's minute (market time, like `last_tick_at`, so
    "failing" compares the two)."""
    per_key: dict[int, list[tuple[datetime, str]]] = {}
    for record in records:
        kind, key_id, created_at, message = (
            (record["kind"], record["key_id"], record["created_at"], record["message"])
            if isinstance(record, dict) else
            (record.kind, record.key_id, record.created_at, record.message))
        if kind == "error" and key_id is not None:
            per_key.setdefault(key_id, []).append((created_at, message))
    for key_id, errors in per_key.items():
        column = StrategySymbol.__table__.c  # type: ignore[attr-defined]
        values: dict[str, object] = {
            "errors_total": column.errors_total + len(errors),
            "last_error_at": max(when for when, _ in errors),
            "last_error_message": errors[-1][1][:500]}
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


def report_rows_query(key_id: int, limit: int) -> Select[Any]:
    """The key's newest `limit` transitions (SPEC §9: scheduled, opened, closed, cancelled),
    newest first, as the columns of a report row (`REPORT_ROW_COLUMNS`): walks
    `ix_event_key_kind_id` backwards from the key's newest event, on PostgreSQL reading the
    columns from the index itself (they are INCLUDEd in it), and no payload. Its parameters
    are named `key_id`, `row_limit`."""
    event = EventRecord.__table__.c  # type: ignore[attr-defined]
    # The time as the driver gives it: `ReportRow` makes it UTC once (UTCDateTime would too,
    # a second conversion per row of up to 250).
    columns = [type_coerce(event[name], DateTime(timezone=True)) if name == "created_at"
               else event[name] for name in REPORT_ROW_COLUMNS]
    return (select(*columns)
            # 'signal' written into the SQL: the partial index is then usable whatever plan
            # the server keeps for the prepared statement
            .where(event.key_id == bindparam("key_id", key_id),
                   event.kind == bindparam("kind", "signal", literal_execute=True),
                   event.action.in_(REPORT_ACTIONS))
            .order_by(event.id.desc()).limit(bindparam("row_limit", limit)))


@lru_cache(maxsize=8)  # one entry per engine's dialect
def _report_rows_sql(dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """`report_rows_query` as the driver's SQL text and its parameters (compiled once)."""
    compiled = report_rows_query(0, 0).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


def report_rows(session: Session, key_id: int, limit: int) -> list[ReportRow]:
    """The key's newest `limit` report rows, oldest first.

    On PostgreSQL the rows come in psycopg's binary format: their times and prices are
    decoded from binary in C, several times faster than from text, and decoding is most of
    what 250 narrow rows cost (measured: 1.0 ms instead of 2.4 ms through SQLAlchemy)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        rows = connection.execute(report_rows_query(key_id, limit)).all()
    else:
        sql, params = _report_rows_sql(connection.dialect)
        with connection.connection.driver_connection.cursor(binary=True) as cursor:
            rows = cursor.execute(sql, {**params, "key_id": key_id, "row_limit": limit}
                                  ).fetchall()
    return [ReportRow(*row) for row in reversed(rows)]


def event_as_dict(record: EventRecord) -> dict[str, Any]:
    return {"id": record.id, "kind": record.kind, "action": record.action,
            "symbol": record.symbol, "strategy_name": record.strategy_name,
            "exchange_name": record.exchange_name, "signal_id": record.signal_id,
            "message": record.message, "created_at": record.created_at,
            "origin": record.origin,
            "payload": record.payload or {}}


def values_as_dict(values: dict[str, Any], event_id: int | None) -> dict[str, Any]:
    """`event_as_dict` of the row `values` describe, stored with id `event_id`."""
    return {"id": event_id, "kind": values["kind"], "action": values["action"],
            "symbol": values["symbol"], "strategy_name": values["strategy_name"],
            "exchange_name": values["exchange_name"], "signal_id": values["signal_id"],
            "message": values["message"], "created_at": values["created_at"],
            "origin": values["origin"], "payload": values["payload"] or {}}


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert event rows (column values) in one statement; their ids, in order."""
    if not rows:
        return []
    table = EventRecord.__table__  # type: ignore[attr-defined]
    result = session.connection().execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), list(rows))
    return [int(event_id) for (event_id,) in result]

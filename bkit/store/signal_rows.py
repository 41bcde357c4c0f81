"""Mapping between the core's `SignalRow` and the `signal` table."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from bkit.core.signals import LIVE_STATES, SignalRow
from bkit.store.id_lists import ids_in
from bkit.store.row_updates import LoadedRow, loaded_rows
from bkit.store.tables import SignalRecord

_ROW_FIELDS = [f.name for f in fields(SignalRow) if f.name not in ("id", "extra")]


def to_core(record: SignalRecord | LoadedRow) -> SignalRow:
    values = {name: getattr(record, name) for name in _ROW_FIELDS}
    return SignalRow(id=record.signal_id, extra=dict(record.extra or {}), **values)


def apply_to_record(record: Any, row: SignalRow, now: datetime) -> Any:
    """Set `row`'s fields on `record` (a `SignalRecord` or a `LoadedRow` of the table)."""
    for name in _ROW_FIELDS:
        setattr(record, name, getattr(row, name))
    record.signal_id = row.id
    record.extra = dict(row.extra) or None
    record.updated_at = now
    return record


def new_values(key_id: int, row: SignalRow, now: datetime) -> dict[str, Any]:
    """The `signal` row of a new signal, as column values."""
    values = {name: getattr(row, name) for name in _ROW_FIELDS}
    values.update(key_id=key_id, signal_id=row.id, extra=dict(row.extra) or None,
                  updated_at=now)
    return values


def new_record(key_id: int, row: SignalRow, now: datetime) -> SignalRecord:
    return SignalRecord(**new_values(key_id, row, now))


def live_signal(session: Session, key_id: int, *, for_update: bool = False
                ) -> SignalRecord | None:
    """The key's live signal row (at most one, enforced by a partial unique index)."""
    stmt = select(SignalRecord).where(SignalRecord.key_id == key_id,
                                      SignalRecord.state.in_(sorted(LIVE_STATES)))  # type: ignore[attr-defined]
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalars().first()


def find_signal(session: Session, key_id: int, signal_id: str, *, for_update: bool = False
                ) -> SignalRecord | None:
    stmt = select(SignalRecord).where(SignalRecord.key_id == key_id,
                                      SignalRecord.signal_id == signal_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalars().first()


_LIVE = sorted(LIVE_STATES)


def live_signals(session: Session, key_ids: list[int]) -> dict[int, LoadedRow]:
    """The live signal rows of `key_ids` by key id (keys without one are missing), read with
    Core as `LoadedRow`s: the tick's batches write them back with `write_rows`."""
    if not key_ids:
        return {}
    table = SignalRecord.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    result = session.connection().execute(select(table).where(
        ids_in(table.c.key_id, key_ids, dialect), table.c.state.in_(_LIVE)))
    return {row.key_id: row for row in loaded_rows(table, result)}

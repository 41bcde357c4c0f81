"""The queue of position commands (SPEC §11) in the `position_command` table: written by
`Live.commit_*` and the admin script from any process, read by a key's tick at claim,
marked accepted or refused by the same tick's write-back (under the key's lock)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, not_, select, update
from sqlmodel import Session

from bkit.core.position_commands import COMMANDS, PositionCommand
from bkit.store.engine import session_scope
from bkit.store.id_lists import ids_in
from bkit.store.tables import OrderIntent, PositionCommandRecord


def queue_command(engine: Engine, key_id: int, name: str, value: float | None, *,
                  actor: str) -> int:
    """Queue `name` for the key's next tick; returns the command's id."""
    if name not in COMMANDS:
        raise ValueError(f"unknown position command {name!r} (one of {', '.join(COMMANDS)})")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{name} takes a number, got {type(value).__name__}")
    with session_scope(engine) as session:
        record = PositionCommandRecord(key_id=key_id, name=name,
                                       value=None if value is None else float(value),
                                       status="pending", actor=actor[:96],
                                       created_at=datetime.now(UTC))
        session.add(record)
        session.flush()
        assert record.id is not None
        return record.id


def pending_commands(session: Session, key_ids: Sequence[int]
                     ) -> dict[int, tuple[PositionCommand, ...]]:
    """The pending commands of `key_ids`, oldest first, by key (indexed by key and status)."""
    if not key_ids:
        return {}
    table = PositionCommandRecord.__table__  # type: ignore[attr-defined]
    rows = session.connection().execute(
        select(table.c.id, table.c.key_id, table.c.name, table.c.value).where(
            ids_in(table.c.key_id, key_ids, session.get_bind().dialect.name),
            table.c.status == "pending").order_by(table.c.id))
    out: dict[int, list[PositionCommand]] = {}
    for command_id, key_id, name, value in rows:
        out.setdefault(key_id, []).append(PositionCommand(command_id, name, value))
    return {key_id: tuple(commands) for key_id, commands in out.items()}


#: Intent statuses of an order still on its way (`sending` / `acked`: older names).
_WORKING = ("pending", "unknown", "open", "sending", "acked")


def orders_in_flight(session: Session, key_id: int) -> bool:
    """Whether an order of the key is not final yet (a protective stop resting on the venue
    is not in flight: it is the position's protection). Read under the key's lock."""
    resting_stop = and_(OrderIntent.kind == "stop",
                        OrderIntent.status.in_(("open", "acked")))  # type: ignore[attr-defined]
    return session.execute(select(OrderIntent.id).where(
        OrderIntent.key_id == key_id,
        OrderIntent.status.in_(_WORKING),  # type: ignore[attr-defined]
        not_(resting_stop)).limit(1)).first() is not None


def mark_commands(session: Session, results: Iterable[tuple[int, str, str]],
                  now: datetime) -> None:
    """Record what the tick did with each command (only pending ones: never twice)."""
    _move_commands(session, results, now, "pending")


def settle_commands(session: Session, results: Iterable[tuple[int, str, str]],
                    now: datetime) -> None:
    """Broker mode: what the venue made of an accepted command's order (`filled` or
    `refused`, with the message). Only accepted commands move, each once."""
    _move_commands(session, results, now, "accepted")


def _move_commands(session: Session, results: Iterable[tuple[int, str, str]],
                   now: datetime, from_status: str) -> None:
    """(command id, new status, message) for each command still in `from_status`."""
    for command_id, status, message in results:
        session.execute(update(PositionCommandRecord).where(
            PositionCommandRecord.id == command_id,
            PositionCommandRecord.status == from_status)
            .values(status=status, message=message[:500], applied_at=now)
            .execution_options(synchronize_session=False))


def command_status(engine: Engine, command_id: int) -> tuple[str, str | None]:
    """(status, message) of a command: `pending` until its key's tick applied it, then
    `accepted` or `refused`. With a broker, a partial or DCA is `accepted` while its order
    is at the venue, then `filled` (what filled, at what price) or `refused` (why)."""
    with session_scope(engine) as session:
        row = session.get(PositionCommandRecord, command_id)
        if row is None:
            raise ValueError(f"no position command {command_id}")
        return row.status, row.message

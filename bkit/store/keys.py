"""Keys (strategy × exchange × symbol): creation, status changes, the per-minute claim."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bkit.store.engine import session_scope
from bkit.store.id_lists import ids_in
from bkit.store.row_updates import LoadedRow, loaded_rows
from bkit.store.tables import BkitSetting, EventRecord, StrategySymbol

_KEYS = StrategySymbol.__table__  # type: ignore[attr-defined]

KEY_STATUSES = ("enabled", "draining", "paused", "disabled")


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a key for one tick minute; `version` fences the write-back."""

    key_id: int
    bucket: int
    owner: str
    version: int


def find_key(session: Session, strategy_name: str, exchange_name: str, symbol: str, *,
             for_update: bool = False) -> StrategySymbol | None:
    stmt = select(StrategySymbol).where(StrategySymbol.strategy_name == strategy_name,
                                        StrategySymbol.exchange_name == exchange_name,
                                        StrategySymbol.symbol == symbol)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalars().first()


def ensure_key(engine: Engine, strategy_name: str, exchange_name: str, symbol: str,
               *, status: str = "enabled") -> int:
    """The key's id, creating it with `status` if it does not exist (an existing key keeps
    its status: the admin's disable/drain/pause wins)."""
    with session_scope(engine) as session:
        key = find_key(session, strategy_name, exchange_name, symbol)
        if key is not None:
            assert key.id is not None
            return key.id
    now = datetime.now(UTC)
    try:
        with session_scope(engine) as session:
            key = StrategySymbol(strategy_name=strategy_name, exchange_name=exchange_name,
                                 symbol=symbol, status=status, created_at=now, updated_at=now)
            session.add(key)
            session.flush()
            assert key.id is not None
            return key.id
    except IntegrityError:  # created concurrently by another process
        with session_scope(engine) as session:
            key = find_key(session, strategy_name, exchange_name, symbol)
            assert key is not None and key.id is not None
            return key.id


def claim_statement(key_ids: int | Sequence[int], bucket: int, owner: str,
                    lease_seconds: float, dialect: str = "") -> Any:
    """The conditional UPDATE … RETURNING that claims keys for tick minute `bucket` (a Core
    statement: its rows are whole `strategy_symbol` rows, see `claim_keys`).

    A key matches only if the minute was not ticked yet, the key is not disabled and no live
    lease is held; the claimed key rows are returned, a key not claimed is missing (a duplicate
    beat, a redelivered message, or another worker holds the key)."""
    now = datetime.now(UTC)
    ids = [key_ids] if isinstance(key_ids, int) else list(key_ids)
    table = _KEYS
    return (update(table)
            .where(ids_in(table.c.id, ids, dialect),
                   table.c.last_bucket < bucket,
                   table.c.status != "disabled",
                   or_(table.c.lease_until.is_(None), table.c.lease_until < now))
            .values(last_bucket=bucket, lease_owner=owner,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    lease_version=table.c.lease_version + 1)
            .returning(*table.c))


def claim_keys(session: Session, key_ids: int | Sequence[int], bucket: int, owner: str,
               lease_seconds: float) -> list[LoadedRow]:
    """Run `claim_statement` in `session`: the claimed keys' rows, as `LoadedRow`s."""
    stmt = claim_statement(key_ids, bucket, owner, lease_seconds,
                           session.get_bind().dialect.name)
    return loaded_rows(_KEYS, session.connection().execute(stmt))


def lock_keys(session: Session, key_ids: Sequence[int]) -> dict[int, LoadedRow]:
    """`SELECT … FOR UPDATE` of the keys in id order (batches never deadlock on keys), as
    `LoadedRow`s by id: the tick's write-back."""
    stmt = (select(_KEYS).where(ids_in(_KEYS.c.id, sorted(key_ids),
                                       session.get_bind().dialect.name))
            .order_by(_KEYS.c.id).with_for_update())
    return {int(k.id): k for k in loaded_rows(_KEYS, session.connection().execute(stmt))}


def claim_key(engine: Engine, key_id: int, bucket: int, owner: str, lease_seconds: float
              ) -> Claim | None:
    """Claim `key_id` for tick minute `bucket` in one committed statement (see
    `claim_statement`). None means the claim was refused."""
    with session_scope(engine) as session:
        keys = claim_keys(session, key_id, bucket, owner, lease_seconds)
        if not keys:
            return None
        return Claim(key_id, bucket, owner, int(keys[0].lease_version))


def release_claim(engine: Engine, claim: Claim, **values: object) -> bool:
    """Give the lease back (after a failed tick), if it is still ours."""
    with session_scope(engine) as session:
        result = session.execute(
            update(StrategySymbol)
            .where(StrategySymbol.id == claim.key_id, StrategySymbol.lease_owner == claim.owner,
                   StrategySymbol.lease_version == claim.version)
            .values(lease_owner=None, lease_until=None, **values)
            .execution_options(synchronize_session=False))
        return result.rowcount == 1  # type: ignore[attr-defined]


def hand_back(engine: Engine, claims: list[Claim]) -> list[int]:
    """Undo claims that were never worked on: lease released and the minute open again, so
    the keys can be claimed for it once more (by a new batch). Returns the keys handed back;
    a claim whose lease is no longer ours is left alone."""
    handed = []
    with session_scope(engine) as session:
        for claim in claims:
            result = session.execute(
                update(StrategySymbol)
                .where(StrategySymbol.id == claim.key_id,
                       StrategySymbol.lease_owner == claim.owner,
                       StrategySymbol.lease_version == claim.version,
                       StrategySymbol.last_bucket == claim.bucket)
                .values(lease_owner=None, lease_until=None, last_bucket=claim.bucket - 1)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                handed.append(claim.key_id)
    return handed


def set_status(engine: Engine, key_ids: list[int], status: str, *, actor: str = "api",
               when: datetime | None = None) -> int:
    """Change keys' status (enabled/draining/paused/disabled) and record it in the event log."""
    if status not in KEY_STATUSES:
        raise ValueError(f"status must be one of {KEY_STATUSES}, got {status!r}")
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        changed = 0
        for key in session.execute(select(StrategySymbol).where(
                StrategySymbol.id.in_(key_ids))  # type: ignore[union-attr]
                .order_by(StrategySymbol.id).with_for_update()).scalars():  # type: ignore[arg-type]
            if key.status == status:
                continue
            session.add(EventRecord(
                key_id=key.id, kind="admin", symbol=key.symbol,
                strategy_name=key.strategy_name, exchange_name=key.exchange_name,
                message=f"{actor}: status {key.status} -> {status}", origin=actor,
                created_at=when or now,
                payload={"actor": actor, "from": key.status, "to": status,
                         "at": now.isoformat()}))
            key.status = status
            key.updated_at = now
            changed += 1
        return changed


def set_command(engine: Engine, key_id: int, command: str) -> None:
    """Queue a user command (close_position / cancel_scheduled) for the key's next tick."""
    with session_scope(engine) as session:
        session.execute(update(StrategySymbol).where(StrategySymbol.id == key_id)
                        .values(command=command, updated_at=datetime.now(UTC))
                        .execution_options(synchronize_session=False))


def enabled_key_ids(engine: Engine) -> list[int]:
    """Keys the fan-out ticks: every status but disabled (draining and paused keys still
    manage their open positions)."""
    with session_scope(engine) as session:
        return [int(i) for i in session.execute(
            select(StrategySymbol.id).where(StrategySymbol.status != "disabled")
            .order_by(StrategySymbol.id)).scalars()]


def enabled_keys(engine: Engine) -> list[tuple[int, str, str, str]]:
    """Like `enabled_key_ids`, with each key's (id, symbol, strategy, exchange) so tasks can
    name the work they carry (Flower)."""
    with session_scope(engine) as session:
        return [(int(i), s, st, ex) for i, s, st, ex in session.execute(
            select(StrategySymbol.id, StrategySymbol.symbol, StrategySymbol.strategy_name,
                   StrategySymbol.exchange_name)
            .where(StrategySymbol.status != "disabled").order_by(StrategySymbol.id)).all()]


def is_halted(session: Session) -> bool:
    row = session.get(BkitSetting, "halt")
    return row is not None and row.value == "1"

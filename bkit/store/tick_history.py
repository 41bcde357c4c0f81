"""Tick-level history that does not grow the cost (SPEC §13).

Three things a tick used to do with one ~1 kB event row each, done here without one:
- **compact history**: a `tick_history` row per completed tick (key, minute, action code,
  price, PnL, duration: about 70 bytes with its index), kept `BKIT_TICK_HISTORY_DAYS` and
  pruned by `prune` in small batches, oldest id first, each batch its own short transaction;
- **delivery to listeners in other processes** (SPEC §9): the full tick result goes to the
  `tick_feed` only while some process follows the log (a fresh `listener_presence` row), and
  feed rows are deleted minutes later;
- the counters and the last result sit on the key row (written by the tick's write-back).

Transitions (scheduled, opened, closed, cancelled), milestones, errors, admin actions and
order outcomes stay in the event log for ever, as before.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bkit.core.results import TickResult
from bkit.store.tables import ListenerPresence, TickFeedRecord, TickHistoryRecord

#: Tick actions that are transitions: these stay in the event log (kind "signal").
TRANSITIONS = frozenset({"scheduled", "opened", "closed", "cancelled"})
#: Small integer codes of the tick actions in `tick_history.action`.
ACTION_CODES = {"idle": 0, "scheduled": 1, "waiting": 2, "opened": 3, "active": 4,
                "closed": 5, "cancelled": 6}
#: A follower refreshes its presence this often; a presence older than PRESENCE_TTL is gone.
PRESENCE_REFRESH_SECONDS = 2.0
PRESENCE_TTL_SECONDS = 15.0
#: Feed rows older than this (wall seconds) are pruned: a follower polls every 0.25 s.
FEED_KEEP_SECONDS = 120.0
#: Rows per prune statement, and statements per prune run.
PRUNE_BATCH = 5000


def history_row(key_id: int, result: TickResult, duration_ms: float | None
                ) -> dict[str, Any]:
    """The compact row of one completed tick (a dict for a multi-row insert)."""
    pnl = None if result.pnl is None else result.pnl.pnl_percentage
    return {"key_id": key_id, "minute": int(result.created_at.timestamp() // 60),
            "action": ACTION_CODES.get(result.action, 0), "price": result.current_price,
            "pnl": pnl, "duration_ms": duration_ms}


def insert_history(session: Session, rows: list[dict[str, Any]]) -> None:
    """One multi-row insert for a batch's ticks (no ids come back: nobody needs them)."""
    if rows:  # Core, not the ORM's bulk path: executemany with multi-row VALUES
        session.connection().execute(TickHistoryRecord.__table__.insert(), rows)  # type: ignore[attr-defined]


def insert_feed(session: Session, payloads: list[dict[str, Any]], origin: str) -> None:
    if payloads:
        now = time.time()
        session.connection().execute(TickFeedRecord.__table__.insert(), [  # type: ignore[attr-defined]
            {"written_at": now, "origin": origin, "payload": p} for p in payloads])


# --- listeners' presence -------------------------------------------------------------------
@dataclass
class _Cached:
    engine_url: str = ""
    checked_at: float = 0.0
    present: bool = False


_presence_cache = _Cached()
_presence_lock = threading.Lock()
#: How long a writer trusts its last look at the presence table (wall seconds).
PRESENCE_CACHE_SECONDS = 1.0


def listeners_present(session: Session) -> bool:
    """Whether some process follows the log now (cached for a second per process, so a
    batch of ticks costs at most one indexed read per second)."""
    url = str(session.get_bind().engine.url)
    now = time.monotonic()
    with _presence_lock:
        if _presence_cache.engine_url == url and now - _presence_cache.checked_at < \
                PRESENCE_CACHE_SECONDS:
            return _presence_cache.present
    present = session.execute(select(func.count()).select_from(ListenerPresence).where(
        col(ListenerPresence.seen_at) > time.time() - PRESENCE_TTL_SECONDS)).scalar() or 0
    with _presence_lock:
        _presence_cache.engine_url, _presence_cache.checked_at = url, now
        _presence_cache.present = bool(present)
    return bool(present)


def forget_presence_cache() -> None:
    with _presence_lock:
        _presence_cache.checked_at = 0.0


def say_present(session: Session, origin: str) -> None:
    """Upsert this follower's presence row (wall time now)."""
    dialect = session.get_bind().dialect.name
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = time.time()
    session.execute(upsert(ListenerPresence).values(origin=origin, seen_at=now)
                    .on_conflict_do_update(index_elements=["origin"], set_={"seen_at": now}))


def say_gone(session: Session, origin: str) -> None:
    session.execute(delete(ListenerPresence).where(col(ListenerPresence.origin) == origin))


def last_feed_id(session: Session) -> int:
    return int(session.execute(select(func.max(TickFeedRecord.id))).scalar() or 0)


def feed_after(session: Session, after_id: int, limit: int = 500) -> list[TickFeedRecord]:
    return list(session.execute(select(TickFeedRecord).where(
        col(TickFeedRecord.id) > after_id).order_by(col(TickFeedRecord.id)).limit(limit))
        .scalars())


# --- pruning -------------------------------------------------------------------------------
@dataclass
class PruneResult:
    history_rows: int = 0
    feed_rows: int = 0
    presences: int = 0
    batches: int = 0


def prune(engine: Engine, market_now: datetime, keep_days: float, *,
          batch: int = PRUNE_BATCH, max_batches: int = 20) -> PruneResult:
    """Delete tick history older than `keep_days` of market time (all of it for 0), feed rows
    older than FEED_KEEP_SECONDS and stale presences. Each batch is its own transaction of
    at most `batch` rows taken oldest id first (ids grow with time), so a prune never holds
    locks a tick waits on for long; at most `max_batches` per call (the next run goes on)."""
    from bkit.store.engine import session_scope

    out = PruneResult()
    cutoff = int(market_now.timestamp() // 60 - keep_days * 1440) if keep_days > 0 else None
    ident, minute = col(TickHistoryRecord.id), col(TickHistoryRecord.minute)
    for _ in range(max_batches):
        # The first rows by id, filtered on `minute` inside the statement: a WHERE on
        # `minute` alone would scan the whole kept window each run to find nothing once the
        # old rows are gone. The database does it all; no ids travel to Python.
        front = select(ident).order_by(ident).limit(batch).scalar_subquery()
        stmt = delete(TickHistoryRecord).where(ident.in_(front))
        if cutoff is not None:
            stmt = stmt.where(minute < cutoff)
        with session_scope(engine) as session:
            deleted = int(session.execute(stmt.execution_options(
                synchronize_session=False)).rowcount or 0)  # type: ignore[attr-defined]
        out.batches += 1
        out.history_rows += deleted
        if deleted < batch:
            break  # reached rows still kept (or the end)
    with session_scope(engine) as session:
        wall = time.time()
        out.feed_rows = int(session.execute(delete(TickFeedRecord).where(
            col(TickFeedRecord.written_at) < wall - FEED_KEEP_SECONDS)).rowcount or 0)
        out.presences = int(session.execute(delete(ListenerPresence).where(
            col(ListenerPresence.seen_at) < wall - 10 * PRESENCE_TTL_SECONDS)).rowcount or 0)
    return out

"""The notification scan: event log → outbox → apprise, after the events have committed.

Two small rows of `bkit_setting` hold the state, as JSON:
- `notify_cursor`: the highest event id read (`after`) and the ids below it not seen yet
  (`gaps`). On PostgreSQL ids are taken when a row is inserted but become visible when its
  transaction commits, so a lower id can appear after a higher one; a gap is looked for again
  on each scan for `GAP_SECONDS`, then given up (a rolled-back insert leaves one for ever).
- `notify_outbox`: messages still to deliver, with the targets that have not had them, their
  attempts and next attempt time (exponential backoff); the ids of messages delivered lately
  (so a re-read event is not sent twice); the open error window (errors are counted per key
  and sent as one summary per window).

A scan is two short transactions around the sends: `collect` reads new events and queues
messages (the cursor moves in the same transaction, so an event is queued exactly once), then
due messages are leased, sent outside any transaction, and marked delivered or rescheduled.
A worker that dies between a send and its mark sends that message again when the lease
expires: delivery is at least once, duplicates only after such a crash. The first scan of a
database starts at its newest event: history is not replayed to the operator.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from bkit.notify.messages import (
    ADMIN_ACTIONS,
    NOTIFY_KINDS,
    SIGNAL_ACTIONS,
    ErrorWindow,
    Message,
    TradeFacts,
    event_message,
)
from bkit.notify.sender import Sender, Target
from bkit.store.engine import session_scope
from bkit.store.event_log import event_as_dict
from bkit.store.tables import BkitSetting, EventRecord, SignalRecord

log = logging.getLogger("bkit.notify")
CURSOR_KEY = "notify_cursor"
OUTBOX_KEY = "notify_outbox"
#: Wall seconds a missing event id is looked for again before it is given up.
GAP_SECONDS = 300.0
MAX_GAPS = 2000
#: Event ids read per query and per scan (a scan that falls behind catches up over a few).
PAGE = 1000
MAX_EVENTS_PER_SCAN = 10_000
#: Messages waiting at most; beyond, the oldest are dropped (and the drop logged).
MAX_PENDING = 500
SENT_REMEMBERED = 2000
#: Delivery attempts per message and target before it is given up; backoff in wall seconds.
MAX_ATTEMPTS = 10
BACKOFF_FIRST_SECONDS = 15.0
BACKOFF_MAX_SECONDS = 1800.0
SENDS_PER_SCAN = 25
LEASE_SECONDS = 180.0
DEFAULT_ERROR_WINDOW_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What one scan did: events read, messages queued, sends delivered and failed,
    messages given up, and the cursor (event id) it left."""

    read: int = 0
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    cursor: int = 0


def backoff_seconds(attempts: int) -> float:
    """Wait before attempt `attempts + 1` (wall seconds): 15, 30, 60 … capped at 30 min."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, attempts - 1))


def scan_events(engine: Engine, sender: Sender, *, now: Callable[[], float] = time.time,
                error_window_seconds: float = DEFAULT_ERROR_WINDOW_SECONDS) -> ScanReport:
    """Read the events committed since the last scan, queue their messages and send what is
    due. Without targets the cursor only follows the log, so configuring URLs later does not
    send the past."""
    targets = list(sender.targets)
    if not targets:
        cursor = _follow_without_targets(engine)
        return ScanReport(cursor=cursor)
    read, queued, dropped, cursor = _collect(engine, now(), error_window_seconds,
                                             [t.tag for t in targets])
    delivered, failed, given_up = _deliver(engine, sender, targets, now)
    return ScanReport(read, queued, delivered, failed, dropped + given_up, cursor)


# --- state rows ---------------------------------------------------------------------------
def _load(session: Session, key: str) -> tuple[BkitSetting | None, dict[str, Any]]:
    row = session.get(BkitSetting, key, with_for_update=True)
    if row is None or not row.value:
        return row, {}
    try:
        return row, dict(json.loads(row.value))
    except (ValueError, TypeError):
        log.error("notify: %s is not valid JSON; starting it afresh", key)
        return row, {}


def _store(session: Session, row: BkitSetting | None, key: str, state: dict[str, Any]) -> None:
    value = json.dumps(state, separators=(",", ":"), sort_keys=True)
    stamp = datetime.now(UTC)
    if row is None:
        session.add(BkitSetting(key=key, value=value, updated_at=stamp))
    else:
        row.value, row.updated_at = value, stamp


def _max_event_id(session: Session) -> int:
    return int(session.execute(select(func.max(EventRecord.id))).scalar() or 0)


def _follow_without_targets(engine: Engine) -> int:
    with session_scope(engine) as session:
        row, _ = _load(session, CURSOR_KEY)
        after = _max_event_id(session)
        _store(session, row, CURSOR_KEY, {"after": after, "gaps": {}})
    return after


# --- collect ------------------------------------------------------------------------------
def _collect(engine: Engine, now: float, window_seconds: float, tags: list[str]
             ) -> tuple[int, int, int, int]:
    with session_scope(engine) as session:
        cursor_row, cursor = _load(session, CURSOR_KEY)  # locked first: scans serialise here
        outbox_row, outbox = _load(session, OUTBOX_KEY)
        if cursor_row is None or "after" not in cursor:
            after = _max_event_id(session)
            _store(session, cursor_row, CURSOR_KEY, {"after": after, "gaps": {}})
            log.info("notify: first scan, starting after event %s", after)
            return 0, 0, 0, after
        after = int(cursor["after"])
        gaps: dict[str, float] = {str(k): float(v) for k, v in (cursor.get("gaps") or {}).items()}
        seen = _new_ids(session, after, [int(g) for g in gaps])
        for event_id, *_ in seen:
            gaps.pop(str(event_id), None)
        top = after
        for event_id in sorted(e[0] for e in seen if e[0] > after):
            for missing in range(top + 1, event_id):
                gaps.setdefault(str(missing), now)
            top = event_id
        gaps = {k: t for k, t in gaps.items() if now - t < GAP_SECONDS}
        if len(gaps) > MAX_GAPS:
            gaps = dict(sorted(gaps.items(), key=lambda kv: int(kv[0]))[-MAX_GAPS:])
        wanted = [event_id for event_id, kind, action in seen if _wanted(kind, action)]
        events = _events(session, wanted)
        trades = _trades(session, events)
        pending: list[dict[str, Any]] = list(outbox.get("pending") or [])
        sent: list[str] = list(outbox.get("sent") or [])
        known = set(sent) | {str(p["id"]) for p in pending}
        window = ErrorWindow.from_dict(outbox.get("errors"))
        queued = 0
        for event in events:
            if event["kind"] == "error":
                window.add(event, now)
                continue
            trade = trades.get((event.get("key_id"), event.get("signal_id")))
            message = event_message(event, trade)
            if message is not None and message.id not in known:
                pending.append(_entry(message, tags, now))
                known.add(message.id)
                queued += 1
        if window.due(now, window_seconds):
            summary = window.summary(now)
            if summary.id not in known:
                pending.append(_entry(summary, tags, now))
                queued += 1
            window = ErrorWindow()
        dropped = max(0, len(pending) - MAX_PENDING)
        if dropped:
            log.error("notify: %d messages dropped, the outbox holds at most %d (targets "
                      "down?)", dropped, MAX_PENDING)
            pending = pending[dropped:]
        _store(session, cursor_row, CURSOR_KEY, {"after": top, "gaps": gaps})
        _store(session, outbox_row, OUTBOX_KEY, {"pending": pending, "sent": sent,
                                                 "errors": window.to_dict()})
    return len(seen), queued, dropped, top


def _new_ids(session: Session, after: int, gap_ids: list[int]
             ) -> list[tuple[int, str, str | None]]:
    """(id, kind, action) of the events after `after` and of the gap ids now visible: the
    cheap columns only, to see every id (gap detection) without loading tick payloads."""
    columns = (col(EventRecord.id), col(EventRecord.kind), col(EventRecord.action))
    found: list[tuple[int, str, str | None]] = []
    for chunk in _chunks(gap_ids, 500):
        found += [tuple(r) for r in session.execute(
            select(*columns).where(col(EventRecord.id).in_(chunk)))]
    start = after
    while len(found) < MAX_EVENTS_PER_SCAN:
        page = [tuple(r) for r in session.execute(
            select(*columns).where(col(EventRecord.id) > start)
            .order_by(col(EventRecord.id)).limit(PAGE))]
        found += page
        if len(page) < PAGE:
            break
        start = int(page[-1][0])
    return found


def _wanted(kind: str, action: str | None) -> bool:
    if kind not in NOTIFY_KINDS:
        return False
    if kind == "signal":
        return action in SIGNAL_ACTIONS
    if kind == "admin":
        return action in ADMIN_ACTIONS
    return True


def _events(session: Session, ids: list[int]) -> list[dict[str, Any]]:
    rows: list[EventRecord] = []
    for chunk in _chunks(sorted(ids), 500):
        rows += session.execute(select(EventRecord).where(
            col(EventRecord.id).in_(chunk))).scalars()
    return [{**event_as_dict(r), "key_id": r.key_id} for r in sorted(rows, key=_event_id)]


def _event_id(record: EventRecord) -> int:
    return int(record.id or 0)


def _trades(session: Session, events: list[dict[str, Any]]
            ) -> dict[tuple[int | None, str | None], TradeFacts]:
    """The signal rows of the opened/closed events, by (key id, signal id)."""
    pairs = {(e["key_id"], e["signal_id"]) for e in events
             if e["kind"] == "signal" and e["key_id"] is not None and e["signal_id"]}
    facts: dict[tuple[int | None, str | None], TradeFacts] = {}
    for chunk in _chunks(sorted(pairs), 200):
        key_ids = sorted({k for k, _ in chunk})
        signal_ids = sorted({s for _, s in chunk})
        for row in session.execute(select(SignalRecord).where(
                col(SignalRecord.key_id).in_(key_ids),
                col(SignalRecord.signal_id).in_(signal_ids))).scalars():
            facts[(row.key_id, row.signal_id)] = TradeFacts(
                amount=row.amount, stuck=row.stuck, realised_pnl_cost=row.realised_pnl_cost,
                realised_pnl_percentage=row.realised_pnl_percentage, pnl_cost=row.pnl_cost,
                pnl_percentage=row.pnl_percentage, fill_price_open=row.fill_price_open,
                fill_price_close=row.fill_price_close, close_reason=row.close_reason)
    return facts


def _entry(message: Message, tags: list[str], now: float) -> dict[str, Any]:
    return {**message.to_dict(), "targets": list(tags), "attempts": 0, "next_at": now,
            "lease_until": 0.0}


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


# --- deliver ------------------------------------------------------------------------------
def _deliver(engine: Engine, sender: Sender, targets: list[Target],
             now: Callable[[], float]) -> tuple[int, int, int]:
    by_tag = {t.tag: t for t in targets}
    claimed: list[dict[str, Any]] = []
    with session_scope(engine) as session:
        _load(session, CURSOR_KEY)  # the same lock order as `_collect`
        row, outbox = _load(session, OUTBOX_KEY)
        pending = list(outbox.get("pending") or [])
        stamp = now()
        for entry in pending:
            entry["targets"] = [t for t in entry["targets"] if t in by_tag]
            if (len(claimed) < SENDS_PER_SCAN and entry["targets"]
                    and entry["next_at"] <= stamp and entry["lease_until"] <= stamp):
                entry["lease_until"] = stamp + LEASE_SECONDS
                claimed.append(dict(entry))
        outbox["pending"] = [e for e in pending if e["targets"]]
        if claimed:
            _store(session, row, OUTBOX_KEY, outbox)
    if not claimed:
        return 0, 0, 0
    delivered_to: dict[str, set[str]] = {}
    delivered = failed = 0
    for entry in claimed:
        message = Message.from_dict(entry)
        done = delivered_to.setdefault(message.id, set())
        for tag in entry["targets"]:
            if sender.send(by_tag[tag], message):
                done.add(tag)
                delivered += 1
            else:
                failed += 1
    given_up = _mark(engine, delivered_to, now())
    return delivered, failed, given_up


def _mark(engine: Engine, delivered_to: dict[str, set[str]], stamp: float) -> int:
    given_up = 0
    with session_scope(engine) as session:
        _load(session, CURSOR_KEY)
        row, outbox = _load(session, OUTBOX_KEY)
        sent: list[str] = list(outbox.get("sent") or [])
        kept = []
        for entry in outbox.get("pending") or []:
            done = delivered_to.get(str(entry["id"]))
            if done is None:
                kept.append(entry)
                continue
            entry["targets"] = [t for t in entry["targets"] if t not in done]
            entry["lease_until"] = 0.0
            if not entry["targets"]:
                sent.append(str(entry["id"]))
                continue
            entry["attempts"] = int(entry["attempts"]) + 1
            if entry["attempts"] >= MAX_ATTEMPTS:
                given_up += 1
                sent.append(str(entry["id"]))  # remembered, so a re-read does not queue it
                log.error("notify: %s (%s) given up after %d attempts", entry["id"],
                          entry["kind"], entry["attempts"])
                continue
            entry["next_at"] = stamp + backoff_seconds(entry["attempts"])
            kept.append(entry)
        outbox["pending"] = kept
        outbox["sent"] = sent[-SENT_REMEMBERED:]
        _store(session, row, OUTBOX_KEY, outbox)
    return given_up

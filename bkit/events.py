"""Listeners (SPEC §1, §9) and their delivery across processes.

Every event is a row of the event log. A tick in this process dispatches its events to this
process's listeners right after commit; a follower thread polls the log for events written by
other processes (workers) and dispatches those. Each event reaches a listener exactly once per
process: the follower skips events whose origin is this process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from bkit.core.results import TickResult

log = logging.getLogger("bkit.events")
Listener = Callable[[Any], Any]
CHANNELS = ("signal", "signal_live", "done_live", "error", "exit", "performance", "risk",
            "partial_profit", "partial_loss", "breakeven")

_listeners: dict[str, list[Listener]] = {c: [] for c in CHANNELS}
_lock = threading.RLock()
_origin: tuple[int, str] | None = None


def process_origin() -> str:
    """A name for this process, unique across hosts and restarts (recomputed after fork)."""
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _origin[1]


def _subscribe(channel: str, fn: Listener) -> Callable[[], None]:
    if not callable(fn):
        raise TypeError(f"listener must be callable, got {type(fn).__name__}")
    with _lock:
        _listeners[channel].append(fn)
    _ensure_follower()

    def unsubscribe() -> None:
        with _lock:
            if fn in _listeners[channel]:
                _listeners[channel].remove(fn)
    return unsubscribe


def listen_signal(fn: Listener) -> Callable[[], None]:
    """Every tick result (`TickResult`)."""
    return _subscribe("signal", fn)


def listen_signal_live(fn: Listener) -> Callable[[], None]:
    """Every live tick result (`TickResult`)."""
    return _subscribe("signal_live", fn)


def listen_done_live(fn: Listener) -> Callable[[], None]:
    """A stopped key finished (dict with symbol, strategy_name, exchange_name)."""
    return _subscribe("done_live", fn)


def listen_error(fn: Listener) -> Callable[[], None]:
    """Errors: failed ticks, invalid signals, exchange errors, callback failures (dict)."""
    return _subscribe("error", fn)


def listen_exit(fn: Listener) -> Callable[[], None]:
    """Events that need an operator (an order given up after its retries) (dict)."""
    return _subscribe("exit", fn)


def listen_performance(fn: Listener) -> Callable[[], None]:
    """Per-tick timing: dict with metric_type "live_tick" and duration (ms)."""
    return _subscribe("performance", fn)


def listen_risk(fn: Listener) -> Callable[[], None]:
    """Risk rejections (dict with the note)."""
    return _subscribe("risk", fn)


def listen_partial_profit(fn: Listener) -> Callable[[], None]:
    return _subscribe("partial_profit", fn)


def listen_partial_loss(fn: Listener) -> Callable[[], None]:
    return _subscribe("partial_loss", fn)


def listen_breakeven(fn: Listener) -> Callable[[], None]:
    return _subscribe("breakeven", fn)


def has_listeners() -> bool:
    with _lock:
        return any(_listeners.values())


def clear_listeners() -> None:
    with _lock:
        for fns in _listeners.values():
            fns.clear()


def _emit(channel: str, payload: Any) -> None:
    with _lock:
        fns = list(_listeners[channel])
    for fn in fns:
        try:
            fn(payload)
        except Exception:  # a listener must never break delivery to the others
            log.exception("listener %r on %s failed", fn, channel)


def dispatch(events: Iterable[dict[str, Any]]) -> None:
    """Deliver event-log rows (as dicts from `event_as_dict`) to this process's listeners."""
    for event in events:
        kind, payload = event["kind"], event.get("payload") or {}
        if kind == "signal":
            result = TickResult.from_dict(payload)
            _emit("signal", result)
            _emit("signal_live", result)
            if payload.get("duration_ms") is not None:
                _emit("performance", {
                    "metric_type": "live_tick", "duration": payload["duration_ms"],
                    "timestamp": result.created_at, "symbol": result.symbol,
                    "strategy_name": result.strategy_name,
                    "exchange_name": result.exchange_name, "backtest": False})
            continue
        channel = {"done": "done_live"}.get(kind, kind)
        if channel in _listeners:
            _emit(channel, {**{k: event.get(k) for k in (
                "id", "symbol", "strategy_name", "exchange_name", "signal_id", "message",
                "created_at")}, "kind": kind, "data": payload})


# --- cross-process follower -----------------------------------------------------------------
class EventFollower(threading.Thread):
    """Polls the event log (transitions, notices) and the tick feed (every other tick result,
    written by workers only while a follower is present: SPEC §13) and dispatches what other
    processes wrote. Its presence row is refreshed every few seconds and removed at stop."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="bkit-event-follower", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()
        self.last_id: int | None = None
        self.last_feed_id: int | None = None
        self._said_at = 0.0

    def run(self) -> None:
        from bkit.store.engine import get_engine, session_scope
        from bkit.store.schema_check import ensure_schema
        from bkit.store.tick_history import say_gone

        origin = process_origin()
        while not self.stopped.is_set():
            try:
                engine = get_engine()
                ensure_schema(engine)
                with session_scope(engine) as session:
                    batch = self._poll(session, origin)
                if batch:
                    dispatch(e for e in batch if e["origin"] != origin)
                    continue
            except Exception:  # database restart: keep following once it is back
                log.warning("event follower: cannot read the event log", exc_info=True)
            self.stopped.wait(self.interval)
        try:
            with session_scope(get_engine()) as session:
                say_gone(session, origin)
        except Exception:  # the row goes stale and is pruned
            log.debug("event follower: could not remove its presence", exc_info=True)

    def _poll(self, session: Any, origin: str) -> list[dict[str, Any]]:
        from bkit.store.event_log import event_as_dict, events_after, last_event_id
        from bkit.store.tick_history import (
            PRESENCE_REFRESH_SECONDS,
            feed_after,
            last_feed_id,
            say_present,
        )

        if time.monotonic() - self._said_at >= PRESENCE_REFRESH_SECONDS:
            say_present(session, origin)
            self._said_at = time.monotonic()
        if self.last_id is None or self.last_feed_id is None:
            self.last_id, self.last_feed_id = last_event_id(session), last_feed_id(session)
        batch = [event_as_dict(r) for r in events_after(session, self.last_id)]
        feed = feed_after(session, self.last_feed_id)
        if batch:
            self.last_id = batch[-1]["id"]
        if feed:
            self.last_feed_id = feed[-1].id
        batch += [{"id": None, "kind": "signal", "origin": r.origin,
                   "payload": r.payload or {}, "created_at": None} for r in feed]
        # One key's results in market-time order across the two sources (a sort is stable:
        # rows of one source keep their order).
        batch.sort(key=_market_time)
        return batch


def _market_time(event: dict[str, Any]) -> str:
    created = event.get("created_at")
    if created is None:
        return str((event.get("payload") or {}).get("created_at") or "")
    return created.isoformat() if hasattr(created, "isoformat") else str(created)


_follower: EventFollower | None = None


def _ensure_follower() -> None:
    global _follower
    with _lock:
        if _follower is None or not _follower.is_alive() or _follower_pid != os.getpid():
            _start_follower()


_follower_pid: int | None = None


def _start_follower() -> None:
    global _follower, _follower_pid
    _follower = EventFollower()
    _follower_pid = os.getpid()
    _follower.start()


def stop_follower() -> None:
    global _follower
    with _lock:
        if _follower is not None:
            _follower.stopped.set()
            _follower = None

"""Backtest listeners (SPEC §12): `listen_signal_backtest` gets every transition (scheduled,
opened, closed, cancelled) as a `TickResult`, `listen_done_backtest` one dict per finished
backtest. In-process only: a backtest writes no event rows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bkit.backtest")
Listener = Callable[[Any], Any]
_listeners: dict[str, list[Listener]] = {"signal_backtest": [], "done_backtest": []}
_lock = threading.Lock()


def _subscribe(channel: str, fn: Listener) -> Callable[[], None]:
    if not callable(fn):
        raise TypeError(f"listener must be callable, got {type(fn).__name__}")
    with _lock:
        _listeners[channel].append(fn)

    def unsubscribe() -> None:
        with _lock:
            if fn in _listeners[channel]:
                _listeners[channel].remove(fn)
    return unsubscribe


def listen_signal_backtest(fn: Listener) -> Callable[[], None]:
    """Every backtest transition (`TickResult`: scheduled, opened, closed, cancelled), with
    `created_at` its simulated minute. Returns `unsubscribe()`."""
    return _subscribe("signal_backtest", fn)


def listen_done_backtest(fn: Listener) -> Callable[[], None]:
    """A backtest finished: dict with symbol, strategy_name, exchange_name, frame_name and
    `backtest: True`. Returns `unsubscribe()`."""
    return _subscribe("done_backtest", fn)


def has_listeners(channel: str) -> bool:
    return bool(_listeners[channel])


def emit(channel: str, payload: Any) -> None:
    """Deliver to this process's listeners; a failing listener never stops the others."""
    with _lock:
        fns = list(_listeners[channel])
    for fn in fns:
        try:
            fn(payload)
        except Exception:
            log.exception("backtest listener %r on %s failed", fn, channel)


def clear_listeners() -> None:
    with _lock:
        for fns in _listeners.values():
            fns.clear()

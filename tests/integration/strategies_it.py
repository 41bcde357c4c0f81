"""Strategies for the runtime integration tests, loaded by real worker processes through
BKIT_STRATEGIES=tests.integration.strategies_it. Behaviour that must happen only once (a
self-kill) is keyed by marker files in BKIT_HOME, so a restarted worker does not repeat it."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from bkit.core.registry import add_strategy
from bkit.exchange.paper import add_paper_exchange

HOME = Path(os.environ.get("BKIT_HOME", "."))
add_paper_exchange("paper")


def _log(name: str, record: dict) -> None:
    with open(HOME / f"{name}.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _once(marker: str) -> bool:
    """True the first time across all processes (O_EXCL create)."""
    try:
        os.close(os.open(HOME / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def long_signal(symbol: str, when: datetime, price: float) -> dict:
    return {"position": "long", "price_take_profit": price * 1.006,
            "price_stop_loss": price * 0.994, "minute_estimated_time": 20, "cost": 0.1}


def brief_long_signal(symbol: str, when: datetime, price: float) -> dict:
    """`long_signal` with an 8-minute time limit: for a test that waits for the close."""
    return {**long_signal(symbol, when, price), "minute_estimated_time": 8}


def slow_none(symbol: str, when: datetime, price: float) -> None:
    start = time.time()
    time.sleep(1.2)  # longer than a market minute at 60x: later minutes arrive meanwhile
    _log("slow", {"symbol": symbol, "pid": os.getpid(), "start": start, "end": time.time(),
                  "when": when.isoformat()})
    return None


def kill_mid_tick(symbol: str, when: datetime, price: float) -> dict:
    if _once("killed-mid-tick"):
        os.kill(os.getpid(), signal.SIGKILL)  # dies after the claim, before the write-back
    return long_signal(symbol, when, price)


def _kill_after_open(symbol: str, signal_: object, price: float, when: datetime) -> None:
    if _once("killed-after-open"):
        os.kill(os.getpid(), signal.SIGKILL)  # dies after commit, before the task is acked


def _record(name: str):
    def callback(symbol: str, signal_: object, price: float, when: datetime) -> None:
        _log("callbacks", {"callback": name, "pid": os.getpid(), "symbol": symbol,
                           "signal_id": getattr(signal_, "id", None)})
    return callback


add_strategy("it-long", long_signal, callbacks={"on_active": _record("on_active"),
                                                 "on_open": _record("on_open")})
add_strategy("it-long-brief", brief_long_signal)
add_strategy("it-slow-none", slow_none)
add_strategy("it-kill-mid", kill_mid_tick, callbacks={"on_active": _record("on_active")})
add_strategy("it-kill-after-open", long_signal, callbacks={"on_open": _kill_after_open,
                                                           "on_active": _record("on_active")})

"""Position commands inside a backtest (SPEC §11, §12): a strategy callback that calls
`Live.commit_*` (or `Backtest.commit_*`) while a backtest runs on this thread queues the
command on the backtest's key, in memory; the engine applies it at the key's next minute with
the pure rules of `bkit.core.position_commands`, exactly as the live tick applies a queued
command. Nothing reaches the database: a backtest never touches live state, so a command
naming a key that is not part of the running backtest is refused (ValueError)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from bkit.backtest.simclock import thread_value
from bkit.core.position_commands import COMMANDS

_local = threading.local()
_ids = itertools.count(1)

KeyNames = tuple[str, str, str]  # (symbol, strategy_name, exchange_name)


class CommandTarget(Protocol):
    """A backtest key that can take commands (`bkit.backtest.engine.KeyRun`)."""

    def queue_command(self, command_id: int, name: str, value: float | None) -> None: ...

    def command_status(self, command_id: int) -> tuple[str, str | None] | None: ...


def routing(keys: Mapping[KeyNames, CommandTarget]) -> AbstractContextManager[None]:
    """Route commands issued on this thread to `keys` (a running backtest) meanwhile."""
    return thread_value(_local, "keys", keys)


def in_backtest() -> bool:
    """Whether this thread is inside a running backtest's tick (its callbacks)."""
    return getattr(_local, "keys", None) is not None


def route(symbol: str, strategy_name: str, exchange_name: str, name: str,
          value: Any) -> int | None:
    """Queue the command on the running backtest's key and return its id; None when this
    thread runs no backtest (the caller then queues it for the live key)."""
    keys: Mapping[KeyNames, CommandTarget] | None = getattr(_local, "keys", None)
    if keys is None:
        return None
    if name not in COMMANDS:
        raise ValueError(f"unknown position command {name!r} (one of {', '.join(COMMANDS)})")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{name} takes a number, got {type(value).__name__}")
    target = keys.get((symbol, strategy_name, exchange_name))
    if target is None:
        raise ValueError(f"{strategy_name}/{exchange_name}/{symbol} is not a key of the "
                         "running backtest; a backtest never commands live keys")
    command_id = next(_ids)
    target.queue_command(command_id, name, None if value is None else float(value))
    return command_id


def status(command_id: int) -> tuple[str, str | None] | None:
    """(pending | accepted | refused, message) of a command of the running backtest, or
    None when this thread runs no backtest or the id is not one of its commands."""
    keys: Mapping[KeyNames, CommandTarget] | None = getattr(_local, "keys", None)
    if keys is None:
        return None
    for target in keys.values():
        found = target.command_status(command_id)
        if found is not None:
            return found
    return None

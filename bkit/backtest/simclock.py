"""Simulated time for the exchange objects a strategy reads during a backtest.

A strategy may call its exchange's `get_candles` itself (see `examples/my_strategy.py`). The
paper exchange serves only candles closed before its clock's now; during a backtest that now
must be the simulated minute, or the strategy would see the future. `SimulatedClock` wraps an
exchange's clock: inside `simulated(when)` (this thread only) it answers `when`, otherwise it
defers to the clock it wraps, so live use of the same object is unaffected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

_local = threading.local()


class SimulatedClock:
    """A clock answering the backtest's simulated minute on this thread, else `fallback`'s."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def now(self) -> datetime:
        when: datetime | None = getattr(_local, "now", None)
        return when if when is not None else self.fallback.now()

    def market_seconds(self, wall_seconds: float) -> float:
        return float(self.fallback.market_seconds(wall_seconds))

    def wall_seconds(self, market_seconds: float) -> float:
        return float(self.fallback.wall_seconds(market_seconds))


def install(source: Any) -> None:
    """Wrap `source.clock` (an exchange object with a clock, e.g. `PaperExchange`) once."""
    clock = getattr(source, "clock", None)
    if clock is not None and not isinstance(clock, SimulatedClock) and callable(
            getattr(clock, "now", None)):
        source.clock = SimulatedClock(clock)


def set_now(when: datetime | None) -> None:
    """The simulated now of this thread (None: real time again)."""
    _local.now = when


def current_time() -> datetime | None:
    """The simulated minute of the backtest running on this thread, or None."""
    return getattr(_local, "now", None)


@contextmanager
def thread_value(local: threading.local, name: str, value: Any) -> Iterator[None]:
    """`local.name` is `value` on this thread meanwhile, then what it was before."""
    previous = getattr(local, name, None)
    setattr(local, name, value)
    try:
        yield
    finally:
        setattr(local, name, previous)


def simulated(when: datetime) -> AbstractContextManager[None]:
    """This thread's simulated now is `when` meanwhile."""
    return thread_value(_local, "now", when)

"""Clocks. The live clock is UTC now; the replay clock runs market time faster from a start
instant so demos and tests can live through hours of market in seconds (DESIGN "Runtimes")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bkit.core.candles import floor_to_minute


class Clock(Protocol):
    def now(self) -> datetime:
        """Market time now, UTC-aware."""
        ...

    def market_seconds(self, wall_seconds: float) -> float:
        """How many market seconds pass in `wall_seconds` of real time."""
        ...

    def wall_seconds(self, market_seconds: float) -> float:
        """How many real seconds `market_seconds` of market time take."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def market_seconds(self, wall_seconds: float) -> float:
        return wall_seconds

    def wall_seconds(self, market_seconds: float) -> float:
        return market_seconds


@dataclass(frozen=True)
class ReplayClock:
    """market now = start + (real now − epoch) × speed. Every process given the same three
    values agrees on market time, so beat and workers tick the same minutes."""

    start: datetime
    epoch: datetime
    speed: float = 60.0

    def now(self) -> datetime:
        elapsed = time.time() - self.epoch.timestamp()
        return self.start + timedelta(seconds=elapsed * self.speed)

    def market_seconds(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed

    def wall_seconds(self, market_seconds: float) -> float:
        return market_seconds / self.speed


@dataclass
class ManualClock:
    """A clock moved by hand (in-process tests and notebooks)."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current = self.current + timedelta(**delta)
        return self.current

    def market_seconds(self, wall_seconds: float) -> float:
        return wall_seconds

    def wall_seconds(self, market_seconds: float) -> float:
        return market_seconds


def clock_from_settings() -> Clock:
    """The replay clock when `BKIT_REPLAY_START` is set, else the system clock."""
    from bkit.settings import get_settings

    settings = get_settings()
    if settings.replay_start is None:
        return SystemClock()
    start = settings.replay_start
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    epoch = settings.replay_epoch or start
    epoch = epoch if epoch.tzinfo else epoch.replace(tzinfo=UTC)
    return ReplayClock(start=start, epoch=epoch, speed=settings.replay_speed)


def tick_minute(clock: Clock) -> datetime:
    """The current tick time: market now floored to the minute."""
    return floor_to_minute(clock.now())

"""Clocks. The live clock is UTC now; the replay clock runs market time faster from a start
instant so demos and tests can live through hours of market in seconds (DESIGN "Runtimes")."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


@dataclass(frozen=True)
class SteppedClock:
    """market now = the instant written in `path` by the process driving the replay (`bkit
    demo`), `start` until it wrote one. The driver moves it a minute at a time, only once
    every key ticked the minute before, so a replay trades the same however loaded the
    machine is: no minute is skipped or ticked late. `speed` (market seconds per wall
    second) only paces the beat."""

    path: Path
    start: datetime
    speed: float = 60.0

    def now(self) -> datetime:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return self.start
        return datetime.fromisoformat(text) if text else self.start

    def set(self, when: datetime) -> None:
        """Move market now to `when` (UTC) for every process reading `path`, atomically."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(when.astimezone(UTC).isoformat())
        os.replace(temporary, self.path)

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
    """The replay clock when `BKIT_REPLAY_START` is set (stepped by a driver when
    `BKIT_REPLAY_CLOCK_FILE` is set too), else the system clock."""
    from bkit.settings import get_settings

    settings = get_settings()
    if settings.replay_start is None:
        return SystemClock()
    start = settings.replay_start
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    if settings.replay_clock_file is not None:
        return SteppedClock(settings.replay_clock_file, start, settings.replay_speed)
    epoch = settings.replay_epoch or start
    epoch = epoch if epoch.tzinfo else epoch.replace(tzinfo=UTC)
    return ReplayClock(start=start, epoch=epoch, speed=settings.replay_speed)


def tick_minute(clock: Clock) -> datetime:
    """The current tick time: market now floored to the minute."""
    return floor_to_minute(clock.now())

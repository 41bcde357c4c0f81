"""Backtest frames (SPEC §12): a named span of UTC minutes to replay, registered like the
strategies and exchanges it is run with. Pure, no I/O."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from bkit.core.candles import floor_to_minute
from bkit.core.errors import RegistrationError, UnknownNameError
from bkit.core.machine import SIGNAL_INTERVAL_MINUTES
from bkit.core.registry import _check_name

#: A frame's tick step: "1m" replays every minute, as live ticks (the default).
FRAME_INTERVAL_MINUTES = SIGNAL_INTERVAL_MINUTES


class FrameError(RegistrationError):
    """A frame that cannot be replayed (start ≥ end, bad interval, not a datetime)."""


@dataclass(frozen=True, slots=True)
class FrameSchema:
    """`start` and `end` are UTC minutes, both ticked (inclusive); `interval` is the step."""

    frame_name: str
    start: datetime
    end: datetime
    interval: str = "1m"
    note: str = ""

    @property
    def step_minutes(self) -> int:
        return FRAME_INTERVAL_MINUTES[self.interval]

    @property
    def first_minute(self) -> int:
        """Epoch minute of the first tick."""
        return int(self.start.timestamp() // 60)

    @property
    def tick_count(self) -> int:
        """How many ticks the frame holds (minutes from start to end inclusive, by step)."""
        last = int(self.end.timestamp() // 60)
        return (last - self.first_minute) // self.step_minutes + 1


def _utc_minute(label: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise FrameError(f"frame {label} must be a datetime (UTC), got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return floor_to_minute(value)


def make_frame(frame_name: str, start: datetime, end: datetime, interval: str = "1m",
               note: str = "") -> FrameSchema:
    """A checked frame (not registered): start < end, a known step."""
    _check_name("frame", frame_name)
    first, last = _utc_minute("start", start), _utc_minute("end", end)
    if first >= last:
        raise FrameError(f"frame {frame_name}: start {first.isoformat()} must be before end "
                         f"{last.isoformat()}")
    if interval not in FRAME_INTERVAL_MINUTES:
        raise FrameError(f"frame {frame_name}: interval {interval!r} is not one of "
                         f"{', '.join(FRAME_INTERVAL_MINUTES)}")
    return FrameSchema(frame_name, first, last, interval, str(note))


class FrameRegistry:
    """Named frames of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames: dict[str, FrameSchema] = {}

    def add(self, frame: FrameSchema) -> FrameSchema:
        with self._lock:
            if frame.frame_name in self.frames:
                raise RegistrationError(f"frame {frame.frame_name!r} is already registered")
            self.frames[frame.frame_name] = frame
        return frame

    def get(self, frame_name: str) -> FrameSchema:
        try:
            return self.frames[frame_name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self.frames)) or "none registered"
            raise UnknownNameError(f"unknown frame {frame_name!r} (known: {known})") from None

    def clear(self) -> None:
        with self._lock:
            self.frames.clear()


FRAMES = FrameRegistry()


def add_frame(frame_name: str, start: datetime, end: datetime, interval: str = "1m",
              note: str = "") -> FrameSchema:
    """Register a frame: the UTC minutes `start` .. `end` (inclusive), ticked every
    `interval` ("1m", the default, ticks every minute exactly as live does)."""
    return FRAMES.add(make_frame(frame_name, start, end, interval, note))

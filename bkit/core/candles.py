"""Candles: parsing, sanity checks and the VWAP price (SPEC §2). Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MINUTE_MS = 60_000

#: Candle intervals an exchange may be asked for, in minutes.
CANDLE_INTERVAL_MINUTES: dict[str, int] = {
    "1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30,
    "1h": 60, "2h": 120, "4h": 240, "6h": 360, "8h": 480, "1d": 1440,
}


class CandleError(ValueError):
    """A candle (or a list of candles) that must not be traded on."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle. `timestamp` is the open time in ms since the epoch, UTC."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def opened_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)


_FIELDS = ("timestamp", "open", "high", "low", "close", "volume")


def _describe(symbol: str, timestamp: object) -> str:
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        try:
            when = datetime.fromtimestamp(timestamp / 1000, tz=UTC).isoformat()
            return f"{symbol} candle {timestamp} ({when})"
        except (OverflowError, OSError, ValueError):
            pass
    return f"{symbol} candle {timestamp!r}"


def _as_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a price")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range: garbage, not a crash
            raise ValueError("number too large for a float") from None
    if isinstance(value, str):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a number")


def _is_sound(c: Candle) -> bool:
    """Whether a `Candle` passes every check of `parse_candle` (the fast path; a candle
    that fails goes through the full checks, which name the problem)."""
    ts, o, h, lo, cl, v = c.timestamp, c.open, c.high, c.low, c.close, c.volume
    return (type(ts) is int and ts >= 0 and type(o) is float and type(h) is float
            and type(lo) is float and type(cl) is float and type(v) is float
            and math.isfinite(o + h + lo + cl + v)
            and o > 0 and h > 0 and lo > 0 and cl > 0 and v >= 0 and h >= lo)


def parse_candle(raw: Any, symbol: str = "?") -> Candle:
    """Turn a dict, a tuple/list (ccxt OHLCV row) or a `Candle` into a checked `Candle`.

    Raises `CandleError` naming the symbol and timestamp when a value is missing, not a finite
    number, a price is <= 0, the volume is negative or high < low.
    """
    if type(raw) is Candle and _is_sound(raw):
        return raw  # already a candle, and every check below holds: nothing to build
    if isinstance(raw, Candle):
        values: Sequence[Any] = [getattr(raw, f) for f in _FIELDS]
    elif isinstance(raw, dict):
        missing = [f for f in _FIELDS if f not in raw]
        if missing:
            raise CandleError(f"{_describe(symbol, raw.get('timestamp'))}: missing {missing}")
        values = [raw[f] for f in _FIELDS]
    elif isinstance(raw, list | tuple):
        if len(raw) < 6:
            raise CandleError(f"{symbol} candle {list(raw)!r}: expected 6 values, got {len(raw)}")
        values = list(raw[:6])
    else:
        raise CandleError(f"{symbol} candle {raw!r}: not a dict, sequence or Candle")

    ts_raw = values[0]
    try:
        ts_float = _as_float(ts_raw)
    except (TypeError, ValueError) as exc:
        raise CandleError(f"{_describe(symbol, ts_raw)}: bad timestamp ({exc})") from None
    if not math.isfinite(ts_float) or ts_float < 0 or ts_float != int(ts_float):
        raise CandleError(f"{_describe(symbol, ts_raw)}: timestamp must be whole ms >= 0")
    timestamp = int(ts_float)
    where = _describe(symbol, timestamp)

    numbers: list[float] = []
    for name, value in zip(_FIELDS[1:], values[1:], strict=True):
        try:
            number = _as_float(value)
        except (TypeError, ValueError) as exc:
            raise CandleError(f"{where}: {name} {value!r} is not a number ({exc})") from None
        if not math.isfinite(number):
            raise CandleError(f"{where}: {name} is {number}, not a finite number")
        numbers.append(number)
    open_, high, low, close, volume = numbers
    problems = [f"{n} {v} <= 0" for n, v in zip(("open", "high", "low", "close"),
                                                  numbers[:4], strict=True) if v <= 0]
    if volume < 0:
        problems.append(f"volume {volume} < 0")
    if high < low:
        problems.append(f"high {high} < low {low}")
    if problems:
        raise CandleError(f"{where}: " + "; ".join(problems))
    return Candle(timestamp, open_, high, low, close, volume)


def parse_candles(raws: Iterable[Any], symbol: str = "?") -> list[Candle]:
    """Parse a whole feed: every candle checked, timestamps strictly increasing (no duplicates,
    no out-of-order rows). Raises `CandleError` naming the first offending candle."""
    candles: list[Candle] = []
    for raw in raws:
        candle = parse_candle(raw, symbol)
        if candles and candle.timestamp <= candles[-1].timestamp:
            kind = "duplicate" if candle.timestamp == candles[-1].timestamp else "out-of-order"
            raise CandleError(
                f"{_describe(symbol, candle.timestamp)}: {kind} timestamp after "
                f"{candles[-1].timestamp}"
            )
        candles.append(candle)
    return candles


def floor_to_minute(when: datetime) -> datetime:
    """UTC `when` floored to the whole minute. Naive datetimes are taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.replace(second=0, microsecond=0)


def to_ms(when: datetime) -> int:
    """Milliseconds since the epoch of an aware (or UTC-naive) datetime."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(round(when.timestamp() * 1000))


def price_window(when: datetime, count: int) -> tuple[datetime, datetime]:
    """The half-open window `[when − count min, when)` of closed 1m candles that price a tick."""
    end = floor_to_minute(when)
    return end - timedelta(minutes=count), end


def closed_candles_before(candles: Sequence[Candle], when: datetime, count: int) -> list[Candle]:
    """The closed 1m candles whose open time lies in `[when − count min, when)`.

    The forming candle (open time == when) and anything later are never used, so a feed that
    returns the future cannot leak into a price. Gaps simply give fewer candles.
    """
    start, end = price_window(when, count)
    start_ms, end_ms = to_ms(start), to_ms(end)
    return [c for c in candles if start_ms <= c.timestamp < end_ms]


def vwap(candles: Sequence[Candle]) -> float:
    """Volume-weighted typical price Σ((h+l+c)/3 × v) / Σ v; the mean close when Σ v is 0.

    Raises `CandleError` on an empty list (there is no price without candles) and when the
    result is not a finite price > 0 (float overflow on extreme prices).
    """
    if not candles:
        raise CandleError("no closed candles to price from")
    largest_volume = max(c.volume for c in candles)
    if largest_volume <= 0:
        price = math.fsum(c.close for c in candles) / len(candles)
    else:
        # Same ratio, with volumes scaled so the largest weighs 1: tiny (subnormal) or huge
        # volumes can then neither underflow nor overflow the products.
        weights = [c.volume / largest_volume for c in candles]
        weighted = math.fsum((c.high + c.low + c.close) / 3 * w
                             for c, w in zip(candles, weights, strict=True))
        price = weighted / math.fsum(weights)
    # Extreme (but individually valid) prices can overflow (h + l + c) to inf.
    if not (math.isfinite(price) and price > 0):
        raise CandleError(f"VWAP of {len(candles)} candles is {price}, not a finite price > 0")
    return price

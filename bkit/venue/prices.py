"""Prices the venue trades at: loaded 1m candles, Binance's klines answer, explicit overrides.

The current price of a market is the close of the last 1m candle that closed before the venue
clock, unless `set_price` overrides it. `klines_rows` answers `GET /api/v3/klines` (candles
that opened before the clock; the one still forming is served partial, as a real venue does).
Not thread-safe on its own: the venue holds one lock around it.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from bkit.core.candles import MINUTE_MS, Candle, parse_candles


def num(value: float | Decimal) -> str:
    """A number as binance writes it: positional decimal, never an exponent."""
    return format(Decimal(repr(value)) if isinstance(value, float) else value, "f")


def read_candles_csv(path: str | Path, limit: int | None = None) -> list[Candle]:
    """Candles from a CSV with header `timestamp,open,high,low,close,volume` (ms, UTC)."""
    with open(path, newline="") as handle:
        rows = [row for i, row in enumerate(csv.DictReader(handle)) if limit is None or i < limit]
    return parse_candles(
        ([int(r["timestamp"]), r["open"], r["high"], r["low"], r["close"], r["volume"]]
         for r in rows), str(path))


def aggregate(candles: Sequence[Candle], width_ms: int) -> list[Candle]:
    """1m candles merged into `width_ms` buckets aligned to the epoch."""
    if width_ms == MINUTE_MS:
        return list(candles)
    buckets: list[Candle] = []
    for c in candles:
        start = c.timestamp - c.timestamp % width_ms
        if buckets and buckets[-1].timestamp == start:
            b = buckets[-1]
            buckets[-1] = Candle(start, b.open, max(b.high, c.high), min(b.low, c.low), c.close,
                                 b.volume + c.volume)
        else:
            buckets.append(replace(c, timestamp=start))
    return buckets


def partial(candle: Candle, now_ms: int, width_ms: int) -> Candle:
    """The candle as seen at `now_ms`: unchanged when closed, scaled while forming."""
    if candle.timestamp + width_ms <= now_ms:
        return candle
    share = max(0.0, min(1.0, (now_ms - candle.timestamp) / width_ms))
    close = candle.open + (candle.close - candle.open) * share
    return Candle(candle.timestamp, candle.open, max(candle.open, close),
                  min(candle.open, close), close, candle.volume * share)


def kline_row(c: Candle, width_ms: int) -> list[Any]:
    """One row of Binance's klines answer (prices and volumes as strings)."""
    return [c.timestamp, num(c.open), num(c.high), num(c.low), num(c.close), num(c.volume),
            c.timestamp + width_ms - 1, num(c.close * c.volume), 1, "0", "0", "0"]


class PriceBook:
    """Candles and price overrides per market id (`BTCUSDT`)."""

    def __init__(self) -> None:
        self._candles: dict[str, list[Candle]] = {}
        self._times: dict[str, list[int]] = {}
        self._override: dict[str, Decimal] = {}

    def load(self, market_id: str, candles: Sequence[Candle]) -> None:
        ordered = sorted(candles, key=lambda c: c.timestamp)
        self._candles[market_id] = ordered
        self._times[market_id] = [c.timestamp for c in ordered]

    def set_price(self, market_id: str, price: Decimal | None) -> None:
        if price is None:
            self._override.pop(market_id, None)
        else:
            self._override[market_id] = price

    def closed(self, market_id: str, now_ms: int, since_ms: int | None = None) -> list[Candle]:
        """1m candles closed by `now_ms` (open + 1 min <= now), optionally opened >= since."""
        times = self._times.get(market_id, [])
        end = bisect.bisect_right(times, now_ms - MINUTE_MS)
        start = 0 if since_ms is None else bisect.bisect_left(times, since_ms)
        return self._candles.get(market_id, [])[start:end]

    def visible(self, market_id: str, now_ms: int) -> list[Candle]:
        """1m candles opened before `now_ms` (the last one may still be forming)."""
        times = self._times.get(market_id, [])
        return self._candles.get(market_id, [])[:bisect.bisect_left(times, now_ms)]

    def current(self, market_id: str, now_ms: int) -> Decimal | None:
        """The override, else the close of the last closed 1m candle; None if neither."""
        if market_id in self._override:
            return self._override[market_id]
        times = self._times.get(market_id, [])
        index = bisect.bisect_right(times, now_ms - MINUTE_MS)
        return Decimal(repr(self._candles[market_id][index - 1].close)) if index else None

    def has_override(self, market_id: str) -> bool:
        return market_id in self._override

    def span(self) -> tuple[int, int] | None:
        """First open and last close time (ms) over every loaded market."""
        firsts = [times[0] for times in self._times.values() if times]
        lasts = [times[-1] + MINUTE_MS for times in self._times.values() if times]
        return (min(firsts), max(lasts)) if firsts else None

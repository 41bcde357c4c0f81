"""Candles of a backtest: read once per frame from the exchange's `get_candles`, kept as
columns (not one object per minute), and cached on disk under `BKIT_HOME` so a second run of
the same span makes no request.

The cache holds whole UTC days, one CSV per day
(`BKIT_HOME/backtest/candles/<exchange>/<symbol>/<YYYY-MM-DD>.csv`), written atomically and
only once the day is over (so a day still forming is never frozen). A day whose feed held a
bad candle is not cached: the next run asks again. Gaps are kept as gaps.
"""

from __future__ import annotations

import math
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bkit.backtest import simclock
from bkit.core.candles import MINUTE_MS, CandleError, parse_candle
from bkit.core.errors import BkitError
from bkit.core.registry import ExchangeSchema

DAY_MINUTES = 1440


class CandleLoadError(BkitError):
    """The exchange could not give the candles of a frame (it raised, or gave nothing)."""


@dataclass
class CandleColumns:
    """Candles of one symbol, oldest first, as parallel columns. `minutes` are epoch
    minutes of the open time; `typical` is (high + low + close) / 3; `bad` maps the epoch
    minute of a candle that failed its checks to the error (SPEC §2: never traded on)."""

    minutes: array = field(default_factory=lambda: array("q"))
    typical: array = field(default_factory=lambda: array("d"))
    volume: array = field(default_factory=lambda: array("d"))
    close: array = field(default_factory=lambda: array("d"))
    high: array = field(default_factory=lambda: array("d"))
    low: array = field(default_factory=lambda: array("d"))
    bad: dict[int, str] = field(default_factory=dict)
    requests: int = 0

    def __len__(self) -> int:
        return len(self.minutes)

    def append(self, minute: int, high: float, low: float, close: float, volume: float
               ) -> None:
        self.minutes.append(minute)
        # Same expression as bkit.core.candles.vwap, so the VWAP comes out bit-identical.
        self.typical.append((high + low + close) / 3)
        self.volume.append(volume)
        self.close.append(close)
        self.high.append(high)
        self.low.append(low)


def cache_root() -> Path:
    from bkit.settings import get_settings

    return get_settings().home / "backtest" / "candles"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _day_path(root: Path, exchange_name: str, symbol: str, day: int) -> Path:
    date = datetime.fromtimestamp(day * DAY_MINUTES * 60, tz=UTC).date().isoformat()
    return root / _safe(exchange_name) / _safe(symbol) / f"{date}.csv"


def _read_day(path: Path) -> list[tuple[int, float, float, float, float, float]] | None:
    try:
        text = path.read_text(encoding="ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    rows = []
    try:
        for line in text.splitlines():
            if line:
                ts, o, h, lo, c, v = line.split(",")
                rows.append((int(ts), float(o), float(h), float(lo), float(c), float(v)))
    except ValueError:
        return None  # a damaged cache file is fetched again
    return rows


def _write_day(path: Path, rows: Iterable[tuple[int, float, float, float, float, float]]
               ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{ts},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for ts, o, h, lo, c, v in rows)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".day-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(body)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _fetch_day(exchange: ExchangeSchema, symbol: str, day: int, counter: list[int]
               ) -> tuple[list[tuple[int, float, float, float, float, float]], dict[int, str]]:
    """Every candle of UTC day `day` (epoch days) from `get_candles`, paged: each request
    asks for the rest of the day from the minute after the last candle received."""
    start_ms = day * DAY_MINUTES * MINUTE_MS
    end_ms = start_ms + DAY_MINUTES * MINUTE_MS
    rows: list[tuple[int, float, float, float, float, float]] = []
    bad: dict[int, str] = {}
    since = start_ms
    day_end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    while since < end_ms:
        when = datetime.fromtimestamp(since / 1000, tz=UTC)
        limit = (end_ms - since) // MINUTE_MS
        counter[0] += 1
        try:
            with simclock.simulated(day_end):  # a paper exchange serves the whole day
                raw = exchange.get_candles(symbol, "1m", when, limit)
        except Exception as exc:
            raise CandleLoadError(
                f"{exchange.exchange_name} {symbol}: get_candles from {when.isoformat()} "
                f"failed: {type(exc).__name__}: {exc}") from exc
        last = since - 1
        for item in raw or []:
            try:
                candle = parse_candle(item, symbol)
            except CandleError as exc:
                ts = _raw_timestamp(item)
                if ts is not None and since <= ts < end_ms:
                    bad[ts // MINUTE_MS] = str(exc)
                    last = max(last, ts)
                continue
            ts = candle.timestamp
            if ts < since or ts >= end_ms:
                continue  # before the page (a feed ignoring `since`) or the next day
            if ts <= last:
                bad.setdefault(ts // MINUTE_MS, f"{symbol} candle {ts}: duplicate or "
                               "out-of-order timestamp")
                continue
            rows.append((ts, candle.open, candle.high, candle.low, candle.close, candle.volume))
            last = ts
        if last < since:
            break  # nothing more in this day
        since = (last // MINUTE_MS + 1) * MINUTE_MS
    rows.sort()
    return rows, bad


def _raw_timestamp(item: Any) -> int | None:
    value = item.get("timestamp") if isinstance(item, dict) else (
        item[0] if isinstance(item, list | tuple) and item else getattr(item, "timestamp", None))
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return None


def load_candles(exchange: ExchangeSchema, symbol: str, first_minute: int, end_minute: int,
                 *, use_cache: bool = True, now: Callable[[], datetime] | None = None
                 ) -> CandleColumns:
    """1m candles with open time in `[first_minute, end_minute)` (epoch minutes), read from
    the disk cache or the exchange, day by day. Raises `CandleLoadError` if the exchange
    fails."""
    simclock.install(exchange.source)
    wall_now = (now or (lambda: datetime.now(UTC)))()
    root = cache_root() if use_cache else None
    columns = CandleColumns()
    counter = [0]
    for day in range(first_minute // DAY_MINUTES, (end_minute - 1) // DAY_MINUTES + 1):
        path = None if root is None else _day_path(root, exchange.exchange_name, symbol, day)
        rows = None if path is None else _read_day(path)
        bad: dict[int, str] = {}
        if rows is None:
            rows, bad = _fetch_day(exchange, symbol, day, counter)
            day_over = datetime.fromtimestamp((day + 1) * DAY_MINUTES * 60, tz=UTC) \
                <= wall_now - timedelta(minutes=1)
            if path is not None and not bad and day_over:
                _write_day(path, rows)
        for ts, _o, high, low, close, volume in rows:
            minute = ts // MINUTE_MS
            if first_minute <= minute < end_minute:
                columns.append(minute, high, low, close, volume)
        columns.bad.update({m: e for m, e in bad.items() if first_minute <= m < end_minute})
    columns.requests = counter[0]
    return columns

"""The paper exchange: replays 1m candles from a CSV against a clock, so nothing can see the
future (only candles closed before market now are served). Any symbol can be mapped to a CSV;
by default every symbol replays the sample shipped in `bkit/data`."""

from __future__ import annotations

import bisect
import csv
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from importlib import resources
from pathlib import Path

from bkit.clock import Clock
from bkit.core.candles import CANDLE_INTERVAL_MINUTES, MINUTE_MS, Candle, parse_candles, to_ms
from bkit.core.sizing import aggregate_minutes

SAMPLE_CSV = "XRP_ETH-1m.csv"


def sample_csv_path() -> Path:
    """Path of the real candle sample shipped inside the package."""
    return Path(str(resources.files("bkit") / "data" / SAMPLE_CSV))


def shipped_series() -> dict[str, list[Candle]]:
    """Both real samples shipped with bkit on one market clock: "XRP/ETH" as recorded and
    "UNITTEST/BTC" shifted (whole minutes) to start with it, so one replay clock drives both.
    Prices and gaps are untouched."""
    folder = sample_csv_path().parent
    xrp = load_csv(folder / "XRP_ETH-1m.csv", "XRP/ETH")
    btc = load_csv(folder / "UNITTEST_BTC-1m.csv", "UNITTEST/BTC")
    shift = xrp[0].timestamp - btc[0].timestamp
    return {"XRP/ETH": xrp,
            "UNITTEST/BTC": [replace(c, timestamp=c.timestamp + shift) for c in btc]}


def load_csv(path: str | Path, symbol: str = "?") -> list[Candle]:
    """Read a `timestamp,open,high,low,close,volume` CSV; every row is checked."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    parsed = [{k: float(v) if k != "timestamp" else int(float(v)) for k, v in r.items()}
              for r in rows]
    return parse_candles(parsed, symbol)


class PaperExchange:
    """Serves `get_candles` from in-memory series; `clock` decides what has closed."""

    def __init__(self, clock: Clock, series: Mapping[str, list[Candle]] | None = None,
                 default: list[Candle] | None = None,
                 symbol_map: Callable[[str], str] | None = None) -> None:
        """`symbol_map` names the series a symbol replays (e.g. many symbols, few series)."""
        self.clock = clock
        self.symbol_map = symbol_map
        self.series = dict(series or {})
        self.default = default if default is not None else (
            None if series else load_csv(sample_csv_path(), "sample"))
        self._times = {s: [c.timestamp for c in cs] for s, cs in self.series.items()}
        self._default_times = None if self.default is None else [c.timestamp
                                                                 for c in self.default]

    def span(self, symbol: str | None = None) -> tuple[datetime, datetime]:
        candles = self.series.get(symbol or "", self.default) or []
        if not candles:
            raise ValueError(f"no candles for {symbol!r}")
        return candles[0].opened_at, candles[-1].opened_at

    def get_candles(self, symbol: str, interval: str, since: datetime, limit: int
                    ) -> list[Candle]:
        """Closed candles with open time ≥ `since`, at most `limit`, aggregated to
        `interval`. A candle is closed once market now ≥ its open + interval."""
        if interval not in CANDLE_INTERVAL_MINUTES:
            raise ValueError(f"unknown interval {interval!r}")
        name = self.symbol_map(symbol) if self.symbol_map else symbol
        candles = self.series.get(name, self.default)
        times = self._times.get(name, self._default_times)
        if candles is None or times is None:
            raise ValueError(f"paper exchange has no candles for symbol {symbol!r}")
        step = CANDLE_INTERVAL_MINUTES[interval] * MINUTE_MS
        now_ms = to_ms(self.clock.now())
        start_ms = to_ms(since)
        first = bisect.bisect_left(times, start_ms - start_ms % step)
        last = bisect.bisect_left(times, now_ms - now_ms % step)  # open < current bucket start
        window = candles[first:last]
        if step != MINUTE_MS:
            window = aggregate_minutes(window, step // MINUTE_MS)
        window = [c for c in window if c.timestamp >= start_ms]
        return window[:limit]


def add_paper_exchange(exchange_name: str = "paper", *, clock: Clock | None = None,
                       csv_path: str | Path | None = None,
                       series: Mapping[str, list[Candle]] | None = None,
                       symbol_map: Callable[[str], str] | None = None,
                       note: str = "paper exchange replaying real candles") -> PaperExchange:
    """Register a paper exchange (default: the shipped sample, replay/system clock)."""
    from bkit.clock import clock_from_settings
    from bkit.core.registry import add_exchange

    default = load_csv(csv_path, "paper") if csv_path else None
    exchange = PaperExchange(clock or clock_from_settings(), series, default, symbol_map)
    add_exchange(exchange_name, exchange.get_candles, note=note, source=exchange)
    return exchange

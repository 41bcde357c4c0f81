"""The tick price of every minute of a frame: the VWAP of the closed 1m candles in
`[when − N min, when)` (SPEC §2, N = CC_AVG_PRICE_CANDLES_COUNT), computed in one pass.

The window slides over the candle columns with two pointers (each candle enters and leaves
once; its typical price is computed once, when it is read). Within a window the sums are
taken exactly as `bkit.core.candles.vwap` takes them (volumes scaled by the largest,
`math.fsum`), so every price is bit-identical to the live tick's: the state machine then
compares the same floats and makes the same decisions. A minute without a price (a gap in
the feed, a bad candle in its window) is NaN, with the live tick's error message.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bkit.backtest.candles import CandleColumns

NAN = math.nan


@dataclass
class PriceSeries:
    """`prices[i]` is the tick price of tick `i` (minute `first_minute + i × step`), NaN when
    the tick fails; `failures[i]` then says why (absent: no closed candles)."""

    first_minute: int
    step: int
    prices: array
    failures: dict[int, str] = field(default_factory=dict)
    #: (low, high) of each tick's last closed candle, for CC_STOP_LOSS_TRIGGER = "touch".
    lows: array = field(default_factory=lambda: array("d"))
    highs: array = field(default_factory=lambda: array("d"))

    def minute(self, index: int) -> int:
        return self.first_minute + index * self.step

    def priced(self) -> int:
        return sum(1 for p in self.prices if p == p)

    def failure(self, index: int, exchange_name: str, symbol: str) -> str:
        """The error of a failed tick, worded as `bkit.pricing.tick_price` words it."""
        when = datetime.fromtimestamp(self.minute(index) * 60, tz=UTC)
        cause = self.failures.get(index, "no closed candles to price from")
        return f"{exchange_name} {symbol} at {when.isoformat()}: {cause}"


def price_series(columns: CandleColumns, first_minute: int, ticks: int, step: int,
                 count: int) -> PriceSeries:
    """The VWAP of each of `ticks` minutes from `first_minute` every `step` minutes."""
    minutes, typical, volume, close = (columns.minutes, columns.typical, columns.volume,
                                       columns.close)
    bad = sorted(columns.bad)
    total = len(minutes)
    prices = array("d", bytes(8 * ticks))
    lows, highs = array("d", bytes(8 * ticks)), array("d", bytes(8 * ticks))
    failures: dict[int, str] = {}
    fsum, isfinite = math.fsum, math.isfinite
    lo = hi = bad_lo = 0
    for index in range(ticks):
        minute = first_minute + index * step
        start = minute - count
        while lo < total and minutes[lo] < start:
            lo += 1
        if hi < lo:
            hi = lo
        while hi < total and minutes[hi] < minute:
            hi += 1
        while bad_lo < len(bad) and bad[bad_lo] < start:
            bad_lo += 1
        if bad_lo < len(bad) and bad[bad_lo] < minute:
            prices[index] = NAN
            failures[index] = columns.bad[bad[bad_lo]]
            continue
        n = hi - lo
        if n == 0:
            prices[index] = NAN
            continue
        largest = max(volume[lo:hi])
        if largest <= 0:
            price = fsum(close[lo:hi]) / n
        else:
            weights = [v / largest for v in volume[lo:hi]]
            weighted = fsum([t * w for t, w in zip(typical[lo:hi], weights, strict=True)])
            price = weighted / fsum(weights)
        if not (isfinite(price) and price > 0):
            prices[index] = NAN
            failures[index] = f"VWAP of {n} candles is {price}, not a finite price > 0"
            continue
        prices[index] = price
        lows[index], highs[index] = columns.low[hi - 1], columns.high[hi - 1]
    return PriceSeries(first_minute, step, prices, failures, lows, highs)

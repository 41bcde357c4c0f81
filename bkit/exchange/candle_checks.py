"""Batch-level candle checks the core cannot do one candle at a time (SPEC §2).

`parse_candles` (core) already rejects non-finite or non-positive values, high < low and
out-of-order or duplicate timestamps. Here: a single absurd print (a fat-finger high, a price
feed glitch) that would move the VWAP and trigger a stop loss.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

from bkit.core.candles import Candle, CandleError

#: Largest distance of a candle's high or low from its neighbours' median close (0.5 = 50 %).
DEFAULT_MAX_DEVIATION = 0.5
#: How many candles on each side form the neighbourhood.
DEFAULT_NEIGHBOURS = 5


def check_outliers(candles: Sequence[Candle], symbol: str = "?",
                   max_deviation: float = DEFAULT_MAX_DEVIATION,
                   neighbours: int = DEFAULT_NEIGHBOURS) -> None:
    """Raise `CandleError` naming the first candle whose high or low lies more than
    `max_deviation` (a fraction: 0.5 = 50 %) away from the median close of the up to
    `neighbours` candles on each side of it in the batch.

    A batch of one candle has no neighbours and passes. Gaps do not matter: neighbours are
    positions in the batch, not minutes.
    """
    if max_deviation <= 0 or neighbours < 1:
        raise ValueError("max_deviation must be > 0 and neighbours >= 1")
    closes = [c.close for c in candles]
    for i, candle in enumerate(candles):
        around = closes[max(0, i - neighbours):i] + closes[i + 1:i + 1 + neighbours]
        if not around:
            continue
        median = statistics.median(around)
        worst = max((candle.high - median) / median, (median - candle.low) / median)
        if worst > max_deviation:
            when = datetime.fromtimestamp(candle.timestamp / 1000, tz=UTC).isoformat()
            raise CandleError(
                f"{symbol} candle {candle.timestamp} ({when}): high {candle.high} / low "
                f"{candle.low} is {worst:.0%} away from the median close {median} of its "
                f"neighbours (limit {max_deviation:.0%}); refusing an absurd outlier"
            )

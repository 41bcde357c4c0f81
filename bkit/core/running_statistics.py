"""Statistics of SPEC §9 one close at a time: a fixed-size summary of a key's closed trades that
`add_trade` updates as each trade closes, so a live key's figures cost the same after a day or
after years (SPEC §13: `Live.get_data` reads one row, not every trade). Pure, no I/O.

`statistics_from` turns the summary into the `LiveStatistics` of
`bkit.core.statistics.compute_statistics` over the same trades: the counts, gates and None-ness
exactly, the figures to rounding (about 1e-15 relative on real trades; the tests hold them to
1e-9 over any history of returns to the thousandth of a percent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bkit.core.statistics import (
    SECONDS_PER_DAY,
    ClosedTrade,
    LiveStatistics,
    as_utc,
    check_gates,
    sort_by_close,
    statistics_of_sums,
)


@dataclass(frozen=True, slots=True)
class RunningStatistics:
    """A fixed-size summary of a key's closed trades: enough for every figure of
    `compute_statistics`, updated by `add_trade` as each trade closes. Units: %, like
    `pnl_percentage`; %² for `pnl_m2`; times in UTC.

    - `total_closed`, `win_count` (pnl > 0), `loss_count` (pnl < 0).
    - `pnl_sum` + `pnl_sum_error` = Σ r_i: a compensated (Neumaier) sum. `pnl_sum` alone is
      the plain running sum; `pnl_sum_error` holds the rounding it lost.
    - `pnl_mean`, `pnl_m2` = Σ (r_i − mean)²: Welford's running mean and sum of squared
      deviations, for the sample deviation (a run of equal returns keeps it exactly 0, as
      `compute_statistics` has it). `avg_pnl` is taken from the compensated sum instead.
    - `win_sum`, `loss_sum`: Σ of the winning (> 0) resp. losing (< 0, so ≤ 0) r_i.
    - `equity_peak`: the running peak of the cumulative PnL (starts at 0, so ≥ 0);
      `max_drawdown`: its largest fall so far (≥ 0).
    - `first_opened_at`, `last_closed_at`: the history's span (annualisation).

    Beyond the float range (|Σ r_i| over 1e308, or a deviation over 1e154 %: no real trade;
    a price moves at most some 1e17-fold) figures saturate to ±inf, and a ratio of two
    infinities is None; nothing is ever NaN.
    """

    total_closed: int = 0
    win_count: int = 0
    loss_count: int = 0
    pnl_sum: float = 0.0
    pnl_sum_error: float = 0.0
    pnl_mean: float = 0.0
    pnl_m2: float = 0.0
    win_sum: float = 0.0
    loss_sum: float = 0.0
    equity_peak: float = 0.0
    max_drawdown: float = 0.0
    first_opened_at: datetime | None = None
    last_closed_at: datetime | None = None

    @property
    def pnl_total(self) -> float:
        """Σ r_i, % (the compensated sum)."""
        return self.pnl_sum + self.pnl_sum_error

    def in_close_order(self, closed_at: datetime) -> bool:
        """True if a trade closed at `closed_at` may be added next: `max_drawdown` follows the
        close-time order, so a trade closed before the last one added needs a refold
        (`running_statistics` over every trade)."""
        return self.last_closed_at is None or as_utc(closed_at) >= self.last_closed_at


def _compensated_add(total: float, error: float, value: float) -> tuple[float, float]:
    """Neumaier's step: (running sum, lost rounding) after adding `value`."""
    new_total = total + value
    if not math.isfinite(new_total):  # overflowed: no rounding left to keep (and no inf − inf)
        return new_total, error
    if abs(total) >= abs(value):
        error += (total - new_total) + value
    else:
        error += (value - new_total) + total
    return new_total, error


def add_trade(
    stats: RunningStatistics,
    pnl_percentage: float,
    opened_at: datetime,
    closed_at: datetime,
) -> RunningStatistics:
    """`stats` with one more closed trade: `pnl_percentage` in %, its open and close times
    (naive ones are read as UTC). Trades must come in close-time order (ties in any order;
    see `RunningStatistics.in_close_order`) for `max_drawdown` to be `compute_statistics`'.
    A non-finite `pnl_percentage` is rejected with `ValueError`, like `ClosedTrade`."""
    if not math.isfinite(pnl_percentage):
        raise ValueError(f"pnl_percentage {pnl_percentage!r} is not a finite number")
    opened_at, closed_at = as_utc(opened_at), as_utc(closed_at)
    count = stats.total_closed + 1
    # Welford, as M2 += (n − 1)/n · (r − old mean)²: every term is ≥ 0 (an overflowed
    # deviation makes M2 inf, never NaN), and the mean, moved by r/n − mean/n, stays within
    # the returns seen (finite) and exactly unchanged by a return equal to it.
    deviation = pnl_percentage - stats.pnl_mean
    m2 = stats.pnl_m2 + deviation * deviation * (stats.total_closed / count) \
        if stats.total_closed else 0.0
    mean = stats.pnl_mean + (pnl_percentage / count - stats.pnl_mean / count)
    pnl_sum, pnl_sum_error = _compensated_add(stats.pnl_sum, stats.pnl_sum_error, pnl_percentage)
    equity = pnl_sum + pnl_sum_error
    peak = max(stats.equity_peak, equity)
    # As `drawdown_curve`: an infinite equity is its own peak (no inf − inf).
    depth = 0.0 if equity == peak else peak - equity
    first, last = stats.first_opened_at, stats.last_closed_at
    return RunningStatistics(
        total_closed=count,
        win_count=stats.win_count + (pnl_percentage > 0),
        loss_count=stats.loss_count + (pnl_percentage < 0),
        pnl_sum=pnl_sum,
        pnl_sum_error=pnl_sum_error,
        pnl_mean=mean,
        pnl_m2=m2,
        win_sum=stats.win_sum + max(pnl_percentage, 0.0),
        loss_sum=stats.loss_sum + min(pnl_percentage, 0.0),
        equity_peak=peak,
        max_drawdown=max(stats.max_drawdown, depth),
        first_opened_at=opened_at if first is None else min(first, opened_at),
        last_closed_at=closed_at if last is None else max(last, closed_at),
    )


def fold_trades(figures: Iterable[tuple[float, datetime, datetime]]) -> RunningStatistics:
    """The summary of trades given as `(pnl_percentage, opened_at, closed_at)`, already in
    close-time order (a store reads them so, without making a `ClosedTrade` of each)."""
    stats = RunningStatistics()
    for pnl_percentage, opened_at, closed_at in figures:
        stats = add_trade(stats, pnl_percentage, opened_at, closed_at)
    return stats


def running_statistics(trades: Iterable[ClosedTrade]) -> RunningStatistics:
    """The summary of `trades`, folded in close-time order (ties keep their given order)."""
    return fold_trades((trade.pnl_percentage, trade.opened_at, trade.closed_at)
                       for trade in sort_by_close(list(trades)))


def statistics_from(
    stats: RunningStatistics,
    *,
    min_trades_for_ratios: int = 10,
    min_days_for_annualisation: float = 14.0,
) -> LiveStatistics:
    """The figures of `compute_statistics` (same formulas and gates) from the summary."""
    check_gates(min_trades_for_ratios, min_days_for_annualisation)
    count = stats.total_closed
    days = 0.0
    if stats.first_opened_at is not None and stats.last_closed_at is not None:
        days = (stats.last_closed_at - stats.first_opened_at).total_seconds() / SECONDS_PER_DAY
    return statistics_of_sums(
        total=count,
        win_count=stats.win_count,
        loss_count=stats.loss_count,
        total_pnl=stats.pnl_total,
        avg_pnl=stats.pnl_total / count if count else None,
        std_dev=math.sqrt(stats.pnl_m2 / (count - 1)) if count >= 2 else None,
        avg_win=stats.win_sum / stats.win_count if stats.win_count else None,
        avg_loss=stats.loss_sum / stats.loss_count if stats.loss_count else None,
        days=days,
        drawdown=stats.max_drawdown,
        min_trades_for_ratios=min_trades_for_ratios,
        min_days_for_annualisation=min_days_for_annualisation,
    )

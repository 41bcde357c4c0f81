"""Statistics over closed trades and the rows of a live report (SPEC §9). Pure, no I/O.

Every figure is computed from `pnl_percentage` (per cent of the position's entry cost, after
slippage and fees, SPEC §5), one value per closed trade, taken in close-time order. Per-trade
returns are pooled: no daily resampling, no compounding. Percent figures are in percentage points
(an `avg_pnl` of 0.11 means +0.11 % per trade).

Numerical safety: sums are taken with `math.fsum` over values scaled by the largest magnitude, so
any list of finite inputs gives a result without raising; a figure whose true value lies beyond the
float range comes out as ±inf, never as NaN.

`compute_statistics` works over the list of trades (the backtest, reports that chart every
trade); `bkit.core.running_statistics` reaches the same figures one close at a time (a live key,
whose history grows for ever). Both end in `statistics_of_sums`: one set of formulas and gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate

from bkit.core.results import TickResult

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.0


def as_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC. A naive datetime is read as UTC (SQLite hands them back naive)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One closed signal, as the statistics see it.

    `pnl_percentage` is in % of the entry cost (SPEC §5); `pnl_cost` in USD. `opened_at` and
    `closed_at` are normalised to UTC; a naive value is taken as UTC. A trade closed before it
    opened, or with a non-finite PnL, is rejected with `ValueError`.
    """

    signal_id: str
    symbol: str
    position: str
    pnl_percentage: float
    pnl_cost: float
    opened_at: datetime
    closed_at: datetime
    close_reason: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.pnl_percentage):
            raise ValueError(
                f"trade {self.signal_id}: pnl_percentage {self.pnl_percentage!r} "
                "is not a finite number"
            )
        opened_at, closed_at = as_utc(self.opened_at), as_utc(self.closed_at)
        if closed_at < opened_at:
            raise ValueError(
                f"trade {self.signal_id}: closed_at {closed_at.isoformat()} is before "
                f"opened_at {opened_at.isoformat()}"
            )
        object.__setattr__(self, "opened_at", opened_at)
        object.__setattr__(self, "closed_at", closed_at)


@dataclass(slots=True, unsafe_hash=True)
class ReportRow:
    """One event row of a live report (an opened, closed, cancelled … result).

    Prices are in quote currency; `pnl_percentage` in %. `close_reason` holds the close reason of a
    `closed` row and the cancel reason (`timeout`, `price_reject`, `user`) of a `cancelled` row.
    `timestamp` is normalised to UTC; a naive value is taken as UTC.

    Treat it as a value (hashable, never changed once made). It is not declared frozen only
    because a frozen dataclass is ten times dearer to make (each field set through
    `object.__setattr__`): `Live.get_data` makes 250 of them per call on a key with history,
    and that difference alone was most of what history added to its time.
    """

    timestamp: datetime
    action: str
    symbol: str
    signal_id: str | None = None
    position: str | None = None
    price_open: float | None = None
    price_take_profit: float | None = None
    price_stop_loss: float | None = None
    pnl_percentage: float | None = None
    close_reason: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is not UTC:  # most come in UTC: a report makes up to 250
            self.timestamp = as_utc(self.timestamp)


def report_row(result: TickResult) -> ReportRow:
    """The report row of a tick result (its time, action, signal, pnl and reason)."""
    signal = result.signal
    return ReportRow(
        timestamp=result.created_at, action=result.action, symbol=result.symbol,
        signal_id=None if signal is None else signal.id,
        position=None if signal is None else signal.position,
        price_open=None if signal is None else signal.price_open,
        price_take_profit=None if signal is None else signal.price_take_profit,
        price_stop_loss=None if signal is None else signal.price_stop_loss,
        pnl_percentage=None if result.pnl is None else result.pnl.pnl_percentage,
        close_reason=result.close_reason or result.reason)


#: §9 figures a walker may rank by (higher is better, except max_drawdown: lower is better).
RANK_METRICS = ("sharpe_ratio", "annualized_sharpe_ratio", "certainty_ratio",
                "expected_yearly_returns", "total_pnl", "avg_pnl", "win_rate",
                "max_drawdown")


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    """Statistics over all closed trades of one key (SPEC §9). `None` means "not defined here".

    Counts: `total_closed`, `win_count` (pnl > 0), `loss_count` (pnl < 0); a trade at exactly 0 %
    is neither. Percentage points: `win_rate`, `avg_pnl`, `total_pnl`, `std_dev`,
    `expected_yearly_returns`, `max_drawdown`. Unitless: `sharpe_ratio`,
    `annualized_sharpe_ratio`, `certainty_ratio`. See `compute_statistics` for the formulas.
    """

    total_closed: int
    win_count: int
    loss_count: int
    win_rate: float | None
    avg_pnl: float | None
    total_pnl: float
    std_dev: float | None
    sharpe_ratio: float | None
    annualized_sharpe_ratio: float | None
    certainty_ratio: float | None
    expected_yearly_returns: float | None
    max_drawdown: float


def sort_by_close(trades: Sequence[ClosedTrade]) -> list[ClosedTrade]:
    """Trades in close-time order; ties keep their given order (the sort is stable)."""
    return sorted(trades, key=lambda trade: trade.closed_at)


def _scale_of(values: Sequence[float]) -> float:
    """Largest magnitude in `values` (1.0 if all are zero): dividing by it keeps sums in range."""
    return max((abs(value) for value in values), default=0.0) or 1.0


def _mean(values: Sequence[float]) -> float:
    scale = _scale_of(values)
    return math.fsum(value / scale for value in values) / len(values) * scale


def _sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (N − 1). Needs at least two values."""
    scale = _scale_of(values)
    scaled = [value / scale for value in values]
    centre = math.fsum(scaled) / len(scaled)
    variance = math.fsum((value - centre) ** 2 for value in scaled) / (len(scaled) - 1)
    return math.sqrt(variance) * scale


def equity_curve(trades: Sequence[ClosedTrade]) -> list[tuple[datetime, float]]:
    """Cumulative `pnl_percentage` (percentage points) after each trade, in close-time order.

    One point per trade: `(closed_at, running sum)`. The curve implicitly starts at 0 before the
    first trade; that origin is not included.
    """
    ordered = sort_by_close(trades)
    scale = _scale_of([trade.pnl_percentage for trade in ordered])
    # Scaled terms are at most 1 in size, so the running sum cannot overflow before rescaling.
    running = accumulate(trade.pnl_percentage / scale for trade in ordered)
    return [(trade.closed_at, total * scale) for trade, total in zip(ordered, running, strict=True)]


def drawdown_curve(trades: Sequence[ClosedTrade]) -> list[tuple[datetime, float]]:
    """Underwater curve: equity minus its running peak after each trade (percentage points, ≤ 0).

    The peak starts at 0 (the equity before any trade), so a first losing trade is a drawdown.
    """
    points: list[tuple[datetime, float]] = []
    peak = 0.0
    for closed_at, equity in equity_curve(trades):
        peak = max(peak, equity)
        # inf − inf would be NaN; an infinite equity is its own peak, so no drawdown there.
        points.append((closed_at, 0.0 if equity == peak else equity - peak))
    return points


def max_drawdown(trades: Sequence[ClosedTrade]) -> float:
    """Largest peak-to-trough fall of the equity curve, in percentage points (≥ 0; 0 if none)."""
    return max((-depth for _, depth in drawdown_curve(trades)), default=0.0)


def history_days(trades: Sequence[ClosedTrade]) -> float:
    """Days from the first `opened_at` to the last `closed_at` (0.0 with no trades)."""
    if not trades:
        return 0.0
    first_open = min(trade.opened_at for trade in trades)
    last_close = max(trade.closed_at for trade in trades)
    return (last_close - first_open).total_seconds() / SECONDS_PER_DAY


def compute_statistics(
    trades: Sequence[ClosedTrade],
    *,
    min_trades_for_ratios: int = 10,
    min_days_for_annualisation: float = 14.0,
) -> LiveStatistics:
    """Statistics over closed trades (SPEC §9). `r_i` = `pnl_percentage` of trade i, in %.

    - `total_closed` = N; `win_count` = #{r_i > 0}; `loss_count` = #{r_i < 0} (0 is neither).
    - `win_rate` = win_count / N × 100 (%); None when N = 0.
    - `avg_pnl` = Σ r_i / N (% per trade); None when N = 0. `total_pnl` = Σ r_i (%; 0 when N = 0).
    - `std_dev` = √(Σ (r_i − avg)² / (N − 1)) (%, sample deviation); None when N < 2.
    - `sharpe_ratio` = avg_pnl / std_dev (per trade, risk-free rate 0, unitless).
    - trades per year T = N / (D / 365), D = days from the first `opened_at` to the last
      `closed_at`.
    - `annualized_sharpe_ratio` = sharpe_ratio × √T (unitless).
    - `certainty_ratio` = avg win / |avg loss| (unitless; avg over winning resp. losing trades
      only). With losses but no wins it is 0: the strategy never wins.
    - `expected_yearly_returns` = avg_pnl × T (% per year, simple, not compounded).
    - `max_drawdown`: largest fall of the running sum Σ r_i (close-time order) below its
      running peak, which starts at 0; percentage points, ≥ 0.

    Gates: the four ratio figures (`sharpe_ratio`, `annualized_sharpe_ratio`, `certainty_ratio`,
    `expected_yearly_returns`) are None when N < `min_trades_for_ratios`; the annualised two also
    when D < `min_days_for_annualisation` days or D = 0; any ratio with a zero denominator
    (std_dev 0, no losing trade) is None.
    """
    check_gates(min_trades_for_ratios, min_days_for_annualisation)
    returns = [trade.pnl_percentage for trade in trades]
    total = len(returns)
    wins = [value for value in returns if value > 0]
    losses = [value for value in returns if value < 0]
    scale = _scale_of(returns)
    return statistics_of_sums(
        total=total,
        win_count=len(wins),
        loss_count=len(losses),
        total_pnl=math.fsum(value / scale for value in returns) * scale,
        avg_pnl=_mean(returns) if total else None,
        std_dev=_sample_std(returns) if total >= 2 else None,
        avg_win=_mean(wins) if wins else None,
        avg_loss=_mean(losses) if losses else None,
        days=history_days(trades),
        drawdown=max_drawdown(trades),
        min_trades_for_ratios=min_trades_for_ratios,
        min_days_for_annualisation=min_days_for_annualisation,
    )


def check_gates(min_trades_for_ratios: int, min_days_for_annualisation: float) -> None:
    """Refuse gates below 0 (`ValueError`)."""
    if min_trades_for_ratios < 0 or not min_days_for_annualisation >= 0:
        raise ValueError("min_trades_for_ratios and min_days_for_annualisation must be ≥ 0")


def _quotient(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`; None where that is not defined (a zero denominator, or two
    infinities: only a summary whose sums left the float range has those)."""
    if denominator == 0:
        return None
    value = numerator / denominator
    return None if math.isnan(value) else value


def statistics_of_sums(
    *,
    total: int,
    win_count: int,
    loss_count: int,
    total_pnl: float,
    avg_pnl: float | None,
    std_dev: float | None,
    avg_win: float | None,
    avg_loss: float | None,
    days: float,
    drawdown: float,
    min_trades_for_ratios: int,
    min_days_for_annualisation: float,
) -> LiveStatistics:
    """`LiveStatistics` from the counts, sums and means of a history (what
    `compute_statistics` and a running summary both reach): the ratio figures and their
    gates as `compute_statistics` says. Percentage points; `days` of history."""
    sharpe: float | None = None
    certainty: float | None = None
    annualized: float | None = None
    yearly: float | None = None
    if total and total >= min_trades_for_ratios:
        assert avg_pnl is not None
        if std_dev is not None and std_dev > 0:
            sharpe = _quotient(avg_pnl, std_dev)
        if avg_loss is not None:
            certainty = _quotient(avg_win or 0.0, abs(avg_loss))
        if days > 0 and days >= min_days_for_annualisation:
            trades_per_year = total / (days / DAYS_PER_YEAR)
            yearly = avg_pnl * trades_per_year
            if sharpe is not None:
                annualized = sharpe * math.sqrt(trades_per_year)

    return LiveStatistics(
        total_closed=total,
        win_count=win_count,
        loss_count=loss_count,
        win_rate=win_count / total * 100 if total else None,
        avg_pnl=avg_pnl,
        total_pnl=total_pnl,
        std_dev=std_dev,
        sharpe_ratio=sharpe,
        annualized_sharpe_ratio=annualized,
        certainty_ratio=certainty,
        expected_yearly_returns=yearly,
        max_drawdown=drawdown,
    )

"""Statistics over closed trades (SPEC §9). Expected numbers are worked out by hand below."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkit.core.running_statistics import (
    RunningStatistics,
    add_trade,
    running_statistics,
    statistics_from,
)
from bkit.core.statistics import (
    ClosedTrade,
    LiveStatistics,
    compute_statistics,
    drawdown_curve,
    equity_curve,
    history_days,
    max_drawdown,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
SPEC_RETURNS = [0.4, -0.2, 0.6, -0.4, 0.3, 0.1, -0.1, 0.5, -0.3, 0.2]
RATIO_FIELDS = (
    "sharpe_ratio",
    "annualized_sharpe_ratio",
    "certainty_ratio",
    "expected_yearly_returns",
)


Statistics = Callable[..., LiveStatistics]


def folded(trades: list[ClosedTrade], **gates: Any) -> LiveStatistics:
    """The statistics a live key keeps: its trades folded one close at a time."""
    return statistics_from(running_statistics(trades), **gates)


@pytest.fixture(params=[compute_statistics, folded], ids=["over_the_list", "running"])
def statistics(request: pytest.FixtureRequest) -> Statistics:
    """Every hand-computed check holds for both ways to the statistics."""
    return request.param  # type: ignore[no-any-return]


def make_trades(
    returns: list[float],
    *,
    spacing: timedelta = timedelta(days=1),
    duration: timedelta = timedelta(hours=1),
) -> list[ClosedTrade]:
    """Trade i opens at T0 + i × spacing and closes `duration` later."""
    return [
        ClosedTrade(
            signal_id=f"s{i}",
            symbol="BTCUSDT",
            position="long",
            pnl_percentage=pnl,
            pnl_cost=pnl,
            opened_at=T0 + i * spacing,
            closed_at=T0 + i * spacing + duration,
            close_reason="take_profit" if pnl > 0 else "stop_loss",
        )
        for i, pnl in enumerate(returns)
    ]


def test_spec_check_values(statistics: Statistics) -> None:
    stats = statistics(make_trades(SPEC_RETURNS))
    assert stats.total_closed == 10
    assert (stats.win_count, stats.loss_count) == (6, 4)
    assert stats.win_rate == pytest.approx(60.0, abs=1e-9)
    assert stats.avg_pnl == pytest.approx(0.11, abs=1e-9)
    assert stats.std_dev == pytest.approx(0.347850543, abs=1e-9)
    assert stats.sharpe_ratio == pytest.approx(0.316227766, abs=1e-9)
    assert stats.certainty_ratio == pytest.approx(1.4, abs=1e-9)


def test_spec_returns_hand_computed_rest(statistics: Statistics) -> None:
    stats = statistics(make_trades(SPEC_RETURNS))
    # 0.4 − 0.2 + 0.6 − 0.4 + 0.3 + 0.1 − 0.1 + 0.5 − 0.3 + 0.2 = 1.1
    assert stats.total_pnl == pytest.approx(1.1, abs=1e-12)
    # Running sum: 0.4 0.2 0.8 0.4 0.7 0.8 0.7 1.2 0.9 1.1 → peak 0.8, trough 0.4 after it.
    assert stats.max_drawdown == pytest.approx(0.8 - 0.4, abs=1e-12)
    # History 9 days + 1 hour < 14 days: no annualised figures.
    assert stats.annualized_sharpe_ratio is None
    assert stats.expected_yearly_returns is None


def test_std_dev_is_sample_not_population(statistics: Statistics) -> None:
    stats = statistics(make_trades([1.0, 3.0]))
    # mean 2, squared deviations 1 + 1 = 2, divided by N − 1 = 1 → √2 (population would give 1).
    assert stats.std_dev == pytest.approx(math.sqrt(2.0), abs=1e-12)


def test_annualisation_over_enough_history(statistics: Statistics) -> None:
    trades = make_trades(SPEC_RETURNS, spacing=timedelta(days=2))
    stats = statistics(trades)
    days = 9 * 2 + 1 / 24  # first open at T0, last close at T0 + 18 d + 1 h
    trades_per_year = 10 / (days / 365)
    assert history_days(trades) == pytest.approx(days, abs=1e-12)
    assert stats.annualized_sharpe_ratio == pytest.approx(
        0.316227766 * math.sqrt(trades_per_year), abs=1e-6
    )
    assert stats.expected_yearly_returns == pytest.approx(0.11 * trades_per_year, abs=1e-9)


def test_annualisation_gate_is_inclusive_at_min_days(statistics: Statistics) -> None:
    # Last trade opens 9 days after the first and lasts 5 days: exactly 14 days of history.
    trades = make_trades(SPEC_RETURNS, spacing=timedelta(days=1), duration=timedelta(days=5))
    assert history_days(trades) == pytest.approx(14.0, abs=1e-12)  # 9 d + 5 d
    assert statistics(trades).expected_yearly_returns == pytest.approx(
        0.11 * 10 / (14 / 365), abs=1e-9
    )
    shorter = make_trades(SPEC_RETURNS, duration=timedelta(days=5) - timedelta(seconds=1))
    stats = statistics(shorter)
    assert stats.expected_yearly_returns is None
    assert stats.annualized_sharpe_ratio is None
    assert stats.sharpe_ratio is not None  # only the annualised figures need the history


def test_custom_gates(statistics: Statistics) -> None:
    trades = make_trades([1.0, -1.0, 2.0], spacing=timedelta(days=10))
    stats = statistics(trades, min_trades_for_ratios=3, min_days_for_annualisation=20)
    # mean 2/3; deviations 1/3, −5/3, 4/3 → squares 1/9 + 25/9 + 16/9 = 42/9; / 2 → 7/3
    std = math.sqrt(7 / 3)
    assert stats.sharpe_ratio == pytest.approx((2 / 3) / std, abs=1e-12)
    assert stats.certainty_ratio == pytest.approx(1.5 / 1.0, abs=1e-12)
    days = 20 + 1 / 24
    assert stats.expected_yearly_returns == pytest.approx((2 / 3) * 3 * 365 / days, abs=1e-9)
    stricter = statistics(trades, min_days_for_annualisation=21)
    assert all(getattr(stricter, name) is None for name in RATIO_FIELDS)  # default 10 trades


def test_ratios_none_below_ten_trades(statistics: Statistics) -> None:
    stats = statistics(make_trades(SPEC_RETURNS[:9], spacing=timedelta(days=30)))
    for name in RATIO_FIELDS:
        assert getattr(stats, name) is None, name
    # Descriptive figures are still there: 9 trades, 5 wins (0.4 0.6 0.3 0.1 0.5).
    assert stats.win_rate == pytest.approx(5 / 9 * 100, abs=1e-12)
    assert stats.avg_pnl == pytest.approx(0.9 / 9, abs=1e-12)
    assert stats.std_dev is not None


def test_zero_pnl_is_neither_win_nor_loss(statistics: Statistics) -> None:
    stats = statistics(make_trades([0.0, 1.0, -1.0, 0.0]))
    assert (stats.total_closed, stats.win_count, stats.loss_count) == (4, 1, 1)
    assert stats.win_rate == pytest.approx(25.0, abs=1e-12)


def test_no_losses_means_no_certainty_ratio(statistics: Statistics) -> None:
    stats = statistics(make_trades([0.5, 1.0] * 5, spacing=timedelta(days=3)))
    assert stats.loss_count == 0
    assert stats.certainty_ratio is None
    assert stats.sharpe_ratio is not None
    assert stats.max_drawdown == 0.0


def test_no_wins_gives_certainty_zero(statistics: Statistics) -> None:
    stats = statistics(make_trades([-0.5, -1.0] * 5))
    assert stats.certainty_ratio == 0.0
    assert stats.win_rate == 0.0
    # Every trade is a new low: 0 → −7.5 in total.
    assert stats.max_drawdown == pytest.approx(7.5, abs=1e-12)


def test_zero_spread_means_no_sharpe_but_yearly_returns(statistics: Statistics) -> None:
    trades = make_trades([0.5] * 10, spacing=timedelta(days=3))
    stats = statistics(trades)
    assert stats.std_dev == 0.0
    assert stats.sharpe_ratio is None
    assert stats.annualized_sharpe_ratio is None
    days = 27 + 1 / 24
    assert stats.expected_yearly_returns == pytest.approx(0.5 * 10 * 365 / days, abs=1e-9)


def test_empty_and_single_trade(statistics: Statistics) -> None:
    empty = statistics([])
    assert (empty.total_closed, empty.win_count, empty.loss_count) == (0, 0, 0)
    assert empty.win_rate is None and empty.avg_pnl is None and empty.std_dev is None
    assert empty.total_pnl == 0.0 and empty.max_drawdown == 0.0
    assert all(getattr(empty, name) is None for name in RATIO_FIELDS)
    single = statistics(make_trades([-2.5]), min_trades_for_ratios=0)
    assert single.avg_pnl == -2.5 and single.total_pnl == -2.5
    assert single.std_dev is None and single.sharpe_ratio is None
    assert single.max_drawdown == pytest.approx(2.5, abs=1e-12)  # peak starts at 0


def test_drawdown_follows_close_time_not_input_order() -> None:
    # Close order +2, −1, +3, −1: running 2 1 4 3 → deepest fall 1.
    # Input order would read +2, −1, −1, +3: running 2 1 0 3 → fall 2.
    days = [1, 2, 4, 3]
    trades = [
        dataclasses.replace(trade, opened_at=T0, closed_at=T0 + timedelta(days=d))
        for trade, d in zip(make_trades([2.0, -1.0, -1.0, 3.0]), days, strict=True)
    ]
    assert max_drawdown(trades) == pytest.approx(1.0, abs=1e-12)
    assert [value for _, value in equity_curve(trades)] == pytest.approx([2.0, 1.0, 4.0, 3.0])
    assert [value for _, value in drawdown_curve(trades)] == pytest.approx([0, -1.0, 0, -1.0])


def test_trade_times_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    trade = ClosedTrade(
        "a",
        "BTCUSDT",
        "short",
        1.0,
        1.0,
        datetime(2024, 1, 1, 12),
        datetime(2024, 1, 1, 14, tzinfo=plus_two),
        "take_profit",
    )
    assert trade.opened_at == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert trade.closed_at.tzinfo is UTC and trade.closed_at.hour == 12


def test_bad_trades_are_rejected(statistics: Statistics) -> None:
    with pytest.raises(ValueError, match="before"):
        ClosedTrade("a", "X", "long", 1.0, 1.0, T0, T0 - timedelta(seconds=1), "stop_loss")
    with pytest.raises(ValueError, match="finite"):
        ClosedTrade("a", "X", "long", math.nan, 1.0, T0, T0, "stop_loss")
    with pytest.raises(ValueError):
        statistics([], min_trades_for_ratios=-1)


def test_statistics_fields_are_exactly_the_spec_fields() -> None:
    assert [f.name for f in dataclasses.fields(LiveStatistics)] == [
        "total_closed",
        "win_count",
        "loss_count",
        "win_rate",
        "avg_pnl",
        "total_pnl",
        "std_dev",
        "sharpe_ratio",
        "annualized_sharpe_ratio",
        "certainty_ratio",
        "expected_yearly_returns",
        "max_drawdown",
    ]


# --- properties -------------------------------------------------------------------------------

finite_pnl = st.floats(allow_nan=False, allow_infinity=False)
trade_specs = st.lists(
    st.tuples(finite_pnl, st.integers(0, 60 * 24 * 400), st.integers(0, 60 * 24 * 30)),
    max_size=40,
)


def _build(specs: list[tuple[float, int, int]]) -> list[ClosedTrade]:
    return [
        ClosedTrade(
            f"s{i}",
            "ETHUSDT",
            "long",
            pnl,
            pnl,
            T0 + timedelta(minutes=start),
            T0 + timedelta(minutes=start + length),
            "closed",
        )
        for i, (pnl, start, length) in enumerate(specs)
    ]


@settings(max_examples=300, deadline=None)
@given(specs=trade_specs, min_trades=st.integers(0, 12), min_days=st.floats(0, 60))
def test_any_finite_history_gives_consistent_statistics(
    specs: list[tuple[float, int, int]], min_trades: int, min_days: float
) -> None:
    trades = _build(specs)
    stats = compute_statistics(
        trades, min_trades_for_ratios=min_trades, min_days_for_annualisation=min_days
    )
    assert stats.total_closed == len(trades)
    assert stats.win_count + stats.loss_count <= stats.total_closed
    assert stats.max_drawdown >= 0
    for value in dataclasses.astuple(stats):
        assert value is None or not math.isnan(value)
    if stats.total_closed < max(min_trades, 1):
        assert all(getattr(stats, name) is None for name in RATIO_FIELDS)
    if stats.total_closed < 2:
        assert stats.std_dev is None and stats.sharpe_ratio is None
    if stats.loss_count == 0:
        assert stats.certainty_ratio is None
    days = history_days(trades)
    if days < min_days or days == 0:
        assert stats.annualized_sharpe_ratio is None and stats.expected_yearly_returns is None
    if stats.win_rate is not None:
        assert 0 <= stats.win_rate <= 100


@settings(max_examples=300, deadline=None)
@given(returns=st.lists(st.floats(-1000, 1000), min_size=1, max_size=30))
def test_drawdown_matches_brute_force(returns: list[float]) -> None:
    trades = make_trades(returns)
    running, total = [0.0], 0.0
    for value in returns:
        total += value
        running.append(total)
    # Deepest fall from any earlier point (the 0 before the first trade included) to a later one.
    expected = max(
        (running[i] - running[j] for i in range(len(running)) for j in range(i + 1, len(running))),
        default=0.0,
    )
    assert max_drawdown(trades) == pytest.approx(max(expected, 0.0), abs=1e-6)
    stats = compute_statistics(trades)
    assert stats.total_pnl == pytest.approx(total, abs=1e-6)
    assert stats.avg_pnl == pytest.approx(total / len(returns), abs=1e-6)


# --- running statistics: one close at a time ------------------------------------------------

#: Returns as trades make them: up to ±100 %, to the thousandth of a percent.
real_pnl = st.integers(-100_000, 100_000).map(lambda thousandths: thousandths / 1000)
real_trades = st.lists(
    st.tuples(real_pnl, st.integers(0, 60 * 24 * 400), st.integers(0, 60 * 24 * 30)),
    max_size=60,
)


def assert_same_statistics(running: LiveStatistics, over_list: LiveStatistics) -> None:
    """Counts and None-ness exactly; figures to 1e-9 relative (1e-12 absolute near 0)."""
    for field in dataclasses.fields(LiveStatistics):
        got, want = getattr(running, field.name), getattr(over_list, field.name)
        if want is None or isinstance(want, int):
            assert got == want, field.name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), field.name


@settings(max_examples=400, deadline=None)
@given(specs=real_trades, min_trades=st.integers(0, 12), min_days=st.floats(0, 60))
def test_folding_one_by_one_gives_compute_statistics(
    specs: list[tuple[float, int, int]], min_trades: int, min_days: float
) -> None:
    trades = _build(specs)
    gates = {"min_trades_for_ratios": min_trades, "min_days_for_annualisation": min_days}
    stats = RunningStatistics()
    for trade in sorted(trades, key=lambda t: t.closed_at):
        assert stats.in_close_order(trade.closed_at)
        stats = add_trade(stats, trade.pnl_percentage, trade.opened_at, trade.closed_at)
    assert stats == running_statistics(trades)
    assert_same_statistics(statistics_from(stats, **gates), compute_statistics(trades, **gates))


@settings(max_examples=300, deadline=None)
@given(specs=trade_specs)
def test_any_finite_history_folds_without_nan(specs: list[tuple[float, int, int]]) -> None:
    stats = statistics_from(running_statistics(_build(specs)), min_trades_for_ratios=0)
    assert stats.total_closed == len(specs)
    assert stats.max_drawdown >= 0
    for value in dataclasses.astuple(stats):
        assert value is None or not math.isnan(value)


def test_running_statistics_hold_the_hand_computed_sums() -> None:
    stats = running_statistics(make_trades([0.4, -0.2, 0.0, 0.6, -0.4]))
    assert (stats.total_closed, stats.win_count, stats.loss_count) == (5, 2, 2)
    assert stats.pnl_total == pytest.approx(0.4, abs=1e-15)
    assert stats.pnl_mean == pytest.approx(0.08, abs=1e-15)
    # deviations from 0.08: 0.32 −0.28 −0.08 0.52 −0.48 → squares sum 0.1024 + 0.0784 +
    # 0.0064 + 0.2704 + 0.2304 = 0.688
    assert stats.pnl_m2 == pytest.approx(0.688, abs=1e-15)
    assert (stats.win_sum, stats.loss_sum) == pytest.approx((1.0, -0.6), abs=1e-15)
    # running 0.4 0.2 0.2 0.8 0.4: peak 0.8, deepest fall 0.4 (after it)
    assert (stats.equity_peak, stats.max_drawdown) == pytest.approx((0.8, 0.4), abs=1e-15)
    assert (stats.first_opened_at, stats.last_closed_at) == (
        T0, T0 + timedelta(days=4, hours=1))


def test_a_close_before_the_newest_one_is_out_of_order() -> None:
    # Close order +2, −1, +3, −1 (as in the drawdown test above): deepest fall 1; folding the
    # late-booked trade in arrival order (+2, −1, −1, +3) would say 2.
    days = [1, 2, 4, 3]
    trades = [
        dataclasses.replace(trade, opened_at=T0, closed_at=T0 + timedelta(days=d))
        for trade, d in zip(make_trades([2.0, -1.0, -1.0, 3.0]), days, strict=True)
    ]
    arrival = RunningStatistics()
    for trade in trades[:3]:
        arrival = add_trade(arrival, trade.pnl_percentage, trade.opened_at, trade.closed_at)
    assert not arrival.in_close_order(trades[3].closed_at)
    assert arrival.in_close_order(trades[2].closed_at)  # a tie is in order
    late = add_trade(arrival, trades[3].pnl_percentage, trades[3].opened_at, trades[3].closed_at)
    assert late.max_drawdown == pytest.approx(2.0, abs=1e-12)
    assert running_statistics(trades).max_drawdown == pytest.approx(1.0, abs=1e-12)
    assert statistics_from(running_statistics(trades)).max_drawdown == max_drawdown(trades)


def test_a_non_finite_return_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        add_trade(RunningStatistics(), math.inf, T0, T0)
    with pytest.raises(ValueError):
        statistics_from(RunningStatistics(), min_days_for_annualisation=-1)

"""Position sizing (SPEC §11): each method and each cap with exact numbers, ATR, validation."""

from __future__ import annotations

import math

import pytest

from bkit.core.candles import Candle
from bkit.core.errors import RegistrationError
from bkit.core.sizing import (
    KELLY_MIN_CLOSED_TRADES,
    SizingSchema,
    apply_position_caps,
    atr,
    kelly_fraction,
    position_cost,
    validate_sizing,
)

#: The §9 statistics check: win rate 60 %, certainty (avg win / |avg loss|) 1.4.
SPEC_RETURNS = [0.4, -0.2, 0.6, -0.4, 0.3, 0.1, -0.1, 0.5, -0.3, 0.2]


def cost_of(outcome: float | str) -> float:
    assert isinstance(outcome, float), outcome
    return outcome


def reason_of(outcome: float | str, *words: str) -> str:
    assert isinstance(outcome, str), outcome
    for word in words:
        assert word in outcome
    return outcome


# --- methods ---------------------------------------------------------------------------------


def test_fixed_is_the_given_cost() -> None:
    sizing = validate_sizing("flat", "fixed", {"cost": 250})
    assert cost_of(position_cost(sizing, 10_000, 50_000, 49_000)) == 250


@pytest.mark.parametrize(
    ("open_", "stop", "balance", "risk", "expected"),
    [
        (50_000, 49_000, 10_000, 2, 10_000.0),  # qty = 200 / 1000 = 0.2 → 0.2 × 50 000
        (50_000, 51_000, 10_000, 2, 10_000.0),  # a short: the distance is |open − SL|
        (100, 95, 1_000, 1, 200.0),  # qty = 10 / 5 = 2 → 2 × 100
        (100, 98, 5_000, 0.5, 1_250.0),  # qty = 25 / 2 = 12.5 → 12.5 × 100
    ],
)
def test_fixed_percentage(
    open_: float, stop: float, balance: float, risk: float, expected: float
) -> None:
    sizing = validate_sizing("risk", "fixed_percentage", {"risk_percentage": risk})
    assert cost_of(position_cost(sizing, balance, open_, stop)) == pytest.approx(
        expected, rel=1e-12
    )


def test_fixed_percentage_needs_a_stop_distance() -> None:
    sizing = validate_sizing("risk", "fixed_percentage", {"risk_percentage": 2})
    reason_of(position_cost(sizing, 10_000, 100, 100), "no stop distance")
    reason_of(position_cost(sizing, 10_000, 100, math.nan), "no stop loss")


def test_kelly_fraction_on_the_spec_returns() -> None:
    # W = 0.6, R = 1.4: k = (0.6 × 1.4 − 0.4) / 1.4 = 0.44 / 1.4.
    assert kelly_fraction(SPEC_RETURNS) == pytest.approx(0.44 / 1.4, rel=1e-12)
    assert kelly_fraction(SPEC_RETURNS) == pytest.approx(0.314285714, abs=1e-9)


def test_kelly_cost() -> None:
    sizing = validate_sizing("kelly", "kelly", {})
    assert sizing.params == {"kelly_multiplier": 0.25}
    # balance × k × 0.25 = 10 000 × 0.314285714 × 0.25
    assert cost_of(position_cost(sizing, 10_000, 50_000, 49_000, SPEC_RETURNS)) == pytest.approx(
        785.714285714, abs=1e-9
    )
    half = validate_sizing("kelly-half", "kelly", {"kelly_multiplier": 0.5})
    assert cost_of(position_cost(half, 10_000, 3, 2, SPEC_RETURNS)) == pytest.approx(
        1_571.428571429, abs=1e-9
    )


def test_kelly_needs_history_and_an_edge() -> None:
    sizing = validate_sizing("kelly", "kelly")
    assert KELLY_MIN_CLOSED_TRADES == 10
    reason_of(position_cost(sizing, 10_000, 100, 95, SPEC_RETURNS[:9]), "10 closed trades", "has 9")
    reason_of(position_cost(sizing, 10_000, 100, 95, ()), "has 0")
    losing = [-0.5, 0.1] * 5  # W 0.5, R 0.2: k = (0.1 − 0.5) / 0.2 = −2
    assert kelly_fraction(losing) == pytest.approx(-2)
    reason_of(position_cost(sizing, 10_000, 100, 95, losing), "no edge")
    reason_of(position_cost(sizing, 10_000, 100, 95, [-1.0] * 10), "no edge")
    reason_of(position_cost(sizing, 10_000, 100, 95, [0.0] * 10), "no edge")


def test_kelly_without_losses_is_the_win_rate() -> None:
    # 8 wins and 2 flat trades (pnl 0 is neither): k = W = 0.8.
    returns = [0.5] * 8 + [0.0] * 2
    assert kelly_fraction(returns) == pytest.approx(0.8)
    sizing = validate_sizing("kelly", "kelly")
    assert cost_of(position_cost(sizing, 1_000, 100, 95, returns)) == pytest.approx(200)


def test_atr_method() -> None:
    sizing = validate_sizing("vol", "atr", {"risk_percentage": 1})
    assert sizing.params == {"risk_percentage": 1.0, "atr_multiplier": 2.0, "atr_period": 14.0}
    # qty = 10 000 × 1 % / (500 × 2) = 0.1 → 0.1 × 50 000
    assert cost_of(position_cost(sizing, 10_000, 50_000, 49_000, atr=500)) == pytest.approx(
        5_000, rel=1e-12
    )
    wide = validate_sizing("vol3", "atr", {"risk_percentage": 2, "atr_multiplier": 3})
    # qty = 1 000 × 2 % / (2.5 × 3) = 2.666… → × 120
    assert cost_of(position_cost(wide, 1_000, 120, 110, atr=2.5)) == pytest.approx(320, rel=1e-12)


@pytest.mark.parametrize("value", [None, 0, -1, math.nan, math.inf])
def test_atr_method_needs_an_atr(value: float | None) -> None:
    sizing = validate_sizing("vol", "atr", {"risk_percentage": 1})
    reason_of(position_cost(sizing, 10_000, 50_000, 49_000, atr=value), "no ATR")


@pytest.mark.parametrize("balance", [0, -100, math.nan, math.inf])
def test_a_non_positive_balance_is_refused(balance: float) -> None:
    for sizing in (
        validate_sizing("f", "fixed", {"cost": 10}),
        validate_sizing("p", "fixed_percentage", {"risk_percentage": 1}),
    ):
        reason_of(position_cost(sizing, balance, 100, 95), "balance")


def test_a_bad_open_price_is_refused() -> None:
    sizing = validate_sizing("f", "fixed", {"cost": 10})
    reason_of(position_cost(sizing, 1_000, 0, 95), "price_open")


# --- caps (quote cost), in order min → max % → max size -----------------------------------------


def test_min_position_size_raises_the_cost() -> None:
    sizing = validate_sizing("f", "fixed", {"cost": 5}, min_position_size=10)
    assert cost_of(position_cost(sizing, 1_000, 100, 95)) == 10


def test_max_position_percentage_caps_at_a_share_of_balance() -> None:
    sizing = validate_sizing(
        "p", "fixed_percentage", {"risk_percentage": 2}, max_position_percentage=10
    )
    # uncapped 10 000; capped at 10 % of 10 000
    assert cost_of(position_cost(sizing, 10_000, 50_000, 49_000)) == pytest.approx(1_000)


def test_max_position_size_caps_the_cost() -> None:
    sizing = validate_sizing(
        "p",
        "fixed_percentage",
        {"risk_percentage": 2},
        max_position_percentage=10,
        max_position_size=800,
    )
    assert cost_of(position_cost(sizing, 10_000, 50_000, 49_000)) == pytest.approx(800)


def test_the_maxima_win_over_the_minimum() -> None:
    by_share = validate_sizing(
        "f", "fixed", {"cost": 5}, min_position_size=2_000, max_position_percentage=10
    )
    assert cost_of(position_cost(by_share, 10_000, 100, 95)) == pytest.approx(1_000)
    by_size = validate_sizing(
        "f", "fixed", {"cost": 5}, min_position_size=1_000, max_position_size=1_000
    )
    assert cost_of(position_cost(by_size, 10_000, 100, 95)) == pytest.approx(1_000)
    sizing = SizingSchema(
        "raw", "fixed", {"cost": 5}, min_position_size=2_000, max_position_size=1_500
    )  # not validated: order still holds
    assert apply_position_caps(sizing, 5, 10_000) == 1_500


def test_caps_leave_a_cost_inside_them_alone() -> None:
    sizing = validate_sizing(
        "f",
        "fixed",
        {"cost": 300},
        min_position_size=100,
        max_position_percentage=50,
        max_position_size=400,
    )
    assert cost_of(position_cost(sizing, 1_000, 100, 95)) == 300


# --- ATR ---------------------------------------------------------------------------------------


def candle(minute: int, high: float, low: float, close: float) -> Candle:
    return Candle(minute * 60_000, close, high, low, close, 1.0)


CANDLES = [
    candle(0, 10, 8, 9),
    candle(1, 11, 9, 10),  # TR max(2, 2, 0) = 2
    candle(2, 12, 10, 11),  # TR 2
    candle(3, 14, 11, 13),  # TR max(3, 3, 0) = 3 → first ATR(3) = 7/3
    candle(4, 13, 9, 10),  # TR max(4, 0, 4) = 4 → (7/3 × 2 + 4) / 3 = 26/9
    candle(5, 20, 19, 19.5),  # gap: TR max(1, 10, 9) = 10 → (26/9 × 2 + 10) / 3 = 142/27
]


def test_atr_is_wilders_average_true_range() -> None:
    assert atr(CANDLES[:4], period=3) == pytest.approx(7 / 3, rel=1e-15)
    assert atr(CANDLES[:5], period=3) == pytest.approx(26 / 9, rel=1e-15)
    assert atr(CANDLES, period=3) == pytest.approx(142 / 27, rel=1e-15)
    assert atr(CANDLES, period=5) == pytest.approx((2 + 2 + 3 + 4 + 10) / 5, rel=1e-15)


def test_atr_needs_period_plus_one_candles() -> None:
    assert atr(CANDLES[:3], period=3) is None
    assert atr(CANDLES) is None  # 6 candles, default period 14
    with pytest.raises(ValueError):
        atr(CANDLES, period=0)


def test_atr_feeds_the_atr_method() -> None:
    sizing = validate_sizing("vol", "atr", {"risk_percentage": 1, "atr_period": 3})
    value = atr(CANDLES, period=int(sizing.params["atr_period"]))
    # qty = 1 000 × 1 % / (142/27 × 2) → × 19.5
    assert cost_of(position_cost(sizing, 1_000, 19.5, 18, atr=value)) == pytest.approx(
        10 / (142 / 27 * 2) * 19.5, rel=1e-12
    )


# --- registration ------------------------------------------------------------------------------


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(RegistrationError, match="unknown method 'martingale'"):
        validate_sizing("x", "martingale", {})


@pytest.mark.parametrize(
    ("method", "params", "caps", "words"),
    [
        ("fixed", {}, {}, "fixed needs cost"),
        ("fixed", {"cost": 0}, {}, "cost must be > 0"),
        ("fixed", {"cost": 10, "risk_percentage": 1}, {}, "unknown params ['risk_percentage']"),
        ("fixed_percentage", {}, {}, "needs risk_percentage"),
        ("fixed_percentage", {"risk_percentage": 0}, {}, "risk_percentage must be in (0, 100]"),
        ("fixed_percentage", {"risk_percentage": 150}, {}, "risk_percentage must be in (0, 100]"),
        ("fixed_percentage", {"risk_percentage": "2"}, {}, "must be a finite number"),
        ("kelly", {"kelly_multiplier": 0}, {}, "kelly_multiplier must be > 0"),
        ("kelly", {"kelly_multiplier": 1.5}, {}, "kelly_multiplier must be ≤ 1"),
        ("atr", {"risk_percentage": 1, "atr_multiplier": -2}, {}, "atr_multiplier must be > 0"),
        ("atr", {"risk_percentage": 1, "atr_period": 2.5}, {}, "atr_period must be a whole"),
        ("fixed", {"cost": 10}, {"min_position_size": -1}, "min_position_size must be ≥ 0"),
        ("fixed", {"cost": 10}, {"max_position_size": 0}, "max_position_size must be > 0"),
        ("fixed", {"cost": 10}, {"max_position_percentage": 0}, "max_position_percentage must be"),
        (
            "fixed",
            {"cost": 10},
            {"max_position_percentage": 101},
            "max_position_percentage must be",
        ),
        (
            "fixed",
            {"cost": 10},
            {"min_position_size": 5, "max_position_size": 4},
            "must not exceed",
        ),
        ("fixed", {"cost": 10}, {"max_position_size": math.nan}, "finite number or None"),
    ],
)
def test_bad_params_are_clear_errors(
    method: str, params: dict[str, float], caps: dict[str, float], words: str
) -> None:
    with pytest.raises(RegistrationError) as raised:
        validate_sizing("s", method, params, **caps)
    assert words in str(raised.value)
    assert "sizing 's'" in str(raised.value)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(RegistrationError) as raised:
        validate_sizing("", "atr", {"atr_multiplier": 0, "bogus": 1})
    message = str(raised.value)
    for words in ("sizing_name", "bogus", "needs risk_percentage", "atr_multiplier must be > 0"):
        assert words in message


def test_validated_schema_carries_caps_as_floats() -> None:
    sizing = validate_sizing(
        "s",
        "fixed",
        {"cost": 10},
        min_position_size=1,
        max_position_percentage=20,
        max_position_size=50,
    )
    assert sizing == SizingSchema("s", "fixed", {"cost": 10.0}, 1.0, 20.0, 50.0)

"""PnL with slippage and fees (SPEC §5): the worked values, exactly."""

from __future__ import annotations

import pytest

from bkit.core.config import Config
from bkit.core.pnl import Pnl, compute_pnl, pnl_for

# (position, entry, close, pnl %) — the worked values written in SPEC §5.
SPEC_VALUES = [
    ("long", 50_000, 52_000, 3.588415584),
    ("long", 50_000, 46_000, -8.375632368),
    ("long", 50_000, 50_000, -0.399600400),
    ("short", 50_000, 48_000, 3.611615616),
    ("long", 100, 110, 9.570439560),
    ("short", 100, 90, 9.629639640),
]


@pytest.mark.parametrize(("position", "entry", "close", "expected"), SPEC_VALUES)
def test_spec_worked_values(position: str, entry: float, close: float, expected: float) -> None:
    pnl = compute_pnl(position, entry, close, 100, slippage_percent=0.1, fee_percent=0.1)
    assert pnl.pnl_percentage == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("position", "entry", "close", "expected"), SPEC_VALUES)
def test_pnl_for_uses_the_default_config(
    position: str, entry: float, close: float, expected: float
) -> None:
    pnl = pnl_for(position, entry, close, 100, Config())
    assert pnl.pnl_percentage == pytest.approx(expected, abs=1e-9)
    assert pnl.price_open == entry
    assert pnl.price_close == close


@pytest.mark.parametrize(
    ("cost", "expected_cost"),
    [
        (100, 3.588415584),  # 3.588415584 % of 100 USD
        (250, 8.97103896),  # 3.588415584 % of 250 USD
        (1_000, 35.88415584),
    ],
)
def test_pnl_cost_is_percentage_of_cost(cost: float, expected_cost: float) -> None:
    pnl = compute_pnl("long", 50_000, 52_000, cost, slippage_percent=0.1, fee_percent=0.1)
    assert pnl.pnl_cost == pytest.approx(expected_cost, abs=1e-8)
    assert pnl.pnl_cost == pytest.approx(pnl.pnl_percentage / 100 * cost, abs=1e-12)


def test_losing_pnl_cost_is_negative() -> None:
    pnl = compute_pnl("long", 50_000, 46_000, 200, slippage_percent=0.1, fee_percent=0.1)
    assert pnl.pnl_cost == pytest.approx(-16.751264736, abs=1e-8)


def test_without_slippage_and_fee_pnl_is_the_plain_move() -> None:
    assert compute_pnl(
        "long", 100, 110, 100, slippage_percent=0, fee_percent=0
    ).pnl_percentage == pytest.approx(10.0, abs=1e-12)
    assert compute_pnl(
        "short", 100, 90, 100, slippage_percent=0, fee_percent=0
    ).pnl_percentage == pytest.approx(10.0, abs=1e-12)
    assert compute_pnl(
        "short", 100, 110, 100, slippage_percent=0, fee_percent=0
    ).pnl_percentage == pytest.approx(-10.0, abs=1e-12)


def test_fee_is_charged_on_both_legs() -> None:
    # No slippage: gross 10 %, fee 0.1 × (1 + 110/100) = 0.21 → 9.79 %.
    pnl = compute_pnl("long", 100, 110, 100, slippage_percent=0, fee_percent=0.1)
    assert pnl.pnl_percentage == pytest.approx(9.79, abs=1e-12)


def test_slippage_alone_moves_both_prices_against_the_trader() -> None:
    # s = 1 %: open_adj 101, close_adj 99 → (99 − 101)/101 × 100 = −1.98019802 %.
    pnl = compute_pnl("long", 100, 100, 100, slippage_percent=1, fee_percent=0)
    assert pnl.pnl_percentage == pytest.approx(-200 / 101, abs=1e-12)
    # short: open_adj 99, close_adj 101 → (99 − 101)/99 × 100.
    pnl = compute_pnl("short", 100, 100, 100, slippage_percent=1, fee_percent=0)
    assert pnl.pnl_percentage == pytest.approx(-200 / 99, abs=1e-12)


def test_pnl_for_takes_slippage_and_fee_from_config() -> None:
    config = Config(CC_PERCENT_SLIPPAGE=0, CC_PERCENT_FEE=0.1)
    assert pnl_for("long", 100, 110, 100, config).pnl_percentage == pytest.approx(9.79, abs=1e-12)


def test_pnl_is_a_plain_record() -> None:
    pnl = compute_pnl("short", 100, 90, 50, slippage_percent=0.1, fee_percent=0.1)
    assert pnl == Pnl(pnl.pnl_percentage, pnl.pnl_cost, 100, 90)
    assert pnl.pnl_cost == pytest.approx(9.629639640 / 2, abs=1e-9)


@pytest.mark.parametrize("position", ["buy", "LONG", "", None])
def test_unknown_position_is_rejected(position: object) -> None:
    with pytest.raises(ValueError, match="position"):
        compute_pnl(
            position,
            100,
            110,
            100,
            slippage_percent=0.1,  # type: ignore[arg-type]
            fee_percent=0.1,
        )

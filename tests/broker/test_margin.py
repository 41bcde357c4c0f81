"""The pure margin arithmetic of `bkit.core.margin` (SPEC §10), with exact numbers."""

from __future__ import annotations

import pytest

from bkit.core.margin import (
    contracts_for_cost,
    initial_margin,
    liquidation_price,
    notional,
    stop_beyond_liquidation,
)


def test_liquidation_price_long_and_short() -> None:
    # long: (q·E − M)/(q·(1 − r)) with M = q·E/L; 0.1 BTC at 50,000, 5x, r = 0.4 %
    assert liquidation_price("long", 50000, 5, 0.004, contracts=0.1) == pytest.approx(
        (5000 - 1000) / (0.1 * 0.996), abs=1e-9)
    assert round(liquidation_price("long", 50000, 5, 0.004), 8) == 40160.64257028
    # short: (q·E + M)/(q·(1 + r))
    assert liquidation_price("short", 50000, 10, 0.004) == pytest.approx(55000 / 1.004)
    # the amount cancels out when M = q·E/L; it matters with an explicit margin
    assert liquidation_price("long", 50000, 5, 0.004, contracts=3) == pytest.approx(
        liquidation_price("long", 50000, 5, 0.004))
    assert liquidation_price("long", 50000, 5, 0.004, contracts=0.1, margin=500) == \
        pytest.approx(4500 / 0.0996)
    assert liquidation_price("long", 50000, 5, 0.004, contracts=1, contract_size=0.1,
                             margin=500) == pytest.approx(4500 / 0.0996)


def test_a_one_x_long_is_never_liquidated() -> None:
    assert liquidation_price("long", 50000, 1, 0.004) == 0.0
    assert stop_beyond_liquidation("long", 50000, 1, 1, 0.004) is None
    assert liquidation_price("short", 50000, 1, 0.004) == pytest.approx(100000 / 1.004)


def test_stop_beyond_liquidation_is_refused() -> None:
    reason = stop_beyond_liquidation("long", 50000, 40000, 5, 0.004)
    assert reason is not None and "liquidation price 40160.64257" in reason
    assert "5x" in reason and "long" in reason
    assert stop_beyond_liquidation("long", 50000, 40160.64, 5, 0.004) is not None  # at = beyond
    assert stop_beyond_liquidation("long", 50000, 41000, 5, 0.004) is None
    # a short's SL lies above: beyond liquidation is higher still
    liq = 60000 / 1.004
    assert stop_beyond_liquidation("short", 50000, 60000, 5, 0.004) is not None
    assert stop_beyond_liquidation("short", 50000, liq - 1, 5, 0.004) is None
    assert stop_beyond_liquidation("short", 50000, 55000, 20, 0.004) is not None  # 52290.8


@pytest.mark.parametrize(("cost", "price", "size", "step", "contracts"), [
    (1000, 50000, 1, 0.001, 0.02),
    (1234.5, 50000, 1, 0.001, 0.024),  # 0.02469 floored
    (1000, 50000, 10, 0.001, 0.002),   # 10 BTC a contract
    (0.3, 0.1, 1, 1, 3.0),             # 0.3 / 0.1 is 2.9999999999999996 in binary floats
    (100, 3, 1, 0.01, 33.33),
    (99, 50000, 1, 0.001, 0.001),
    (49, 50000, 1, 0.001, 0.0),        # less than one step
    (1000, 3, 1, None, 1000 / 3),
])
def test_contracts_from_a_quote_cost(cost: float, price: float, size: float,
                                     step: float | None, contracts: float) -> None:
    assert contracts_for_cost(cost, price, size, step) == pytest.approx(contracts, abs=0, rel=1e-15)


def test_margin_and_notional() -> None:
    assert initial_margin(0.1, 50000, 5) == 1000.0
    assert notional(0.002, 50000, 10) == 1000.0


@pytest.mark.parametrize("call", [
    lambda: liquidation_price("flat", 50000, 5, 0.004),
    lambda: liquidation_price("long", 0, 5, 0.004),
    lambda: liquidation_price("long", 50000, 0.5, 0.004),
    lambda: liquidation_price("long", 50000, 5, 1.0),
    lambda: liquidation_price("long", float("nan"), 5, 0.004),
    lambda: stop_beyond_liquidation("long", 50000, -1, 5, 0.004),
    lambda: contracts_for_cost(0, 50000),
    lambda: contracts_for_cost(100, float("inf")),
])
def test_bad_inputs_raise(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]

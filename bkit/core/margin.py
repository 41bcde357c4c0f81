"""Margin arithmetic of a linear (USDT-margined) futures position (SPEC §10). Pure, no I/O.

Isolated margin, Binance's rule as the venue model computes it: a position of `q` contracts
(of `contract_size` base units) entered at `E` with leverage `L` holds the margin
`M = q·s·E / L`; with the maintenance margin rate `r` it is liquidated when the mark price
reaches

    long:  (q·s·E − M) / (q·s·(1 − r))  =  E·(1 − 1/L) / (1 − r)
    short: (q·s·E + M) / (q·s·(1 + r))  =  E·(1 + 1/L) / (1 + r)

(fees, funding and Binance's per-bracket maintenance amount left out). An SL beyond that
price can never act: the venue liquidates first, so it is refused at entry.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

POSITIONS = ("long", "short")


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _check(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}")


def _check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ValueError(f"position must be 'long' or 'short', got {position!r}")


def _check_common(position: str, entry: float, leverage: float, mmr: float) -> None:
    _check_position(position)
    _check("entry", entry)
    _check("leverage", leverage)
    if leverage < 1:
        raise ValueError(f"leverage must be >= 1, got {leverage!r}")
    _check("maintenance margin rate", mmr, allow_zero=True)
    if mmr >= 1:
        raise ValueError(f"maintenance margin rate must be below 1, got {mmr!r}")


def initial_margin(contracts: float, entry: float, leverage: float,
                   contract_size: float = 1.0) -> float:
    """`M = contracts · contract_size · entry / leverage` (quote units)."""
    _check("contracts", contracts)
    _check("entry", entry)
    _check("leverage", leverage)
    _check("contract_size", contract_size)
    return contracts * contract_size * entry / leverage


def liquidation_price(position: str, entry: float, leverage: float, mmr: float, *,
                      contracts: float = 1.0, contract_size: float = 1.0,
                      margin: float | None = None) -> float:
    """The isolated-margin liquidation price of a `position` ("long" | "short") entered at
    `entry` with `leverage`, maintenance margin rate `mmr` (0.004 = 0.4 %).

    `margin` is the position's isolated margin when known (default `q·s·E / leverage`; with
    it, `contracts` and `contract_size` matter). Never below 0: a 1x long is never liquidated
    (0.0)."""
    _check_common(position, entry, leverage, mmr)
    _check("contracts", contracts)
    _check("contract_size", contract_size)
    size = contracts * contract_size
    held = size * entry / leverage if margin is None else margin
    _check("margin", held, allow_zero=True)
    if position == "long":
        price = (size * entry - held) / (size * (1 - mmr))
    else:
        price = (size * entry + held) / (size * (1 + mmr))
    return max(0.0, price)


def stop_beyond_liquidation(position: str, entry: float, stop: float, leverage: float,
                            mmr: float) -> str | None:
    """SPEC §10: why a stop-loss at `stop` must be refused (it lies at or beyond the
    liquidation price, so the venue would liquidate the position before the stop could act),
    or None when the stop is on the safe side of it."""
    _check_common(position, entry, leverage, mmr)
    _check("stop", stop)
    liquidation = liquidation_price(position, entry, leverage, mmr)
    beyond = stop <= liquidation if position == "long" else stop >= liquidation
    if not beyond:
        return None
    return (f"stop-loss {stop:.10g} is beyond the liquidation price {liquidation:.10g} of a "
            f"{position} entered at {entry:.10g} with {leverage:g}x leverage (maintenance "
            f"margin {mmr * 100:.4g} %): the venue would liquidate the position before the "
            f"stop could act; lower the leverage or move the stop-loss "
            f"{'above' if position == 'long' else 'below'} {liquidation:.10g}")


def contracts_for_cost(cost: float, price: float, contract_size: float = 1.0,
                       step: float | None = None) -> float:
    """Contracts bought by a notional of `cost` quote units at `price`:
    `cost / (price × contract_size)` floored to the venue's amount `step` (exact in decimal;
    0.0 when less than one step)."""
    _check("cost", cost)
    _check("price", price)
    _check("contract_size", contract_size)
    amount = _dec(cost) / (_dec(price) * _dec(contract_size))
    if step is not None and step > 0:
        d_step = _dec(step)
        amount = (amount / d_step).to_integral_value(rounding=ROUND_FLOOR) * d_step
    return float(amount)


def notional(contracts: float, price: float, contract_size: float = 1.0) -> float:
    """Quote value of `contracts` at `price`."""
    return contracts * contract_size * price

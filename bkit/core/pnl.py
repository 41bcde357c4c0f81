"""Profit and loss of a closed (or marked) position with slippage and fees (SPEC §5). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from bkit.core.config import Config


@dataclass(frozen=True, slots=True)
class Pnl:
    """PnL of one trade. `pnl_percentage` in %, `pnl_cost` in USD, prices as traded."""

    pnl_percentage: float
    pnl_cost: float
    price_open: float
    price_close: float


def compute_pnl(
    position: str,
    price_open: float,
    price_close: float,
    cost: float,
    *,
    slippage_percent: float,
    fee_percent: float,
) -> Pnl:
    """PnL per SPEC §5.

    long : open_adj = E(1+s), close_adj = C(1−s), gross = (close_adj − open_adj)/open_adj × 100
    short: open_adj = E(1−s), close_adj = C(1+s), gross = (open_adj − close_adj)/open_adj × 100
    pnl_percentage = gross − f × (1 + close_adj/open_adj);  pnl_cost = pnl_percentage/100 × cost
    with s = slippage_percent / 100 and f = fee_percent (a per cent value, 0.1 by default).
    """
    s = slippage_percent / 100
    f = fee_percent
    if position == "long":
        open_adj = price_open * (1 + s)
        close_adj = price_close * (1 - s)
        gross = (close_adj - open_adj) / open_adj * 100
    elif position == "short":
        open_adj = price_open * (1 - s)
        close_adj = price_close * (1 + s)
        gross = (open_adj - close_adj) / open_adj * 100
    else:
        raise ValueError(f"position must be 'long' or 'short', got {position!r}")
    pnl_percentage = gross - f * (1 + close_adj / open_adj)
    return Pnl(pnl_percentage, pnl_percentage / 100 * cost, price_open, price_close)


def pnl_for(position: str, price_open: float, price_close: float, cost: float,
            config: Config) -> Pnl:
    """`compute_pnl` with the slippage and fee of `config`."""
    return compute_pnl(position, price_open, price_close, cost,
                       slippage_percent=config.CC_PERCENT_SLIPPAGE,
                       fee_percent=config.CC_PERCENT_FEE)

"""SPEC §5 written out again for the tests, independent of `bkit.core.pnl`."""

from __future__ import annotations


def spec_pnl(position: str, entry: float, close: float) -> float:
    """PnL in % with the default costs: s = 0.1 % slippage, f = 0.1 fee."""
    s, f = 0.001, 0.1
    if position == "long":
        open_adj, close_adj = entry * (1 + s), close * (1 - s)
        gross = (close_adj - open_adj) / open_adj * 100
    else:
        open_adj, close_adj = entry * (1 - s), close * (1 + s)
        gross = (open_adj - close_adj) / open_adj * 100
    return gross - f * (1 + close_adj / open_adj)

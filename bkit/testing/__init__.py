"""Test utilities shipped with bkit (a fake exchange server). Not used by product code."""

from bkit.testing.fake_exchange import (
    DEFAULT_MARKETS,
    FakeExchange,
    FakeOrder,
    Fault,
    MarketSpec,
    point_ccxt_at,
    read_candles_csv,
    synthetic_candles,
)

__all__ = [
    "DEFAULT_MARKETS",
    "FakeExchange",
    "FakeOrder",
    "Fault",
    "MarketSpec",
    "point_ccxt_at",
    "read_candles_csv",
    "synthetic_candles",
]

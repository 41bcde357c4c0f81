"""Strategies for the ops tests: `BKIT_STRATEGIES=tests.ops.strategies_ops` (cwd = repo root).

Two paper exchanges replay the real candles shipped with bkit (both series on one market
clock, as in `bkit.demo`); `ops-trend` enters long every minute it is flat (TP +0.6 %,
SL −0.6 %, 4 minutes) so trades open and close quickly; `ops-quiet` never signals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from bkit.core.candles import Candle
from bkit.core.registry import REGISTRY, add_strategy
from bkit.exchange.paper import add_paper_exchange, shipped_series

EXCHANGE = "ops-paper"
OTHER_EXCHANGE = "ops-paper-2"
STRATEGY = "ops-trend"
QUIET = "ops-quiet"
SYMBOLS = ("XRP/ETH", "UNITTEST/BTC")
#: A market instant inside both series, with candles in the minutes before it.
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)


@lru_cache(maxsize=1)
def series() -> dict[str, list[Candle]]:
    return shipped_series()


def trend_signal(symbol: str, when: datetime, current_price: float) -> dict:
    """Always long: TP +0.6 %, SL −0.6 %, closed by time after 4 minutes at the latest."""
    return {"position": "long", "price_take_profit": current_price * 1.006,
            "price_stop_loss": current_price * 0.994, "minute_estimated_time": 4,
            "note": "ops test entry", "cost": 0.1}


def quiet_signal(symbol: str, when: datetime, current_price: float) -> None:
    return None


def register() -> None:
    """Register the exchanges and strategies (idempotent for tests that clear the registry)."""
    if STRATEGY in REGISTRY.strategies:
        return
    add_paper_exchange(EXCHANGE, series=series())
    add_paper_exchange(OTHER_EXCHANGE, series=series())
    add_strategy(STRATEGY, trend_signal, interval="1m", note="ops: always long")
    add_strategy(QUIET, quiet_signal, interval="1m", note="ops: never signals")


register()

"""Strategies for the admin-script fuzz test (BKIT_STRATEGIES=tests.e2e.fuzz_strategies).

Two paper exchanges that serve only XRP/ETH (so an unknown symbol is detectable before any
write, and `--exchange` is required), a strategy that always enters long and one that never
signals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from bkit.clock import ManualClock
from bkit.core.candles import Candle
from bkit.core.registry import add_strategy
from bkit.exchange.paper import add_paper_exchange, load_csv, sample_csv_path

EXCHANGES = ("fz-paper", "fz-paper-2")
STRATEGIES = ("fz-trend", "fz-quiet")
SYMBOL = "XRP/ETH"


@lru_cache(maxsize=1)
def series() -> dict[str, list[Candle]]:
    return {SYMBOL: load_csv(sample_csv_path(), SYMBOL)}


def trend_signal(symbol: str, when: datetime, current_price: float) -> dict:
    """Always long: TP +0.6 %, SL −0.6 %, 4 minutes."""
    return {"position": "long", "price_take_profit": current_price * 1.006,
            "price_stop_loss": current_price * 0.994, "minute_estimated_time": 4, "cost": 0.1}


def quiet_signal(symbol: str, when: datetime, current_price: float) -> None:
    return None


for name in EXCHANGES:
    add_paper_exchange(name, clock=ManualClock(datetime(2019, 10, 14, tzinfo=UTC)),
                       series=series())
add_strategy(STRATEGIES[0], trend_signal, interval="1m", note="fuzz: always long")
add_strategy(STRATEGIES[1], quiet_signal, interval="1m", note="fuzz: never signals")

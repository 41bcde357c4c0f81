"""Strategy module of the soak (BKIT_STRATEGIES=tests.e2e.soak_strategies): a paper exchange
replaying the two shipped real candle series (symbol i uses series i % 2, the 2017 one shifted
onto the 2019 clock) and a mean-reversion strategy trading both sides. Orders go through the
paper broker when BKIT_ORDER_BROKER=paper."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from bkit.core.registry import add_strategy
from bkit.exchange.paper import PaperExchange, add_paper_exchange, shipped_series


def series_of(symbol: str) -> str:
    """Symbol `S<n>` replays the XRP series for even n, the BTC one for odd n."""
    digits = "".join(ch for ch in symbol if ch.isdigit()) or "0"
    return ("XRP", "BTC")[int(digits) % 2]


_shipped = shipped_series()
exchange: PaperExchange = add_paper_exchange("soak-paper", series={
    "XRP": _shipped["XRP/ETH"], "BTC": _shipped["UNITTEST/BTC"]},
                                              symbol_map=series_of)


def get_signal(symbol: str, when: datetime, price: float) -> dict | None:
    candles = exchange.get_candles(symbol, "1m", when - timedelta(minutes=30), 30)
    if len(candles) < 10:
        return None
    mean = statistics.fmean(c.close for c in candles)
    if price < mean * 0.998:
        return {"position": "long", "price_take_profit": price * 1.006,
                "price_stop_loss": price * 0.994, "minute_estimated_time": 60,
                "cost": 0.1}  # in the quote coin (ETH or BTC)
    if price > mean * 1.002:
        return {"position": "short", "price_take_profit": price * 0.994,
                "price_stop_loss": price * 1.006, "minute_estimated_time": 60,
                "cost": 0.1}
    return None


add_strategy("soak", get_signal, interval="5m")

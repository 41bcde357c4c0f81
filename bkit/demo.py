"""The demo strategy module (`BKIT_STRATEGIES=bkit.demo`): a paper exchange replaying the
real candles shipped with bkit and a small mean-reversion strategy. `bkit demo` runs it
through a real worker and beat on the embedded default."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from bkit.core.candles import MINUTE_MS, to_ms
from bkit.core.registry import add_strategy
from bkit.exchange.paper import PaperExchange, add_paper_exchange, shipped_series

DEMO_EXCHANGE = "paper"
DEMO_STRATEGY = "demo-mean-reversion"
DEMO_SYMBOLS = ("XRP/ETH", "UNITTEST/BTC")
STRATEGY_RULE = ("strategy: every 5 minutes, fade a 0.3 % stretch of the price (VWAP of the "
                 "last 5 closed candles) from the 30-minute mean close: TP 0.8 %, SL 0.6 %, "
                 "90 minutes")


exchange: PaperExchange = add_paper_exchange(DEMO_EXCHANGE, series=shipped_series())


def get_signal(symbol: str, when: datetime, current_price: float) -> dict | None:
    """Fade a 0.3 % stretch from the 30-minute mean close: TP 0.8 %, SL 0.6 %, 90 minutes."""
    # Only candles closed before `when`: on a replay clock running ahead of the tick (a late
    # tick) the exchange serves later ones too, and the answer would depend on the delay.
    candles = [c for c in exchange.get_candles(symbol, "1m", when - timedelta(minutes=30), 30)
               if c.timestamp + MINUTE_MS <= to_ms(when)]
    if len(candles) < 10:
        return None
    mean = statistics.fmean(c.close for c in candles)
    if current_price < mean * 0.997:
        return {"position": "long", "price_take_profit": current_price * 1.008,
                "price_stop_loss": current_price * 0.994, "minute_estimated_time": 90,
                "note": "below 30m mean"}
    if current_price > mean * 1.003:
        return {"position": "short", "price_take_profit": current_price * 0.992,
                "price_stop_loss": current_price * 1.006, "minute_estimated_time": 90,
                "note": "above 30m mean"}
    return None


add_strategy(DEMO_STRATEGY, get_signal, interval="5m",
             note="demo: fade 0.3 % stretches from the 30-minute mean")


def replay_start() -> datetime:
    """Where the demo's market clock starts: 4 hours into the samples. XRP/ETH is quiet in
    its first hours (its price first strays 0.3 % from its 30-minute mean at 04:46), so
    an earlier start showed UNITTEST/BTC trading alone."""
    return max(exchange.span(s)[0] for s in DEMO_SYMBOLS) + timedelta(hours=4)

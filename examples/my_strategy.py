"""My first bkit strategy (README "Quickstart").

A paper exchange that replays the real XRP/ETH candles shipped with bkit, and a momentum
strategy: when the last 5 minutes closed 0.25 % above the 15 minutes before them, go long
(TP +0.8 %, SL −0.6 %, at most 2 hours); the mirror image goes short.

Workers import it through `BKIT_STRATEGIES=examples.my_strategy` (run from the repo root).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from statistics import fmean

from bkit import add_strategy
from bkit.exchange.paper import add_paper_exchange, shipped_series

EXCHANGE = "my-paper"
STRATEGY = "my-momentum"
SYMBOL = "XRP/ETH"

# Replays the candles shipped with bkit (XRP/ETH, UNITTEST/BTC), only those that closed
# before "now": run it on the replay clock (examples/run_embedded.sh sets it).
exchange = add_paper_exchange(EXCHANGE, series=shipped_series())


def get_signal(symbol: str, when: datetime, current_price: float) -> dict | None:
    """A long or short entry at market, or None. Prices are in quote currency."""
    candles = exchange.get_candles(symbol, "1m", when - timedelta(minutes=20), 20)
    if len(candles) < 20:
        return None  # a gap in the data: wait for a full window
    before = fmean(c.close for c in candles[:15])
    recent = fmean(c.close for c in candles[15:])
    change = (recent - before) / before * 100
    if change > 0.25:
        return {"position": "long", "price_take_profit": current_price * 1.008,
                "price_stop_loss": current_price * 0.994, "minute_estimated_time": 120,
                "note": f"momentum +{change:.2f} %"}
    if change < -0.25:
        return {"position": "short", "price_take_profit": current_price * 0.992,
                "price_stop_loss": current_price * 1.006, "minute_estimated_time": 120,
                "note": f"momentum {change:.2f} %"}
    return None


add_strategy(STRATEGY, get_signal, interval="5m", note="5/15-minute momentum, paper")

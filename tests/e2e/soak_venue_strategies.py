"""Strategy module of the soak on the venue model (BKIT_STRATEGIES=
tests.e2e.soak_venue_strategies): the real ccxt binance client on the soak's venue
(SOAK_VENUE_URL, markets loaded from it), orders through the ccxt broker, the mean-reversion
strategy of the paper soak trading both sides, with an explicit cost in the quote coin."""

from __future__ import annotations

import os
import statistics
from datetime import datetime, timedelta

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import add_strategy, set_config
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

set_config(CC_ORDER_SETTLE_SECONDS=3)  # above the venue's 0.5 s lookup lag

exchange = add_ccxt_exchange("binance", exchange_name="soak-venue",
                             api_base_url=os.environ["SOAK_VENUE_URL"], timeout_ms=5_000,
                             options={"fetchMarkets": ["spot"]})  # the venue is spot only
Broker.use("soak-venue", CcxtBroker(exchange))


def get_signal(symbol: str, when: datetime, price: float) -> dict | None:
    candles = exchange.get_candles(symbol, "1m", when - timedelta(minutes=30), 30)
    if len(candles) < 10:
        return None
    mean = statistics.fmean(c.close for c in candles)
    cost = 0.1  # ETH or BTC: the quote coin of every soak market
    if price < mean * 0.998:
        return {"position": "long", "price_take_profit": price * 1.006,
                "price_stop_loss": price * 0.994, "minute_estimated_time": 60, "cost": cost}
    if price > mean * 1.002:
        return {"position": "short", "price_take_profit": price * 0.994,
                "price_stop_loss": price * 1.006, "minute_estimated_time": 60, "cost": cost}
    return None


add_strategy("soak", get_signal, interval="5m")

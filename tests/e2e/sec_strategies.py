"""Strategies for the security tests (BKIT_STRATEGIES=tests.e2e.sec_strategies): the real ccxt
binance client pointed at the test's fake exchange (FAKE_EXCHANGE_URL), orders through the ccxt
broker, API key and secret from BKIT_FAKEBIN_API_KEY / BKIT_FAKEBIN_SECRET (canaries)."""

from __future__ import annotations

import os
from datetime import datetime

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import add_strategy, set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

EXCHANGE, STRATEGY = "fakebin", "sec-long"

# The venue answers at once here: a short settle window keeps the tests quick (SPEC §8).
# The kind fake exchange has no stop orders: the tick alone watches the stop-loss.
set_config(CC_ORDER_SETTLE_SECONDS=3, CC_EXCHANGE_STOP=False)

exchange = add_ccxt_exchange(
    "binance", exchange_name=EXCHANGE, markets=MARKETS_DIR / "binance_markets.json",
    api_base_url=os.environ["FAKE_EXCHANGE_URL"], timeout_ms=2_000, candle_cache=None)
Broker.use(EXCHANGE, CcxtBroker(exchange))


def long_signal(symbol: str, when: datetime, price: float) -> dict:
    """Always long at market: TP +0.6 %, SL −0.6 %, 30 minutes."""
    return {"position": "long", "price_take_profit": price * 1.006,
            "price_stop_loss": price * 0.994, "minute_estimated_time": 30,
            "note": "security test entry", "cost": 0.1}


add_strategy(STRATEGY, long_signal, interval="1m", note="security: always long")

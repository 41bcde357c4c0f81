"""Strategies for the orders tests (BKIT_STRATEGIES=tests.integration.strategies_orders): the
real ccxt binance client pointed at the test's fake exchange server (FAKE_EXCHANGE_URL), its
orders through the ccxt broker."""

from __future__ import annotations

import os
from datetime import datetime

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import add_strategy, set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

# The venue answers at once here: a short settle window keeps the tests quick (SPEC §8).
# The kind fake exchange has no stop orders: the tick alone watches the stop-loss.
set_config(CC_ORDER_SETTLE_SECONDS=3, CC_EXCHANGE_STOP=False)

exchange = add_ccxt_exchange(
    "binance", exchange_name="fakebin", markets=MARKETS_DIR / "binance_markets.json",
    api_base_url=os.environ["FAKE_EXCHANGE_URL"], timeout_ms=2_000, candle_cache=None)
Broker.use("fakebin", CcxtBroker(
    exchange, entry_order_type=os.environ.get("ORDERS_ENTRY_TYPE", "market")))


def long_signal(symbol: str, when: datetime, price: float) -> dict:
    return {"position": "long", "price_take_profit": price * 1.006,
            "price_stop_loss": price * 0.994, "minute_estimated_time": 30,
            "cost": 0.1}  # ETH: XRP/ETH is quoted in ETH (SPEC §8: no default USD cost)


add_strategy("ord-long", long_signal, interval="1m")

"""Loaded by the orders benchmark's worker: the real ccxt binance client on the venue model
(FAKE_EXCHANGE_URL), orders through the ccxt broker."""

from __future__ import annotations

import os

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

set_config(CC_ORDER_SETTLE_SECONDS=5)  # above the venue's lookup lag

exchange = add_ccxt_exchange(
    "binance", exchange_name="fakebin", markets=MARKETS_DIR / "binance_markets.json",
    api_base_url=os.environ["FAKE_EXCHANGE_URL"], timeout_ms=5_000, candle_cache=None)
Broker.use("fakebin", CcxtBroker(exchange))

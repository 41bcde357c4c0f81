"""Strategy module of the position-command crash tests (BKIT_STRATEGIES=
tests.e2e.position_crash_strategies): one long on BTC/USDT through the real ccxt binance
client on the test's venue (FAKE_EXCHANGE_URL), wide TP/SL and a long life so the position
is still open when the test commits a partial; exchange-side stops on."""

from __future__ import annotations

import os
from datetime import datetime

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import add_strategy, set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

set_config(CC_ORDER_SETTLE_SECONDS=3, CC_EXCHANGE_STOP=True)

exchange = add_ccxt_exchange(
    "binance", exchange_name="pcbin", markets=MARKETS_DIR / "binance_markets.json",
    api_base_url=os.environ["FAKE_EXCHANGE_URL"], timeout_ms=2_000, candle_cache=None)
Broker.use("pcbin", CcxtBroker(exchange))


def pc_long(symbol: str, when: datetime, price: float) -> dict:
    return {"position": "long", "price_take_profit": price * 1.1,
            "price_stop_loss": price * 0.9, "minute_estimated_time": 1440, "cost": 500.0}


add_strategy("pc-long", pc_long)

"""Strategy module of the crash matrix and soak workers (BKIT_STRATEGIES=
tests.e2e.crash_strategies): the real ccxt binance client on the test's fake exchange
(FAKE_EXCHANGE_URL), orders through the ccxt broker, a shared risk budget."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from bkit.broker import Broker
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.core.registry import add_risk, add_strategy, set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange

# The venue answers at once here: a short settle window keeps the tests quick (SPEC §8).
set_config(CC_ORDER_SETTLE_SECONDS=3)

exchange = add_ccxt_exchange(
    "binance", exchange_name="fakebin", markets=MARKETS_DIR / "binance_markets.json",
    api_base_url=os.environ["FAKE_EXCHANGE_URL"], timeout_ms=2_000, candle_cache=None)
Broker.use("fakebin", CcxtBroker(exchange))
add_risk("crash-risk", max_concurrent_positions=10)


def _slow_once() -> None:
    """With CRASH_SLOW_TICK_SECONDS set, the first tick anywhere sleeps past the hard time
    limit (once per BKIT_HOME)."""
    seconds = float(os.environ.get("CRASH_SLOW_TICK_SECONDS", "0"))
    if not seconds:
        return
    marker = Path(os.environ["BKIT_HOME"]) / "slow-tick-done"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(seconds)


def crash_long(symbol: str, when: datetime, price: float) -> dict:
    # A 3-minute life: every case waits for closes and re-entries after its fault, and
    # those come no sooner than one life after the entries.
    _slow_once()
    return {"position": "long", "price_take_profit": price * 1.005,
            "price_stop_loss": price * 0.995, "minute_estimated_time": 3, "cost": 0.1}


add_strategy("crash-long", crash_long, risk_name="crash-risk")

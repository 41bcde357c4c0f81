"""Strategies the CLI tests import with `--module` (as BKIT_STRATEGIES would)."""

from __future__ import annotations

from datetime import UTC, datetime

from bkit import add_strategy, set_config
from bkit.clock import ManualClock
from bkit.core.registry import REGISTRY
from bkit.exchange.paper import add_paper_exchange, shipped_series
from tests.backtest import strategies

if "csv" not in REGISTRY.exchanges:
    add_paper_exchange("csv", clock=ManualClock(datetime(2019, 10, 14, tzinfo=UTC)),
                       series=shipped_series())
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4, CC_MIN_STOPLOSS_DISTANCE_PERCENT=0.4)
    add_strategy("cli-long", strategies.market_long, interval="15m")
    add_strategy("cli-short", strategies.limit_short, interval="5m")

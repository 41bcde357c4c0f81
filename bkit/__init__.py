"""bkit: a live-trading engine for crypto strategies, run as a distributed Celery system.

The public API of SPEC §1. Nothing heavy happens at import time; the Celery app lives in
`bkit.celery` (`celery -A bkit worker` finds it).
"""

from __future__ import annotations

from typing import Any

from bkit.backtest import Backtest, add_frame, listen_done_backtest, listen_signal_backtest
from bkit.core.candles import Candle
from bkit.core.config import Config
from bkit.core.errors import (
    BkitError,
    ConfigError,
    RegistrationError,
    SignalValidationError,
    UnknownNameError,
)
from bkit.core.registry import (
    add_exchange,
    add_risk,
    add_sizing,
    add_strategy,
    get_config,
    set_config,
    set_logger,
)
from bkit.core.signals import Signal
from bkit.events import (
    listen_breakeven,
    listen_done_live,
    listen_error,
    listen_exit,
    listen_partial_loss,
    listen_partial_profit,
    listen_performance,
    listen_risk,
    listen_signal,
    listen_signal_live,
)

__all__ = [
    "BkitError", "Candle", "Config", "ConfigError", "Live", "RegistrationError", "Signal",
    "SignalValidationError", "UnknownNameError", "add_exchange", "add_risk", "add_sizing",
    "add_strategy",
    "get_config", "listen_breakeven", "listen_done_live", "listen_error", "listen_exit",
    "listen_partial_loss", "listen_partial_profit", "listen_performance", "listen_risk",
    "listen_signal", "listen_signal_live", "set_config", "set_logger",
]
__all__ += ["Backtest", "add_frame", "listen_done_backtest", "listen_signal_backtest"]


def __getattr__(name: str) -> Any:
    if name == "Live":  # imported lazily: it pulls in SQLAlchemy and the store
        from bkit.live import Live

        return Live
    raise AttributeError(f"module 'bkit' has no attribute {name!r}")

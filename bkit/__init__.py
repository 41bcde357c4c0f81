"""bkit: a live-trading engine for crypto strategies, run as a distributed Celery system.

The public API of SPEC §1. Nothing heavy happens at import time; the Celery app lives in
`bkit.celery` (`celery -A bkit worker` finds it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from bkit.backtest import Backtest, add_frame, listen_done_backtest, listen_signal_backtest
    from bkit.live import Live

__all__ = [
    "BkitError", "Candle", "Config", "ConfigError", "Live", "RegistrationError", "Signal",
    "SignalValidationError", "UnknownNameError", "add_exchange", "add_risk", "add_sizing",
    "add_strategy",
    "get_config", "listen_breakeven", "listen_done_live", "listen_error", "listen_exit",
    "listen_partial_loss", "listen_partial_profit", "listen_performance", "listen_risk",
    "listen_signal", "listen_signal_live", "set_config", "set_logger",
]
__all__ += ["Backtest", "add_frame", "listen_done_backtest", "listen_signal_backtest"]


#: Names imported on first use: `Live` pulls in SQLAlchemy and the store, the backtest names
#: the backtest engine and reports (~140 ms), which a worker, a `bkit` command or a strategy
#: module that only registers itself does not need.
_LAZY = {"Live": "bkit.live", "Backtest": "bkit.backtest", "add_frame": "bkit.backtest",
         "listen_done_backtest": "bkit.backtest", "listen_signal_backtest": "bkit.backtest"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

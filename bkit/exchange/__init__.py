"""Exchanges: ccxt venues, the error hierarchy, the shared candle cache and candle checks.

Names are loaded on first use, so `import bkit.exchange.paper` does not pay for ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # errors
    "ExchangeError": "errors",
    "TransientExchangeError": "errors",
    "DefinitiveExchangeError": "errors",
    "OrderNotFoundError": "errors",
    "UnknownExchangeError": "errors",
    "MissingCredentialsError": "errors",
    "DEFINITIVE_KINDS": "errors",
    "translate_ccxt_error": "errors",
    # ccxt venues
    "CcxtExchange": "ccxt_exchange",
    "ExchangeOrder": "ccxt_exchange",
    "MarketLimits": "ccxt_exchange",
    "add_ccxt_exchange": "ccxt_exchange",
    "reset_clients": "ccxt_exchange",
    "load_markets_file": "ccxt_exchange",
    "MARKETS_DIR": "ccxt_exchange",
    # candle cache
    "CandleCache": "candle_cache",
    "CandleWindow": "candle_cache",
    "SharedCandleCache": "candle_cache",
    "MemoryCandleCache": "candle_cache",
    "RedisCandleCache": "candle_cache",
    "SqlCandleCache": "candle_cache",
    "CachedCandleBatch": "candle_cache",
    "CachingCandleSource": "candle_cache",
    "cached_get_candles": "candle_cache",
    "last_cache_outcome": "candle_cache",
    # checks
    "check_outliers": "candle_checks",
}

__all__ = [
    "DEFINITIVE_KINDS",
    "MARKETS_DIR",
    "CachedCandleBatch",
    "CachingCandleSource",
    "CandleCache",
    "CandleWindow",
    "CcxtExchange",
    "DefinitiveExchangeError",
    "ExchangeError",
    "ExchangeOrder",
    "MarketLimits",
    "MemoryCandleCache",
    "MissingCredentialsError",
    "OrderNotFoundError",
    "RedisCandleCache",
    "SharedCandleCache",
    "SqlCandleCache",
    "TransientExchangeError",
    "UnknownExchangeError",
    "add_ccxt_exchange",
    "cached_get_candles",
    "check_outliers",
    "last_cache_outcome",
    "load_markets_file",
    "reset_clients",
    "translate_ccxt_error",
]

if TYPE_CHECKING:
    from bkit.exchange.candle_cache import (
        CachedCandleBatch,
        CachingCandleSource,
        CandleCache,
        CandleWindow,
        MemoryCandleCache,
        RedisCandleCache,
        SharedCandleCache,
        SqlCandleCache,
        cached_get_candles,
        last_cache_outcome,
    )
    from bkit.exchange.candle_checks import check_outliers
    from bkit.exchange.ccxt_exchange import (
        MARKETS_DIR,
        CcxtExchange,
        ExchangeOrder,
        MarketLimits,
        add_ccxt_exchange,
        load_markets_file,
        reset_clients,
    )
    from bkit.exchange.errors import (
        DEFINITIVE_KINDS,
        DefinitiveExchangeError,
        ExchangeError,
        MissingCredentialsError,
        OrderNotFoundError,
        TransientExchangeError,
        UnknownExchangeError,
        translate_ccxt_error,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bkit.exchange' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bkit.exchange.{module}"), name)
    globals()[name] = value
    return value

"""Pointing the real `ccxt.binance` client at a venue on another host (this one, in tests).

`point_ccxt_at` rewrites every API URL of a ccxt client to a base URL; `binance_client` builds
a spot-only `ccxt.binance` aimed at a venue with one exchangeInfo call per `load_markets`;
`futures_client` a `ccxt.binanceusdm` likewise (one `fapi/v1/exchangeInfo` call).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: ccxt options that cut `load_markets` to one `api/v3/exchangeInfo` call (spot only).
SPOT_ONLY_OPTIONS: dict[str, Any] = {"fetchMarkets": ["spot"], "fetchCurrencies": False,
                                     "fetchMargins": False}


def point_ccxt_at(exchange: Any, base_url: str) -> None:
    """Point a ccxt client at `base_url` (e.g. ``http://127.0.0.1:8123``).

    Every entry of `exchange.urls['api']` (binance has 22, nested dicts are walked) keeps its path
    and gets the new scheme and host, so `/api/v3/klines` stays `/api/v3/klines`. Time-difference
    adjustment is switched off so no extra `/time` request is made before signed calls.
    """
    target = urlsplit(base_url)

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            parts = urlsplit(value)
            return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, ""))
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        return value

    exchange.urls["api"] = rewrite(exchange.urls["api"])
    exchange.options["adjustForTimeDifference"] = False


def binance_client(base_url: str, api_key: str = "venue-key", secret: str = "venue-secret",
                   timeout_ms: int = 10_000, **config: Any) -> Any:
    """A `ccxt.binance` client (spot only, no rate limiter) pointed at the venue at `base_url`."""
    import ccxt

    options = {**SPOT_ONLY_OPTIONS, **config.pop("options", {})}
    client = ccxt.binance({"apiKey": api_key, "secret": secret, "enableRateLimit": False,
                           "timeout": timeout_ms, "options": options, **config})
    point_ccxt_at(client, base_url)
    return client


#: ccxt options that cut a `binanceusdm` `load_markets` to one `fapi/v1/exchangeInfo` call.
FUTURES_OPTIONS: dict[str, Any] = {"fetchMarkets": {"types": ["linear"]},
                                   "fetchCurrencies": False, "fetchMargins": False}


def futures_client(base_url: str, api_key: str = "venue-key", secret: str = "venue-secret",
                   timeout_ms: int = 10_000, **config: Any) -> Any:
    """A `ccxt.binanceusdm` client (USDⓈ-M only, no rate limiter) pointed at the venue."""
    import ccxt

    options = {**FUTURES_OPTIONS, **config.pop("options", {})}
    client = ccxt.binanceusdm({"apiKey": api_key, "secret": secret, "enableRateLimit": False,
                               "timeout": timeout_ms, "options": options, **config})
    point_ccxt_at(client, base_url)
    return client

"""A ready bkit exchange on top of any ccxt venue (sync ccxt, one client per process).

`CcxtExchange` pages candles past the venue's per-request limit, formats prices and amounts with
the market's precision, reports order limits and places/fetches/cancels orders by client order
id. Every ccxt call goes through `_call`, which turns ccxt exceptions into the bkit hierarchy of
`bkit.exchange.errors`; nothing above this module sees a raw ccxt exception.

Credentials come from the environment only: `BKIT_<EXCHANGE_NAME>_API_KEY`, `..._SECRET` and,
for venues that need one, `..._PASSWORD` (a `.env` file is loaded into the environment by the
config layer). They live inside the ccxt client, never in `repr()`, logs or error messages.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import ccxt

from bkit.core.candles import CANDLE_INTERVAL_MINUTES, Candle, parse_candle, parse_candles, to_ms
from bkit.exchange.candle_checks import DEFAULT_MAX_DEVIATION, check_outliers
from bkit.exchange.errors import (
    DefinitiveExchangeError,
    MissingCredentialsError,
    UnknownExchangeError,
    translate_ccxt_error,
)

logger = logging.getLogger(__name__)

#: Market fixtures shipped with bkit for offline use: one JSON list of ccxt unified markets per
#: venue. `binance_markets.json` is ccxt 4.5's parse of hand-written binance exchangeInfo
#: entries with real 2024 filters (`bkit.testing.fake_exchange.DEFAULT_MARKETS`).
MARKETS_DIR = Path(__file__).with_name("markets")
DEFAULT_TIMEOUT_MS = 10_000
FALLBACK_PAGE_LIMIT = 500
#: ccxt options bkit sets unless the caller overrides them: no currency or margin endpoints
#: (signed, heavy, and not needed to trade spot candles and orders).
DEFAULT_OPTIONS: dict[str, Any] = {"fetchCurrencies": False, "fetchMargins": False}

#: What a garbled venue answer can raise inside ccxt besides its own errors. Anything else
#: (e.g. Celery's SoftTimeLimitExceeded) passes through untouched.
_UNEXPECTED_ANSWER: tuple[type[Exception], ...] = (
    KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError, OSError)

MarketsInput = str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]]
T = TypeVar("T")

_instances: weakref.WeakSet[CcxtExchange] = weakref.WeakSet()


class _SecretScrubber(logging.Filter):
    """Masks API keys and secrets in log records: ccxt logs every request's headers (with the
    API key) at DEBUG level."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, ()
        return True


_scrubber = _SecretScrubber()
#: The logger every ccxt client built here logs its HTTP traffic to, credentials masked.
http_logger = logging.getLogger("bkit.exchange.http")
http_logger.addFilter(_scrubber)


def reset_clients() -> None:
    """Drop every process-local ccxt client; the next call builds a fresh one.

    Connect it to Celery's `worker_process_init` (the per-pid slot already rebuilds after a fork;
    this also drops clients created before the pool started). Cached markets are kept.
    """
    for exchange in list(_instances):
        exchange._drop_client()


def env_prefix(exchange_name: str) -> str:
    """`BKIT_<NAME>_` for an exchange name: upper case, anything not A-Z/0-9 becomes `_`."""
    return "BKIT_" + re.sub(r"[^A-Z0-9]", "_", exchange_name.upper()) + "_"


def load_markets_file(source: MarketsInput) -> list[dict[str, Any]]:
    """ccxt markets from a list, a symbol→market dict, JSON text or a JSON file path."""
    data: Any = source
    if isinstance(source, Path) or (isinstance(source, str) and source.lstrip()[:1] not in "[{"):
        data = json.loads(Path(source).read_text())
    elif isinstance(source, str):
        data = json.loads(source)
    items: list[Any] = list(data.values()) if isinstance(data, Mapping) else list(data)
    if not items or not all(isinstance(m, Mapping) and "symbol" in m for m in items):
        raise ValueError("markets must be a non-empty list of ccxt market dicts with a 'symbol'")
    return [dict(m) for m in items]


def _check_positive(operation: str, symbol: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{operation}({symbol!r}, {value!r}): expected a finite number > 0")


@dataclass(frozen=True, slots=True)
class MarketLimits:
    """What an order must respect on one market. Amounts in base units, costs in quote units.

    `amount_step` / `price_step` are the smallest increments when the venue's precision is a
    tick size or a number of decimals (None for significant-digit venues); None = no limit.
    """

    symbol: str
    min_amount: float | None
    max_amount: float | None
    min_cost: float | None
    max_cost: float | None
    min_price: float | None
    max_price: float | None
    amount_step: float | None
    price_step: float | None


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """An order as the venue reports it (ccxt unified fields). Times in ms since epoch, UTC.

    `status` is ccxt's: "open", "closed" (filled), "canceled", "expired" or "rejected".
    """

    order_id: str
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    status: str
    amount: float | None
    filled: float | None
    price: float | None
    average: float | None
    timestamp: int | None
    raw: dict[str, Any]

    @classmethod
    def from_ccxt(cls, order: Mapping[str, Any]) -> ExchangeOrder:
        return cls(str(order.get("id")), order.get("clientOrderId"), str(order.get("symbol")),
                   str(order.get("side")), str(order.get("type")), str(order.get("status")),
                   order.get("amount"), order.get("filled"), order.get("price"),
                   order.get("average"), order.get("timestamp"), dict(order))


class CcxtExchange:
    """One ccxt venue, ready for `add_exchange` (see `add_ccxt_exchange`).

    `timeout_ms` (ms) bounds each HTTP request; keep it below the tick's soft time limit.
    `page_limit` defaults to the venue's documented candles-per-request maximum (binance 1000).
    `max_deviation` (fraction) is the outlier check of `candle_checks` (None switches it off).
    `api_urls` replaces entries of ccxt's `urls['api']`; `api_base_url` points every entry at one
    host (the fake exchange in tests). `env` replaces `os.environ` as the credential source.
    """

    def __init__(self, exchange_id: str, *, exchange_name: str | None = None,
                 sandbox: bool = False, markets: MarketsInput | None = None,
                 api_urls: Mapping[str, Any] | None = None, api_base_url: str | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, options: Mapping[str, Any] | None = None,
                 page_limit: int | None = None,
                 max_deviation: float | None = DEFAULT_MAX_DEVIATION,
                 env: Mapping[str, str] | None = None) -> None:
        if exchange_id not in ccxt.exchanges:
            close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownExchangeError(f"ccxt has no exchange {exchange_id!r}{hint}",
                                       exchange_name=exchange_name or exchange_id)
        if timeout_ms < 100:
            raise ValueError(f"timeout_ms must be >= 100 ms, got {timeout_ms}")
        self.exchange_id = exchange_id
        self.exchange_name = exchange_name or exchange_id
        self.sandbox = sandbox
        self.timeout_ms = timeout_ms
        self.max_deviation = max_deviation
        self._api_urls = dict(api_urls or {})
        self._api_base_url = api_base_url
        self._options = {**DEFAULT_OPTIONS, **(options or {})}
        self._page_limit = page_limit
        self._env = env
        self._lock = threading.RLock()
        self._client: Any = None
        self._client_pid = 0
        self._markets: list[dict[str, Any]] | None = None
        if markets is not None:
            self.set_markets(markets)
        _instances.add(self)

    def __repr__(self) -> str:
        return (f"CcxtExchange(exchange_name={self.exchange_name!r}, "
                f"exchange_id={self.exchange_id!r}, sandbox={self.sandbox}, "
                f"credentials={'set' if self._credentials()[0] else 'missing'})")

    def __getstate__(self) -> dict[str, Any]:
        """Settings and cached markets only: a copy builds its own client, and reads its
        credentials from `os.environ` (an explicit `env` mapping is never serialised)."""
        state = dict(self.__dict__)
        state.update(_lock=None, _client=None, _client_pid=0, _env=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        _instances.add(self)

    # client and markets -----------------------------------------------------------------------
    @property
    def env_prefix(self) -> str:
        return env_prefix(self.exchange_name)

    def _credentials(self) -> tuple[str, str, str]:
        env = os.environ if self._env is None else self._env
        prefix = self.env_prefix
        return (env.get(prefix + "API_KEY", ""), env.get(prefix + "SECRET", ""),
                env.get(prefix + "PASSWORD", ""))

    def _drop_client(self) -> None:
        with self._lock:
            self._client, self._client_pid = None, 0

    @property
    def client(self) -> Any:
        """This process's ccxt client, built on first use and again after a fork."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client, self._client_pid = self._build_client(), os.getpid()
            return self._client

    def _build_client(self) -> Any:
        api_key, secret, password = self._credentials()
        _scrubber.secrets.update(s for s in (api_key, secret, password) if s)
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": self.timeout_ms,
                                  "options": dict(self._options), "logger": http_logger}
        config |= {k: v for k, v in (("apiKey", api_key), ("secret", secret),
                                     ("password", password)) if v}
        client = getattr(ccxt, self.exchange_id)(config)
        if self.sandbox:
            self._call("set_sandbox_mode", lambda: client.set_sandbox_mode(True), client)
        if self._api_urls:
            client.urls["api"] = {**client.urls["api"], **self._api_urls}
        if self._api_base_url:
            from bkit.testing.fake_exchange import point_ccxt_at

            point_ccxt_at(client, self._api_base_url)
        if self._markets is not None:
            client.set_markets(self._markets)
        return client

    def set_markets(self, markets: MarketsInput) -> None:
        """Use these markets (no network): a list, a dict, JSON text or a JSON file path."""
        loaded = load_markets_file(markets)
        with self._lock:
            self._markets = loaded
            if self._client is not None:
                self._client.set_markets(loaded)

    def _markets_client(self) -> Any:
        """The client, with markets loaded: fetched once per `CcxtExchange`, then reused by
        every client it builds (after a fork, after `reset_clients`)."""
        with self._lock:
            client = self.client
            if self._markets is None:
                self._call("load_markets", client.load_markets, client)
                self._markets = list(client.markets.values())
            return client

    def load_markets(self) -> dict[str, Any]:
        """The markets by symbol (ccxt market dicts), loaded once and cached."""
        return dict(self._markets_client().markets)

    def _market(self, symbol: str) -> dict[str, Any]:
        markets = self._markets_client().markets
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DefinitiveExchangeError(
                f"{self.exchange_name}: no market {symbol!r}{hint}", kind="bad_symbol",
                exchange_name=self.exchange_name, operation="market")
        return dict(markets[symbol])

    @property
    def page_limit(self) -> int:
        """Most candles one request returns (binance 1000)."""
        if self._page_limit:
            return self._page_limit
        features = getattr(self.client, "features", None) or {}
        limit = ((features.get("spot") or {}).get("fetchOHLCV") or {}).get("limit")
        return int(limit) if limit else FALLBACK_PAGE_LIMIT

    def _call(self, operation: str, fn: Callable[[], T], client: Any = None) -> T:
        """Run one ccxt call; any exception leaves as a bkit `ExchangeError`."""
        try:
            return fn()
        except (ccxt.BaseError, *_UNEXPECTED_ANSWER) as exc:
            secrets = [s for s in self._credentials() if s]
            error = translate_ccxt_error(exc, self.exchange_name, operation,
                                         client if client is not None else self._client, secrets)
        logger.info("%s", error.message)
        raise error

    # candles and formatting -------------------------------------------------------------------
    def get_candles(self, symbol: str, interval: str, since: datetime, limit: int) -> list[Candle]:
        """Up to `limit` candles of `interval` opening at or after `since` (UTC), oldest first.

        Pages past the venue's per-request limit, dedupes and sorts the pages, then validates
        them (`parse_candles`, plus the outlier check). Gaps are kept as the venue reports them.
        """
        if interval not in CANDLE_INTERVAL_MINUTES:
            raise ValueError(f"unknown interval {interval!r}; use one of "
                             f"{', '.join(CANDLE_INTERVAL_MINUTES)}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._market(symbol)
        client, step = self._markets_client(), CANDLE_INTERVAL_MINUTES[interval] * 60_000
        since_ms = cursor = to_ms(since)
        by_time: dict[int, Candle] = {}

        def fetch_page(start_ms: int, count: int) -> list[list[Any]]:
            return self._call("get_candles",
                              lambda: client.fetch_ohlcv(symbol, interval, start_ms, count),
                              client)

        while len(by_time) < limit:
            want = min(self.page_limit, limit - len(by_time))
            page = fetch_page(cursor, want)
            candles = [parse_candle(row, symbol) for row in page]
            for candle in candles:
                if candle.timestamp >= since_ms:
                    by_time.setdefault(candle.timestamp, candle)
            if len(page) < want:
                break  # the venue has nothing newer yet
            newest = max(c.timestamp for c in candles)
            if newest < cursor:
                break
            cursor = newest + step
        result = parse_candles((by_time[t] for t in sorted(by_time)[:limit]), symbol)
        if self.max_deviation is not None:
            check_outliers(result, symbol, self.max_deviation)
        return result

    def format_price(self, symbol: str, value: float) -> str:
        """`value` (quote units) rounded to the market's price tick, as the string to send.

        ValueError for a value that is not a finite number > 0; `DefinitiveExchangeError`
        (kind "invalid_order") when it rounds to nothing (below one tick).
        """
        _check_positive("format_price", symbol, value)
        client = self._markets_client()
        self._market(symbol)
        return self._call("format_price", lambda: client.price_to_precision(symbol, value))

    def format_quantity(self, symbol: str, value: float) -> str:
        """`value` (base units) truncated to the market's amount step, as the string to send.

        Same errors as `format_price` (below one step: kind "invalid_order").
        """
        _check_positive("format_quantity", symbol, value)
        client = self._markets_client()
        self._market(symbol)
        return self._call("format_quantity", lambda: client.amount_to_precision(symbol, value))

    def market_limits(self, symbol: str) -> MarketLimits:
        """Minimum/maximum amount, cost (notional, quote units) and price, and the steps."""
        market = self._market(symbol)
        limits, precision = market.get("limits") or {}, market.get("precision") or {}
        mode = self.client.precisionMode

        def step(value: Any) -> float | None:
            if value is None or mode == ccxt.SIGNIFICANT_DIGITS:
                return None
            return float(value) if mode == ccxt.TICK_SIZE else 10.0 ** -float(value)

        def bound(name: str, edge: str) -> float | None:
            value = (limits.get(name) or {}).get(edge)
            return None if value is None else float(value)

        return MarketLimits(symbol, bound("amount", "min"), bound("amount", "max"),
                            bound("cost", "min"), bound("cost", "max"), bound("price", "min"),
                            bound("price", "max"), step(precision.get("amount")),
                            step(precision.get("price")))

    # orders -----------------------------------------------------------------------------------
    def _private_client(self, operation: str) -> Any:
        client = self.client
        if not (client.apiKey and client.secret):
            api_key, secret, password = self._credentials()
            if not (api_key and secret):
                prefix = self.env_prefix
                raise MissingCredentialsError(
                    f"{self.exchange_name} {operation} needs API credentials: set "
                    f"{prefix}API_KEY and {prefix}SECRET in the environment (or .env)",
                    exchange_name=self.exchange_name, operation=operation)
            _scrubber.secrets.update(s for s in (api_key, secret, password) if s)
            client.apiKey, client.secret = api_key, secret
            client.password = password or client.password
        return client

    def create_order(self, symbol: str, type: str, side: str, amount: float | str,
                     price: float | str | None = None,
                     client_order_id: str | None = None,
                     extra: Mapping[str, Any] | None = None) -> ExchangeOrder:
        """Place one order. Never retried here: a `TransientExchangeError` means "unknown
        outcome", so look the order up by `client_order_id` before sending it again.
        `extra`: ccxt params (e.g. `triggerPrice` for a stop-loss-limit)."""
        self._market(symbol)
        client = self._private_client("create_order")
        params = {"clientOrderId": client_order_id} if client_order_id else {}
        params.update(extra or {})
        order = self._call("create_order", lambda: client.create_order(
            symbol, type, side, float(amount), None if price is None else float(price), params),
            client)
        return ExchangeOrder.from_ccxt(order)

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        """The order placed under `client_order_id`; `OrderNotFoundError` if the venue has none."""
        self._market(symbol)
        client = self._private_client("fetch_order")
        order = self._call("fetch_order", lambda: client.fetch_order(
            None, symbol, {"clientOrderId": client_order_id}), client)
        return ExchangeOrder.from_ccxt(order)

    def cancel_order_by_client_id(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        """Cancel the open order `client_order_id`; `OrderNotFoundError` if none is open."""
        self._market(symbol)
        client = self._private_client("cancel_order")
        order = self._call("cancel_order", lambda: client.cancel_order(
            None, symbol, {"clientOrderId": client_order_id}), client)
        return ExchangeOrder.from_ccxt(order)

    def fetch_open_orders(self, symbol: str) -> list[ExchangeOrder]:
        """Every open order on `symbol` (for reconciliation)."""
        self._market(symbol)
        client = self._private_client("fetch_open_orders")
        orders = self._call("fetch_open_orders", lambda: client.fetch_open_orders(symbol),
                            client)
        return [ExchangeOrder.from_ccxt(o) for o in orders]


    def fetch_order_trades(self, symbol: str, order_id: str) -> list[dict[str, Any]]:
        """The account's trades of one order (ccxt unified trades, with `fee`)."""
        self._market(symbol)
        client = self._private_client("fetch_my_trades")
        return list(self._call("fetch_my_trades", lambda: client.fetch_my_trades(
            symbol, None, None, {"orderId": order_id}), client))

    def order_types(self, symbol: str) -> set[str]:
        """The order types the venue lists for `symbol` (Binance's `orderTypes`)."""
        info = self._market(symbol).get("info") or {}
        return {str(t).upper() for t in info.get("orderTypes") or []}

    def fetch_balance(self) -> dict[str, tuple[float, float]]:
        """Every asset's (free, total) in the account."""
        client = self._private_client("fetch_balance")
        balance = self._call("fetch_balance", lambda: client.fetch_balance(), client)
        out: dict[str, tuple[float, float]] = {}
        for asset, free in (balance.get("free") or {}).items():
            total = (balance.get("total") or {}).get(asset)
            out[asset] = (float(free or 0.0), float(total if total is not None else free or 0.0))
        return out


def add_ccxt_exchange(exchange_id: str, exchange_name: str | None = None, sandbox: bool = False,
                      markets: MarketsInput | None = None,
                      api_urls: Mapping[str, Any] | None = None, *,
                      candle_cache: Any = "auto", note: str = "", **options: Any
                      ) -> CcxtExchange:
    """Build a `CcxtExchange` and register it with `bkit.core.registry.add_exchange`.

    `options` go to `CcxtExchange` (`timeout_ms`, `options`, `api_base_url`, `page_limit`…).
    With a `candle_cache` (see `bkit.exchange.candle_cache`), closed candle windows are fetched
    once per window for every strategy and worker sharing that cache. The default "auto"
    shares through Redis when the broker is Redis, else through the database; None disables.
    """
    from bkit.core.registry import add_exchange

    if candle_cache == "auto":
        from bkit.exchange.default_cache import SettingsCandleCache

        candle_cache = SettingsCandleCache()

    exchange = CcxtExchange(exchange_id, exchange_name=exchange_name, sandbox=sandbox,
                            markets=markets, api_urls=api_urls, **options)
    get_candles: Callable[..., list[Candle]] = exchange.get_candles
    if candle_cache is not None:
        from bkit.exchange.candle_cache import CachingCandleSource

        get_candles = CachingCandleSource(candle_cache, exchange.exchange_name,
                                          exchange.get_candles)
    add_exchange(exchange.exchange_name, get_candles, format_price=exchange.format_price,
                 format_quantity=exchange.format_quantity,
                 note=note or f"ccxt {exchange_id}{' (sandbox)' if sandbox else ''}",
                 source=exchange)
    return exchange

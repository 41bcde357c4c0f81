"""A candle cache shared by strategies and workers: one upstream request per closed window.

A window is (exchange, symbol, interval, first open time, count): the candles opening in
`[start, start + count × interval)`. Once every candle of a window has closed, its content never
changes, so it is cached (with a TTL) and served to every asker. A window that still contains the
forming candle is never cached: `cached_get_candles` passes it straight to the exchange.

Three backends share one single-flight algorithm (`SharedCandleCache.get_or_fill`): the first
asker takes a short lock (`SET NX PX` in Redis), fetches and stores; the others poll briefly and
read the stored value. A failed fetch is remembered for a moment so 100 waiters get the same
clear error instead of 100 more requests to a struggling venue. If the backend itself is down
(Redis restart, database gone) the call falls through to the exchange (via an in-process cache)
and logs a warning: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import BigInteger, Column, Text, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, SQLModel

from bkit.core.candles import (
    CANDLE_INTERVAL_MINUTES,
    MINUTE_MS,
    Candle,
    CandleError,
    parse_candles,
    to_ms,
)
from bkit.core.recent import put_recent
from bkit.exchange.errors import DefinitiveExchangeError, ExchangeError, TransientExchangeError

logger = logging.getLogger(__name__)

DEFAULT_TTL_MS = 3_600_000  # a closed window stays cached for an hour
DEFAULT_LOCK_MS = 15_000  # longest a fetching leader may hold a window (> the request timeout)
DEFAULT_WAIT_MS = 20_000  # longest a waiter polls before fetching by itself
DEFAULT_FAILURE_TTL_MS = 2_000  # how long a failed fetch is answered from its note
DEFAULT_SETTLE_MS = 2_000  # clock-skew margin before a window counts as closed
DEFAULT_BACKEND_RETRY_S = 5.0  # after a backend error, skip the backend this long

_outcome = threading.local()

FetchCandles = Callable[[str, str, datetime, int], Sequence[Any]]


def last_cache_outcome() -> str | None:
    """How this thread's last cached call was served: "hit" (cached), "waited" (filled by
    another asker), "filled" (fetched by this call), "fallback" (backend down or leader too
    slow: fetched directly) or "bypass" (window not closed yet: never cached)."""
    return getattr(_outcome, "value", None)


def _set_outcome(value: str) -> None:
    _outcome.value = value


@dataclass(frozen=True, slots=True)
class CandleWindow:
    """The candles of `interval` opening in `[start_ms, start_ms + limit × interval)` (ms, UTC)."""

    exchange_name: str
    symbol: str
    interval: str
    start_ms: int
    limit: int

    @classmethod
    def of(cls, exchange_name: str, symbol: str, interval: str, since: datetime,
           limit: int) -> CandleWindow:
        """The window asked for by `get_candles(symbol, interval, since, limit)`; `since` is
        rounded up to the interval grid (the first candle that can open at or after it)."""
        if interval not in CANDLE_INTERVAL_MINUTES:
            raise ValueError(f"unknown interval {interval!r}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        step = CANDLE_INTERVAL_MINUTES[interval] * MINUTE_MS
        return cls(exchange_name, symbol, interval, -(-to_ms(since) // step) * step, limit)

    @property
    def step_ms(self) -> int:
        return CANDLE_INTERVAL_MINUTES[self.interval] * MINUTE_MS

    @property
    def end_ms(self) -> int:
        """Close time of the window's last candle (ms, exclusive)."""
        return self.start_ms + self.limit * self.step_ms

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    @property
    def key(self) -> str:
        return "|".join((self.exchange_name, self.symbol, self.interval, str(self.start_ms),
                         str(self.limit)))

    def is_closed(self, now_ms: int, settle_ms: int = DEFAULT_SETTLE_MS) -> bool:
        """True when every candle of the window closed at least `settle_ms` (ms) before now."""
        return self.end_ms + settle_ms <= now_ms

    def clip(self, candles: Sequence[Candle]) -> list[Candle]:
        """Only the candles that open inside this window."""
        return [c for c in candles if self.start_ms <= c.timestamp < self.end_ms]


@runtime_checkable
class CandleCache(Protocol):
    """What `cached_get_candles` needs from a cache."""

    def get(self, window: CandleWindow) -> list[Candle] | None: ...

    def put(self, window: CandleWindow, candles: Sequence[Candle]) -> None: ...

    def get_or_fill(self, window: CandleWindow,
                    fill: Callable[[], list[Candle]]) -> list[Candle]: ...


def _encode(window: CandleWindow, candles: Sequence[Candle]) -> str:
    outside = [c.timestamp for c in candles if not window.start_ms <= c.timestamp < window.end_ms]
    if outside:
        raise ValueError(f"candles {outside[:3]} lie outside the window {window.key}")
    rows = [[c.timestamp, c.open, c.high, c.low, c.close, c.volume] for c in candles]
    return json.dumps({"key": window.key, "candles": rows}, separators=(",", ":"))


def _decode(window: CandleWindow, payload: str) -> list[Candle] | None:
    """The stored candles, or None when the payload is not exactly this window's."""
    try:
        data = json.loads(payload)
        candles = parse_candles(data["candles"], window.symbol)
    except (ValueError, KeyError, TypeError) as exc:
        logger.error("candle cache entry %s is unreadable (%s); refetching", window.key, exc)
        return None
    if data.get("key") != window.key or window.clip(candles) != candles:
        logger.error("candle cache entry %s holds another window; refetching", window.key)
        return None
    return candles


def _encode_failure(exc: Exception) -> str:
    kind = "candle" if isinstance(exc, CandleError) else (
        "definitive" if isinstance(exc, DefinitiveExchangeError) else "transient")
    return json.dumps({"type": kind, "message": str(exc),
                       "kind": getattr(exc, "kind", ""),
                       "rate_limited": bool(getattr(exc, "rate_limited", False)),
                       "exchange_name": getattr(exc, "exchange_name", "")})


def _decode_failure(payload: str) -> Exception:
    data = json.loads(payload)
    message = "another worker's fetch of this window failed moments ago: " + data["message"]
    if data["type"] == "candle":
        return CandleError(message)
    if data["type"] == "definitive":
        return DefinitiveExchangeError(message, kind=data["kind"],
                                       exchange_name=data["exchange_name"])
    return TransientExchangeError(message, rate_limited=data["rate_limited"],
                                  exchange_name=data["exchange_name"])


class _BackendDown(Exception):
    """The cache backend failed; the call falls through to the exchange."""


class SharedCandleCache(ABC):
    """Single-flight over four backend primitives: get, set, set-if-absent, delete-if-equal.

    Times: `ttl_ms`, `lock_ms`, `wait_ms`, `failure_ttl_ms` in ms; `poll_s` and
    `backend_retry_s` in s. `fallback` serves calls while the backend is down.
    """

    backend_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, ttl_ms: int = DEFAULT_TTL_MS, lock_ms: int = DEFAULT_LOCK_MS,
                 wait_ms: int = DEFAULT_WAIT_MS, failure_ttl_ms: int = DEFAULT_FAILURE_TTL_MS,
                 poll_s: float = 0.01, backend_retry_s: float = DEFAULT_BACKEND_RETRY_S,
                 fallback: CandleCache | None = None) -> None:
        self.ttl_ms, self.lock_ms, self.wait_ms = ttl_ms, lock_ms, wait_ms
        self.failure_ttl_ms, self.poll_s = failure_ttl_ms, poll_s
        self.backend_retry_s = backend_retry_s
        self.fallback = fallback
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._down_until = 0.0

    @abstractmethod
    def _get(self, name: str) -> str | None: ...

    @abstractmethod
    def _set(self, name: str, value: str, ttl_ms: int) -> None: ...

    @abstractmethod
    def _set_nx(self, name: str, value: str, ttl_ms: int) -> bool: ...

    @abstractmethod
    def _delete_if(self, name: str, value: str) -> None: ...

    def _op(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.backend_errors as exc:
            with self._stats_lock:  # one warning per outage, however many threads notice it
                first = time.monotonic() >= self._down_until
                self._down_until = time.monotonic() + self.backend_retry_s
            if first:
                logger.warning("candle cache %s unavailable (%s: %s); fetching from the exchange "
                               "directly for %.0f s", type(self).__name__, type(exc).__name__,
                               exc, self.backend_retry_s)
            raise _BackendDown(str(exc)) from exc

    def _quietly(self, fn: Callable[..., Any], *args: Any) -> None:
        """A write whose failure only costs performance (logged by `_op`)."""
        with contextlib.suppress(_BackendDown):
            self._op(fn, *args)

    def _count(self, outcome: str) -> None:
        _set_outcome(outcome)
        with self._stats_lock:
            self.stats[outcome] += 1

    def get(self, window: CandleWindow) -> list[Candle] | None:
        """The cached candles of `window`, or None (also when the backend is down)."""
        try:
            payload = self._op(self._get, "c|" + window.key)
        except _BackendDown:
            return None
        return None if payload is None else _decode(window, payload)

    def put(self, window: CandleWindow, candles: Sequence[Candle]) -> None:
        """Store the candles of a closed window (ValueError if one lies outside it)."""
        self._quietly(self._set, "c|" + window.key, _encode(window, candles), self.ttl_ms)

    def get_or_fill(self, window: CandleWindow,
                    fill: Callable[[], list[Candle]]) -> list[Candle]:
        """The window's candles from the cache, else from `fill()` called by ONE asker among
        all processes sharing the backend. `fill` must return only candles of `window`."""
        if time.monotonic() < self._down_until:
            return self._fall_through(window, fill)
        try:
            return self._single_flight(window, fill)
        except _BackendDown:
            return self._fall_through(window, fill)

    def _fall_through(self, window: CandleWindow,
                      fill: Callable[[], list[Candle]]) -> list[Candle]:
        candles = fill() if self.fallback is None else self.fallback.get_or_fill(window, fill)
        self._count("fallback")
        return candles

    def _single_flight(self, window: CandleWindow,
                       fill: Callable[[], list[Candle]]) -> list[Candle]:
        data, lock, failure = "c|" + window.key, "l|" + window.key, "f|" + window.key
        deadline, first = time.monotonic() + self.wait_ms / 1000, True
        while True:
            payload = self._op(self._get, data)
            cached = None if payload is None else _decode(window, payload)
            if cached is not None:
                self._count("hit" if first else "waited")
                return cached
            note = self._op(self._get, failure)
            if note is not None:
                self._count("failure")
                raise _decode_failure(note)
            token = uuid.uuid4().hex
            if self._op(self._set_nx, lock, token, self.lock_ms):
                try:
                    return self._fill(window, fill, data, failure)
                finally:
                    self._quietly(self._delete_if, lock, token)  # else it expires by itself
            if time.monotonic() > deadline:
                logger.warning("candle window %s: no answer from the fetching worker after "
                               "%d ms; fetching it here", window.key, self.wait_ms)
                candles = fill()
                self._count("fallback")
                return candles
            first = False
            time.sleep(self.poll_s)

    def _fill(self, window: CandleWindow, fill: Callable[[], list[Candle]], data: str,
              failure: str) -> list[Candle]:
        # A leader may have finished (or failed) between our reads and taking the lock; it
        # writes its result before releasing the lock, so reading again now is conclusive.
        payload = self._op(self._get, data)
        cached = None if payload is None else _decode(window, payload)
        if cached is not None:
            self._count("waited")
            return cached
        note = self._op(self._get, failure)
        if note is not None:
            self._count("failure")
            raise _decode_failure(note)
        try:
            candles = fill()
        except (ExchangeError, CandleError) as exc:
            self._quietly(self._set, failure, _encode_failure(exc), self.failure_ttl_ms)
            raise
        self._quietly(self._set, data, _encode(window, candles), self.ttl_ms)
        self._count("filled")
        return candles


class MemoryCandleCache(SharedCandleCache):
    """Per-process cache: a bounded LRU of at most `max_entries` windows (thread-safe)."""

    def __init__(self, max_entries: int = 10_000, **tuning: Any) -> None:
        tuning.setdefault("poll_s", 0.002)
        super().__init__(**tuning)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, name: str) -> str | None:
        item = self._entries.get(name)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return item[0]

    def _get(self, name: str) -> str | None:
        with self._lock:
            return self._live(name)

    def _store(self, name: str, value: str, ttl_ms: int) -> None:
        """Insert as the most recent entry; the least recent go beyond `max_entries` (the
        caller holds the lock). Fill locks and failure notes count too, so nothing a worker
        stores here can outgrow the bound."""
        put_recent(self._entries, name, (value, time.monotonic() + ttl_ms / 1000),
                   self.max_entries)

    def _set(self, name: str, value: str, ttl_ms: int) -> None:
        with self._lock:
            self._store(name, value, ttl_ms)

    def _set_nx(self, name: str, value: str, ttl_ms: int) -> bool:
        with self._lock:
            if self._live(name) is not None:
                return False
            self._store(name, value, ttl_ms)
            return True

    def _delete_if(self, name: str, value: str) -> None:
        with self._lock:
            if self._live(name) == value:
                del self._entries[name]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_UNLOCK_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisCandleCache(SharedCandleCache):
    """Cache in Redis, shared by every process; keys start with `prefix`, expire after ttl_ms.

    `socket_timeout_s` (s) bounds every Redis call so a hung Redis cannot stall a tick.
    """

    def __init__(self, redis_url: str, *, prefix: str = "bkit:candles:",
                 socket_timeout_s: float = 1.0, fallback: CandleCache | None = None,
                 **tuning: Any) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__(fallback=fallback if fallback is not None else MemoryCandleCache(),
                         **tuning)
        self.prefix = prefix
        self.backend_errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=socket_timeout_s,
            socket_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 1))
        self._unlock = self._redis.register_script(_UNLOCK_LUA)

    def _get(self, name: str) -> str | None:
        value = self._redis.get(self.prefix + name)
        return None if value is None else str(value)

    def _set(self, name: str, value: str, ttl_ms: int) -> None:
        self._redis.set(self.prefix + name, value, px=ttl_ms)

    def _set_nx(self, name: str, value: str, ttl_ms: int) -> bool:
        return bool(self._redis.set(self.prefix + name, value, px=ttl_ms, nx=True))

    def _delete_if(self, name: str, value: str) -> None:
        self._unlock(keys=[self.prefix + name], args=[value])

    def clear(self) -> int:
        """Delete this cache's keys (only those under `prefix`); returns how many."""
        keys = list(self._redis.scan_iter(match=self.prefix + "*", count=1000))
        return int(self._redis.delete(*keys)) if keys else 0

    def close(self) -> None:
        self._redis.close()


class CachedCandleBatch(SQLModel, table=True):
    """One row of `SqlCandleCache`: a closed window's candles (`c|…` keys), or a short-lived
    fill lock (`l|…`) or failure note (`f|…`). `expires_at_ms` is ms since the epoch, UTC."""

    __tablename__ = "candle_cache"

    cache_key: str = Field(primary_key=True, max_length=255)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    expires_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class SqlCandleCache(SharedCandleCache):
    """Cache in the `candle_cache` table (PostgreSQL or SQLite), shared by every process using
    the database. Expired rows are pruned every `prune_every` writes. Give SQLite engines a busy
    timeout (`connect_args={"timeout": 30}`) so concurrent writers wait instead of failing."""

    backend_errors = (SQLAlchemyError,)

    def __init__(self, engine: Engine, *, prune_every: int = 500, poll_s: float = 0.02,
                 fallback: CandleCache | None = None, **tuning: Any) -> None:
        super().__init__(poll_s=poll_s,
                         fallback=fallback if fallback is not None else MemoryCandleCache(),
                         **tuning)
        self.engine = engine
        self.prune_every = prune_every
        self._writes = 0
        self._table: Any = CachedCandleBatch.__table__  # type: ignore[attr-defined]

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def _get(self, name: str) -> str | None:
        t = self._table
        with self.engine.connect() as conn:
            row = conn.execute(select(t.c.payload).where(
                t.c.cache_key == name, t.c.expires_at_ms > self._now_ms())).first()
        return None if row is None else str(row[0])

    def _set(self, name: str, value: str, ttl_ms: int) -> None:
        t, expires = self._table, self._now_ms() + ttl_ms
        for _attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    changed = conn.execute(update(t).where(t.c.cache_key == name).values(
                        payload=value, expires_at_ms=expires)).rowcount
                    if not changed:
                        conn.execute(insert(t).values(cache_key=name, payload=value,
                                                      expires_at_ms=expires))
                break
            except IntegrityError:
                continue  # another process inserted it first: update on the next attempt
        self._writes += 1
        if self._writes % self.prune_every == 0:
            with self.engine.begin() as conn:
                conn.execute(delete(t).where(t.c.expires_at_ms <= self._now_ms()))

    def _set_nx(self, name: str, value: str, ttl_ms: int) -> bool:
        t, now = self._table, self._now_ms()
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(t).where(t.c.cache_key == name, t.c.expires_at_ms <= now))
                conn.execute(insert(t).values(cache_key=name, payload=value,
                                              expires_at_ms=now + ttl_ms))
            return True
        except IntegrityError:
            return False

    def _delete_if(self, name: str, value: str) -> None:
        t = self._table
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.cache_key == name, t.c.payload == value))


def cached_get_candles(cache: CandleCache | None, exchange_name: str, fetch: FetchCandles,
                       symbol: str, interval: str, since: datetime, limit: int, now: datetime,
                       settle_ms: int = DEFAULT_SETTLE_MS) -> list[Candle]:
    """The candles of `interval` opening in `[since, since + limit × interval)` (UTC), oldest
    first, through `cache`. `fetch` is any `get_candles(symbol, interval, since, limit)`.

    A window whose last candle closed at least `settle_ms` (ms) before `now` is fetched once and
    cached; any other window (it holds the forming candle) goes to `fetch` every time.
    """
    window = CandleWindow.of(exchange_name, symbol, interval, since, limit)

    def fill() -> list[Candle]:
        return window.clip(parse_candles(fetch(symbol, interval, window.start, limit), symbol))

    if cache is None or not window.is_closed(to_ms(now), settle_ms):
        candles = fill()
        _set_outcome("bypass")
        return candles
    return cache.get_or_fill(window, fill)


class CachingCandleSource:
    """A `get_candles(symbol, interval, since, limit)` that reads through a `CandleCache`.

    `clock()` gives the current UTC time that decides which candles have closed.
    """

    def __init__(self, cache: CandleCache | None, exchange_name: str, fetch: FetchCandles,
                 clock: Callable[[], datetime] | None = None,
                 settle_ms: int = DEFAULT_SETTLE_MS) -> None:
        self.cache, self.exchange_name, self.fetch = cache, exchange_name, fetch
        self.clock = clock or (lambda: datetime.now(UTC))
        self.settle_ms = settle_ms

    def __call__(self, symbol: str, interval: str, since: datetime, limit: int) -> list[Candle]:
        return cached_get_candles(self.cache, self.exchange_name, self.fetch, symbol, interval,
                                  since, limit, self.clock(), self.settle_ms)

"""The shared candle cache chosen from settings: Redis when the broker is Redis, the
database otherwise (DESIGN; issue "Exchanges and market data"). Built lazily per process, so
a forked worker child never reuses its parent's connections."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from bkit.core.candles import Candle
from bkit.exchange.candle_cache import (
    CandleCache,
    CandleWindow,
    RedisCandleCache,
    SqlCandleCache,
)


def cache_from_settings() -> CandleCache:
    """A new cache for this process from BKIT_BROKER_URL / BKIT_DATABASE_URL."""
    from bkit.settings import get_settings
    from bkit.store.engine import get_engine

    broker = get_settings().resolved_broker_url()
    if broker.startswith(("redis://", "rediss://")):
        return RedisCandleCache(broker)
    return SqlCandleCache(get_engine())


class SettingsCandleCache:
    """A `CandleCache` that delegates to `cache_from_settings()`, one per process."""

    def __init__(self, factory: Callable[[], CandleCache] = cache_from_settings) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._slot: tuple[int, CandleCache] | None = None

    def _cache(self) -> CandleCache:
        pid = os.getpid()
        slot = self._slot
        if slot is None or slot[0] != pid:
            with self._lock:
                slot = self._slot
                if slot is None or slot[0] != pid:
                    slot = (pid, self._factory())
                    self._slot = slot
        return slot[1]

    def get(self, window: CandleWindow) -> list[Candle] | None:
        return self._cache().get(window)

    def put(self, window: CandleWindow, candles: Sequence[Candle]) -> None:
        self._cache().put(window, candles)

    def get_or_fill(self, window: CandleWindow,
                    fill: Callable[[], list[Candle]]) -> list[Candle]:
        return self._cache().get_or_fill(window, fill)

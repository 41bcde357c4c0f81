"""The candle cache chosen from settings: Redis with a Redis broker, the database otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bkit.core.candles import Candle
from bkit.exchange.candle_cache import CandleWindow, RedisCandleCache, SqlCandleCache
from bkit.exchange.default_cache import SettingsCandleCache, cache_from_settings
from bkit.settings import reset_settings
from bkit.store.engine import dispose_all


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("BKIT_BROKER_URL", "BKIT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BKIT_HOME", str(tmp_path))
    reset_settings()
    yield monkeypatch
    reset_settings()
    dispose_all()


def test_redis_broker_means_redis_cache(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("BKIT_BROKER_URL", "redis://127.0.0.1:6379/15")
    reset_settings()
    assert isinstance(cache_from_settings(), RedisCandleCache)


def test_embedded_default_means_database_cache_that_serves_a_window(
        settings_env: pytest.MonkeyPatch) -> None:
    from bkit.store.engine import get_engine
    from bkit.store.migrations import upgrade

    upgrade(get_engine())  # creates the candle_cache table with the rest of the schema
    cache = SettingsCandleCache()
    assert isinstance(cache._cache(), SqlCandleCache)
    since = datetime(2019, 10, 11, 0, 0, tzinfo=UTC)
    window = CandleWindow.of("paper", "XRP/ETH", "1m", since, 2)
    candles = [Candle(window.start_ms, 1.0, 1.1, 0.9, 1.05, 3.0),
               Candle(window.start_ms + 60_000, 1.05, 1.2, 1.0, 1.1, 4.0)]
    calls: list[int] = []

    def fill() -> list[Candle]:
        calls.append(1)
        return candles

    assert cache.get_or_fill(window, fill) == candles
    assert cache.get_or_fill(window, fill) == candles
    assert len(calls) == 1

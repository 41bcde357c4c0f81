"""The SQL candle cache on SQLite (a file in a temp dir) and on a real PostgreSQL (a schema of
our own): shared between engines ("processes"), single-flight, expiry, and database outages."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from bkit.core.candles import Candle, to_ms
from bkit.exchange import (
    CachedCandleBatch,
    CandleWindow,
    CcxtExchange,
    SqlCandleCache,
    cached_get_candles,
    last_cache_outcome,
)
from bkit.testing import FakeExchange

TABLE: Any = CachedCandleBatch.__table__  # type: ignore[attr-defined]
KLINES = "/api/v3/klines"
SYMBOL = "XRP/ETH"
NAME = "fake-binance"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'cache.db'}",
                                  connect_args={"timeout": 30})
    else:
        engine = request.getfixturevalue("pg_engine")
    SQLModel.metadata.create_all(engine, tables=[TABLE])
    yield engine
    engine.dispose()


def expected(candles: list[Candle], when: datetime) -> list[Candle]:
    start = to_ms(when - timedelta(minutes=5))
    return [c for c in candles if start <= c.timestamp < to_ms(when)]


def tick(cache: SqlCandleCache, exchange: CcxtExchange, when: datetime) -> list[Candle]:
    return cached_get_candles(cache, NAME, exchange.get_candles, SYMBOL, "1m",
                              when - timedelta(minutes=5), 5, when + timedelta(seconds=3))


def test_the_table_is_candle_cache() -> None:
    assert TABLE.name == "candle_cache"


def test_concurrent_askers_share_one_request(
        engine: sa.Engine, fake: FakeExchange, exchange: CcxtExchange,
        xrp_candles: list[Candle]) -> None:
    when = xrp_candles[300].opened_at
    caches = [SqlCandleCache(engine) for _ in range(4)]
    fake.set_latency(0.1)
    results: list[list[Candle]] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def strategy(cache: SqlCandleCache) -> None:
        barrier.wait()
        got = tick(cache, exchange, when)
        with lock:
            results.append(got)
            outcomes[last_cache_outcome() or "?"] += 1

    threads = [threading.Thread(target=strategy, args=(caches[i % 4],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected(xrp_candles, when) for r in results) and len(results) == 20
    assert fake.request_count(KLINES) == 1
    assert outcomes["filled"] == 1 and outcomes["fallback"] == 0


def test_another_engine_reads_what_one_stored(
        engine: sa.Engine, fake: FakeExchange, exchange: CcxtExchange,
        xrp_candles: list[Candle]) -> None:
    when = xrp_candles[400].opened_at
    assert tick(SqlCandleCache(engine), exchange, when) == expected(xrp_candles, when)
    other = sa.create_engine(engine.url, execution_options=engine.get_execution_options())
    try:
        assert tick(SqlCandleCache(other), exchange, when) == expected(xrp_candles, when)
        assert last_cache_outcome() == "hit"
    finally:
        other.dispose()
    assert fake.request_count(KLINES) == 1
    with engine.connect() as conn:
        keys = conn.execute(sa.select(TABLE.c.cache_key)).scalars().all()
    assert len(keys) == 1 and keys[0].startswith("c|fake-binance|XRP/ETH|1m|")  # no lock left


def test_entries_expire(engine: sa.Engine, fake: FakeExchange, exchange: CcxtExchange,
                        xrp_candles: list[Candle]) -> None:
    cache = SqlCandleCache(engine, ttl_ms=150, prune_every=1)
    when = xrp_candles[500].opened_at
    tick(cache, exchange, when)
    tick(cache, exchange, when)
    assert fake.request_count(KLINES) == 1
    time.sleep(0.2)
    tick(cache, exchange, when)
    assert last_cache_outcome() == "filled"
    assert fake.request_count(KLINES) == 2


def test_a_lock_is_exclusive_until_it_expires(engine: sa.Engine,
                                              xrp_candles: list[Candle]) -> None:
    cache = SqlCandleCache(engine)
    name = "l|" + CandleWindow.of(NAME, SYMBOL, "1m", xrp_candles[0].opened_at, 5).key
    assert cache._set_nx(name, "first", 150)
    assert not cache._set_nx(name, "second", 150)
    cache._delete_if(name, "second")  # not the holder: nothing happens
    assert cache._get(name) == "first"
    time.sleep(0.2)
    assert cache._set_nx(name, "second", 150)  # taken over after expiry
    cache._delete_if(name, "second")
    assert cache._get(name) is None


def test_a_database_outage_falls_through(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'cache.db'}")
    cache = SqlCandleCache(gone)
    when = xrp_candles[600].opened_at
    for _ in range(3):
        assert tick(cache, exchange, when) == expected(xrp_candles, when)
        assert last_cache_outcome() == "fallback"
    assert fake.request_count(KLINES) == 1  # the in-process fallback cache answered twice
    assert "unavailable" in caplog.text

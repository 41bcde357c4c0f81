"""The Redis candle cache on a real Redis (db 15, our own key prefix): 100 strategies on one
symbol cost ONE klines request per minute, across threads and processes; Redis down or
restarting only costs speed."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import redis

from bkit.core.candles import Candle, to_ms
from bkit.exchange import CcxtExchange, RedisCandleCache, cached_get_candles, last_cache_outcome
from bkit.testing import FakeExchange

pytestmark = pytest.mark.integration

KLINES = "/api/v3/klines"
SYMBOL = "XRP/ETH"
NAME = "fake-binance"


def expected(candles: list[Candle], when: datetime) -> list[Candle]:
    start = to_ms(when - timedelta(minutes=5))
    return [c for c in candles if start <= c.timestamp < to_ms(when)]


def tick(cache: RedisCandleCache, exchange: CcxtExchange, when: datetime) -> list[Candle]:
    return cached_get_candles(cache, NAME, exchange.get_candles, SYMBOL, "1m",
                              when - timedelta(minutes=5), 5, when + timedelta(seconds=3))


def run_strategies(caches: list[RedisCandleCache], per_cache: int, exchange: CcxtExchange,
                   when: datetime) -> tuple[list[list[Candle]], Counter[str]]:
    """`per_cache` strategy threads on each cache (a cache = a worker process), all at once."""
    results: list[list[Candle]] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(len(caches) * per_cache)

    def strategy(cache: RedisCandleCache) -> None:
        barrier.wait()
        got = tick(cache, exchange, when)
        with lock:
            results.append(got)
            outcomes[last_cache_outcome() or "?"] += 1

    threads = [threading.Thread(target=strategy, args=(cache,))
               for cache in caches for _ in range(per_cache)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, outcomes


def test_100_strategies_make_one_klines_request_per_minute(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle],
        redis_url: str, redis_prefix: str) -> None:
    caches = [RedisCandleCache(redis_url, prefix=redis_prefix) for _ in range(10)]
    fake.set_latency(0.05)
    for minute, index in enumerate((300, 301, 302), start=1):
        when = xrp_candles[index].opened_at
        results, outcomes = run_strategies(caches, 10, exchange, when)

        assert fake.request_count(KLINES) == minute  # one more request per minute
        assert len(results) == 100
        assert all(r == expected(xrp_candles, when) for r in results)
        assert outcomes["filled"] == 1 and outcomes["hit"] + outcomes["waited"] == 99
    for cache in caches:
        cache.close()


def _worker_process(redis_url: str, prefix: str, exchange: CcxtExchange, when: datetime,
                    queue: multiprocessing.Queue) -> None:
    cache = RedisCandleCache(redis_url, prefix=prefix)
    results, outcomes = run_strategies([cache], 10, exchange, when)
    queue.put(([[c.timestamp for c in r] for r in results], dict(outcomes)))


def test_worker_processes_share_one_request(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle],
        redis_url: str, redis_prefix: str) -> None:
    when = xrp_candles[400].opened_at
    fake.set_latency(0.1)
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = ctx.Queue()
    workers = [ctx.Process(target=_worker_process,
                           args=(redis_url, redis_prefix, exchange, when, queue))
               for _ in range(4)]
    for w in workers:
        w.start()
    answers = [queue.get(timeout=30) for _ in workers]
    for w in workers:
        w.join(timeout=30)

    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert fake.request_count(KLINES) == 1
    want = [c.timestamp for c in expected(xrp_candles, when)]
    assert all(r == want for stamps, _ in answers for r in stamps)
    outcomes = Counter[str]()
    for _, counts in answers:
        outcomes.update(counts)
    assert outcomes["filled"] == 1 and sum(outcomes.values()) == 40


def test_redis_down_falls_through_to_the_exchange(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle],
        closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCandleCache(f"redis://127.0.0.1:{closed_port}/15")
    when = xrp_candles[500].opened_at
    fake.set_latency(0.05)
    with caplog.at_level(logging.WARNING):
        results, outcomes = run_strategies([cache], 10, exchange, when)

    assert all(r == expected(xrp_candles, when) for r in results)
    assert outcomes == {"fallback": 10}
    assert fake.request_count(KLINES) == 1  # the in-process fallback still single-flights
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per call


def test_a_redis_restart_costs_speed_not_correctness(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle],
        redis_proxy: object, redis_prefix: str) -> None:
    proxy = redis_proxy
    cache = RedisCandleCache(f"redis://127.0.0.1:{proxy.port}/15",  # type: ignore[attr-defined]
                             prefix=redis_prefix, backend_retry_s=0.2)
    first, second = xrp_candles[600].opened_at, xrp_candles[601].opened_at
    assert tick(cache, exchange, first) == expected(xrp_candles, first)
    assert last_cache_outcome() == "filled"

    proxy.stop()  # type: ignore[attr-defined]
    assert tick(cache, exchange, second) == expected(xrp_candles, second)
    assert last_cache_outcome() == "fallback"
    assert tick(cache, exchange, first) == expected(xrp_candles, first)

    proxy.start()  # type: ignore[attr-defined]
    time.sleep(0.3)
    requests = fake.request_count(KLINES)
    assert tick(cache, exchange, first) == expected(xrp_candles, first)
    assert last_cache_outcome() == "hit"  # Redis kept it across the outage
    assert fake.request_count(KLINES) == requests
    cache.close()


def test_entries_expire_and_live_under_the_prefix(
        exchange: CcxtExchange, xrp_candles: list[Candle], redis_url: str,
        redis_prefix: str) -> None:
    cache = RedisCandleCache(redis_url, prefix=redis_prefix, ttl_ms=60_000)
    tick(cache, exchange, xrp_candles[700].opened_at)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(client.scan_iter(match=redis_prefix + "*"))
    assert len(keys) == 1 and keys[0].startswith(redis_prefix + "c|fake-binance|XRP/ETH|1m|")
    assert 0 < client.pttl(keys[0]) <= 60_000  # no lock left behind, the entry expires

    client.set("bkit-test-someone-else", "x", px=10_000)
    try:
        assert cache.clear() == 1
        assert client.get("bkit-test-someone-else") == "x"
    finally:
        client.delete("bkit-test-someone-else")
        client.close()
        cache.close()

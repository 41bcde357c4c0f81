"""Benchmark: the shared candle cache under a full minute of ticks.

1,000 symbols × 10 strategies per symbol tick once per simulated minute. Every tick asks for
the 5 closed 1m candles before its minute (the VWAP window) through `RedisCandleCache` and the
real `ccxt.binance` client, pointed at the fake binance server loaded with seeded synthetic
candles. Prints the upstream klines requests per minute (target: exactly one per symbol and
interval), the cache outcomes and the latency of cache hits (p50/p99, ms).

    .venv/bin/python bench/candles.py [--symbols 1000] [--strategies 10] [--minutes 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bkit.core.candles import Candle, to_ms
from bkit.exchange import CcxtExchange, RedisCandleCache, cached_get_candles, last_cache_outcome
from bkit.testing import FakeExchange, MarketSpec, synthetic_candles

KLINES = "/api/v3/klines"
START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HISTORY_MINUTES = 30


@dataclass
class MinuteReport:
    """What one simulated minute cost. Latencies in ms."""

    upstream: int
    per_symbol: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    hit_ms: list[float] = field(default_factory=list)
    all_ms: list[float] = field(default_factory=list)
    quiet_hit_ms: list[float] = field(default_factory=list)
    wrong: int = 0
    wall_s: float = 0.0


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def build_venue(symbols: list[str], latency_s: float) -> tuple[FakeExchange, dict[str, list]]:
    """The fake venue with every symbol listed and HISTORY_MINUTES of seeded candles."""
    fake = FakeExchange(markets=[MarketSpec(s, tick_size="0.01000000", step_size="0.00100000",
                                            min_qty="0.00100000", min_notional="5.00000000")
                                 for s in symbols])
    series = {}
    first = to_ms(START) - HISTORY_MINUTES * 60_000
    for i, symbol in enumerate(symbols):
        series[symbol] = synthetic_candles(seed=i, start_ms=first,
                                           count=HISTORY_MINUTES + 10, start_price=50 + i)
        fake.load_candles(symbol, series[symbol])
    fake.set_latency(latency_s)
    return fake, series


def run_minute(when: datetime, symbols: list[str], strategies: int, caches: list,
               exchange: CcxtExchange, fake: FakeExchange, series: dict[str, list],
               pool: ThreadPoolExecutor, seed: int) -> MinuteReport:
    """Every (symbol, strategy) ticks once at `when`, in a shuffled order, on the pool."""
    now = when + timedelta(seconds=5)
    fake.set_clock(to_ms(now))
    before = {s: fake.request_count(KLINES, s) for s in symbols}
    total_before = fake.request_count(KLINES)
    jobs = [(s, k) for s in symbols for k in range(strategies)]
    random.Random(seed).shuffle(jobs)
    lock = threading.Lock()
    report = MinuteReport(upstream=0)
    window_start = to_ms(when) - 5 * 60_000

    def tick(job: tuple[str, int]) -> None:
        symbol, k = job
        cache = caches[k % len(caches)]
        started = time.perf_counter()
        candles: list[Candle] = cached_get_candles(
            cache, "bench-binance", exchange.get_candles, symbol, "1m",
            when - timedelta(minutes=5), 5, now)
        elapsed_ms = (time.perf_counter() - started) * 1000
        outcome = last_cache_outcome() or "?"
        want = [c for c in series[symbol] if window_start <= c.timestamp < to_ms(when)]
        with lock:
            report.outcomes[outcome] += 1
            report.all_ms.append(elapsed_ms)
            if outcome == "hit":
                report.hit_ms.append(elapsed_ms)
            report.wrong += candles != want

    started = time.perf_counter()
    list(pool.map(tick, jobs))
    report.wall_s = time.perf_counter() - started
    report.upstream = fake.request_count(KLINES) - total_before
    report.per_symbol = Counter(fake.request_count(KLINES, s) - before[s] for s in symbols)
    # the same hits again from one thread with the pool idle: the cost without GIL contention
    rng = random.Random(seed)
    for _ in range(min(2000, len(jobs))):
        symbol, k = rng.choice(jobs)
        started = time.perf_counter()
        cached_get_candles(caches[k % len(caches)], "bench-binance", exchange.get_candles,
                           symbol, "1m", when - timedelta(minutes=5), 5, now)
        if last_cache_outcome() == "hit":
            report.quiet_hit_ms.append((time.perf_counter() - started) * 1000)
    return report


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--strategies", type=int, default=10, help="per symbol")
    parser.add_argument("--minutes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--caches", type=int, default=4,
                        help="cache instances, like worker processes")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fake venue latency")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args(argv)

    symbols = [f"S{i:04d}/USDT" for i in range(args.symbols)]
    fake, series = build_venue(symbols, args.latency_ms / 1000)
    prefix = f"bkit-bench:{uuid.uuid4().hex}:"
    caches = [RedisCandleCache(args.redis_url, prefix=prefix) for _ in range(args.caches)]
    summary: dict[str, float] = {}
    with fake, ThreadPoolExecutor(args.threads) as pool:
        exchange = CcxtExchange("binance", exchange_name="bench-binance",
                                api_base_url=fake.base_url, env={})
        exchange.load_markets()
        reports = [run_minute(START + timedelta(minutes=m), symbols, args.strategies, caches,
                              exchange, fake, series, pool, seed=m)
                   for m in range(args.minutes)]
    caches[0].clear()
    for cache in caches:
        cache.close()

    print(f"{args.symbols} symbols x {args.strategies} strategies, {args.minutes} minute(s), "
          f"{args.threads} threads, {args.caches} cache instances, Redis {args.redis_url}")
    for m, r in enumerate(reports):
        print(f"minute {m + 1}: upstream klines requests {r.upstream} "
              f"(per symbol: {dict(sorted(r.per_symbol.items()))}), "
              f"outcomes {dict(r.outcomes)}, wrong answers {r.wrong}, wall {r.wall_s:.2f} s")
        print(f"  cache-hit latency under load ({args.threads} threads, one process): "
              f"p50 {percentile(r.hit_ms, 50):.3f} ms, p99 {percentile(r.hit_ms, 99):.3f} ms "
              f"(n={len(r.hit_ms)}); all calls p50 {percentile(r.all_ms, 50):.3f} ms, "
              f"p99 {percentile(r.all_ms, 99):.3f} ms")
        print(f"  cache-hit latency uncontended (one thread): p50 "
              f"{percentile(r.quiet_hit_ms, 50):.3f} ms, p99 {percentile(r.quiet_hit_ms, 99):.3f}"
              f" ms (n={len(r.quiet_hit_ms)})")
    summary = {
        "upstream_per_minute": statistics.mean(r.upstream for r in reports),
        "max_per_symbol_minute": max(max(r.per_symbol) for r in reports),
        "min_per_symbol_minute": min(min(r.per_symbol) for r in reports),
        "wrong": sum(r.wrong for r in reports),
        "hit_p50_ms": percentile([x for r in reports for x in r.hit_ms], 50),
        "hit_p99_ms": percentile([x for r in reports for x in r.hit_ms], 99),
        "quiet_hit_p50_ms": percentile([x for r in reports for x in r.quiet_hit_ms], 50),
        "quiet_hit_p99_ms": percentile([x for r in reports for x in r.quiet_hit_ms], 99),
    }
    print(f"upstream klines requests per minute: {summary['upstream_per_minute']:.0f} for "
          f"{args.symbols} symbols (target {args.symbols}: one per symbol and interval)")
    return summary


if __name__ == "__main__":
    result = main()
    ok = result["max_per_symbol_minute"] == result["min_per_symbol_minute"] == 1
    sys.exit(0 if ok and result["wrong"] == 0 else 1)

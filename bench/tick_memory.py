"""What a tick process keeps in memory over replayed minutes: `run_ticks` in-process over the
soak's paper exchange (real candles, the soak's strategy, the paper broker, each order intent
submitted right after its tick as the orders worker would), with tracemalloc snapshots taken
after a warm-up, at half time and at the end. Prints the allocation sites (file:line) that grew
most over the second half, the RSS, the object counts by type that grew, and the size of the
per-process structures a tick keeps (restored-signal detection, the failure log).

    .venv/bin/python bench/tick_memory.py --keys 1000 --minutes 120 --warmup 20

A site that grows between half time and the end, in proportion to the minutes, is kept
per tick or per signal; one that stops growing after the warm-up is a cache filling up.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy.exc import OperationalError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.harness import create_database, drop_database, insert_keys  # noqa: E402

START = datetime(2019, 10, 11, 1, 1, tzinfo=UTC)  # the soak's replay start, on the minute


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def _types() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _print_growth(label: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
                  top: int) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    grown = sum(s.size_diff for s in stats)
    print(f"\n{label}: traced memory {grown / 1e6:+.2f} MB; top sites by growth:")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1e3:+10.1f} kB {stat.count_diff:+8d} blocks  "
              f"{frame.filename.replace(str(REPO) + '/', '')}:{frame.lineno}")


def run(keys: int, minutes: int, warmup: int, top: int, keep_db: bool) -> None:
    db, url = create_database("bkit_tickmem")
    os.environ.update({"BKIT_DATABASE_URL": url, "BKIT_ORDER_BROKER": "paper",
                       "BKIT_HOME": f"/tmp/{db}"})
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all

    reset_settings()
    dispose_all()
    try:
        _drive(keys, minutes, warmup, top)
    finally:
        if keep_db:
            print(f"database kept: {db}")
        else:
            drop_database(db)


def _drive(keys: int, minutes: int, warmup: int, top: int) -> None:
    import tests.e2e.soak_strategies as soak
    from bkit import ticking
    from bkit.broker.registry import broker_for
    from bkit.clock import ManualClock
    from bkit.orders import OrdersEnv, submit_intent
    from bkit.store.engine import DatabaseUnavailableError, get_engine
    from bkit.store.migrations import upgrade
    from bkit.ticking import TickEnv, bucket_of, run_ticks

    engine = get_engine()
    upgrade(engine)
    ids = insert_keys(engine, [f"S{i:05d}" for i in range(keys)], "soak", "soak-paper")
    clock = ManualClock(START)
    soak.exchange.clock = clock
    queued: list[int] = []
    orders = OrdersEnv(engine=engine, clock=clock, brokers=broker_for,
                       enqueue=lambda intent_id, _countdown: queued.append(intent_id))
    env = TickEnv(engine=engine, clock=clock, brokers=broker_for, enqueue_order=queued.append)
    snapshots: dict[str, tuple[tracemalloc.Snapshot, float, Counter[str]]] = {}
    half = warmup + (minutes - warmup) // 2
    started, ticks, submits = time.perf_counter(), 0, 0
    for minute in range(minutes):
        if minute in (warmup, half):
            if minute == warmup:
                tracemalloc.start(1)
            gc.collect()
            snapshots["warm-up" if minute == warmup else "half"] = (
                tracemalloc.take_snapshot(), _rss_mb(), _types())
        when = START + timedelta(minutes=minute)
        clock.current = when + timedelta(seconds=1)
        for first in range(0, len(ids), 20):
            try:
                out = run_ticks(env, ids[first:first + 20], bucket_of(when))
                ticks += sum(r is not None for r in out.results.values())
                while queued:  # the orders worker's part, as soon as the tick committed
                    submit_intent(orders, queued[0])
                    queued.pop(0)
                    submits += 1
            except (OperationalError, DatabaseUnavailableError) as exc:  # a restart
                print(f"minute {minute}: database unavailable ({type(exc).__name__}); "
                      "waiting for it, these keys skip the minute", flush=True)
                time.sleep(5)
        if minute % 10 == 0:
            print(f"minute {minute}: {ticks} ticks, {submits} submits, RSS {_rss_mb():.1f} MB, "
                  f"seen_signals {len(env.seen_signals)}, "
                  f"failure log {len(ticking.failure_log._last)}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    gc.collect()
    end = (tracemalloc.take_snapshot(), _rss_mb(), _types())
    marks = [("warm-up", snapshots["warm-up"]), ("half", snapshots["half"]), ("end", end)]
    print("\nRSS (MB): " + ", ".join(f"{name} (minute {m}) {s[1]:.1f}" for (name, s), m in
                                      zip(marks, (warmup, half, minutes), strict=True)))
    _print_growth(f"minutes {warmup} → {half}", snapshots["warm-up"][0],
                  snapshots["half"][0], top)
    _print_growth(f"minutes {half} → {minutes} (second half)", snapshots["half"][0], end[0], top)
    grown: Counter[str] = Counter(end[2])
    grown.subtract(snapshots["half"][2])
    print("\nobject counts that grew over the second half:",
          ", ".join(f"{name} {n:+d}" for name, n in grown.most_common(12) if n > 0))
    print(f"seen_signals {len(env.seen_signals)}, failure log {len(ticking.failure_log._last)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=120, help="market minutes replayed")
    parser.add_argument("--warmup", type=int, default=20,
                        help="minutes before the first snapshot")
    parser.add_argument("--top", type=int, default=25, help="allocation sites printed")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    run(args.keys, args.minutes, args.warmup, args.top, args.keep_db)


if __name__ == "__main__":
    main()


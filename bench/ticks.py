"""Tick throughput on Redis + PostgreSQL with real worker processes, against the floors of
the same machine measured in the same run (DESIGN "Measured").

    .venv/bin/python bench/ticks.py --keys 1000 10000 --concurrency 2

Prints, per N: ticks/s, the lag from the fan-out to each tick's completion (p50/p99), the
no-op and lock-update-insert floors (tasks/s) and the ratio ticks/s ÷ lock-update-insert.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.harness import create_database, drop_database, insert_keys, use_settings  # noqa: E402

REDIS_DB = 12


def _wait(predicate, timeout: float, poll: float = 0.05) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError("benchmark step did not finish")


def run(n_keys: int, concurrency: int, floor_tasks: int, batch_size: int | None = None
        ) -> dict[str, float]:
    db, db_url = create_database("bkit_bench")
    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.flushdb()
    home = Path(f"/tmp/{db}")
    home.mkdir()
    start = datetime(2019, 10, 11, 6, 0, 1, tzinfo=UTC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env.update({"BKIT_HOME": str(home),
                "BKIT_DATABASE_URL": db_url,
                "BKIT_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
                "BENCH_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
                "BKIT_STRATEGIES": "bench.bench_strategies",
                "BKIT_REPLAY_START": start.isoformat(),
                "BKIT_REPLAY_EPOCH": datetime.now(UTC).isoformat(), "BKIT_REPLAY_SPEED": "1",
                "PYTHONPATH": str(REPO)})
    if batch_size is not None:
        env["BKIT_TICK_BATCH_SIZE"] = str(batch_size)
    app = use_settings(env)
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.migrations import upgrade
    from bkit.store.tables import StrategySymbol

    engine = get_engine()
    upgrade(engine)
    insert_keys(engine, [f"S{i:05d}/ETH" for i in range(n_keys)], "bench", "paper")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-c", str(concurrency),
         "-Q", "ticks", "--loglevel", "WARNING"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=open(home / "worker.log", "wb"))  # noqa: SIM115
    try:
        app.send_task("bench.noop")
        _wait(lambda: int(r.get("bench:noop") or 0) >= 1, 60)  # worker ready
        r.delete("bench:noop")
        t0 = time.perf_counter()
        for _ in range(floor_tasks):
            app.send_task("bench.noop")
        noop_s = _wait(lambda: int(r.get("bench:noop") or 0) >= floor_tasks, 300)
        noop_rate = floor_tasks / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(floor_tasks):
            app.send_task("bench.lock_update_insert", args=[1 + i % n_keys])
        _wait(lambda: int(r.get("bench:liu") or 0) >= floor_tasks, 300)
        liu_rate = floor_tasks / (time.perf_counter() - t0)

        from bkit.clock import clock_from_settings
        from bkit.ticking import bucket_of, minute_of

        clock = clock_from_settings()
        fanout_market = clock.now()
        bucket = bucket_of(fanout_market)
        offset_ms = (fanout_market - minute_of(bucket)).total_seconds() * 1000
        t0 = time.perf_counter()
        app.send_task("bkit.fanout_ticks")

        def ticked() -> int:
            with session_scope(engine) as s:
                return int(s.execute(select(func.count()).select_from(StrategySymbol).where(
                    StrategySymbol.last_bucket == bucket,
                    StrategySymbol.lease_owner.is_(None))).scalar_one())  # type: ignore
        try:  # ticks still queued when their `expires` (0.9 × period) passes are dropped
            # Polled every 0.5 s: the count reads every key row, and at 100,000 keys a
            # tighter poll would take the database's time from the workers it measures.
            elapsed = _wait(lambda: ticked() == n_keys, 75, poll=0.5)
        except TimeoutError:
            elapsed = time.perf_counter() - t0
        done = ticked()
        with session_scope(engine) as s:
            lags = sorted(max(0.0, lag - offset_ms) for lag in s.execute(
                select(StrategySymbol.last_tick_lag_ms).where(
                    StrategySymbol.last_bucket == bucket)).scalars())
        tick_rate = done / elapsed
        return {"keys": n_keys, "ticked": done, "ticks_per_s": tick_rate,
                "all_ticked_s": elapsed,
                "lag_p50_ms": statistics.quantiles(lags, n=100)[49],
                "lag_p99_ms": statistics.quantiles(lags, n=100)[98],
                "noop_per_s": noop_rate, "lock_update_insert_per_s": liu_rate,
                "ratio_vs_floor": tick_rate / liu_rate, "noop_wait_s": noop_s}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        drop_database(db)
        r.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--floor-tasks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="BKIT_TICK_BATCH_SIZE for the workers (default: bkit's)")
    args = parser.parse_args()
    for n in args.keys:
        res = run(n, args.concurrency, args.floor_tasks, args.batch_size)
        print(f"keys={res['keys']:>6}  ticked={res['ticked']:>6}  "
              f"ticks/s={res['ticks_per_s']:7.1f}  in {res['all_ticked_s']:6.1f}s  "
              f"lag p50={res['lag_p50_ms']:8.0f}ms "
              f"p99={res['lag_p99_ms']:8.0f}ms  | floors: no-op {res['noop_per_s']:7.1f}/s, "
              f"lock-update-insert {res['lock_update_insert_per_s']:7.1f}/s  "
              f"ticks/floor={res['ratio_vs_floor']:.2f}", flush=True)


if __name__ == "__main__":
    main()

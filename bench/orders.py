"""Orders throughput: N order intents through the `orders` queue (real worker, Redis,
PostgreSQL) to the venue model (balances, base-asset fees, filters) with a per-request
latency and lookup lag, via the real ccxt client.

    .venv/bin/python bench/orders.py --intents 1000 --latency-ms 20 --lookup-lag-s 1 --ack

Prints intents/s, latency p50/p99 (enqueue → recorded fill) and the number of duplicate
exchange orders (orders beyond one per client order id; must be 0). Every submit message is
sent twice, as a redelivery would. With `--ack` the venue answers every create with an ACK
(no status), so every intent is resolved by lookups through the lag; the floor printed
beside it is the same run with FULL answers and no lag.
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
from sqlalchemy import func, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.harness import create_database, drop_database, use_settings  # noqa: E402


def run(n: int, latency_ms: float, concurrency: int, redis_db: int = 9, *,
        lookup_lag_s: float = 1.0, ack: bool = True) -> dict[str, float]:
    from bkit.testing import read_candles_csv
    from bkit.venue import Venue, VenueFault

    db, db_url = create_database("bkit_bench_orders")
    broker_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(broker_url).flushdb()
    home = Path(f"/tmp/{db}")
    home.mkdir()
    fake = Venue(balances={"ETH": 10_000_000, "XRP": 0}).start()
    fake.load_candles("XRP/ETH", read_candles_csv(REPO / "bkit/data/XRP_ETH-1m.csv"))
    fake.set_clock(int(datetime(2019, 10, 12, tzinfo=UTC).timestamp() * 1000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env.update({"BKIT_HOME": str(home),
                "BKIT_DATABASE_URL": db_url,
                "BKIT_BROKER_URL": broker_url,
                "BKIT_STRATEGIES": "bench.bench_orders_strategies",
                "FAKE_EXCHANGE_URL": fake.base_url, "BKIT_FAKEBIN_API_KEY": "bench-key",
                "BKIT_FAKEBIN_SECRET": "bench-secret", "PYTHONPATH": str(REPO)})
    app = use_settings(env)
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.migrations import upgrade
    from bkit.store.outcomes import client_order_id
    from bkit.store.tables import OrderIntent, SignalRecord, StrategySymbol

    engine = get_engine()
    upgrade(engine)
    now = datetime.now(UTC)
    price = 0.0014
    with engine.begin() as conn:  # n keys, each with an entry waiting for its order
        conn.execute(insert(StrategySymbol), [
            {"strategy_name": f"b{i:05d}", "exchange_name": "fakebin", "symbol": "XRP/ETH",
             "status": "enabled", "last_bucket": -1, "lease_version": 0, "created_at": now,
             "updated_at": now} for i in range(n)])
        conn.execute(insert(SignalRecord), [
            {"key_id": i + 1, "signal_id": f"s{i:05d}", "symbol": "XRP/ETH",
             "strategy_name": f"b{i:05d}", "exchange_name": "fakebin", "position": "long",
             "state": "opening", "price_open": price, "price_take_profit": price * 1.01,
             "price_stop_loss": price * 0.99, "minute_estimated_time": 60, "note": "",
             "cost": 0.1, "created_at": now, "scheduled_at": now, "order_in_flight": True,
             "partial_profit_level": 0, "partial_loss_level": 0, "breakeven_fired": False,
             "close_rejections": 0} for i in range(n)])
        conn.execute(insert(OrderIntent), [
            {"key_id": i + 1, "signal_id": f"s{i:05d}", "kind": "open",
             "client_order_id": client_order_id(i + 1, f"s{i:05d}", "open", 0),
             "exchange_name": "fakebin", "symbol": "XRP/ETH", "side": "buy",
             "order_type": "market", "amount": 100.0, "price": price, "cost": 0.1,
             "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
             "updated_at": now} for i in range(n)])
    if latency_ms:
        fake.set_fault("*", VenueFault.timeout(latency_ms / 1000))  # a delay, not a loss
    fake.set_lookup_lag(lookup_lag_s)
    if ack:
        fake.set_response_type("ACK")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-Q", "orders", "-c",
         str(concurrency), "--loglevel", "WARNING"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=open(home / "worker.log", "wb"))  # noqa: SIM115
    try:
        time.sleep(3)  # worker boot (its start-up reconcile finds the intents too)
        sent_at = time.time()
        t0 = time.perf_counter()
        for intent_id in range(1, n + 1):
            app.send_task("bkit.orders.submit", args=[intent_id], queue="orders")
            app.send_task("bkit.orders.submit", args=[intent_id], queue="orders")

        def filled() -> int:
            with session_scope(engine) as s:
                return int(s.execute(select(func.count()).select_from(OrderIntent).where(
                    OrderIntent.status == "filled")).scalar_one())
        while filled() < n and time.perf_counter() - t0 < 600:
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        with session_scope(engine) as s:
            done_at = [i.updated_at.timestamp() for i in s.execute(select(OrderIntent).where(
                OrderIntent.status == "filled")).scalars()]
        latencies = sorted((t - sent_at) * 1000 for t in done_at)
        per_id: dict[str, int] = {}
        venue_orders = fake.orders()
        for order in venue_orders:
            per_id[order.client_order_id] = per_id.get(order.client_order_id, 0) + 1
        duplicates = sum(c - 1 for c in per_id.values() if c > 1)
        return {"intents": n, "filled": len(done_at), "intents_per_s": len(done_at) / elapsed,
                "p50_ms": statistics.quantiles(latencies, n=100)[49],
                "p99_ms": statistics.quantiles(latencies, n=100)[98],
                "duplicates": duplicates, "exchange_orders": len(venue_orders)}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        fake.stop()
        drop_database(db)
        redis.Redis.from_url(broker_url).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lookup-lag-s", type=float, default=1.0)
    parser.add_argument("--ack", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    for label, lag, ack in (("venue", args.lookup_lag_s, args.ack), ("floor", 0.0, False)):
        res = run(args.intents, args.latency_ms, args.concurrency, lookup_lag_s=lag, ack=ack)
        print(f"{label}: lookup_lag={lag}s ack={ack} intents={res['intents']} "
              f"filled={res['filled']} intents/s={res['intents_per_s']:.1f} "
              f"enqueue->fill p50={res['p50_ms']:.0f}ms p99={res['p99_ms']:.0f}ms "
              f"exchange_orders={res['exchange_orders']} duplicates={res['duplicates']}",
              flush=True)


if __name__ == "__main__":
    main()

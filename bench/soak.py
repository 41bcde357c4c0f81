"""Soak: many keys for hours of replayed market time on real candles, with random worker kills,
then the invariant checker. Orders go through the paper broker (persistent simulated fills),
or with `--venue` through the real ccxt client to the venue model (balances, base-asset fees,
filters, lookup lag), ending with the venue's balances equal to the initial ones plus every
fill bkit recorded (`bkit.testing.ledger`).

    .venv/bin/python bench/soak.py --keys 1000 --market-hours 24 --speed 40   # every minute
    .venv/bin/python bench/soak.py --keys 1000 --market-hours 24 --speed 600 \
        --tick-seconds 900                                                    # CI-sized

`--tick-seconds` is the beat period in market seconds (61 = live; the CI soak ticks every
15 market minutes so that 24 market hours of 1,000 keys fit in CI). `--speed` must leave the
workers time for every key within a period: 1,000 ticks need about a second here.

Prints ticks done, trades, kills and every invariant violation (none expected). Redis db 11
and a throwaway PostgreSQL database are used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import redis
from sqlalchemy import func, select, update

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.harness import create_database, drop_database, insert_keys  # noqa: E402
from bench.rss import RssSeries  # noqa: E402
from bench.rss import report as rss_report  # noqa: E402

REPLAY_START = datetime(2019, 10, 11, 1, 0, 5, tzinfo=UTC)


@dataclass
class SoakResult:
    keys: int
    market_hours: float
    tick_seconds: float
    wall_seconds: float
    ticks: int
    opened: int
    closed: int
    kills: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    #: RSS of each worker tree (main + pool children) every `rss_every` wall seconds.
    rss: RssSeries = field(default_factory=RssSeries)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "bkit", *args], cwd=REPO,
                            env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


def _venue(keys: int, speed: float, epoch: datetime) -> tuple[Any, dict[str, str]]:
    """A venue with one market per key (even keys replay XRP/ETH, odd ones UNITTEST/BTC, the
    2017 series shifted onto the 2019 clock) on the soak's replay clock."""
    from dataclasses import replace as dc_replace

    from bkit.testing import read_candles_csv
    from bkit.venue import MarketSpec, Venue

    xrp = read_candles_csv(REPO / "bkit/data/XRP_ETH-1m.csv")
    btc = read_candles_csv(REPO / "bkit/data/UNITTEST_BTC-1m.csv")
    shift = xrp[0].timestamp - btc[0].timestamp
    btc = [dc_replace(c, timestamp=c.timestamp + shift) for c in btc]
    markets = [MarketSpec(venue_symbol(i), tick_size="0.00000001", step_size="1.00000000",
                          min_qty="1.00000000", min_notional="0.00010000",
                          max_qty="90000000.00000000") for i in range(keys)]
    initial = {"ETH": "100000", "BTC": "100000",
               **{venue_symbol(i).split("/")[0]: "1000000" for i in range(keys)}}
    start_ms = REPLAY_START.timestamp() * 1000

    def clock() -> int:
        return int(start_ms + (datetime.now(UTC) - epoch).total_seconds() * 1000 * speed)

    venue = Venue(markets, balances=initial, clock=clock).start()
    for i in range(keys):
        venue.load_candles(venue_symbol(i), xrp if i % 2 == 0 else btc)
    venue.set_lookup_lag(0.5)
    return venue, initial


def _freeze_and_poll_stops(engine: Any, venue: Any) -> None:
    """For an exact end-of-run comparison: the venue's prices stop moving, and every resting
    protective stop is looked at once more (a stop that filled in the last seconds is then
    recorded, as the next poll would have done)."""
    from bkit.store.tables import OrderIntent

    venue.set_clock(venue.now_ms())
    frozen = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(update(OrderIntent).where(OrderIntent.kind == "stop",
                                               OrderIntent.status == "open")
                     .values(next_attempt_at=frozen))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.begin() as conn:
            stale = conn.execute(select(func.count()).select_from(OrderIntent).where(
                OrderIntent.kind == "stop", OrderIntent.status == "open",
                OrderIntent.updated_at < frozen)).scalar_one()  # type: ignore[operator]
        if stale == 0:
            return
        time.sleep(0.5)


def venue_symbol(i: int) -> str:
    return f"S{i:05d}/{'ETH' if i % 2 == 0 else 'BTC'}"


def run_soak(keys: int, market_hours: float, speed: float, kill_every: float,
             redis_db: int = 11, seed: int = 7, home: Path | None = None,
             tick_seconds: float = 61.0, venue: bool = False, rss_every: float = 30.0
             ) -> SoakResult:
    """Run the soak (Redis db `redis_db` is flushed: give concurrent soaks different ones)."""
    rng = random.Random(seed)
    db, db_url = create_database("bkit_soak")
    broker_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(broker_url).flushdb()
    home = home or Path(f"/tmp/{db}")
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env.update({"BKIT_HOME": str(home),
                "BKIT_DATABASE_URL": db_url,
                "BKIT_BROKER_URL": broker_url, "BKIT_STRATEGIES": "tests.e2e.soak_strategies",
                "BKIT_ORDER_BROKER": "paper", "BKIT_REPLAY_START": REPLAY_START.isoformat(),
                "BKIT_REPLAY_EPOCH": (datetime.now(UTC) + timedelta(seconds=4)).isoformat(),
                "BKIT_REPLAY_SPEED": str(speed), "BKIT_LEASE_SECONDS": "5",
                "BKIT_TICK_SECONDS": str(tick_seconds),
                "BKIT_TICK_SOFT_LIMIT": "3", "BKIT_TICK_HARD_LIMIT": "4",
                "BKIT_ORDER_SEND_LEASE_SECONDS": "4", "BKIT_RELAY_SECONDS": "2",
                "BKIT_ORDER_BACKOFF_MAX_SECONDS": "2",
                "PYTHONPATH": str(REPO)})
    place = None
    if venue:
        place = _venue(keys, speed, datetime.fromisoformat(env["BKIT_REPLAY_EPOCH"]))
        env.update({"BKIT_STRATEGIES": "tests.e2e.soak_venue_strategies",
                    "SOAK_VENUE_URL": place[0].base_url, "BKIT_SOAK_VENUE_API_KEY": "soak-key",
                    "BKIT_SOAK_VENUE_SECRET": "soak-secret"})
        env.pop("BKIT_ORDER_BROKER")
    saved = {k: v for k, v in os.environ.items() if k.startswith("BKIT_")}
    for name in ("BKIT_HOME", "BKIT_DATABASE_URL", "BKIT_BROKER_URL"):
        os.environ[name] = env[name]
    try:
        return _run(keys, market_hours, speed, tick_seconds, kill_every, rng, db, broker_url,
                    home, env, place, rss_every)
    finally:  # leave the caller's environment as it was
        if place is not None:
            place[0].stop()
        for name in [k for k in os.environ if k.startswith("BKIT_")]:
            del os.environ[name]
        os.environ.update(saved)
        from bkit.settings import reset_settings
        from bkit.store.engine import dispose_all

        reset_settings()
        dispose_all()


def _run(keys: int, market_hours: float, speed: float, tick_seconds: float,
         kill_every: float, rng: random.Random, db: str, broker_url: str, home: Path,
         env: dict[str, str], place: tuple[Any, dict[str, str]] | None = None,
         rss_every: float = 30.0) -> SoakResult:
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all, get_engine, session_scope
    from bkit.store.migrations import upgrade
    from bkit.store.tables import (
        EventRecord,
        OrderIntent,
        PaperOrder,
        StrategySymbol,
        TickHistoryRecord,
    )
    from bkit.testing.invariants import check_invariants

    reset_settings()
    dispose_all()
    engine = get_engine()
    upgrade(engine)
    insert_keys(engine, [venue_symbol(i) if place else f"S{i:05d}" for i in range(keys)],
                "soak", "soak-venue" if place else "soak-paper")
    worker_args = ["worker", "-Q", "ticks,orders,maint", "-c", "2", "--loglevel", "WARNING"]
    # Node names start with this run's database name, so the orphan sweep below only ever
    # matches this run's processes (other soaks and tests may run on the same machine).
    workers = [_spawn([*worker_args, "-n", f"{db}.w{i}@%h"], env, home / f"worker{i}.log")
               for i in range(2)]
    beat = _spawn(["beat", "-s", str(home / "beat-schedule"), "--loglevel", "WARNING"], env,
                  home / "beat.log")
    result = SoakResult(keys, market_hours, tick_seconds, 0.0, 0, 0, 0)
    started = time.monotonic()
    deadline = started + 4 + market_hours * 3600 / speed
    next_kill = started + kill_every
    rss_at = started + min(rss_every, 10.0)  # the first sample once the workers are up

    def sample_rss() -> None:
        result.rss.sample(time.monotonic() - started,
                          [(f"w{i}", w.pid) for i, w in enumerate(workers)])

    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if time.monotonic() >= rss_at:
                sample_rss()
                rss_at = time.monotonic() + rss_every
            if time.monotonic() < next_kill:
                continue
            next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
            index = rng.randrange(len(workers))
            victim = workers[index]
            children = psutil.Process(victim.pid).children()
            if children and rng.random() < 0.6:
                rng.choice(children).send_signal(signal.SIGKILL)
                result.kills.append(f"child of worker {index}")
            else:
                for child in children:
                    child.send_signal(signal.SIGKILL)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                name = f"{db}.w{index}r{len(result.kills)}@%h"
                workers[index] = _spawn([*worker_args, "-n", name], env,
                                        home / f"worker{index}.log")
                result.kills.append(f"main of worker {index}")
        sample_rss()  # the end of the replayed time, before the drain
        # Market time when the beat stops (the replay clock's formula; the epoch is 4 s after
        # launch): open positions must have been ticked shortly before it.
        epoch = datetime.fromisoformat(env["BKIT_REPLAY_EPOCH"])
        end_market = REPLAY_START + (datetime.now(UTC) - epoch) * speed
        # Stop ticking but keep beat: its outbox relay re-sends submits lost with a killed
        # worker, so every intent reaches its outcome before the check.
        with engine.begin() as conn:
            conn.execute(update(StrategySymbol).values(status="disabled"))
        if place is not None:
            _freeze_and_poll_stops(engine, place[0])
        drain_deadline = time.monotonic() + 60
        while time.monotonic() < drain_deadline:  # let the orders queue finish in-flight work
            with session_scope(engine) as session:
                waiting = session.execute(select(func.count()).select_from(OrderIntent).where(
                    OrderIntent.status.in_(["pending", "sending", "unknown", "acked", "open"]),  # type: ignore
                    ~((OrderIntent.kind == "stop") & (OrderIntent.status == "open")))
                ).scalar_one()
            if waiting == 0:
                break
            time.sleep(0.5)
        beat.terminate()
        beat.wait(timeout=30)
    finally:
        for proc in [*workers, beat]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*workers, beat]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for orphan in psutil.process_iter(["cmdline"]):  # pool children of killed mains
            if f"-n {db}.w" in " ".join(orphan.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    orphan.kill()
    result.wall_seconds = time.monotonic() - started
    with session_scope(engine) as session:
        counts = dict(session.execute(select(EventRecord.action, func.count()).where(
            EventRecord.kind == "signal").group_by(EventRecord.action)).all())
        # One compact tick-history row per completed tick (SPEC §13).
        result.ticks = session.execute(select(func.count()).select_from(TickHistoryRecord)
                                       ).scalar_one()
        intents = {i.client_order_id: i.status for i in session.execute(
            select(OrderIntent)).scalars()
            if not (i.kind == "stop" and i.status == "open")}  # a resting stop is fine
        paper = [o.client_order_id for o in session.execute(select(PaperOrder)).scalars()]
    result.opened, result.closed = counts.get("opened", 0), counts.get("closed", 0)
    # Positions must still be ticked near the end. A killed tick holds its keys until their
    # lease expires, and a period's ticks may be dropped under overload, so allow the lease
    # (wall seconds, in market time) plus two beat periods, and at least 10 market minutes.
    lease_market = float(env["BKIT_LEASE_SECONDS"]) * speed
    monitored_since = end_market - timedelta(seconds=max(600.0, lease_market + 2 * tick_seconds))
    result.violations = check_invariants(engine, monitored_since=monitored_since)
    if place is None:
        result.violations += [f"paper order {c} has no intent" for c in paper
                              if c not in intents]
        result.violations += [f"filled intent {c} has no paper order"
                              for c, s in intents.items() if s == "filled" and c not in set(paper)]
    result.violations += [f"intent {c} still {s}" for c, s in intents.items()
                          if s in ("pending", "sending", "unknown", "acked", "open")]
    if place is not None:  # the account holds exactly what bkit's recorded fills say
        from bkit.testing.ledger import venue_problems

        result.violations += venue_problems(engine, place[0], place[1], protected=True)
        paper = list(intents)  # no paper orders: the venue is the record
    if os.environ.get("SOAK_KEEP_DB"):  # for a post-mortem: the database is left in place
        print(f"database kept: {db}", flush=True)
    else:
        drop_database(db)
    redis.Redis.from_url(broker_url).flushdb()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--market-hours", type=float, default=24.0)
    parser.add_argument("--speed", type=float, default=10.0,
                        help="market seconds per real second")
    parser.add_argument("--tick-seconds", type=float, default=61.0,
                        help="beat period in market seconds")
    parser.add_argument("--kill-every", type=float, default=60.0, help="real seconds")
    parser.add_argument("--redis-db", type=int, default=11,
                        help="Redis database of the broker (flushed at start and end)")
    parser.add_argument("--rss-every", type=float, default=30.0,
                        help="wall seconds between two RSS samples of the workers")
    parser.add_argument("--venue", action="store_true",
                        help="orders through the real ccxt client to the venue model")
    args = parser.parse_args()
    res = run_soak(args.keys, args.market_hours, args.speed, args.kill_every,
                   redis_db=args.redis_db,
                   tick_seconds=args.tick_seconds, venue=args.venue, rss_every=args.rss_every)
    print(f"keys={res.keys} market_hours={res.market_hours:g} "
          f"tick_seconds={res.tick_seconds:g} wall={res.wall_seconds:.0f}s "
          f"ticks={res.ticks} opened={res.opened} closed={res.closed} kills={len(res.kills)} "
          f"violations={len(res.violations)}", flush=True)
    if res.rss.times:
        print(rss_report(res.rss), flush=True)
    for violation in res.violations:
        print("VIOLATION:", violation)
    sys.exit(1 if res.violations else 0)


if __name__ == "__main__":
    main()

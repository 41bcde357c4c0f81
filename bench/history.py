"""History does not grow the cost (SPEC §13): the same reads and ticks on a fresh database and
on one holding 30 days × 1,000 keys of history, on PostgreSQL, in one process.

    .venv/bin/python bench/history.py [--keys 1000] [--days 30] [--trades-per-day 6]

1. *fresh*: a new database, the keys, `--minutes` minutes ticked through the project's own
   write path (`run_ticks`, batches of 20 keys as the workers do). Its growth per tick is the
   "bytes per tick" figure (nothing pruned: the worst case).
2. *aged*: a new database, the same keys, then a bulk load of the rows those days would have
   left (copied from the fresh run's real rows, every key's interleaved in time order as
   live keys write them): every trade as a closed `signal` row with its
   opened / closed events, a few error events, the key counters, and `BKIT_TICK_HISTORY_DAYS`
   + 1 days of compact tick rows (the extra day is what the pruning task deletes while the
   aged ticks run). Then the same minutes are ticked, with the pruning task running beside them.

For each: the Prometheus scrape, `bkit status` (`key_statuses`), `Live.get_data` of one key
(median of 9, fresh and aged measured in turn) and ticks per second; beside them the floors
of the same run: one `SELECT 1` round trip and reading every key row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.harness import create_database, drop_database, insert_keys  # noqa: E402

START = datetime(2019, 10, 11, 6, 0, tzinfo=UTC)  # inside the shipped XRP/ETH candles
STRATEGY = "hist-bench"
SIZE_STRATEGY = "hist-size"


PRUNER = """
import json, time
from datetime import datetime
from bkit.store.engine import make_engine
from bkit.store.tick_history import prune
engine = make_engine("{url}")
t0 = time.perf_counter()
done = prune(engine, datetime.fromisoformat("{when}"), {days}, max_batches=100_000)
print(json.dumps({{"rows": done.history_rows, "batches": done.batches,
                  "seconds": time.perf_counter() - t0}}))
"""


def _strategy(symbol: str, when: datetime, price: float) -> dict | None:
    """Long on one key in three, so ticks mix idle, opened, active and closed."""
    if int(symbol[1:6]) % 3:
        return None
    return {"position": "long", "price_take_profit": price * 1.01,
            "price_stop_loss": price * 0.99, "minute_estimated_time": 5, "cost": 100.0}


def _trading_strategy(symbol: str, when: datetime, price: float) -> dict | None:
    """A 15m strategy of the usual shape, in the market on every key: TP / SL 1 % away,
    120-minute limit (what the bytes-per-tick figure is measured with)."""
    return {"position": "long" if int(symbol[1:6]) % 2 else "short",
            "price_take_profit": price * (1.01 if int(symbol[1:6]) % 2 else 0.99),
            "price_stop_loss": price * (0.99 if int(symbol[1:6]) % 2 else 1.01),
            "minute_estimated_time": 120, "cost": 100.0}


def _point_at(db_url: str) -> None:
    os.environ["BKIT_DATABASE_URL"] = db_url
    os.environ["BKIT_HOME"] = f"/tmp/bkit-history-bench-{os.getpid()}"
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all
    from bkit.store.tick_history import forget_presence_cache

    reset_settings()
    dispose_all()
    forget_presence_cache()


def _setup(prefix: str, n_keys: int, strategy: str = STRATEGY) -> tuple[str, Any, list[int]]:
    from bkit.store.engine import get_engine
    from bkit.store.migrations import upgrade

    name, url = create_database(prefix)
    _point_at(url)
    engine = get_engine()
    upgrade(engine)
    ids = insert_keys(engine, [f"S{i:05d}/ETH" for i in range(n_keys)], strategy, "paper")
    return name, engine, ids


def _tick(engine: Any, ids: list[int], first: datetime, minutes: int) -> tuple[int, float]:
    """Tick every key for `minutes` minutes from `first`; (ticks, wall seconds)."""
    from bkit.clock import ManualClock
    from bkit.ticking import TickEnv, bucket_of, run_ticks

    clock = ManualClock(first)
    env = TickEnv(engine=engine, clock=clock)
    done, started = 0, time.perf_counter()
    for minute in range(minutes):
        when = first + timedelta(minutes=minute)
        clock.current = when + timedelta(seconds=1)
        for i in range(0, len(ids), 20):
            out = run_ticks(env, ids[i:i + 20], bucket_of(when))
            done += sum(r is not None for r in out.results.values())
    return done, time.perf_counter() - started


def _sizes(engine: Any) -> dict[str, int]:
    """Bytes on disk per table, its indexes and TOAST included."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return {name: int(size) for name, size in conn.execute(text(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND c.relkind = 'r'"))}


def _count(engine: Any, sql: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar() or 0)


def _readers(engine: Any, key_symbol: str) -> dict[str, Any]:
    """The reads compared, each bound to `engine`, and the floors."""
    from sqlalchemy import text

    from bkit.live import LiveApi
    from bkit.ops.admin import key_statuses
    from bkit.ops.metrics import render_metrics
    live = LiveApi()
    live._engine = lambda: engine  # type: ignore[method-assign]

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar()

    def key_rows() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM strategy_symbol")).all()

    return {"scrape": lambda: render_metrics(lambda: engine),
            "status": lambda: key_statuses(engine=engine),
            "get_data": lambda: live.get_data(key_symbol, STRATEGY, "paper"),
            "floor_select1": select_one, "floor_key_rows": key_rows}


def _interleaved(fresh: dict[str, Any], aged: dict[str, Any], repeats: int = 9
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each read on both databases, the two taken in turn (fresh, aged, fresh…)
    so that this machine's drift between minutes weighs on both alike."""
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in fresh}
    for name in fresh:
        fresh[name](), aged[name]()  # warm
        for _ in range(repeats):
            for side, reads in enumerate((fresh, aged)):
                t0 = time.perf_counter()
                reads[name]()
                times[name][side].append((time.perf_counter() - t0) * 1000)
    return ({n: statistics.median(t[0]) for n, t in times.items()},
            {n: statistics.median(t[1]) for n, t in times.items()})


def _copy(engine: Any, table: str, columns: list[str], rows: Any) -> int:
    """COPY rows (tuples) into `table`; returns how many."""
    raw = engine.raw_connection()
    count = 0
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        raw.commit()
    finally:
        raw.close()
    return count


def _templates(engine: Any) -> tuple[dict, dict, dict, dict]:
    """A real closed trade of the fresh run: its signal row and opened / closed events, and
    a real error event (made here if the run had none)."""
    from sqlalchemy import select

    from bkit.store.tables import EventRecord, SignalRecord

    with engine.connect() as conn:
        signal = conn.execute(select(SignalRecord.__table__).where(  # type: ignore[attr-defined]
            SignalRecord.state == "closed").limit(1)).mappings().first()
        if signal is None:
            raise SystemExit("the fresh run closed no trade: tick more minutes (--minutes)")
        events = {row["action"]: dict(row) for row in conn.execute(
            select(EventRecord.__table__).where(  # type: ignore[attr-defined]
                EventRecord.key_id == signal["key_id"], EventRecord.kind == "signal",
                EventRecord.signal_id == signal["signal_id"])).mappings()}
    error = {"kind": "error", "action": None, "message": "paper XRP/ETH: no closed candles "
             "to price from", "payload": '{"stage":"tick"}'}
    return dict(signal), events["opened"], events["closed"], error


def _age(engine: Any, ids: list[int], templates: tuple[dict, dict, dict, dict], days: int,
         trades_per_day: int, keep_days: int) -> dict[str, int]:
    """Bulk-load what `days` days of the write path leave behind, ending at START."""
    import json

    from sqlalchemy import text, update

    from bkit.core.running_statistics import fold_trades
    from bkit.store.closed_trades import statistics_values
    from bkit.store.tables import StrategySymbol
    from bkit.store.tick_history import ACTION_CODES

    signal, opened, closed, error = templates
    first = START - timedelta(days=days)
    step = timedelta(days=1) / trades_per_day
    sig_cols = [c for c in signal if c != "id"]
    ev_cols = ["key_id", "kind", "action", "symbol", "strategy_name", "exchange_name",
               "signal_id", "message", "origin", "created_at", "payload", "position",
               "price_open", "price_take_profit", "price_stop_loss", "pnl_percentage", "reason"]

    def as_text(value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict | list) else value

    # Rows go in in time order, every key's interleaved, as live keys write them: a key's
    # trades and events are spread over the whole table, not on a few pages of their own.
    def trades() -> Any:
        for n in range(days * trades_per_day):
            for key_id in ids:
                row = dict(signal, key_id=key_id, signal_id=f"aged-{n}",
                           created_at=first + n * step, pending_at=first + n * step,
                           closed_at=first + n * step + timedelta(minutes=30))
                yield tuple(as_text(row[c]) for c in sig_cols)

    def events() -> Any:
        for n in range(days * trades_per_day):
            at = first + n * step
            if n % trades_per_day == 0:  # an error a day
                for key_id in ids:
                    yield (key_id, error["kind"], None, "S/ETH", STRATEGY, "paper", None,
                           error["message"], "bench", at, error["payload"],
                           None, None, None, None, None, None)
            for template, moment in ((opened, at), (closed, at + timedelta(minutes=30))):
                for key_id in ids:
                    row = dict(template, key_id=key_id, signal_id=f"aged-{n}",
                               created_at=moment)
                    yield tuple(as_text(row[c]) for c in ev_cols)

    def ticks() -> Any:
        since = int((START - timedelta(days=keep_days + 1)).timestamp() // 60)
        end = int(START.timestamp() // 60)
        codes = (ACTION_CODES["idle"], ACTION_CODES["active"])
        for minute in range(since, end):
            for key_id in ids:
                yield (key_id, minute, codes[key_id % 2], 0.0014 + (minute % 97) * 1e-7,
                       None, 3.0)

    loaded = {"signal": _copy(engine, '"signal"', sig_cols, trades()),
              "event": _copy(engine, "event", ev_cols, events()),
              "tick_history": _copy(engine, "tick_history", [
                  "key_id", "minute", "action", "price", "pnl", "duration_ms"], ticks())}
    minutes = days * 1440
    # Every key holds the same trades: their running statistics, as the closes left them.
    stats = fold_trades((signal["pnl_percentage"] or 0.0, first + n * step,
                         first + n * step + timedelta(minutes=30))
                        for n in range(days * trades_per_day))
    with engine.begin() as conn:
        conn.execute(update(StrategySymbol).values(
            ticks_total=minutes, first_tick_at=first, errors_total=days, ticks_failed=days,
            last_error_message=error["message"], last_error_at=first,
            last_tick_at=START - timedelta(minutes=1), **statistics_values(stats)))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--trades-per-day", type=int, default=6)
    parser.add_argument("--minutes", type=int, default=10, help="minutes ticked per phase")
    parser.add_argument("--size-keys", type=int, default=50)
    parser.add_argument("--size-minutes", type=int, default=600,
                        help="minutes ticked for the bytes-per-tick figure")
    args = parser.parse_args()

    from bkit.core.registry import add_strategy
    from bkit.exchange.paper import add_paper_exchange
    from bkit.settings import get_settings

    add_paper_exchange("paper")
    add_strategy(STRATEGY, _strategy, interval="5m")
    keep_days = int(get_settings().tick_history_days)

    add_strategy(SIZE_STRATEGY, _trading_strategy, interval="15m")
    size_db, engine, ids = _setup("bkit_hist_size", args.size_keys, SIZE_STRATEGY)
    try:
        before = _sizes(engine)
        size_ticks, _ = _tick(engine, ids, START, args.size_minutes)
        after = _sizes(engine)
        trades = _count(engine, "SELECT count(*) FROM signal WHERE state = 'closed'")
    finally:
        drop_database(size_db)
    grown = {t: after.get(t, 0) - before.get(t, 0) for t in after}
    kept_history = grown.get("tick_history", 0)
    # The key rows are rewritten in place each tick: their size (dead versions until vacuum
    # included) is bounded by the number of keys, not by the ticks made.
    key_rows = grown.pop("strategy_symbol", 0)
    permanent = sum(grown.values()) - kept_history

    fresh_db, engine, ids = _setup("bkit_hist_fresh", args.keys)
    aged_db = None
    try:
        made, seconds = _tick(engine, ids, START, args.minutes)
        fresh_engine = engine
        templates = _templates(engine)

        aged_db, engine, ids = _setup("bkit_hist_aged", args.keys)
        t0 = time.perf_counter()
        loaded = _age(engine, ids, templates, args.days, args.trades_per_day, keep_days)
        load_s = time.perf_counter() - t0
        aged_made, aged_seconds = _tick(engine, ids, START, args.minutes)
        fresh, aged = _interleaved(_readers(fresh_engine, "S00000/ETH"),
                                   _readers(engine, "S00000/ETH"))
        fresh["ticks_per_s"], aged["ticks_per_s"] = made / seconds, aged_made / aged_seconds
        # The pruning task deletes the day past BKIT_TICK_HISTORY_DAYS from its own process,
        # as a worker of the maint queue would, while the same ticks go on.
        pruner = subprocess.Popen([sys.executable, "-c", PRUNER.format(
            url=os.environ["BKIT_DATABASE_URL"], when=START.isoformat(), days=keep_days)],
            cwd=REPO, stdout=subprocess.PIPE, text=True)
        pruning_made, pruning_seconds = _tick(engine, ids, START + timedelta(
            minutes=args.minutes), args.minutes)
        prune_out, _ = pruner.communicate(timeout=1800)
        pruned = json.loads(prune_out)
        aged["ticks_pruning"] = pruning_made / pruning_seconds
    finally:
        for name in (fresh_db, aged_db):
            if name:
                drop_database(name)

    print(f"history bench: {args.keys} keys, PostgreSQL, one process; aged = {args.days} days "
          f"({args.keys * args.days * 1440:,} ticks made): {loaded['signal']:,} closed trades, "
          f"{loaded['event']:,} events, {loaded['tick_history']:,} compact tick rows "
          f"loaded in {load_s:.0f} s")
    print(f"pruning (its own process) beside aged ticks: {pruned['rows']:,} rows in "
          f"{pruned['batches']} batches of 5,000, {pruned['seconds']:.1f} s; ticks/s meanwhile "
          f"{aged['ticks_pruning']:.1f} (aged, not pruning: {aged['ticks_per_s']:.1f})")
    print(f"{'':24}{'fresh':>10}{'aged':>10}{'aged/fresh':>12}")
    for name, label in (("scrape", "metrics scrape (ms)"), ("status", "bkit status (ms)"),
                        ("get_data", "Live.get_data (ms)"), ("ticks_per_s", "ticks/s")):
        print(f"{label:24}{fresh[name]:10.1f}{aged[name]:10.1f}{aged[name] / fresh[name]:12.2f}")
    print(f"{'floor: SELECT 1 (ms)':24}{fresh['floor_select1']:10.2f}{aged['floor_select1']:10.2f}")
    print(f"{'floor: key rows (ms)':24}{fresh['floor_key_rows']:10.2f}"
          f"{aged['floor_key_rows']:10.2f}")
    run_days = args.days
    amortised = (permanent + kept_history * min(1.0, keep_days / run_days)) / size_ticks
    print(f"bytes stored per tick ({args.size_keys} keys x {args.size_minutes} min = "
          f"{size_ticks:,} ticks through the write path, {trades} trades closed, indexes "
          f"included): kept for ever {permanent / size_ticks:.0f} (trades, transitions, "
          f"milestones), compact tick history {kept_history / size_ticks:.0f} while kept")
    print(f"  amortised over a {run_days}-day run with BKIT_TICK_HISTORY_DAYS={keep_days}: "
          f"{amortised:.0f} bytes per tick (goal <= 150); with nothing ever pruned: "
          f"{(permanent + kept_history) / size_ticks:.0f}")
    print(f"  key rows (bounded by keys, rewritten in place): {key_rows / args.size_keys:,.0f} "
          f"bytes per key after {args.size_minutes} minutes")
    print("  by table: " + ", ".join(f"{t} {b / size_ticks:.0f}" for t, b in
                                     sorted(grown.items(), key=lambda kv: -kv[1]) if b))


if __name__ == "__main__":
    main()

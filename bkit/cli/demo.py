"""`bkit db upgrade` and `bkit demo` (a real worker + beat on the embedded default).

The demo steps market time itself (`bkit.clock.SteppedClock`): it moves the clock to the next
minute only once both demo keys ticked the current one, so every minute is ticked once, in
order, whatever the machine's load, and two runs print the same trades. Each minute's events
are printed in symbol order once the minute is complete, so the two worker processes' timing
does not change the output either."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from bkit.cli.output import EXIT_ERROR, EXIT_OK, say


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from bkit.store.engine import get_engine
    from bkit.store.migrations import upgrade

    before, after = upgrade(get_engine())
    say(f"database schema: {before if before is not None else 'empty'} -> {after}")
    return EXIT_OK


#: Wall seconds the demo waits for the worker to tick one minute (the first: its start-up).
FIRST_MINUTE_TIMEOUT_S = 90.0
MINUTE_TIMEOUT_S = 30.0
#: Wall seconds between two sends of a minute's tick task while the minute is not ticked
#: (a tick task that waited past its expiry is discarded unrun by the worker).
RESEND_S = 2.0
#: The worker's replay speed: with the stepped clock it only paces the beat, whose fan-out
#: re-ticks the current minute about once a second (the demo sends each minute's tick
#: itself); faster, the beat's own messages would crowd out the demo's.
WORKER_SPEED = 60.0
#: The error the paper exchange gives for a minute in a gap of the recorded feed.
NO_CANDLES = "no closed candles to price from"


def _demo_env(home: Path, start: datetime) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BKIT_HOME": str(home),
        "BKIT_STRATEGIES": "bkit.demo",
        "BKIT_REPLAY_START": start.isoformat(),
        "BKIT_REPLAY_CLOCK_FILE": str(home / "market-now"),
        "BKIT_REPLAY_SPEED": str(WORKER_SPEED),
    })
    for name in ("BKIT_DATABASE_URL", "BKIT_BROKER_URL", "BKIT_REPLAY_EPOCH",
                 "BKIT_ORDER_BROKER"):
        env.pop(name, None)
    return env


def describe_event(kind: str, message: str | None, payload: dict | None, symbol: str | None,
                   when: datetime) -> str | None:
    """One line of the demo's output for a signal or error event (None: not shown)."""
    from bkit.core.results import TickResult

    if kind == "error":
        text = message or ""
        if NO_CANDLES in text:
            return (f"{when:%Y-%m-%d %H:%M} {symbol or '?':<13} no price  no candle closed in "
                    "the 5 minutes before: a gap in the recorded feed, this minute is skipped")
        return f"{when:%Y-%m-%d %H:%M} {symbol or '?':<13} error     {text}"
    if not payload or payload.get("action") not in ("opened", "closed", "cancelled"):
        return None
    result = TickResult.from_dict(payload)
    signal_ = result.signal
    head = f"{result.created_at:%Y-%m-%d %H:%M} {result.symbol:<13} {result.action:<9}"
    if signal_ is None:
        return head
    body = (f"{signal_.position:<5} open {signal_.price_open:.8g} "
            f"TP {signal_.price_take_profit:.8g} SL {signal_.price_stop_loss:.8g}")
    if result.action == "closed" and result.pnl is not None:
        body += (f" -> {result.close_reason} at {result.current_price:.8g}, "
                 f"PnL {result.pnl.pnl_percentage:+.3f}%")
    if result.action == "cancelled":
        body += f" -> cancelled ({result.reason})"
    return f"{head} {body}"


def _minute_done(engine: object, key_ids: list[int], bucket: int) -> bool:
    """Every key claimed `bucket` (or a later minute) and let go of it: ticked or failed."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from bkit.store.engine import session_scope
    from bkit.store.tables import StrategySymbol

    with session_scope(engine) as session:  # type: ignore[arg-type]
        done = session.execute(
            select(func.count()).select_from(StrategySymbol)
            .where(col(StrategySymbol.id).in_(key_ids), col(StrategySymbol.last_bucket) >= bucket,
                   col(StrategySymbol.lease_owner).is_(None))).scalar_one()
    return done == len(key_ids)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a real Celery worker + beat on the embedded default (SQLite + filesystem broker)
    with the paper exchange replaying real candles, and print trades minute by minute."""
    from bkit.settings import get_settings, reset_settings

    home = Path(args.home) if args.home else get_settings().home / "demo"
    if home.exists():
        shutil.rmtree(home)  # the demo's own folder only: a fresh run every time
    home.mkdir(parents=True)
    from bkit.demo import replay_start

    start = replay_start()
    env = _demo_env(home, start)
    for name in ("BKIT_DATABASE_URL", "BKIT_BROKER_URL", "BKIT_REPLAY_EPOCH"):
        os.environ.pop(name, None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("BKIT_")})
    reset_settings()

    import bkit.demo as demo
    from bkit.celery import make_app
    from bkit.clock import SteppedClock
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.event_log import events_after
    from bkit.store.keys import ensure_key
    from bkit.store.migrations import upgrade
    from bkit.ticking import bucket_of

    engine = get_engine()
    upgrade(engine)
    key_ids = [ensure_key(engine, demo.DEMO_STRATEGY, demo.DEMO_EXCHANGE, symbol)
               for symbol in demo.DEMO_SYMBOLS]
    clock = SteppedClock(home / "market-now", start, WORKER_SPEED)
    clock.set(start)
    app = make_app()
    log_path = home / "worker.log"
    say(f"bkit demo: {demo.DEMO_STRATEGY} on {', '.join(demo.DEMO_SYMBOLS)} "
        f"(paper exchange, real candles), {args.minutes} market minutes from "
        f"{start:%Y-%m-%d %H:%M} UTC, at most {args.speed:g}x")
    say(f"  {demo.STRATEGY_RULE}")
    say("  market time moves a minute once both keys ticked the last one: every minute is "
        "ticked once, in order, so two runs print the same trades")
    say("  UNITTEST/BTC's candles (2017) are shifted onto XRP/ETH's clock; PnL is after "
        "0.1 % fee and 0.1 % slippage per side")
    say(f"state in {home}; worker + beat (celery -A bkit worker -B) log to {log_path}")
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bkit", "--quiet", "worker", "-B", "-c", "2",
             "--loglevel", "WARNING", "-s", str(home / "celerybeat-schedule")],
            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    after, counts, opened = 0, Counter[str](), Counter[str]()
    began = time.monotonic()
    try:
        for i in range(args.minutes):
            minute = start + timedelta(minutes=i)
            bucket = bucket_of(minute)
            clock.set(minute)
            deadline = time.monotonic() + (FIRST_MINUTE_TIMEOUT_S if i == 0
                                           else MINUTE_TIMEOUT_S)
            sent_at = -RESEND_S
            while not _minute_done(engine, key_ids, bucket):
                if worker.poll() is not None:
                    say(f"worker exited early with code {worker.returncode}; its log:\n"
                        f"{_tail(log_path)}")
                    return EXIT_ERROR
                if time.monotonic() > deadline:
                    say(f"the worker did not tick {minute:%H:%M} in time; its log:\n"
                        f"{_tail(log_path)}")
                    return EXIT_ERROR
                if time.monotonic() - sent_at >= RESEND_S:  # the beat ticks it too, later
                    app.send_task("bkit.tick_batch", args=[key_ids, bucket], queue="ticks",
                                  argsrepr=f"demo, minute {minute:%Y-%m-%dT%H:%MZ}")
                    sent_at = time.monotonic()
                time.sleep(0.01)
            with session_scope(engine) as session:
                rows = events_after(session, after, kinds=("signal", "error"))
                batch = [(r.id or 0, r.kind, r.action, r.message, r.payload, r.symbol,
                          r.created_at) for r in rows]
            after = max([after] + [row[0] for row in batch])
            for _, kind, action, message, payload, symbol, when in sorted(
                    batch, key=lambda row: (row[6], row[5] or "", row[0])):
                line = describe_event(kind, message, payload, symbol, when)
                if line is None:
                    continue
                counts["no price" if kind == "error" and NO_CANDLES in (message or "")
                       else kind if kind == "error" else action or "?"] += 1
                opened[symbol or "?"] += action == "opened"
                say(line)
            pace = began + (i + 1) * 60 / args.speed - time.monotonic()
            if pace > 0:  # no faster than --speed market seconds per wall second
                time.sleep(pace)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    say(f"done: {counts['opened']} opened, {counts['closed']} closed, "
        f"{counts['cancelled']} cancelled, {counts['no price']} minutes without a price "
        f"(feed gaps), {counts['error']} errors")
    from bkit.live import Live

    for symbol in demo.DEMO_SYMBOLS:
        data = Live.get_data(symbol, demo.DEMO_STRATEGY, demo.DEMO_EXCHANGE)
        line = f"{symbol}: {data['total_closed']} closed, total PnL {data['total_pnl']:+.3f}%"
        if not data["total_closed"]:
            line += (" (its position is still open: try more --minutes)"
                     if opened[symbol] else
                     " (no entry: its price never strayed 0.3 % from its 30-minute mean in "
                     "these minutes; try more --minutes)")
        say(line)
    return EXIT_OK if not counts["error"] else EXIT_ERROR

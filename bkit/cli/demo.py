"""`bkit db upgrade` and `bkit demo` (a real worker + beat on the embedded default)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bkit.cli.output import EXIT_ERROR, EXIT_OK, say


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from bkit.store.engine import get_engine
    from bkit.store.migrations import upgrade

    before, after = upgrade(get_engine())
    say(f"database schema: {before if before is not None else 'empty'} -> {after}")
    return EXIT_OK


def _demo_env(home: Path, speed: float) -> dict[str, str]:
    from bkit.demo import replay_start

    env = dict(os.environ)
    env.update({
        "BKIT_HOME": str(home),
        "BKIT_STRATEGIES": "bkit.demo",
        "BKIT_REPLAY_START": replay_start().isoformat(),
        "BKIT_REPLAY_EPOCH": (datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
        "BKIT_REPLAY_SPEED": str(speed),
    })
    env.pop("BKIT_DATABASE_URL", None)
    env.pop("BKIT_BROKER_URL", None)
    return env


def _describe(payload: dict) -> str:
    from bkit.core.results import TickResult

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


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a real Celery worker + beat on the embedded default (SQLite + filesystem broker)
    with the paper exchange replaying real candles, and print trades as they happen."""
    from bkit.settings import get_settings, reset_settings

    home = Path(args.home) if args.home else get_settings().home / "demo"
    if home.exists():
        shutil.rmtree(home)  # the demo's own folder only: a fresh run every time
    env = _demo_env(home, args.speed)
    os.environ.update({k: v for k, v in env.items() if k.startswith("BKIT_")})
    os.environ.pop("BKIT_DATABASE_URL", None)
    reset_settings()

    import bkit.demo as demo
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.event_log import events_after
    from bkit.store.keys import ensure_key
    from bkit.store.migrations import upgrade

    engine = get_engine()
    upgrade(engine)
    for symbol in demo.DEMO_SYMBOLS:
        ensure_key(engine, demo.DEMO_STRATEGY, demo.DEMO_EXCHANGE, symbol)
    say(f"bkit demo: {demo.DEMO_STRATEGY} on {', '.join(demo.DEMO_SYMBOLS)} "
        f"(paper exchange, real candles), {args.minutes} market minutes at {args.speed:g}x")
    say(f"state in {home}; worker + beat: celery -A bkit worker -B")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bkit", "--quiet", "worker", "-B", "-c", "2",
         "--loglevel", "WARNING", "-s", str(home / "celerybeat-schedule")], env=env)
    deadline = time.monotonic() + 3 + args.minutes * 60 / args.speed
    after, counts = 0, {"opened": 0, "closed": 0, "cancelled": 0, "error": 0}
    try:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                say(f"worker exited early with code {worker.returncode}")
                return EXIT_ERROR
            with session_scope(engine) as session:
                rows = events_after(session, after, kinds=("signal", "error"))
                batch = [(r.id, r.kind, r.action, r.message, r.payload) for r in rows]
            for event_id, kind, action, message, payload in batch:
                after = event_id or after
                if kind == "error":
                    counts["error"] += 1
                    say(f"error: {message}")
                elif action in ("opened", "closed", "cancelled"):
                    counts[action] += 1
                    say(_describe(payload or {}))
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    say(f"done: {counts['opened']} opened, {counts['closed']} closed, "
        f"{counts['cancelled']} cancelled, {counts['error']} errors")
    from bkit.live import Live

    for symbol in demo.DEMO_SYMBOLS:
        data = Live.get_data(symbol, demo.DEMO_STRATEGY, demo.DEMO_EXCHANGE)
        say(f"{symbol}: {data['total_closed']} closed, total PnL {data['total_pnl']:+.3f}%")
    return EXIT_OK

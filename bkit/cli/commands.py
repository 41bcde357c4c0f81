"""The admin commands of `bkit`: they call `bkit.ops.admin` and print tables (or JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bkit.cli.output import EXIT_ERROR, EXIT_OK, format_table, say
from bkit.core.errors import UnknownNameError

if TYPE_CHECKING:
    from bkit.ops.admin import KeyStatus


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def format_lag(ms: float | None) -> str | None:
    """A tick lag for people: `850 ms`, `12.5 s`, `7.0 min`, `3.2 h`, `41.0 d`."""
    if ms is None:
        return None
    seconds = ms / 1000
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{ms:.0f} ms" if seconds < 1 else f"{seconds / size:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


def _json(value: object) -> str:
    """JSON with ISO 8601 datetimes (UTC)."""
    return json.dumps(value, indent=2,
                      default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def _symbols(args: argparse.Namespace) -> list[str] | None:
    from bkit.ops.admin import UnknownTargetError

    if args.all and args.symbols:
        raise UnknownTargetError("pass symbols or --all, not both")
    if not args.all and not args.symbols:
        raise UnknownTargetError("name at least one symbol, or --all for every key of the "
                                 "strategy on the exchange")
    return None if args.all else list(args.symbols)


def _print_changes(report: object, verb: str) -> int:
    from bkit.ops.admin import ChangeReport

    assert isinstance(report, ChangeReport)
    for change in report.changes:
        before = "new key" if change.before is None else change.before
        note = "" if change.changed else " (unchanged)"
        say(f"{verb} {report.strategy_name}/{report.exchange_name}/{change.symbol}: "
               f"{before} -> {change.after}{note}")
    say(f"{report.changed_count} of {len(report.changes)} keys changed; the next fan-out "
           "applies it (no restart needed)")
    return EXIT_OK


def cmd_strategies(args: argparse.Namespace) -> int:
    from bkit.ops.admin import load_registry, strategies_overview

    registry = load_registry()
    infos = strategies_overview(registry=registry)
    if args.json:
        say(_json([{**dataclasses.asdict(i), "keys": [
            {"exchange_name": k.exchange_name, "symbol": k.symbol, "status": k.status}
            for k in i.keys]} for i in infos]))
        return EXIT_OK
    if not infos:
        say("no strategies registered: set BKIT_STRATEGIES to your strategy modules")
        return EXIT_OK
    rows = [(i.strategy_name, i.interval, i.risk_name, len(i.keys),
             ", ".join(f"{k.exchange_name}/{k.symbol}={k.status}" for k in i.keys) or None,
             i.note or None) for i in infos]
    say(format_table(("STRATEGY", "INTERVAL", "RISK", "KEYS", "KEY STATUS", "NOTE"), rows))
    say(f"exchanges: {', '.join(sorted(registry.exchanges)) or 'none'}")
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    from bkit.ops.admin import enable_keys, load_registry

    report = enable_keys(args.strategy, args.symbols, args.exchange, actor=args.actor,
                         registry=load_registry(), explicit_cost=args.explicit_cost)
    return _print_changes(report, "enable")


def cmd_set_status(args: argparse.Namespace) -> int:
    from bkit.ops.admin import change_status, load_registry

    report = change_status(args.strategy, _symbols(args), args.status, args.exchange,
                           actor=args.actor, force=getattr(args, "force", False),
                           only_from=args.only_from, registry=load_registry())
    return _print_changes(report, args.command)


def cmd_status(args: argparse.Namespace) -> int:
    from bkit.ops.admin import halt_state, key_statuses
    from bkit.strategy_modules import StrategyImportError, import_strategy_modules

    try:  # the status is read from the database; a broken module is still an error
        import_strategy_modules()
        broken = None
    except StrategyImportError as exc:
        broken = str(exc)
    halt = halt_state()
    keys = key_statuses(args.strategy, args.exchange)
    code = EXIT_OK if broken is None else EXIT_ERROR
    if args.json:
        say(_json({"halted": halt.halted, "halt": dataclasses.asdict(halt),
                   "failing_keys": sum(k.failing for k in keys), "strategy_import_error": broken,
                   "keys": [{**dataclasses.asdict(k), "win_rate": k.win_rate} for k in keys]}))
        return code
    if halt.halted:
        say(f"TRADING HALTED by {halt.actor or '?'} at {_when(halt.at)} UTC"
               f"{': ' + halt.reason if halt.reason else ''} (bkit unhalt to resume)")
    else:
        say("trading: running (not halted)")
    rows = [(k.strategy_name, k.exchange_name, k.symbol, k.status, _live(k),
             _when(k.last_tick_at),
             format_lag(k.last_tick_lag_ms),
             k.closed_trades, None if k.win_rate is None else f"{k.win_rate:.1f}",
             f"{k.total_pnl:+.3f}",
             None if k.realised_pnl is None else f"{k.realised_pnl:+.4f}",
             _error_cell(k)) for k in keys]
    say(format_table(("STRATEGY", "EXCHANGE", "SYMBOL", "STATUS", "LIVE SIGNAL",
                      "LAST TICK (UTC)", "LAG", "CLOSED", "WIN %", "PNL %",
                      "REALISED", "LAST ERROR"), rows))
    failing = [k for k in keys if k.failing]
    if failing:
        say(f"{len(failing)} key(s) FAILING: their last tick failed (`bkit errors` lists why)")
    stuck = [k for k in keys if k.stuck]
    if stuck:
        say(f"{len(stuck)} position(s) STUCK (the venue keeps refusing the exit): check the "
            "account, then `bkit resolve STRATEGY SYMBOL --retry|--flat`")
    if broken is not None:
        print(f"bkit: {broken}", file=sys.stderr)
    return code


def _error_cell(k: KeyStatus) -> str | None:
    if k.last_error is None:
        return None
    text = " ".join(k.last_error.split())
    text = text if len(text) <= 70 else text[:67] + "..."
    return f"{'NOW ' if k.failing else ''}{_when(k.last_error_minute)} {text}"


def cmd_errors(args: argparse.Namespace) -> int:
    from bkit.ops.admin import recent_errors

    since = None
    if args.since:
        since = datetime.now(UTC) - _duration(args.since)
    rows = recent_errors(args.strategy, args.symbol, since=since, limit=args.limit)
    if args.json:
        say(_json([dataclasses.asdict(r) for r in rows]))
        return EXIT_OK
    if not rows:
        say("no errors recorded" + (f" since {args.since}" if args.since else ""))
        return EXIT_OK
    say(format_table(("AT (UTC)", "KIND", "STRATEGY", "EXCHANGE", "SYMBOL", "MESSAGE"),
                     [(_when(r.at), r.kind, r.strategy_name, r.exchange_name, r.symbol,
                       " ".join(r.message.split())) for r in rows]))
    return EXIT_OK


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise UnknownNameError(f"--since takes a duration like 30m, 2h or 7d, got {text!r}"
                               ) from None


def _live(k: KeyStatus) -> str | None:
    if k.signal_state is None:
        return None
    held = "" if k.amount is None else f" {k.amount:.8g}"
    return f"{'STUCK ' if k.stuck else ''}{k.signal_state} {k.position}{held} {k.signal_id}"


def cmd_position(args: argparse.Namespace) -> int:
    from bkit.ops.admin import queue_position_command

    if args.command == "partial":
        name, value = ("partial_loss" if args.loss else "partial_profit"), args.percent
    elif args.command == "trail":
        name, value = ("trailing_take" if args.take else "trailing_stop"), args.shift
    elif args.command == "breakeven":
        name, value = "breakeven", None
    else:
        name, value = "average_buy", args.cost
    command_id, exchange = queue_position_command(args.strategy, args.symbol, args.exchange,
                                                  name, value, actor=args.actor)
    say(f"{args.strategy} {exchange} {args.symbol}: {name}"
        f"{'' if value is None else f' {value:g}'} queued (command {command_id}) for the "
        "next tick")
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    from bkit.ops.admin import load_registry, resolve_exchange
    from bkit.ops.resolve import resolve_stuck
    from bkit.store.engine import get_engine

    exchange = resolve_exchange(load_registry(), args.exchange)
    how = "retry" if args.retry else "flat"
    resolve_stuck(get_engine(), args.strategy, exchange, args.symbol, how, actor=args.actor)
    say(f"{args.strategy} {exchange} {args.symbol}: " + (
        "exit sent again" if how == "retry" else "recorded closed (account flat)"))
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from bkit.ops.admin import load_registry
    from bkit.reconcile import reconcile
    from bkit.runtime import orders_env

    load_registry()
    views = reconcile(orders_env())
    if args.json:
        say(_json([dataclasses.asdict(v) for v in views]))
        return EXIT_OK if not any(v.differences or v.error for v in views) else EXIT_ERROR
    if not views:
        say("no exchange with an order broker: nothing to reconcile")
    for view in views:
        say(f"{view.exchange_name}:" + (f" venue unreadable: {view.error}" if view.error
                                        else ""))
        say(format_table(("ASSET", "BKIT HOLDS", "ACCOUNT FREE", "ACCOUNT TOTAL", "SHORT"),
                         [(a.asset, f"{a.believed:.10g}", f"{a.free:.10g}", f"{a.total:.10g}",
                           f"{a.shortfall:.10g}" if a.shortfall else "") for a in view.assets]))
        say(f"open orders on the venue: {len(view.open_orders)}")
        for diff in view.differences:
            say(f"  DIFFERENCE {diff.kind}: {diff.message}")
        for signal_id in view.closed_as_gone:
            say(f"  closed stuck signal {signal_id}: its coins are gone from the account")
    bad = any(v.differences or v.error for v in views)
    return EXIT_ERROR if bad else EXIT_OK


def cmd_venue(args: argparse.Namespace) -> int:
    from bkit.venue.cli import main as venue_main

    return int(venue_main(args.venue_args))  # `bkit venue …`: the venue's own parser reads it


def cmd_halt(args: argparse.Namespace) -> int:
    from bkit.ops.admin import set_halt

    halted = args.command == "halt"
    changed = set_halt(halted, actor=args.actor, reason=getattr(args, "reason", "") or "")
    state = "halted" if halted else "running"
    say(f"trading {state}" + ("" if changed else " (unchanged)"))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from bkit.ops.admin import build_report, load_registry, render_report
    from bkit.report import write_html

    merged, per_key = build_report(args.strategy, args.symbols or None, args.exchange,
                                   registry=load_registry())
    if args.html is None:
        say(render_report(merged))
        return EXIT_OK
    if not args.per_key:
        say(f"wrote {write_html(args.html, render_report(merged, html=True))}")
        return EXIT_OK
    for report in per_key:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in report.title
                       .replace(" · ", "_"))
        target = Path(args.html) / f"{safe}.html"
        say(f"wrote {write_html(target, render_report(report, html=True))}")
    return EXIT_OK


def cmd_flower(args: argparse.Namespace) -> int:
    from bkit.ops.flower_config import exec_flower, flower_env
    from bkit.settings import get_settings

    env = flower_env(os.environ, no_auth=args.no_auth, embedded=get_settings().embedded)
    extra = [a for a in args.flower_args if a != "--"]
    exec_flower(args.address, args.port, extra, env)
    return EXIT_ERROR  # not reached: exec replaces this process


def cmd_metrics(args: argparse.Namespace) -> int:
    import threading

    from bkit.ops.metrics import serve_metrics

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"serving bkit metrics on http://{args.address}:{args.port}/metrics")
    serve_metrics(args.address, args.port, stop)
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the database answers at the schema this bkit expects (and, with
    --beat-max-age, beat's schedule file was written recently), else 1."""
    from sqlalchemy import text

    from bkit.settings import get_settings
    from bkit.store.engine import get_engine
    from bkit.store.migrations import LATEST_VERSION

    try:
        with get_engine().connect() as conn:
            version = conn.execute(text("SELECT version FROM bkit_schema WHERE id = 1")
                                   ).scalar()
    except Exception as exc:
        say(f"unhealthy: database: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    if version != LATEST_VERSION:
        say(f"unhealthy: schema version {version}, expected {LATEST_VERSION} "
               "(run bkit db upgrade)")
        return EXIT_ERROR
    if args.beat_max_age is not None:
        files = list(get_settings().home.glob("celerybeat-schedule*"))
        age = min((time.time() - f.stat().st_mtime for f in files), default=None)
        if age is None or age > args.beat_max_age:
            say(f"unhealthy: beat schedule in {get_settings().home} "
                   f"{'missing' if age is None else f'{age:.0f} s old'}")
            return EXIT_ERROR
    say("healthy")
    return EXIT_OK


def cmd_worker(celery_args: list[str]) -> int:
    """`bkit worker ARGS…`: `celery -A bkit worker ARGS…` under the watchdog
    (bkit.ops.supervisor); exits with the worker's code, or 3 when the watchdog killed it."""
    import logging

    from bkit.ops.supervisor import WorkerSupervisor, settings_from_env

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/bkit worker] "
                        "%(message)s")
    return WorkerSupervisor(celery_args, settings_from_env()).run()

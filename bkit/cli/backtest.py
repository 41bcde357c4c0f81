"""`bkit backtest` and `bkit download` (SPEC §12).

    bkit backtest STRATEGY [STRATEGY ...] --symbols S [S ...] --start ISO --end ISO
                  [--exchange NAME] [--workers] [--processes N] [--rank sharpe_ratio]
    bkit download EXCHANGE SYMBOL --start ISO --end ISO

Strategies and exchanges come from BKIT_STRATEGIES (or `--module`), as for the workers.
`backtest` runs in this process (symbols in parallel processes with `--processes`), or with
`--workers` as one Celery task per (strategy, symbol, frame) on the `backtest` queue, the
results stored in the database; either way it prints the strategies ranked by `--rank` and
writes one merged Markdown and HTML report. Exit codes: 0 ok, 1 a backtest failed or timed
out, 2 usage or an unknown name (nothing run).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bkit.cli.output import EXIT_ERROR, EXIT_OK, EXIT_USAGE, format_table, say


def _utc(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_backtest_commands(sub: argparse._SubParsersAction) -> None:
    """Add `backtest` and `download` to the `bkit` subcommands."""
    from bkit.core.statistics import RANK_METRICS

    modules = argparse.ArgumentParser(add_help=False)
    modules.add_argument("--module", action="append", default=[], metavar="MODULE",
                         help="strategy module to import (besides BKIT_STRATEGIES)")

    run = sub.add_parser("backtest", parents=[modules], help="backtest strategies over a "
                         "frame with the live rules", description=__doc__)
    run.add_argument("strategies", metavar="STRATEGY", nargs="+")
    run.add_argument("--symbols", nargs="+", required=True, metavar="SYMBOL")
    run.add_argument("--start", type=_utc, help="first minute (ISO, UTC)")
    run.add_argument("--end", type=_utc, help="last minute (ISO, UTC, inclusive)")
    run.add_argument("--frame", help="a frame registered with add_frame (instead of "
                     "--start/--end)")
    run.add_argument("--interval", default="1m", help="tick step (default 1m, as live)")
    run.add_argument("--exchange", metavar="NAME",
                     help="exchange name (default: the only registered exchange)")
    run.add_argument("--workers", action="store_true",
                     help="run as Celery tasks on the 'backtest' queue of the workers")
    run.add_argument("--processes", type=int, default=1,
                     help="in-process: parallel processes (default 1)")
    run.add_argument("--rank", default="sharpe_ratio", choices=RANK_METRICS,
                     help="metric the walker ranks strategies by (default sharpe_ratio)")
    run.add_argument("--out", type=Path, default=Path("dump/backtest"),
                     help="folder of the merged report (default ./dump/backtest)")
    run.add_argument("--no-cache", action="store_true", help="ignore the candle cache")
    run.add_argument("--timeout", type=float, default=3600.0,
                     help="--workers: seconds to wait for the results (default 3600)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_backtest)

    download = sub.add_parser("download", parents=[modules], help="fill the backtest "
                              "candle cache from an exchange")
    download.add_argument("exchange", metavar="EXCHANGE")
    download.add_argument("symbol", metavar="SYMBOL")
    download.add_argument("--start", type=_utc, required=True)
    download.add_argument("--end", type=_utc, required=True)
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(func=cmd_download)


def _registry(modules: list[str]) -> object:
    from bkit.ops.admin import load_registry
    from bkit.strategy_modules import import_strategy_modules

    if modules:
        import_strategy_modules(modules)
    return load_registry()


def cmd_backtest(args: argparse.Namespace) -> int:
    from bkit.backtest import FRAMES
    from bkit.backtest.batch import (
        Progress,
        new_run_id,
        plan_tasks,
        run_in_process,
        send_to_workers,
        wait_for_workers,
    )
    from bkit.backtest.frames import make_frame
    from bkit.backtest.results import merged_html, merged_markdown, rank
    from bkit.core.errors import BkitError
    from bkit.core.registry import REGISTRY
    from bkit.ops.admin import resolve_exchange

    try:
        _registry(args.module)
        exchange = resolve_exchange(REGISTRY, args.exchange)
        if args.frame:
            frame = FRAMES.get(args.frame)
        elif args.start is None or args.end is None:
            say("bkit backtest: pass --start and --end, or --frame NAME")
            return EXIT_USAGE
        else:
            name = f"{args.start:%Y%m%dT%H%M}-{args.end:%Y%m%dT%H%M}"
            frame = make_frame(name, args.start, args.end, args.interval)
        tasks = plan_tasks(args.strategies, args.symbols, exchange, frame,
                           use_cache=not args.no_cache)
    except (BkitError, ValueError) as exc:
        say(f"bkit backtest: {exc}")
        return EXIT_USAGE
    run_id = new_run_id()
    progress = Progress(len(tasks), f"backtest {run_id}", enabled=not args.quiet)
    errors: list[str] = []
    try:
        if args.workers:
            from bkit.backtest.store import ensure_table, load_run
            from bkit.store.engine import get_engine

            ensure_table(get_engine())
            send_to_workers(tasks, run_id)
            try:
                wait_for_workers(tasks, run_id, timeout=args.timeout, progress=progress)
            except TimeoutError as exc:
                errors.append(str(exc))
            results, failed = load_run(get_engine(), run_id)
            errors += [f"{r.strategy_name} {r.symbol}: {r.error}" for r in failed]
        else:
            outcomes = run_in_process(tasks, processes=max(1, args.processes),
                                      progress=progress)
            results = [r for o in outcomes for r in o.results]
            errors += [f"{o.task.strategy_name} {', '.join(o.task.symbols)}: {o.error}"
                       for o in outcomes if o.error]
    finally:
        progress.close()
    for error in errors:
        say(f"error: {error}")
    if not results:
        say("bkit backtest: no backtest finished")
        return EXIT_ERROR
    ranked = rank(results, args.rank)
    say(format_table(["rank", "strategy", "symbols", "closed", "total_pnl", args.rank],
                     [(i, r.strategy_name, ",".join(r.symbols), r.stats.total_closed,
                       f"{r.stats.total_pnl:.4f}", "N/A" if r.value is None
                       else f"{r.value:.6g}") for i, r in enumerate(ranked, 1)]))
    folder = args.out / run_id
    folder.mkdir(parents=True, exist_ok=True)
    title = f"Backtest {run_id} · {frame.frame_name}"
    _write(folder / "report.md", merged_markdown(results, args.rank, title=title))
    _write(folder / "report.html", merged_html(results, title=title))
    say(f"report: {folder / 'report.md'} and {folder / 'report.html'}")
    return EXIT_ERROR if errors else EXIT_OK


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def cmd_download(args: argparse.Namespace) -> int:
    from bkit.backtest.batch import Progress
    from bkit.backtest.candles import DAY_MINUTES, CandleLoadError, load_candles
    from bkit.core.errors import BkitError
    from bkit.core.registry import REGISTRY

    try:
        _registry(args.module)
        exchange = REGISTRY.exchange(args.exchange)
    except (BkitError, ValueError) as exc:
        say(f"bkit download: {exc}")
        return EXIT_USAGE
    if args.start >= args.end:
        say(f"bkit download: --start {args.start.isoformat()} must be before --end "
            f"{args.end.isoformat()}")
        return EXIT_USAGE
    first = int(args.start.timestamp() // 60)
    last = int((args.end + timedelta(minutes=1)).timestamp() // 60)
    days = list(range(first // DAY_MINUTES, (last - 1) // DAY_MINUTES + 1))
    progress = Progress(len(days), f"download {args.exchange} {args.symbol}",
                        enabled=not args.quiet)
    candles = requests = 0
    try:
        for day in days:
            start, end = max(first, day * DAY_MINUTES), min(last, (day + 1) * DAY_MINUTES)
            columns = load_candles(exchange, args.symbol, start, end)
            candles += len(columns)
            requests += columns.requests
            progress.advance()
    except CandleLoadError as exc:
        progress.close()
        say(f"bkit download: {exc}")
        return EXIT_ERROR
    progress.close()
    say(f"{args.exchange} {args.symbol}: {candles} candles in the cache ({requests} "
        "requests)")
    return EXIT_OK

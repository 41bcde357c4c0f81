"""The `bkit` command: the admin script (strategies, keys, reports, database) and the demo.

Exit codes: 0 ok, 1 error (refused, database down, broken strategy module), 2 usage or an
unknown strategy, exchange or symbol (nothing changed). Key changes are database writes that
the next fan-out reads: no restart needed. Every change is recorded in the event log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bkit.cli.commands import (
    cmd_enable,
    cmd_errors,
    cmd_flower,
    cmd_halt,
    cmd_health,
    cmd_metrics,
    cmd_position,
    cmd_reconcile,
    cmd_report,
    cmd_resolve,
    cmd_set_status,
    cmd_status,
    cmd_strategies,
    cmd_venue,
    cmd_worker,
)
from bkit.cli.demo import cmd_db_upgrade, cmd_demo
from bkit.cli.output import EXIT_ERROR, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def _key_command(sub: argparse._SubParsersAction, name: str, help_: str, status: str,
                 actor: argparse.ArgumentParser, *, force: bool = False,
                 only_from: Sequence[str] | None = None) -> None:
    parser = sub.add_parser(name, help=help_, description=help_, parents=[actor])
    parser.add_argument("strategy", metavar="STRATEGY")
    parser.add_argument("symbols", metavar="SYMBOL", nargs="*", help="existing keys' symbols")
    parser.add_argument("--all", action="store_true",
                        help="every key of the strategy on the exchange")
    parser.add_argument("--exchange", metavar="NAME",
                        help="exchange name (default: the only registered exchange)")
    if force:
        parser.add_argument("--force", action="store_true",
                            help="disable even keys with an open position or scheduled entry")
    parser.set_defaults(func=cmd_set_status, status=status, only_from=only_from)


def _position_commands(sub: argparse._SubParsersAction, actor: argparse.ArgumentParser
                       ) -> None:
    """`bkit partial|trail|breakeven|dca`: SPEC §11 commands for a key's next tick."""
    def key_parser(name: str, help_: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[actor], help=help_, description=help_ +
                                " Applied on the key's next tick at its price; a refused "
                                "command is an error event with the rule that refused it.")
        parser.add_argument("strategy", metavar="STRATEGY")
        parser.add_argument("symbol", metavar="SYMBOL")
        parser.add_argument("--exchange", metavar="NAME",
                            help="exchange name (default: the only registered exchange)")
        parser.set_defaults(func=cmd_position)
        return parser

    partial = key_parser("partial", "close a share of the remaining cost basis")
    partial.add_argument("--percent", type=float, required=True, help="0 < P <= 100")
    partial.add_argument("--loss", action="store_true", help="a partial loss (default profit)")
    trail = key_parser("trail", "move the stop-loss (or with --take the take-profit)")
    trail.add_argument("--shift", type=float, required=True,
                       help="percentage points of the original distance (negative: tighter)")
    trail.add_argument("--take", action="store_true", help="trail the take-profit instead")
    key_parser("breakeven", "move the stop-loss to the effective entry")
    dca = key_parser("dca", "add an entry (average down)")
    dca.add_argument("--cost", type=float, help="its cost (default CC_POSITION_ENTRY_COST)")


def _admin_commands(sub: argparse._SubParsersAction) -> None:
    from bkit.ops.defaults import FLOWER_PORT, LOOPBACK, METRICS_PORT, default_actor

    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=default_actor(),
                       help="who is making the change, for the event log (default: $USER@host)")
    strategies = sub.add_parser("strategies", help="registered strategies (BKIT_STRATEGIES) "
                                "and their keys")
    strategies.add_argument("--json", action="store_true", help="machine-readable output")
    strategies.set_defaults(func=cmd_strategies)

    enable = sub.add_parser("enable", parents=[actor], help="create keys as enabled, or "
                            "re-enable them", description="Create keys (strategy × exchange "
                            "× symbol) as enabled, or re-enable disabled, draining or paused "
                            "ones. The next fan-out ticks them.")
    enable.add_argument("strategy", metavar="STRATEGY")
    enable.add_argument("symbols", metavar="SYMBOL", nargs="+")
    enable.add_argument("--exchange", metavar="NAME",
                        help="exchange name (default: the only registered exchange)")
    enable.add_argument("--explicit-cost", action="store_true",
                        help="the strategy's signals set `cost` in the quote coin (needed to "
                        "trade a symbol not quoted in a USD stablecoin through a broker)")
    enable.set_defaults(func=cmd_enable)
    _key_command(sub, "disable", "stop ticking keys now (refused while a position is open "
                 "unless --force; see drain)", "disabled", actor, force=True)
    _key_command(sub, "drain", "no new signals; open positions run to their close, then the "
                 "key disables itself", "draining", actor)
    _key_command(sub, "pause", "no new signals; open positions are still managed", "paused",
                 actor)
    _key_command(sub, "resume", "resume paused keys (back to enabled)", "enabled", actor,
                 only_from=("paused",))

    status = sub.add_parser("status", help="per key: status, live signal, last tick and lag, "
                            "closed trades, win rate, PnL; and the halt switch")
    status.add_argument("strategy", metavar="STRATEGY", nargs="?", help="only this strategy")
    status.add_argument("--exchange", metavar="NAME", help="only this exchange")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    errors = sub.add_parser("errors", help="recent tick errors and exit alarms, newest first")
    errors.add_argument("strategy", metavar="STRATEGY", nargs="?", help="only this strategy")
    errors.add_argument("symbol", metavar="SYMBOL", nargs="?", help="only this symbol")
    errors.add_argument("--since", metavar="DURATION", help="only newer ones: 30m, 2h, 7d")
    errors.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    errors.add_argument("--json", action="store_true", help="machine-readable output")
    errors.set_defaults(func=cmd_errors)
    halt = sub.add_parser("halt", parents=[actor], help="global kill switch: no new entries "
                          "anywhere until unhalt")
    halt.add_argument("--reason", default="", help="why, for the event log")
    halt.set_defaults(func=cmd_halt)
    sub.add_parser("unhalt", parents=[actor], help="clear the global kill switch"
                   ).set_defaults(func=cmd_halt)

    report = sub.add_parser("report", help="Markdown report to stdout, or HTML with --html",
                            description="Report of a strategy's keys: one key, or merged "
                            "across symbols (all keys of the strategy when none is named).")
    report.add_argument("strategy", metavar="STRATEGY")
    report.add_argument("symbols", metavar="SYMBOL", nargs="*")
    report.add_argument("--exchange", metavar="NAME",
                        help="exchange name (default: the only registered exchange)")
    report.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    report.add_argument("--per-key", action="store_true",
                        help="with --html: FILE is a folder, one page per key")
    report.set_defaults(func=cmd_report)

    flower = sub.add_parser("flower", help="run Flower on the bkit app (127.0.0.1, basic auth "
                            "from BKIT_FLOWER_BASIC_AUTH)")
    flower.add_argument("--address", default=LOOPBACK, help="bind address")
    flower.add_argument("--port", type=int, default=FLOWER_PORT)
    flower.add_argument("--no-auth", action="store_true",
                        help="run without a password (trusted machine only)")
    flower.add_argument("flower_args", nargs=argparse.REMAINDER,
                        help="further Flower options after --")
    flower.set_defaults(func=cmd_flower)
    metrics = sub.add_parser("metrics", help="Prometheus endpoint (read from the database "
                             "per scrape)")
    metrics.add_argument("--address", default=LOOPBACK, help="bind address")
    metrics.add_argument("--port", type=int, default=METRICS_PORT)
    metrics.set_defaults(func=cmd_metrics)
    health = sub.add_parser("health", help="exit 0 if the database and schema are ready "
                            "(container healthchecks)")
    health.add_argument("--beat-max-age", type=float, metavar="SECONDS",
                        help="also require beat's schedule file to be this fresh")
    health.set_defaults(func=cmd_health)
    _position_commands(sub, actor)
    resolve = sub.add_parser("resolve", parents=[actor], help="end a STUCK position (its "
                             "exit refused by the venue): --retry or --flat",
                             description="A position is stuck when the venue kept refusing "
                             "its exit. --retry sends a fresh exit (after you fixed the "
                             "cause); --flat records it closed because the account no longer "
                             "holds the coins. Audited in the event log.")
    resolve.add_argument("strategy", metavar="STRATEGY")
    resolve.add_argument("symbol", metavar="SYMBOL")
    resolve.add_argument("--exchange", metavar="NAME",
                         help="exchange name (default: the only registered exchange)")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--retry", action="store_true", help="send the exit again")
    how.add_argument("--flat", action="store_true", help="the account is flat: record it")
    resolve.set_defaults(func=cmd_resolve)
    reconcile = sub.add_parser("reconcile", help="compare the account's balances and open "
                               "orders with bkit's positions; exit 1 on any difference")
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    reconcile.set_defaults(func=cmd_reconcile)
    # `main` hands `bkit venue …` to the venue's own parser before this one runs: listed
    # here for the help only (importing the venue to build its parser would cost every
    # command ~70 ms)
    venue = sub.add_parser("venue", help="serve the simulated Binance venue (balances, fees, "
                           "filters) to paper-trade the real ccxt path: bkit venue --port 8765",
                           add_help=False, prefix_chars="\0")  # every argument is the venue's
    venue.add_argument("venue_args", nargs="*")
    venue.set_defaults(func=cmd_venue)
    sub.add_parser("worker", help="run `celery -A bkit worker ARGS…` under a watchdog that "
                   "kills it (exit 3) when it stops answering pings or its main process "
                   "dies, so docker/systemd restart it", add_help=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="create or migrate the schema (safe to repeat)"
                      ).set_defaults(func=cmd_db_upgrade)
    demo = sub.add_parser("demo", help="run a worker + beat on the paper exchange and print "
                          "trades as they happen (embedded default)")
    demo.add_argument("--minutes", type=int, default=240, help="market minutes to replay")
    demo.add_argument("--speed", type=float, default=120.0,
                      help="market seconds per real second")
    demo.add_argument("--home", help="state folder (default: BKIT_HOME/demo)")
    demo.set_defaults(func=cmd_demo)
    _admin_commands(sub)
    from bkit.cli.backtest import add_backtest_commands
    from bkit.cli.dashboard import add_dashboard_command

    add_backtest_commands(sub)
    add_dashboard_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bkit.core.errors import BkitError, UnknownNameError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:  # everything after it belongs to `celery worker`
        return cmd_worker(argv[1:])
    if argv[:1] == ["venue"]:  # everything after it belongs to the venue's own parser
        from bkit.venue.cli import main as venue_main

        return int(venue_main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UnknownNameError as exc:
        print(f"bkit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BkitError as exc:
        print(f"bkit: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

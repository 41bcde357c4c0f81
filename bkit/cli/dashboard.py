"""`bkit dashboard`: serve the operator's read-only live page (`bkit.ops.dashboard`).

Wired by `add_dashboard_command(sub)` on the `bkit` sub-command parser. Credentials come from
`BKIT_DASHBOARD_BASIC_AUTH=user:password`; without them the command refuses to start unless
`--no-auth` is given (loopback addresses only).
"""

from __future__ import annotations

import argparse
import signal
import threading

from bkit.cli.output import EXIT_ERROR, EXIT_OK, say


def add_dashboard_command(sub: argparse._SubParsersAction) -> None:
    """Add `bkit dashboard [--address A] [--port P] [--refresh S] [--no-auth]`."""
    from bkit.ops.defaults import DASHBOARD_AUTH_ENV as ENV_AUTH
    from bkit.ops.defaults import DASHBOARD_PORT as DEFAULT_PORT
    from bkit.ops.defaults import DASHBOARD_REFRESH_SECONDS as DEFAULT_REFRESH_SECONDS
    from bkit.ops.defaults import LOOPBACK as DEFAULT_ADDRESS

    parser = sub.add_parser(
        "dashboard", help="serve a read-only live page (keys, positions, trades, errors)",
        description=f"Serve a read-only live page for the operator. Basic auth from {ENV_AUTH}"
                    "=user:password; the page refreshes itself.")
    parser.add_argument("--address", default=DEFAULT_ADDRESS,
                        help=f"address to listen on (default {DEFAULT_ADDRESS})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--refresh", type=float, default=DEFAULT_REFRESH_SECONDS,
                        metavar="SECONDS", help="seconds between page updates (default "
                        f"{DEFAULT_REFRESH_SECONDS:g})")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve without a password (loopback addresses only)")
    parser.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until SIGINT/SIGTERM. Exit 1 when it cannot start (no credentials,
    address in use, database unreachable)."""
    from bkit.ops.dashboard import (
        DashboardConfigError,
        credentials_from_env,
        make_server,
        serve_dashboard,
    )
    from bkit.store.engine import get_engine
    from bkit.store.schema_check import ensure_schema

    try:
        engine = get_engine()
        ensure_schema(engine)
        server = make_server(args.address, args.port, engine=engine,
                             credentials=None if args.no_auth else credentials_from_env(),
                             no_auth=args.no_auth, refresh_seconds=max(0.5, args.refresh))
    except DashboardConfigError as exc:
        say(f"bkit dashboard: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        say(f"bkit dashboard: cannot listen on {args.address}:{args.port}: {exc.strerror}")
        return EXIT_ERROR
    except Exception as exc:  # the database: say why in one line, not a traceback
        say(f"bkit dashboard: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"serving the bkit dashboard on {server.url}"
        f"{' (no password)' if args.no_auth else ''}; Ctrl-C stops it")
    serve_dashboard(server, stop)
    return EXIT_OK

"""Defaults the `bkit` command shows in its help, kept apart from the modules that use them so
building the parser imports neither SQLAlchemy nor prometheus_client: the bind addresses and
ports of bkit's HTTP services, and who a change is recorded as when no `--actor` is given."""

from __future__ import annotations

import getpass
import os
import socket

LOOPBACK = "127.0.0.1"
FLOWER_PORT = 5555
METRICS_PORT = 9808
DASHBOARD_PORT = 8787
DASHBOARD_AUTH_ENV = "BKIT_DASHBOARD_BASIC_AUTH"
DASHBOARD_REFRESH_SECONDS = 3.0


def default_actor() -> str:
    """`$USER@host`, the name recorded for a change when no `--actor` is given."""
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"

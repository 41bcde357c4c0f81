"""Launching Flower (the Celery monitor) for bkit: `bkit flower`.

`bkit flower` runs `celery -A bkit flower` bound to 127.0.0.1:5555 with basic auth taken
from `BKIT_FLOWER_BASIC_AUTH` (`user:password`, several separated by commas). The secret is
handed to Flower through its own `FLOWER_BASIC_AUTH` environment variable, never on the
command line, so it does not show in `ps`. Flower's `/metrics` and `/healthcheck` are served
without authentication: keep it on 127.0.0.1 or behind a reverse proxy.

Task events, which Flower needs, are already on in the app (`worker_send_task_events`,
`task_send_sent_event`). Monitoring and remote control work on the Redis and `filesystem://`
brokers, not on SQLAlchemy brokers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from bkit.core.errors import BkitError
from bkit.ops.defaults import FLOWER_PORT, LOOPBACK

DEFAULT_ADDRESS = LOOPBACK
DEFAULT_PORT = FLOWER_PORT
AUTH_ENV = "BKIT_FLOWER_BASIC_AUTH"
EMBEDDED_INSPECT_TIMEOUT_MS = 5000


class FlowerConfigError(BkitError):
    """Flower cannot be started safely with these settings."""


def check_basic_auth(value: str) -> str:
    """`user:password[,user2:password2]`, each with a non-empty user and password."""
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user.strip() or not password:
            raise FlowerConfigError(
                f"{AUTH_ENV} must be user:password (several separated by commas); "
                "got a value without a user or a password")
    return value


def flower_argv(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
                extra: Sequence[str] = ()) -> list[str]:
    """The command that runs Flower on the bkit app (Celery options before `flower`)."""
    return [sys.executable, "-m", "celery", "-A", "bkit", "flower", f"--address={address}",
            f"--port={port}", *extra]


def flower_env(environ: Mapping[str, str], *, basic_auth: str | None = None,
               no_auth: bool = False, embedded: bool = False) -> dict[str, str]:
    """The environment for Flower: FLOWER_BASIC_AUTH from `basic_auth` or BKIT_FLOWER_BASIC_AUTH.

    Without credentials Flower would serve its UI to anyone who reaches the port, so that
    needs `no_auth=True` explicitly. On the embedded `filesystem://` broker, which polls once
    a second, Flower's 1 s inspect timeout would miss worker replies: it gets 5 s there
    unless FLOWER_INSPECT_TIMEOUT is set.
    """
    env = dict(environ)
    if embedded:
        env.setdefault("FLOWER_INSPECT_TIMEOUT", str(EMBEDDED_INSPECT_TIMEOUT_MS))
    auth = basic_auth if basic_auth is not None else env.get(AUTH_ENV)
    if auth:
        env["FLOWER_BASIC_AUTH"] = check_basic_auth(auth)
    elif no_auth:
        env.pop("FLOWER_BASIC_AUTH", None)
    elif not env.get("FLOWER_BASIC_AUTH"):
        raise FlowerConfigError(
            f"set {AUTH_ENV}=user:password (or pass --no-auth to run Flower without a "
            "password, only on a trusted machine)")
    return env


def exec_flower(address: str, port: int, extra: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process with Flower, so signals (Ctrl-C, SIGTERM) reach it directly."""
    argv = flower_argv(address, port, extra)
    os.execve(argv[0], argv, dict(env))

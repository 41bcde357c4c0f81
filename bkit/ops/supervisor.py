"""`bkit worker`: runs `celery -A bkit worker` as a child and watches that it stays alive.

Two failures a plain `celery worker` under docker or systemd does not survive on its own:

- a consumer wedged after a broker reconnect (kombu's Redis transport, celery/kombu#582): the
  process lives on but takes no more tasks, and a restart policy only acts on exits;
- a SIGKILLed worker main process: its prefork children live on, orphaned.

The supervisor pings its worker over the broker every `BKIT_WATCHDOG_SECONDS`. A worker that
misses `BKIT_WATCHDOG_MISSES` pings in a row while the broker takes the pings is killed, with
its whole process group; so is what is left of a worker whose main process died. The
supervisor then exits non-zero, and its own supervisor (docker `restart:`, systemd
`Restart=`) starts a fresh one. Nothing is lost by killing a worker: ticks and orders are
idempotent and the database is the source of truth.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("bkit.supervisor")

#: Exit code when the watchdog killed a worker that stopped answering.
EXIT_WEDGED = 3


@dataclass(frozen=True)
class WatchdogSettings:
    period: float = 30.0  # seconds between pings
    misses: int = 3  # unanswered pings in a row before the worker is killed
    grace: float = 60.0  # seconds after start before pings count (worker boot, migrations)
    ping_timeout: float = 5.0


def node_name(celery_args: Sequence[str], hostname: str | None = None) -> str:
    """The worker's node name as Celery expands it (`-n`/`--hostname`, `%h`, `%n`, `%d`)."""
    host = hostname or socket.gethostname()
    name = "celery@%h"
    args = list(celery_args)
    for i, arg in enumerate(args):
        if arg in ("-n", "--hostname") and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--hostname="):
            name = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2:
            name = arg[2:]
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"


def broker_ping(node: str, timeout: float) -> bool | None:
    """True: the node answered. False: the broker took the ping, the node did not answer.
    None: the broker itself could not be reached (not the worker's fault)."""
    from bkit.celery import app

    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # broker down or unreachable
        log.warning("watchdog: cannot reach the broker to ping %s: %s", node, exc)
        return None
    return any(node in reply for reply in replies)


class WorkerSupervisor:
    """Start the worker, watch it, kill its process group when it is wedged or half dead."""

    def __init__(self, celery_args: Sequence[str], settings: WatchdogSettings,
                 ping: Callable[[str, float], bool | None] = broker_ping) -> None:
        self.args = list(celery_args)
        self.node = node_name(self.args)
        self.settings = settings
        self.ping = ping
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def run(self) -> int:
        command = [sys.executable, "-m", "celery", "-A", "bkit", "worker", *self.args]
        # Its own process group: the children of a dead main process are killed with it.
        self.proc = subprocess.Popen(command, start_new_session=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        log.info("watchdog: supervising worker %s (pid %s)", self.node, self.proc.pid)
        started = time.monotonic()
        missed = 0
        while True:
            code = self._wait(self.settings.period)
            if code is not None:
                self._kill_group()  # orphaned pool children of a killed main process
                if code < 0:
                    log.error("watchdog: worker %s died of signal %d", self.node, -code)
                elif code:
                    log.error("watchdog: worker %s exited with code %d", self.node, code)
                return 128 - code if code < 0 else code  # as a shell reports a signal
            if self._stopping or time.monotonic() - started < self.settings.grace:
                continue
            answered = self.ping(self.node, self.settings.ping_timeout)
            if answered is None:
                continue  # the broker is down: the worker will reconnect when it is back
            missed = 0 if answered else missed + 1
            if missed >= self.settings.misses:
                log.error("watchdog: worker %s answered none of %d pings in a row although "
                          "the broker is up; killing it so that it is restarted", self.node,
                          missed)
                self._kill_group()
                self.proc.wait()
                return EXIT_WEDGED

    def _wait(self, seconds: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        """Pass a stop request on to the worker (a warm shutdown) and stop pinging."""
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def settings_from_env() -> WatchdogSettings:
    from bkit.settings import get_settings

    s = get_settings()
    return WatchdogSettings(period=s.watchdog_seconds, misses=s.watchdog_misses,
                            grace=s.watchdog_grace_seconds,
                            ping_timeout=min(5.0, max(0.5, s.watchdog_seconds)))

"""`bkit worker`: the watchdog around `celery -A bkit worker`. A healthy worker is left alone;
a worker that stops answering while the broker is up is killed with its whole process group
(exit 3); a worker whose main process was SIGKILLed leaves no orphaned pool child behind; a
SIGTERM is passed on as Celery's warm shutdown. Real processes, Redis broker."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from bkit.ops.supervisor import EXIT_WEDGED, node_name
from tests.ops.conftest import BKIT, REPO, OpsEnv, wait_until

pytestmark = pytest.mark.integration
BROKER = "redis://127.0.0.1:6379/13"


@contextlib.contextmanager
def _supervised(ops: OpsEnv, prefix: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`bkit worker` with a 1 s watchdog, ready to work; killed afterwards if still alive."""
    redis.Redis.from_url(BROKER).flushdb()
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    log = ops.home / f"{name}.log"
    env = {**ops.env, "BKIT_BROKER_URL": BROKER, "BKIT_WATCHDOG_SECONDS": "1",
           "BKIT_WATCHDOG_MISSES": "3", "BKIT_WATCHDOG_GRACE_SECONDS": "5"}
    proc = subprocess.Popen([str(BKIT), "worker", "-Q", "maint", "-c", "2", "-n",
                             f"{name}@%h", "--loglevel", "INFO"], cwd=REPO, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"ready." in log.read_bytes(), 60, "worker ready")
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()


def _worker_tree(supervisor: subprocess.Popen[bytes]) -> tuple[psutil.Process, list[int]]:
    (main,) = psutil.Process(supervisor.pid).children()
    return main, [main.pid, *(c.pid for c in main.children(recursive=True))]


def _all_gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


def test_node_name_expands_like_celery() -> None:
    assert node_name(["-Q", "ticks", "-n", "ticks@%h"], "box.lan") == "ticks@box.lan"
    assert node_name(["--hostname=w1@%n"], "box.lan") == "w1@box"
    assert node_name([], "box") == "celery@box"
    assert node_name(["-nw2"], "box") == "w2@box"


def test_a_wedged_worker_is_killed_with_its_children_and_exits_3(pg_ops: OpsEnv) -> None:
    with _supervised(pg_ops, "wd") as (supervisor, log):
        main, pids = _worker_tree(supervisor)
        assert len(pids) == 3  # the main process and its two pool children
        time.sleep(5)  # answered pings after the grace: a healthy worker stays
        assert supervisor.poll() is None and main.is_running()
        main.send_signal(signal.SIGSTOP)  # alive but answering nothing, like a wedged consumer
        assert supervisor.wait(timeout=30) == EXIT_WEDGED
        assert b"answered none of 3 pings in a row" in log.read_bytes()
        wait_until(lambda: _all_gone(pids), 10, "the whole worker tree killed")


def test_a_killed_main_process_leaves_no_orphaned_children(pg_ops: OpsEnv) -> None:
    with _supervised(pg_ops, "wk") as (supervisor, _log):
        main, pids = _worker_tree(supervisor)
        main.send_signal(signal.SIGKILL)
        # Exits as a shell reports a signal death, so restart policies act on it.
        assert supervisor.wait(timeout=30) == 128 + signal.SIGKILL
        wait_until(lambda: _all_gone(pids), 10, "orphaned pool children killed")


def test_sigterm_is_a_warm_shutdown_with_exit_0(pg_ops: OpsEnv) -> None:
    with _supervised(pg_ops, "wt") as (supervisor, log):
        _, pids = _worker_tree(supervisor)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert _all_gone(pids)
        assert b"Warm shutdown" in log.read_bytes()

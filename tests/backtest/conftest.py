"""Fixtures of the backtest tests: a throwaway BKIT_HOME (so the candle cache and, for the
`Live.tick` side of the parity test, the SQLite database live in tmp), and a clean registry,
config, frames, listeners and backtest results around each test; `celery_worker` starts a
real `celery -A bkit worker -Q backtest` process on the same settings (killed, with its pool
children, at the end of the test)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from bkit import events
from bkit.backtest import FRAMES, Backtest
from bkit.backtest import listeners as backtest_listeners
from bkit.backtest.runner import clear_price_cache
from bkit.core.registry import REGISTRY, reset_config
from bkit.settings import reset_settings
from bkit.store.engine import dispose_all


def _reset() -> None:
    import sys

    from bkit import strategy_modules

    # The CLI tests import their strategy module by name: import it afresh each time.
    sys.modules.pop("tests.backtest.cli_strategies", None)
    strategy_modules._imported.discard("tests.backtest.cli_strategies")
    REGISTRY.clear()
    FRAMES.clear()
    reset_config()
    events.stop_follower()
    events.clear_listeners()
    backtest_listeners.clear_listeners()
    Backtest.clear()
    clear_price_cache()
    reset_settings()
    dispose_all()


@pytest.fixture(autouse=True)
def backtest_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in [k for k in os.environ if k.startswith("BKIT_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("BKIT_HOME", str(home))
    _reset()
    yield home
    _reset()


REPO = Path(__file__).resolve().parents[2]


def stop_process_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill a worker and its pool children. The test has checked the stored results by
    then (each task acks after writing them), and a warm or cold shutdown of a worker on
    the filesystem broker takes seconds."""
    try:
        family = [psutil.Process(proc.pid)]
        family += family[0].children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill()
    proc.wait(timeout=10)
    psutil.wait_procs(family, timeout=5)


def start_backtest_worker(home: Path, strategies: str, *, concurrency: int = 2,
                          timeout: float = 45.0) -> tuple[subprocess.Popen[bytes], str]:
    """`celery -A bkit worker -Q backtest` on this process's BKIT_* settings (home, database,
    broker) importing `strategies`; returns once it answers a ping (the Celery app of this
    process must already use the same broker). Returns the process and its node name."""
    from bkit.celery import app

    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("BKIT_")})
    env.update({"BKIT_HOME": str(home), "BKIT_STRATEGIES": strategies,
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    home.mkdir(parents=True, exist_ok=True)
    node = f"bt-{uuid.uuid4().hex[:8]}@%h"
    log_path = home / f"worker-{node.split('@')[0]}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-Q", "backtest",
             "-c", str(concurrency), "-n", node, "--loglevel", "WARNING"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    hostname = node.replace("%h", socket.gethostname())
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited ({proc.returncode}):\n"
                                     f"{log_path.read_text()}")
            if app.control.ping(destination=[hostname], timeout=1.0):
                return proc, hostname
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout:.0f} s:\n"
                                     f"{log_path.read_text()}")
            time.sleep(0.2)
    except BaseException:
        stop_process_tree(proc)
        raise


@pytest.fixture
def celery_worker(backtest_home: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Callable[..., str]]:
    """Start real backtest workers on the test's embedded settings (SQLite and the
    filesystem broker under its BKIT_HOME); this process's Celery app is rebuilt on the same
    settings for the test. Yields a starter returning the worker's node name."""
    import bkit.celery

    reset_settings()
    dispose_all()
    monkeypatch.setattr(bkit.celery, "app", bkit.celery.make_app())
    procs: list[subprocess.Popen[bytes]] = []

    def start(strategies: str, concurrency: int = 2) -> str:
        proc, node = start_backtest_worker(backtest_home, strategies,
                                           concurrency=concurrency)
        procs.append(proc)
        return node

    try:
        yield start
    finally:
        for proc in procs:
            stop_process_tree(proc)

"""Fixtures with real parts: PostgreSQL databases, Redis, worker processes, replay clock."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from bkit import events
from bkit.core.registry import REGISTRY, reset_config
from bkit.settings import reset_settings
from bkit.store.engine import dispose_all
from tests.parallel import slot

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
#: Broker databases for these tests (one per run, so parallel runs on one machine do not
#: consume each other's messages; other suites use 12, 13 and 15).
REDIS_BROKER_DB = 1 + slot(8)
#: A market minute inside the shipped XRP/ETH sample (2019-10-11 .. 2019-10-13).
REPLAY_START = "2019-10-11T01:00:05+00:00"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"bkit_it_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        dispose_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_broker_url() -> Iterator[str]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_BROKER_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_BROKER_DB}"
    client.flushdb()


@pytest.fixture
def clean_process_state() -> Iterator[None]:
    """Registry, config, listeners and cached settings/engines reset around a test."""
    REGISTRY.clear()
    reset_config()
    events.clear_listeners()
    reset_settings()
    dispose_all()
    yield
    events.stop_follower()
    events.clear_listeners()
    REGISTRY.clear()
    reset_config()
    reset_settings()
    dispose_all()


class Runtime:
    """Environment of one test: settings shared by this process and its worker processes."""

    def __init__(self, home: Path, database_url: str | None, broker_url: str | None,
                 speed: float = 60.0, lease_seconds: float = 5.0,
                 strategies: str = "tests.integration.strategies_it") -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
        self.env.update({
            "BKIT_HOME": str(home),
            "BKIT_STRATEGIES": strategies, "BKIT_REPLAY_START": REPLAY_START,
            "BKIT_REPLAY_EPOCH": datetime.now(UTC).isoformat(),
            "BKIT_REPLAY_SPEED": str(speed), "BKIT_LEASE_SECONDS": str(lease_seconds),
            "BKIT_TICK_SOFT_LIMIT": "8", "BKIT_TICK_HARD_LIMIT": "10",
            "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
        })
        if database_url:  # None: the embedded default (SQLite under BKIT_HOME)
            self.env["BKIT_DATABASE_URL"] = database_url
        if broker_url:  # None: the embedded default (filesystem:// under BKIT_HOME)
            self.env["BKIT_BROKER_URL"] = broker_url
        self.workers: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.restarts = 0
        self._stopping = threading.Event()

    def apply_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Use the same settings in the test process and load the test strategies."""
        for key in [k for k in os.environ if k.startswith("BKIT_") and k not in self.env]:
            monkeypatch.delenv(key)  # e.g. a database URL left by an earlier run
        for key, value in self.env.items():
            if key.startswith("BKIT_"):
                monkeypatch.setenv(key, value)
        reset_settings()
        dispose_all()
        import bkit.celery as celery_module

        importlib.reload(celery_module)  # the app reads broker settings at import
        import tests.integration.strategies_it as strategies

        REGISTRY.clear()
        importlib.reload(strategies)

    def start_worker(self, *extra: str, concurrency: int = 2, name: str | None = None,
                     supervised: bool = False) -> subprocess.Popen[bytes]:
        """`celery -A bkit worker`, or with `supervised` `bkit worker` (its watchdog)."""
        name = name or f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        program = [str(Path(sys.executable).parent / "bkit"), "worker"] if supervised else \
            [sys.executable, "-m", "celery", "-A", "bkit", "worker"]
        proc = subprocess.Popen(
            [*program, "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO",
             *extra], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        wait_until(lambda: b"ready." in (self.home / f"{name}.log").read_bytes()
                   or proc.poll() is not None, 60, message=f"worker {name} ready")
        if proc.poll() is not None:
            raise AssertionError((self.home / f"{name}.log").read_text())
        return proc

    def start_restarted_worker(self, *extra: str) -> None:
        """`bkit worker` as docker's `restart: unless-stopped` runs it: started again
        whenever it exits (its watchdog makes a wedged worker exit). `restarts` counts."""
        proc = self.start_worker(*extra, supervised=True)

        def keep_alive() -> None:
            nonlocal proc
            while not self._stopping.wait(0.5):
                if proc.poll() is not None:
                    self.restarts += 1
                    proc = self.start_worker(*extra, supervised=True)

        threading.Thread(target=keep_alive, daemon=True).start()

    def stop_all(self) -> None:
        """SIGTERM every worker (a warm shutdown: running tasks finish), SIGKILL a hung one;
        for a test that checks the stored state once nothing runs any more."""
        self._stopping.set()
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._kill_orphans()

    def kill_all(self) -> None:
        """SIGKILL every worker with its pool children and beat: the teardown, once the test
        has checked what it checks (a warm shutdown there only waits seconds for tasks whose
        results nobody reads)."""
        self._stopping.set()
        family: list[psutil.Process] = []
        for proc in self.workers:
            with contextlib.suppress(psutil.Error):
                family += [psutil.Process(proc.pid),
                           *psutil.Process(proc.pid).children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        for proc in self.workers:
            proc.wait(timeout=10)
        psutil.wait_procs(family, timeout=5)
        self._kill_orphans()

    def _kill_orphans(self) -> None:
        # Pool children orphaned by a SIGKILLed main process are found by node name.
        for orphan in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(orphan.info["cmdline"] or [])
            if any(f"-n {name}@" in cmdline for name in self.names):
                with contextlib.suppress(psutil.Error):
                    orphan.kill()

    def jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.home / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def make_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_process_state: None
                 ) -> Iterator[Callable[..., Runtime]]:
    runtimes: list[Runtime] = []

    def factory(database_url: str | None, broker_url: str | None = None, **kw: Any
                ) -> Runtime:
        home = tmp_path / f"home{len(runtimes)}"
        home.mkdir()
        runtime = Runtime(home, database_url, broker_url, **kw)
        runtime.apply_here(monkeypatch)
        runtimes.append(runtime)
        return runtime

    yield factory
    for runtime in runtimes:
        runtime.kill_all()


@pytest.fixture(params=["postgresql", "sqlite"])
def in_process_runtime(request: pytest.FixtureRequest, make_runtime: Callable[..., Runtime],
                       tmp_path: Path) -> Runtime:
    """Settings for ticks run in this process (`Live.tick`, `run_ticks`), once on a fresh
    PostgreSQL database and once on SQLite. In-process ticks walk through market time by
    hand: the paper exchange's clock stands after the sample, so every candle before a tick's
    minute has closed."""
    from bkit.clock import ManualClock
    from bkit.exchange.paper import add_paper_exchange

    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'bkit.sqlite'}"
    runtime = make_runtime(url)
    REGISTRY.exchanges.pop("paper")
    add_paper_exchange("paper", clock=ManualClock(datetime(2019, 10, 14, tzinfo=UTC)))
    return runtime

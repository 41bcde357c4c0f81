"""Fixtures for the operations tests: a fresh settings/registry per test on SQLite (tmp_path)
or on a PostgreSQL database of its own, the real `bkit` console script as a subprocess, and
helpers to start and stop real processes (worker, Flower, metrics)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # so `tests.ops.strategies_ops` is the module workers import
    sys.path.insert(0, str(REPO))

from tests.ops import strategies_ops  # noqa: E402
from tests.subprocesses import run_at_once  # noqa: E402

BIN = Path(sys.executable).parent
BKIT = BIN / "bkit"
STRATEGIES = "tests.ops.strategies_ops"
POSTGRES_ADMIN_URL = os.environ.get("BKIT_TEST_POSTGRES_ADMIN_URL",
                                    "postgresql://postgres@127.0.0.1:5432/test")


def _reset_process_state() -> None:
    from bkit.core.registry import REGISTRY, reset_config
    from bkit.live import Live
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all

    reset_settings()
    dispose_all()
    REGISTRY.clear()
    reset_config()
    Live._env = None


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any BKIT_* / FLOWER_* variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BKIT_", "FLOWER_"))}
    env.update(values)
    return env


class OpsEnv:
    """Settings of one test: the environment for subprocesses and the in-process engine."""

    def __init__(self, home: Path, database_url: str) -> None:
        self.home = home
        self.database_url = database_url
        self.env = clean_env(BKIT_HOME=str(home), BKIT_DATABASE_URL=database_url,
                             BKIT_STRATEGIES=STRATEGIES, PYTHONUNBUFFERED="1")

    @property
    def engine(self) -> Engine:
        from bkit.store.engine import get_engine

        return get_engine(self.database_url)

    def bkit(self, *args: str, timeout: float = 60, **extra_env: str
             ) -> subprocess.CompletedProcess[str]:
        """Run the real `bkit` console script with this test's settings."""
        return subprocess.run([str(BKIT), *args], env={**self.env, **extra_env}, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def bkit_at_once(self, *argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
        """`bkit` with each of `argvs`, all at the same time: for commands that change
        nothing (reads, usage errors, refusals), whose order cannot matter."""
        return run_at_once([[str(BKIT), *argv] for argv in argvs], env=self.env, cwd=REPO)


def _activate(monkeypatch: pytest.MonkeyPatch, ops: OpsEnv) -> OpsEnv:
    for name in [k for k in os.environ if k.startswith("BKIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BKIT_HOME", str(ops.home))
    monkeypatch.setenv("BKIT_DATABASE_URL", ops.database_url)
    _reset_process_state()
    strategies_ops.register()
    from bkit.store.migrations import upgrade

    upgrade(ops.engine)
    return ops


@pytest.fixture
def sqlite_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsEnv]:
    """A fresh SQLite database and BKIT_HOME under tmp_path, the ops strategies registered."""
    ops = OpsEnv(tmp_path, f"sqlite:///{tmp_path / 'bkit.sqlite'}")
    yield _activate(monkeypatch, ops)
    _reset_process_state()


@pytest.fixture(scope="module")
def pg_admin() -> Iterator[Callable[[], str]]:
    """Creates PostgreSQL databases `bkit_ops_<random>` on demand; drops them afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required: {exc}")
    created: list[str] = []

    def create() -> str:
        name = f"bkit_ops_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    yield create
    from bkit.store.engine import dispose_all

    dispose_all()
    for name in created:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def pg_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           pg_admin: Callable[[], str]) -> Iterator[OpsEnv]:
    """Like `sqlite_ops`, on a PostgreSQL database of this test's own."""
    ops = OpsEnv(tmp_path, pg_admin())
    yield _activate(monkeypatch, ops)
    _reset_process_state()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.2) -> object:
    """Poll `predicate` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process (a worker shuts down warm), SIGKILL it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)



CELERY_SUBCOMMANDS = ("worker", "beat", "flower", "inspect")
_FACTS = """
import json
from celery.app.utils import find_app
app = find_app("bkit")  # what `celery -A bkit` resolves
app.loader.import_default_modules()
from bkit.celery import QUEUES
print(json.dumps({"main": app.main, "queues": list(QUEUES),
                  "task_queues": [q.name for q in app.conf.task_queues],
                  "tasks": sorted(t for t in app.tasks if t.startswith("bkit."))}))
"""


@pytest.fixture(scope="module")
def celery_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """What `celery -A bkit` finds, read in a fresh interpreter (the app reads settings at
    import): the app name, `bkit.celery.QUEUES`, the configured queues and the bkit tasks."""
    import json

    home = tmp_path_factory.mktemp("celery-facts")
    out = subprocess.run([sys.executable, "-c", _FACTS], env=clean_env(BKIT_HOME=str(home)),
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(out.stdout))


def check_command(argv: list[str], queues: list[str]) -> tuple[str, list[str]]:
    """Check a shell command that runs bkit: `bkit …` must parse with the real argparse
    parser; `celery -A bkit …` must use a known sub-command and only queues in `queues`.
    Leading `VAR=value` words, `exec` and a trailing `&` are ignored; a path to the program
    (`.venv/bin/bkit`) is fine. Returns (program, its arguments)."""
    from bkit.cli import build_parser

    words = [w for w in argv if w != "&"]
    while words and (words[0] == "exec" or ("=" in words[0] and not words[0].startswith("-"))):
        words = words[1:]
    program, args = Path(words[0]).name, words[1:]
    if program == "bkit" and args[:1] == ["worker"]:  # celery worker under the watchdog
        program, args = "celery", ["-A", "bkit", *args]
    if program == "bkit":
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"`bkit {' '.join(args)}` does not parse (exit {exc.code})")
        return program, args
    assert program == "celery", argv
    assert args[:2] == ["-A", "bkit"], f"celery must load the bkit app: {argv}"
    sub = next((a for a in args[2:] if not a.startswith("-")), None)
    assert sub in CELERY_SUBCOMMANDS, f"unknown celery sub-command in {argv}"
    if "-Q" in args:
        wanted = args[args.index("-Q") + 1].split(",")
        assert set(wanted) <= set(queues), f"{argv}: queues {wanted} not in {queues}"
    return program, args

"""What a fresh install runs (issue 16, item 8): the Dockerfile's own `pip install` command,
run in a clean virtual environment (no dev tools, nothing from this test's venv), must give a
bkit whose worker starts on Redis, whose console script answers and whose migrations ship.

The dev extra pulls in `packaging` by chance; kombu's Redis transport imports it and a worker
without it exits 1 at start. This test installs without the dev extra so that cannot come back.
No Docker engine here: the build context is copied as the Dockerfile's COPY lines say and its
RUN pip line is run against the clean venv (with pip's cache, unlike the image, to stay fast).
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.ops.conftest import REPO, clean_env, stop_process, wait_until

pytestmark = pytest.mark.integration
BROKER = "redis://127.0.0.1:6379/14"
DOCKERFILE = REPO / "Dockerfile"


def dockerfile_steps() -> tuple[list[list[str]], list[str]]:
    """(the COPY lines before the install as [sources…, dest], the `pip install` argv)."""
    copies: list[list[str]] = []
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "COPY":
            copies.append(words[1:])
        elif words[0] == "RUN" and words[1:3] == ["pip", "install"]:
            return copies, words[1:]
    raise AssertionError("the Dockerfile has no `RUN pip install …` line")


def test_the_dockerfile_installs_without_the_dev_extra() -> None:
    _copies, pip = dockerfile_steps()
    assert not [w for w in pip if "[dev" in w], pip  # the image carries no test tools


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv with bkit installed by the Dockerfile's command; yields its bin/."""
    root = tmp_path_factory.mktemp("clean-install")
    context, venv = root / "app", root / "venv"
    context.mkdir()
    copies, pip = dockerfile_steps()
    for *sources, _dest in copies:  # every COPY lands in WORKDIR /app (checked below)
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, context / source,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, context / source)
    # A venv without pip: nothing in it but what bkit's own requirements bring. The pip of
    # this test's interpreter installs into it (`--python`), reusing its download cache.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    argv = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
            *pip[1:], "--quiet", "--no-compile"]
    done = subprocess.run(argv, cwd=context, capture_output=True, text=True, timeout=300,
                          env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    yield venv / "bin"


def _run(bin_: Path, *argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_ / argv[0]), *argv[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=clean_env(**env), check=False)


def test_copies_land_in_the_workdir() -> None:
    copies, _pip = dockerfile_steps()
    assert copies and all(c[-1] in ("./", ".", "/app", "/app/") or c[-1].startswith("./")
                          for c in copies), copies


def test_clean_install_has_the_redis_transport_and_no_dev_tools(installed: Path,
                                                                tmp_path: Path) -> None:
    probe = _run(installed, "python", "-c",
                 "import kombu.transport.redis, celery.backends.redis, alembic, apprise, rich\n"
                 "import bkit, importlib.util as u\n"
                 "print(bkit.__file__)\n"
                 "print(u.find_spec('pytest') is None, u.find_spec('hypothesis') is None)",
                 cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    where, no_dev = probe.stdout.splitlines()
    assert where.startswith(str(installed.parent)), where  # the installed copy, not the repo
    assert no_dev == "True True"
    helped = _run(installed, "bkit", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "db" in helped.stdout, helped.stderr


def test_clean_install_migrates_a_fresh_database(installed: Path, tmp_path: Path) -> None:
    env = {"BKIT_HOME": str(tmp_path), "BKIT_DATABASE_URL": f"sqlite:///{tmp_path}/b.sqlite"}
    first = _run(installed, "bkit", "db", "upgrade", cwd=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("database schema: empty -> "), first.stdout
    assert _run(installed, "bkit", "health", cwd=tmp_path, **env).stdout.strip() == "healthy"


def test_clean_install_starts_a_worker_on_redis(installed: Path, tmp_path: Path) -> None:
    redis.Redis.from_url(BROKER).flushdb()
    name = f"install{uuid.uuid4().hex[:6]}"
    env = {"BKIT_HOME": str(tmp_path), "BKIT_DATABASE_URL": f"sqlite:///{tmp_path}/b.sqlite",
           "BKIT_BROKER_URL": BROKER, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(installed / "bkit"), "worker", "-Q", "maint", "-c", "1",
                                 "-n", f"{name}@%h", "--loglevel", "INFO"], cwd=tmp_path,
                                env=clean_env(**env), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 60,
                   "the worker to be ready or to exit")
        assert proc.poll() is None, log.read_text()[-3000:]
        assert "@127.0.0.1:6379/14" in log.read_text()  # the transport line
        # Answered over Redis by the worker (returns as soon as the one node has replied).
        node = f"{name}@{socket.gethostname()}"
        ping = _run(installed, "python", "-c",
                    "import sys; from bkit.celery import app; "
                    "print(app.control.ping([sys.argv[1]], timeout=10))", node,
                    cwd=tmp_path, **env)
        assert ping.returncode == 0 and f"'{node}': {{'ok': 'pong'}}" in ping.stdout, (
            ping.stdout + ping.stderr)
    finally:
        stop_process(proc)
        redis.Redis.from_url(BROKER).flushdb()

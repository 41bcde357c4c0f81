"""`bkit flower` against a real worker on the embedded filesystem broker: the REST API needs
the credentials (401 without), lists the worker and a finished task; the password never
appears on a command line; no credentials means no Flower."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.ops.conftest import (
    REPO,
    STRATEGIES,
    OpsEnv,
    clean_env,
    free_port,
    stop_process,
    wait_until,
)
from tests.ops.strategies_ops import EXCHANGE, STRATEGY

pytestmark = pytest.mark.integration
USER, PASSWORD = "ops", "s3cret-flower-pass"
SEND = "from bkit.celery import app; print(app.send_task('bkit.fanout_ticks').id)"


def get(url: str, auth: bool = True) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            return response.status, json.loads(body) if "json" in (
                response.headers.get("Content-Type") or "") else body
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:  # not listening yet
        return 0, None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """A worker and Flower on a filesystem broker under tmp_path; yields (env, flower port)."""
    env = clean_env(BKIT_HOME=str(tmp_path), BKIT_STRATEGIES=STRATEGIES,
                    BKIT_DATABASE_URL=f"sqlite:///{tmp_path / 'bkit.sqlite'}",
                    BKIT_FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}")
    port = free_port()
    # The worker's log stays in tmp_path: a failure below names what the worker said.
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-c", "1", "-n",
         "flowertest@%h", "--loglevel", "INFO"], env=env, cwd=REPO,
        stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    flower = subprocess.Popen(
        [str(Path(sys.executable).parent / "bkit"), "flower", "--port", str(port), "--",
         "--max_tasks=5000"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        yield env, port
        assert worker.poll() is None and flower.poll() is None
        cmdlines = [" ".join(psutil.Process(p.pid).cmdline()) for p in (worker, flower)]
        assert not [c for c in cmdlines if PASSWORD in c]
        assert f"flower --address=127.0.0.1 --port={port} --max_tasks=5000" in cmdlines[1]
        flower_env = psutil.Process(flower.pid).environ()
        assert flower_env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"
        assert flower_env["FLOWER_INSPECT_TIMEOUT"] == "5000"  # filesystem broker polls 1/s
    finally:
        stop_process(flower)
        stop_process(worker)


def test_flower_shows_the_worker_and_a_finished_task(cluster: tuple[dict[str, str], int]
                                                     ) -> None:
    env, port = cluster
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/healthcheck", auth=False)[0] == 200 or None, 40,
               "Flower to answer /healthcheck")
    assert get(f"{base}/api/workers", auth=False)[0] == 401
    assert get(f"{base}/api/tasks", auth=False)[0] == 401

    def worker_listed() -> list[str]:
        status, workers = get(f"{base}/api/workers?refresh=1")
        assert status == 200
        return [name for name in workers or {} if name.startswith("flowertest@")]

    try:
        names = wait_until(worker_listed, 60, "the worker in /api/workers")
    except pytest.fail.Exception:  # say what the worker was doing (seen once in a CI run)
        log = (Path(env["BKIT_HOME"]) / "worker.log").read_text(errors="replace")
        pytest.fail(f"the worker never showed in /api/workers; its log ends:\n{log[-2000:]}")
    assert len(names) == 1  # type: ignore[arg-type]

    # one key, so the fan-out also sends a tick batch that Flower must name
    enabled = subprocess.run([str(Path(sys.executable).parent / "bkit"), "enable", STRATEGY,
                              "XRP/ETH", "--exchange", EXCHANGE], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert enabled.returncode == 0, enabled.stderr
    task_id = subprocess.run([sys.executable, "-c", SEND], env=env, cwd=REPO, check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()

    def finished() -> dict[str, Any] | None:
        status, tasks = get(f"{base}/api/tasks")
        assert status == 200
        task = (tasks or {}).get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(finished, 60, f"task {task_id} SUCCESS in /api/tasks")
    assert isinstance(task, dict)
    assert task["name"] == "bkit.fanout_ticks"
    assert task["worker"] == names[0]  # type: ignore[index]

    def tick_batch() -> dict[str, Any] | None:
        _, tasks = get(f"{base}/api/tasks")
        return next((t for t in (tasks or {}).values() if t.get("name") == "bkit.tick_batch"),
                    None)

    batch = wait_until(tick_batch, 60, "a tick batch in /api/tasks")
    assert isinstance(batch, dict)
    # Flower names the key it ticks, not `([1], 26179319)`
    assert f"XRP/ETH·{STRATEGY}@{EXCHANGE}, minute 20" in batch["args"]
    status, metrics = get(f"{base}/metrics", auth=False)  # unauthenticated: bind 127.0.0.1
    assert status == 200 and "flower_events_total" in metrics


def test_flower_refuses_to_start_without_credentials(sqlite_ops: OpsEnv) -> None:
    refused = sqlite_ops.bkit("flower", "--port", str(free_port()))
    assert refused.returncode == 1
    assert "BKIT_FLOWER_BASIC_AUTH" in refused.stderr
    malformed = sqlite_ops.bkit("flower", BKIT_FLOWER_BASIC_AUTH="only-a-user")
    assert malformed.returncode == 1
    assert "user:password" in malformed.stderr

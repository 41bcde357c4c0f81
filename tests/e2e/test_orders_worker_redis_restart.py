"""The orders worker rides out a Redis restart without exiting (issue 11; celery/kombu#582).

The orders worker always holds unacknowledged messages (submits scheduled with a countdown).
kombu's Redis transport restores them when the connection drops, from a connection object
that is already gone, and the worker died with `AttributeError: 'NoneType' object has no
attribute 'hostname'`. `bkit.redis_transport` makes that restore best-effort. A private
redis-server on its own port is restarted here, so other tests' broker is untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, wait_until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis(port: int) -> None:
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port",
                    str(port), "--save", "", "--appendonly", "no"], check=True,
                   capture_output=True)
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                      capture_output=True).returncode == 0, 20,
               message="redis up")


def test_orders_worker_survives_a_redis_restart_holding_countdown_messages(
        tmp_path: Path) -> None:
    port = _free_port()
    _redis(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env.update({"BKIT_HOME": str(tmp_path), "BKIT_BROKER_URL": f"redis://127.0.0.1:{port}/0",
                "BKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'bkit.sqlite'}",
                "PYTHONPATH": str(REPO)})
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bkit", "worker", "-Q",
                               "orders", "-c", "1", "--loglevel", "INFO"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    send = [sys.executable, "-c", "import sys; from bkit.celery import app; "
            "[app.send_task('bkit.orders.submit', args=[int(a)], queue='orders', "
            "countdown=float(sys.argv[1])) for a in sys.argv[2:]]"]
    try:
        wait_until(lambda: b"ready." in log.read_bytes(), 60, message="worker ready")
        subprocess.run([*send, "120", "900001", "900002", "900003"], env=env, check=True,
                       timeout=60)
        time.sleep(2)  # the worker has taken the countdown messages (unacknowledged)
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"],
                       capture_output=True)
        time.sleep(1.5)
        _redis(port)
        wait_until(lambda: log.read_bytes().count(b"Connected to") >= 2, 60,
                   message="the worker reconnected")
        assert worker.poll() is None, log.read_text()[-3000:]
        subprocess.run([*send, "0", "900009"], env=env, check=True, timeout=60)
        wait_until(lambda: b"bkit.orders.submit" in log.read_bytes().split(
            b"Connected to")[-1] and b"succeeded" in log.read_bytes().split(
            b"Connected to")[-1], 60, message="a submit after the restart runs")
        text = log.read_text()
        assert "Unrecoverable error" not in text, text[-3000:]
        assert worker.poll() is None
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"],
                       capture_output=True)

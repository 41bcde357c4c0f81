"""The embedded default (no settings: SQLite + filesystem broker) and bad input at the
runtime's edges: broken strategy modules, a database down at start. The README's main
command, `bkit demo`, is run by `test_demo.py`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from bkit.live import Live
from bkit.store.engine import dispose_all, get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, StrategySymbol
from bkit.testing.tcp_proxy import TcpProxy, free_port
from tests.integration.conftest import REPO, Runtime, wait_until

pytestmark = pytest.mark.integration


def test_embedded_default_worker_with_beat_trades_and_live_run_sees_it(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(None, None, speed=60.0)  # no database or broker settings at all
    assert "BKIT_DATABASE_URL" not in runtime.env and "BKIT_BROKER_URL" not in runtime.env
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    results = Live.run("XRP/ETH", "it-long-brief", "paper")
    opened = next(results)
    assert opened.action == "opened"
    assert (runtime.home / "bkit.sqlite").exists()
    assert any((runtime.home / "broker").iterdir())
    closed = next(results)
    assert closed.action == "closed" and closed.signal is not None
    assert closed.signal.id == opened.signal.id  # type: ignore[union-attr]


def test_worker_refuses_to_start_with_a_broken_strategy_module(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(None, None, strategies="tests.integration.broken_strategy")
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-c", "1"], cwd=REPO,
        env=runtime.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "cannot import strategy module 'tests.integration.broken_strategy'" in output
    assert "broken on purpose" in output


def test_database_down_at_start_then_up_worker_recovers_and_nothing_is_lost(
        make_runtime: Callable[..., Runtime], pg_url: str, redis_broker_url: str) -> None:
    direct = pg_url
    engine = get_engine(direct)
    upgrade(engine)
    key_id = ensure_key(engine, "it-long", "paper", "XRP/ETH")
    port = free_port()
    proxied = direct.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    runtime = make_runtime(proxied, redis_broker_url, speed=60.0)
    worker = runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    log = runtime.home / next(p.name for p in runtime.home.glob("w0-*.log"))
    wait_until(lambda: b"database unavailable" in log.read_bytes(), 30,
               message="a clear error while the database is down")
    assert worker.poll() is None, "the worker keeps running while the database is down"
    proxy = TcpProxy(("127.0.0.1", 5432), port)
    proxy.start()
    try:
        dispose_all()
        wait_until(lambda: _opened_events(direct, key_id), 60, message="ticks after recovery")
        with session_scope(get_engine(direct)) as session:
            key = session.get(StrategySymbol, key_id)
            assert key is not None and key.status == "enabled" and key.last_bucket > 0
    finally:
        runtime.stop_all()
        proxy.stop()
    time.sleep(0.2)


def _opened_events(url: str, key_id: int) -> list[EventRecord]:
    with session_scope(get_engine(url)) as session:
        return list(session.execute(select(EventRecord).where(
            EventRecord.key_id == key_id, EventRecord.action == "opened")).scalars())

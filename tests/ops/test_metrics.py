"""The Prometheus endpoint over HTTP on 127.0.0.1 against a real PostgreSQL database: every
figure is read from the database per scrape; a database outage answers `bkit_up 0`."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bkit.live import Live
from bkit.ops import admin
from bkit.ops.metrics import start_metrics_server
from bkit.store.engine import make_engine, session_scope
from bkit.store.tables import OrderIntent, SignalRecord, StrategySymbol
from tests.ops.conftest import BKIT, REPO, OpsEnv, free_port, stop_process, wait_until
from tests.ops.strategies_ops import EXCHANGE, QUIET, START, STRATEGY

pytestmark = pytest.mark.integration
XRP, BTC = "XRP/ETH", "UNITTEST/BTC"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def key(name: str, symbol: str, strategy: str = STRATEGY, **extra: str
        ) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"strategy": strategy, "exchange": EXCHANGE, "symbol": symbol, **extra}
    return name, tuple(sorted(labels.items()))


def _intent(key_id: int, number: int, status: str) -> OrderIntent:
    now = datetime.now(UTC)
    return OrderIntent(key_id=key_id, signal_id=f"s{number}", kind="open",
                       client_order_id=f"bk-test-{number}", exchange_name=EXCHANGE,
                       symbol=XRP, side="buy", price=1.0, cost=100.0, status=status,
                       created_at=now, updated_at=now)


@pytest.fixture(params=["pg_ops", "sqlite_ops"])
def ops(request: pytest.FixtureRequest) -> OpsEnv:
    """PostgreSQL (the scale-out database) and SQLite (the embedded default)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def server(ops: OpsEnv) -> Iterator[int]:
    httpd, thread = start_metrics_server("127.0.0.1", 0, engine_factory=lambda: ops.engine)
    yield int(httpd.server_port)
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_metrics_are_read_from_the_database_per_scrape(ops: OpsEnv, server: int) -> None:
    admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="t")
    admin.enable_keys(QUIET, [XRP], EXCHANGE, actor="t")
    for minute in (*range(5), *range(6, 10)):  # minute 5 is never ticked
        Live.tick(XRP, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
    assert Live.tick(BTC, STRATEGY, EXCHANGE, START - timedelta(days=30)) is None  # no candles
    with session_scope(ops.engine) as session:
        keys = {k.symbol + k.strategy_name: k for k in session.execute(
            select(StrategySymbol)).scalars()}
        xrp, btc = keys[XRP + STRATEGY], keys[BTC + STRATEGY]
        assert xrp.id is not None
        session.add_all([_intent(xrp.id, 1, "pending"), _intent(xrp.id, 2, "pending"),
                         _intent(xrp.id, 3, "filled")])
        open_now = len([s for s in session.execute(select(SignalRecord).where(
            SignalRecord.key_id == xrp.id, SignalRecord.state == "opened")).scalars()])
    admin.set_halt(True, actor="t")

    samples = scrape(server)
    assert samples[("bkit_up", ())] == 1
    assert samples[("bkit_halted", ())] == 1
    assert samples[key("bkit_key_ticks_total", XRP)] == 9
    assert samples[key("bkit_key_ticks_skipped_total", XRP)] == 1
    assert samples[key("bkit_key_ticks_failed_total", XRP)] == 0
    assert samples[key("bkit_key_ticks_total", BTC)] == 0
    assert samples[key("bkit_key_ticks_failed_total", BTC)] == 1
    assert samples[key("bkit_key_errors_total", BTC)] == 1
    assert btc.last_error_at is not None
    assert samples[key("bkit_key_last_error_timestamp_seconds", BTC)] == pytest.approx(
        btc.last_error_at.timestamp(), abs=1e-3)
    assert key("bkit_key_last_error_timestamp_seconds", XRP) not in samples
    assert samples[key("bkit_key_tick_lag_seconds", XRP)] == pytest.approx(
        xrp.last_tick_lag_ms / 1000)
    assert samples[key("bkit_key_last_tick_timestamp_seconds", XRP)] == (
        START + timedelta(minutes=9)).timestamp()
    assert samples[key("bkit_key_open_positions", XRP)] == open_now == 1
    assert samples[("bkit_live_signals", (("state", "opened"),))] == 1
    assert samples[("bkit_order_intents", (("status", "pending"),))] == 2
    assert samples[("bkit_order_intents", (("status", "filled"),))] == 1
    assert samples[("bkit_order_intents", (("status", "rejected"),))] == 0
    assert samples[key("bkit_key_status", XRP, status="enabled")] == 1
    assert key("bkit_key_status", XRP, status="disabled") not in samples  # current only
    assert samples[key("bkit_key_ticks_total", XRP, strategy=QUIET)] == 0

    admin.change_status(STRATEGY, [XRP], "disabled", EXCHANGE, actor="t", force=True)
    admin.set_halt(False, actor="t")
    Live.tick(BTC, STRATEGY, EXCHANGE, START)
    again = scrape(server)
    assert again[key("bkit_key_status", XRP, status="disabled")] == 1
    assert key("bkit_key_status", XRP, status="enabled") not in again
    assert again[("bkit_halted", ())] == 0
    assert again[key("bkit_key_ticks_total", BTC)] == 1


def test_a_database_outage_answers_bkit_up_zero() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    httpd, thread = start_metrics_server("127.0.0.1", 0, engine_factory=lambda: engine)
    try:
        samples = scrape(int(httpd.server_port))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        engine.dispose()
    assert samples == {("bkit_up", ()): 0}


def test_bkit_metrics_command_binds_loopback(pg_ops: OpsEnv) -> None:
    admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t")
    for minute in range(3):
        Live.tick(XRP, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
    port = free_port()
    proc = subprocess.Popen([str(BKIT), "metrics", "--port", str(port)], env=pg_ops.env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def answers() -> Samples | None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return scrape(port)
            except OSError:
                return None

        samples = wait_until(answers, 30, "bkit metrics to answer")
        assert isinstance(samples, dict)
        assert samples[key("bkit_key_ticks_total", XRP)] == 3
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
    finally:
        stop_process(proc)  # type: ignore[arg-type]
    assert proc.returncode == 0
    assert proc.stdout is not None
    assert f"http://127.0.0.1:{port}/metrics" in proc.stdout.read().decode()

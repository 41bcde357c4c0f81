"""The Prometheus endpoint over HTTP on 127.0.0.1 against a real PostgreSQL database: every
figure is read from the database per scrape; a database outage answers `bkit_up 0`."""

from __future__ import annotations

import gzip
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select

from bkit.live import Live
from bkit.ops import admin
from bkit.ops.metrics import render_metrics, start_metrics_server
from bkit.store.engine import make_engine, session_scope
from bkit.store.tables import BkitSetting, OrderIntent, SignalRecord, StrategySymbol
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


# The page bkit writes by hand must be the page prometheus_client writes from metric
# families: the reference below is built with prometheus_client's own families and encoders
# from the known rows, one key per case (label values to escape, no tick yet, errors).
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ERROR_AT = T0 + timedelta(minutes=2, milliseconds=123)
QUOTE_KEY = {"strategy": 'q"uote', "exchange": EXCHANGE, "symbol": "BS\\LASH/ETH"}
NEW_KEY = {"strategy": "plain", "exchange": EXCHANGE, "symbol": "NEW/ETH"}
ERROR_KEY = {"strategy": "multi\nline", "exchange": EXCHANGE, "symbol": "ERR/USDT"}
KEY_ROWS = [  # the key's labels, the row's status and counters, its live signal
    (QUOTE_KEY, {"status": "enabled", "ticks_total": 2_000_000, "first_tick_at": T0,
                 "last_tick_at": T0 + timedelta(minutes=2_000_009), "last_tick_lag_ms": 812.5},
     "opened"),
    (NEW_KEY, {"status": "paused"}, "scheduled"),
    (ERROR_KEY, {"status": "draining", "ticks_total": 5, "first_tick_at": T0,
                 "last_tick_at": T0 + timedelta(minutes=4), "last_tick_lag_ms": 1_234_567.0,
                 "ticks_failed": 3, "errors_total": 7, "last_error_at": ERROR_AT}, "closing"),
]
EXPECTED = [  # status, lag s, last tick s, ticks, failed, skipped, errors, last error s, open
    (QUOTE_KEY, "enabled", 0.8125, (T0 + timedelta(minutes=2_000_009)).timestamp(),
     2_000_000, 0, 10, 0, None, 1),
    (NEW_KEY, "paused", None, None, 0, 0, 0, 0, None, 0),
    (ERROR_KEY, "draining", 1234.567, (T0 + timedelta(minutes=4)).timestamp(), 5, 3, 0, 7,
     ERROR_AT.timestamp(), 1),
]
ACCEPT = [None, "text/plain;version=1.0.0;escaping=allow-utf-8",
          "application/openmetrics-text;version=1.0.0;escaping=underscores",
          "application/openmetrics-text;version=1.0.0;escaping=dots"]
DURATION = "bkit_scrape_duration_seconds"


def _store_rows(engine: Engine) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        for labels, row, state in KEY_ROWS:
            key_row = StrategySymbol(strategy_name=labels["strategy"], symbol=labels["symbol"],
                                     exchange_name=labels["exchange"], **row)
            session.add(key_row)
            session.flush()
            assert key_row.id is not None
            for number, signal_state in enumerate((state, "closed")):
                session.add(SignalRecord(
                    key_id=key_row.id, signal_id=f"{state}-{number}", symbol=labels["symbol"],
                    strategy_name=labels["strategy"], exchange_name=EXCHANGE, position="long",
                    state=signal_state, price_open=1.0, price_take_profit=1.1,
                    price_stop_loss=0.9, minute_estimated_time=60, cost=100.0,
                    created_at=now, stuck=signal_state == "closing"))
            if labels is QUOTE_KEY:
                session.add_all([_intent(key_row.id, n, status) for n, status in
                                 enumerate(("pending", "pending", "filled", "acked"))])
        session.add_all([BkitSetting(key="halt", value="1"),
                         BkitSetting(key="reconcile", value='{"differences": 3}')])


def _reference_families() -> list[Metric]:
    """The families of the rows above, in prometheus_client's own types (duration 0)."""
    names = ["exchange", "strategy", "symbol"]
    status = GaugeMetricFamily("bkit_key_status", "1 for the key's current status",
                               labels=[*names, "status"])
    per_key = [GaugeMetricFamily("bkit_key_tick_lag_seconds", "Wall seconds between the last "
                                 "tick minute and its write", labels=names),
               GaugeMetricFamily("bkit_key_last_tick_timestamp_seconds",
                                 "Last tick minute (market time, Unix s)", labels=names),
               CounterMetricFamily("bkit_key_ticks", "Completed ticks", labels=names),
               CounterMetricFamily("bkit_key_ticks_failed",
                                   "Claimed ticks that failed (retried next minute)",
                                   labels=names),
               CounterMetricFamily("bkit_key_ticks_skipped", "Minutes between first and last "
                                   "completed tick without a completed tick", labels=names),
               CounterMetricFamily("bkit_key_errors", "Error events", labels=names),
               GaugeMetricFamily("bkit_key_last_error_timestamp_seconds",
                                 "Newest error of the key (Unix s)", labels=names),
               GaugeMetricFamily("bkit_key_open_positions",
                                 "Open positions (opening, opened, closing)", labels=names)]
    for labels, key_status, *values in EXPECTED:
        label_values = [labels[n] for n in names]
        status.add_metric([*label_values, key_status], 1)
        for family, value in zip(per_key, values, strict=True):
            if value is not None:
                family.add_metric(label_values, value)
    up = GaugeMetricFamily("bkit_up", "1 if the database answered this scrape, else 0", 1)
    halted = GaugeMetricFamily("bkit_halted", "1 while the global kill switch is on", 1)
    live = GaugeMetricFamily("bkit_live_signals", "Live signals by state", labels=["state"])
    for state, count in (("closing", 1), ("opened", 1), ("opening", 0), ("scheduled", 1)):
        live.add_metric([state], count)
    intents = GaugeMetricFamily("bkit_order_intents", "Order intents by status",
                                labels=["status"])
    for name, count in (("acked", 1), ("canceled", 0), ("expired", 0), ("filled", 1),
                        ("open", 0), ("pending", 2), ("rejected", 0), ("stuck", 0),
                        ("unknown", 0)):
        intents.add_metric([name], count)
    stuck = GaugeMetricFamily("bkit_positions_stuck", "Positions whose exit the venue keeps "
                              "refusing (an operator must `bkit resolve` them)", 1)
    differences = GaugeMetricFamily("bkit_reconcile_differences", "Differences between bkit "
                                    "and the account at the last reconciliation", 3)
    duration = GaugeMetricFamily(DURATION, "Time spent reading the database for this scrape",
                                 0)
    return [up, status, *per_key, halted, live, intents, stuck, differences, duration]


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _without_duration(page: str) -> tuple[list[str], float]:
    """The page's lines, sorted, but the duration sample's; and the duration."""
    lines = page.splitlines()
    duration = [line for line in lines if line.split(" ")[0] in (DURATION, "bkit__scrape__"
                                                                  "duration__seconds")]
    assert len(duration) == 1
    return sorted(line for line in lines if line != duration[0]), float(duration[0].split()[1])


def _families(page: str, content_type: str) -> list[tuple[Any, ...]]:
    parse = (parse_openmetrics if content_type.startswith("application/openmetrics-text")
             else text_string_to_metric_families)
    return sorted((f.name, f.type, f.documentation, sorted(
        (s.name, sorted(s.labels.items()), s.value) for s in f.samples
        if not s.name.endswith(("scrape_duration_seconds", "scrape__duration__seconds"))))
        for f in parse(page))


@pytest.mark.parametrize("accept", ACCEPT)
def test_the_page_is_prometheus_clients_page_of_the_same_rows(ops: OpsEnv,
                                                              accept: str | None) -> None:
    _store_rows(ops.engine)
    encoder, content_type = choose_encoder(accept or "")

    body, served_type = render_metrics(lambda: ops.engine, accept)

    reference = encoder(_Fixed(_reference_families())).decode()
    page = body.decode()
    assert served_type == content_type
    assert _families(page, content_type) == _families(reference, content_type)
    lines, duration = _without_duration(page)
    assert lines == _without_duration(reference)[0]
    assert 0 < duration < 10
    assert page.endswith("# EOF\n") == content_type.startswith("application/openmetrics")
    assert 'strategy="q\\"uote",symbol="BS\\\\LASH/ETH"' in page
    assert 'strategy="multi\\nline"' in page


def test_name_filter_keeps_prometheus_clients_rules(pg_ops: OpsEnv) -> None:
    _store_rows(pg_ops.engine)
    names = ["bkit_up", "bkit_key_ticks_total", "bkit_key_last_error_timestamp_seconds",
             "bkit_key_ticks", "bkit_order_intents"]  # a family name is not a sample name
    registry = CollectorRegistry(support_collectors_without_names=True)
    registry.register(_Fixed(_reference_families()))
    reference = registry.restricted_registry(names)

    body, _ = render_metrics(lambda: pg_ops.engine, None, names)

    assert sorted(body.decode().splitlines()) == sorted(generate_latest(reference).decode()
                                                         .splitlines())
    assert [f.name for f in text_string_to_metric_families(body.decode())] == [
        "bkit_key_ticks", "bkit_key_last_error_timestamp_seconds", "bkit_up",
        "bkit_order_intents"]


def test_the_http_page_negotiates_format_and_gzip(pg_ops: OpsEnv) -> None:
    _store_rows(pg_ops.engine)
    httpd, thread = start_metrics_server("127.0.0.1", 0, engine_factory=lambda: pg_ops.engine)
    url = f"http://127.0.0.1:{httpd.server_port}"

    def get(path: str, method: str = "GET", **headers: str) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.headers, refused.read()

    try:
        plain = get("/metrics")
        zipped = get("/metrics", **{"Accept": "application/openmetrics-text; version=1.0.0",
                                    "Accept-Encoding": "gzip"})
        options, post = get("/metrics", "OPTIONS"), get("/metrics", "POST")
        favicon = get("/favicon.ico")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert plain[0] == 200
    assert plain[1]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert plain[1]["Content-Encoding"] is None
    assert _families(plain[2].decode(), "text/plain") == _families(
        generate_latest(_Fixed(_reference_families())).decode(), "text/plain")
    assert zipped[0] == 200
    assert zipped[1]["Content-Type"] == ("application/openmetrics-text; version=1.0.0; "
                                         "charset=utf-8; escaping=underscores")
    assert zipped[1]["Content-Encoding"] == "gzip"
    page = gzip.decompress(zipped[2]).decode()
    assert page.endswith("# EOF\n")
    assert f'bkit_key_ticks_total{{exchange="{EXCHANGE}",strategy="q\\"uote",' in page
    assert (options[0], options[1]["Allow"], options[2]) == (200, "OPTIONS,GET", b"")
    assert (post[0], post[1]["Allow"]) == (405, "OPTIONS,GET")
    assert post[2] == b"# HTTP 405 Method Not Allowed: POST; use OPTIONS or GET\n"
    assert (favicon[0], favicon[2]) == (200, b"")

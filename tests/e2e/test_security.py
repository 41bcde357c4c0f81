"""Security basics with real parts.

1. Secrets: a real orders flow (ccxt client → fake binance, orders worker at DEBUG, Redis,
   PostgreSQL, one 503 and one insufficient-balance rejection) runs with a canary API key and
   secret (`sec_canary_flow`). The canary (raw, URL-encoded, base64, or just its random core)
   must appear nowhere: worker, Flower and metrics logs, the test process's own log, every row
   of every table, the Markdown and HTML reports, `bkit status --json`, exchange errors (`str`,
   `repr`, formatted traceback), `repr()`/pickle of the exchange, Flower's task and worker API,
   the metrics page.
2. Flower (`bkit flower`) and metrics (`bkit metrics`) listen on 127.0.0.1 only by default.
3. SQL only through bound parameters: injection-shaped symbols, notes, actors and reasons go
   through `Live.tick` and the real `bkit` script and are stored verbatim, every table survives;
   and a static check (`sec_sql_scan`) that no `text()` / `exec_driver_sql()` / DB-API
   `execute()` in `bkit/` or `workers/` builds SQL from variables.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from sqlalchemy import inspect, select

from bkit.live import Live
from bkit.store.engine import dispose_all, get_engine, session_scope
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol
from bkit.testing.fake_exchange import ORDER_PATH
from tests.e2e.sec_canary_flow import (
    BKIT,
    CANARY_KEY,
    CANARY_SECRET,
    FLOWER_PASSWORD,
    PG_ADMIN,
    REPO,
    START,
    Surfaces,
    leaks,
    reset_process_state,
    run_canary_flow,
)
from tests.e2e.sec_sql_scan import sql_call_count, sql_from_variables
from tests.subprocesses import run_at_once


def test_the_canary_detector_finds_every_encoding() -> None:
    assert leaks("nothing to see") == []
    for text in (f"headers={{'X-MBX-APIKEY': '{CANARY_KEY}'}}",
                 f"apiKey={quote(CANARY_KEY, safe='')}&x=1",
                 f"secret={quote_plus(CANARY_SECRET)}",
                 base64.b64encode(CANARY_SECRET.encode()).decode(),
                 json.dumps({"k": CANARY_KEY[:26]}),  # cut after its random core
                 CANARY_SECRET.upper()):
        assert leaks(text), text


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surfaces]:
    """The canary flow, run once for the module; its processes are gone before any test."""
    yield run_canary_flow(tmp_path_factory.mktemp("security"))


SURFACES = ("worker log", "flower log", "metrics log", "test process log",
            "exchange errors (str, repr, traceback)", "exchange repr/str/pickle",
            "bkit markdown report output", "bkit html report output", "html report file",
            "bkit status --json output", "bkit strategies output", "flower /api/tasks",
            "flower /api/workers", "metrics /metrics", "flower command line",
            "metrics command line")
BKIT_TABLES = {"strategy_symbol", "signal", "risk_budget", "risk_slot", "event", "order_intent",
               "paper_order", "bkit_setting", "bkit_schema", "candle_cache"}


@pytest.mark.integration
def test_the_flow_really_used_the_canary_and_hit_both_faults(surfaces: Surfaces) -> None:
    assert surfaces.api_keys_seen == [CANARY_KEY], "every order request carried the canary key"
    kinds = [(i["kind"], i["status"]) for i in surfaces.intents]
    assert kinds == [("open", "filled"), ("close", "filled"), ("open", "rejected")]
    assert surfaces.intents[0]["attempts"] >= 2  # the 503, then the fill
    first_error = surfaces.intents[0]["last_error"] or ""  # the 503's binance code -1001
    assert "TransientExchangeError" in first_error and "-1001" in first_error, first_error
    assert any("rolled back" in m and "insufficient balance" in m
               for m in surfaces.error_messages), surfaces.error_messages
    assert set(surfaces.exit_codes.values()) == {0}, surfaces.exit_codes
    assert surfaces.signal_ids[0] in surfaces.texts["bkit markdown report output"]
    assert "<html" in surfaces.texts["html report file"].lower()
    submits = [t for t in surfaces.flower_tasks.values() if t.get("name") == "bkit.orders.submit"]
    assert len(submits) >= 3
    assert all({"args", "kwargs", "result"} <= set(t) for t in submits), submits[0]
    assert any(t["result"] for t in submits), "Flower saw the submits' results"


@pytest.mark.integration
def test_debug_logs_show_the_http_traffic_with_the_credentials_masked(
        surfaces: Surfaces) -> None:
    """Not vacuous: at DEBUG ccxt logs every request's headers, API key included; the worker
    log has those lines, with the key replaced by ***."""
    worker_log = surfaces.texts["worker log"]
    requests = [line for line in worker_log.splitlines()
                if ORDER_PATH in line and "Request:" in line]
    assert requests, "the worker log has the ccxt request lines of the orders"
    assert all("X-MBX-APIKEY" in line and "***" in line for line in requests), requests[:2]
    assert "DEBUG" in worker_log


@pytest.mark.integration
@pytest.mark.parametrize("surface", SURFACES)
def test_the_canary_appears_nowhere(surfaces: Surfaces, surface: str) -> None:
    text = surfaces.texts[surface]
    assert text.strip(), f"{surface} is empty: nothing was checked"
    assert leaks(text) == [], f"canary {leaks(text)} in {surface}"


@pytest.mark.integration
def test_the_canary_is_in_no_row_of_any_table(surfaces: Surfaces) -> None:
    assert BKIT_TABLES <= set(surfaces.tables), sorted(surfaces.tables)
    for table in ("event", "order_intent", "signal", "strategy_symbol"):
        assert surfaces.tables[table], f"table {table} has rows to check"
    leaked = {table: leaks(text) for table, text in surfaces.tables.items() if leaks(text)}
    assert leaked == {}


@pytest.mark.integration
def test_flower_and_metrics_listen_on_loopback_only_by_default(surfaces: Surfaces) -> None:
    for name in ("flower", "metrics"):
        port = surfaces.ports[name]
        on_port = [address for address, bound in surfaces.listening[name] if bound == port]
        assert on_port, f"{name} listens on its port {port}"
        assert set(on_port) == {"127.0.0.1"}, f"{name} listens on {on_port}"
    # Where this machine has another address, nothing answers there.
    assert [entry for entry in surfaces.other_addresses if entry[2]] == []
    assert "--address=127.0.0.1" in surfaces.texts["flower command line"]
    assert FLOWER_PASSWORD not in surfaces.texts["flower command line"]


# ----------------------------------------------------------------------------------------
# SQL only through bound parameters
# ----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[dict[str, str]]:
    """Settings for the injection test on SQLite or a fresh PostgreSQL database."""
    database = None
    if request.param == "postgresql":
        database = f"bkit_sec_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    else:
        url = f"sqlite:///{tmp_path / 'bkit.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BKIT_", "FLOWER_"))}
    env.update({"BKIT_HOME": str(tmp_path), "BKIT_DATABASE_URL": url,
                "BKIT_STRATEGIES": "tests.e2e.sec_sql_strategies", "PYTHONUNBUFFERED": "1"})
    for name in [k for k in os.environ if k.startswith("BKIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BKIT_HOME", str(tmp_path))
    monkeypatch.setenv("BKIT_DATABASE_URL", url)
    reset_process_state()
    sys.modules.pop("tests.e2e.sec_sql_strategies", None)
    importlib.import_module("tests.e2e.sec_sql_strategies")
    try:
        yield env
    finally:
        reset_process_state()
        sys.modules.pop("tests.e2e.sec_sql_strategies", None)
        if database is not None:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _bkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BKIT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _bkit_at_once(env: dict[str, str], *argvs: list[str]
                  ) -> list[subprocess.CompletedProcess[str]]:
    """`_bkit` for each argv, all at the same time (commands that change nothing)."""
    return run_at_once([[str(BKIT), *argv] for argv in argvs], env=env, cwd=REPO)


@pytest.mark.integration
def test_injection_shaped_values_are_stored_verbatim_and_every_table_survives(
        sql_env: dict[str, str]) -> None:
    from tests.e2e import sec_sql_strategies as sql

    # Live.tick refuses symbols with whitespace before any SQL runs (a symbol never has one).
    for symbol in sql.INJECTIONS:
        if " " in symbol:
            with pytest.raises(ValueError, match="symbol must be"):
                Live.tick(symbol, sql.STRATEGY, sql.EXCHANGE, START)
    # Injection-shaped symbols, signal notes and the strategy's note go through.
    for symbol in sql.SYMBOL_INJECTIONS:
        result = Live.tick(symbol, sql.STRATEGY, sql.EXCHANGE, START)
        assert result is not None and result.action == "opened", (symbol, result)
    engine = get_engine()
    tables_before = set(inspect(engine).get_table_names())
    assert {"signal", "event", "strategy_symbol", "order_intent", "risk_slot",
            "bkit_setting"} <= tables_before

    # The real admin script: symbols, actors, a halt reason and a strategy filter.
    actor, other_actor = sql.INJECTIONS[0], sql.INJECTIONS[2]
    cli_symbol = sql.SYMBOL_INJECTIONS[0]
    enabled = _bkit(sql_env, "enable", sql.STRATEGY, *sql.SYMBOL_INJECTIONS, "--exchange",
                    sql.EXCHANGE, "--actor", actor)
    assert enabled.returncode == 0, enabled.stderr
    paused = _bkit(sql_env, "pause", sql.STRATEGY, cli_symbol, "--exchange", sql.EXCHANGE,
                   "--actor", other_actor)
    assert paused.returncode == 0, paused.stderr
    halted = _bkit(sql_env, "halt", "--reason", sql.INJECTIONS[4], "--actor", actor)
    assert halted.returncode == 0, halted.stderr
    page = Path(sql_env["BKIT_HOME"]) / "report.html"
    # Reads, a filter shaped like `' OR 1=1 --` and a refused enable: none changes anything.
    status, filtered, report, one, html, unknown, strategies = _bkit_at_once(
        sql_env, ["status", "--json"], ["status", "' OR 1=1 --", "--json"],
        ["report", sql.STRATEGY, "--exchange", sql.EXCHANGE],  # all keys
        ["report", sql.STRATEGY, sql.SYMBOL_INJECTIONS[1], "--exchange", sql.EXCHANGE],
        ["report", sql.STRATEGY, "--exchange", sql.EXCHANGE, "--html", str(page)],
        ["enable", "x'; DROP TABLE signal; --", "XRP/ETH"], ["strategies"])
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["halted"] is True and shown["halt"]["reason"] == sql.INJECTIONS[4]
    assert shown["halt"]["actor"] == actor
    assert {k["symbol"] for k in shown["keys"]} == set(sql.SYMBOL_INJECTIONS)
    # The `' OR 1=1 --` filter matches no strategy: it is a value, not SQL.
    assert filtered.returncode == 0 and json.loads(filtered.stdout)["keys"] == []
    assert report.returncode == 0, report.stderr
    assert all(symbol in report.stdout for symbol in sql.SYMBOL_INJECTIONS), report.stdout
    assert one.returncode == 0 and sql.SYMBOL_INJECTIONS[1] in one.stdout, one.stderr
    assert html.returncode == 0, html.stderr
    assert "<script>" not in page.read_text() and "&lt;script&gt;" in page.read_text()
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert strategies.returncode == 0 and sql.INJECTIONS[0] in strategies.stdout
    assert _bkit(sql_env, "unhalt", "--actor", other_actor).returncode == 0

    dispose_all()
    engine = get_engine()
    assert set(inspect(engine).get_table_names()) == tables_before
    with session_scope(engine) as session:
        keys = {k.symbol: k for k in session.execute(select(StrategySymbol)).scalars()}
        signals = list(session.execute(select(SignalRecord)).scalars())
        admin = list(session.execute(select(EventRecord).where(
            EventRecord.kind == "admin").order_by(EventRecord.id)).scalars())
    assert set(keys) == set(sql.SYMBOL_INJECTIONS)
    assert keys[cli_symbol].status == "paused"
    assert all(keys[s].status == "enabled" for s in sql.SYMBOL_INJECTIONS[1:])
    assert sorted(s.symbol for s in signals) == sorted(sql.SYMBOL_INJECTIONS)
    assert all(s.note == f"{sql.NOTE} | {s.symbol}" and s.state == "opened" for s in signals)
    actors = [e.payload["actor"] for e in admin if e.payload]
    assert actor in actors and other_actor in actors
    assert any(e.message.startswith(f"{actor}: ") for e in admin)
    assert any(e.payload and e.payload.get("reason") == sql.INJECTIONS[4] for e in admin)


# ----------------------------------------------------------------------------------------
# Static check: no SQL text built from variables
# ----------------------------------------------------------------------------------------

#: Justified exceptions (file, source of the argument): PRAGMA values cannot be bound
#: parameters in SQLite; this one is an int module constant (SQLITE_BUSY_TIMEOUT_MS), so no
#: outside value can reach the statement.
ALLOWLIST = {("bkit/store/engine.py", 'f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"')}


def test_the_static_check_catches_sql_built_from_variables() -> None:
    bad = '''
from sqlalchemy import text
TABLE = "signal"
def f(conn, name, n):
    conn.execute(text(f"SELECT * FROM signal WHERE symbol = '{name}'"))
    conn.execute(text("SELECT * FROM signal WHERE symbol = '%s'" % name))
    conn.execute(text("SELECT * FROM " + name))
    conn.exec_driver_sql("DELETE FROM signal WHERE id = {}".format(n))
    cursor.execute(f"PRAGMA user_version={n}")
    conn.execute(text(build_query(name)))
'''
    good = '''
from sqlalchemy import text
QUERY = "SELECT 1"
def f(conn, stmt, name):
    conn.execute(text("SELECT * FROM signal WHERE symbol = :s"), {"s": name})
    conn.execute(text("SELECT 1 " "FROM bkit_schema"))
    conn.execute(text("SELECT 1 " + "FROM bkit_schema"))
    conn.execute(text(QUERY))
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    session.execute(stmt)
'''
    assert sorted(line for _, line, _ in sql_from_variables(bad, "bad.py")) == [5, 6, 7, 8, 9, 10]
    assert sql_from_variables(good, "good.py") == []


def test_no_sql_text_in_bkit_is_built_from_variables() -> None:
    found = []
    files = sorted([*(REPO / "bkit").rglob("*.py"), *(REPO / "workers").rglob("*.py")])
    for path in files:
        found += sql_from_variables(path.read_text(), str(path.relative_to(REPO)))
    hits = {(name, segment) for name, _line, segment in found}
    assert hits - ALLOWLIST == set(), sorted(hits - ALLOWLIST)
    # The allowlist holds only what is still there: a stale entry must be removed.
    assert ALLOWLIST <= hits, sorted(ALLOWLIST - hits)
    # Not vacuous: the migrations, the tick, the engine and `bkit health` use raw SQL.
    assert sum(sql_call_count(p.read_text()) for p in files) >= 6

"""The canary flow of the security tests: a real orders flow (ccxt client → fake binance,
orders worker at DEBUG, Redis, PostgreSQL, Flower, metrics) with a canary API key and secret,
and everything it leaves behind collected as text, one entry per surface."""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import psutil
import psycopg
import pytest
import redis
from sqlalchemy import Engine, MetaData, select

from bkit import events
from bkit.broker import Broker
from bkit.core.registry import REGISTRY, reset_config
from bkit.exchange.errors import ExchangeError
from bkit.live import Live
from bkit.settings import reset_settings
from bkit.store.engine import dispose_all, get_engine, session_scope
from bkit.store.tables import EventRecord, OrderIntent
from bkit.testing import FakeExchange
from bkit.testing.fake_exchange import ORDER_PATH, Fault
from tests.parallel import slot
from tests.real_candles import XRP_ETH_CSV, real_candles
from tests.subprocesses import run_at_once

REPO = Path(__file__).resolve().parents[2]
BKIT = Path(sys.executable).parent / "bkit"
PG_ADMIN = os.environ.get("BKIT_TEST_POSTGRES_ADMIN_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")
#: A Redis database of this module's own (integration uses 1-8, other suites 12, 13, 15).
REDIS_DB = 9 + slot(3)
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
SYMBOL = "XRP/ETH"
FLOWER_USER, FLOWER_PASSWORD = "sec", f"flower-{secrets.token_hex(8)}"

# The canaries: base64-alphabet characters (+ / =), like many venues' secrets, so the
# URL-encoded and raw forms differ. The random cores catch any other encoding that keeps
# a run of characters (JSON escapes, truncation, partial masking).
KEY_CORE, SECRET_CORE = secrets.token_hex(10), secrets.token_hex(12)
CANARY_KEY = f"SECKEY{KEY_CORE}+/{secrets.token_hex(3)}=="
CANARY_SECRET = f"SECSEC{SECRET_CORE}+/{secrets.token_hex(3)}="


def canary_forms() -> dict[str, str]:
    """Every form of the canaries to look for, by a name for the failure message."""
    forms: dict[str, str] = {"key core": KEY_CORE, "secret core": SECRET_CORE}
    for label, value in (("key", CANARY_KEY), ("secret", CANARY_SECRET)):
        forms[f"{label} raw"] = value
        forms[f"{label} url-encoded"] = quote(value, safe="")
        forms[f"{label} url-encoded (plus)"] = quote_plus(value)
        forms[f"{label} base64"] = base64.b64encode(value.encode()).decode()
        forms[f"{label} base64url"] = base64.urlsafe_b64encode(value.encode()).decode()
    return forms


def leaks(text: str) -> list[str]:
    """The canary forms found in `text` (case-insensitive: hex may be upper-cased)."""
    lowered = text.lower()
    return [name for name, form in canary_forms().items() if form.lower() in lowered]


@dataclass
class Surfaces:
    """What the flow left behind, collected while the processes ran; text per surface."""

    texts: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    listening: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    other_addresses: list[tuple[str, str, bool]] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    intents: list[dict[str, Any]] = field(default_factory=list)
    flower_tasks: dict[str, Any] = field(default_factory=dict)
    api_keys_seen: list[str] = field(default_factory=list)
    signal_ids: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)


def _wait(predicate: Callable[[], Any], timeout: float, what: str,
          interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(url: str, auth: bool = True) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of `pid` and its children."""
    found = []
    process = psutil.Process(pid)
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.append((str(conn.laddr.ip), int(conn.laddr.port)))
    return found


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback."""
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def dump_tables(engine: Engine) -> dict[str, str]:
    """Every row of every table, every column as `repr`, one text per table."""
    metadata = MetaData()
    metadata.reflect(engine)
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for name, table in sorted(metadata.tables.items()):
            rows = conn.execute(select(table)).all()
            out[name] = "\n".join(
                " | ".join(f"{column}={value!r}" for column, value in zip(
                    table.columns.keys(), row, strict=True)) for row in rows)
    return out


def _intents(engine: Engine) -> list[OrderIntent]:
    with session_scope(engine) as session:
        return list(session.execute(select(OrderIntent).order_by(OrderIntent.id)).scalars())


def reset_process_state() -> None:
    events.stop_follower()
    events.clear_listeners()
    REGISTRY.clear()
    reset_config()
    reset_settings()
    dispose_all()
    Broker.clear()
    Live._env = None


def _exchange_error_texts(fake: FakeExchange) -> list[str]:
    """Drive the real ccxt exchange (canary credentials) into each kind of error and return
    `str`, `repr` and the formatted traceback of every error it raised."""
    source = REGISTRY.exchange("fakebin").source
    texts: list[str] = []
    faults = [Fault.unavailable(), Fault.insufficient_balance(), Fault.invalid_order(),
              Fault.rate_limit(), Fault.bad_gateway(), Fault.duplicate()]
    for fault in faults:
        fake.fail_next(ORDER_PATH, fault, count=1)
        with pytest.raises(ExchangeError) as caught:
            source.create_order(SYMBOL, "market", "buy", "100", None,
                                f"bk{uuid.uuid4().hex[:20]}")
        texts.append(_describe_error(caught.value))
    with pytest.raises(ExchangeError) as missing:  # no order under this id
        source.fetch_order_by_client_id(SYMBOL, "bk-no-such-order")
    texts.append(_describe_error(missing.value))
    with pytest.raises(ExchangeError) as bad_symbol:
        source.create_order("NOPE/ETH", "market", "buy", "1", None, "bk-bad-symbol")
    texts.append(_describe_error(bad_symbol.value))
    return texts


def _describe_error(exc: BaseException) -> str:
    return "\n".join([type(exc).__name__, str(exc), repr(exc),
                      "".join(traceback.format_exception(exc))])


def _trade_through_faults(fake: FakeExchange, engine: Engine, found: Surfaces) -> None:
    """An entry whose first send gets a 503 (then fills), an exit at market, and an entry
    the venue refuses for insufficient balance (rolled back)."""
    fake.fail_next(ORDER_PATH, Fault.unavailable(), count=1)
    first = Live.tick(SYMBOL, "sec-long", "fakebin", START)
    assert first is not None and first.signal is not None
    found.signal_ids.append(first.signal.id)
    _wait(lambda: [i for i in _intents(engine) if i.status == "filled"], 60,
          "the entry filled after a 503")
    # Exit at market, then an entry the venue refuses for insufficient balance.
    Live.close_position(SYMBOL, "sec-long", "fakebin")
    Live.tick(SYMBOL, "sec-long", "fakebin", START + timedelta(minutes=1))
    _wait(lambda: len([i for i in _intents(engine) if i.status == "filled"]) == 2, 60,
          "the exit filled")
    fake.fail_next(ORDER_PATH, Fault.insufficient_balance(), count=1)
    refused = Live.tick(SYMBOL, "sec-long", "fakebin", START + timedelta(minutes=2))
    assert refused is not None and refused.signal is not None
    found.signal_ids.append(refused.signal.id)
    _wait(lambda: any(i.status == "rejected" for i in _intents(engine)), 60,
          "the insufficient-balance rejection")
    found.intents = [{"kind": i.kind, "status": i.status, "attempts": i.attempts,
                      "last_error": i.last_error} for i in _intents(engine)]
    found.api_keys_seen = sorted({r.api_key for r in fake.requests
                                  if r.path == ORDER_PATH})


def _run_admin_commands(env: dict[str, str], home: Path, found: Surfaces) -> None:
    """Reports and status through the real console script (canaries in its env too); they
    only read, so they run at once."""
    html = home / "report.html"
    commands = {"markdown report": ["report", "sec-long", SYMBOL, "--exchange", "fakebin"],
                "html report": ["report", "sec-long", "--exchange", "fakebin", "--html",
                                str(html)],
                "status --json": ["status", "--json"],
                "strategies": ["strategies"]}
    done = run_at_once([[str(BKIT), *argv] for argv in commands.values()], env=env, cwd=REPO,
                       merge_stderr=True)
    for name, proc in zip(commands, done, strict=True):
        found.exit_codes[name] = proc.returncode
        found.texts[f"bkit {name} output"] = proc.stdout
    found.texts["html report file"] = html.read_text() if html.exists() else ""


def run_canary_flow(home: Path) -> Surfaces:
    """Run the flow under `home`; every process is stopped, the database dropped and this
    process's state restored before it returns what was collected."""
    database = f"bkit_sec_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    broker = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    broker.flushdb()
    fake = FakeExchange().start()
    fake.load_candles(SYMBOL, real_candles(XRP_ETH_CSV))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BKIT_", "FLOWER_"))}
    env.update({
        "BKIT_HOME": str(home), "BKIT_DATABASE_URL": database_url,
        "BKIT_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "BKIT_STRATEGIES": "tests.e2e.sec_strategies", "FAKE_EXCHANGE_URL": fake.base_url,
        "BKIT_FAKEBIN_API_KEY": CANARY_KEY, "BKIT_FAKEBIN_SECRET": CANARY_SECRET,
        "BKIT_FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        "BKIT_ORDER_SEND_LEASE_SECONDS": "4", "BKIT_ORDER_BACKOFF_MAX_SECONDS": "2",
        "BKIT_ORDER_RATE_LIMIT_BACKOFF_SECONDS": "1", "BKIT_RELAY_SECONDS": "2",
        "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    found = Surfaces()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: home / f"{name}.log" for name in ("worker", "flower", "metrics")}
    handles = {name: path.open("wb") for name, path in logs.items()}
    monkeypatch = pytest.MonkeyPatch()
    own_log = io.StringIO()
    handler = logging.StreamHandler(own_log)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    try:
        found.ports = {"flower": _free_port(), "metrics": _free_port()}
        # Default addresses: neither command is given --address.
        for name, argv in (("flower", [str(BKIT), "flower", "--port",
                                       str(found.ports["flower"])]),
                           ("metrics", [str(BKIT), "metrics", "--port",
                                        str(found.ports["metrics"])])):
            procs[name] = subprocess.Popen(argv, cwd=REPO, env=env,
                                           stdout=handles[name],
                                           stderr=subprocess.STDOUT)
        procs["worker"] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-Q", "orders", "-c", "2",
             "-n", "sec@%h", "--loglevel", "DEBUG"], cwd=REPO, env=env,
            stdout=handles["worker"], stderr=subprocess.STDOUT)
        _wait(lambda: b"ready." in logs["worker"].read_bytes() or procs["worker"].poll()
              is not None, 60, "the orders worker to be ready")
        assert procs["worker"].poll() is None, logs["worker"].read_text()
        base = f"http://127.0.0.1:{found.ports['flower']}"
        _wait(lambda: _http(f"{base}/healthcheck", auth=False)[0] == 200, 60,
              "Flower /healthcheck")
        _wait(lambda: "sec@" in _http(f"{base}/api/workers?refresh=1")[1], 60,
              "the worker in Flower's /api/workers")
        _wait(lambda: _http(f"http://127.0.0.1:{found.ports['metrics']}/metrics",
                            auth=False)[0] == 200, 30, "the metrics endpoint")

        # This process: same settings and canaries, its own log captured at DEBUG.
        for key, value in env.items():
            if key.startswith("BKIT_") or key == "FAKE_EXCHANGE_URL":
                monkeypatch.setenv(key, value)
        reset_process_state()
        import bkit.celery as celery_module

        importlib.reload(celery_module)  # the app reads the broker URL at import
        sys.modules.pop("tests.e2e.sec_strategies", None)
        importlib.import_module("tests.e2e.sec_strategies")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        engine = get_engine()

        _trade_through_faults(fake, engine, found)
        error_texts = _exchange_error_texts(fake)
        found.texts["exchange errors (str, repr, traceback)"] = "\n".join(error_texts)
        source = REGISTRY.exchange("fakebin").source
        found.texts["exchange repr/str/pickle"] = "\n".join([
            repr(source), str(source), repr(REGISTRY.exchange("fakebin")),
            pickle.dumps(source).decode("latin-1")])

        _run_admin_commands(env, home, found)
        def submits_done() -> dict[str, Any] | None:
            status, body = _http(f"{base}/api/tasks")
            tasks = json.loads(body) if status == 200 and body else {}
            done = [t for t in tasks.values() if t.get("name") == "bkit.orders.submit"
                    and t.get("state") == "SUCCESS"]
            return tasks if len(done) >= 3 else None

        found.flower_tasks = _wait(submits_done, 60, "the submits in Flower's /api/tasks")
        found.texts["flower /api/tasks"] = _http(f"{base}/api/tasks")[1]
        found.texts["flower /api/workers"] = _http(f"{base}/api/workers?refresh=1")[1]
        found.texts["metrics /metrics"] = _http(
            f"http://127.0.0.1:{found.ports['metrics']}/metrics", auth=False)[1]
        for name in ("flower", "metrics"):
            found.listening[name] = _listening(procs[name].pid)
            for address in _other_addresses():
                found.other_addresses.append(
                    (name, address, _connects(address, found.ports[name])))
            found.texts[f"{name} command line"] = " ".join(
                psutil.Process(procs[name].pid).cmdline())

        with session_scope(engine) as session:
            found.error_messages = [e.message for e in session.execute(select(EventRecord).where(
                EventRecord.kind == "error")).scalars()]
        found.tables = dump_tables(engine)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for proc in procs.values():
            _stop(proc)
        for handle in handles.values():
            handle.close()
        monkeypatch.undo()
        reset_process_state()
        import bkit.celery as celery_module

        importlib.reload(celery_module)
        sys.modules.pop("tests.e2e.sec_strategies", None)
        fake.stop()
        broker.flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for name, path in logs.items():
        found.texts[f"{name} log"] = path.read_text(errors="replace") if path.exists() else ""
    found.texts["test process log"] = own_log.getvalue()
    return found



"""`bkit dashboard`: its JSON API on SQLite and PostgreSQL (content from trades made by
`Live.tick` on the paper exchange, auth, read-only, bounded reads) and the page rendered by
headless Chromium (screenshot kept under tmp_path)."""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from bkit.cli.dashboard import add_dashboard_command
from bkit.core.pnl import compute_pnl
from bkit.core.registry import get_config
from bkit.live import Live
from bkit.ops import admin
from bkit.ops.dashboard import DashboardConfigError, DashboardServer, make_server
from bkit.store.engine import session_scope
from bkit.store.tables import SignalRecord, TickHistoryRecord
from tests.ops.conftest import OpsEnv
from tests.ops.strategies_ops import EXCHANGE, QUIET, START, STRATEGY

XRP, BTC = "XRP/ETH", "UNITTEST/BTC"
USER, PASSWORD = "ops", "s3cret-pass"
CHROMIUM = Path("/usr/bin/chromium")
SECRET = "AK-dashboard-0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
def ops(request: pytest.FixtureRequest) -> OpsEnv:
    return request.getfixturevalue("sqlite_ops" if request.param == "sqlite" else "pg_ops")


def _trade(ops: OpsEnv, minutes: int = 23) -> None:
    """Trades on two keys (the last one still open), errors on a third key, a halt."""
    admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="t")
    for minute in range(minutes):
        for symbol in (XRP, BTC):
            Live.tick(symbol, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
    admin.enable_keys(QUIET, [XRP], EXCHANGE, actor="t")
    Live.tick(XRP, QUIET, EXCHANGE, START - timedelta(days=3))  # before the data: an error
    admin.set_halt(True, actor="cli:ops", reason=f"checking key {SECRET}")


@pytest.fixture
def server(ops: OpsEnv) -> Iterator[DashboardServer]:
    served = make_server("127.0.0.1", 0, engine=ops.engine, credentials=(USER, PASSWORD),
                         refresh_seconds=1.0)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def _get(url: str, auth: tuple[str, str] | None = (USER, PASSWORD), method: str = "GET"
         ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_api_shows_keys_positions_trades_errors_and_equity(
        ops: OpsEnv, server: DashboardServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKIT_BINANCE_API_KEY", SECRET)
    _trade(ops)
    status, headers, body = _get(server.url + "api/state")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    state = json.loads(body)
    with session_scope(ops.engine) as session:
        closed = list(session.execute(select(SignalRecord).where(
            SignalRecord.state == "closed").order_by(SignalRecord.closed_at)).scalars())
        held = list(session.execute(select(SignalRecord).where(
            SignalRecord.state == "opened")).scalars())
        last = {row.key_id: session.execute(select(TickHistoryRecord.price).where(
            TickHistoryRecord.key_id == row.key_id).order_by(
            TickHistoryRecord.id.desc()).limit(1)).scalar_one() for row in held}
    assert [(k["symbol"], k["status"]) for k in state["keys"]] == [
        (XRP, "enabled"), (BTC, "enabled"), (XRP, "enabled")]
    assert [k["failing"] for k in state["keys"]] == [True, False, False]
    assert state["failing_keys"] == 1
    assert closed and held, "the ops strategy leaves trades closed and one open"
    config = get_config()
    assert len(state["positions"]) == len(held)
    for position in state["positions"]:
        row = next(r for r in held if r.key_id == position["key_id"])
        price = last[row.key_id]  # the key's newest completed tick
        expected = compute_pnl("long", row.price_open, price, row.cost,
                               slippage_percent=config.CC_PERCENT_SLIPPAGE,
                               fee_percent=config.CC_PERCENT_FEE)
        assert position["price_now"] == pytest.approx(price)
        assert position["unrealised_pnl_percentage"] == pytest.approx(expected.pnl_percentage)
        assert position["unrealised_pnl_cost"] == pytest.approx(expected.pnl_cost)
    newest = sorted(closed, key=lambda r: (r.closed_at, r.id), reverse=True)  # type: ignore[arg-type, return-value]
    assert [t["signal_id"] for t in state["trades"]] == [r.signal_id for r in newest][:50]
    assert state["equity"]["trades"] == len(closed)
    assert state["equity"]["total_pnl_percentage"] == pytest.approx(
        sum(r.pnl_percentage or 0.0 for r in closed))
    assert state["equity"]["points"][-1]["pnl_percentage"] == pytest.approx(
        state["equity"]["total_pnl_percentage"])
    assert state["errors"][0]["key"] == f"{XRP} · {QUIET}@{EXCHANGE}"
    assert "no closed candles" in state["errors"][0]["message"]
    assert state["halt"]["halted"] is True and state["halt"]["actor"] == "cli:ops"
    assert SECRET not in body.decode() and "checking key ***" in state["halt"]["reason"]


def test_auth_is_required_and_the_server_is_read_only(ops: OpsEnv,
                                                      server: DashboardServer) -> None:
    for auth in (None, (USER, "wrong"), ("other", PASSWORD)):
        for path in ("", "api/state", "app.js"):
            status, headers, body = _get(server.url + path, auth)
            assert status == 401 and "state" not in body.decode()
            assert headers["WWW-Authenticate"].startswith('Basic realm="bkit dashboard"')
    assert _get(server.url)[0] == 200
    for method in ("POST", "PUT", "DELETE"):
        assert _get(server.url + "api/state", method=method)[0] == 405
    assert _get(server.url + "nope")[0] == 404


def test_it_refuses_to_start_without_credentials(sqlite_ops: OpsEnv,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DashboardConfigError, match="BKIT_DASHBOARD_BASIC_AUTH"):
        make_server("127.0.0.1", 0, engine=sqlite_ops.engine, credentials=None)
    with pytest.raises(DashboardConfigError, match="loopback"):
        make_server("0.0.0.0", 0, engine=sqlite_ops.engine, credentials=None, no_auth=True)
    parser = argparse.ArgumentParser(prog="bkit")
    add_dashboard_command(parser.add_subparsers())
    args = parser.parse_args(["dashboard", "--port", "0"])
    assert args.func(args) == 1
    assert "set BKIT_DASHBOARD_BASIC_AUTH=user:password" in capsys.readouterr().out


def test_reads_are_bounded_by_keys_and_trades(sqlite_ops: OpsEnv) -> None:
    """Every statement on the event table carries a LIMIT, however many ticks there were."""
    from bkit.ops.dashboard import dashboard_state

    _trade(sqlite_ops, minutes=30)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(sqlite_ops.engine, "before_cursor_execute", record)
    try:
        dashboard_state(sqlite_ops.engine)
    finally:
        event.remove(sqlite_ops.engine, "before_cursor_execute", record)
    on_events = [s for s in statements if re.search(r"\bFROM event\b", s)]
    assert on_events and all(" LIMIT " in s for s in on_events), on_events


def test_chromium_renders_the_live_page(ops: OpsEnv, server: DashboardServer,
                                        tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "this test needs Debian's chromium (apt-get install chromium)"
    _trade(ops)
    host, port = server.server_address[:2]
    url = f"http://{USER}:{PASSWORD}@{host!s}:{port}/"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--window-size=1400,1100",
              "--virtual-time-budget=4000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "updated 20" in dom, dom[:800]  # the script fetched /api/state and rendered it
    assert "HALTED" in dom and f"{STRATEGY}@{EXCHANGE}" in dom and "time_expired" in dom
    assert "no closed candles" in dom and "1 failing" in dom
    shot = tmp_path / "dashboard.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=60,
                   check=True)
    assert shot.stat().st_size > 20_000  # kept in tmp_path to look at

"""`bkit dashboard`: a read-only live page for the operator, on the standard library's HTTP
server (127.0.0.1, basic auth from `BKIT_DASHBOARD_BASIC_AUTH=user:pass`).

`GET /` is a static page whose script fetches `GET /api/state` every few seconds: the keys with
their status, the open positions with unrealised PnL (priced from each key's last tick,
so the page never calls an exchange), the newest closed trades, the newest errors and exit
alerts, and the equity curve (cumulative closed PnL, in percentage points, realised PnL where
an order broker measured it). Every read is bounded by the number of keys or of trades, or by
a `LIMIT` on an index: the tick events are never scanned. Nothing here writes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from bkit.core.errors import BkitError
from bkit.ops.defaults import (
    DASHBOARD_AUTH_ENV,
    DASHBOARD_PORT,
    DASHBOARD_REFRESH_SECONDS,
    LOOPBACK,
)
from bkit.ops.serving import serve_until
from bkit.store.engine import DatabaseUnavailableError, session_scope
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol

log = logging.getLogger("bkit.dashboard")
ENV_AUTH = DASHBOARD_AUTH_ENV
DEFAULT_ADDRESS = LOOPBACK
DEFAULT_PORT = DASHBOARD_PORT
DEFAULT_REFRESH_SECONDS = DASHBOARD_REFRESH_SECONDS
#: Rows the page shows; the equity curve reads at most `EQUITY_TRADES` newest closed trades.
TRADES_SHOWN = 50
ERRORS_SHOWN = 50
EQUITY_TRADES = 10_000
OPEN_STATES = ("opened", "closing")


class DashboardConfigError(BkitError):
    """The dashboard cannot start as configured (no credentials, bad address)."""


# --- reads ----------------------------------------------------------------------------------
def dashboard_state(engine: Engine, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data. Prices in quote currency, PnL in % of
    the entry cost (after fees and slippage) and in quote currency, times ISO 8601 UTC."""
    from bkit.notify.messages import scrub, secret_values
    from bkit.ops.admin import halt_state

    secrets = secret_values(os.environ)
    with session_scope(engine) as session:
        keys = list(session.execute(select(StrategySymbol).order_by(
            col(StrategySymbol.strategy_name), col(StrategySymbol.exchange_name),
            col(StrategySymbol.symbol))).scalars())
        names = {k.id: (k.strategy_name, k.exchange_name, k.symbol) for k in keys}
        open_rows = list(session.execute(select(SignalRecord).where(
            col(SignalRecord.state).in_(OPEN_STATES))).scalars())
        by_id = {k.id: k for k in keys}
        last_price = {row.key_id: _last_price(by_id.get(row.key_id)) for row in open_rows}
        trades = list(session.execute(select(SignalRecord).where(
            col(SignalRecord.state) == "closed").order_by(
            col(SignalRecord.closed_at).desc(), col(SignalRecord.id).desc())
            .limit(TRADES_SHOWN)).scalars())
        curve_rows = list(session.execute(select(
            col(SignalRecord.closed_at), col(SignalRecord.pnl_percentage),
            col(SignalRecord.pnl_cost), col(SignalRecord.realised_pnl_percentage),
            col(SignalRecord.realised_pnl_cost)).where(
            col(SignalRecord.state) == "closed").order_by(
            col(SignalRecord.closed_at).desc(), col(SignalRecord.id).desc()).limit(EQUITY_TRADES)))
        errors: list[EventRecord] = []
        for kind in ("error", "exit"):  # one index range (kind, id) each
            errors += session.execute(select(EventRecord).where(col(EventRecord.kind) == kind)
                                      .order_by(col(EventRecord.id).desc())
                                      .limit(ERRORS_SHOWN)).scalars()
    halt = halt_state(engine=engine)
    open_by_key = {row.key_id: row for row in open_rows}
    positions = [_position(row, last_price.get(row.key_id)) for row in open_rows]
    errors = sorted(errors, key=lambda e: e.id or 0, reverse=True)[:ERRORS_SHOWN]
    return _jsonable({
        "generated_at": now or datetime.now(UTC),
        "halt": {"halted": halt.halted, "actor": halt.actor, "at": halt.at,
                 "reason": scrub(halt.reason, secrets)},
        "keys": [_key(k, open_by_key.get(k.id)) for k in keys],
        "failing_keys": sum(1 for k in keys if _failing(k)),
        "positions": sorted(positions, key=lambda p: (p["strategy_name"], p["symbol"])),
        "unrealised_pnl_cost": sum(p["unrealised_pnl_cost"] or 0.0 for p in positions),
        "trades": [_trade(t) for t in trades],
        "errors": [{"id": e.id, "kind": e.kind, "at": e.created_at,
                    "key": _label(names.get(e.key_id), e), "message": scrub(e.message, secrets)}
                   for e in errors],
        "equity": _equity(list(reversed(curve_rows))),
    })


def _last_price(key: StrategySymbol | None) -> tuple[float, datetime] | None:
    """The price and minute of the key's last completed tick (kept on the key row)."""
    if key is None or key.last_price is None or key.last_tick_at is None:
        return None
    return float(key.last_price), key.last_tick_at


def _position(row: SignalRecord, priced: tuple[float, datetime] | None) -> dict[str, Any]:
    from bkit.core.pnl import compute_pnl
    from bkit.core.registry import get_config

    entry = row.fill_price_open if row.fill_price_open is not None else row.price_open
    pnl = None
    if priced is not None and entry > 0:
        config = get_config()
        pnl = compute_pnl(row.position, entry, priced[0], row.cost,
                          slippage_percent=config.CC_PERCENT_SLIPPAGE,
                          fee_percent=config.CC_PERCENT_FEE)
    return {"key_id": row.key_id, "strategy_name": row.strategy_name,
            "exchange_name": row.exchange_name, "symbol": row.symbol,
            "signal_id": row.signal_id, "position": row.position, "state": row.state,
            "stuck": row.stuck, "price_open": entry, "price_take_profit": row.price_take_profit,
            "price_stop_loss": row.price_stop_loss, "cost": row.cost, "amount": row.amount,
            "opened_at": row.pending_at or row.created_at,
            "price_now": None if priced is None else priced[0],
            "priced_at": None if priced is None else priced[1],
            "unrealised_pnl_percentage": None if pnl is None else pnl.pnl_percentage,
            "unrealised_pnl_cost": None if pnl is None else pnl.pnl_cost}


def _failing(key: StrategySymbol) -> bool:
    return key.last_error_at is not None and (key.last_tick_at is None
                                              or key.last_error_at > key.last_tick_at)


def _key(key: StrategySymbol, held: SignalRecord | None) -> dict[str, Any]:
    return {"id": key.id, "strategy_name": key.strategy_name,
            "exchange_name": key.exchange_name, "symbol": key.symbol, "status": key.status,
            "last_tick_at": key.last_tick_at, "last_tick_lag_ms": key.last_tick_lag_ms,
            "last_error_at": key.last_error_at, "failing": _failing(key),
            "position": None if held is None else ("STUCK" if held.stuck else held.state)}


def _trade(row: SignalRecord) -> dict[str, Any]:
    return {"key_id": row.key_id, "strategy_name": row.strategy_name,
            "exchange_name": row.exchange_name, "symbol": row.symbol,
            "signal_id": row.signal_id, "position": row.position,
            "closed_at": row.closed_at, "close_reason": row.close_reason,
            "price_open": row.fill_price_open or row.price_open,
            "price_close": row.fill_price_close or row.price_close,
            "pnl_percentage": _pick(row.realised_pnl_percentage, row.pnl_percentage),
            "pnl_cost": _pick(row.realised_pnl_cost, row.pnl_cost),
            "realised": row.realised_pnl_percentage is not None}


def _equity(rows: list[Any]) -> dict[str, Any]:
    """Cumulative closed PnL, oldest first: one point per trade (percentage points and quote
    currency; realised PnL where measured, the signal's PnL otherwise)."""
    total_pct = total_cost = 0.0
    points = []
    for closed_at, pct, cost, realised_pct, realised_cost in rows:
        total_pct += _pick(realised_pct, pct) or 0.0
        total_cost += _pick(realised_cost, cost) or 0.0
        points.append({"t": closed_at, "pnl_percentage": total_pct, "pnl_cost": total_cost})
    return {"points": points, "total_pnl_percentage": total_pct, "total_pnl_cost": total_cost,
            "trades": len(points), "capped": len(points) >= EQUITY_TRADES}


def _pick(first: float | None, second: float | None) -> float | None:
    return first if first is not None else second


def _label(names: tuple[str, str, str] | None, event: EventRecord) -> str:
    strategy, exchange, symbol = names or (event.strategy_name, event.exchange_name,
                                           event.symbol)
    return f"{symbol} · {strategy}@{exchange}" if symbol or strategy else "bkit"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- server ---------------------------------------------------------------------------------
def credentials_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """`(user, password)` from `BKIT_DASHBOARD_BASIC_AUTH=user:pass`, None when unset."""
    value = (os.environ if environ is None else environ).get(ENV_AUTH, "")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise DashboardConfigError(f"{ENV_AUTH} must be user:password")
    return user, password


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server with what its handlers need: the engine, credentials, refresh."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine,
                 credentials: tuple[str, str] | None, refresh_seconds: float) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.credentials = credentials
        self.refresh_seconds = refresh_seconds

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


def make_server(host: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT, *, engine: Engine,
                credentials: tuple[str, str] | None, no_auth: bool = False,
                refresh_seconds: float = DEFAULT_REFRESH_SECONDS) -> DashboardServer:
    """A bound (not yet serving) dashboard. Refuses to start without credentials unless
    `no_auth`, and refuses `no_auth` on an address other than loopback."""
    if credentials is None and not no_auth:
        raise DashboardConfigError(f"set {ENV_AUTH}=user:password (or pass --no-auth to serve "
                                   "127.0.0.1 without a password)")
    if no_auth and not _is_loopback(host):
        raise DashboardConfigError(f"--no-auth only on a loopback address, not {host!r}")
    return DashboardServer((host, port), engine, None if no_auth else credentials,
                           refresh_seconds)


def serve_dashboard(server: DashboardServer, stop: threading.Event) -> None:
    """Serve until `stop` is set."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True, name="bkit-dashboard")
    thread.start()
    serve_until(server, thread, stop)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "bkit-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/app.js":
            script = SCRIPT.replace("__REFRESH_MS__", str(int(self.server.refresh_seconds
                                                              * 1000)))
            self._send(200, script.encode(), "text/javascript; charset=utf-8")
        elif path == "/app.css":
            self._send(200, STYLE.encode(), "text/css; charset=utf-8")
        elif path == "/api/state":
            try:
                body, status = dashboard_state(self.server.engine), 200
            except (OperationalError, DatabaseUnavailableError) as exc:
                log.warning("dashboard: database unavailable: %s", type(exc).__name__)
                body, status = {"error": "database unavailable"}, 503
            self._send(status, json.dumps(body).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _read_only(self) -> None:
        self._send(405, b"read-only", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_PATCH = do_DELETE = _read_only

    def _authorised(self) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            given = ""
        user, _, password = given.partition(":")
        ok = scheme.lower() == "basic" and hmac.compare_digest(user.encode(),
                                                               expected[0].encode())
        ok = hmac.compare_digest(password.encode(), expected[1].encode()) and ok
        if not ok:
            self._send(401, b"authentication required", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="bkit dashboard", charset="UTF-8"'})
        return ok

    def _send(self, status: int, body: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'self'; "
                         "style-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


# --- the page (static; data arrives through /api/state and is set as text, never as HTML) ----
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bkit dashboard</title><link rel="stylesheet" href="/app.css"></head>
<body>
<header><h1>bkit dashboard</h1><span id="halt" class="badge">…</span>
<span id="updated" class="meta">loading…</span></header>
<section class="cards">
<div class="card"><div class="label">Keys</div><div id="n-keys" class="big">-</div>
<div id="n-failing" class="meta"></div></div>
<div class="card"><div class="label">Open positions</div><div id="n-open" class="big">-</div>
<div id="unrealised" class="meta"></div></div>
<div class="card"><div class="label">Closed PnL</div><div id="total" class="big">-</div>
<div id="total-cost" class="meta"></div></div>
</section>
<section><h2>Equity curve <span class="meta">(cumulative closed PnL, %)</span></h2>
<svg id="equity" viewBox="0 0 900 220" preserveAspectRatio="none" role="img"
aria-label="equity curve"></svg><div id="equity-note" class="meta"></div></section>
<section><h2>Open positions</h2><table id="positions"><thead><tr><th>Symbol</th>
<th>Strategy</th><th>Side</th><th>State</th><th class="num">Entry</th><th class="num">Now</th>
<th class="num">TP</th><th class="num">SL</th><th class="num">Unrealised %</th>
<th class="num">Unrealised</th><th>Priced at</th></tr></thead><tbody></tbody></table></section>
<section><h2>Keys</h2><table id="keys"><thead><tr><th>Symbol</th><th>Strategy</th>
<th>Exchange</th><th>Status</th><th>Position</th><th>Last tick</th><th class="num">Lag ms</th>
<th>Last error</th></tr></thead><tbody></tbody></table></section>
<section class="two">
<div><h2>Recent trades</h2><table id="trades"><thead><tr><th>Closed</th><th>Symbol</th>
<th>Side</th><th>Reason</th><th class="num">PnL %</th><th class="num">PnL</th></tr></thead>
<tbody></tbody></table></div>
<div><h2>Recent errors</h2><table id="errors"><thead><tr><th>At</th><th>Key</th>
<th>Message</th></tr></thead><tbody></tbody></table></div>
</section>
<script src="/app.js"></script>
</body></html>
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1360px; padding: 1rem; color: #1f2933; background: #f7f9fb; }
header { display: flex; align-items: baseline; gap: 1rem; }
h1 { font-size: 1.4rem; margin: .2rem 0; } h2 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
.meta { color: #52606d; font-size: .85rem; }
.badge { padding: .15rem .6rem; border-radius: 1rem; font-size: .8rem; font-weight: 600;
         background: #e3f9e5; color: #137333; }
.badge.halted { background: #fde8e8; color: #b3261e; }
.cards { display: flex; gap: 1rem; margin-top: .8rem; }
.card { background: #fff; border: 1px solid #d9e2ec; border-radius: .5rem; padding: .7rem 1rem;
        min-width: 12rem; }
.label { color: #52606d; font-size: .8rem; text-transform: uppercase; }
.big { font-size: 1.6rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .82rem; }
th, td { border: 1px solid #d9e2ec; padding: .25rem .45rem; text-align: left; }
th { background: #f0f4f8; } td.num, th.num { text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
td.pos { color: #137333; } td.neg { color: #b3261e; } tr.bad td { background: #fff4f4; }
td.msg { word-break: break-word; } td.empty { color: #9aa5b1; text-align: center; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
svg#equity { width: 100%; height: 220px; background: #fff; border: 1px solid #d9e2ec; }
svg .line { fill: none; stroke: #1a73e8; stroke-width: 2; vector-effect: non-scaling-stroke; }
svg .zero { stroke: #9aa5b1; stroke-dasharray: 4 3; vector-effect: non-scaling-stroke; }
.stale { color: #b3261e; }
"""

SCRIPT = """'use strict';
const REFRESH_MS = __REFRESH_MS__;
const $ = (id) => document.getElementById(id);
const num = (v, d) => (v === null || v === undefined) ? '-' : Number(v).toPrecision(d || 8)
  .replace(/(\\.\\d*?)0+$/, '$1').replace(/\\.$/, '');
const pct = (v) => (v === null || v === undefined) ? '-' : (v >= 0 ? '+' : '') + v.toFixed(2)
  + ' %';
const signed = (v) => (v === null || v === undefined) ? '-' : (v >= 0 ? '+' : '') + num(v, 6);
const when = (v) => v ? v.replace('T', ' ').replace(/\\.\\d+/, '').replace('+00:00', 'Z') : '-';
function cell(text, cls) {
  const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls;
  return td;
}
function sign(v) { return v === null || v === undefined ? 'num' : v >= 0 ? 'num pos' : 'num neg'; }
function fill(id, rows, render, columns) {
  const body = $(id).tBodies[0]; body.replaceChildren();
  if (!rows.length) { const tr = body.insertRow(); const td = cell('none', 'empty');
    td.colSpan = columns; tr.appendChild(td); return; }
  for (const row of rows) { const tr = body.insertRow(); render(row, tr); }
}
function equity(curve) {
  const svg = $('equity'); svg.replaceChildren();
  const pts = curve.points; const ns = 'http://www.w3.org/2000/svg';
  $('equity-note').textContent = pts.length ? pts.length + ' closed trades' +
    (curve.capped ? ' (newest only)' : '') : 'no closed trades yet';
  if (!pts.length) return;
  const ys = [0, ...pts.map((p) => p.pnl_percentage)];
  let lo = Math.min(...ys), hi = Math.max(...ys); if (hi === lo) { hi += 1; lo -= 1; }
  const x = (i) => 10 + i / Math.max(1, pts.length) * 880;
  const y = (v) => 10 + (hi - v) / (hi - lo) * 200;
  const zero = document.createElementNS(ns, 'line');
  zero.setAttribute('class', 'zero'); zero.setAttribute('x1', 10); zero.setAttribute('x2', 890);
  zero.setAttribute('y1', y(0)); zero.setAttribute('y2', y(0)); svg.appendChild(zero);
  const line = document.createElementNS(ns, 'polyline'); line.setAttribute('class', 'line');
  line.setAttribute('points', ys.map((v, i) => x(i) + ',' + y(v)).join(' '));
  svg.appendChild(line);
}
function render(s) {
  const halt = $('halt'); halt.textContent = s.halt.halted ? 'HALTED' : 'trading';
  halt.className = s.halt.halted ? 'badge halted' : 'badge';
  halt.title = s.halt.halted ? (s.halt.actor || '') + ' ' + (s.halt.reason || '') : '';
  $('updated').textContent = 'updated ' + when(s.generated_at); $('updated').className = 'meta';
  $('n-keys').textContent = s.keys.length;
  $('n-failing').textContent = s.failing_keys + ' failing';
  $('n-open').textContent = s.positions.length;
  $('unrealised').textContent = 'unrealised ' + signed(s.unrealised_pnl_cost);
  $('total').textContent = pct(s.equity.total_pnl_percentage);
  $('total-cost').textContent = signed(s.equity.total_pnl_cost) + ' (quote)';
  equity(s.equity);
  fill('positions', s.positions, (p, tr) => {
    if (p.stuck) tr.className = 'bad';
    tr.append(cell(p.symbol), cell(p.strategy_name + '@' + p.exchange_name), cell(p.position),
      cell(p.stuck ? 'STUCK' : p.state), cell(num(p.price_open), 'num'),
      cell(num(p.price_now), 'num'), cell(num(p.price_take_profit), 'num'),
      cell(num(p.price_stop_loss), 'num'),
      cell(pct(p.unrealised_pnl_percentage), sign(p.unrealised_pnl_percentage)),
      cell(signed(p.unrealised_pnl_cost), sign(p.unrealised_pnl_cost)), cell(when(p.priced_at)));
  }, 11);
  fill('keys', s.keys, (k, tr) => {
    if (k.failing) tr.className = 'bad';
    tr.append(cell(k.symbol), cell(k.strategy_name), cell(k.exchange_name), cell(k.status),
      cell(k.position || '-'), cell(when(k.last_tick_at)),
      cell(k.last_tick_lag_ms === null ? '-' : Math.round(k.last_tick_lag_ms), 'num'),
      cell(k.failing ? when(k.last_error_at) : '-'));
  }, 8);
  fill('trades', s.trades, (t, tr) => tr.append(cell(when(t.closed_at)), cell(t.symbol),
    cell(t.position), cell(t.close_reason || '-'), cell(pct(t.pnl_percentage),
    sign(t.pnl_percentage)), cell(signed(t.pnl_cost), sign(t.pnl_cost))), 6);
  fill('errors', s.errors, (e, tr) => tr.append(cell(when(e.at)), cell(e.key),
    cell((e.kind === 'exit' ? 'EXIT: ' : '') + e.message, 'msg')), 3);
}
async function refresh() {
  try {
    // location.origin carries no user:password, so a page opened as http://user:pass@host/
    // can fetch too (the browser resends the credentials it has for the realm).
    const answer = await fetch(location.origin + '/api/state',
      {cache: 'no-store', credentials: 'same-origin'});
    if (!answer.ok) throw new Error('HTTP ' + answer.status);
    render(await answer.json());
  } catch (err) {
    $('updated').textContent = 'not updated: ' + err.message; $('updated').className = 'stale';
  } finally { setTimeout(refresh, REFRESH_MS); }
}
refresh();
"""

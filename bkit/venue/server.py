"""The venue's HTTP side: a ThreadingHTTPServer on 127.0.0.1 that speaks Binance's REST dialect.

Each request is counted, checked against the armed faults, matched (resting orders are re-checked
against the price first), routed to the spot or futures (`/fapi/`) engine under the venue's lock,
and answered as Binance does (JSON, HTTP 400 with `{"code", "msg"}` for a refusal). Signed
endpoints need an `X-MBX-APIKEY` header (any key, any signature).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from bkit.venue.errors import VenueError
from bkit.venue.fapi import Fapi
from bkit.venue.faults import VenueFault

if TYPE_CHECKING:
    from bkit.venue.venue import Venue

ORDER_PATH = "/api/v3/order"
SIGNED_PATHS = frozenset({ORDER_PATH, "/api/v3/openOrders", "/api/v3/account",
                          "/api/v3/myTrades"})
#: Futures endpoints that need no API key; every other `/fapi/` path is signed.
PUBLIC_FAPI = frozenset({"/fapi/v1/ping", "/fapi/v1/time", "/fapi/v1/exchangeInfo",
                         "/fapi/v1/premiumIndex"})


def is_signed(path: str) -> bool:
    return path in SIGNED_PATHS or (path.startswith("/fapi/") and path not in PUBLIC_FAPI)


class VenueHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops SYNs under a burst: 1 s client stalls


def routes(venue: Venue) -> dict[tuple[str, str], Callable[[dict[str, str]], Any]]:
    """(method, path) -> handler of the request's parameters."""
    spot = venue.engine
    return {
        ("GET", "/api/v3/ping"): lambda p: {},
        ("GET", "/api/v3/time"): lambda p: {"serverTime": spot.clock()},
        ("GET", "/api/v3/exchangeInfo"): lambda p: spot.exchange_info(),
        ("GET", "/api/v3/klines"): spot.klines,
        ("GET", "/api/v3/ticker/price"): spot.ticker_price,
        ("GET", "/api/v3/account"): lambda p: spot.account(),
        ("POST", ORDER_PATH): spot.create_order,
        ("GET", ORDER_PATH): spot.query_order,
        ("DELETE", ORDER_PATH): spot.cancel_order,
        ("GET", "/api/v3/openOrders"): spot.open_orders,
        ("GET", "/api/v3/myTrades"): spot.my_trades,
        **Fapi(venue.futures).routes(),
    }


def make_handler(venue: Venue) -> type[BaseHTTPRequestHandler]:
    table = routes(venue)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

        def _handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
            if is_signed(path) and not self.headers.get("X-MBX-APIKEY"):
                return 401, {"code": -2014, "msg": "API-key format invalid."}
            handler = table.get((method, path))
            if handler is None:
                return 404, {"code": -1000, "msg": f"Unknown path {method} {path}."}
            try:
                with venue.lock:
                    venue.engine.match()
                    venue.futures.match()
                    return 200, handler(params)
            except VenueError as error:
                return error.status, error.body()

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = dict(parse_qsl(url.query)) | dict(parse_qsl(body))
            venue.count(url.path)
            fault = venue.faults.take(method, url.path)
            kind = fault.kind if fault is not None else ""
            if kind == "timeout" and venue.pause(fault.seconds if fault else 0):
                return self._drop()
            if kind == "disconnect":
                return self._drop()
            if fault is not None and kind == "error":
                return self._error(fault)
            status, answer = self._handle(method, url.path, params)
            if kind == "disconnect_after_accept":
                return self._drop()
            if kind == "timeout_after_accept" and venue.pause(fault.seconds if fault else 0):
                return self._drop()
            self._send(status, json.dumps(answer).encode(), "application/json")

        def _error(self, fault: VenueFault) -> None:
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            if fault.html:
                self._send(fault.status, fault.msg.encode(), "text/html", extra)
            else:
                body = json.dumps({"code": fault.code, "msg": fault.msg}).encode()
                self._send(fault.status, body, "application/json", extra)

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            self.connection.close()

        def _send(self, status: int, payload: bytes, content_type: str,
                  extra: Mapping[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (time-out): nothing to do

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PUT(self) -> None:
            self._serve("PUT")

    return Handler

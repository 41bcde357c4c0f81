"""A fake binance REST server on 127.0.0.1 for tests and benches (not product code).

It speaks enough of the binance spot API for the real `ccxt.binance` client: klines, exchangeInfo,
time, ping, order create/fetch/cancel, open orders and account. Signed endpoints accept any
signature but need an `X-MBX-APIKEY` header, like the real venue. Faults are switchable from any
thread: a latency for every request, a persistent fault per path, or a queue "the next N requests
to path X fail with Y". Every request is counted per path (and per symbol), and every accepted
order is kept in an order log so tests can count exchange orders per client order id.

Use it as a context manager::

    with FakeExchange() as fake:
        fake.load_candles("BTC/USDT", candles)
        point_ccxt_at(client, fake.base_url)
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bkit.core.candles import CANDLE_INTERVAL_MINUTES, MINUTE_MS, Candle
from bkit.venue.client import point_ccxt_at
from bkit.venue.markets import DEFAULT_MARKETS, MarketSpec
from bkit.venue.prices import aggregate as _aggregate
from bkit.venue.prices import kline_row as _kline_row
from bkit.venue.prices import num as _num
from bkit.venue.prices import partial as _partial
from bkit.venue.prices import read_candles_csv

KLINES_PATH = "/api/v3/klines"
ORDER_PATH = "/api/v3/order"
MAX_KLINES_LIMIT = 1000

#: Moved to `bkit.venue` (product code); re-exported here for existing imports.
__all__ = ["DEFAULT_MARKETS", "KLINES_PATH", "MAX_KLINES_LIMIT", "ORDER_PATH", "FakeExchange",
           "FakeOrder", "Fault", "MarketSpec", "RequestRecord", "point_ccxt_at",
           "read_candles_csv", "synthetic_candles"]


# ---------------------------------------------------------------------------------------------
# Market data helpers
# ---------------------------------------------------------------------------------------------


def synthetic_candles(seed: int, start_ms: int, count: int, start_price: float = 100.0,
                      interval_ms: int = MINUTE_MS) -> list[Candle]:
    """A seeded random walk of `count` gap-free candles from `start_ms` (ms, UTC open time)."""
    rng = random.Random(seed)
    candles: list[Candle] = []
    price = start_price
    for i in range(count):
        open_ = price
        close = max(open_ * (1 + rng.gauss(0, 0.001)), 1e-8)
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.0005)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.0005)))
        volume = round(rng.uniform(0.5, 50.0), 4)
        candles.append(Candle(start_ms + i * interval_ms, round(open_, 8), round(high, 8),
                              round(low, 8), round(close, 8), volume))
        price = close
    return candles


# ---------------------------------------------------------------------------------------------
# Faults and orders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault the server injects. Build one with the class methods."""

    kind: str
    seconds: float = 0.0
    every: int = 2
    mode: str = ""

    @classmethod
    def rate_limit(cls) -> Fault:
        """HTTP 429, binance code -1003 (ccxt: DDoSProtection)."""
        return cls("rate_limit")

    @classmethod
    def unavailable(cls) -> Fault:
        """HTTP 503 with `{"code": -1001}` (ccxt: OperationFailed)."""
        return cls("unavailable")

    @classmethod
    def bad_gateway(cls) -> Fault:
        """HTTP 502 with an HTML body, as a proxy in front of the venue answers."""
        return cls("bad_gateway")

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Sleep `seconds` (s) before handling: past the client time-out, nothing happens."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def accepted_then_timeout(cls, seconds: float) -> Fault:
        """Handle the request for real (an order IS placed), then sleep `seconds` (s)."""
        return cls("accepted_then_timeout", seconds=seconds)

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without an answer."""
        return cls("disconnect")

    @classmethod
    def insufficient_balance(cls) -> Fault:
        """HTTP 400, -2010 "Account has insufficient balance for requested action."."""
        return cls("insufficient_balance")

    @classmethod
    def invalid_order(cls) -> Fault:
        """HTTP 400, -1013 "Filter failure: LOT_SIZE"."""
        return cls("invalid_order")

    @classmethod
    def duplicate(cls) -> Fault:
        """HTTP 400, -2010 "Duplicate order sent."."""
        return cls("duplicate")

    @classmethod
    def kline_gaps(cls, every: int = 2) -> Fault:
        """Klines: drop every `every`-th row of the answer."""
        return cls("kline_gaps", every=every)

    @classmethod
    def shuffled_rows(cls, seed: int = 0) -> Fault:
        """Klines: every row sent twice, in a seeded random order."""
        return cls("shuffled_rows", every=seed)

    @classmethod
    def malformed_rows(cls, mode: str = "high_below_low") -> Fault:
        """Klines: corrupt the first row (`high_below_low`, `text`, `negative` or `outlier`)."""
        return cls("malformed_rows", mode=mode)


_ERRORS: dict[str, tuple[int, int, str]] = {
    "rate_limit": (429, -1003, "Too many requests; current limit of IP(127.0.0.1) is 6000 "
                               "requests per minute. Please use the websocket for live updates "
                               "to avoid polling the API."),
    "unavailable": (503, -1001, "Internal error; unable to process your request. "
                                "Please try again."),
    "insufficient_balance": (400, -2010, "Account has insufficient balance for requested "
                                         "action."),
    "invalid_order": (400, -1013, "Filter failure: LOT_SIZE"),
    "duplicate": (400, -2010, "Duplicate order sent."),
}


class _Reject(Exception):
    """A binance error answer: HTTP status, binance code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(slots=True)
class FakeOrder:
    """One order the fake accepted. Quantities and prices are Decimals."""

    order_id: int
    client_order_id: str
    market_id: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    fill_price: Decimal | None = None
    time_ms: int = 0
    update_ms: int = 0
    time_in_force: str = "GTC"

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_binance(self) -> dict[str, Any]:
        quote = self.executed_qty * (self.fill_price or Decimal(0))
        return {
            "symbol": self.market_id, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_order_id, "price": _num(self.price or Decimal(0)),
            "origQty": _num(self.quantity), "executedQty": _num(self.executed_qty),
            "cummulativeQuoteQty": _num(quote), "status": self.status,
            "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
            "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": self.time_ms,
            "updateTime": self.update_ms, "isWorking": True, "workingTime": self.time_ms,
            "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE",
        }


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestRecord:
    """One request the fake received: method, path, the merged query/body parameters and the
    `X-MBX-APIKEY` header ('' when absent)."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    api_key: str = ""


class FakeExchange:
    """The fake binance server. Thread-safe; start with `start()` or a `with` block."""

    def __init__(self, markets: Iterable[MarketSpec] = DEFAULT_MARKETS,
                 unique_client_ids: str = "open") -> None:
        """`unique_client_ids` is `"open"` (binance: unique among open orders) or `"all"`."""
        if unique_client_ids not in ("open", "all"):
            raise ValueError("unique_client_ids must be 'open' or 'all'")
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._markets: dict[str, MarketSpec] = {}
        self._candles: dict[str, list[Candle]] = {}
        self._times: dict[str, list[int]] = {}
        self._last_price: dict[str, Decimal] = {}
        self._clock_ms: int | None = None
        self._latency_s = 0.0
        self._faults: dict[str, Fault] = {}
        self._queued: dict[str, deque[Fault]] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=200_000)
        self._orders: list[FakeOrder] = []
        self._unique = unique_client_ids
        self._balances: dict[str, str] = {"USDT": "1000000", "BTC": "100", "ETH": "1000"}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for spec in markets:
            self.add_market(spec)

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeExchange:
        """Listen on 127.0.0.1 on a free port and serve from a daemon thread."""
        server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-exchange", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; sleeping fault handlers are woken and dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake exchange is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # data --------------------------------------------------------------------------------------
    def add_market(self, spec: MarketSpec) -> None:
        with self._lock:
            self._markets[spec.market_id] = spec

    def load_candles(self, symbol: str, candles: Sequence[Candle]) -> None:
        """Serve these 1m candles for `symbol` (unified `BTC/USDT` or id `BTCUSDT`)."""
        ordered = sorted(candles, key=lambda c: c.timestamp)
        with self._lock:
            market_id = self._market_id(symbol)
            self._candles[market_id] = ordered
            self._times[market_id] = [c.timestamp for c in ordered]

    def set_clock(self, now_ms: int | None) -> None:
        """Freeze the venue's clock at `now_ms` (ms, UTC); None follows the wall clock.

        Candles opening after the clock are not served; the candle forming at the clock is served
        partial (its move and volume scaled by the elapsed fraction), as a real venue does.
        """
        with self._lock:
            self._clock_ms = now_ms

    def set_last_price(self, symbol: str, price: float | str | None) -> None:
        """Price market orders at `price` instead of the last served close."""
        with self._lock:
            market_id = self._market_id(symbol)
            if price is None:
                self._last_price.pop(market_id, None)
            else:
                self._last_price[market_id] = Decimal(str(price))

    # faults ------------------------------------------------------------------------------------
    def set_latency(self, seconds: float) -> None:
        """Delay every request by `seconds` (s)."""
        with self._lock:
            self._latency_s = max(0.0, seconds)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        """Fail every request to `path` ("*" = any path) with `fault` until cleared (None)."""
        with self._lock:
            if fault is None:
                self._faults.pop(path, None)
            else:
                self._faults[path] = fault

    def fail_next(self, path: str, fault: Fault, count: int = 1) -> None:
        """Fail the next `count` requests to `path` ("*" = any path) with `fault`."""
        with self._lock:
            self._queued.setdefault(path, deque()).extend([fault] * count)

    def clear_faults(self) -> None:
        """Remove latency, persistent and queued faults."""
        with self._lock:
            self._latency_s = 0.0
            self._faults.clear()
            self._queued.clear()

    # observation -------------------------------------------------------------------------------
    def request_count(self, path: str | None = None, symbol: str | None = None) -> int:
        """Requests received for `path` (all paths if None), optionally for one symbol only."""
        with self._lock:
            if symbol is None:
                return sum(n for (p, _), n in self._counts.items() if path in (None, p))
            market_id = self._market_id(symbol)
            return sum(n for (p, s), n in self._counts.items()
                       if s == market_id and path in (None, p))

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()

    @property
    def orders(self) -> list[FakeOrder]:
        """Every order accepted so far, oldest first (copies)."""
        with self._lock:
            return [replace(order) for order in self._orders]

    def orders_for(self, client_order_id: str) -> list[FakeOrder]:
        """The orders the venue accepted under `client_order_id` (copies)."""
        return [o for o in self.orders if o.client_order_id == client_order_id]

    def fill_order(self, client_order_id: str, price: float | str | None = None,
                   quantity: float | str | Decimal | None = None) -> None:
        """Fill the open order `client_order_id` at `price` (default: its limit price): all
        of it, or — with `quantity` below the order's — partly (`PARTIALLY_FILLED`, still
        open, as a venue reports a resting order that met part of its size)."""
        with self._lock:
            order = self._find_order(client_order_id, None, open_only=True)
            if order is None:
                raise KeyError(f"no open order {client_order_id!r}")
            fill_price = Decimal(str(price)) if price is not None else order.price
            part = None if quantity is None else Decimal(str(quantity))
            if part is None or part >= order.quantity:
                self._fill(order, fill_price)
                return
            if part <= 0:
                raise ValueError(f"a partial fill needs a positive quantity, got {quantity}")
            order.status, order.executed_qty = "PARTIALLY_FILLED", part
            order.fill_price, order.update_ms = fill_price, self._now_ms()

    # internals ---------------------------------------------------------------------------------
    def _market_id(self, symbol: str) -> str:
        return symbol.replace("/", "").upper()

    def _now_ms(self) -> int:
        return self._clock_ms if self._clock_ms is not None else int(time.time() * 1000)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for key in (path, "*"):
                queue = self._queued.get(key)
                if queue:
                    return queue.popleft()
            return self._faults.get(path) or self._faults.get("*")

    def _record(self, method: str, path: str, params: dict[str, str], api_key: str) -> None:
        with self._lock:
            self._counts[(path, params.get("symbol", "").upper())] += 1
            self._log.append(RequestRecord(method, path, dict(params), api_key))

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _spec(self, params: Mapping[str, str]) -> MarketSpec:
        spec = self._markets.get(params.get("symbol", "").upper())
        if spec is None:
            raise _Reject(400, -1121, "Invalid symbol.")
        return spec

    # klines ------------------------------------------------------------------------------------
    def _klines(self, params: Mapping[str, str], fault: Fault | None) -> list[list[Any]]:
        spec = self._spec(params)
        minutes = CANDLE_INTERVAL_MINUTES.get(params.get("interval", ""))
        if minutes is None:
            raise _Reject(400, -1120, "Invalid interval.")
        try:
            limit = int(params.get("limit", "500"))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            raise _Reject(400, -1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise _Reject(400, -1130, "Invalid data sent for a parameter.")
        with self._lock:
            now = self._now_ms()
            candles = self._candles.get(spec.market_id, [])
            times = self._times.get(spec.market_id, [])
            visible = candles[:bisect.bisect_right(times, now)]
        rows = _aggregate(visible, minutes * MINUTE_MS)
        if start is not None:
            rows = rows[bisect.bisect_left([c.timestamp for c in rows], start):]
        if end is not None:
            rows = [c for c in rows if c.timestamp <= end]
        rows = rows[:limit] if start is not None else rows[-limit:]
        width = minutes * MINUTE_MS
        out = [_kline_row(_partial(c, now, width), width) for c in rows]
        if fault is not None and fault.kind == "kline_gaps":
            out = [row for i, row in enumerate(out) if (i + 1) % fault.every]
        if fault is not None and fault.kind == "shuffled_rows":
            out = out + out
            random.Random(fault.every).shuffle(out)
        if fault is not None and fault.kind == "malformed_rows" and out:
            out[0] = _corrupt(out[0], fault.mode)
        return out

    # orders ------------------------------------------------------------------------------------
    def _find_order(self, client_order_id: str | None, order_id: str | None,
                    open_only: bool = False) -> FakeOrder | None:
        for order in reversed(self._orders):
            if open_only and not order.is_open:
                continue
            if client_order_id is not None and order.client_order_id == client_order_id:
                return order
            if order_id is not None and str(order.order_id) == order_id:
                return order
        return None

    def _fill(self, order: FakeOrder, price: Decimal | None) -> None:
        order.status, order.executed_qty = "FILLED", order.quantity
        order.fill_price, order.update_ms = price, self._now_ms()

    def _last(self, market_id: str) -> Decimal | None:
        if market_id in self._last_price:
            return self._last_price[market_id]
        candles = self._candles.get(market_id, [])
        index = bisect.bisect_right(self._times.get(market_id, []), self._now_ms())
        return Decimal(repr(candles[index - 1].close)) if index else None

    def _create_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params)
        side, kind = params.get("side", "").upper(), params.get("type", "").upper()
        if side not in ("BUY", "SELL") or kind not in ("LIMIT", "MARKET"):
            raise _Reject(400, -1116, "Invalid orderType.")
        try:
            quantity = Decimal(params["quantity"])
            price = Decimal(params["price"]) if kind == "LIMIT" else None
        except (KeyError, ArithmeticError):
            raise _Reject(400, -1102, "Mandatory parameter 'quantity' was not sent, was "
                                      "empty/null, or malformed.") from None
        if quantity < Decimal(spec.min_qty) or quantity % Decimal(spec.step_size):
            raise _Reject(400, -1013, "Filter failure: LOT_SIZE")
        if price is not None and (price <= 0 or price % Decimal(spec.tick_size)):
            raise _Reject(400, -1013, "Filter failure: PRICE_FILTER")
        with self._lock:
            last = self._last(spec.market_id)
            if kind == "MARKET" and last is None:
                raise _Reject(400, -2010, "Market is closed.")
            reference = price if price is not None else last
            if reference is not None and quantity * reference < Decimal(spec.min_notional):
                raise _Reject(400, -1013, "Filter failure: NOTIONAL")
            client_id = params.get("newClientOrderId") or f"fake-{len(self._orders) + 1}"
            clash = self._find_order(client_id, None, open_only=self._unique == "open")
            if clash is not None:
                raise _Reject(400, -2010, "Duplicate order sent.")
            now = self._now_ms()
            order = FakeOrder(len(self._orders) + 1, client_id, spec.market_id, side, kind,
                              quantity, price, time_ms=now, update_ms=now,
                              time_in_force=params.get("timeInForce", "GTC"))
            marketable = last is not None and (
                price is None or (price >= last if side == "BUY" else price <= last))
            if marketable and last is not None:
                taker_price = last if price is None else (
                    min(price, last) if side == "BUY" else max(price, last))
                self._fill(order, taker_price)
            self._orders.append(order)
            answer = order.as_binance()
        answer["transactTime"] = order.time_ms
        answer["fills"] = [] if order.status != "FILLED" else [{
            "price": _num(order.fill_price or Decimal(0)), "qty": _num(order.quantity),
            "commission": "0.00000000", "commissionAsset": spec.quote, "tradeId": order.order_id}]
        return answer

    def _get_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        self._spec(params)
        with self._lock:
            order = self._find_order(params.get("origClientOrderId"), params.get("orderId"))
            if order is None:
                raise _Reject(400, -2013, "Order does not exist.")
            return order.as_binance()

    def _cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        self._spec(params)
        with self._lock:
            order = self._find_order(params.get("origClientOrderId"), params.get("orderId"),
                                     open_only=True)
            if order is None:
                raise _Reject(400, -2011, "Unknown order sent.")
            order.status, order.update_ms = "CANCELED", self._now_ms()
            answer = order.as_binance()
        answer["origClientOrderId"] = order.client_order_id
        answer["clientOrderId"] = f"cancel-{order.order_id}"
        return answer

    def _open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        market_id = self._spec(params).market_id if "symbol" in params else None
        with self._lock:
            return [o.as_binance() for o in self._orders
                    if o.is_open and market_id in (None, o.market_id)]

    def _account(self) -> dict[str, Any]:
        with self._lock:
            # The kind fake charges nothing and never refuses for balance; it still reports
            # what its fills bought, so an exit can sell min(position, free balance).
            held = {a: Decimal(v) for a, v in self._balances.items()}
            for order in self._orders:
                spec = next((m for m in self._markets.values()
                             if m.market_id == order.market_id), None)
                if spec is None or not order.executed_qty:
                    continue
                sign = 1 if order.side == "BUY" else -1
                held[spec.base] = held.get(spec.base, Decimal(0)) + sign * order.executed_qty
            balances = [{"asset": a, "free": _num(max(v, Decimal(0))), "locked": "0.00000000"}
                        for a, v in held.items()]
        return {"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                "canWithdraw": True, "canDeposit": True, "updateTime": self._now_ms(),
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"]}

    def _exchange_info(self) -> dict[str, Any]:
        with self._lock:
            symbols = [spec.exchange_info() for spec in self._markets.values()]
        return {"timezone": "UTC", "serverTime": self._now_ms(), "rateLimits": [],
                "exchangeFilters": [], "symbols": symbols}

    def _route(self, method: str, path: str, params: dict[str, str]) -> Any:
        routes: dict[tuple[str, str], Any] = {
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/exchangeInfo"): lambda: {"symbols": []},
            ("GET", "/dapi/v1/exchangeInfo"): lambda: {"symbols": []},
            ("GET", "/api/v3/time"): lambda: {"serverTime": self._now_ms()},
            ("GET", "/api/v3/ping"): dict,
            ("GET", "/api/v3/account"): self._account,
            ("POST", ORDER_PATH): lambda: self._create_order(params),
            ("GET", ORDER_PATH): lambda: self._get_order(params),
            ("DELETE", ORDER_PATH): lambda: self._cancel_order(params),
            ("GET", "/api/v3/openOrders"): lambda: self._open_orders(params),
            # The kind fake charges no fees, so an order's trade list has nothing to add:
            # the venue model (bkit.venue) is the one with commissions per fill.
            ("GET", "/api/v3/myTrades"): list,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise _Reject(404, -1000, f"Unknown path {method} {path}.")
        return handler()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops SYNs under a burst: 1 s client stalls


_SIGNED_PATHS = {ORDER_PATH, "/api/v3/openOrders", "/api/v3/account"}


def _corrupt(row: list[Any], mode: str) -> list[Any]:
    row = list(row)
    if mode == "high_below_low":
        row[2], row[3] = row[3], _num(float(row[2]) * 1.01 + 1e-8)
    elif mode == "text":
        row[1] = "not-a-price"
    elif mode == "negative":
        row[4] = "-" + row[4]
    elif mode == "outlier":
        row[2] = _num(float(row[2]) * 10)
    else:
        raise ValueError(f"unknown malformed-row mode {mode!r}")
    return row


def _make_handler(fake: FakeExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = dict(parse_qsl(url.query)) | dict(parse_qsl(body))
            fake._record(method, url.path, params, self.headers.get("X-MBX-APIKEY", ""))
            with fake._lock:
                latency = fake._latency_s
            fake._pause(latency)
            fault = fake._take_fault(url.path)
            kind = fault.kind if fault else ""
            if kind == "disconnect":
                self.close_connection = True
                self.connection.close()
                return
            if kind == "timeout":
                fake._pause(fault.seconds if fault else 0)
            try:
                if kind in _ERRORS:
                    raise _Reject(*_ERRORS[kind])
                if kind == "bad_gateway":
                    self._send(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                    return
                if url.path in _SIGNED_PATHS and not self.headers.get("X-MBX-APIKEY"):
                    raise _Reject(401, -2014, "API-key format invalid.")
                if method == "GET" and url.path == KLINES_PATH:
                    answer: Any = fake._klines(params, fault)
                else:
                    answer = fake._route(method, url.path, params)
                status = 200
            except _Reject as reject:
                status, answer = reject.status, {"code": reject.code, "msg": reject.msg}
            if kind == "accepted_then_timeout":
                fake._pause(fault.seconds if fault else 0)
            extra = {"Retry-After": "1"} if status == 429 else {}
            self._send(status, json.dumps(answer).encode(), "application/json", extra)

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

    return Handler

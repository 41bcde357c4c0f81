"""The spot exchange's state and its endpoints, as Binance answers them.

`SpotEngine` holds markets, balances, the order log, trades and prices, and implements every
`/api/v3/...` endpoint as a method taking the request's parameters and returning Binance's JSON
(or raising `VenueError`). It is not thread-safe: `Venue` calls it under one lock. Stop orders
(`bkit.venue.stops`) wait untriggered, locking what they may spend; futures live in a sibling
engine (`bkit.venue.futures`); nothing here knows about HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bkit.core.candles import CANDLE_INTERVAL_MINUTES, MINUTE_MS
from bkit.venue.accounts import Accounts, FeeRule, dec
from bkit.venue.errors import VenueError
from bkit.venue.markets import (
    ORDER_TYPES,
    MarketSpec,
    check_notional,
    check_price,
    check_quantity,
    floor_to_step,
)
from bkit.venue.matching import apply_fill, buy_reserve, crossed, finish, taker_price
from bkit.venue.orders import RESPONSE_TYPES, VenueOrder, VenueTrade, s8
from bkit.venue.prices import PriceBook, aggregate, kline_row
from bkit.venue.stops import SPOT_STOP_TYPES, STOP_IMMEDIATE_SPOT, marketable, reached, scan

MAX_KLINES_LIMIT = 1000
RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


def _decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise VenueError.bad_param(name) from None
    if not value.is_finite() or value <= 0:
        raise VenueError.bad_param(name)
    return value


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise VenueError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                     "legal range is '^[0-9]{1,20}$'.") from None


class SpotEngine:
    """Markets, balances, orders, trades and prices of one simulated Binance spot account."""

    def __init__(self, markets: Iterable[MarketSpec], balances: Mapping[str, Any],
                 fees: FeeRule, clock: Callable[[], int]) -> None:
        self.markets: dict[str, MarketSpec] = {m.market_id: m for m in markets}
        self.accounts = Accounts(balances)
        self.fees = fees
        self.clock = clock
        self.prices = PriceBook()
        self.orders: list[VenueOrder] = []
        self.trades: list[VenueTrade] = []
        self.slippage = Decimal(0)
        self.fill_fraction: dict[str | None, Decimal] = {None: Decimal(1)}
        self.lookup_lag = 0.0
        self.forced_response: str | None = None

    # helpers -----------------------------------------------------------------------------------
    def spec(self, symbol: str | None) -> MarketSpec:
        spec = self.markets.get((symbol or "").replace("/", "").upper())
        if spec is None:
            raise VenueError.bad_symbol()
        return spec

    def _open_by_client_id(self, client_order_id: str) -> VenueOrder | None:
        return next((o for o in self.orders
                     if o.is_open and o.client_order_id == client_order_id), None)

    def _find(self, spec: MarketSpec, params: Mapping[str, str],
              open_only: bool = False) -> VenueOrder | None:
        order_id = _int(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise VenueError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                         "but both were empty/null!")
        for order in reversed(self.orders):
            if order.market_id != spec.market_id or (open_only and not order.is_open):
                continue
            if order_id is not None and order.order_id == order_id:
                return order
            if order_id is None and order.client_order_id == client_id:
                return order
        return None

    def _record(self, order: VenueOrder, price: Decimal, qty: Decimal, maker: bool) -> None:
        trade = apply_fill(order, self.markets[order.market_id], self.accounts, self.fees,
                           price, qty, self.clock(), maker, len(self.trades) + 1)
        self.trades.append(trade)

    def _fraction(self, market_id: str) -> Decimal:
        return self.fill_fraction.get(market_id, self.fill_fraction[None])

    # matching ----------------------------------------------------------------------------------
    def match(self) -> None:
        """Fill every resting limit order the price has reached since it was last checked."""
        now = self.clock()
        for order in self.orders:
            if not order.is_open:
                continue
            candles = self.prices.closed(order.market_id, now, since_ms=order.checked_ms)
            current = self.prices.current(order.market_id, now)
            if not order.is_working:
                if not self._trigger(order, candles, current, now):
                    if candles:
                        order.checked_ms = max(order.checked_ms, candles[-1].timestamp + 1)
                    continue
                if not order.is_open:
                    continue
                candles = self.prices.closed(order.market_id, now, since_ms=order.checked_ms)
            if crossed(order, current, candles) and order.price is not None:
                self._record(order, order.price, order.remaining, maker=True)
            if candles:
                order.checked_ms = max(order.checked_ms, candles[-1].timestamp + 1)

    def _trigger(self, order: VenueOrder, candles: list[Any], current: Decimal | None,
                 now: int) -> bool:
        """Trigger a waiting stop order if the price reached its stop: it starts working as a
        limit order and takes at once if marketable at the trigger price. True if triggered."""
        assert order.stop_price is not None and order.price is not None
        hit = scan(order.type, order.side, order.stop_price, candles, current)
        if hit is None:
            return False
        order.working_ms = now
        order.update_ms = now
        if hit.candle_ms is not None:
            order.checked_ms = hit.candle_ms + 1  # later candles may still cross the limit
        if marketable(order.side, order.price, hit.price):
            spec = self.markets[order.market_id]
            fill = taker_price(spec, order.side, hit.price, self.slippage, limit=order.price)
            self._record(order, fill, order.remaining, maker=False)
        return True

    def fill_order(self, client_order_id: str, price: Decimal | None,
                   fraction: Decimal) -> None:
        """Fill `fraction` of the open order's original quantity (floored to the step, at most
        what remains) at `price` (default its limit price) as a maker."""
        order = self._open_by_client_id(client_order_id)
        if order is None:
            raise KeyError(f"no open order {client_order_id!r}")
        spec = self.markets[order.market_id]
        qty = min(order.remaining, floor_to_step(spec, order.quantity * fraction))
        if qty <= 0:
            raise ValueError(f"fraction {fraction} of {order.quantity} is below one step")
        fill_price = price if price is not None else order.price
        if fill_price is None:
            raise ValueError("a fill of an order without a limit price needs a price")
        self._record(order, fill_price, qty, maker=True)

    # endpoints ---------------------------------------------------------------------------------
    def create_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """POST /api/v3/order."""
        spec = self.spec(params.get("symbol"))
        side, kind = params.get("side", "").upper(), params.get("type", "").upper()
        if side not in ("BUY", "SELL"):
            raise VenueError.missing("side")
        if kind not in ORDER_TYPES:
            raise VenueError(400, -1116, "Invalid orderType.")
        response_type = self.forced_response or params.get("newOrderRespType") or "FULL"
        if response_type not in RESPONSE_TYPES:
            raise VenueError(400, -1136, "Invalid newOrderRespType.")
        market = kind == "MARKET"
        stop = kind in SPOT_STOP_TYPES
        stop_price = _decimal(params, "stopPrice") if stop else None
        if stop and stop_price is None:
            raise VenueError.missing("stopPrice")
        price = None if market else _decimal(params, "price")
        quantity = _decimal(params, "quantity")
        quote_qty = _decimal(params, "quoteOrderQty") if market else None
        if not market and price is None:
            raise VenueError.missing("price")
        if kind in ("LIMIT", *SPOT_STOP_TYPES) and not params.get("timeInForce"):
            raise VenueError.missing("timeInForce")
        if quantity is None and quote_qty is None:
            raise VenueError.missing("quantity")
        if quote_qty is not None and side != "BUY":
            raise VenueError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        now = self.clock()
        current = self.prices.current(spec.market_id, now)
        fill_price: Decimal | None = None
        if market:
            if current is None:
                raise VenueError(400, -2010, "Market is closed.")
            fill_price = taker_price(spec, side, current, self.slippage)
            if quote_qty is not None:
                quantity = floor_to_step(spec, quote_qty / fill_price)
            assert quantity is not None
            check_quantity(spec, quantity, market=True)
            check_notional(spec, quote_qty or quantity * current, market=True)
        else:
            assert price is not None and quantity is not None
            check_price(spec, price)
            check_quantity(spec, quantity, market=False)
            check_notional(spec, price * quantity, market=False)
            if stop_price is not None:
                check_price(spec, stop_price)
                if current is not None and reached(kind, side, stop_price, current):
                    raise VenueError(400, -2010, STOP_IMMEDIATE_SPOT)
            elif current is not None and crossed_now(side, price, current):
                if kind == "LIMIT_MAKER":
                    raise VenueError(400, -2010, "Order would immediately match and take.")
                fill_price = taker_price(spec, side, current, self.slippage, limit=price)
        client_id = params.get("newClientOrderId") or f"venue-{len(self.orders) + 1}"
        if self._open_by_client_id(client_id) is not None:
            raise VenueError.duplicate()
        if side == "BUY":
            reserve_asset = spec.quote
            notional = quote_qty if quote_qty is not None else quantity * (price or fill_price)
            reserve = buy_reserve(self.fees, notional)
        else:
            reserve_asset, reserve = spec.base, quantity
        self.accounts.reserve(reserve_asset, reserve)
        order = VenueOrder(
            order_id=len(self.orders) + 1, client_order_id=client_id,
            market_id=spec.market_id, symbol=spec.symbol, side=side, type=kind,
            quantity=quantity, price=price, time_ms=now, accepted_at=time.monotonic(),
            time_in_force=params.get("timeInForce", "GTC").upper(),
            quote_order_qty=quote_qty or Decimal(0), iceberg_qty=_decimal(params, "icebergQty"),
            stp_mode=params.get("selfTradePreventionMode", "EXPIRE_MAKER").upper(),
            update_ms=now, locked_asset=reserve_asset, locked=reserve, checked_ms=now,
            stop_price=stop_price, working_ms=-1 if stop else now)
        self.orders.append(order)
        if market:
            assert fill_price is not None
            qty = min(quantity, floor_to_step(spec, quantity * self._fraction(spec.market_id)))
            if qty > 0:
                self._record(order, fill_price, qty, maker=False)
            if order.is_open:
                finish(order, self.accounts, "EXPIRED", now)
        elif fill_price is not None:
            self._record(order, fill_price, quantity, maker=False)
        return order.create_answer(response_type, order.trades)

    def query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /api/v3/order: -2013 while the order is inside the lookup lag."""
        order = self._find(self.spec(params.get("symbol")), params)
        if order is None or time.monotonic() - order.accepted_at < self.lookup_lag:
            raise VenueError.not_found()
        return order.query_answer()

    def cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """DELETE /api/v3/order."""
        order = self._find(self.spec(params.get("symbol")), params, open_only=True)
        if order is None:
            raise VenueError.unknown_order()
        finish(order, self.accounts, "CANCELED", self.clock())
        cancel_id = params.get("newClientOrderId") or f"venue-cancel-{order.order_id}"
        return order.cancel_answer(cancel_id)

    def open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/openOrders (symbol optional)."""
        market_id = self.spec(params["symbol"]).market_id if params.get("symbol") else None
        return [o.query_answer() for o in self.orders
                if o.is_open and market_id in (None, o.market_id)]

    def my_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/myTrades (symbol; orderId, startTime, endTime, fromId, limit)."""
        spec = self.spec(params.get("symbol"))
        order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 500
        if not 1 <= limit <= 1000:
            raise VenueError(400, -1130, "Invalid data sent for a parameter.")
        rows = [t for t in self.trades if t.market_id == spec.market_id
                and order_id in (None, t.order_id) and (from_id is None or t.trade_id >= from_id)
                and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.my_trades_answer() for t in rows]

    def account(self) -> dict[str, Any]:
        """GET /api/v3/account."""
        rate = s8(self.fees.rate)
        bps = str(int(self.fees.rate * 10_000))
        balances = [{"asset": a, "free": s8(free), "locked": s8(locked)}
                    for a, (free, locked) in self.accounts.snapshot().items()]
        return {"makerCommission": int(bps), "takerCommission": int(bps),
                "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": s8(Decimal(0)),
                                    "seller": s8(Decimal(0))},
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False,
                "updateTime": self.clock(), "accountType": "SPOT", "balances": balances,
                "permissions": ["SPOT"], "uid": 100000001}

    def exchange_info(self) -> dict[str, Any]:
        """GET /api/v3/exchangeInfo."""
        return {"timezone": "UTC", "serverTime": self.clock(), "rateLimits": RATE_LIMITS,
                "exchangeFilters": [],
                "symbols": [m.exchange_info(ORDER_TYPES) for m in self.markets.values()]}

    def klines(self, params: Mapping[str, str]) -> list[list[Any]]:
        """GET /api/v3/klines: candles built only from 1m candles closed before the clock."""
        spec = self.spec(params.get("symbol"))
        minutes = CANDLE_INTERVAL_MINUTES.get(params.get("interval", ""))
        if minutes is None:
            raise VenueError(400, -1120, "Invalid interval.")
        limit = _int(params, "limit") or 500
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise VenueError(400, -1130, "Invalid data sent for a parameter.")
        width = minutes * MINUTE_MS
        rows = aggregate(self.prices.closed(spec.market_id, self.clock()), width)
        rows = [c for c in rows if (start is None or c.timestamp >= start)
                and (end is None or c.timestamp <= end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return [kline_row(c, width) for c in rows]

    def ticker_price(self, params: Mapping[str, str]) -> Any:
        """GET /api/v3/ticker/price (one symbol, or every market with a price)."""
        now = self.clock()
        specs = [self.spec(params["symbol"])] if params.get("symbol") else list(
            self.markets.values())
        rows = [{"symbol": s.market_id, "price": s8(p)} for s in specs
                if (p := self.prices.current(s.market_id, now)) is not None]
        if params.get("symbol"):
            if not rows:
                raise VenueError(400, -1121, "Invalid symbol.")
            return rows[0]
        return rows

    def set_free(self, asset: str, amount: Any) -> None:
        self.accounts.set_free(asset, dec(amount))


def crossed_now(side: str, limit: Decimal, current: Decimal) -> bool:
    """Whether a new limit order is marketable at `current` (it takes instead of resting)."""
    return current <= limit if side == "BUY" else current >= limit

"""Orders through a `CcxtExchange`: market (or limit) orders, answers read as evidence.

ccxt's parse of a Binance answer is taken at its word and no further: an ACK answer has no
status (unknown, not "nothing filled"), `expired` and `canceled` may carry fills, `closed`
may have filled less than asked. Fees come from the answer's fills or, when it has none
(RESULT answers, lookups), from the order's trades.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

from bkit.broker.base import OrderPlan, plain_amount
from bkit.core.orders import Fee, Fill, MarketRules, VenueOrder, base_of, quote_of
from bkit.exchange.ccxt_exchange import CcxtExchange, ExchangeOrder
from bkit.exchange.errors import DefinitiveExchangeError, OrderNotFoundError


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fee(raw: Any) -> Fee | None:
    if not isinstance(raw, Mapping):
        return None
    cost, currency = _number(raw.get("cost")), raw.get("currency")
    if cost is None or not currency:
        return None
    return Fee(cost, str(currency))


def _fees(order: Mapping[str, Any]) -> tuple[Fee, ...]:
    listed = [f for f in (_fee(raw) for raw in order.get("fees") or []) if f is not None]
    if listed:
        return tuple(listed)
    single = _fee(order.get("fee"))
    return () if single is None else (single,)


def fills_from_trades(trades: list[dict[str, Any]]) -> list[Fill]:
    """ccxt unified trades as fills (amount, price, fee); a trade missing either is skipped."""
    out = []
    for trade in trades:
        amount, price = _number(trade.get("amount")), _number(trade.get("price"))
        if amount is not None and price is not None:
            out.append(Fill(amount, price, _fee(trade.get("fee"))))
    return out


def venue_order(order: ExchangeOrder, client_order_id: str) -> VenueOrder:
    raw = order.raw
    status = None if order.status in (None, "None") else order.status
    return VenueOrder(client_order_id=order.client_order_id or client_order_id,
                      exchange_order_id=order.order_id if order.order_id not in ("", "None")
                      else None,
                      status=status, amount=_number(order.amount),
                      filled=_number(order.filled) if status is not None else None,
                      average=_number(order.average) or _number(order.price),
                      cost=_number(raw.get("cost")), fees=_fees(raw))


class CcxtBroker:
    """Orders on a ccxt exchange; amounts and checks from the market's rules.

    `entry_order_type="limit"` sends entries as limit orders at the signal's entry price
    (resting until filled, cancelled after the orders worker's entry timeout); exits are
    always market orders."""

    def __init__(self, exchange: CcxtExchange, entry_order_type: str = "market") -> None:
        if entry_order_type not in ("market", "limit"):
            raise ValueError(f"entry_order_type must be 'market' or 'limit', "
                             f"got {entry_order_type!r}")
        self.exchange = exchange
        self.entry_order_type = entry_order_type

    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        try:
            amount = float(self.exchange.format_quantity(symbol, plain_amount(cost, price)))
            limits = self.exchange.market_limits(symbol)
        except (DefinitiveExchangeError, ValueError) as exc:
            return OrderPlan(None, f"{symbol}: cannot size an order of {cost} at {price}: {exc}")
        if limits.min_amount is not None and amount < limits.min_amount:
            return OrderPlan(None, f"{symbol}: amount {amount} below the minimum "
                                   f"{limits.min_amount}")
        if limits.min_cost is not None and amount * price < limits.min_cost:
            return OrderPlan(None, f"{symbol}: notional {amount * price:.8g} below the minimum "
                                   f"{limits.min_cost}")
        return OrderPlan(amount)

    def rules(self, symbol: str) -> MarketRules:
        limits = self.exchange.market_limits(symbol)
        return MarketRules(base_of(symbol), quote_of(symbol), limits.amount_step,
                           limits.min_amount, limits.min_cost)

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> VenueOrder:
        quantity = self.exchange.format_quantity(symbol, amount)
        if kind == "open" and self.entry_order_type == "limit":
            order = self.exchange.create_order(symbol, "limit", side, quantity,
                                               self.exchange.format_price(symbol, price),
                                               client_order_id)
        else:
            order = self.exchange.create_order(symbol, "market", side, quantity, None,
                                               client_order_id)
        return venue_order(order, client_order_id)

    def supports_stops(self, symbol: str) -> bool:
        """Whether the venue takes a stop-loss-limit on `symbol` (SPEC §10)."""
        try:
            return "STOP_LOSS_LIMIT" in self.exchange.order_types(symbol)
        except DefinitiveExchangeError:
            return False

    def place_stop(self, symbol: str, side: str, amount: float, stop_price: float,
                   limit_price: float, client_order_id: str) -> VenueOrder:
        """A protective stop-loss-limit: rests until the price reaches `stop_price`, then a
        limit at `limit_price`. The coins it would sell are locked on the venue meanwhile,
        so no second sell of them can go through."""
        order = self.exchange.create_order(
            symbol, "limit", side, self.exchange.format_quantity(symbol, amount),
            self.exchange.format_price(symbol, limit_price), client_order_id,
            {"triggerPrice": float(self.exchange.format_price(symbol, stop_price))})
        return venue_order(order, client_order_id)

    def cancel(self, symbol: str, client_order_id: str) -> None:
        # Not found means already filled or gone: the lookup that follows tells which.
        with contextlib.suppress(OrderNotFoundError):
            self.exchange.cancel_order_by_client_id(symbol, client_order_id)

    def lookup(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        try:
            return venue_order(self.exchange.fetch_order_by_client_id(symbol, client_order_id),
                               client_order_id)
        except OrderNotFoundError:
            return None

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return [venue_order(o, o.client_order_id or "") for o in
                self.exchange.fetch_open_orders(symbol)]

    def fills(self, symbol: str, exchange_order_id: str) -> list[Fill]:
        return fills_from_trades(self.exchange.fetch_order_trades(symbol, exchange_order_id))

    def free_balance(self, asset: str) -> float:
        return self.exchange.fetch_balance().get(asset, (0.0, 0.0))[0]

    def balances(self) -> dict[str, tuple[float, float]]:
        return self.exchange.fetch_balance()

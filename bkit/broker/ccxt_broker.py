"""Orders through a `CcxtExchange`: market orders sized from the signal's cost."""

from __future__ import annotations

import contextlib

from bkit.broker.base import OrderPlan, PlacedOrder, plain_amount
from bkit.exchange.ccxt_exchange import CcxtExchange, ExchangeOrder
from bkit.exchange.errors import DefinitiveExchangeError, OrderNotFoundError

_STATUS = {"closed": "filled", "open": "open", "canceled": "canceled", "expired": "canceled",
           "rejected": "rejected"}


def _placed(order: ExchangeOrder, client_order_id: str) -> PlacedOrder:
    status = _STATUS.get(order.status, order.status)
    filled = float(order.filled or 0.0)
    if status == "open" and filled > 0:
        status = "partial"
    return PlacedOrder(client_order_id=order.client_order_id or client_order_id,
                       exchange_order_id=order.order_id, status=status,
                       amount=order.amount, filled_amount=filled,
                       average_price=order.average or order.price)


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

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> PlacedOrder:
        quantity = self.exchange.format_quantity(symbol, amount)
        if kind == "open" and self.entry_order_type == "limit":
            order = self.exchange.create_order(symbol, "limit", side, quantity,
                                               self.exchange.format_price(symbol, price),
                                               client_order_id)
        else:
            order = self.exchange.create_order(symbol, "market", side, quantity, None,
                                               client_order_id)
        return _placed(order, client_order_id)

    def cancel(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        # Not found means already filled or gone: the lookup below tells which.
        with contextlib.suppress(OrderNotFoundError):
            self.exchange.cancel_order_by_client_id(symbol, client_order_id)
        return self.lookup(symbol, client_order_id)

    def lookup(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        try:
            return _placed(self.exchange.fetch_order_by_client_id(symbol, client_order_id),
                           client_order_id)
        except OrderNotFoundError:
            return None

    def open_orders(self, symbol: str) -> list[PlacedOrder]:
        return [_placed(o, o.client_order_id or "") for o in
                self.exchange.fetch_open_orders(symbol)]

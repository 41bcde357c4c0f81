"""Simulated fills for dry runs: at the intent's price with the configured slippage, fees on
each side, persisted in the database so a retry finds the order it already "placed"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from bkit.broker.base import OrderPlan, PlacedOrder, plain_amount
from bkit.exchange.errors import DefinitiveExchangeError
from bkit.store.engine import session_scope
from bkit.store.tables import PaperOrder


@dataclass
class PaperBroker:
    """`slippage_percent` moves every fill against us; `fee_percent` of the notional is paid
    on each fill (both in %, like CC_PERCENT_SLIPPAGE / CC_PERCENT_FEE)."""

    engine: Engine
    slippage_percent: float = 0.1
    fee_percent: float = 0.1
    exchange_name: str = "paper"

    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        try:
            return OrderPlan(plain_amount(cost, price))
        except ValueError as exc:
            return OrderPlan(None, str(exc))

    def fill_price(self, side: str, price: float) -> float:
        s = self.slippage_percent / 100
        return price * (1 + s) if side == "buy" else price * (1 - s)

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> PlacedOrder:
        fill = self.fill_price(side, price)
        order = PaperOrder(client_order_id=client_order_id, exchange_name=self.exchange_name,
                           symbol=symbol, side=side, amount=amount, fill_price=fill,
                           fee=amount * fill * self.fee_percent / 100,
                           created_at=datetime.now(UTC))
        try:
            with session_scope(self.engine) as session:
                session.add(order)
                session.flush()
                order_id = order.id
        except IntegrityError:
            raise DefinitiveExchangeError(f"duplicate client order id {client_order_id}",
                                          kind="duplicate_order",
                                          exchange_name=self.exchange_name,
                                          operation="create_order") from None
        return PlacedOrder(client_order_id, f"paper-{order_id}", "filled", amount, amount, fill)

    def lookup(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        with session_scope(self.engine) as session:
            order = session.execute(select(PaperOrder).where(
                PaperOrder.client_order_id == client_order_id)).scalars().first()
            if order is None:
                return None
            return PlacedOrder(client_order_id, f"paper-{order.id}", "filled", order.amount,
                               order.amount, order.fill_price)

    def open_orders(self, symbol: str) -> list[PlacedOrder]:
        return []  # paper orders fill at once

    def cancel(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        return self.lookup(symbol, client_order_id)  # nothing rests: the fill stands

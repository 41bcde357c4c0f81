"""Simulated fills for dry runs, under the same money rules as a real venue (SPEC §8): the
fill at the intent's price with the configured slippage, the fee taken in the base asset on
buys and in the quote asset on sells (Binance without BNB), amounts floored to the step, and
sells refused above what the paper account holds. Orders are persisted in the database, so
a retry finds the order it already "placed", and so paper and live agree trade for trade."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, case, func, select
from sqlalchemy.exc import IntegrityError

from bkit.broker.base import OrderPlan, plain_amount
from bkit.core.orders import Fee, Fill, MarketRules, VenueOrder, base_of, floor_to_step, quote_of
from bkit.exchange.errors import DefinitiveExchangeError
from bkit.store.engine import session_scope
from bkit.store.tables import PaperOrder

#: The quote balance of the paper account: not limited (a dry run sizes from `cost`).
PAPER_QUOTE_BALANCE = math.inf


@dataclass
class PaperBroker:
    """`slippage_percent` moves every fill against us; `fee_percent` of what each fill
    delivers is the fee (both in %, like CC_PERCENT_SLIPPAGE / CC_PERCENT_FEE).
    `amount_step`: amounts are floored to it, like a venue's LOT_SIZE. An exit may sell no
    more than the paper account holds of the coin."""

    engine: Engine
    slippage_percent: float = 0.1
    fee_percent: float = 0.1
    exchange_name: str = "paper"
    amount_step: float = 1e-8
    #: The paper "venue" is this database: a lookup that finds nothing is the truth at once
    #: (no lookup lag), so an order of unknown outcome may be re-sent after two looks.
    settle_seconds: float = 0.0
    #: The starting balance (quote currency) of every coin the account has not traded as a
    #: base, for sizing (SPEC §11): its free balance is this plus what sells brought in (net
    #: of fees) minus what buys spent. None: unlimited (a dry run sizes from `cost`).
    quote_balance: float | None = None

    def rules(self, symbol: str) -> MarketRules:
        return MarketRules(base_of(symbol), quote_of(symbol), self.amount_step, None, None)

    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        try:
            amount = floor_to_step(plain_amount(cost, price), self.amount_step)
        except ValueError as exc:
            return OrderPlan(None, str(exc))
        if amount <= 0:
            return OrderPlan(None, f"{symbol}: {cost} at {price} is below one step "
                                   f"({self.amount_step})")
        return OrderPlan(amount)

    def fill_price(self, side: str, price: float) -> float:
        s = self.slippage_percent / 100
        return price * (1 + s) if side == "buy" else price * (1 - s)

    def _answer(self, order: PaperOrder) -> VenueOrder:
        fee = Fee(order.fee, order.fee_currency or quote_of(order.symbol))
        return VenueOrder(order.client_order_id, f"paper-{order.id}", "closed", order.amount,
                          order.amount, order.fill_price, order.amount * order.fill_price,
                          (fee,))

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> VenueOrder:
        amount = floor_to_step(amount, self.amount_step)
        if amount <= 0:
            raise DefinitiveExchangeError(f"{symbol}: amount below one step",
                                          kind="invalid_order", exchange_name=self.exchange_name,
                                          operation="create_order")
        base, quote = base_of(symbol), quote_of(symbol)
        if kind == "close" and side == "sell" and amount > self.free_balance(base) + 1e-12:
            raise DefinitiveExchangeError(
                "Account has insufficient balance for requested action.",
                kind="insufficient_funds", exchange_name=self.exchange_name,
                operation="create_order")
        fill = self.fill_price(side, price)
        rate = self.fee_percent / 100
        fee, currency = (amount * rate, base) if side == "buy" else (amount * fill * rate, quote)
        order = PaperOrder(client_order_id=client_order_id, exchange_name=self.exchange_name,
                           symbol=symbol, side=side, amount=amount, fill_price=fill, fee=fee,
                           fee_currency=currency, created_at=datetime.now(UTC))
        try:
            with session_scope(self.engine) as session:
                session.add(order)
                session.flush()
                answer = self._answer(order)
        except IntegrityError:
            raise DefinitiveExchangeError(f"duplicate client order id {client_order_id}",
                                          kind="duplicate_order",
                                          exchange_name=self.exchange_name,
                                          operation="create_order") from None
        return answer

    def lookup(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        with session_scope(self.engine) as session:
            order = session.execute(select(PaperOrder).where(
                PaperOrder.client_order_id == client_order_id)).scalars().first()
            return None if order is None else self._answer(order)

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return []  # paper orders fill at once

    def cancel(self, symbol: str, client_order_id: str) -> None:
        return None  # nothing rests: the fill stands

    def fills(self, symbol: str, exchange_order_id: str) -> list[Fill]:
        order_id = int(exchange_order_id.removeprefix("paper-"))
        with session_scope(self.engine) as session:
            order = session.get(PaperOrder, order_id)
            if order is None:
                return []
            answer = self._answer(order)
        return [Fill(order.amount, order.fill_price, answer.fees[0])]

    def _holdings(self) -> dict[str, float]:
        """Per base asset: what the paper fills left (buys net of fees taken in the base,
        minus sells). Summed by the database per market, side and fee currency, so the rows
        read are bounded by the markets traded, not by the orders ever filled."""
        held: dict[str, float] = {}
        with session_scope(self.engine) as session:
            rows = session.execute(select(
                PaperOrder.symbol, PaperOrder.side, PaperOrder.fee_currency,
                func.sum(PaperOrder.amount), func.sum(PaperOrder.fee)).where(
                PaperOrder.exchange_name == self.exchange_name).group_by(
                PaperOrder.symbol, PaperOrder.side, PaperOrder.fee_currency)).all()
        for symbol, side, fee_currency, amount, fee in rows:
            base = base_of(symbol)
            fee_in_base = float(fee or 0.0) if (fee_currency or "") == base else 0.0
            amount = float(amount or 0.0)
            change = amount - fee_in_base if side == "buy" else -amount
            held[base] = held.get(base, 0.0) + change
        return held

    def free_balance(self, asset: str) -> float:
        """A coin the paper account has traded as a base: what its fills left (net of fees);
        any other coin (the quote currencies) is unlimited. One aggregate over that coin's
        markets, so an exit's balance read does not grow with the whole order history."""
        side, amount, fee = PaperOrder.side, PaperOrder.amount, PaperOrder.fee
        with session_scope(self.engine) as session:
            rows = session.execute(select(side, func.sum(amount), func.sum(case(
                (PaperOrder.fee_currency == asset, fee), else_=0.0))).where(
                PaperOrder.exchange_name == self.exchange_name,
                PaperOrder.symbol.startswith(f"{asset}/", autoescape=True))  # type: ignore
                .group_by(side)).all()
        if not rows:
            if self.quote_balance is None:
                return PAPER_QUOTE_BALANCE
            return self._free_quote(asset)
        held = 0.0
        for order_side, total, fees in rows:
            held += (total or 0.0) - (fees or 0.0) if order_side == "buy" else -(total or 0.0)
        return max(0.0, held)

    def _free_quote(self, asset: str) -> float:
        """`quote_balance` plus the sells' proceeds (net of fees taken in `asset`) minus the
        buys' cost over the markets quoted in `asset`."""
        notional = PaperOrder.amount * PaperOrder.fill_price
        fee = case((PaperOrder.fee_currency == asset, PaperOrder.fee), else_=0.0)
        flow = case((PaperOrder.side == "sell", notional), else_=-notional) - fee
        quoted = PaperOrder.symbol.endswith(f"/{asset}", autoescape=True) | \
            PaperOrder.symbol.contains(f"/{asset}:", autoescape=True)  # type: ignore
        with session_scope(self.engine) as session:
            total = session.execute(select(func.sum(flow)).where(
                PaperOrder.exchange_name == self.exchange_name, quoted)).scalar()
        assert self.quote_balance is not None
        return max(0.0, self.quote_balance + float(total or 0.0))

    def balances(self) -> dict[str, tuple[float, float]]:
        return {asset: (max(0.0, amount), max(0.0, amount))
                for asset, amount in self._holdings().items()}


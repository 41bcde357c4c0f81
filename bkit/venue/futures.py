"""The USDⓈ-M futures account: one USDT wallet, positions with leverage and margin, fills,
conditional (algo) orders, liquidation and funding. Endpoints live in `bkit.venue.fapi`.

Model (Binance's rules, simplified where said):
- wallet balance = deposits + realised PnL - commissions + funding (+ insurance clear); the
  margin of a position (notional / leverage at entry, released pro rata on reduce) stays part of
  the wallet; available = wallet - position margins - open-order margins + unrealised PnL of
  cross positions (negative only).
- fills in USDT: commission = price x qty x rate (taker 0.04 %, maker 0.02 % by default); entry
  price averaged on increase; realised PnL = (price - entry) x qty x direction on reduce.
- reduce-only (one-way mode) refused with -2022 when it would increase or flip the position;
  in hedge mode the position side decides (`reduceOnly` must not be sent, -1106).
- liquidation when the mark price (the venue's price: override, else the last closed 1m close,
  and any closed candle's wick since) crosses the liquidation price, computed from the margin
  M (isolated wallet; for cross, the wallet less the other positions' margins) and the
  maintenance rate r: long (q·E - M) / (q·(1 - r)), short (q·E + M) / (q·(1 + r)). The position
  closes at that price with an order `autoclose-<ms>` (LIMIT IOC, FILLED); the margin is lost
  (REALIZED_PNL at that price, INSURANCE_CLEAR for what margin remained).
- funding at 00:00, 08:00 and 16:00 UTC of venue time: -amount x mark x rate to the wallet,
  listed as FUNDING_FEE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from bkit.venue.accounts import dec
from bkit.venue.errors import VenueError
from bkit.venue.futures_model import (
    FuturesOrder,
    FuturesSpec,
    FuturesTrade,
    Income,
    Position,
)
from bkit.venue.prices import PriceBook
from bkit.venue.stops import scan

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
ORDER_TYPES = ("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
               "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
ALGO_ONLY = "Order type not supported for this endpoint. Please use the Algo Order API " \
            "endpoints instead."


def reduce_only_rejected() -> VenueError:
    return VenueError(400, -2022, "ReduceOnly Order is rejected.")


def flag(params: Mapping[str, str], name: str) -> bool:
    return str(params.get(name, "false")).lower() == "true"


def decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        raise VenueError.bad_param(name) from None
    if not value.is_finite() or value <= 0:
        raise VenueError.bad_param(name)
    return value


@dataclass(slots=True)
class SymbolSettings:
    leverage: int = 20
    margin_type: str = "CROSSED"  # Binance's default


class FuturesEngine:
    """One USDⓈ-M futures account. Not thread-safe: `Venue` calls it under its lock."""

    def __init__(self, markets: Iterable[FuturesSpec], wallet: Decimal,
                 clock: Callable[[], int], spot_prices: PriceBook) -> None:
        self.markets: dict[str, FuturesSpec] = {m.market_id: m for m in markets}
        self.wallet_balance = wallet
        self.clock = clock
        self.prices = PriceBook()
        self.spot_prices = spot_prices
        self.settings: dict[str, SymbolSettings] = {m: SymbolSettings() for m in self.markets}
        self.hedge_mode = False
        self.positions: dict[tuple[str, str], Position] = {}
        self.orders: list[FuturesOrder] = []
        self.trades: list[FuturesTrade] = []
        self.incomes: list[Income] = []
        self.taker_fee, self.maker_fee = Decimal("0.0004"), Decimal("0.0002")
        self.maintenance_rate = Decimal("0.004")
        self.funding_rates: dict[str, Decimal] = {}
        self.last_funding_ms: int | None = None
        self.checked_ms: int | None = None
        self.slippage = Decimal(0)
        self.lookup_lag = 0.0

    # prices and helpers ------------------------------------------------------------------------
    def spec(self, symbol: str | None) -> FuturesSpec:
        key = (symbol or "").split(":")[0].replace("/", "").upper()
        spec = self.markets.get(key)
        if spec is None:
            raise VenueError.bad_symbol()
        return spec

    def mark(self, market_id: str) -> Decimal | None:
        """The futures price: its own override/candles, else the spot market of the same id."""
        now = self.clock()
        own = self.prices.current(market_id, now)
        return own if own is not None else self.spot_prices.current(market_id, now)

    def _candles(self, market_id: str, since: int | None) -> list[Any]:
        own = self.prices.closed(market_id, self.clock(), since)
        return own or self.spot_prices.closed(market_id, self.clock(), since)

    def position(self, market_id: str, side: str) -> Position:
        return self.positions.setdefault((market_id, side), Position(market_id, side))

    def fee_rate(self, maker: bool) -> Decimal:
        return self.maker_fee if maker else self.taker_fee

    def unrealized(self, pos: Position) -> Decimal:
        mark = self.mark(pos.market_id)
        return Decimal(0) if mark is None or not pos.amount else (mark - pos.entry) * pos.amount

    def is_isolated(self, market_id: str) -> bool:
        return self.settings[market_id].margin_type == "ISOLATED"

    def order_margin(self) -> Decimal:
        total = Decimal(0)
        for o in self.orders:
            if o.is_open and not o.algo and not o.reduce_only and o.price is not None:
                total += o.price * (o.quantity - o.executed_qty) / self.settings[
                    o.market_id].leverage
        return total

    def available(self) -> Decimal:
        margins = sum((p.margin for p in self.positions.values()), Decimal(0))
        cross_loss = sum((min(Decimal(0), self.unrealized(p)) for p in self.positions.values()
                          if not self.is_isolated(p.market_id)), Decimal(0))
        return self.wallet_balance - margins - self.order_margin() + cross_loss

    def liquidation_price(self, pos: Position) -> Decimal | None:
        if not pos.amount:
            return None
        qty, rate = abs(pos.amount), self.maintenance_rate
        margin = pos.margin if self.is_isolated(pos.market_id) else (
            self.wallet_balance - sum((p.margin for p in self.positions.values()
                                       if p is not pos), Decimal(0)))
        if pos.amount > 0:
            price = (qty * pos.entry - margin) / (qty * (1 - rate))
        else:
            price = (qty * pos.entry + margin) / (qty * (1 + rate))
        return max(price, Decimal(0)).quantize(Decimal("0.00000001"))

    def _income(self, market_id: str, kind: str, amount: Decimal, when: int,
                trade_id: str = "") -> None:
        if amount:
            self.incomes.append(Income(len(self.incomes) + 1, market_id, kind, amount, when,
                                       trade_id))

    def _side_for(self, order_side: str, position_side: str) -> str:
        if not self.hedge_mode:
            return "BOTH"
        return position_side

    # execution ---------------------------------------------------------------------------------
    def check_reduce(self, side: str, position_side: str, market_id: str, qty: Decimal,
                     reduce_only: bool) -> None:
        """-2022 when a reducing order would increase or flip its position."""
        closing = reduce_only or (self.hedge_mode and (
            (position_side == "LONG" and side == "SELL")
            or (position_side == "SHORT" and side == "BUY")))
        if not closing:
            return
        pos = self.position(market_id, self._side_for(side, position_side))
        direction = 1 if side == "BUY" else -1
        if not pos.amount or pos.amount * direction > 0 or qty > abs(pos.amount):
            raise reduce_only_rejected()

    def execute(self, order: FuturesOrder, price: Decimal, qty: Decimal, maker: bool) -> None:
        """Fill `qty` of `order` at `price`: move the position, the margin and the wallet."""
        now = self.clock()
        pos = self.position(order.market_id, self._side_for(order.side, order.position_side))
        leverage = self.settings[order.market_id].leverage
        signed = qty if order.side == "BUY" else -qty
        commission = (price * qty * self.fee_rate(maker)).quantize(Decimal("0.00000001"))
        pnl = Decimal(0)
        if pos.amount and pos.amount * signed < 0:  # reduce (and maybe flip, one-way only)
            closed = min(qty, abs(pos.amount))
            direction = 1 if pos.amount > 0 else -1
            pnl = ((price - pos.entry) * closed * direction).quantize(Decimal("0.00000001"))
            pos.margin -= pos.margin * closed / abs(pos.amount)
            pos.amount += closed if pos.amount < 0 else -closed
            rest = qty - closed
            if not pos.amount:
                pos.entry, pos.margin = Decimal(0), Decimal(0)
            if rest:
                pos.amount, pos.entry = rest * (1 if signed > 0 else -1), price
                pos.margin = rest * price / leverage
        else:
            total = abs(pos.amount) + qty
            pos.entry = (abs(pos.amount) * pos.entry + qty * price) / total
            pos.amount += signed
            pos.margin += qty * price / leverage
        pos.update_ms = now
        self.wallet_balance += pnl - commission
        trade = FuturesTrade(len(self.trades) + 1, order.order_id, order.market_id, order.side,
                             pos.side, price, qty, pnl, commission, now, maker)
        self.trades.append(trade)
        order.trades.append(trade)
        self._income(order.market_id, "REALIZED_PNL", pnl, now, str(trade.trade_id))
        self._income(order.market_id, "COMMISSION", -commission, now, str(trade.trade_id))
        order.executed_qty += qty
        order.cum_quote += price * qty
        order.update_ms = now
        order.status = "FILLED" if order.executed_qty >= order.quantity else "PARTIALLY_FILLED"

    def taker(self, spec: FuturesSpec, side: str, price: Decimal) -> Decimal:
        tick = Decimal(spec.tick_size)
        if side == "BUY":
            return (price * (1 + self.slippage) / tick).to_integral_value(ROUND_CEILING) * tick
        return (price * (1 - self.slippage) / tick).to_integral_value(ROUND_FLOOR) * tick

    def require_margin(self, spec: FuturesSpec, order_side: str, position_side: str,
                       qty: Decimal, price: Decimal, reduce_only: bool) -> None:
        """-2019 when the increasing part of an order needs more margin than is available."""
        if reduce_only:
            return
        pos = self.position(spec.market_id, self._side_for(order_side, position_side))
        signed = qty if order_side == "BUY" else -qty
        increase = qty if pos.amount * signed >= 0 else max(Decimal(0), qty - abs(pos.amount))
        need = increase * price / self.settings[spec.market_id].leverage + (
            qty * price * self.taker_fee)
        if increase and need > self.available():
            raise VenueError(400, -2019, "Margin is insufficient.")

    # matching ----------------------------------------------------------------------------------
    def match(self) -> None:
        """Funding, triggered algo orders, crossed limit orders, then liquidations."""
        now = self.clock()
        self._fund(now)
        for order in list(self.orders):
            if not order.is_open:
                continue
            candles = self._candles(order.market_id, order.checked_ms)
            mark = self.mark(order.market_id)
            if order.algo:
                assert order.stop_price is not None
                hit = scan(order.type, order.side, order.stop_price, candles, mark)
                if hit is not None:
                    self._trigger(order, hit.price)
            elif order.price is not None and self._crossed(order, mark, candles):
                self.execute(order, order.price, order.quantity - order.executed_qty, True)
            if candles:
                order.checked_ms = max(order.checked_ms, candles[-1].timestamp + 1)
        self._liquidate(now)

    @staticmethod
    def _crossed(order: FuturesOrder, mark: Decimal | None, candles: list[Any]) -> bool:
        limit = order.price
        assert limit is not None
        if order.side == "BUY":
            return (mark is not None and mark <= limit) or any(
                Decimal(repr(c.low)) <= limit for c in candles)
        return (mark is not None and mark >= limit) or any(
            Decimal(repr(c.high)) >= limit for c in candles)

    def _trigger(self, algo: FuturesOrder, price: Decimal) -> None:
        """A conditional order fires: a MARKET order under the same client id takes at `price`;
        a reduce-only / closePosition one with nothing left to reduce EXPIRES instead."""
        now = self.clock()
        spec = self.markets[algo.market_id]
        algo.trigger_ms, algo.update_ms = now, now
        pos = self.position(algo.market_id, self._side_for(algo.side, algo.position_side))
        qty = abs(pos.amount) if algo.close_position else algo.quantity
        try:
            # In hedge mode a SELL of the LONG side (a BUY of the SHORT side) only ever closes
            # that side, reduce-only flag or not: check_reduce knows both cases.
            self.check_reduce(algo.side, algo.position_side, algo.market_id, qty,
                              algo.close_position or algo.reduce_only)
            if qty <= 0:
                raise reduce_only_rejected()
        except VenueError:
            algo.status = "EXPIRED"
            return
        market = FuturesOrder(len(self.orders) + 1, algo.client_order_id, algo.market_id,
                              algo.side, "MARKET", qty, None, now, time.monotonic(),
                              algo.position_side, algo.reduce_only or algo.close_position,
                              algo.close_position, update_ms=now)
        self.orders.append(market)
        self.execute(market, self.taker(spec, algo.side, price), qty, False)
        algo.actual_order_id = market.order_id
        algo.status = "FINISHED"

    def _liquidate(self, now: int) -> None:
        for pos in list(self.positions.values()):
            price = self.liquidation_price(pos)
            mark = self.mark(pos.market_id)
            if price is None or mark is None:
                continue
            candles = self._candles(pos.market_id, self.checked_ms)
            lows = [Decimal(repr(c.low)) for c in candles] + [mark]
            highs = [Decimal(repr(c.high)) for c in candles] + [mark]
            if (pos.amount > 0 and min(lows) <= price) or (pos.amount < 0 and max(highs) >= price):
                self._close_by_liquidation(pos, price, now)
        self.checked_ms = now - 60_000 + 1

    def _close_by_liquidation(self, pos: Position, price: Decimal, now: int) -> None:
        spec = self.markets[pos.market_id]
        tick = Decimal(spec.tick_size)
        price = (price / tick).to_integral_value() * tick
        qty = abs(pos.amount)
        margin = pos.margin if self.is_isolated(pos.market_id) else Decimal(0)
        side = "SELL" if pos.amount > 0 else "BUY"
        order = FuturesOrder(len(self.orders) + 1, f"autoclose-{now}", pos.market_id, side,
                             "LIMIT", qty, price, now, time.monotonic(),
                             pos.side if self.hedge_mode else "BOTH", reduce_only=True,
                             time_in_force="IOC", update_ms=now)
        self.orders.append(order)
        direction = 1 if pos.amount > 0 else -1
        pnl = ((price - pos.entry) * qty * direction).quantize(Decimal("0.00000001"))
        trade = FuturesTrade(len(self.trades) + 1, order.order_id, pos.market_id, side, pos.side,
                             price, qty, pnl, Decimal(0), now, False)
        self.trades.append(trade)
        order.trades.append(trade)
        order.executed_qty, order.cum_quote, order.status = qty, price * qty, "FILLED"
        self.wallet_balance += pnl
        self._income(pos.market_id, "REALIZED_PNL", pnl, now, str(trade.trade_id))
        if margin + pnl > 0:
            self.wallet_balance -= margin + pnl
            self._income(pos.market_id, "INSURANCE_CLEAR", -(margin + pnl), now)
        pos.amount, pos.entry, pos.margin, pos.update_ms = Decimal(0), Decimal(0), Decimal(0), now
        for o in self.orders:  # Binance cancels the symbol's open orders at liquidation
            if o.is_open and o.market_id == pos.market_id and o.reduce_only:
                o.status, o.update_ms = ("EXPIRED" if o.algo else "CANCELED"), now

    def next_funding_ms(self, now: int) -> int:
        return (now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS

    def _fund(self, now: int) -> None:
        if self.last_funding_ms is None:
            self.last_funding_ms = now
            return
        boundary = self.next_funding_ms(self.last_funding_ms)
        while boundary <= now:
            for pos in self.positions.values():
                mark = self.mark(pos.market_id)
                rate = self.funding_rates.get(pos.market_id, Decimal("0.0001"))
                if pos.amount and mark is not None:
                    fee = (-pos.amount * mark * rate).quantize(Decimal("0.00000001"))
                    self.wallet_balance += fee
                    self._income(pos.market_id, "FUNDING_FEE", fee, boundary)
            boundary += FUNDING_INTERVAL_MS
        self.last_funding_ms = now

    # Python API helpers ------------------------------------------------------------------------
    def set_wallet(self, amount: Any) -> None:
        self.wallet_balance = dec(amount)

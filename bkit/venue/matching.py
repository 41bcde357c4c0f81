"""Fills: how an order's execution moves balances, charges fees and records trades.

`apply_fill` is the one place money moves: it spends from what the order locked, credits what
was received net of the commission (per the fee rule) and appends a `VenueTrade`. `finish`
releases whatever an order still holds when it leaves the book. `crossed` says whether a resting
limit order has been reached by the price (the current price or any candle since it rested).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bkit.core.candles import Candle
from bkit.venue.accounts import Accounts, FeeRule, quantize
from bkit.venue.markets import MarketSpec
from bkit.venue.orders import VenueOrder, VenueTrade


def taker_price(spec: MarketSpec, side: str, price: Decimal, slippage: Decimal,
                limit: Decimal | None = None) -> Decimal:
    """`price` moved by `slippage` against the taker, on the tick grid, never past `limit`."""
    tick = Decimal(spec.tick_size)
    if side == "BUY":
        moved = (price * (1 + slippage) / tick).to_integral_value(ROUND_CEILING) * tick
        return moved if limit is None else min(moved, limit)
    moved = (price * (1 - slippage) / tick).to_integral_value(ROUND_FLOOR) * tick
    return moved if limit is None else max(moved, limit)


def buy_reserve(fees: FeeRule, notional: Decimal) -> Decimal:
    """Quote a buy of `notional` must lock: the notional, plus the fee under the quote rule."""
    cost = quantize(notional, ROUND_CEILING)
    return cost + quantize(cost * fees.rate, ROUND_CEILING) if fees.quote_fee_on_buy() else cost


def apply_fill(order: VenueOrder, spec: MarketSpec, accounts: Accounts, fees: FeeRule,
               price: Decimal, qty: Decimal, now_ms: int, is_maker: bool,
               trade_id: int) -> VenueTrade:
    """Execute `qty` of `order` at `price`: move balances, charge the fee, record the trade."""
    quote_qty = quantize(price * qty)
    commission, asset = fees.commission(order.side, spec.base, spec.quote, qty, quote_qty,
                                        accounts.get_free(fees.asset))
    if order.side == "BUY":
        spend = quote_qty + (commission if asset == spec.quote else Decimal(0))
        _spend(order, accounts, spend)
        accounts.credit(spec.base, qty - (commission if asset == spec.base else Decimal(0)))
    else:
        _spend(order, accounts, qty)
        accounts.credit(spec.quote, quote_qty - (commission if asset == spec.quote else 0))
    if asset not in (spec.base, spec.quote):
        accounts.debit_free(asset, commission)
    trade = VenueTrade(trade_id, order.order_id, order.market_id, order.side, price, qty,
                       quote_qty, commission, asset, now_ms, is_maker)
    order.trades.append(trade)
    order.executed_qty += qty
    order.cumm_quote += quote_qty
    order.update_ms = now_ms
    order.status = "FILLED" if order.executed_qty >= order.quantity else "PARTIALLY_FILLED"
    if order.status == "FILLED":
        finish(order, accounts, "FILLED", now_ms)
    return trade


def _spend(order: VenueOrder, accounts: Accounts, amount: Decimal) -> None:
    """Take `amount` from the order's lock; any excess over the lock comes from free."""
    from_lock = min(amount, order.locked)
    accounts.spend_locked(order.locked_asset, from_lock)
    order.locked -= from_lock
    if amount > from_lock:
        accounts.debit_free(order.locked_asset, amount - from_lock)


def finish(order: VenueOrder, accounts: Accounts, status: str, now_ms: int) -> None:
    """Take `order` off the book with `status`, releasing what it still holds."""
    accounts.release(order.locked_asset, order.locked)
    order.locked = Decimal(0)
    order.status = status
    order.update_ms = now_ms


def crossed(order: VenueOrder, current: Decimal | None, candles: Sequence[Candle]) -> bool:
    """Whether a resting limit order was reached: by `current` or by a candle's low / high."""
    limit = order.price
    if limit is None:
        return False
    if order.side == "BUY":
        return (current is not None and current <= limit) or any(
            Decimal(repr(c.low)) <= limit for c in candles)
    return (current is not None and current >= limit) or any(
        Decimal(repr(c.high)) >= limit for c in candles)

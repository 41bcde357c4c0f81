"""Stop orders: when a resting stop triggers, and at what price the market was when it did.

Spot `STOP_LOSS_LIMIT` / `TAKE_PROFIT_LIMIT` and futures `STOP_MARKET` / `TAKE_PROFIT_MARKET`
rest untriggered until the venue's price reaches the stop: the current price (override, or the
last closed 1m close) or any 1m candle closed since the order was last checked (its low for a
falling trigger, its high for a rising one). Binance's direction rule: a stop-loss sell and a
take-profit buy trigger on a fall (price <= stop), a stop-loss buy and a take-profit sell on a
rise (price >= stop). A stop whose condition already holds at placement is refused (spot -2010
"Stop price would trigger immediately.", futures -2021 "Order would immediately trigger.").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from bkit.core.candles import Candle

#: Spot stop order types the venue implements (the limit kinds: they can reserve exactly).
SPOT_STOP_TYPES = ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
#: Futures conditional order types the venue implements.
FUTURES_STOP_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
STOP_IMMEDIATE_SPOT = "Stop price would trigger immediately."
STOP_IMMEDIATE_FUTURES = "Order would immediately trigger."


def falls_to_trigger(order_type: str, side: str) -> bool:
    """True when the stop triggers on a fall (price <= stop), False on a rise."""
    stop_loss = order_type.startswith("STOP")
    return stop_loss == (side == "SELL")


def reached(order_type: str, side: str, stop: Decimal, price: Decimal) -> bool:
    return price <= stop if falls_to_trigger(order_type, side) else price >= stop


@dataclass(frozen=True, slots=True)
class Trigger:
    """Where a stop triggered: the market price at that moment and the candle (if any)."""

    price: Decimal
    candle_ms: int | None


def scan(order_type: str, side: str, stop: Decimal, candles: Sequence[Candle],
         current: Decimal | None) -> Trigger | None:
    """The first trigger among `candles` (oldest first), else by `current`; None if neither.

    A candle that reaches the stop triggers at the stop, or at its open when it opened past the
    stop already (a gap): that is the price the market traded at when the stop went off.
    """
    falling = falls_to_trigger(order_type, side)
    for c in candles:
        low, high, open_ = (Decimal(repr(c.low)), Decimal(repr(c.high)),
                            Decimal(repr(c.open)))
        if falling and low <= stop:
            return Trigger(min(open_, stop), c.timestamp)
        if not falling and high >= stop:
            return Trigger(max(open_, stop), c.timestamp)
    if current is not None and reached(order_type, side, stop, current):
        return Trigger(current, None)
    return None


def marketable(side: str, limit: Decimal, price: Decimal) -> bool:
    """Whether a limit order at `limit` takes at market `price`."""
    return price <= limit if side == "BUY" else price >= limit

"""The broker protocol: how order intents reach an exchange (SPEC §8, DESIGN "Orders").

A broker raises the exchange error classes of `bkit.exchange.errors`:
`TransientExchangeError` (outcome unknown: look the order up before re-sending),
`DefinitiveExchangeError` (the venue said no; kind "duplicate_order" means an earlier attempt
landed), `OrderNotFoundError` from `lookup` is returned as None instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PlacedOrder:
    """An order as the venue reports it. `status`: open | filled | partial | canceled |
    rejected. Amounts in base units, prices in quote units."""

    client_order_id: str
    exchange_order_id: str
    status: str
    amount: float | None
    filled_amount: float
    average_price: float | None

    @property
    def is_filled(self) -> bool:
        return self.status == "filled"


@dataclass(frozen=True)
class OrderPlan:
    """What to send for an intent: amount at the venue's precision, or why it cannot go."""

    amount: float | None
    problem: str | None = None


class OrderBroker(Protocol):
    """Sends and looks up orders for one exchange."""

    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        """The entry amount for `cost` (USD/quote) at `price`, checked against the market's
        precision and limits before any intent is queued."""
        ...

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> PlacedOrder:
        """Send one order under `client_order_id` (never retried here). `kind` is "open"
        (an entry, which a broker may send as a limit at `price`) or "close" (always at
        market: an exit must not rest below a stop-loss)."""
        ...

    def cancel(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        """Cancel a resting order; its final state (with any partial fill), or None."""
        ...

    def lookup(self, symbol: str, client_order_id: str) -> PlacedOrder | None:
        """The order placed under `client_order_id`, or None when the venue has none."""
        ...

    def open_orders(self, symbol: str) -> list[PlacedOrder]:
        """Every open order on `symbol` (reconciliation)."""
        ...


def plain_amount(cost: float, price: float) -> float:
    """Base amount bought by `cost` (quote units) at `price`."""
    if not (math.isfinite(cost) and math.isfinite(price) and cost > 0 and price > 0):
        raise ValueError(f"cost and price must be finite and > 0, got {cost!r}, {price!r}")
    return cost / price

"""The broker protocol: how order intents reach an exchange (SPEC §8, DESIGN "Orders").

A broker raises the exchange error classes of `bkit.exchange.errors`:
`TransientExchangeError` (outcome unknown: look the order up before re-sending),
`DefinitiveExchangeError` (the venue said no; kind "duplicate_order" means an order with that
client id is open). `lookup` returns None when the venue says it has no such order (which,
for a while after a send, proves nothing: see the settle window in `bkit.orders`).
Answers are `bkit.core.orders.VenueOrder`: evidence, with `status` None when the venue gave
none (an ACK answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from bkit.core.orders import Fill, MarketRules, VenueOrder

#: The name older code and tests know the venue's answer by.
PlacedOrder = VenueOrder


@dataclass(frozen=True)
class OrderPlan:
    """What to send for an intent: amount at the venue's precision, or why it cannot go."""

    amount: float | None
    problem: str | None = None


class OrderBroker(Protocol):
    """Sends, looks up and cancels orders for one exchange; reads its balances."""

    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        """The entry amount for `cost` (quote units) at `price`, checked against the
        market's precision and limits before any intent is queued."""
        ...

    def rules(self, symbol: str) -> MarketRules:
        """Base/quote, step size, minimum amount and notional of `symbol`."""
        ...

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> VenueOrder:
        """Send one order under `client_order_id` (never retried here). `kind` is "open"
        (an entry, which a broker may send as a limit at `price`) or "close" (always at
        market: an exit must not rest below a stop-loss)."""
        ...

    def cancel(self, symbol: str, client_order_id: str) -> None:
        """Ask the venue to cancel a resting order. Not found is not an error (it may have
        filled); its final state is read with `lookup` afterwards."""
        ...

    def lookup(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        """The (newest) order placed under `client_order_id`, or None when the venue says it
        has none."""
        ...

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        """Every open order on `symbol` (reconciliation, the settle window)."""
        ...

    def fills(self, symbol: str, exchange_order_id: str) -> list[Fill]:
        """The trades of one order, with their fees (answers without fees need them)."""
        ...

    def free_balance(self, asset: str) -> float:
        """What the account can spend or sell of `asset` now."""
        ...

    def balances(self) -> dict[str, tuple[float, float]]:
        """Every asset's (free, total) in the account (reconciliation)."""
        ...


class StopBroker(Protocol):
    """A broker that can put a protective stop on the venue (SPEC §10)."""

    def supports_stops(self, symbol: str) -> bool:
        ...

    def place_stop(self, symbol: str, side: str, amount: float, stop_price: float,
                   limit_price: float, client_order_id: str) -> VenueOrder:
        ...


def stop_broker(broker: OrderBroker | None, symbol: str) -> StopBroker | None:
    """`broker` as a `StopBroker` when it can protect `symbol` on the venue, else None."""
    supports = getattr(broker, "supports_stops", None)
    if broker is None or not callable(supports) or not callable(getattr(broker, "place_stop",
                                                                         None)):
        return None
    try:
        return broker if supports(symbol) else None  # type: ignore[return-value]
    except Exception:
        return None


def plain_amount(cost: float, price: float) -> float:
    """Base amount bought by `cost` (quote units) at `price`."""
    if not (math.isfinite(cost) and math.isfinite(price) and cost > 0 and price > 0):
        raise ValueError(f"cost and price must be finite and > 0, got {cost!r}, {price!r}")
    return cost / price

"""The end-of-run money check against the venue model (issue 11 D): what the venue's
account holds must be exactly the initial balances plus every fill bkit recorded.

`venue_problems` lists every disagreement between bkit's database and a `bkit.venue.Venue`:
1. per asset, the venue's total = initial + Σ recorded fills (buys net of base-asset fees,
   sells, quote costs and quote fees), to the step size;
2. no open order on the venue that bkit does not know as in flight;
3. no position bkit believes open that the venue does not hold;
4. no order placed twice for one intent.
Used by the money-path tests, the crash matrix and the soak.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from bkit.core.orders import base_of, quote_of
from bkit.store.engine import session_scope
from bkit.store.tables import OrderIntent, SignalRecord

#: Intent statuses the orders worker still acts on (a resting stop is `open`).
IN_FLIGHT = ("pending", "unknown", "open", "sending", "acked")


def _d(value: float | None) -> Decimal:
    return Decimal(repr(value or 0.0))


def expected_balances(intents: list[OrderIntent], initial: Mapping[str, Any]
                      ) -> dict[str, Decimal]:
    """Initial balances moved by every fill recorded on the intents."""
    out = {asset: Decimal(str(amount)) for asset, amount in initial.items()}
    for intent in intents:
        if not intent.filled_amount:
            continue
        base, quote = base_of(intent.symbol), quote_of(intent.symbol)
        filled, cost = _d(intent.filled_amount), _d(intent.filled_cost)
        base_fee, quote_fee = _d(intent.base_fee), _d(intent.fees_paid_quote)
        out.setdefault(base, Decimal(0))
        out.setdefault(quote, Decimal(0))
        if intent.side == "buy":
            out[base] += filled - base_fee
            out[quote] -= cost + quote_fee
        else:
            out[base] -= filled + base_fee
            out[quote] += cost - quote_fee
    return out


def venue_problems(engine: Engine, venue: Any, initial: Mapping[str, Any], *,
                   tolerance: Mapping[str, Any] | None = None,
                   protected: bool = False) -> list[str]:
    """Every disagreement between bkit's database and the venue (empty: they agree).
    `tolerance` per asset (default: 1e-5 base units, 0.01 quote units). `protected`: also
    check that every open position has exactly one protective stop resting on the venue
    (one the venue refused, and that the tick watches instead, is reported as unprotected)."""
    with session_scope(engine) as session:
        intents = list(session.execute(select(OrderIntent)).scalars())
        held: dict[str, Decimal] = {}
        opened = []
        for row in session.execute(select(SignalRecord).where(
                SignalRecord.state.in_(["opened", "closing"]))).scalars():  # type: ignore
            if row.position == "long" and row.amount:
                held[base_of(row.symbol)] = held.get(base_of(row.symbol), Decimal(0)) + \
                    _d(row.amount)
            if row.state == "opened":
                opened.append((row.key_id, row.signal_id))
    problems = []
    totals = {asset: free + locked for asset, (free, locked) in venue.balances().items()}
    tolerance = tolerance or {}
    for asset, want in expected_balances(intents, initial).items():
        have = totals.get(asset, Decimal(0))
        allowed = Decimal(str(tolerance.get(asset, "0.01" if asset in ("USDT", "USD")
                                            else "0.00001")))
        if abs(have - want) > allowed:
            problems.append(f"{asset}: the venue holds {have}, bkit's fills say {want}")
    in_flight = {i.client_order_id for i in intents if i.status in IN_FLIGHT}
    for order in venue.open_orders():
        if order.client_order_id not in in_flight:
            problems.append(f"open order {order.client_order_id} on the venue is not in flight "
                            "in bkit")
    for asset, amount in held.items():
        if amount > totals.get(asset, Decimal(0)) + Decimal("0.00001"):
            problems.append(f"bkit believes it holds {amount} {asset}, the venue has "
                            f"{totals.get(asset, Decimal(0))}")
    if protected:
        resting = {o.client_order_id for o in venue.open_orders()}
        for key_id, signal_id in opened:
            stops = [i.client_order_id for i in intents if i.kind == "stop"
                     and i.key_id == key_id and i.signal_id == signal_id
                     and i.client_order_id in resting]
            if len(stops) != 1:
                problems.append(f"open position {signal_id} has {len(stops)} protective "
                                "orders on the venue")
    for intent in intents:
        placed = len(venue.orders_for(intent.client_order_id))
        if placed > 1:
            problems.append(f"intent {intent.id} ({intent.client_order_id}) has {placed} "
                            "orders on the venue")
    return problems

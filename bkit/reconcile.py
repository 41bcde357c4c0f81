"""Reconciliation runs (SPEC §8): at worker start and every `BKIT_RECONCILE_SECONDS`.

For each exchange with a broker: the venue's view first (balances, open orders of every
symbol bkit trades there), then the database's (open positions, intents), compared by
`bkit.core.reconciliation.compare`. A suspect order is read again from the database before
it is reported, so an intent committed between the two reads is never called an orphan.
Every difference is an error event (kind `reconcile`) and the count is kept for the
`bkit_reconcile_differences` metric. A stuck position whose asset the account no longer
holds is closed (the evidence of the asset gone); nothing is ever sold here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bkit import events
from bkit.core.candles import floor_to_minute
from bkit.core.machine import KeyContext
from bkit.core.order_outcomes import OrderFill, close_as_gone, record_liquidation
from bkit.core.orders import VenueOrder, base_of, quote_fees
from bkit.core.reconciliation import (
    AssetView,
    Difference,
    HeldPosition,
    asset_views,
    compare,
    compare_positions,
)
from bkit.core.results import Notice
from bkit.exchange.errors import ExchangeError
from bkit.orders import RETRYABLE, OrdersEnv
from bkit.store import signal_rows
from bkit.store.engine import session_scope
from bkit.store.event_log import event_as_dict, notice_event
from bkit.store.outcomes import store_outcome
from bkit.store.tables import BkitSetting, OrderIntent, SignalRecord, StrategySymbol

log = logging.getLogger("bkit.reconcile")
SETTING_KEY = "reconcile"
_ID_CHUNK = 500  # client ids per IN (…) list


@dataclass
class ExchangeView:
    """One exchange's comparison, for `bkit reconcile` and the events."""

    exchange_name: str
    assets: list[AssetView] = field(default_factory=list)
    open_orders: list[VenueOrder] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    closed_as_gone: list[str] = field(default_factory=list)
    error: str | None = None


def _held(session: object, exchange_name: str) -> list[HeldPosition]:
    rows = session.execute(select(SignalRecord).where(  # type: ignore[attr-defined]
        SignalRecord.exchange_name == exchange_name,
        SignalRecord.state.in_(["opened", "closing"]))).scalars()  # type: ignore[attr-defined]
    return [HeldPosition(r.key_id, r.signal_id, r.exchange_name, r.symbol, base_of(r.symbol),
                         float(r.amount or 0.0), bool(r.stuck))
            for r in rows if r.position == "long" and (r.amount or 0.0) > 0]


def _in_flight_ids(session: object, exchange_name: str) -> set[str]:
    """Client ids of the intents the orders worker still acts on (bounded by what is in
    flight and the resting stops, not by the order history)."""
    return set(session.execute(select(OrderIntent.client_order_id).where(  # type: ignore
        OrderIntent.exchange_name == exchange_name,
        OrderIntent.status.in_(RETRYABLE))).scalars())  # type: ignore[attr-defined]


def _final_ids(session: object, exchange_name: str, client_ids: set[str]) -> set[str]:
    """Those of `client_ids` whose intent has ended: only the ids asked about are read, so a
    run costs the venue's open orders, never every intent ever made (SPEC §13)."""
    found: set[str] = set()
    ids = sorted(client_ids)
    for first in range(0, len(ids), _ID_CHUNK):
        found.update(session.execute(select(OrderIntent.client_order_id).where(  # type: ignore
            OrderIntent.exchange_name == exchange_name,
            OrderIntent.client_order_id.in_(ids[first:first + _ID_CHUNK]),  # type: ignore
            OrderIntent.status.not_in(RETRYABLE))).scalars())  # type: ignore[attr-defined]
    return found


def _fills_left(session: object, exchange_name: str) -> dict[str, float]:
    """Per base asset: what bkit's own fills left in the account (buys net of base-asset
    fees − sells − the dust recorded on closed signals). Summed by the database per symbol
    and side: the rows read are bounded by the markets traded, not by the fills ever made."""
    left: dict[str, float] = {}
    filled = func.sum(OrderIntent.filled_amount)
    fees = func.sum(func.coalesce(OrderIntent.base_fee, 0.0))
    rows = session.execute(select(OrderIntent.symbol, OrderIntent.side, filled, fees)  # type: ignore
                           .where(OrderIntent.exchange_name == exchange_name,
                                  OrderIntent.filled_amount > 0)  # type: ignore[operator]
                           .group_by(OrderIntent.symbol, OrderIntent.side)).all()
    for symbol, side, amount, fee in rows:
        base = base_of(symbol)
        amount, fee = float(amount or 0.0), float(fee or 0.0)
        left[base] = left.get(base, 0.0) + (amount - fee if side == "buy" else -amount - fee)
    dust = session.execute(select(SignalRecord.symbol, func.sum(SignalRecord.dust))  # type: ignore
                           .where(SignalRecord.exchange_name == exchange_name,
                                  SignalRecord.state == "closed",
                                  SignalRecord.dust > 0)  # type: ignore[operator]
                           .group_by(SignalRecord.symbol)).all()
    for symbol, amount in dust:
        base = base_of(symbol)
        left[base] = left.get(base, 0.0) - float(amount or 0.0)
    return left


def _symbols(session: object, exchange_name: str) -> list[str]:
    keys = session.execute(select(StrategySymbol.symbol).where(  # type: ignore[attr-defined]
        StrategySymbol.exchange_name == exchange_name).distinct()).scalars()
    intents = session.execute(select(OrderIntent.symbol).where(  # type: ignore[attr-defined]
        OrderIntent.exchange_name == exchange_name).distinct()).scalars()
    return sorted(set(keys) | set(intents))


def exchange_names(env: OrdersEnv) -> list[str]:
    with session_scope(env.engine) as session:
        names = set(session.execute(select(StrategySymbol.exchange_name).distinct()).scalars())
    return sorted(names)


def compare_exchange(env: OrdersEnv, exchange_name: str) -> ExchangeView | None:
    """The comparison for one exchange (None: no broker for it). Reads the venue first."""
    broker = env.brokers(exchange_name)
    if broker is None:
        return None
    view = ExchangeView(exchange_name)
    with session_scope(env.engine) as session:
        symbols = _symbols(session, exchange_name)
    try:
        balances = broker.balances()
        orders: list[VenueOrder] = []
        for symbol in symbols:
            orders += broker.open_orders(symbol)
        steps = {}
        for symbol in symbols:
            rules = broker.rules(symbol)
            steps[rules.base] = max(steps.get(rules.base, 0.0), rules.amount_step or 0.0)
    except ExchangeError as exc:
        view.error = f"{type(exc).__name__}: {exc}"
        return view
    with session_scope(env.engine) as session:  # the database after the venue
        positions = _held(session, exchange_name)
        in_flight = _in_flight_ids(session, exchange_name)
        final = _final_ids(session, exchange_name,
                           {o.client_order_id for o in orders if o.client_order_id} - in_flight)
        left = _fills_left(session, exchange_name)
    positions_of = getattr(broker, "positions", None)
    futures = callable(positions_of)
    # Futures balances are margin, not the coins a position holds: positions are compared
    # as positions (_futures_positions), the balance rules apply to spot only.
    spot_positions = [] if futures else positions
    view.assets, view.open_orders = asset_views(balances, spot_positions), orders
    differences = compare(exchange_name, balances, spot_positions, orders, in_flight, final,
                          tolerance={a: s * 1.000001 for a, s in steps.items()},
                          fills_left=None if futures else left)
    suspects = {d.data["client_order_id"] for d in differences if "client_order_id" in d.data}
    if suspects:  # read them again: an intent may have committed since
        with session_scope(env.engine) as session:
            again = _in_flight_ids(session, exchange_name)
        differences = [d for d in differences if d.data.get("client_order_id") not in again]
    view.differences = differences
    if futures:  # compare positions, find liquidations
        _futures_positions(env, view, broker, positions_of, symbols)
    gone = {a.asset for a in view.assets if a.total <= steps.get(a.asset, 0.0)}
    for position in positions:
        if position.stuck and position.base in gone and \
                _close_gone(env, position, balances.get(position.base, (0.0, 0.0))[1]):
            view.closed_as_gone.append(position.signal_id)
    return view


def _futures_positions(env: OrdersEnv, view: ExchangeView, broker: Any,
                       positions_of: Any, symbols: list[str]) -> None:
    """Futures positions against the venue's (`compare_positions`: unknown sides, sizes
    apart). A position bkit believes open that the venue no longer has: a liquidation (the
    venue's `autoclose-` order) closes the signal with reason `liquidation`; anything else
    is a difference for an operator."""
    try:
        there = [p for p in positions_of() if p.symbol in symbols]
        steps = {s: broker.rules(s).amount_step or 0.0 for s in symbols}
    except ExchangeError as exc:
        view.error = f"{type(exc).__name__}: {exc}"
        return
    held_there = {(p.symbol, p.side) for p in there}
    venue: dict[tuple[str, str], float] = {}
    for p in there:
        venue[(p.symbol, p.side)] = venue.get((p.symbol, p.side), 0.0) + \
            p.contracts * p.contract_size
    with session_scope(env.engine) as session:
        rows = list(session.execute(select(SignalRecord).where(
            SignalRecord.exchange_name == view.exchange_name,
            SignalRecord.state.in_(["opened", "closing"]))).scalars())  # type: ignore
        busy = set(session.execute(select(OrderIntent.symbol).where(
            OrderIntent.exchange_name == view.exchange_name,
            OrderIntent.status.in_(RETRYABLE),  # type: ignore[attr-defined]
            OrderIntent.kind != "stop")).scalars())  # a resting stop is not in flight
    believed: dict[tuple[str, str], float] = {}
    for row in rows:
        side = (row.symbol, row.position)
        believed[side] = believed.get(side, 0.0) + float(row.amount or 0.0)
    view.differences += compare_positions(view.exchange_name, believed, venue, steps=steps,
                                          busy_symbols=busy)
    for row in rows:
        if (row.symbol, row.position) in held_there or not row.amount or row.pending_at is None:
            continue
        try:
            liquidations = broker.liquidations(row.symbol, int(row.pending_at.timestamp() * 1000))
        except ExchangeError as exc:
            view.error = f"{type(exc).__name__}: {exc}"
            continue
        if liquidations and _close_liquidated(env, row, liquidations[-1]):
            view.closed_as_gone.append(row.signal_id)
            continue
        view.differences.append(Difference(
            "position_missing", view.exchange_name,
            f"{view.exchange_name}: bkit's {row.position} position {row.signal_id} on "
            f"{row.symbol} is not on the venue", {"signal_id": row.signal_id,
                                                  "symbol": row.symbol}))


def _close_liquidated(env: OrdersEnv, row: SignalRecord, order: VenueOrder) -> bool:
    when = floor_to_minute(env.clock.now())
    now = datetime.now(UTC)
    fill = OrderFill(order.filled_amount, order.filled_cost,
                     fees_quote=quote_fees(order.fees, base_of(row.symbol), "USDT",
                                           order.average or 0.0),
                     fees_paid_quote=quote_fees([f for f in order.fees if f.currency == "USDT"],
                                                base_of(row.symbol), "USDT",
                                                order.average or 0.0))
    with session_scope(env.engine) as session:
        key = session.execute(select(StrategySymbol).where(StrategySymbol.id == row.key_id)
                              .with_for_update()).scalar_one()
        record = signal_rows.find_signal(session, row.key_id, row.signal_id, for_update=True)
        if record is None or record.state not in ("opened", "closing"):
            return False
        ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name)
        outcome = record_liquidation(ctx, signal_rows.to_core(record), fill, when,
                                     env.config(), finished=key.status == "draining")
        outcome.notices.append(Notice("exit", f"position {row.signal_id} on {row.symbol} was "
                                      "liquidated by the venue",
                                      {"signal_id": row.signal_id, "stage": "liquidation"}))
        added, _ = store_outcome(session, key, record, outcome, when, now, env.origin)
        dispatched = [event_as_dict(r) for r in added]
    events.dispatch(dispatched)
    return True


def _close_gone(env: OrdersEnv, position: HeldPosition, total: float) -> bool:
    when = floor_to_minute(env.clock.now())
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        key = session.execute(select(StrategySymbol).where(StrategySymbol.id == position.key_id)
                              .with_for_update()).scalar_one()
        record = signal_rows.find_signal(session, position.key_id, position.signal_id,
                                         for_update=True)
        if record is None or record.state != "closing" or not record.stuck:
            return False
        row = signal_rows.to_core(record)
        ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name)
        outcome = close_as_gone(ctx, row, when, env.config(),
                                f"reconciliation: the account holds {total:.10g} "
                                f"{position.base}, the position is gone",
                                finished=key.status == "draining")
        added, _ = store_outcome(session, key, record, outcome, when, now, env.origin)
        dispatched = [event_as_dict(r) for r in added]
    events.dispatch(dispatched)
    return True


def reconcile(env: OrdersEnv) -> list[ExchangeView]:
    """Compare every exchange, record each difference as an error event and the count for
    the metric. Returns the views (for `bkit reconcile`)."""
    views = [v for v in (compare_exchange(env, name) for name in exchange_names(env)) if v]
    when = floor_to_minute(env.clock.now())
    total = sum(len(v.differences) for v in views)
    with session_scope(env.engine) as session:
        records = []
        for view in views:
            for diff in view.differences:
                records.append(notice_event(None, Notice("error", diff.message, {
                    "stage": "reconcile", "difference": diff.kind, **diff.data}),
                    symbol=None, strategy_name=None, exchange_name=view.exchange_name,
                    when=when, origin=env.origin))
        session.add_all(records)
        setting = session.get(BkitSetting, SETTING_KEY) or BkitSetting(key=SETTING_KEY)
        setting.value = json.dumps({"checked_at": datetime.now(UTC).isoformat(),
                                    "differences": total,
                                    "errors": [v.exchange_name for v in views if v.error]})
        setting.updated_at = datetime.now(UTC)
        session.add(setting)
        session.flush()
        dispatched = [event_as_dict(r) for r in records]
    events.dispatch(dispatched)
    for view in views:
        if view.error:
            log.warning("reconcile %s: could not read the venue: %s", view.exchange_name,
                        view.error)
    return views


def last_differences(session: object) -> int | None:
    """The difference count of the last reconciliation (None: never ran)."""
    row = session.get(BkitSetting, SETTING_KEY)  # type: ignore[attr-defined]
    if row is None or not row.value:
        return None
    try:
        return int(json.loads(row.value).get("differences", 0))
    except (ValueError, AttributeError):
        return None

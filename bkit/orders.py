"""Sending order intents (the outbox) through a broker, exactly once per intent.

`submit_intent` is what the `orders` queue's task runs. It claims the intent with a short
send-lease (two copies never send at once), looks the order up by its client order id before
any re-send, and records the outcome in one transaction with the signal's transition:
confirmed → opened/closed; definitive rejection → rollback (entry) or retry (exit);
ambiguous → `unknown`, retried with backoff and jitter, never "rejected" without evidence.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, select, update

from bkit import events
from bkit.broker.base import OrderBroker, PlacedOrder
from bkit.clock import Clock
from bkit.core.candles import floor_to_minute
from bkit.core.config import Config
from bkit.core.machine import KeyContext, TickOutcome
from bkit.core.order_outcomes import confirm_close, confirm_open, reject_close, reject_open
from bkit.core.registry import REGISTRY, get_config
from bkit.core.results import Notice
from bkit.exchange.errors import DefinitiveExchangeError, ExchangeError, TransientExchangeError
from bkit.faults import crash_point
from bkit.store import signal_rows
from bkit.store.engine import session_scope
from bkit.store.event_log import event_as_dict
from bkit.store.keys import is_halted
from bkit.store.outcomes import store_outcome
from bkit.store.tables import OrderIntent, StrategySymbol

log = logging.getLogger("bkit.orders")
RETRYABLE = ("pending", "sending", "unknown", "acked")


@dataclass
class OrdersEnv:
    engine: Engine
    clock: Clock
    brokers: Callable[[str], OrderBroker | None]
    enqueue: Callable[[int, float], None]  # (intent id, countdown seconds)
    config: Callable[[], Config] = get_config
    send_lease_seconds: float = 45.0
    #: A resting entry (limit) not filled after this long (wall s) is cancelled and rolled
    #: back, keeping any partial fill.
    entry_timeout_seconds: float = 7200.0
    backoff_ceiling_seconds: float = 60.0
    rate_limit_backoff_seconds: float = 30.0

    @property
    def origin(self) -> str:
        return events.process_origin()


def backoff_seconds(attempt: int, *, rate_limited: bool = False,
                    retry_after: float | None = None, ceiling_s: float = 60.0,
                    rate_limit_s: float = 30.0) -> float:
    """Exponential backoff with jitter: between half and all of 2^attempt s (capped at
    `ceiling_s`), at least 1 s; a rate limit waits at least `rate_limit_s` or what the venue
    asked (`retry_after`)."""
    ceiling = min(ceiling_s, 2.0 ** max(1, attempt))
    delay = max(1.0, random.uniform(ceiling / 2, ceiling))
    if rate_limited:
        delay = max(delay, rate_limit_s, retry_after or 0.0)
    return delay


def _claim(env: OrdersEnv, intent_id: int) -> OrderIntent | None:
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        return session.execute(
            update(OrderIntent)
            .where(OrderIntent.id == intent_id, OrderIntent.status.in_(RETRYABLE),  # type: ignore
                   or_(OrderIntent.sending_until.is_(None),  # type: ignore[union-attr]
                       OrderIntent.sending_until < now))  # type: ignore[operator]
            .values(status="sending", attempts=OrderIntent.attempts + 1,
                    sending_until=now + timedelta(seconds=env.send_lease_seconds),
                    updated_at=now)
            .returning(OrderIntent).execution_options(synchronize_session=False)
        ).scalars().first()


def _release(env: OrdersEnv, intent: OrderIntent, status: str, *, delay: float | None = None,
             error: str | None = None, **values: Any) -> None:
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        session.execute(update(OrderIntent).where(OrderIntent.id == intent.id).values(
            status=status, sending_until=None, updated_at=now,
            next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
            last_error=error if error is not None else intent.last_error, **values)
            .execution_options(synchronize_session=False))


def submit_intent(env: OrdersEnv, intent_id: int) -> str:
    """Send (or resolve) one intent. Returns what happened, for logs and tests."""
    previous_status = _status(env, intent_id)
    intent = _claim(env, intent_id)
    if intent is None:
        return "skipped"
    with session_scope(env.engine) as session:
        halted = is_halted(session)
    if halted and intent.kind == "open" and previous_status != "acked" and intent.attempts == 1:
        _release(env, intent, "pending", delay=30, attempts=0)
        return "halted"  # the kill switch holds new entries in the outbox; exits still go
    broker = env.brokers(intent.exchange_name)
    if broker is None:
        _release(env, intent, "unknown", delay=60,
                 error=f"no broker configured for exchange {intent.exchange_name!r}")
        return "no_broker"
    try:
        placed = None
        if intent.attempts > 1 or previous_status == "acked":
            placed = broker.lookup(intent.symbol, intent.client_order_id)  # before any re-send
            if placed is None and previous_status == "acked":
                raise TransientExchangeError("acknowledged order not visible yet")
            if placed is not None and placed.status in ("open", "partial") and \
                    _entry_expired(env, intent):
                placed = broker.cancel(intent.symbol, intent.client_order_id) or placed
                if placed.status in ("open", "partial"):
                    raise TransientExchangeError("resting entry not cancelled yet")
                if placed.filled_amount <= 0:
                    return _rejected(env, intent, f"entry order {intent.client_order_id} "
                                     "rested unfilled past the entry timeout; cancelled")
        if placed is None:
            crash_point("submit.before_send")
            placed = broker.place(intent.symbol, intent.side, _amount(intent), intent.price,
                                  intent.client_order_id, kind=intent.kind)
            crash_point("submit.after_send")
    except DefinitiveExchangeError as exc:
        if exc.kind == "duplicate_order":  # an earlier attempt landed: adopt it
            return _after_duplicate(env, intent, broker)
        return _rejected(env, intent, str(exc))
    except ExchangeError as exc:  # transient, or anything else we cannot be sure about
        return _ambiguous(env, intent, exc)
    return _record(env, intent, placed)


def _entry_expired(env: OrdersEnv, intent: OrderIntent) -> bool:
    if intent.kind != "open" or intent.created_at is None:
        return False
    age = (datetime.now(UTC) - intent.created_at).total_seconds()
    return age > env.entry_timeout_seconds


def _status(env: OrdersEnv, intent_id: int) -> str | None:
    with session_scope(env.engine) as session:
        return session.execute(select(OrderIntent.status).where(
            OrderIntent.id == intent_id)).scalar()


def _amount(intent: OrderIntent) -> float:
    if intent.amount is not None:
        return intent.amount
    return intent.cost / intent.price


def _after_duplicate(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker) -> str:
    try:
        placed = broker.lookup(intent.symbol, intent.client_order_id)
    except ExchangeError as exc:
        return _ambiguous(env, intent, exc)
    if placed is None:
        return _ambiguous(env, intent, TransientExchangeError("duplicate id but no order found"))
    return _record(env, intent, placed)


def _max_attempts(env: OrdersEnv, intent: OrderIntent) -> int:
    config = env.config()
    return (config.CC_ORDER_OPEN_RETRY_ATTEMPTS if intent.kind == "open"
            else config.CC_ORDER_CLOSE_RETRY_ATTEMPTS)


def _ambiguous(env: OrdersEnv, intent: OrderIntent, exc: ExchangeError) -> str:
    """Outcome unknown: keep the intent `unknown` and retry (lookup first) with backoff."""
    assert intent.id is not None
    message = f"{type(exc).__name__}: {exc}"
    # The first attempt plus CC_ORDER_*_RETRY_ATTEMPTS retries, then give up with evidence.
    if intent.attempts > _max_attempts(env, intent):
        return _give_up(env, intent, message)
    rate_limited = isinstance(exc, TransientExchangeError) and exc.rate_limited
    retry_after = getattr(exc, "retry_after_s", None)
    delay = backoff_seconds(intent.attempts, rate_limited=rate_limited, retry_after=retry_after,
                            ceiling_s=env.backoff_ceiling_seconds,
                            rate_limit_s=env.rate_limit_backoff_seconds)
    _release(env, intent, "unknown", delay=delay, error=message)
    env.enqueue(intent.id, delay)
    return "unknown"


def _give_up(env: OrdersEnv, intent: OrderIntent, message: str) -> str:
    broker = env.brokers(intent.exchange_name)
    try:
        placed = broker.lookup(intent.symbol, intent.client_order_id) if broker else None
    except ExchangeError:
        placed = None
        _release(env, intent, "unknown", delay=60, error=message)
        return "unknown"  # cannot even look: never claim "rejected" without evidence
    if placed is not None:
        return _record(env, intent, placed)
    outcome = _transition(env, intent, "abandon", message)
    return "abandoned" if outcome else "stale"


def _rejected(env: OrdersEnv, intent: OrderIntent, message: str) -> str:
    return "rejected" if _transition(env, intent, "reject", message) else "stale"


def _record(env: OrdersEnv, intent: OrderIntent, placed: PlacedOrder) -> str:
    assert intent.id is not None
    if placed.status in ("open", "partial"):
        _release(env, intent, "acked", delay=5, exchange_order_id=placed.exchange_order_id,
                 filled_amount=placed.filled_amount, fill_price=placed.average_price)
        env.enqueue(intent.id, 5)  # poll until filled; partial fills are recorded meanwhile
        return "acked"
    if placed.status in ("canceled", "rejected") and placed.filled_amount <= 0:
        return _rejected(env, intent, f"order {placed.exchange_order_id} {placed.status} "
                                      "with nothing filled")
    return "filled" if _transition(env, intent, "fill", "", placed) else "stale"


def _transition(env: OrdersEnv, intent: OrderIntent, what: str, message: str,
                placed: PlacedOrder | None = None) -> bool:
    """Record the intent's outcome and the signal's transition in one transaction."""
    now = datetime.now(UTC)
    when = floor_to_minute(env.clock.now())
    config = env.config()
    with session_scope(env.engine) as session:
        key = session.execute(select(StrategySymbol).where(StrategySymbol.id == intent.key_id)
                              .with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        stored = session.get(OrderIntent, intent.id, populate_existing=True)
        assert stored is not None
        if what == "fill":
            assert placed is not None
            stored.status, stored.filled_amount = "filled", placed.filled_amount
            stored.fill_price, stored.exchange_order_id = placed.average_price, \
                placed.exchange_order_id
        else:
            stored.status = "rejected" if what == "reject" else "abandoned"
            stored.last_error = message
        stored.sending_until, stored.updated_at = None, now
        row = None if record is None else signal_rows.to_core(record)
        expected = "opening" if intent.kind == "open" else "closing"
        if row is None or row.state != expected or not row.order_in_flight:
            log.warning("intent %s: signal %s is not %s in flight; outcome %s recorded only",
                        intent.id, intent.signal_id, expected, what)
            return False
        ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name)
        outcome = _machine_step(ctx, row, intent, what, message, placed, when, config,
                                finished=key.status == "draining")
        added, _ = store_outcome(session, key, record, outcome, when, now, env.origin)
        dispatched = [event_as_dict(r) for r in added]
    events.dispatch(dispatched)
    _callbacks(key.strategy_name, outcome, ctx, when)
    return True


def _machine_step(ctx: KeyContext, row: Any, intent: OrderIntent, what: str, message: str,
                  placed: PlacedOrder | None, when: datetime, config: Config, *,
                  finished: bool) -> TickOutcome:
    if what == "fill":
        assert placed is not None
        if intent.kind == "open":
            return confirm_open(ctx, row, placed.average_price, when)
        return confirm_close(ctx, row, placed.average_price, when, config, finished=finished)
    if intent.kind == "open":
        outcome = reject_open(ctx, row, when, message)
        if what == "abandon":
            outcome.notices.append(Notice(
                "exit", f"entry order {intent.client_order_id} given up after "
                f"{intent.attempts} attempts with no order on the exchange: {message}",
                {"signal_id": row.id, "intent_id": intent.id}))
        return outcome
    return reject_close(ctx, row, when, message, config)


def _callbacks(strategy_name: str, outcome: TickOutcome, ctx: KeyContext,
               when: datetime) -> None:
    from bkit.ticking import run_callbacks

    strategy = REGISTRY.strategies.get(strategy_name)
    if strategy is not None:
        for notice in run_callbacks(strategy.callbacks, outcome.callbacks, ctx, when):
            log.error("%s", notice.message)


def due_intents(engine: Engine, limit: int = 200) -> list[int]:
    """Intents the relay must (re-)enqueue: not terminal, due, and not being sent. Their next
    attempt is pushed back so the relay does not flood the queue with copies."""
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        stmt = (select(OrderIntent).where(
            OrderIntent.status.in_(RETRYABLE),  # type: ignore[attr-defined]
            or_(OrderIntent.next_attempt_at.is_(None),  # type: ignore[union-attr]
                OrderIntent.next_attempt_at <= now),  # type: ignore[operator]
            or_(OrderIntent.sending_until.is_(None),  # type: ignore[union-attr]
                OrderIntent.sending_until < now))  # type: ignore[operator]
            .order_by(OrderIntent.id).limit(limit))  # type: ignore[arg-type]
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        intents = list(session.execute(stmt).scalars())
        for intent in intents:
            intent.next_attempt_at = now + timedelta(seconds=30)
        return [i.id for i in intents if i.id is not None]


def orphan_orders(env: OrdersEnv, prefix: str = "bk") -> list[dict[str, Any]]:
    """Open orders on the exchanges that carry our client-id prefix but that no intent
    explains (reconciliation). Each one is reported as an `exit` event."""
    with session_scope(env.engine) as session:
        pairs = set(session.execute(select(OrderIntent.exchange_name, OrderIntent.symbol)
                                    .distinct()).all())
        known = set(session.execute(select(OrderIntent.client_order_id)).scalars())
    orphans = []
    for exchange_name, symbol in sorted(pairs):
        broker = env.brokers(exchange_name)
        if broker is None:
            continue
        try:
            open_orders = broker.open_orders(symbol)
        except ExchangeError as exc:
            log.warning("reconcile %s %s: %s", exchange_name, symbol, exc)
            continue
        for order in open_orders:
            if order.client_order_id.startswith(prefix) and order.client_order_id not in known:
                orphans.append({"exchange_name": exchange_name, "symbol": symbol,
                                "client_order_id": order.client_order_id,
                                "exchange_order_id": order.exchange_order_id})
    return orphans

"""Order tasks on the `orders` queue: submit one intent, relay the outbox, reconcile.
Thin adapters over `bkit.orders`; the database outbox is the source of truth."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from sqlalchemy.exc import OperationalError

from bkit.celery import app
from bkit.core.results import Notice
from bkit.store.engine import DatabaseUnavailableError

log = logging.getLogger("bkit.workers.orders")


@app.task(name="bkit.orders.submit", ignore_result=True, acks_late=True,
          reject_on_worker_lost=True, soft_time_limit=20, time_limit=30)
def submit(intent_id: int) -> str:
    """Send one order intent. Safe to run twice: the send-lease and the lookup by client
    order id make a duplicate a no-op."""
    from bkit.orders import submit_intent
    from bkit.runtime import orders_env

    try:
        return submit_intent(orders_env(), intent_id)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("submit %s: database unavailable; the relay retries it: %s", intent_id, exc)
        return "database_unavailable"


@app.task(name="bkit.orders.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Re-enqueue intents stuck in pending/sending/unknown/acked, so a lost broker message
    never loses an order."""
    from bkit.orders import due_intents
    from bkit.runtime import orders_env

    try:
        ids = due_intents(orders_env().engine)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("relay: database unavailable: %s", exc)
        return 0
    for intent_id in ids:
        submit.apply_async((intent_id,), queue="orders")
    return len(ids)


@app.task(name="bkit.orders.reconcile", ignore_result=True)
def reconcile() -> int:
    """Resolve in-flight intents (lookup first) and report orders on the exchange with our
    prefix that no intent explains."""
    from bkit.orders import orphan_orders
    from bkit.runtime import orders_env
    from bkit.store.engine import session_scope
    from bkit.store.event_log import notice_event

    env = orders_env()
    relayed = relay_outbox()
    orphans = orphan_orders(env)
    if orphans:
        from datetime import UTC, datetime

        with session_scope(env.engine) as session:
            for orphan in orphans:
                session.add(notice_event(None, Notice(
                    "exit", f"order {orphan['client_order_id']} on {orphan['exchange_name']} "
                    f"{orphan['symbol']} has our prefix but no intent explains it", orphan),
                    symbol=orphan["symbol"], strategy_name=None,
                    exchange_name=orphan["exchange_name"], when=datetime.now(UTC),
                    origin=env.origin))
    return relayed + len(orphans)


@signals.worker_ready.connect
def _reconcile_at_start(**_: Any) -> None:
    """A starting worker asks the orders queue to resolve what a crash left in flight
    (idempotent: several workers starting at once only repeat lookups)."""
    reconcile.apply_async(queue="orders")

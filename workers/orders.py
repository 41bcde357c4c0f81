"""Order tasks on the `orders` queue: submit one intent, relay the outbox, reconcile.
Thin adapters over `bkit.orders`; the database outbox is the source of truth."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from sqlalchemy.exc import OperationalError

from bkit.celery import app
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
    from bkit.runtime import intent_label

    for intent_id in ids:
        submit.apply_async((intent_id,), queue="orders", argsrepr=intent_label(intent_id))
    return len(ids)


@app.task(name="bkit.orders.reconcile", ignore_result=True)
def reconcile() -> int:
    """Resolve in-flight intents (re-enqueue them: lookup first) and compare the account's
    balances and open orders with bkit's positions and intents (SPEC §8)."""
    from bkit.reconcile import reconcile as run_reconcile
    from bkit.runtime import orders_env

    relayed = relay_outbox()
    try:
        views = run_reconcile(orders_env())
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("reconcile: database unavailable: %s", exc)
        return relayed
    return relayed + sum(len(v.differences) for v in views)


@signals.worker_ready.connect
def _reconcile_at_start(**_: Any) -> None:
    """A starting worker asks the orders queue to resolve what a crash left in flight
    (idempotent: several workers starting at once only repeat lookups)."""
    reconcile.apply_async(queue="orders")

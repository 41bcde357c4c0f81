"""The per-process runtime: settings → engine, clock, tick and orders environments, and the
task sends they make. `bkit.celery` does not import this module (it would be a circle: the
sends need the app); the environments are rebuilt after a fork by their pid check, and
`worker_process_init` drops them as well."""

from __future__ import annotations

import logging
import os
import threading

from celery import signals

from bkit.broker.registry import broker_for
from bkit.clock import clock_from_settings
from bkit.orders import OrdersEnv
from bkit.settings import get_settings
from bkit.store.engine import get_engine
from bkit.store.schema_check import ensure_schema
from bkit.ticking import TickEnv

log = logging.getLogger("bkit.runtime")
_env: tuple[int, TickEnv] | None = None
_lock = threading.Lock()


def intent_label(intent_id: int) -> str:
    """What Flower shows for an order task: symbol, side, kind and client order id."""
    from bkit.store.tables import OrderIntent

    try:
        from bkit.store.engine import session_scope

        with session_scope(get_engine()) as session:
            intent = session.get(OrderIntent, intent_id)
            if intent is not None:
                return (f"{intent.symbol} {intent.side} ({intent.kind}) "
                        f"{intent.client_order_id} on {intent.exchange_name}")
    except Exception:  # a label is a nicety: never block an order on it
        pass
    return f"intent {intent_id}"


def enqueue_submit(intent_id: int) -> None:
    """Send `bkit.orders.submit(intent_id)` to the orders queue (after the intent commits)."""
    from bkit.celery import app

    app.send_task("bkit.orders.submit", args=[intent_id], queue="orders",
                  argsrepr=intent_label(intent_id))


def tick_env() -> TickEnv:
    """This process's tick environment (rebuilt after a fork)."""
    global _env
    pid = os.getpid()
    if _env is None or _env[0] != pid:
        with _lock:
            if _env is None or _env[0] != pid:
                settings = get_settings()
                engine = get_engine()
                ensure_schema(engine)
                env = TickEnv(engine=engine, clock=clock_from_settings(),
                              lease_seconds=settings.lease_seconds,
                              brokers=broker_for,
                              enqueue_order=enqueue_submit,
                              history_days=settings.tick_history_days)
                _env = (pid, env)
    return _env[1]


@signals.worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    reset_runtime()


def reset_runtime() -> None:
    """Drop this process's tick and orders environments (rebuilt on next use)."""
    global _env, _orders_env
    _env = None
    _orders_env = None


_orders_env: tuple[int, OrdersEnv] | None = None


def _enqueue_submit_later(intent_id: int, countdown: float) -> None:
    from bkit.celery import app

    app.send_task("bkit.orders.submit", args=[intent_id], queue="orders",
                  countdown=max(0.0, countdown), argsrepr=intent_label(intent_id))


def orders_env() -> OrdersEnv:
    """This process's orders environment (rebuilt after a fork)."""
    global _orders_env
    pid = os.getpid()
    if _orders_env is None or _orders_env[0] != pid:
        engine = get_engine()
        ensure_schema(engine)
        settings = get_settings()
        _orders_env = (pid, OrdersEnv(
            engine=engine, clock=clock_from_settings(), brokers=broker_for,
            enqueue=_enqueue_submit_later,
            send_lease_seconds=settings.order_send_lease_seconds,
            backoff_ceiling_seconds=settings.order_backoff_max_seconds,
            rate_limit_backoff_seconds=settings.order_rate_limit_backoff_seconds,
            entry_timeout_seconds=settings.order_entry_timeout_seconds))
    return _orders_env[1]

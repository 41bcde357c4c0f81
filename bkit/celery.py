"""The Celery app: `celery -A bkit worker` finds `bkit.celery:app`.

Embedded default: `filesystem://` broker under BKIT_HOME, so `celery -A bkit worker -B` runs on
one machine with nothing installed. Scale-out: BKIT_BROKER_URL=redis://…, one
`celery -A bkit beat`, workers with `-Q ticks` and `-Q orders`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from bkit.clock import clock_from_settings
from bkit.expired_tasks import install_expired_task_summary
from bkit.settings import Settings, get_settings

log = logging.getLogger("bkit.celery")
QUEUES = ("ticks", "orders", "maint", "backtest")


def _transport_options(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_broker_url()
    if url.startswith("filesystem"):
        folder = settings.home / "broker"
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"),
                "control_folder": str(folder / "control"), "store_processed": False}
    if url.startswith(("redis", "rediss")):
        # ≥ 2 × the longest hard limit or countdown (notes §3.2), so a slow task is not
        # redelivered while it still runs.
        return {"visibility_timeout": 1800}
    return {}


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    clock = clock_from_settings()
    period = clock.wall_seconds(settings.tick_seconds)
    celery_app = Celery("bkit", broker=settings.resolved_broker_url(),
                        include=["workers.ticks", "workers.orders", "workers.backtests",
                                 "workers.notify", "workers.maint"])
    celery_app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        # Each queue on its own direct exchange and routing key, so a message routed to one
        # queue is never copied into another.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name)
                     for name in QUEUES],
        task_default_queue="ticks",
        task_default_exchange="ticks",
        task_default_routing_key="ticks",
        task_routes={"bkit.tick": {"queue": "ticks"}, "bkit.tick_batch": {"queue": "ticks"},
                     "bkit.fanout_ticks": {"queue": "ticks"},
                     "bkit.orders.*": {"queue": "orders"}, "bkit.maint.*": {"queue": "maint"},
                     "bkit.backtest.*": {"queue": "backtest"},
                     "bkit.notify.*": {"queue": "maint"}},
        beat_schedule={
            "fanout-ticks": {"task": "bkit.fanout_ticks", "schedule": timedelta(seconds=period),
                             "options": {"expires": max(1.0, period * 0.9)}},
            "relay-outbox": {"task": "bkit.orders.relay_outbox",
                             "schedule": timedelta(seconds=settings.relay_seconds),
                             "options": {"expires": settings.relay_seconds}},
            "notify-scan": {"task": "bkit.notify.scan", "schedule": timedelta(seconds=15),
                            "options": {"queue": "maint", "expires": 15}},
            "prune-history": {"task": "bkit.maint.prune_history",
                              "schedule": timedelta(seconds=settings.prune_seconds),
                              "options": {"queue": "maint", "expires": settings.prune_seconds}},
            "reconcile-orders": {"task": "bkit.orders.reconcile",
                                 "schedule": timedelta(seconds=settings.reconcile_seconds),
                                 "options": {"expires": settings.reconcile_seconds}},
        },
        beat_schedule_filename=str(settings.home / "celerybeat-schedule"),
    )
    if settings.resolved_broker_url().startswith("filesystem"):
        # kombu's filesystem transport with atomic publishing (see bkit.fs_transport).
        celery_app.conf.broker_transport = "bkit.fs_transport:Transport"
    elif settings.resolved_broker_url().startswith("redis://"):
        # kombu's Redis transport that survives a Redis restart (see bkit.redis_transport).
        celery_app.conf.broker_transport = "bkit.redis_transport:Transport"
    settings.home.mkdir(parents=True, exist_ok=True)
    return celery_app


app = make_app()
install_expired_task_summary()


@signals.worker_process_init.connect
def _reset_per_process(**_: Any) -> None:
    from bkit.store.engine import dispose_after_fork

    dispose_after_fork()  # bkit.runtime drops its environments on the same signal
    try:
        from bkit.exchange.ccxt_exchange import reset_clients
    except ImportError:  # pragma: no cover
        return
    reset_clients()


@signals.worker_init.connect
def _import_strategies(**_: Any) -> None:
    """Workers import the user's strategy modules at start; a broken module stops the worker
    with a message naming it, instead of failing every tick later."""
    from bkit.strategy_modules import StrategyImportError, import_strategy_modules

    try:
        imported = import_strategy_modules()
    except StrategyImportError as exc:
        log.critical("%s", exc)
        raise SystemExit(f"bkit: {exc}") from exc
    if imported:
        log.info("bkit: imported strategy modules %s", ", ".join(imported))

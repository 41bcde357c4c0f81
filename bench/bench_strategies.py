"""Loaded by benchmark workers (BKIT_STRATEGIES=bench.bench_strategies): the paper exchange,
a strategy that trades now and then, and the two floor tasks of DESIGN "Measured"."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import redis
from sqlalchemy import text

from bkit.celery import app
from bkit.core.registry import add_strategy
from bkit.exchange.paper import add_paper_exchange
from bkit.store.engine import get_engine

add_paper_exchange("paper")
_redis = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))


def every_third_window(symbol: str, when: datetime, price: float) -> dict | None:
    """Goes long on one key in three, so ticks mix idle, opened and active."""
    if hash(symbol) % 3:
        return None
    return {"position": "long", "price_take_profit": price * 1.01,
            "price_stop_loss": price * 0.99, "minute_estimated_time": 60, "cost": 0.1}


add_strategy("bench", every_third_window, interval="5m")


@app.task(name="bench.noop", ignore_result=True, acks_late=True)
def noop() -> None:
    _redis.incr("bench:noop")


@app.task(name="bench.lock_update_insert", ignore_result=True, acks_late=True)
def lock_update_insert(key_id: int) -> None:
    """The floor of a tick's write-back: lock a row, update it, insert an event, commit."""
    with get_engine().begin() as conn:
        conn.execute(text("SELECT id FROM strategy_symbol WHERE id = :id FOR UPDATE"),
                     {"id": key_id})
        conn.execute(text("UPDATE strategy_symbol SET updated_at = :now WHERE id = :id"),
                     {"id": key_id, "now": datetime.now(UTC)})
        conn.execute(text("INSERT INTO event (key_id, kind, message, created_at) "
                          "VALUES (:id, 'bench', '', :now)"),
                     {"id": key_id, "now": datetime.now(UTC)})
    _redis.incr("bench:liu")

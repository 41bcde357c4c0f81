"""Order tasks on the `orders` queue. The outbox rows are written by ticks in broker mode;
sending them is built by the orders issue. Until then only the relay is registered, so the
beat entry exists and finds nothing to send in signal-only mode."""

from __future__ import annotations

from bkit.celery import app


@app.task(name="bkit.orders.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Re-enqueue stuck order intents (none in signal-only mode)."""
    from bkit.runtime import tick_env

    env = tick_env()
    if not env.uses_broker:
        return 0
    raise NotImplementedError("order brokers are not available yet (BKIT_ORDER_BROKER)")

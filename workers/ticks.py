"""Tick tasks: the beat fan-out and the per-key tick (thin adapters over bkit.ticking)."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from bkit.celery import app
from bkit.settings import get_settings
from bkit.store.engine import DatabaseUnavailableError
from bkit.store.keys import enabled_key_ids
from bkit.ticking import bucket_of, run_tick

log = logging.getLogger("bkit.workers.ticks")
_settings = get_settings()


@app.task(name="bkit.fanout_ticks", ignore_result=True, acks_late=True)
def fanout_ticks() -> int:
    """One cheap SELECT of the keys to tick, one `tick(key_id, bucket)` message each. The
    bucket is the market minute now; duplicates (two beats, redelivery) are no-ops at claim."""
    from bkit.runtime import tick_env

    try:
        env = tick_env()
        bucket = bucket_of(env.clock.now())
        key_ids = enabled_key_ids(env.engine)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("fan-out: database unavailable, nothing ticked this period: %s", exc)
        return 0
    expires = max(1.0, env.clock.wall_seconds(_settings.tick_seconds) * 0.9)
    # Rotate the order every period: when ticks outrun the workers and stale ones expire,
    # the dropped keys differ from period to period instead of always being the last ones.
    if key_ids:
        start = (bucket * 7919) % len(key_ids)
        key_ids = key_ids[start:] + key_ids[:start]
    for key_id in key_ids:
        tick.apply_async((key_id, bucket), expires=expires)
    return len(key_ids)


@app.task(name="bkit.tick", ignore_result=True, acks_late=True, reject_on_worker_lost=True,
          soft_time_limit=_settings.tick_soft_limit, time_limit=_settings.tick_hard_limit)
def tick(key_id: int, bucket: int) -> str | None:
    """Tick one key for one minute. Idempotent: the claim makes a second run a no-op."""
    from bkit.runtime import tick_env

    try:
        result = run_tick(tick_env(), key_id, bucket)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("tick %s/%s: database unavailable, the next minute retries: %s",
                  key_id, bucket, exc)
        return None
    except SoftTimeLimitExceeded:
        log.error("tick %s/%s exceeded its soft time limit; its lease expires", key_id, bucket)
        return None
    return None if result is None else result.action

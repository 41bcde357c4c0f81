"""Tick tasks: the beat fan-out, the batch tick and the one-key tick (thin adapters over
bkit.ticking)."""

from __future__ import annotations

import logging
import math

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from bkit.celery import app
from bkit.settings import get_settings
from bkit.store.engine import DatabaseUnavailableError
from bkit.store.keys import enabled_keys
from bkit.ticking import BatchOutcome, bucket_of, minute_of, run_ticks

log = logging.getLogger("bkit.workers.ticks")
_settings = get_settings()


@app.task(name="bkit.fanout_ticks", ignore_result=True, acks_late=True)
def fanout_ticks() -> int:
    """One cheap SELECT of the keys to tick, one `tick_batch(key_ids, bucket)` message per
    `BKIT_TICK_BATCH_SIZE` keys. The bucket is the market minute now; duplicates (two beats,
    redelivery) are no-ops at claim, key by key."""
    from bkit.runtime import tick_env

    try:
        env = tick_env()
        bucket = bucket_of(env.clock.now())
        keys = enabled_keys(env.engine)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("fan-out: database unavailable, nothing ticked this period: %s", exc)
        return 0
    expires = max(1.0, env.clock.wall_seconds(_settings.tick_seconds) * 0.9)
    # Rotate the order every period: when ticks outrun the workers and stale ones expire,
    # the dropped keys differ from period to period instead of always being the last ones.
    if keys:
        start = (bucket * 7919) % len(keys)
        keys = keys[start:] + keys[:start]
    size = batch_size(len(keys), _settings.tick_batch_size)
    for first in range(0, len(keys), size):
        batch = keys[first:first + size]
        tick_batch.apply_async(([k[0] for k in batch], bucket), expires=expires,
                               argsrepr=batch_label(batch, bucket))
    return len(keys)


def batch_label(keys: list[tuple[int, str, str, str]], bucket: int) -> str:
    """What Flower shows for a tick task: its first key by name, how many more, the minute
    (e.g. `BTC/USDT·momentum@binance +19 more, minute 2026-12-01T07:03Z`)."""
    if not keys:
        return f"no keys, minute {minute_of(bucket):%Y-%m-%dT%H:%MZ}"
    _, symbol, strategy, exchange = keys[0]
    more = f" +{len(keys) - 1} more" if len(keys) > 1 else ""
    return f"{symbol}·{strategy}@{exchange}{more}, minute {minute_of(bucket):%Y-%m-%dT%H:%MZ}"


#: A fan-out makes at least this many tasks when it has as many keys, so a few keys with a
#: slow strategy still spread over the workers instead of queueing behind each other.
MIN_TASKS_PER_FANOUT = 8


def batch_size(n_keys: int, configured: int) -> int:
    """Keys per tick task: `configured` (BKIT_TICK_BATCH_SIZE), smaller for few keys."""
    return max(1, min(configured, math.ceil(n_keys / MIN_TASKS_PER_FANOUT)))


@app.task(name="bkit.tick_batch", bind=True, ignore_result=True, acks_late=True,
          reject_on_worker_lost=True, soft_time_limit=_settings.tick_soft_limit,
          time_limit=_settings.tick_hard_limit)
def tick_batch(self: Task, key_ids: list[int], bucket: int) -> int:
    """Tick a batch of keys for one minute; returns how many ticked. Idempotent: the claim
    makes a second run of any key a no-op. Keys the batch had no time for (a slow strategy)
    go out again as a new batch with the same expiry, for any free worker."""
    batch = _run(key_ids, bucket, budgeted=True)
    if batch.handed_back:
        try:
            tick_batch.apply_async((batch.handed_back, bucket), expires=self.request.expires,
                                   argsrepr=f"{len(batch.handed_back)} handed-back keys, "
                                   f"minute {minute_of(bucket):%Y-%m-%dT%H:%MZ}")
        except Exception:  # the keys simply wait for the next minute
            log.warning("could not queue %d handed-back keys", len(batch.handed_back),
                        exc_info=True)
    return sum(1 for r in batch.results.values() if r is not None)


@app.task(name="bkit.tick", ignore_result=True, acks_late=True, reject_on_worker_lost=True,
          soft_time_limit=_settings.tick_soft_limit, time_limit=_settings.tick_hard_limit)
def tick(key_id: int, bucket: int) -> str | None:
    """Tick one key for one minute. Idempotent: the claim makes a second run a no-op."""
    result = _run([key_id], bucket).results.get(key_id)
    return None if result is None else result.action


def _run(key_ids: list[int], bucket: int, budgeted: bool = False) -> BatchOutcome:
    """Run the ticks; a database outage or the soft time limit is logged, never raised (the
    leases expire and the next minute carries on)."""
    from bkit.runtime import tick_env

    try:
        env = tick_env()
        budget = None
        if budgeted:  # at most a quarter of the beat period, in wall seconds
            period = env.clock.wall_seconds(_settings.tick_seconds)
            budget = min(_settings.tick_batch_budget_seconds, 0.25 * period)
        return run_ticks(env, key_ids, bucket, budget_seconds=budget)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("tick of %d keys, bucket %s: database unavailable, the next minute "
                  "retries: %s", len(key_ids), bucket, exc)
    except SoftTimeLimitExceeded:
        log.error("tick of %d keys, bucket %s exceeded its soft time limit; leases expire",
                  len(key_ids), bucket)
    return BatchOutcome({})

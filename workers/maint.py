"""Upkeep on the `maint` queue: `bkit.maint.prune_history`, run by beat every minute.

Tick history older than `BKIT_TICK_HISTORY_DAYS` (market time of the runtime's clock), tick
feed rows older than two minutes and stale listener presences are deleted in batches of a few
thousand rows, each batch its own short transaction, so pruning never holds what a tick waits
for (SPEC §13). A run that cannot reach the database waits for the next beat.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from bkit.celery import app
from bkit.store.engine import DatabaseUnavailableError

log = logging.getLogger("bkit.workers.maint")
PRUNE_TASK = "bkit.maint.prune_history"


@app.task(name=PRUNE_TASK, ignore_result=True, queue="maint", soft_time_limit=50,
          time_limit=60)
def prune_history() -> int:
    """Returns the number of tick-history rows deleted by this run."""
    from bkit.clock import clock_from_settings
    from bkit.settings import get_settings
    from bkit.store.engine import get_engine
    from bkit.store.schema_check import ensure_schema
    from bkit.store.tick_history import prune

    try:
        engine = get_engine()
        ensure_schema(engine)
        done = prune(engine, clock_from_settings().now(), get_settings().tick_history_days)
    except (DatabaseUnavailableError, OperationalError) as exc:
        log.warning("history pruning: database unavailable (%s); next run retries", exc)
        return 0
    if done.history_rows or done.feed_rows:
        log.info("pruned %d tick-history rows, %d feed rows", done.history_rows, done.feed_rows)
    return done.history_rows

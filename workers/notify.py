"""The notification task on the `maint` queue: `bkit.notify.scan`, run by beat every ~15 s.

A thin adapter over `bkit.notify.scan_events`: it reads committed events, so it never runs
inside a tick's transaction, and a scan that cannot reach the database just waits for the
next beat (the cursor has not moved).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy.exc import IntegrityError, OperationalError

from bkit.celery import app
from bkit.store.engine import DatabaseUnavailableError

log = logging.getLogger("bkit.workers.notify")
TASK_NAME = "bkit.notify.scan"
#: Beat period of the scan (wall seconds); the beat entry should use it as `expires` too.
SCAN_SECONDS = 15.0


def _setting(name: str, default: str) -> str:
    """`Settings.<name>` once the field exists there, else the `BKIT_<NAME>` variable."""
    from bkit.settings import get_settings

    value = getattr(get_settings(), name, None)
    if value is None:
        value = os.environ.get(f"BKIT_{name.upper()}", default)
    return str(value)


@app.task(name=TASK_NAME, ignore_result=True, queue="maint", soft_time_limit=120,
          time_limit=150)
def scan() -> int:
    """Queue the messages of new events and send the due ones; returns how many were
    delivered (target × message)."""
    from bkit.notify import AppriseSender, scan_events
    from bkit.notify.sender import ENV_URLS, notify_targets
    from bkit.store.engine import get_engine
    from bkit.store.schema_check import ensure_schema

    environ = {**os.environ, ENV_URLS: _setting("notify_urls", "")}
    minutes = float(_setting("notify_error_minutes", "10"))
    try:
        engine = get_engine()
        ensure_schema(engine)
        report = scan_events(engine, AppriseSender(notify_targets(environ), environ),
                             error_window_seconds=minutes * 60.0)
    except (OperationalError, DatabaseUnavailableError) as exc:
        log.error("notify scan: database unavailable, retried at the next beat: %s",
                  type(exc).__name__)
        return 0
    except IntegrityError:  # two first scans created the cursor at once: the other won
        return 0
    if report.queued or report.failed or report.dropped:
        log.info("notify scan: %d events, %d queued, %d delivered, %d failed, %d given up",
                 report.read, report.queued, report.delivered, report.failed, report.dropped)
    return report.delivered

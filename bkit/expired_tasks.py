"""One log line for the tasks a worker throws away unrun, instead of one line per task.

Every beat task of bkit (the tick fan-out and its batches, the outbox relay, reconciliation,
notifications) expires after about one period: a tick that waited longer is for a minute
already gone, and the next period carries on. After a pause (a busy or stopped worker, a
laptop waking up) celery discards each such message with its own INFO line `Discarding
revoked task: …`, dozens of them, which reads as if something were stuck. This filter
swallows those lines for `bkit.*` tasks and says it once, with a count: a few seconds after
the first discard, then at most once a minute while discards go on. Tasks revoked by hand
(celery's `revoke`) would read the same in celery's line; they are rare and counted too.
Other apps' tasks keep celery's own line.
"""

from __future__ import annotations

import logging
import threading
import time

#: The logger celery's worker announces discarded task messages on.
CELERY_REQUEST_LOGGER = "celery.worker.request"
_DISCARDING = "Discarding revoked task: %s[%s]"
log = logging.getLogger("bkit.expired_tasks")


class ExpiredTaskSummary(logging.Filter):
    """Drops celery's `Discarding revoked task` lines for `bkit.*` tasks and logs their count
    (INFO, logger `bkit.expired_tasks`) `first_after_s` seconds after the first one, then at
    most every `every_s` seconds."""

    def __init__(self, first_after_s: float = 5.0, every_s: float = 60.0) -> None:
        super().__init__()
        self.first_after_s = first_after_s
        self.every_s = every_s
        self._lock = threading.Lock()
        self._pending = 0
        self._names: set[str] = set()
        self._since = 0.0
        self._last_flush = -float("inf")
        self._timer: threading.Timer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        name = _discarded_bkit_task(record)
        if name is None:
            return True
        with self._lock:
            if self._pending == 0:
                self._since = time.monotonic()
            self._pending += 1
            self._names.add(name)
            if self._timer is None:
                delay = max(self.first_after_s,
                            self._last_flush + self.every_s - time.monotonic())
                self._timer = threading.Timer(delay, self.flush)
                self._timer.daemon = True
                self._timer.start()
        return False

    def flush(self) -> int:
        """Log the discards counted so far (if any); returns how many."""
        with self._lock:
            count, names, since = self._pending, sorted(self._names), self._since
            self._pending, self._names, self._timer = 0, set(), None
            self._last_flush = time.monotonic()
        if count:
            log.info("bkit: %d expired task(s) discarded unrun in the last %.0f s (%s): they "
                     "waited past their expiry of about one beat period because the workers "
                     "were busy or stopped; expected after a pause, the next period carries "
                     "on", count, max(1.0, self._last_flush - since), ", ".join(names))
        return count


def _discarded_bkit_task(record: logging.LogRecord) -> str | None:
    """The task name of celery's plain `Discarding revoked task` line for a bkit task."""
    if record.msg != _DISCARDING or not isinstance(record.args, tuple) or not record.args:
        return None
    name = str(record.args[0])
    return name if name.startswith("bkit.") else None


_installed: ExpiredTaskSummary | None = None


def install_expired_task_summary() -> ExpiredTaskSummary:
    """Put the summary filter on celery's request logger (once per process)."""
    global _installed
    if _installed is None:
        _installed = ExpiredTaskSummary()
        logging.getLogger(CELERY_REQUEST_LOGGER).addFilter(_installed)
    return _installed

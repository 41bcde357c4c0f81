"""Database engines for PostgreSQL (psycopg) and SQLite (WAL, BEGIN IMMEDIATE, busy timeout).

One engine per process: a forked Celery child must not reuse the parent's connections, so the
engine is keyed by pid and `dispose_after_fork()` runs in `worker_process_init`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from bkit.core.errors import BkitError

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUnavailableError(BkitError):
    """The database cannot be reached (down, wrong URL, refused). Retried, never silent."""


def make_engine(url: str) -> Engine:
    """A new engine for `url`, tuned per backend (see module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock up front: no lock-upgrade deadlocks, writers queue in
            # busy_timeout. SQLite has no row locks, so this is what FOR UPDATE means here.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # plan_cache_mode: psycopg prepares a statement run five times, and PostgreSQL would
    # then keep one generic plan for it; a plan made while a table was small (a fresh
    # database, the first ticks) stays a sequential scan as the table grows to 100,000
    # rows. Custom plans are made per execution from the current table size, and the
    # statement is still parsed only once. TimeZone=UTC: the driver then hands every time
    # back in UTC (bkit stores UTC only), so no value needs converting on the way in.
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4,
                         pool_recycle=1800,
                         connect_args={"connect_timeout": 10,
                                       "options": "-c plan_cache_mode=force_custom_plan "
                                                  "-c TimeZone=UTC"})


def get_engine(url: str | None = None) -> Engine:
    """The engine of this process for `url` (default: the settings' database URL)."""
    if url is None:
        from bkit.settings import get_settings

        url = get_settings().resolved_database_url()
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = make_engine(url)
                _engines[key] = engine
    return engine


def dispose_after_fork() -> None:
    """Drop engines inherited from a parent process without closing its connections."""
    pid = os.getpid()
    for (owner, _url), engine in list(_engines.items()):
        if owner != pid:
            engine.dispose(close=False)
            _engines.pop((owner, _url), None)


def dispose_all() -> None:
    for key, engine in list(_engines.items()):
        engine.dispose()
        _engines.pop(key, None)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: one session, committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

"""`ensure_schema`: make sure a database is at the head revision before a process uses it,
cheaply when it already is.

Almost every start finds the schema current (a worker, a `bkit` command, `Live`). Reading
`alembic_version` answers that in one query; only a database that is not at the head (new,
older, newer, legacy or unreachable) goes through `bkit.store.migrations.upgrade`, which
imports Alembic and loads every revision file (about 0.25 s of a `bkit` command otherwise).
The head is the newest file in `alembic/versions/`: revisions are named after their files
and numbered in order, and `bkit_schema` says the baseline's version plus one per revision
after it (`tests/store/test_migrations.py` holds all three to Alembic's own view).
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

VERSIONS = Path(__file__).with_name("alembic") / "versions"
#: `bkit_schema` version of the baseline revision (`0001_baseline.BKIT_SCHEMA_VERSION`).
BASELINE_SCHEMA_VERSION = 4

_ready: set[str] = set()
_ready_lock = threading.Lock()


@cache
def _revisions() -> list[str]:
    return sorted(path.stem for path in VERSIONS.glob("[0-9]*.py"))


def head_revision() -> str:
    """The newest revision shipped: the highest-numbered file in `alembic/versions/`."""
    return _revisions()[-1]


def head_schema_version() -> int:
    """The `bkit_schema` version of the head revision."""
    return BASELINE_SCHEMA_VERSION + len(_revisions()) - 1


def at_head(engine: Engine) -> bool:
    """True if the database's one Alembic revision is the head and `bkit_schema` says its
    version. False for anything else, including a database without those tables or out of
    reach: the upgrade then does the work, or says what is wrong."""
    try:
        with engine.connect() as conn:
            revisions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            versions = conn.execute(text("SELECT version FROM bkit_schema")).all()
    except DBAPIError:
        return False
    return ([tuple(row) for row in revisions] == [(head_revision(),)]
            and [tuple(row) for row in versions] == [(head_schema_version(),)])


def ensure_schema(engine: Engine) -> None:
    """Upgrade once per process and engine URL (threads of one process wait for the first:
    a tick and the event follower often start together on a new file)."""
    key = str(engine.url)
    if key in _ready:
        return
    with _ready_lock:
        if key not in _ready:
            if not at_head(engine):
                from bkit.store.migrations import upgrade

                upgrade(engine)
            _ready.add(key)

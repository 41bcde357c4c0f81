"""Schema migrations through Alembic: `bkit db upgrade` (also run automatically at worker start
by `bkit.store.schema_check.ensure_schema` when the database is not at the head).

The Alembic environment ships inside the package (`bkit/store/alembic/`: `env.py` and
`versions/`) and is configured here, so no alembic.ini is needed at run time. Everything runs
in one transaction under a lock (a PostgreSQL advisory lock; SQLite's `BEGIN IMMEDIATE`), so
two workers starting at once do not race. A database newer than this code is never touched:
that is an error, not a reason to recreate tables over user data.

Databases made by the hand-made migrations this replaced (a `bkit_schema` row, versions 1
to 4) are brought to revision `0001_baseline` in place (missing tables created, missing
columns added with defaults for the rows already there), stamped, then upgraded like any
other. `bkit_schema` is kept: its version is the baseline's 4 plus one per later revision,
so `bkit health` and an older bkit (which refuses a database newer than it knows) read it.

A new revision: change the models, then `python -m bkit.store.migrations revision "what"`
writes `versions/NNNN_what.py` from the difference (check it by hand before committing).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

from bkit.core.errors import BkitError
from bkit.store.engine import DatabaseUnavailableError

SCRIPTS = Path(__file__).with_name("alembic")
BASELINE = "0001_baseline"
#: Taken by every upgrade on PostgreSQL (the same key as the hand-made migrations took, so an
#: older bkit starting beside this one waits too).
ADVISORY_LOCK = 727001
#: Tables only bkit's schema makes: one of them without any version record means a database
#: of unknown shape. (`candle_cache` and `backtest_result` may be made on first use.)
LIVE_TABLES = ("strategy_symbol", "signal", "order_intent", "event")


def _not_setup_chatter(record: logging.LogRecord) -> bool:
    # Alembic says which dialect it uses on every run: every worker process would log it at
    # start. What it migrates ("Running upgrade …") is kept.
    return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_not_setup_chatter)
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # "setup plugin …"


class SchemaError(BkitError):
    """The database schema cannot be used by this version of bkit."""


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(SCRIPTS))


def _config(conn: Connection, target_metadata: sa.MetaData | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = conn
    config.attributes["target_metadata"] = target_metadata
    return config


@cache
def _schema_numbers() -> dict[str, int]:
    """`bkit_schema` version of each revision: the baseline's, plus one per revision after."""
    scripts = _scripts()
    heads = scripts.get_heads()
    if len(heads) != 1:  # pragma: no cover - a packaging mistake, caught by the tests
        raise SchemaError(f"the migrations have {len(heads)} heads; merge them")
    chain = list(reversed(list(scripts.walk_revisions("base", heads[0]))))
    first = int(chain[0].module.BKIT_SCHEMA_VERSION)
    return {script.revision: first + i for i, script in enumerate(chain)}


HEAD: str = _scripts().get_current_head() or BASELINE
LATEST_VERSION: int = _schema_numbers()[HEAD]


def current_version(conn: Connection) -> int | None:
    """The `bkit_schema` version recorded in the database, None without one."""
    if not inspect(conn).has_table("bkit_schema"):
        return None
    row = conn.execute(text("SELECT version FROM bkit_schema WHERE id = 1")).first()
    return None if row is None else int(row[0])


def current_revision(conn: Connection) -> str | None:
    """The Alembic revision the database is at, None before Alembic ever ran on it."""
    return MigrationContext.configure(conn).get_current_revision()


def _newer(found: str) -> SchemaError:
    return SchemaError(f"database schema {found} is newer than this bkit ({LATEST_VERSION}, "
                       f"{HEAD}); upgrade bkit instead of downgrading the database")


def _server_default(value: Any, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """The DDL default for rows already there: a bound literal rendered by the dialect."""
    return sa.literal(value, type_=column.type)


def _bring_to_baseline(conn: Connection, legacy: int) -> None:
    """Make a database of the hand-made migrations (version `legacy`) the baseline schema:
    create what is missing, add missing columns (NOT NULL ones with their default filled in
    for existing rows). No row is rewritten except to fill such a column."""
    baseline = _scripts().get_revision(BASELINE).module
    metadata = sa.MetaData()
    baseline.define(metadata)
    ops = Operations(MigrationContext.configure(conn))
    postgres = conn.dialect.name == "postgresql"
    for table in metadata.sorted_tables:
        if not inspect(conn).has_table(table.name):
            table.create(conn)
            continue
        present = {c["name"]: c for c in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            default = column.default.arg if isinstance(column.default, sa.ColumnDefault) \
                else None
            if column.name not in present:
                if not column.nullable and default is None:
                    raise SchemaError(f"schema {legacy}: {table.name}.{column.name} is missing "
                                      "and has no default to give the rows already there")
                ops.add_column(table.name, sa.Column(
                    column.name, column.type, nullable=column.nullable,
                    server_default=None if column.nullable else _server_default(default,
                                                                                column)))
                if postgres and not column.nullable:  # as made fresh: no DDL default
                    ops.alter_column(table.name, column.name, server_default=None)
            elif postgres and present[column.name]["nullable"] and not column.nullable \
                    and default is not None:
                # Migration 4 added these nullable; PostgreSQL can say NOT NULL in place
                # (SQLite cannot without rebuilding the table: there they stay nullable,
                # and every row has a value).
                conn.execute(table.update().where(column.is_(None)).values({column: default}))
                ops.alter_column(table.name, column.name, nullable=False)
        indexes = {i["name"] for i in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)


def _prepare(conn: Connection) -> int | None:
    """Refuse what must not be touched; bring a legacy database to the stamped baseline.
    Returns the schema version found (None for an empty database)."""
    revision = current_revision(conn)
    legacy = current_version(conn)
    if revision is not None:
        try:
            _scripts().get_revision(revision)
        except (CommandError, RevisionError) as exc:
            raise _newer(f"revision {revision}") from exc
        if revision not in _schema_numbers():  # pragma: no cover - a branch we never ship
            raise _newer(f"revision {revision}")
    if legacy is not None and legacy > LATEST_VERSION:
        raise _newer(f"version {legacy}")
    if revision is not None:
        return _schema_numbers()[revision]
    if legacy is None:
        found = [t for t in LIVE_TABLES if inspect(conn).has_table(t)]
        if found:
            raise SchemaError(f"found bkit tables ({', '.join(found)}) without a schema "
                              "version; refusing to migrate a database of unknown shape")
        return None
    _bring_to_baseline(conn, legacy)
    command.stamp(_config(conn), BASELINE)
    return legacy


def _record_version(conn: Connection) -> None:
    """Keep `bkit_schema` saying the version of the head revision."""
    table = sa.table("bkit_schema", sa.column("id"), sa.column("version"),
                     sa.column("migrated_at"))
    now = datetime.now(UTC)
    row = conn.execute(sa.select(table.c.version).where(table.c.id == 1)).first()
    if row is None:
        conn.execute(table.insert().values(id=1, version=LATEST_VERSION,
                                           migrated_at=_stored(conn, now)))
    elif int(row[0]) != LATEST_VERSION:
        conn.execute(table.update().where(table.c.id == 1).values(
            version=LATEST_VERSION, migrated_at=_stored(conn, now)))


def _stored(conn: Connection, moment: datetime) -> datetime:
    # As bkit.store.types.UTCDateTime stores it: naive UTC on SQLite.
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment


def upgrade(engine: Engine) -> tuple[int | None, int]:
    """Bring the schema to the head revision. Returns (version before, version after), as
    `bkit_schema` versions (None: the database was empty).

    Raises `SchemaError` if the database is newer than this code, or holds bkit tables with no
    version record (hand-made or damaged: we refuse to guess), and `DatabaseUnavailableError`
    if it cannot be reached.
    """
    for attempt in range(4):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": ADVISORY_LOCK})
                before = _prepare(conn)
                command.upgrade(_config(conn), "head")
                _record_version(conn)
                return before, LATEST_VERSION
        except OperationalError as exc:
            # SQLite answers "database is locked" at once (no busy wait) when two first
            # connections race on a new file; the upgrade is idempotent: try again.
            # A racer that read the schema before the other's commit finds its tables made
            # ("already exists"): looking again finds the revision stamped, nothing to do.
            racing = "locked" in str(exc.orig) or "already exists" in str(exc.orig)
            if engine.dialect.name == "sqlite" and racing and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise DatabaseUnavailableError(
                f"cannot reach the database {engine.url.render_as_string(hide_password=True)}"
                f": {exc.orig}") from exc
    raise AssertionError("unreachable")


def model_metadata() -> sa.MetaData:
    """The metadata of every bkit model the migrations cover (what autogenerate compares)."""
    from sqlmodel import SQLModel

    import bkit.backtest.store
    import bkit.exchange.candle_cache
    import bkit.store.tables  # noqa: F401  (the imports register the tables)

    return SQLModel.metadata


def schema_differences(conn: Connection) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models (empty when the
    revisions describe the models exactly)."""
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, model_metadata()))


def new_revision(message: str) -> None:
    """Write a revision from the difference between the head schema and the models, using a
    scratch SQLite database (review it: SQLite-only details may need adjusting)."""
    import tempfile

    from bkit.store.engine import make_engine

    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/head.sqlite")
        upgrade(engine)
        with engine.begin() as conn:
            config = _config(conn, model_metadata())
            config.set_main_option("file_template", "%%(rev)s")  # rev_id has the slug
            number = len(_schema_numbers()) + 1
            slug = "_".join(message.lower().split())[:40]
            command.revision(config, message, autogenerate=True,
                             rev_id=f"{number:04d}_{slug}")
        engine.dispose()


if __name__ == "__main__":  # python -m bkit.store.migrations revision "what changed"
    if sys.argv[1:2] != ["revision"] or len(sys.argv) != 3:
        sys.exit('usage: python -m bkit.store.migrations revision "what changed"')
    new_revision(sys.argv[2])

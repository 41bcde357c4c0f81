"""Schema migrations: `bkit db upgrade` (also run automatically at worker start).

Each migration is a function applied in order inside one transaction under a lock, and the
version is recorded in `bkit_schema`. A database with a newer version than this code knows is
never touched: that is an error, not a reason to recreate tables over user data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from bkit.core.errors import BkitError
from bkit.store import tables
from bkit.store.engine import DatabaseUnavailableError


class SchemaError(BkitError):
    """The database schema cannot be used by this version of bkit."""


def _create_v1(conn: Connection) -> None:
    wanted = [t.__table__ for t in (  # type: ignore[attr-defined]
        tables.StrategySymbol, tables.SignalRecord, tables.RiskBudget, tables.RiskSlot,
        tables.EventRecord, tables.OrderIntent, tables.BkitSetting, tables.SchemaVersion)]
    SQLModel.metadata.create_all(conn, tables=wanted, checkfirst=True)


def _create_v2(conn: Connection) -> None:
    """The shared candle cache table of the exchange layer, when it is installed."""
    try:
        from bkit.exchange.candle_cache import CachedCandleBatch
    except ImportError:  # pragma: no cover - the exchange layer ships with bkit
        return
    SQLModel.metadata.create_all(conn, tables=[CachedCandleBatch.__table__], checkfirst=True)


def _create_v3(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, tables=[tables.PaperOrder.__table__],  # type: ignore
                                 checkfirst=True)


def _add_missing_columns(conn: Connection, table: Any) -> None:
    """ALTER TABLE … ADD COLUMN for every column of `table` the database lacks (new columns
    all have defaults or are nullable, so existing rows stay valid)."""
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name in present:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = ""
        if column.default is not None and getattr(column.default, "is_scalar", False):
            value = column.default.arg
            default = f" DEFAULT {int(value) if isinstance(value, bool) else value!r}"
            if conn.dialect.name == "postgresql" and isinstance(value, bool):
                default = f" DEFAULT {'true' if value else 'false'}"
        conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
                          f"{default}"))
        if default:
            conn.execute(text(f'UPDATE "{table.name}" SET "{column.name}" = '
                              f"{default.removeprefix(' DEFAULT ')} "
                              f'WHERE "{column.name}" IS NULL'))


def _create_v4(conn: Connection) -> None:
    """The order lifecycle: position amounts, dust, realised PnL and `stuck` on signals;
    settle-window evidence, refusals, polls and fees on order intents."""
    for model in (tables.SignalRecord, tables.OrderIntent, tables.PaperOrder):
        _add_missing_columns(conn, model.__table__)  # type: ignore[attr-defined]


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "keys, signals, risk slots, events, order intents", _create_v1),
    (2, "candle cache", _create_v2),
    (3, "paper broker orders", _create_v3),
    (4, "order lifecycle: amounts, dust, realised PnL, stuck; intent evidence and fees",
     _create_v4),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table("bkit_schema"):
        return None
    row = conn.execute(text("SELECT version FROM bkit_schema WHERE id = 1")).first()
    return None if row is None else int(row[0])


def upgrade(engine: Engine) -> tuple[int | None, int]:
    """Bring the schema to `LATEST_VERSION`. Returns (version before, version after).

    Raises `SchemaError` if the database is newer than this code, or holds bkit tables with no
    version record (hand-made or damaged: we refuse to guess), and `DatabaseUnavailableError`
    if it cannot be reached.
    """
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(727001)"))
            before = current_version(conn)
            if before is not None and before > LATEST_VERSION:
                raise SchemaError(
                    f"database schema version {before} is newer than this bkit "
                    f"({LATEST_VERSION}); upgrade bkit instead of downgrading the database")
            if before is None and inspect(conn).has_table("signal"):
                raise SchemaError("found bkit tables without a bkit_schema version row; "
                                  "refusing to migrate a database of unknown shape")
            start = before or 0
            for version, _description, step in MIGRATIONS:
                if version > start:
                    step(conn)
            now = datetime.now(UTC)
            if before is None:
                conn.execute(tables.SchemaVersion.__table__.insert().values(  # type: ignore
                    id=1, version=LATEST_VERSION, migrated_at=now))
            elif before < LATEST_VERSION:
                conn.execute(tables.SchemaVersion.__table__.update()  # type: ignore
                             .where(tables.SchemaVersion.id == 1)
                             .values(version=LATEST_VERSION, migrated_at=now))
            return before, LATEST_VERSION
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}") from exc


_ready: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Upgrade once per process and engine URL."""
    key = str(engine.url)
    if key not in _ready:
        upgrade(engine)
        _ready.add(key)

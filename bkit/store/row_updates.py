"""Rows the tick reads with Core and writes back with one statement per shape.

The ORM's unit of work loads each row into an instrumented object and sends one UPDATE per
changed row (it checks each row count): most of a tick batch's time at thousands of keys.
The tick's write-back holds every row it changes under its lock, so it reads them as
`LoadedRow`s (plain attributes, no instrumentation) and `write_rows` sends their changes
together: rows are grouped by the set of columns that changed (a column another statement
updated meanwhile, such as an error counter, is never in a group that did not change it) and
each group is one statement: on PostgreSQL an `UPDATE … FROM unnest(arrays)` (one
statement whatever the number of rows, its text fixed per shape so it is prepared once),
elsewhere an `executemany`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, cast, func, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

_PK = "_row_pk"


class LoadedRow:
    """One table row read with Core: its columns as attributes (set them freely), the table
    it came from, and what changed since it was read."""

    def __init__(self, table: Table, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self.__dict__["_table"] = table
        self.__dict__["_loaded"] = dict(values)

    def __getattr__(self, name: str) -> Any:  # only reached for a name that is no column
        raise AttributeError(f"{self.__dict__['_table'].name} row has no column {name!r}")

    def changes(self) -> dict[str, Any]:
        """The columns whose value differs from the one read (same value: no change)."""
        loaded = self.__dict__["_loaded"]
        return {name: value for name, value in self.__dict__.items()
                if name in loaded and value != loaded[name]}

    def __repr__(self) -> str:
        return f"LoadedRow({self.__dict__['_table'].name}, id={self.__dict__.get('id')})"


def loaded_rows(table: Table, result: Iterable[Any]) -> list[LoadedRow]:
    """`LoadedRow`s of a Core result's rows (selected or returned with all of `table`'s
    columns)."""
    return [LoadedRow(table, row._mapping) for row in result]


def write_rows(session: Session, rows: Iterable[LoadedRow]) -> int:
    """Send the changes of `rows` (of tables with an integer `id`), grouped by shape, one
    statement each; afterwards each row counts as just read. Returns the rows written."""
    groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    done = []
    for row in rows:
        changed = row.changes()
        if not changed:
            continue
        table = row.__dict__["_table"]
        groups.setdefault((table, tuple(sorted(changed))), []).append(
            {_PK: row.id, **changed})
        done.append((row, changed))
    if not groups:
        return 0
    connection = session.connection()
    dialect = connection.dialect
    for (table, columns), params in groups.items():
        if dialect.name == "postgresql" and len(params) > 1:
            connection.execute(*_unnest_update(table, columns, params, dialect))
        else:
            connection.execute(update(table).where(table.c.id == bindparam(_PK)), params)
    for row, changed in done:
        row.__dict__["_loaded"].update(changed)
    return len(done)


def _unnest_update(table: Table, columns: tuple[str, ...], params: list[dict[str, Any]],
                   dialect: Dialect) -> tuple[Any, dict[str, list[Any]]]:
    """`UPDATE t SET c = u.c … FROM unnest(ids, c …) AS u WHERE t.id = u.id` and its arrays
    (one per column, each value through the column's own bind processing), built with
    SQLAlchemy constructs: every value is a bound parameter."""
    cols = [table.c[name] for name in columns]
    arrays: dict[str, list[Any]] = {"row_ids": [p[_PK] for p in params]}
    args = [cast(bindparam("row_ids"), ARRAY(BigInteger))]
    for i, column in enumerate(cols):
        process = column.type.bind_processor(dialect)
        values = [p[column.key] for p in params]
        arrays[f"c{i}"] = values if process is None else [process(v) for v in values]
        impl = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
        args.append(cast(bindparam(f"c{i}"), ARRAY(impl)))
    rows = func.unnest(*args).table_valued("row_id", *[c.name for c in cols]) \
        .render_derived(name="u")
    stmt = update(table).where(table.c.id == rows.c.row_id).values(
        {c.name: rows.c[c.name] for c in cols})
    return stmt, arrays

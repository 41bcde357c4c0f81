"""Write the pending changes of many loaded rows with one executemany per shape.

The ORM's unit of work sends one UPDATE per changed row (it checks each row count), which is
most of a tick batch's round trips. The tick's write-back holds every row it changes under
its lock, so it can send them together instead: rows are grouped by the set of columns that
changed (a column another statement updated meanwhile, such as an error counter, is never in
a group it did not change in) and each group is one `executemany`, which psycopg sends as one
pipeline. The rows are then taken out of the session, so its flush does not send them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, inspect, update
from sqlmodel import Session

_PK = "_row_pk"


def changed_values(obj: Any) -> dict[str, Any]:
    """The columns of a loaded row whose value changed since it was loaded, with their new
    values (a column set to its old value is not a change)."""
    state = inspect(obj)
    if not state.modified or state.key is None:  # untouched, or not loaded from the table
        return {}
    # `committed_state` holds the loaded value of every attribute set since the load.
    current = state.dict
    return {name: current[name] for name, loaded in state.committed_state.items()
            if name in current and current[name] != loaded}


def write_rows(session: Session, rows: Iterable[Any]) -> int:
    """Send the changes of `rows` (loaded rows of tables with an integer `id`) grouped by
    shape, one executemany each, and expunge them. Returns how many rows were written."""
    groups: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}
    done = []
    for obj in rows:
        changed = changed_values(obj)
        if not changed:
            continue
        table = type(obj).__table__
        shape = (table, tuple(sorted(changed)))
        groups.setdefault(shape, []).append({_PK: obj.id, **changed})
        done.append(obj)
    if not groups:
        return 0
    connection = session.connection()
    for (table, _columns), params in groups.items():
        connection.execute(update(table).where(table.c.id == bindparam(_PK)), params)
    for obj in done:
        session.expunge(obj)
    return len(done)

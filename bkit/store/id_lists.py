"""`WHERE id IN (…)` for a batch of keys, written so the statement text does not change with
the batch: on PostgreSQL `col = ANY(:ids)` with one array parameter (psycopg parses and the
server plans it once, then reuses the prepared statement), elsewhere an ordinary IN list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY


def ids_in(column: Any, ids: Sequence[int], dialect: str) -> Any:
    """The condition `column` is one of `ids`, for the named dialect."""
    if dialect == "postgresql":
        return column == any_(bindparam(f"{column.key}_ids", [int(i) for i in ids],
                                        type_=ARRAY(BigInteger)))
    return column.in_([int(i) for i in ids])

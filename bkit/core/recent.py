"""The most recent entries of an `OrderedDict`: a bounded, least-recently-stored-first memory
(the candle cache's windows, a broker's orders). Pure, no I/O; the caller does the locking."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def put_recent(entries: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Store `value` under `key` as the most recent entry, then drop the least recent ones
    beyond `limit`."""
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > limit:
        entries.popitem(last=False)

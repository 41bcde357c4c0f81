"""The suite runs in two parts (Makefile `test`): the `exclusive` tests alone, then the rest on
two pytest-xdist workers (`-n 2 --dist loadfile`: each file on one worker, in its order).
Tests that pick a shared resource by number (a Redis database) take it from the worker's
slot, so the two workers never share one."""

from __future__ import annotations

import os


def slot(count: int) -> int:
    """0 … count-1: the xdist worker's number (gw0, gw1 …), or this process's pid without
    xdist (runs started by hand on one machine then rarely collide either). Subprocesses
    inherit the worker's `PYTEST_XDIST_WORKER`, so a flow run as a child picks the same."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else os.getpid()
    return number % count

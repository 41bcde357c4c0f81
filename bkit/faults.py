"""Crash points for the crash-matrix tests (like failpoints in databases): the process dies
with SIGKILL at a named instant, once, when `BKIT_CRASH_POINTS` names it.

    BKIT_CRASH_POINTS="tick.after_commit"          # the worker child dies there once
    BKIT_CRASH_POINTS="submit.after_send@main"     # the worker's main process dies too

Each point fires at most once across all processes sharing BKIT_HOME (a marker file is
created first), so a restarted worker does not die again. Unset: a dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "BKIT_CRASH_POINTS"
POINTS = ("tick.before_writeback", "tick.after_commit", "submit.before_send",
          "submit.after_send")


def crash_point(name: str) -> None:
    """Die here if `BKIT_CRASH_POINTS` asks for it and it has not fired yet."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for entry in spec.split(","):
        point, _, scope = entry.strip().partition("@")
        if point == name and _first_time(name):
            if scope == "main":
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def _first_time(name: str) -> bool:
    from bkit.settings import get_settings

    folder = Path(get_settings().home) / "crash-points"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def fired(home: Path, name: str) -> bool:
    """Whether the crash point `name` has fired for this BKIT_HOME (tests)."""
    return (Path(home) / "crash-points" / name).exists()

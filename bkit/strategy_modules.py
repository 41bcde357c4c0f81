"""The user's strategy modules (`BKIT_STRATEGIES`): imported once per process by the worker at
start, the admin script and the backtest command. Apart from `bkit.runtime` so that
`bkit.celery` can import them at worker start without importing the runtime (which imports
`bkit.celery` to send tasks)."""

from __future__ import annotations

import importlib
import os
import sys

from bkit.core.errors import BkitError
from bkit.settings import get_settings

_imported: set[str] = set()


class StrategyImportError(BkitError):
    """A module named in BKIT_STRATEGIES could not be imported."""


def import_strategy_modules(modules: list[str] | None = None) -> list[str]:
    """Import the user's strategy modules (BKIT_STRATEGIES) once per process.

    The current directory is put on sys.path so `BKIT_STRATEGIES=my_strategies` works from
    a project folder. A failing module raises `StrategyImportError` naming it and the cause.
    """
    names = get_settings().strategy_modules if modules is None else modules
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    done = []
    for name in names:
        if name in _imported:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise StrategyImportError(
                f"cannot import strategy module {name!r} (BKIT_STRATEGIES): "
                f"{type(exc).__name__}: {exc}") from exc
        _imported.add(name)
        done.append(name)
    return done

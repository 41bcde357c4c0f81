"""Fixtures of the backtest tests: a throwaway BKIT_HOME (so the candle cache and, for the
`Live.tick` side of the parity test, the SQLite database live in tmp), and a clean registry,
config, frames, listeners and backtest results around each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bkit import events
from bkit.backtest import FRAMES, Backtest
from bkit.backtest import listeners as backtest_listeners
from bkit.backtest.runner import clear_price_cache
from bkit.core.registry import REGISTRY, reset_config
from bkit.settings import reset_settings
from bkit.store.engine import dispose_all


def _reset() -> None:
    import sys

    from bkit import runtime

    # The CLI tests import their strategy module by name: import it afresh each time.
    sys.modules.pop("tests.backtest.cli_strategies", None)
    runtime._imported.discard("tests.backtest.cli_strategies")
    REGISTRY.clear()
    FRAMES.clear()
    reset_config()
    events.stop_follower()
    events.clear_listeners()
    backtest_listeners.clear_listeners()
    Backtest.clear()
    clear_price_cache()
    reset_settings()
    dispose_all()


@pytest.fixture(autouse=True)
def backtest_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in [k for k in __import__("os").environ if k.startswith("BKIT_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("BKIT_HOME", str(home))
    _reset()
    yield home
    _reset()

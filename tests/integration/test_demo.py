"""`bkit demo` is deterministic and says what it does; the embedded run's log is quiet
(no `Discarding revoked task` flood after a pause, no `No hostname was supplied`)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bkit.clock import SteppedClock, clock_from_settings
from bkit.settings import reset_settings
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import StrategySymbol
from tests.integration.conftest import REPO, Runtime, wait_until
from tests.subprocesses import run_at_once

pytestmark = pytest.mark.integration
BKIT = Path(sys.executable).parent / "bkit"


def _demos(tmp_path: Path, minutes: int) -> list[list[str]]:
    """`bkit demo` twice at the same time, each on its own embedded database and broker: once
    with `--home`, once in its default home (`$BKIT_HOME/demo`). The output of each, less
    its `state in <home>` line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKIT_")}
    env["BKIT_HOME"] = str(tmp_path)
    demo = [str(BKIT), "demo", "--minutes", str(minutes), "--speed", "6000"]
    done = run_at_once([[*demo, "--home", str(tmp_path / "one")], demo], env=env, cwd=REPO,
                       timeout=150)
    outputs = []
    for proc in done:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stderr == "", proc.stderr  # the worker's output goes to its log file
        outputs.append([line for line in proc.stdout.splitlines()
                        if not line.startswith("state in ")])
    return outputs


def test_demo_twice_prints_the_same_trades_for_both_pairs(tmp_path: Path) -> None:
    # Two runs at once: each steps its own market clock, so neither may depend on the other's
    # (or the machine's) timing for its output to be the same.
    first, second = _demos(tmp_path, 80)
    assert first == second
    assert first[0].startswith("bkit demo: demo-mean-reversion on XRP/ETH, UNITTEST/BTC")
    assert (tmp_path / "one" / "bkit.sqlite").exists()
    assert (tmp_path / "demo" / "bkit.sqlite").exists()  # the default home
    text = "\n".join(first)
    for symbol in ("XRP/ETH", "UNITTEST/BTC"):
        assert re.search(rf"{re.escape(symbol)} +closed .* PnL [+-]", text), text
    # gaps of the recorded feed are named as such, and nothing else went wrong
    assert " no price  no candle closed in the 5 minutes before: a gap in the recorded feed" \
        in text
    assert " error " not in text and "Traceback" not in text
    assert re.search(r"^done: \d+ opened, [1-9]\d* closed, .* 0 errors$", text, re.M), text
    # the summary counts the trades printed
    opened = [line for line in first if " opened " in line]
    assert opened and f"done: {len(opened)} opened, " in text, text


def test_stepped_clock_is_read_from_its_file_by_every_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2019, 10, 11, 4, tzinfo=UTC)
    monkeypatch.setenv("BKIT_REPLAY_START", start.isoformat())
    monkeypatch.setenv("BKIT_REPLAY_CLOCK_FILE", str(tmp_path / "market-now"))
    monkeypatch.setenv("BKIT_REPLAY_SPEED", "60")
    reset_settings()
    try:
        clock = clock_from_settings()
        assert isinstance(clock, SteppedClock)
        assert clock.now() == start  # no file yet
        later = datetime(2019, 10, 11, 4, 7, tzinfo=UTC)
        SteppedClock(tmp_path / "market-now", start).set(later)
        assert clock.now() == later
        time.sleep(0.05)
        assert clock.now() == later  # it moves only when the driver moves it
        assert clock.wall_seconds(60) == pytest.approx(1.0)
    finally:
        reset_settings()


def test_embedded_run_after_a_pause_logs_one_line_for_expired_ticks_and_no_hostname_warning(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(None, None, speed=60.0)  # SQLite + filesystem broker
    engine = get_engine()
    upgrade(engine)
    key_id = ensure_key(engine, "it-long", "paper", "XRP/ETH")
    from bkit.celery import app

    # a pause: tick messages queued while no worker ran, expired when one starts
    for minute in range(30):
        app.send_task("bkit.tick_batch", args=[[key_id], minute], queue="ticks",
                      expires=0.01)
    time.sleep(0.1)
    runtime.start_worker("-B", "-s", str(runtime.home / "beat-schedule"))
    log = next(runtime.home.glob("w0-*.log"))

    def ticked() -> bool:
        with session_scope(engine) as session:
            key = session.get(StrategySymbol, key_id)
            return key is not None and key.last_tick_at is not None

    wait_until(ticked, 30, message="the key ticked")
    wait_until(lambda: b"expired task(s) discarded" in log.read_bytes(), 30,
               message="the expired-task summary")
    time.sleep(2)
    text = log.read_text()
    assert "Discarding revoked task" not in text
    assert "No hostname was supplied" not in text
    (summary,) = re.findall(r"bkit: (\d+) expired task\(s\) discarded unrun.*", text)
    assert int(summary) >= 30

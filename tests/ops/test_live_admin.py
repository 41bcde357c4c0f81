"""Admin changes while a real worker ticks (embedded: SQLite + filesystem broker + beat inside
the worker, replay clock at 60x): a disabled key gets no new tick after the next fan-out, and
re-enabling it takes effect without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bkit.store.engine import session_scope
from bkit.store.tables import StrategySymbol, TickHistoryRecord
from tests.ops.conftest import REPO, OpsEnv, stop_process, wait_until
from tests.ops.strategies_ops import EXCHANGE, START, STRATEGY

pytestmark = pytest.mark.integration
XRP, BTC = "XRP/ETH", "UNITTEST/BTC"


def ticks(ops: OpsEnv, symbol: str, after_id: int = 0) -> int:
    """Completed ticks of the key (one compact tick-history row each) after row `after_id`."""
    with session_scope(ops.engine) as session:
        return int(session.execute(select(func.count()).select_from(TickHistoryRecord).join(
            StrategySymbol, StrategySymbol.id == TickHistoryRecord.key_id).where(
            StrategySymbol.symbol == symbol,
            TickHistoryRecord.id > after_id)).scalar_one())  # type: ignore[operator]


def last_event_id(ops: OpsEnv) -> int:
    """The newest tick-history row: ticks after it are ticks after now."""
    with session_scope(ops.engine) as session:
        return int(session.execute(select(func.max(TickHistoryRecord.id))).scalar() or 0)


@pytest.fixture
def worker(sqlite_ops: OpsEnv, tmp_path: Path) -> Iterator[OpsEnv]:
    """`celery -A bkit worker -B -c 2` ticking the ops keys on a replay clock."""
    sqlite_ops.env.update({
        "BKIT_REPLAY_START": START.isoformat(),
        "BKIT_REPLAY_EPOCH": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "BKIT_REPLAY_SPEED": "60", "BKIT_TICK_SECONDS": "61"})
    enabled = sqlite_ops.bkit("enable", STRATEGY, XRP, BTC, "--exchange", EXCHANGE)
    assert enabled.returncode == 0, enabled.stderr
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bkit", "worker", "-B", "-c", "2",
         "-s", str(tmp_path / "celerybeat-schedule"), "--loglevel", "WARNING"],
        env=sqlite_ops.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield sqlite_ops
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop_process(proc)
        log.close()


def test_disable_and_enable_while_the_worker_ticks(worker: OpsEnv) -> None:
    ops = worker
    wait_until(lambda: ticks(ops, XRP) >= 2 and ticks(ops, BTC) >= 2, 60,
               "the worker to tick both keys")
    status = ops.bkit("status", STRATEGY, "--json")
    assert status.returncode == 0, status.stderr
    lags = [k["last_tick_lag_ms"] for k in json.loads(status.stdout)["keys"]]
    # a replayed market minute lasts 1 s of wall time: ticks are written within a few seconds
    assert len(lags) == 2 and all(0 < lag < 5000 for lag in lags), lags

    disabled = ops.bkit("disable", STRATEGY, BTC, "--exchange", EXCHANGE, "--force")
    assert disabled.returncode == 0, disabled.stderr
    marker = last_event_id(ops)
    # the next fan-out, and one after it, have completed for the key still enabled
    wait_until(lambda: ticks(ops, XRP, marker) >= 2, 30, "two more XRP/ETH ticks")
    late = ticks(ops, BTC, marker)
    assert late <= 1  # at most a tick claimed before the disable was written
    settled = last_event_id(ops)
    wait_until(lambda: ticks(ops, XRP, settled) >= 3, 30, "three more XRP/ETH ticks")
    assert ticks(ops, BTC, settled) == 0  # no tick of the disabled key after the fan-out

    enabled = ops.bkit("enable", STRATEGY, BTC, "--exchange", EXCHANGE)
    assert enabled.returncode == 0, enabled.stderr
    again = last_event_id(ops)
    wait_until(lambda: ticks(ops, BTC, again) >= 2, 30, "UNITTEST/BTC ticking again")

"""Backtest tasks (SPEC §12): one backtest per message on the `backtest` queue, its
results written once to the database when it has finished (a thin adapter over
`bkit.backtest.batch`)."""

from __future__ import annotations

import logging
from typing import Any

from bkit.backtest.batch import TASK_NAME, BacktestTask, run_task
from bkit.celery import app

log = logging.getLogger("bkit.workers.backtests")


@app.task(name=TASK_NAME, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_backtest(run_id: str, task: dict[str, Any]) -> int:
    """Run one backtest task and store its results (or its error) under `run_id`.
    Idempotent: a redelivered task finds its rows and writes nothing."""
    from bkit.backtest.store import save_error, save_results
    from bkit.store.engine import get_engine

    job = BacktestTask.from_dict(task)
    outcome = run_task(job)
    engine = get_engine()
    if outcome.error is not None:
        log.warning("backtest %s %s %s: %s", run_id, job.strategy_name, job.symbols,
                    outcome.error)
        return save_error(engine, run_id, job.strategy_name, job.exchange_name, job.symbols,
                          job.frame_name, outcome.error)
    return save_results(engine, run_id, outcome.results)

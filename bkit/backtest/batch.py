"""Many backtests at once (SPEC §12): a set of (strategy × symbol × frame) tasks run
in-process (in parallel processes) or as Celery tasks on the `backtest` queue, with a
progress bar, then one merged report ranked by a §9 metric.

A strategy with a risk profile runs its symbols in one task, so the profile's
`max_concurrent_positions` is counted across them as live counts it; any other strategy
gets one task per symbol. Variants of a strategy registered in a loop (one name per
parameter set) are the parameter grid: the walker ranks them like any strategies.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from bkit.backtest.frames import FrameSchema, make_frame
from bkit.backtest.results import BacktestResult
from bkit.backtest.runner import BacktestRun, plan_backtest
from bkit.core.errors import BkitError
from bkit.core.registry import REGISTRY, Registry

#: The Celery task and its queue (route: "bkit.backtest.*" → "backtest").
TASK_NAME = "bkit.backtest.run"
QUEUE = "backtest"


@dataclass(frozen=True)
class BacktestTask:
    """One unit of work: a strategy over a frame for one symbol (or, with a risk profile,
    the symbols that share its budget). JSON-ready (`asdict`) for a Celery message."""

    strategy_name: str
    exchange_name: str
    symbols: tuple[str, ...]
    frame_name: str
    start: str            # ISO UTC
    end: str              # ISO UTC
    interval: str = "1m"
    use_cache: bool = True

    def frame(self) -> FrameSchema:
        return make_frame(self.frame_name, datetime.fromisoformat(self.start),
                          datetime.fromisoformat(self.end), self.interval)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> BacktestTask:
        return BacktestTask(**{**data, "symbols": tuple(data["symbols"])})


@dataclass
class TaskOutcome:
    task: BacktestTask
    results: list[BacktestResult]
    error: str | None = None


def plan_tasks(strategy_names: Sequence[str], symbols: Sequence[str], exchange_name: str,
               frame: FrameSchema, *, registry: Registry = REGISTRY, use_cache: bool = True
               ) -> list[BacktestTask]:
    """The tasks of a batch; every name is checked first (`UnknownNameError`)."""
    registry.exchange(exchange_name)
    tasks = []
    for name in strategy_names:
        strategy = registry.strategy(name)
        groups = [tuple(symbols)] if strategy.risk_name else [(s,) for s in symbols]
        for group in groups:
            tasks.append(BacktestTask(name, exchange_name, group, frame.frame_name,
                                      frame.start.isoformat(), frame.end.isoformat(),
                                      frame.interval, use_cache))
    return tasks


def run_task(task: BacktestTask) -> TaskOutcome:
    """Run one task to its end; a refusal (unknown name, no candles) is its error."""
    try:
        plan = plan_backtest(list(task.symbols), task.strategy_name, task.exchange_name,
                             task.frame())
        results = BacktestRun(plan, use_cache=task.use_cache).run_all()
    except (BkitError, ValueError) as exc:
        return TaskOutcome(task, [], f"{type(exc).__name__}: {exc}")
    return TaskOutcome(task, results)


class Progress:
    """A progress bar on stderr: rich's when installed, else one plain line."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.done, self.enabled = total, label, 0, enabled
        self._rich: Any = None
        if enabled:
            try:
                from rich.progress import Progress as RichProgress
            except ImportError:
                pass
            else:
                self._rich = RichProgress(transient=False)
                self._rich.start()
                self._task = self._rich.add_task(label, total=total)
        self._draw()

    def advance(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        self._draw()

    def set(self, done: int) -> None:
        self.done = min(self.total, done)
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
            return
        width = 30
        filled = width * self.done // max(1, self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_in_process(tasks: Sequence[BacktestTask], *, processes: int = 1,
                   progress: Progress | None = None) -> list[TaskOutcome]:
    """Run the tasks here; with `processes` > 1 in forked worker processes (they inherit
    this process's registry, config and frames)."""
    outcomes: list[TaskOutcome] = []
    if processes <= 1 or len(tasks) <= 1:
        for task in tasks:
            outcomes.append(run_task(task))
            if progress is not None:
                progress.advance()
        return outcomes
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [pool.submit(run_task, task) for task in tasks]
        for future in as_completed(futures):
            outcomes.append(future.result())
            if progress is not None:
                progress.advance()
    order = {task: i for i, task in enumerate(tasks)}
    outcomes.sort(key=lambda o: order[o.task])
    return outcomes


def new_run_id() -> str:
    return f"bt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def send_to_workers(tasks: Sequence[BacktestTask], run_id: str, app: Any = None) -> None:
    """One Celery task per backtest task on the `backtest` queue, sent as one group."""
    from celery import group

    if app is None:
        from bkit.celery import app
    signature = app.signature
    group(signature(TASK_NAME, args=(run_id, asdict(task)), queue=QUEUE,
                    immutable=True) for task in tasks).apply_async()


def wait_for_workers(tasks: Sequence[BacktestTask], run_id: str, *, timeout: float,
                     progress: Progress | None = None, poll_seconds: float = 0.5,
                     count: Callable[[str], int] | None = None) -> int:
    """Wait until every task has written its rows (one per symbol); returns rows seen.
    Raises TimeoutError naming how many are missing."""
    from bkit.backtest.store import count_rows
    from bkit.store.engine import get_engine

    expected = sum(len(t.symbols) for t in tasks)
    counter = count or (lambda rid: count_rows(get_engine(), rid))
    deadline = time.monotonic() + timeout
    while True:
        seen = counter(run_id)
        if progress is not None:
            progress.set(seen * len(tasks) // max(1, expected))
        if seen >= expected:
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"backtest run {run_id}: {expected - seen} of {expected} "
                               f"results missing after {timeout:.0f} s (are workers "
                               f"consuming the {QUEUE!r} queue?)")
        time.sleep(poll_seconds)

"""The `Backtest` facade (SPEC §12): run, background, get_data, get_report, dump.

The same registered strategies, exchanges and risk profiles as `Live`; only the entry point
and the frame differ. Nothing here reads or writes the database: results stay in this
process (the last run of each key and frame), reports are rendered from them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bkit.backtest import commands as backtest_commands
from bkit.backtest import listeners
from bkit.backtest.frames import FrameSchema
from bkit.backtest.results import BacktestResult
from bkit.backtest.runner import BacktestRun, plan_backtest
from bkit.commit_api import PositionCommandsApi
from bkit.core.registry import get_config
from bkit.core.results import TickResult

ResultKey = tuple[str, str, str, str]


class BacktestApi(PositionCommandsApi):
    """Singleton behind `bkit.Backtest`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[ResultKey, BacktestResult] = {}
        self._running: dict[ResultKey, BacktestRun] = {}

    def run(self, symbol: str | Sequence[str], strategy_name: str, exchange_name: str,
            frame_name: str | FrameSchema, *, use_cache: bool = True,
            balance: float | None = None) -> Iterator[TickResult]:
        """Replay the frame and yield every transition (scheduled, opened, closed, cancelled)
        in time order, each `created_at` its simulated minute. `symbol` may be a list: the
        symbols then run together (a risk profile's budget is shared across them).

        `balance`: the starting balance (quote currency) a strategy's sizing sizes from
        (SPEC §11); the run's account then moves with the realised `pnl_cost` of its closed
        trades (shared by its symbols). None: `CC_SIZING_BALANCE`; with neither, entries of
        a balance-based sizing are refused (error events, stage "sizing").

        Names, symbols and the candles are checked before this returns (an unknown name
        raises `UnknownNameError`, a frame without candles `BacktestDataError`)."""
        run = BacktestRun(plan_backtest(symbol, strategy_name, exchange_name, frame_name),
                          use_cache=use_cache, balance=balance)
        return self._drive(run)

    def _drive(self, run: BacktestRun) -> Iterator[TickResult]:
        keys = [self._key(k.ctx.symbol, run) for k in run.keys]
        with self._lock:
            for key in keys:
                self._running[key] = run
        try:
            notify = listeners.has_listeners("signal_backtest")
            for transition in run:
                if notify:
                    listeners.emit("signal_backtest", transition)
                yield transition
        finally:
            with self._lock:
                for key in keys:
                    if self._running.get(key) is run:
                        del self._running[key]
        assert run.results is not None
        with self._lock:
            for key, result in zip(keys, run.results, strict=True):
                self._results[key] = result
        for result in run.results:
            listeners.emit("done_backtest", {
                "symbol": result.symbol, "strategy_name": result.strategy_name,
                "exchange_name": result.exchange_name, "frame_name": result.frame_name,
                "backtest": True})

    @staticmethod
    def _key(symbol: str, run: BacktestRun) -> ResultKey:
        plan = run.plan
        return (symbol, plan.strategy.strategy_name, plan.exchange.exchange_name,
                plan.frame.frame_name)

    def run_all(self, symbol: str | Sequence[str], strategy_name: str, exchange_name: str,
                frame_name: str | FrameSchema, *, use_cache: bool = True,
                balance: float | None = None) -> list[BacktestResult]:
        """Run to the end and return the results (one per symbol); `balance` as `run`."""
        run = BacktestRun(plan_backtest(symbol, strategy_name, exchange_name, frame_name),
                          use_cache=use_cache, balance=balance)
        for _ in self._drive(run):
            pass
        assert run.results is not None
        return run.results

    def background(self, symbol: str | Sequence[str], strategy_name: str, exchange_name: str,
                   frame_name: str | FrameSchema, *, use_cache: bool = True,
                   balance: float | None = None) -> Callable[[], None]:
        """Run in a thread (listeners get the transitions and the done event) and return
        `cancel()`: from then on no new signals, as after `Live.stop`. Checks the names and
        loads the candles before returning, like `run`; `balance` as `run`."""
        run = BacktestRun(plan_backtest(symbol, strategy_name, exchange_name, frame_name),
                          use_cache=use_cache, balance=balance)

        def drain() -> None:
            for _ in self._drive(run):
                pass
        thread = threading.Thread(target=drain, name="bkit-backtest", daemon=True)
        thread.start()

        def cancel() -> None:
            run.cancel()
        cancel.thread = thread  # type: ignore[attr-defined]  # tests join it
        return cancel

    # --- position commands from callbacks (SPEC §11, `PositionCommandsApi.commit_*`):
    # applied at the key's next minute. Only from inside a running backtest (a strategy
    # callback); `Live.commit_*` called there does the same, so a strategy runs unchanged
    # live and in a backtest.
    def command_status(self, command_id: int) -> tuple[str, str | None]:
        """(pending | accepted | refused, the message) of a command of the running
        backtest (from inside it, like the commands)."""
        found = backtest_commands.status(command_id)
        if found is None:
            raise ValueError(f"no command {command_id} in a backtest running on this thread")
        return found

    def _commit(self, symbol: str, strategy_name: str, exchange_name: str, name: str,
                value: float | None) -> int:
        command_id = backtest_commands.route(symbol, strategy_name, exchange_name, name, value)
        if command_id is None:
            raise ValueError("Backtest.commit_* works inside a running backtest (a strategy "
                             "callback); use Live.commit_* for live keys")
        return command_id

    def result(self, symbol: str, strategy_name: str, exchange_name: str,
               frame_name: str | FrameSchema) -> BacktestResult:
        """The last finished backtest of the key over the frame (ValueError if none)."""
        frame = frame_name if isinstance(frame_name, str) else frame_name.frame_name
        with self._lock:
            found = self._results.get((symbol, strategy_name, exchange_name, frame))
        if found is None:
            raise ValueError(f"no finished backtest of {strategy_name}/{exchange_name}/"
                             f"{symbol} over frame {frame!r}; run Backtest.run first")
        return found

    def get_data(self, symbol: str, strategy_name: str, exchange_name: str,
                 frame_name: str | FrameSchema) -> dict[str, Any]:
        """SPEC §9 statistics over the backtest's closed trades, `event_list`, the signal
        still open at the end (`open_signal`, `open_state`) and the frame's counters."""
        return self.result(symbol, strategy_name, exchange_name, frame_name).get_data()

    def get_report(self, symbol: str, strategy_name: str, exchange_name: str,
                   frame_name: str | FrameSchema) -> str:
        """The Markdown report of SPEC §9 for the backtest."""
        limit = get_config().CC_MAX_LIVE_MARKDOWN_ROWS
        return self.result(symbol, strategy_name, exchange_name, frame_name).markdown(
            max_rows=limit)

    def dump(self, symbol: str, strategy_name: str, exchange_name: str,
             frame_name: str | FrameSchema, path: str | Path = "./dump/backtest") -> Path:
        """Write the Markdown report (and the HTML page beside it) under `path`, each file
        atomically; returns the Markdown file."""
        result = self.result(symbol, strategy_name, exchange_name, frame_name)
        limit = get_config().CC_MAX_LIVE_MARKDOWN_ROWS
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in
                       f"{strategy_name}_{exchange_name}_{symbol}_{result.frame_name}")
        target = folder / f"{safe}.md"
        write_atomically(target, result.markdown(max_rows=limit))
        write_atomically(target.with_suffix(".html"), result.html(max_rows=limit))
        return target

    def clear(self) -> None:
        """Forget finished results (tests)."""
        with self._lock:
            self._results.clear()


def write_atomically(target: Path, text: str) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(target)


Backtest = BacktestApi()

"""Backtests (SPEC §12): the live rules of `bkit.core`, replayed over a frame in memory.

`add_frame` names a span of minutes; `Backtest.run` replays a registered strategy on a
registered exchange over it, minute by minute, with the same pure state machine, prices and
risk rules as `Live.tick`, and no database, broker or Celery. Modules: `frames` (add_frame),
`candles` (read once per frame, disk cache), `prices` (the VWAP of every minute), `engine`
(the in-memory tick loop), `runner` (names → results), `results` (statistics and reports),
`api` (the `Backtest` facade), `listeners`, `batch` (many runs, in-process or on workers),
`store` (results of a batch in the database).
"""

from __future__ import annotations

from bkit.backtest.api import Backtest, BacktestApi
from bkit.backtest.frames import FRAMES, FrameError, FrameSchema, add_frame
from bkit.backtest.listeners import listen_done_backtest, listen_signal_backtest
from bkit.backtest.results import BacktestResult, merged_html, merged_markdown, rank
from bkit.backtest.runner import BacktestDataError, BacktestRun, plan_backtest
from bkit.backtest.simclock import current_time

__all__ = ["FRAMES", "Backtest", "BacktestApi", "BacktestDataError", "BacktestResult",
           "BacktestRun", "FrameError", "FrameSchema", "add_frame", "current_time",
           "listen_done_backtest", "listen_signal_backtest", "merged_html", "merged_markdown",
           "plan_backtest", "rank"]

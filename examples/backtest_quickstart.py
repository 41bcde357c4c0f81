"""Backtest `my_strategy.py` before running it live (README "Quickstart"): the same
strategy and exchange, replayed minute by minute over a day of the shipped real candles with
exactly the live rules, in memory (no database, no worker).

    .venv/bin/python examples/backtest_quickstart.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> str:
    """Backtest a day and return the Markdown report."""
    os.environ.setdefault("BKIT_HOME", tempfile.mkdtemp(prefix="bkit-backtest-"))
    import my_strategy  # registers the exchange and the strategy, as for live

    from bkit import Backtest, add_frame

    add_frame("one-day", datetime(2019, 10, 11, 1, 0, tzinfo=UTC),
              datetime(2019, 10, 12, 0, 59, tzinfo=UTC))
    for result in Backtest.run(my_strategy.SYMBOL, my_strategy.STRATEGY,
                               my_strategy.EXCHANGE, "one-day"):
        print(f"{result.created_at:%H:%M} {result.action:9} {result.current_price:.8f} "
              f"{result.close_reason or result.reason or ''}")
    data = Backtest.get_data(my_strategy.SYMBOL, my_strategy.STRATEGY, my_strategy.EXCHANGE,
                             "one-day")
    print(f"closed {data['total_closed']} trades, total PnL {data['total_pnl']:.2f} %")
    return Backtest.get_report(my_strategy.SYMBOL, my_strategy.STRATEGY,
                               my_strategy.EXCHANGE, "one-day")


if __name__ == "__main__":
    print(main())

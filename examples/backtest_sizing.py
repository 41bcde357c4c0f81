"""Size `my_strategy.py`'s entries from the account and manage them from callbacks, in a
backtest (README "Quickstart", SPEC §11): risk 1 % of the balance at the stop-loss, never
more than half of it in one position, and take 50 % of a position at the 50 % milestone.
The same registrations run live unchanged (signals only: `set_config(CC_SIZING_BALANCE=…)`;
with a broker: the venue's free quote balance).

    .venv/bin/python examples/backtest_sizing.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> dict:
    """Backtest a day from a $1000 account; print each entry's cost and return the data."""
    os.environ.setdefault("BKIT_HOME", tempfile.mkdtemp(prefix="bkit-backtest-"))
    import my_strategy  # registers the exchange and the unsized strategy

    from bkit import Backtest, Live, add_frame, add_sizing, add_strategy

    def take_half(symbol, signal, percent_tp, price, when):  # live and in backtests alike
        if percent_tp == 50:
            Live.commit_partial_profit(symbol, signal.strategy_name, signal.exchange_name, 50)

    add_sizing("one-pct", "fixed_percentage", risk_percentage=1, max_position_percentage=50)
    add_strategy("my-momentum-sized", my_strategy.get_signal, sizing_name="one-pct",
                 callbacks={"on_partial_profit": take_half})
    add_frame("sized-day", datetime(2019, 10, 11, 1, 0, tzinfo=UTC),
              datetime(2019, 10, 12, 0, 59, tzinfo=UTC))
    for result in Backtest.run(my_strategy.SYMBOL, "my-momentum-sized", my_strategy.EXCHANGE,
                               "sized-day", balance=1000):
        if result.action in ("opened", "closed"):
            print(f"{result.created_at:%H:%M} {result.action:6} cost ${result.signal.cost:.2f}"
                  f" partials {result.signal.total_partials}")
    return Backtest.get_data(my_strategy.SYMBOL, "my-momentum-sized", my_strategy.EXCHANGE,
                             "sized-day")


if __name__ == "__main__":
    print(main()["total_pnl"])

"""Try `my_strategy.py` in this process, no worker needed: tick it minute by minute over a day
of real candles on a throwaway SQLite database and print the Markdown report.

    .venv/bin/python examples/try_my_strategy.py

`Live.tick` runs exactly the code a worker runs for one key and one minute.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta

#: A market day inside the shipped XRP/ETH sample (UTC).
FIRST_MINUTE = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)


def main(minutes: int = 24 * 60) -> str:
    """Tick `minutes` market minutes and return the report."""
    os.environ.setdefault("BKIT_HOME", tempfile.mkdtemp(prefix="bkit-try-"))
    import my_strategy  # registers the exchange and the strategy

    from bkit import Live

    counts: dict[str, int] = {}
    for minute in range(minutes):
        when = FIRST_MINUTE + timedelta(minutes=minute)
        result = Live.tick(my_strategy.SYMBOL, my_strategy.STRATEGY, my_strategy.EXCHANGE, when)
        if result is not None:
            counts[result.action] = counts.get(result.action, 0) + 1
    print(f"ticked {minutes} minutes: {counts}")
    return Live.get_report(my_strategy.SYMBOL, my_strategy.STRATEGY, my_strategy.EXCHANGE)


if __name__ == "__main__":
    print(main())

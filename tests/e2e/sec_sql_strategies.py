"""Strategies for the SQL-injection test (BKIT_STRATEGIES=tests.e2e.sec_sql_strategies): a
paper exchange that serves the shipped sample for any symbol, on a clock standing after it, and
a strategy whose registration note and signal notes are SQL-injection-looking strings."""

from __future__ import annotations

from datetime import UTC, datetime

from bkit.clock import ManualClock
from bkit.core.registry import add_strategy
from bkit.exchange.paper import add_paper_exchange

EXCHANGE, STRATEGY = "sec-paper", "sec-sql"
#: Values shaped like SQL injections; every one must be stored and shown verbatim.
INJECTIONS = (
    "x'; DROP TABLE signal; --",
    "' OR 1=1 --",
    "Robert'); DROP TABLE event;--",
    '"; DELETE FROM strategy_symbol; --',
    "1; UPDATE bkit_setting SET value='1'; --",
    "$$; DROP TABLE order_intent; $$",
    "\\'; DROP TABLE risk_slot; --",
    "<script>alert('x')</script>",  # and one for the HTML report
)
#: The same without whitespace: `bkit` refuses a symbol with spaces before any SQL runs.
SYMBOL_INJECTIONS = tuple(s.replace(" ", "/**/") for s in INJECTIONS)
NOTE = " | ".join(INJECTIONS)

add_paper_exchange(EXCHANGE, clock=ManualClock(datetime(2019, 10, 14, tzinfo=UTC)))


def injected_note_signal(symbol: str, when: datetime, price: float) -> dict:
    """Long at market whose note carries every injection string and the symbol."""
    return {"position": "long", "price_take_profit": price * 1.01,
            "price_stop_loss": price * 0.99, "minute_estimated_time": 30,
            "note": f"{NOTE} | {symbol}"}


add_strategy(STRATEGY, injected_note_signal, interval="1m", note=NOTE)

"""Position commands through `Live.tick` (SPEC §11), on PostgreSQL and SQLite: queued from
this process like `close_position`, applied on the key's next tick under its lock at that
tick's price; a refused one is an error event naming the rule and changes nothing; the
close's PnL is §11's. The example of §11: trailing −5 → 95, −3 refused, −7 → 97; a 50 %
partial at 110 and the close at 120 give 14.555459540 %."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bkit.clock import ManualClock
from bkit.core.candles import Candle
from bkit.core.registry import REGISTRY, add_exchange, add_strategy
from bkit.core.results import TickResult
from bkit.exchange.paper import PaperExchange
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import EventRecord, PositionCommandRecord
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SYMBOL, STRATEGY, EXCHANGE = "BTC/USDT", "pm-long", "pm-feed"
#: The price of each 5-minute block; a tick at minute 5(b + 1) prices from block b.
BLOCKS = {-1: 100.0, 0: 101.0, 1: 101.0, 2: 101.0, 3: 110.0, 4: 120.0, 5: 120.0}


def candles() -> list[Candle]:
    start = int(T0.timestamp() * 1000)
    out = []
    for block, price in sorted(BLOCKS.items()):
        for minute in range(5 * block, 5 * block + 5):
            out.append(Candle(start + minute * 60_000, price, price, price, price, 1.0))
    return out


@pytest.fixture
def feed(in_process_runtime: Runtime) -> None:
    REGISTRY.exchanges.pop(EXCHANGE, None)
    paper = PaperExchange(ManualClock(T0 + timedelta(days=1)), {SYMBOL: candles()})
    add_exchange(EXCHANGE, paper.get_candles, source=paper)
    add_strategy(STRATEGY, lambda s, w, p: {
        "position": "long", "price_take_profit": 120.0, "price_stop_loss": 90.0,
        "minute_estimated_time": 120, "cost": 100.0})


def tick(minute: int) -> TickResult:
    result = Live.tick(SYMBOL, STRATEGY, EXCHANGE, T0 + timedelta(minutes=minute))
    assert result is not None
    return result


def status(command_id: int) -> tuple[str, str | None]:
    return Live.command_status(command_id)


def test_the_spec_sequence_trailing_then_partial_then_close(feed: None) -> None:
    assert tick(0).action == "opened"
    first = Live.commit_trailing_stop(SYMBOL, STRATEGY, EXCHANGE, -5)
    assert status(first) == ("pending", None)  # applied on the next tick, not now
    result = tick(5)
    assert status(first)[0] == "accepted"
    assert result.signal is not None and result.signal.price_stop_loss == pytest.approx(95.0)

    worse = Live.commit_trailing_stop(SYMBOL, STRATEGY, EXCHANGE, -3)
    result = tick(10)
    state, reason = status(worse)
    assert state == "refused" and reason is not None and "trailing" in reason
    assert result.signal is not None and result.signal.price_stop_loss == pytest.approx(95.0)
    with session_scope(get_engine()) as session:
        errors = [e for e in session.execute(select(EventRecord).where(
            EventRecord.kind == "error")).scalars() if (e.payload or {}).get("stage") ==
            "command"]
    assert len(errors) == 1 and errors[0].message == reason

    tick_id = Live.commit_trailing_stop(SYMBOL, STRATEGY, EXCHANGE, -7)
    result = tick(15)
    assert status(tick_id)[0] == "accepted"
    assert result.signal is not None and result.signal.price_stop_loss == pytest.approx(97.0)

    partial = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 50)
    result = tick(20)
    assert status(partial)[0] == "accepted"
    signal = result.signal
    assert signal is not None and signal.total_partials == 1
    assert signal.partial_executed == pytest.approx(50.0) and signal.total_entries == 1

    closed = tick(25)
    assert (closed.action, closed.close_reason, closed.current_price) == (
        "closed", "take_profit", 120.0)
    assert closed.pnl is not None
    assert closed.pnl.pnl_percentage == pytest.approx(14.555459540, abs=1e-9)
    assert Live.get_data(SYMBOL, STRATEGY, EXCHANGE)["total_pnl"] == pytest.approx(
        14.555459540, abs=1e-9)


def test_refused_commands_change_nothing(feed: None) -> None:
    assert tick(0).action == "opened"
    dca = Live.commit_average_buy(SYMBOL, STRATEGY, EXCHANGE, 100)  # P ≥ the entry: refused
    loss = Live.commit_partial_loss(SYMBOL, STRATEGY, EXCHANGE, 30)  # P above e: refused
    bad = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 150)  # > 100 %: refused
    result = tick(5)
    assert [status(c)[0] for c in (dca, loss, bad)] == ["refused"] * 3
    signal = result.signal
    assert signal is not None
    assert (signal.price_take_profit, signal.price_stop_loss) == (120.0, 90.0)
    assert (signal.total_entries, signal.total_partials) == (1, 0)
    with pytest.raises(ValueError, match="unknown position command"):
        Live._commit(SYMBOL, STRATEGY, EXCHANGE, "double_down", 1.0)
    with session_scope(get_engine()) as session:
        rows = list(session.execute(select(PositionCommandRecord)).scalars())
    assert len(rows) == 3 and all(r.applied_at is not None for r in rows)
    # once the position is gone, a command has nothing to act on
    assert tick(25).action == "closed"
    late = Live.commit_breakeven(SYMBOL, STRATEGY, EXCHANGE)
    tick(30)
    assert status(late) == ("refused", "breakeven refused: no open position")

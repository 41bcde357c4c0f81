"""Sizing through `Live.tick` (SPEC §11), on PostgreSQL and SQLite: the cost each method gives
an entry, to the cent, on a feed of known candles (price 100, every candle high 101 / low 99,
so the 1m ATR is exactly 2), and a refused entry (error event, stage "sizing", nothing
stored) for every input that cannot be had: no balance, too little Kelly history, no edge,
no ATR, an unlimited paper account."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bkit.broker import Broker
from bkit.broker.paper_broker import PaperBroker
from bkit.clock import ManualClock
from bkit.core.candles import Candle
from bkit.core.registry import REGISTRY, add_exchange, add_sizing, add_strategy, set_config
from bkit.core.results import TickResult
from bkit.exchange.paper import PaperExchange
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.tables import EventRecord, OrderIntent, SignalRecord
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SYMBOL, EXCHANGE = "BTC/USDT", "sz-feed"
#: The feed starts this many minutes before T0 (a shorter lead starves the ATR).
LEAD = 30


def candles(lead: int = LEAD) -> list[Candle]:
    start = int(T0.timestamp() * 1000)
    return [Candle(start + minute * 60_000, 100.0, 101.0, 99.0, 100.0, 1.0)
            for minute in range(-lead, 120)]


def long_at_market(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": 110.0, "price_stop_loss": 95.0,
            "minute_estimated_time": 60, "cost": 7.0}  # the sizing ignores `cost`


@pytest.fixture
def feed(in_process_runtime: Runtime) -> Iterator[PaperExchange]:
    REGISTRY.exchanges.pop(EXCHANGE, None)
    paper = PaperExchange(ManualClock(T0 + timedelta(days=1)), {SYMBOL: candles()})
    add_exchange(EXCHANGE, paper.get_candles, source=paper)
    yield paper
    Broker.clear()


def sized(strategy: str, method: str, **params: Any) -> None:
    add_sizing(f"{strategy}-sizing", method, **params)
    add_strategy(strategy, long_at_market, sizing_name=f"{strategy}-sizing")


def tick(strategy: str, minute: int = 0) -> TickResult:
    result = Live.tick(SYMBOL, strategy, EXCHANGE, T0 + timedelta(minutes=minute))
    assert result is not None
    return result


def opened_cost(strategy: str, minute: int = 0) -> float:
    result = tick(strategy, minute)
    assert result.action == "opened" and result.signal is not None
    return result.signal.cost


def sizing_errors(strategy: str) -> list[str]:
    with session_scope(get_engine()) as session:
        return [e.message for e in session.execute(select(EventRecord).where(
            EventRecord.kind == "error", EventRecord.strategy_name == strategy)
            .order_by(EventRecord.id)).scalars() if (e.payload or {}).get("stage") == "sizing"]


def assert_refused(strategy: str, minute: int, *words: str) -> None:
    result = tick(strategy, minute)
    assert result.action == "idle" and result.signal is None
    [message] = sizing_errors(strategy)[-1:]
    for word in words:
        assert word in message, message
    with session_scope(get_engine()) as session:
        assert session.execute(select(SignalRecord).where(  # nothing but the seeded trades
            SignalRecord.strategy_name == strategy, SignalRecord.state != "closed")
        ).first() is None


def closed_trades(strategy: str, pnls: list[tuple[float, float]]) -> None:
    """Closed trades of the key (pnl %, pnl_cost $), as earlier ticks would have stored."""
    engine = Live._engine()  # the schema, as the first tick would create it
    key_id = ensure_key(engine, strategy, EXCHANGE, SYMBOL)
    with session_scope(engine) as session:
        for i, (pct, cost) in enumerate(pnls):
            when = T0 - timedelta(days=1, minutes=-i)
            session.add(SignalRecord(
                key_id=key_id, signal_id=f"old-{i}", symbol=SYMBOL, strategy_name=strategy,
                exchange_name=EXCHANGE, position="long", state="closed", price_open=100.0,
                price_take_profit=110.0, price_stop_loss=95.0, minute_estimated_time=60,
                cost=100.0, created_at=when, pending_at=when, closed_at=when,
                price_close=100.0, close_reason="take_profit", pnl_percentage=pct,
                pnl_cost=cost))


def test_fixed_needs_no_account(feed: PaperExchange) -> None:
    sized("fixed", "fixed", cost=250, max_position_size=180)
    assert opened_cost("fixed") == 180.0  # the cap; CC_SIZING_BALANCE is not set


def test_fixed_percentage_from_the_notional_balance(feed: PaperExchange) -> None:
    set_config(CC_SIZING_BALANCE=1000)
    sized("pct", "fixed_percentage", risk_percentage=2)
    # 1000 × 2 % / |100 − 95| = 4 BTC → $400
    assert opened_cost("pct") == pytest.approx(400.0, abs=1e-9)


def test_the_notional_balance_moves_with_realised_pnl(feed: PaperExchange) -> None:
    set_config(CC_SIZING_BALANCE=1000)
    sized("kelly", "kelly")
    # W = 0.6, R = 4 / 2 = 2 → k = (0.6 × 2 − 0.4) / 2 = 0.4; the account is
    # 1000 + 6 × 4 − 4 × 2 = 1016 → 1016 × 0.4 × 0.25 = $101.60
    closed_trades("kelly", [(4.0, 4.0)] * 6 + [(-2.0, -2.0)] * 4)
    assert opened_cost("kelly") == pytest.approx(101.6, abs=1e-9)


def test_atr_over_the_closed_candles(feed: PaperExchange) -> None:
    set_config(CC_SIZING_BALANCE=1000)
    sized("atr", "atr", risk_percentage=1, max_position_percentage=50)
    # ATR(14) = 2; 1000 × 1 % / (2 × 2) = 2.5 BTC → $250 (under the $500 cap)
    assert opened_cost("atr") == pytest.approx(250.0, abs=1e-9)


def test_paper_broker_account(feed: PaperExchange) -> None:
    sized("dry", "fixed_percentage", risk_percentage=2)
    Broker.use(EXCHANGE, PaperBroker(get_engine(), exchange_name=EXCHANGE, quote_balance=500))
    result = tick("dry")
    assert result.action == "idle" and result.signal is not None  # the entry is an order
    assert result.signal.cost == pytest.approx(200.0, abs=1e-9)  # 500 × 2 % / 5 × 100
    with session_scope(get_engine()) as session:
        [intent] = session.execute(select(OrderIntent)).scalars().all()
        assert (intent.kind, intent.amount) == ("open", pytest.approx(2.0, abs=1e-12))


def test_refused_without_a_balance(feed: PaperExchange) -> None:
    sized("no-balance", "fixed_percentage", risk_percentage=2)
    assert_refused("no-balance", 0, "sizing 'no-balance-sizing'", "signals only (no broker)",
                   "CC_SIZING_BALANCE")


def test_refused_by_an_unlimited_paper_account(feed: PaperExchange) -> None:
    sized("unlimited", "fixed_percentage", risk_percentage=2)
    Broker.use(EXCHANGE, PaperBroker(get_engine(), exchange_name=EXCHANGE))
    assert_refused("unlimited", 0, "USDT balance is unlimited")


def test_kelly_refused_without_history_or_edge(feed: PaperExchange) -> None:
    set_config(CC_SIZING_BALANCE=1000)
    sized("young", "kelly")
    closed_trades("young", [(4.0, 4.0)] * 3)
    assert_refused("young", 0, "Kelly needs 10 closed trades, the key has 3")
    sized("loser", "kelly")
    closed_trades("loser", [(1.0, 1.0)] * 2 + [(-3.0, -3.0)] * 8)
    assert_refused("loser", 0, "closed trades show no edge")


def test_atr_refused_on_a_short_feed_then_sized(in_process_runtime: Runtime) -> None:
    REGISTRY.exchanges.pop(EXCHANGE, None)
    paper = PaperExchange(ManualClock(T0 + timedelta(days=1)), {SYMBOL: candles(lead=10)})
    add_exchange(EXCHANGE, paper.get_candles, source=paper)
    set_config(CC_SIZING_BALANCE=1000)
    sized("short-feed", "atr", risk_percentage=1)
    assert_refused("short-feed", 0, "no ATR", "ATR(14) needs 15 closed 1m candles", "got 10")
    assert opened_cost("short-feed", 5) == pytest.approx(250.0, abs=1e-9)  # 15 candles now

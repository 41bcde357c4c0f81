"""The paper broker: persistent simulated fills whose PnL equals the signal-only PnL with the
same slippage and fees (SPEC §5), through the same tick and submit code as live orders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bkit.broker import Broker, broker_for
from bkit.broker.paper_broker import PaperBroker
from bkit.clock import ManualClock
from bkit.core.orders import floor_to_step
from bkit.exchange.paper import add_paper_exchange
from bkit.live import Live
from bkit.orders import OrdersEnv, submit_intent
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import OrderIntent, PaperOrder, SignalRecord
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)


def _send_pending(env: OrdersEnv) -> int:
    with session_scope(env.engine) as session:
        ids = list(session.execute(select(OrderIntent.id).where(
            OrderIntent.status == "pending")).scalars())
    for intent_id in ids:
        assert submit_intent(env, intent_id) == "filled"
    return len(ids)


def test_paper_fills_give_the_signal_only_pnl(make_runtime: Callable[..., Runtime],
                                              tmp_path: Path) -> None:
    make_runtime(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    clock = ManualClock(START)
    add_paper_exchange("dry", clock=clock)  # orders simulated by the paper broker
    add_paper_exchange("signals", clock=clock)  # no broker: signals only
    engine = get_engine()
    Broker.clear()
    Broker.use("dry", PaperBroker(engine, slippage_percent=0.1, fee_percent=0.1,
                                  exchange_name="dry"))
    env = OrdersEnv(engine=engine, clock=clock, brokers=broker_for,
                    enqueue=lambda _id, _delay: None)
    try:
        for minute in range(0, 90):
            when = START + timedelta(minutes=minute)
            clock.current = when + timedelta(seconds=30)  # fills land inside the minute
            Live.tick("XRP/ETH", "it-long", "signals", when)
            Live.tick("XRP/ETH", "it-long", "dry", when)
            _send_pending(env)  # the orders queue's work, in-process
        with session_scope(engine) as session:
            closed = {r.exchange_name: r for r in session.execute(select(SignalRecord).where(
                SignalRecord.state == "closed").order_by(SignalRecord.id)).scalars()}
            fills = {o.client_order_id: o for o in session.execute(select(PaperOrder)).scalars()}
            intents = list(session.execute(select(OrderIntent).where(
                OrderIntent.signal_id == closed["dry"].signal_id)).scalars())
    finally:
        Broker.clear()
    dry, signals_only = closed["dry"], closed["signals"]
    assert dry.close_reason == signals_only.close_reason
    assert dry.price_open == pytest.approx(signals_only.price_open, rel=1e-12)
    assert dry.pnl_percentage == pytest.approx(signals_only.pnl_percentage, abs=1e-9)
    # The realised PnL of the simulated fills and fees equals the SPEC §5 figure.
    buy = fills[next(i.client_order_id for i in intents if i.kind == "open")]
    sell = fills[next(i.client_order_id for i in intents if i.kind == "close")]
    # Like Binance, the buy's fee is taken in the coin bought: the exit sells what is left,
    # floored to the step (SPEC §8); the remainder below one step is the signal's dust.
    assert (buy.fee_currency, sell.fee_currency) == ("XRP", "ETH")
    assert sell.amount == floor_to_step(buy.amount - buy.fee, 1e-8)
    assert dry.dust is None or dry.dust < 1e-8
    paid = buy.amount * buy.fill_price
    received = sell.amount * sell.fill_price - sell.fee
    realised_percent = (received - paid) / paid * 100
    assert dry.realised_pnl_percentage == pytest.approx(realised_percent, abs=1e-9)
    # §5 charges the fee on the notional; the account pays the buy's fee in coins: the two
    # agree to a few thousandths of a per cent.
    assert realised_percent == pytest.approx(dry.pnl_percentage, abs=0.005)
    assert buy.fill_price == pytest.approx(dry.price_open * 1.001, rel=1e-12)
    assert dry.fill_price_open == pytest.approx(buy.fill_price, rel=1e-12)

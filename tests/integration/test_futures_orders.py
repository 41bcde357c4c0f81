"""Futures through the whole order path (SPEC §10, issue 12 B): the real ccxt `binanceusdm`
client against the venue's USDⓈ-M futures, the tick and orders code on PostgreSQL. Leverage
and margin mode are set on the venue once before the first entry, the exit is reduce-only,
the protective stop is a reduce-only STOP_MARKET, funding enters the realised PnL, and a
liquidation seen by reconciliation closes the signal with reason `liquidation`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bkit.broker import Broker, broker_for
from bkit.broker.futures_broker import FuturesBroker
from bkit.clock import ManualClock
from bkit.core.candles import Candle
from bkit.core.registry import add_exchange, add_strategy, set_config
from bkit.exchange.ccxt_exchange import CcxtExchange
from bkit.exchange.paper import PaperExchange
from bkit.live import Live
from bkit.orders import RETRYABLE, OrdersEnv, submit_intent
from bkit.reconcile import reconcile
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import OrderIntent, SignalRecord
from bkit.venue import Venue
from bkit.venue.client import FUTURES_OPTIONS
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
T0 = datetime(2023, 11, 15, 7, 0, tzinfo=UTC)
SYMBOL, STRATEGY, EXCHANGE = "BTC/USDT:USDT", "fut-long", "futbin"


def intents(kind: str | None = None) -> list[OrderIntent]:
    with session_scope(get_engine()) as session:
        stmt = select(OrderIntent).order_by(OrderIntent.id)  # type: ignore[arg-type]
        if kind:
            stmt = stmt.where(OrderIntent.kind == kind)
        return list(session.execute(stmt).scalars())


def signal() -> SignalRecord:
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord).order_by(
            SignalRecord.id.desc())).scalars().first()  # type: ignore[union-attr]


class Fut:
    def __init__(self, venue: Venue, env: OrdersEnv, clock: ManualClock,
                 exchange: CcxtExchange, feed: PaperExchange) -> None:
        self.venue, self.env, self.clock = venue, env, clock
        self.exchange, self.feed = exchange, feed

    def tick(self, minute: int) -> Any:
        when = T0 + timedelta(minutes=minute)
        self.clock.current = when + timedelta(seconds=20)
        return Live.tick(SYMBOL, STRATEGY, EXCHANGE, when)

    def settle(self) -> None:
        for _ in range(30):
            active = [i for i in intents() if i.status in RETRYABLE and
                      not (i.kind == "stop" and i.status == "open")]
            if not active:
                return
            for intent in active:
                assert intent.id is not None
                submit_intent(self.env, intent.id)
        raise AssertionError([(i.kind, i.status, i.last_error) for i in intents()])


@pytest.fixture
def fut(make_runtime: Callable[..., Runtime], pg_url: str) -> Iterator[Fut]:
    make_runtime(pg_url)
    start = int(T0.timestamp() * 1000)
    candles = [Candle(start + m * 60_000, 50_000.0, 50_000.0, 50_000.0, 50_000.0, 10.0)
               for m in range(-30, 60)]
    clock = ManualClock(T0)
    os.environ["BKIT_BINANCEUSDM_API_KEY"], os.environ["BKIT_BINANCEUSDM_SECRET"] = \
        "fut-key-3e1a", "fut-secret-8d2c"
    with Venue(futures_balances={"USDT": 10000}) as venue:
        venue.set_clock(start)
        venue.set_price("BTC/USDT", 50_000)
        exchange = CcxtExchange("binanceusdm", api_base_url=venue.base_url,
                                options={**FUTURES_OPTIONS})
        # the strategy prices from a feed of the same market; orders go to the venue
        feed = PaperExchange(clock, {SYMBOL: candles})
        add_exchange(EXCHANGE, feed.get_candles, source=feed)
        Broker.clear()
        set_config(CC_LEVERAGE=2, CC_MARGIN_MODE="isolated", CC_ORDER_SETTLE_SECONDS=1)
        Broker.use(EXCHANGE, FuturesBroker(exchange, leverage=2, margin_mode="isolated"))
        add_strategy(STRATEGY, lambda s, w, p: {
            "position": "long", "price_take_profit": 50_500.0, "price_stop_loss": 49_500.0,
            "minute_estimated_time": 600, "cost": 500.0})
        env = OrdersEnv(engine=get_engine(), clock=clock, brokers=broker_for,
                        enqueue=lambda _i, _d: None, poll_seconds=0.0, stop_poll_seconds=0.0)
        try:
            yield Fut(venue, env, clock, exchange, feed)
        finally:
            Broker.clear()


def open_long(f: Fut) -> None:
    f.tick(0)
    f.settle()
    row = signal()
    assert row.state == "opened" and row.amount == pytest.approx(0.01)


def test_setup_once_reduce_only_stop_and_exit(fut: Fut) -> None:
    open_long(fut)
    assert (fut.venue.leverage(SYMBOL), fut.venue.margin_type(SYMBOL)) == (2, "ISOLATED")
    [position] = fut.venue.positions(SYMBOL)
    assert position.amount == Decimal("0.010")
    stops = [o for o in fut.venue.futures_orders() if o.client_order_id in
             {i.client_order_id for i in intents("stop")}]
    assert len(stops) == 1 and stops[0].reduce_only and stops[0].status == "NEW"
    fut.venue.set_price("BTC/USDT", 50_300)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    fut.tick(1)
    fut.settle()
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "closed")
    assert fut.venue.positions(SYMBOL) == [] or all(p.amount == 0
                                                    for p in fut.venue.positions(SYMBOL))
    (exit_,) = intents("close")
    assert exit_.status == "filled" and exit_.amount == pytest.approx(0.01)
    assert intents("stop")[0].status == "canceled"
    # realised: (50,300 − 50,000) × 0.01 less 0.04 % taker fees on both sides, in USDT
    fees = (50_000 * 0.01 + 50_300 * 0.01) * 0.0004
    assert row.realised_pnl_cost == pytest.approx(3.0 - fees, abs=1e-6)
    # a second entry does not set leverage again (once per symbol and process)
    assert fut.env.brokers(EXCHANGE).ensure_setup(SYMBOL) is False  # type: ignore[union-attr]


def test_funding_enters_the_realised_pnl(fut: Fut) -> None:
    open_long(fut)
    fut.venue.set_funding_rate(SYMBOL, "0.0001")
    fut.venue.set_clock(int((T0 + timedelta(hours=1, minutes=1)).timestamp() * 1000))  # 08:01
    fut.venue.match()
    funding = [i for i in fut.venue.incomes("FUNDING_FEE")]
    assert len(funding) == 1  # a long pays 0.01 × 50,000 × 0.0001 = 0.05 USDT
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    fut.tick(62)
    fut.settle()
    row = signal()
    assert row.state == "closed"
    fees = (50_000 * 0.01 + 50_000 * 0.01) * 0.0004
    assert row.realised_pnl_cost == pytest.approx(-fees - 0.05, abs=1e-6)


def test_a_liquidation_closes_the_signal_with_reason_liquidation(fut: Fut) -> None:
    set_config(CC_EXCHANGE_STOP=False)  # no stop: nothing saves the position
    open_long(fut)
    liquidation = fut.venue.liquidation_price(SYMBOL)
    assert liquidation is not None and Decimal("25000") < liquidation < Decimal("25300")
    fut.venue.set_price("BTC/USDT", float(liquidation) - 100)
    fut.venue.match()
    assert all(p.amount == 0 for p in fut.venue.positions(SYMBOL))
    views = reconcile(fut.env)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "liquidation")
    assert row.signal_id in views[0].closed_as_gone
    assert row.realised_pnl_cost is not None and row.realised_pnl_cost < -240  # margin lost


def test_an_sl_beyond_the_liquidation_price_is_refused_before_sending(fut: Fut) -> None:
    # at 100x isolated the liquidation price of a long from 50,000 is about 49,700: an SL at
    # 49,500 would never be reached before the venue liquidated the position
    Broker.use(EXCHANGE, FuturesBroker(fut.env.brokers(EXCHANGE).exchange,  # type: ignore
                                       leverage=100, margin_mode="isolated"))
    fut.tick(0)
    fut.settle()
    row = signal()
    assert (row.state, row.cancel_reason) == ("cancelled", "rejected")
    (entry,) = intents("open")
    assert entry.status == "rejected" and "liquidation" in (entry.last_error or "")
    assert fut.venue.futures_orders() == []  # nothing was sent


def test_hedge_mode_from_the_config_names_the_side_of_every_order(
        fut: Fut, monkeypatch: pytest.MonkeyPatch) -> None:
    """CC_POSITION_MODE="hedge": the broker that the settings build (BKIT_ORDER_BROKER=ccxt)
    sets the venue's position mode once, opens the LONG side, protects it with a stop on
    that side, closes it with a SELL of that side; the stop then expires unfilled."""
    from bkit.settings import reset_settings

    monkeypatch.setenv("BKIT_ORDER_BROKER", "ccxt")
    reset_settings()
    Broker.clear()
    set_config(CC_POSITION_MODE="hedge")
    add_exchange("futhedge", fut.feed.get_candles, source=fut.exchange)
    built = broker_for("futhedge")
    assert isinstance(built, FuturesBroker) and built.hedge

    def tick(minute: int) -> Any:
        when = T0 + timedelta(minutes=minute)
        fut.clock.current = when + timedelta(seconds=20)
        return Live.tick(SYMBOL, STRATEGY, "futhedge", when)

    tick(0)
    fut.settle()
    assert fut.venue.hedge_mode()
    [position] = fut.venue.positions(SYMBOL)
    assert (position.side, position.amount) == ("LONG", Decimal("0.010"))
    [stop] = [o for o in fut.venue.futures_orders()
              if o.client_order_id == intents("stop")[0].client_order_id]
    assert (stop.side, stop.position_side, stop.status) == ("SELL", "LONG", "NEW")
    Live.close_position(SYMBOL, STRATEGY, "futhedge")
    tick(1)
    fut.settle()
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "closed")
    assert fut.venue.positions(SYMBOL) == []
    fut.venue.set_price("BTC/USDT", 49_000)  # through the stop, had it been left resting
    assert fut.venue.positions(SYMBOL) == []  # nothing opened on either side


def test_reconciliation_compares_futures_positions_not_balances(fut: Fut) -> None:
    """An open long agrees with the venue (no 'shortfall' of BTC in a USDT margin account);
    a position opened on the venue behind bkit's back is `position_unknown`, and one made
    larger there is `position_size`."""
    open_long(fut)
    [view] = reconcile(fut.env)
    assert view.error is None and view.differences == []
    broker = fut.env.brokers(EXCHANGE)
    assert isinstance(broker, FuturesBroker)
    broker.place(SYMBOL, "buy", 0.004, 50_000, "manual-1", kind="open")  # not our prefix
    [view] = reconcile(fut.env)
    [size] = view.differences
    assert size.kind == "position_size"
    assert (size.data["believed"], size.data["venue"]) == (pytest.approx(0.01),
                                                            pytest.approx(0.014))
    broker.place(SYMBOL, "sell", 0.004, 50_000, "manual-2", kind="close")  # back to ours
    [view] = reconcile(fut.env)
    assert view.differences == []
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    fut.tick(1)
    fut.settle()
    assert signal().state == "closed"
    broker.place(SYMBOL, "sell", 0.003, 50_000, "manual-3", kind="open")  # a short appears
    [view] = reconcile(fut.env)
    [unknown] = view.differences
    assert unknown.kind == "position_unknown"
    assert (unknown.data["side"], unknown.data["venue"]) == ("short", pytest.approx(0.003))

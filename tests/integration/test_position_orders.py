"""Position commands with a broker (SPEC §11 under §8 and §10; issue 14 "With a broker", issue
12 A) through the real ccxt client against the venue model, on PostgreSQL: a partial close is
a market sell of that share of what the account holds, net of the base fee and floored to the
step; a DCA is a buy; the signal changes only by what the venue filled; the exchange-side stop
follows (re-placed for the remainder, moved with the SL), one protective order at a time; a
partial the venue's filters refuse changes nothing; a stop that fills while a partial waits
is the close, never followed by a second sell; a command given while an order of the key is
in flight waits, queued, until that order is final. Every test ends with the venue's balances equal
to the initial ones plus every fill bkit recorded (the `money` fixture's check).

The position of every test: 500 USDT bought at 50,000 = 0.01 BTC, Binance keeps 0.1 % of it
(0.00001 BTC), so the account holds 0.00999 BTC; the SL is 49,500, the TP 50,500, the stop on
the venue a stop-loss-limit at the SL, limit 0.5 % below.
"""

# ruff: noqa: F811 - pytest fixtures imported from the money-path and protection tests
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from bkit.core.candles import Candle
from bkit.core.position_commands import position_of
from bkit.core.registry import REGISTRY, add_exchange, add_strategy
from bkit.exchange.paper import PaperExchange
from bkit.live import Live
from bkit.store import signal_rows
from tests.integration import test_futures_orders as futures
from tests.integration.test_futures_orders import Fut, fut  # noqa: F401 - the fixture
from tests.integration.test_money_path import (  # noqa: F401 - shared fixtures and helpers
    EXCHANGE,
    STRATEGY,
    SYMBOL,
    Money,
    events,
    intents,
    money,
    open_long,
    signal,
)
from tests.integration.test_protection import (  # noqa: F401 - shared fixtures and helpers
    open_protected,
    protected,
    resting_stops,
    settle,
)

pytestmark = pytest.mark.integration


def at_price(m: Money, price: float, minute: int) -> None:
    """The tick of `minute` prices at `price` (its 5-minute VWAP) and the venue fills there."""
    m.candles(price, range(minute - 5, minute + 1))
    m.venue.set_price(SYMBOL, price)


def command_done(m: Money, minute: int, commit: Callable[..., int], *args: Any
                 ) -> tuple[int, str, str | None]:
    """Commit a command, tick `minute`, run the orders worker: (id, status, message)."""
    command = commit(SYMBOL, STRATEGY, EXCHANGE, *args)
    m.tick(minute)
    settle(m)
    return (command, *Live.command_status(command))


def sells(m: Money) -> list[Any]:
    return [o for o in m.venue.orders() if o.side == "SELL" and o.executed_qty]


def test_partial_profit_sells_its_share_net_of_fees_floored_and_replaces_the_stop(
        protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 50_300.0, 5)
    command = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 50)
    protected.tick(5)
    assert Live.command_status(command)[0] == "accepted"
    row = signal()
    assert row.amount == pytest.approx(0.00999, abs=1e-15)  # nothing changes before the fill
    assert position_of(signal_rows.to_core(row)).partials == ()
    (partial,) = intents("partial")
    assert (partial.status, partial.side, partial.amount) == ("pending", "sell", None)

    settle(protected)
    (partial,) = intents("partial")
    # 50 % of the 0.00999 held = 0.004995, floored to the 0.00001 step
    assert partial.status == "filled" and partial.amount == 0.00499
    assert partial.filled_amount == 0.00499
    assert partial.fill_price == pytest.approx(50_300.0, rel=1e-12)  # cost / filled
    row = signal()
    assert row.state == "opened" and row.amount == pytest.approx(0.005, abs=1e-15)
    assert row.price_stop_loss == 49_500.0
    core = signal_rows.to_core(row)
    (booked,) = position_of(core).partials
    assert booked.percent == pytest.approx(0.00499 / 0.00999 * 100, rel=1e-12)
    assert (booked.kind, booked.cost_basis) == ("profit", 500.0)
    assert booked.price == partial.fill_price  # the real average fill price
    assert core.public().total_partials == 1
    assert row.exit_cost == pytest.approx(0.00499 * 50_300.0, abs=1e-9)
    assert row.fees_paid_quote == pytest.approx(0.00499 * 50_300.0 * 0.001, abs=1e-9)
    status, message = Live.command_status(command)
    assert status == "filled" and message is not None and "0.00499" in message
    # the stop: the old one cancelled, one new one for the 0.005 left
    first, second = intents("stop")
    assert first.status == "canceled" and not first.filled_amount
    assert second.status == "open" and second.amount == 0.005
    [stop] = resting_stops(protected)
    assert stop.quantity == Decimal("0.005") and Decimal(stop.stop_price) == Decimal("49500")
    assert protected.venue.balances()["BTC"] == (Decimal("0"), Decimal("0.005"))  # locked
    assert len(sells(protected)) == 1


def test_a_partial_below_the_min_notional_is_refused_and_changes_nothing(
        protected: Money) -> None:
    open_protected(protected)
    before = signal()
    at_price(protected, 50_300.0, 5)
    # 1 % of 0.00999 = 0.0000999 → 0.00009 BTC ≈ 4.53 USDT, below Binance's 5 USDT minimum
    _, status, message = command_done(protected, 5, Live.commit_partial_profit, 1)
    assert status == "refused" and message is not None and "below the venue's minimum 5" in message
    (partial,) = intents("partial")
    assert partial.status == "rejected" and not partial.filled_amount
    row = signal()
    assert (row.state, row.amount, row.exit_cost, row.order_in_flight) == (
        "opened", before.amount, 0.0, False)
    assert position_of(signal_rows.to_core(row)).partials == ()
    assert [e for e in events("error") if "partial_profit refused" in e.message]
    # the stop was never touched: still the first one, alone on the venue
    (stop,) = intents("stop")
    assert stop.status == "open" and len(resting_stops(protected)) == 1
    assert sells(protected) == []


def test_average_buy_buys_and_the_stop_grows_with_the_position(protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 49_800.0, 5)
    command = Live.commit_average_buy(SYMBOL, STRATEGY, EXCHANGE, 100)
    protected.tick(5)
    assert signal().amount == pytest.approx(0.00999, abs=1e-15)  # not before the fill
    settle(protected)
    (dca,) = intents("dca")
    # 100 USDT at 49,800 = 0.002008… → 0.00200 at the step; Binance keeps 0.000002 BTC
    assert (dca.status, dca.side, dca.amount, dca.filled_amount) == (
        "filled", "buy", 0.002, 0.002)
    assert dca.base_fee == pytest.approx(0.000002, abs=1e-15)
    row = signal()
    assert row.amount == pytest.approx(0.011988, abs=1e-15)
    assert row.entry_cost == pytest.approx(500.0 + 99.6, abs=1e-9)
    assert row.entry_filled == pytest.approx(0.012, abs=1e-15)
    entries = position_of(signal_rows.to_core(row)).entries
    assert [(e.price, e.cost) for e in entries] == [
        (50_000.0, 500.0), (pytest.approx(49_800.0, rel=1e-12), pytest.approx(99.6))]
    assert entries[1].price == dca.fill_price
    assert (row.price_take_profit, row.price_stop_loss) == (50_500.0, 49_500.0)
    assert Live.command_status(command)[0] == "filled"
    first, second = intents("stop")
    assert first.status == "canceled" and second.status == "open"
    [stop] = resting_stops(protected)
    assert stop.quantity == Decimal("0.01198")  # 0.011988 held, floored to the step
    assert protected.venue.balance("BTC") == Decimal("0.011988")


def test_trailing_stop_then_breakeven_move_the_exchange_stop(protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 50_350.0, 5)  # +0.7 %: breakeven is available (0.6 %)
    trail = Live.commit_trailing_stop(SYMBOL, STRATEGY, EXCHANGE, -0.5)  # d0 1 % → 0.5 %
    protected.tick(5)
    assert Live.command_status(trail)[0] == "accepted"
    assert signal().price_stop_loss == pytest.approx(49_750.0)
    settle(protected)
    [stop] = resting_stops(protected)
    assert Decimal(stop.stop_price) == Decimal("49750") and stop.quantity == Decimal("0.00999")
    assert [i.status for i in intents("stop")] == ["canceled", "open"]

    at_price(protected, 50_350.0, 6)
    even = Live.commit_breakeven(SYMBOL, STRATEGY, EXCHANGE)
    protected.tick(6)
    assert Live.command_status(even)[0] == "accepted"
    assert signal().price_stop_loss == 50_000.0
    settle(protected)
    [stop] = resting_stops(protected)
    assert Decimal(stop.stop_price) == Decimal("50000")
    assert Decimal(stop.price) == Decimal("49750")  # the limit 0.5 % below
    assert [i.status for i in intents("stop")] == ["canceled", "canceled", "open"]
    # the moved stop protects: the market falls through it while nobody looks
    protected.venue.set_price(SYMBOL, 49_990)
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason, row.price_close) == ("closed", "stop_loss", 50_000.0)
    assert len(sells(protected)) == 1 and protected.venue.balance("BTC") == 0


def test_a_stop_that_fills_while_a_partial_waits_is_the_only_sell(protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 50_300.0, 5)
    command = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 50)
    protected.tick(5)  # the partial's intent is written …
    protected.venue.set_price(SYMBOL, 49_450)  # … and the stop fills before it is sent
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "stop_loss")
    (partial,) = intents("partial")
    assert partial.status == "canceled" and "superseded" in (partial.last_error or "")
    status, message = Live.command_status(command)
    assert status == "refused" and message is not None and "closed" in message
    assert len(sells(protected)) == 1 and protected.venue.balance("BTC") == 0
    assert intents("close") == []


def test_a_partial_that_fills_in_part_records_what_filled(protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 50_300.0, 5)
    protected.venue.set_fill_fraction("0.6", SYMBOL)  # the market order fills 60 %, expires
    command_done(protected, 5, Live.commit_partial_profit, 50)
    (partial,) = intents("partial")
    assert partial.status == "expired" and partial.amount == 0.00499
    filled = partial.filled_amount
    assert filled is not None and 0 < filled < 0.00499
    row = signal()
    assert row.amount == pytest.approx(0.00999 - filled, abs=1e-15)
    (booked,) = position_of(signal_rows.to_core(row)).partials
    assert booked.percent == pytest.approx(filled / 0.00999 * 100, rel=1e-12)
    assert booked.price == partial.fill_price == pytest.approx(50_300.0, rel=1e-12)
    [stop] = resting_stops(protected)
    assert stop.quantity == Decimal(repr(round(0.00999 - filled, 8)))


def test_a_command_given_while_an_order_is_in_flight_waits_for_it(protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 50_300.0, 5)
    partial = Live.commit_partial_loss(SYMBOL, STRATEGY, EXCHANGE, 30)  # P > e: refused
    profit = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 50)
    trail = Live.commit_trailing_stop(SYMBOL, STRATEGY, EXCHANGE, -0.5)
    protected.tick(5)
    assert [Live.command_status(c)[0] for c in (partial, profit, trail)] == [
        "refused", "accepted", "pending"]  # the trailing stop waits for the partial's order
    at_price(protected, 50_300.0, 6)
    protected.tick(6)  # the partial has not been sent yet: still waiting
    assert Live.command_status(trail) == ("pending", None)
    settle(protected)
    assert Live.command_status(profit)[0] == "filled"
    protected.tick(7)  # now it applies, to the stop of what is left
    assert Live.command_status(trail)[0] == "accepted"
    settle(protected)
    [stop] = resting_stops(protected)
    assert Decimal(stop.stop_price) == Decimal("49750") and stop.quantity == Decimal("0.005")
    assert [i.status for i in intents("stop")] == ["canceled", "canceled", "open"]


def test_partial_loss_sells_its_share_and_a_dca_below_the_minimum_is_refused(
        protected: Money) -> None:
    open_protected(protected)
    at_price(protected, 49_800.0, 5)
    _, status, _message = command_done(protected, 5, Live.commit_partial_loss, 30)
    (partial,) = intents("partial")
    # 30 % of 0.00999 = 0.002997 → 0.00299 at the step
    assert (partial.status, partial.amount, partial.filled_amount) == (
        "filled", 0.00299, 0.00299)
    assert status == "filled"
    row = signal()
    assert row.amount == pytest.approx(0.007, abs=1e-15)
    (booked,) = position_of(signal_rows.to_core(row)).partials
    assert booked.kind == "loss"
    assert booked.percent == pytest.approx(0.00299 / 0.00999 * 100, rel=1e-12)
    # 4 USDT: below the 5 USDT minimum notional, refused before anything is sent
    at_price(protected, 49_700.0, 6)
    _, status, message = command_done(protected, 6, Live.commit_average_buy, 4)
    assert status == "refused" and message is not None and "below the minimum" in message
    (refused,) = intents("dca")
    assert refused.status == "rejected" and not refused.filled_amount
    assert signal().amount == pytest.approx(0.007, abs=1e-15)
    assert len(position_of(signal_rows.to_core(signal())).entries) == 1
    [stop] = resting_stops(protected)  # the stop of the partial, untouched by the refusal
    assert stop.quantity == Decimal("0.007")
    assert [i.status for i in intents("stop")] == ["canceled", "open"]


def test_without_exchange_stops_a_partial_is_just_the_sell(money: Money) -> None:
    open_long(money)
    at_price(money, 50_300.0, 5)
    command = Live.commit_partial_profit(SYMBOL, STRATEGY, EXCHANGE, 50)
    money.tick(5)
    money.drive()
    (partial,) = intents("partial")
    assert (partial.status, partial.amount) == ("filled", 0.00499)
    assert Live.command_status(command)[0] == "filled"
    assert signal().amount == pytest.approx(0.005, abs=1e-15)
    assert intents("stop") == [] and money.venue.balance("BTC") == Decimal("0.005")


# --- futures: a short's partial is a reduce-only buy-to-cover --------------------------------
def test_a_futures_short_partial_is_a_reduce_only_buy_and_its_stop_follows(fut: Fut) -> None:
    """A short of 500 USDT at 50,000 on the venue's USDⓈ-M futures (0.010 contracts); the
    feed drops to 49,600 from minute 5 (in profit for the short)."""
    start = int(futures.T0.timestamp() * 1000)
    candles = [Candle(start + m * 60_000, p, p, p, p, 10.0)
               for m in range(-30, 60) for p in [50_000.0 if m < 5 else 49_600.0]]
    REGISTRY.exchanges.pop(futures.EXCHANGE)
    feed = PaperExchange(fut.clock, {futures.SYMBOL: candles})
    add_exchange(futures.EXCHANGE, feed.get_candles, source=feed)
    REGISTRY.strategies.pop(futures.STRATEGY)
    add_strategy(futures.STRATEGY, lambda s, w, p: {
        "position": "short", "price_take_profit": 49_000.0, "price_stop_loss": 50_500.0,
        "minute_estimated_time": 600, "cost": 500.0})
    fut.tick(0)
    fut.settle()
    assert signal().amount == pytest.approx(0.01)
    fut.venue.set_price("BTC/USDT", 49_600)
    command = Live.commit_partial_profit(futures.SYMBOL, futures.STRATEGY, futures.EXCHANGE, 50)
    fut.tick(10)
    fut.settle()
    (partial,) = intents("partial")
    assert (partial.side, partial.status, partial.amount, partial.filled_amount) == (
        "buy", "filled", 0.005, 0.005)
    assert Live.command_status(command)[0] == "filled"
    row = signal()
    assert row.state == "opened" and row.amount == pytest.approx(0.005, abs=1e-15)
    (booked,) = position_of(signal_rows.to_core(row)).partials
    assert booked.percent == pytest.approx(50.0, rel=1e-12)
    [position] = [p for p in fut.venue.positions(futures.SYMBOL) if p.amount]
    assert position.amount == Decimal("-0.005")
    ours = {i.client_order_id for i in intents()}
    buys = [o for o in fut.venue.futures_orders() if o.client_order_id in ours and
            o.side == "BUY" and o.status == "FILLED"]
    assert len(buys) == 1 and buys[0].reduce_only
    resting = [o for o in fut.venue.futures_orders() if o.client_order_id in ours and
               o.status == "NEW"]
    assert len(resting) == 1 and resting[0].reduce_only
    assert Decimal(resting[0].quantity) == Decimal("0.005")
    assert [i.status for i in intents("stop")] == ["canceled", "open"]

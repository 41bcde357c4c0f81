"""Position commands with a broker (SPEC §11 under the evidence rules of §8 and §10), pure:
a partial or a DCA is an order and nothing of the position changes before the venue's fill;
the fill books the real share at the real price; a moved SL moves the exchange-side stop;
one order per key at a time (later commands wait, queued)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bkit.core.config import Config
from bkit.core.machine import KeyContext, KeyState, advance, with_protection
from bkit.core.order_outcomes import (
    OrderFill,
    command_refused,
    record_dca_fill,
    record_partial_fill,
)
from bkit.core.position_commands import PositionCommand, command_in_flight, position_of
from bkit.core.signals import SignalRow

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CTX = KeyContext("BTC/USDT", "swing", "venue", "1m")
CONFIG = Config()


def opened(protection: str | None = "open") -> SignalRow:
    """A long bought for 500 at 50,000: 0.01 BTC filled, 0.00999 held after the base fee."""
    extra = {} if protection is None else {"protection": protection, "stop_orders": 0}
    return SignalRow(
        id="s1", symbol="BTC/USDT", strategy_name="swing", exchange_name="venue",
        position="long", price_open=50_000.0, price_take_profit=52_000.0,
        price_stop_loss=49_000.0, minute_estimated_time=600, note="", cost=500.0,
        state="opened", created_at=T0, pending_at=T0, amount=0.00999, entry_filled=0.01,
        entry_cost=500.0, fill_price_open=50_000.0, extra=extra)


def tick(row: SignalRow, price: float, *commands: PositionCommand,
         in_flight: bool = False) -> tuple[SignalRow, object]:
    state = KeyState(row, position_commands=commands, orders_in_flight=in_flight)
    outcome = advance(CTX, state, T0 + timedelta(minutes=5), price, CONFIG, uses_broker=True)
    return (outcome.signal or row), outcome


def test_a_partial_is_an_order_and_the_position_waits_for_its_fill() -> None:
    row, outcome = tick(opened(), 51_000.0, PositionCommand(7, "partial_profit", 50.0))
    order = outcome.order  # type: ignore[attr-defined]
    assert order is not None and (order.kind, order.side, order.price) == (
        "partial", "sell", 51_000.0)
    assert outcome.command_results == [  # type: ignore[attr-defined]
        (7, "accepted", "partial_profit accepted at 51000: partial order queued for the venue")]
    assert row.order_in_flight and command_in_flight(row) == {
        "id": 7, "name": "partial_profit", "value": 50.0, "price": 51_000.0}
    assert row.amount == 0.00999 and position_of(row).partials == ()  # nothing booked yet


def test_commands_after_an_order_wait_and_none_apply_while_one_is_in_flight() -> None:
    first, later = PositionCommand(1, "average_buy", 100.0), PositionCommand(2, "breakeven")
    row, outcome = tick(opened(), 49_500.0, first, later)
    assert outcome.order.kind == "dca" and outcome.order.cost == 100.0  # type: ignore
    assert [r[0] for r in outcome.command_results] == [1]  # type: ignore[attr-defined]
    _, outcome = tick(opened(), 49_500.0, later, in_flight=True)
    assert outcome.command_results == [] and outcome.order is None  # type: ignore
    _, outcome = tick(row, 49_500.0, later)  # the row's own order is in flight too
    assert outcome.command_results == [] and outcome.order is None  # type: ignore


def test_a_partial_fill_books_the_real_share_at_the_real_price_and_replaces_the_stop() -> None:
    row, _ = tick(opened(), 51_000.0, PositionCommand(7, "partial_profit", 50.0))
    # sent 0.00499 (50 % of 0.00999 floored to the step); 0.003 filled at 50,990, then expired
    fill = OrderFill(0.003, 152.97, fees_quote=0.15297, fees_paid_quote=0.15297)
    outcome = record_partial_fill(CTX, row, fill, T0, CONFIG, remainder_is_dust=False,
                                  protect=True)
    done = outcome.signal
    assert done is not None and done.state == "opened" and not done.order_in_flight
    assert done.amount == pytest.approx(0.00699, abs=1e-15)
    (partial,) = position_of(done).partials
    assert partial.percent == pytest.approx(0.003 / 0.00999 * 100, rel=1e-15)
    assert (partial.kind, partial.price, partial.cost_basis) == ("profit", 50_990.0, 500.0)
    assert (done.exit_filled, done.exit_cost, done.fees_paid_quote) == (0.003, 152.97, 0.15297)
    assert command_in_flight(done) is None
    assert outcome.command_results[0][:2] == (7, "filled")
    assert outcome.order is not None and outcome.order.kind == "stop"
    assert done.extra["stop_orders"] == 1 and done.extra["protection"] == "placing"


def test_a_partial_that_leaves_dust_is_the_close() -> None:
    row, _ = tick(opened(), 51_000.0, PositionCommand(3, "partial_profit", 100.0))
    fill = OrderFill(0.00999, 509.49, fees_paid_quote=0.50949)
    outcome = record_partial_fill(CTX, row, fill, T0, CONFIG, remainder_is_dust=True,
                                  protect=True)
    assert outcome.result.action == "closed" and outcome.order is None
    done = outcome.signal
    assert done is not None and (done.state, done.close_reason) == ("closed", "closed")
    assert done.realised_pnl_cost == pytest.approx(509.49 - 500.0 - 0.50949, abs=1e-12)


def test_a_refused_or_unfilled_partial_changes_nothing() -> None:
    before = opened()
    row, _ = tick(before, 51_000.0, PositionCommand(4, "partial_profit", 1.0))
    outcome = command_refused(CTX, row, T0, "notional 4.5 USDT below the venue's minimum 5")
    done = outcome.signal
    assert done is not None and done == before.evolve(extra=before.extra)
    assert outcome.order is None
    assert outcome.command_results == [(4, "refused", "partial_profit refused: "
                                        "notional 4.5 USDT below the venue's minimum 5")]
    assert outcome.notices[0].kind == "error"
    nothing = record_partial_fill(CTX, row, OrderFill(0.0, 0.0), T0, CONFIG,
                                  remainder_is_dust=False, protect=True)
    assert nothing.signal is not None and nothing.signal.amount == 0.00999
    assert nothing.command_results[0][1] == "refused" and nothing.order.kind == "stop"  # type: ignore


def test_a_dca_fill_adds_what_filled_net_of_the_base_fee() -> None:
    row, _ = tick(opened(), 49_500.0, PositionCommand(5, "average_buy", 99.0))
    fill = OrderFill(0.002, 99.0, fees_quote=0.099, base_fee=0.000002)
    outcome = record_dca_fill(CTX, row, fill, T0, protect=True)
    done = outcome.signal
    assert done is not None and done.amount == pytest.approx(0.011988, abs=1e-15)
    assert (done.entry_filled, done.entry_cost) == (0.012, 599.0)
    entries = position_of(done).entries
    assert [(e.price, e.cost) for e in entries] == [(50_000.0, 500.0), (49_500.0, 99.0)]
    assert (done.price_take_profit, done.price_stop_loss) == (52_000.0, 49_000.0)
    assert outcome.order is not None and outcome.order.kind == "stop"


def test_a_moved_sl_moves_the_exchange_stop_only_when_protected() -> None:
    row, outcome = tick(opened(), 50_400.0, PositionCommand(8, "trailing_stop", -1.0))
    assert row.price_stop_loss == pytest.approx(49_500.0)  # d0 = 2 %, −1 → 1 % below e
    order = outcome.order  # type: ignore[attr-defined]
    assert order is not None and (order.kind, order.price) == ("stop", row.price_stop_loss)
    assert row.extra["stop_orders"] == 1 and not row.order_in_flight
    plain, outcome = tick(opened(None), 50_400.0, PositionCommand(9, "trailing_stop", -1.0))
    assert plain.price_stop_loss == pytest.approx(49_500.0) and outcome.order is None  # type: ignore
    even, outcome = tick(with_protection(opened(), "open").evolve(breakeven_fired=True),
                         50_400.0, PositionCommand(10, "breakeven"))
    assert even.price_stop_loss == 50_000.0 and outcome.order.price == 50_000.0  # type: ignore
    take, outcome = tick(opened(), 50_400.0, PositionCommand(11, "trailing_take", -1.0))
    assert take.price_take_profit == pytest.approx(51_500.0) and outcome.order is None  # type: ignore


def test_a_dca_without_a_cost_on_a_non_usd_market_is_refused_before_sending() -> None:
    row = opened().evolve(symbol="XRP/ETH")
    state = KeyState(row, position_commands=(PositionCommand(12, "average_buy"),))
    ctx = KeyContext("XRP/ETH", "swing", "venue", "1m")
    outcome = advance(ctx, state, T0 + timedelta(minutes=5), 49_500.0, CONFIG,
                      uses_broker=True)
    assert outcome.order is None
    ((command_id, status, message),) = outcome.command_results
    assert (command_id, status) == (12, "refused") and "explicit `cost`" in message
    with_cost = KeyState(row, position_commands=(PositionCommand(13, "average_buy", 0.5),))
    outcome = advance(ctx, with_cost, T0 + timedelta(minutes=5), 49_500.0, CONFIG,
                      uses_broker=True)
    assert outcome.order is not None and outcome.order.cost == 0.5


def test_a_sell_fee_taken_in_the_coin_leaves_the_position_too() -> None:
    row, _ = tick(opened(), 51_000.0, PositionCommand(14, "partial_profit", 50.0))
    fill = OrderFill(0.00499, 254.49, fees_quote=0.25449, base_fee=0.00000499)
    outcome = record_partial_fill(CTX, row, fill, T0, CONFIG, remainder_is_dust=False)
    assert outcome.signal is not None
    assert outcome.signal.amount == pytest.approx(0.00999 - 0.00499 - 0.00000499, abs=1e-15)
    assert outcome.order is None  # not protected (`protect` False): no stop to put back

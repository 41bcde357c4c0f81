"""The state machine with a broker (SPEC §8): opening/closing intents, confirmations from the
venue's evidence, rollback, refused exits that become `stuck` (never a close)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bkit.core.config import Config, apply_config_changes
from bkit.core.machine import (
    KeyContext,
    KeyState,
    StrategyAnswer,
    TickOutcome,
    advance,
    wants_signal,
)
from bkit.core.order_outcomes import (
    OrderFill,
    confirm_open,
    record_exit_fill,
    refuse_close,
    reject_open,
)
from bkit.core.results import OrderRequest
from bkit.core.signals import SignalRow
from tests.unit.spec_oracle import spec_pnl

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CTX = KeyContext("ETH/USDT", "swing", "paper", "1m")
PERP = KeyContext("ETH/USDT:USDT", "swing", "paper", "1m")  # shorts need a derivative
CONFIG = Config()


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)




LONG = {"position": "long", "price_take_profit": 110.0, "price_stop_loss": 95.0, "cost": 50}
SHORT = {"position": "short", "price_take_profit": 90.0, "price_stop_loss": 105.0}


class BrokerKey:
    """Runtime stand-in: ticks call `advance(uses_broker=True)`, the orders worker calls the
    confirm/reject functions; both store the outcome the same way."""

    def __init__(self, config: Config = CONFIG, ctx: KeyContext = CTX) -> None:
        self.config = config
        self.ctx = ctx
        self.state = KeyState()
        self.slots = 0
        self.orders: list[OrderRequest] = []

    @property
    def row(self) -> SignalRow:
        assert self.state.signal is not None
        return self.state.signal

    def tick(self, minute: float, price: float, signal: Any = None) -> TickOutcome:
        when = at(minute)
        answer = StrategyAnswer(raw=signal) if wants_signal(self.state, when, "1m") else None
        return self.apply(
            advance(self.ctx, self.state, when, price, self.config, answer=answer, uses_broker=True)
        )

    def apply(self, outcome: TickOutcome) -> TickOutcome:
        state = self.state
        self.state = KeyState(
            signal=outcome.signal if outcome.signal is not None else state.signal,
            status="disabled" if outcome.finished else state.status,
            signal_window=outcome.signal_window
            if outcome.signal_window is not None
            else state.signal_window,
            command=None if outcome.clear_command else state.command,
        )
        self.slots += {"acquire": 1, "release": -1, None: 0}[outcome.slot]
        assert self.slots in (0, 1)
        if outcome.order is not None:
            self.orders.append(outcome.order)
        return outcome

    def confirm_open(self, minute: float, fill: float) -> TickOutcome:
        amount = self.row.cost / fill
        return self.apply(confirm_open(self.ctx, self.row, OrderFill(amount, self.row.cost),
                                       at(minute)))

    def reject_open(self, minute: float, error: str) -> TickOutcome:
        return self.apply(reject_open(self.ctx, self.row, at(minute), error))

    def confirm_close(self, minute: float, fill: float | None, **kw: Any) -> TickOutcome:
        amount = self.row.amount or 0.0
        price = fill if fill is not None else self.row.pending_close_price or 0.0
        return self.apply(record_exit_fill(self.ctx, self.row, OrderFill(amount, amount * price),
                                           at(minute), self.config, remainder_is_dust=True,
                                           **kw))

    def reject_close(self, minute: float, error: str) -> TickOutcome:
        return self.apply(refuse_close(self.ctx, self.row, at(minute), error, self.config))


def open_position(signal: dict[str, Any] = LONG, **kw: Any) -> BrokerKey:
    key = BrokerKey(**kw)
    key.tick(0, 100.0, signal)
    key.confirm_open(0.5, 100.02)
    assert key.row.state == "opened"
    return key


# --- entry ----------------------------------------------------------------------------------
def test_new_entry_is_opening_with_an_open_order() -> None:
    key = BrokerKey()
    outcome = key.tick(0, 100.0, LONG)
    assert outcome.result.action == "idle"
    assert outcome.result.signal is not None  # the in-flight signal is attached
    assert outcome.result.signal.price_open == 100.0
    row = key.row
    assert (row.state, row.order_in_flight, row.is_live) == ("opening", True, True)
    assert outcome.slot == "acquire"
    assert outcome.order == OrderRequest(
        kind="open",
        signal_id=row.id,
        symbol="ETH/USDT",
        side="buy",
        position="long",
        price=100.0,
        cost=50.0,
    )
    assert outcome.callbacks == []  # on_open waits for the exchange


def test_short_entry_sells() -> None:
    outcome = BrokerKey(ctx=PERP).tick(0, 100.0, SHORT)
    assert outcome.order is not None
    assert (outcome.order.side, outcome.order.position, outcome.order.cost) == (
        "sell",
        "short",
        100.0,
    )


@pytest.mark.parametrize("price", [100.0, 120.0, 80.0])
def test_ticks_while_the_order_is_in_flight_decide_nothing(price: float) -> None:
    key = BrokerKey()
    key.tick(0, 100.0, LONG)
    key.state = replace(key.state, command="close_position")
    for minute in (1, 2, 3):
        outcome = key.tick(minute, price, LONG)  # even past TP / SL, even with a command
        assert outcome.result.action == "idle"
        assert outcome.result.signal is not None and outcome.result.signal.id == key.row.id
        assert outcome.signal is None and outcome.order is None and outcome.slot is None
        assert outcome.notices == [] and not outcome.clear_command
    assert len(key.orders) == 1  # never a second order for the same intent
    assert key.row.state == "opening"


def test_confirm_open_opens_and_records_the_fill() -> None:
    key = BrokerKey()
    key.tick(0, 100.0, LONG)
    outcome = key.confirm_open(1, 100.07)
    assert outcome.result.action == "opened"
    assert outcome.result.current_price == 100.0  # the signal's entry
    assert outcome.result.created_at == at(1)
    row = key.row
    assert (row.state, row.order_in_flight) == ("opened", False)
    assert row.price_open == 100.0 and row.fill_price_open == pytest.approx(100.07)
    assert row.amount == pytest.approx(50 / 100.07) and row.entry_cost == 50
    assert row.pending_at == at(1)  # lifetime starts when the exchange filled
    assert outcome.slot is None  # acquired when the intent was written
    assert [c.name for c in outcome.callbacks] == ["on_open"]
    assert key.tick(2, 104.0).result.action == "active"


def test_reject_open_rolls_back() -> None:
    key = BrokerKey()
    key.tick(0, 100.0, LONG)
    signal_id = key.row.id
    outcome = key.reject_open(1, "insufficient funds")
    assert outcome.result.action == "idle"
    row = key.row
    assert (row.state, row.cancel_reason, row.is_live, row.closed_at) == (
        "cancelled",
        "rejected",
        False,
        at(1),
    )
    assert outcome.slot == "release" and key.slots == 0
    [notice] = outcome.notices
    assert notice.kind == "error"
    assert "insufficient funds" in notice.message and signal_id in notice.message
    assert notice.data == {"stage": "order_open", "signal_id": signal_id}
    # new signals are allowed again
    assert key.tick(2, 100.0, LONG).order is not None
    assert key.row.id != signal_id and key.row.state == "opening"


def test_scheduled_activation_sends_an_open_order_without_a_new_slot() -> None:
    key = BrokerKey()
    outcome = key.tick(0, 100.0, {**LONG, "price_open": 99.0, "price_stop_loss": 97.0})
    assert outcome.result.action == "scheduled" and outcome.order is None
    outcome = key.tick(1, 98.5)
    assert outcome.result.action == "idle"
    assert key.row.state == "opening"
    assert outcome.slot is None
    assert outcome.order is not None
    assert (outcome.order.kind, outcome.order.price) == ("open", 99.0)
    assert key.confirm_open(2, 98.9).result.current_price == 99.0


# --- exit -----------------------------------------------------------------------------------
def test_take_profit_sends_a_close_order_at_tp_and_confirm_closes_at_exactly_tp() -> None:
    key = open_position()
    outcome = key.tick(1, 114.0)  # past TP 110
    assert outcome.result.action == "idle"
    row = key.row
    assert (row.state, row.order_in_flight) == ("closing", True)
    assert (row.pending_close_reason, row.pending_close_price) == ("take_profit", 110.0)
    assert outcome.order == OrderRequest(
        kind="close",
        signal_id=row.id,
        symbol="ETH/USDT",
        side="sell",
        position="long",
        price=110.0,
        cost=50.0,
    )
    assert outcome.slot is None

    assert key.tick(2, 90.0).result.action == "idle"  # in flight: no SL decision
    assert len(key.orders) == 2

    outcome = key.confirm_close(3, 109.8)
    assert outcome.result.action == "closed"
    assert outcome.result.current_price == 110.0
    assert outcome.result.close_reason == "take_profit"
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(9.570439560, abs=1e-9)
    assert outcome.result.pnl.pnl_cost == pytest.approx(9.570439560 / 2, abs=1e-9)
    row = key.row
    assert (row.state, row.price_close) == ("closed", 110.0)
    assert row.fill_price_close == pytest.approx(109.8)
    # realised from the fills: bought 50 USDT at 100.02, sold the same coins at 109.8
    assert row.realised_pnl_cost == pytest.approx(50 / 100.02 * 109.8 - 50, abs=1e-9)
    assert row.realised_pnl_percentage == pytest.approx((109.8 / 100.02 - 1) * 100, abs=1e-9)
    assert (row.pending_close_reason, row.pending_close_price) == (None, None)
    assert outcome.slot == "release" and key.slots == 0
    assert [c.name for c in outcome.callbacks] == ["on_close"]


def test_a_short_on_a_spot_market_is_refused_before_sending() -> None:
    key = BrokerKey()
    outcome = key.tick(0, 100.0, SHORT)
    assert outcome.order is None and outcome.signal is None and key.slots == 0
    [notice] = outcome.notices
    assert notice.kind == "error" and "spot" in notice.message
    assert "ETH/USDT:USDT" in notice.message and "binanceusdm" in notice.message


def test_stop_loss_close_of_a_short_buys_back_at_sl() -> None:
    key = open_position(SHORT, ctx=PERP)
    outcome = key.tick(1, 107.0)
    assert outcome.order is not None
    assert (outcome.order.side, outcome.order.price) == ("buy", 105.0)
    outcome = key.confirm_close(2, None)
    assert (outcome.result.close_reason, outcome.result.current_price) == ("stop_loss", 105.0)
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(spec_pnl("short", 100, 105), abs=1e-9)


def test_close_position_command_closes_at_the_current_price() -> None:
    key = open_position()
    key.state = replace(key.state, command="close_position")
    outcome = key.tick(1, 101.0)
    assert outcome.clear_command
    assert (key.row.pending_close_reason, key.row.pending_close_price) == ("closed", 101.0)
    outcome = key.confirm_close(2, 101.0)
    assert (outcome.result.close_reason, outcome.result.current_price) == ("closed", 101.0)


def test_refused_exit_keeps_the_position_then_it_is_stuck_never_closed() -> None:
    key = open_position()
    key.tick(1, 111.0)
    signal_id = key.row.id
    for attempt in range(1, 5):
        outcome = key.reject_close(attempt + 0.5, "exchange says no")
        assert outcome.result.action == "idle"
        row = key.row
        # the exit intent retries itself (backoff); the position stays ours and blocks entries
        assert (row.state, row.close_rejections, row.order_in_flight, row.stuck) == (
            "closing", attempt, True, False)
        assert outcome.slot is None and outcome.order is None
        [notice] = outcome.notices
        assert notice.kind == "error"
        assert f"({attempt}/5)" in notice.message and "exchange says no" in notice.message
        orders_before = len(key.orders)
        outcome = key.tick(attempt + 1, 100.0, LONG)  # in flight: nothing decided or sent
        assert outcome.result.action == "idle" and len(key.orders) == orders_before

    outcome = key.reject_close(5.5, "exchange says no")  # the 5th refusal
    assert outcome.result.action == "idle"  # not closed: the venue made no close
    row = key.row
    assert (row.state, row.stuck, row.order_in_flight, row.is_live) == (
        "closing", True, False, True)
    assert row.close_reason is None and row.pnl_percentage is None
    assert outcome.slot is None and key.slots == 1  # the slot stays held
    [notice] = outcome.notices
    assert notice.kind == "exit" and notice.data["stuck"] is True
    assert notice.data["signal_id"] == signal_id and notice.data["attempts"] == 5
    orders_before = len(key.orders)
    for minute in (6, 7, 8):  # a stuck exit is never re-sent by ticks, nor a new entry made
        outcome = key.tick(minute, 100.0, LONG)
        assert outcome.result.action == "idle" and outcome.order is None
    assert len(key.orders) == orders_before and key.row.id == signal_id


def test_close_retry_attempts_follow_config() -> None:
    config = apply_config_changes(CONFIG, {"CC_ORDER_CLOSE_RETRY_ATTEMPTS": 2})
    key = open_position(config=config)
    key.tick(1, 111.0)
    assert not key.reject_close(2, "no").notices[0].data.get("stuck")
    assert key.reject_close(4, "no").notices[0].data["stuck"] is True
    assert key.row.stuck and key.row.state == "closing"


def test_close_confirmed_after_refusals_uses_the_decided_reason() -> None:
    key = open_position()
    key.tick(1, 80.0)  # SL 95
    key.reject_close(2, "timeout")
    key.tick(3, 120.0)  # the price does not change the decided close
    outcome = key.confirm_close(4, 94.9)
    assert (outcome.result.close_reason, outcome.result.current_price) == ("stop_loss", 95.0)


# --- stop with a broker ---------------------------------------------------------------------
def test_draining_key_is_finished_only_after_the_close_is_confirmed() -> None:
    key = open_position()
    key.state = replace(key.state, status="draining")
    outcome = key.tick(1, 111.0)
    assert key.row.state == "closing"
    assert not outcome.finished  # the close may still be rejected and need retries
    key.reject_close(2, "no")
    outcome = key.tick(3, 100.0)
    assert outcome.order is None and not outcome.finished  # the intent retries itself
    outcome = key.confirm_close(4, 110.0)
    assert outcome.result.action == "closed"
    outcome = key.tick(5, 100.0)
    assert outcome.result.action == "idle" and outcome.finished


def test_confirm_close_can_finish_a_draining_key() -> None:
    key = open_position()
    key.state = replace(key.state, status="draining")
    key.tick(1, 111.0)
    assert key.confirm_close(2, 110.0, finished=True).finished


def test_draining_cancels_a_scheduled_signal_without_an_order() -> None:
    key = BrokerKey()
    key.tick(0, 100.0, {**LONG, "price_open": 99.0, "price_stop_loss": 97.0})
    key.state = replace(key.state, status="draining")
    outcome = key.tick(1, 100.0)
    assert (outcome.result.action, outcome.result.reason, outcome.finished) == (
        "cancelled",
        "user",
        True,
    )
    assert outcome.order is None and outcome.slot == "release"

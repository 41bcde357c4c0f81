"""The tick state machine without a broker (SPEC §4, §6, §7, §9): every transition and reason."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
    progress,
    signal_window_of,
    wants_signal,
)
from bkit.core.results import TickResult, jsonable
from bkit.core.signals import SignalRow
from tests.unit.spec_oracle import spec_pnl

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # aligned to every interval (1m .. 1h)
CTX = KeyContext("BTC/USDT", "trend", "binance", "1m")
CONFIG = Config()
CLOSE_REASONS = {"take_profit", "stop_loss", "time_expired", "closed"}


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)




def long_signal(tp: float = 110.0, sl: float = 95.0, **extra: Any) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": tp, "price_stop_loss": sl, **extra}


def short_signal(tp: float = 90.0, sl: float = 105.0, **extra: Any) -> dict[str, Any]:
    return {"position": "short", "price_take_profit": tp, "price_stop_loss": sl, **extra}


class Key:
    """Drives `advance` the way the runtime does: asks the strategy only when `wants_signal`,
    then stores what the outcome says (row, window, command, status, slot)."""

    def __init__(
        self,
        strategy: Callable[[datetime, float], Any] | None = None,
        *,
        ctx: KeyContext = CTX,
        config: Config = CONFIG,
        status: str = "enabled",
        risk: Any = None,
    ) -> None:
        self.strategy = strategy or (lambda when, price: None)
        self.ctx, self.config, self.risk = ctx, config, risk
        self.state = KeyState(status=status)  # type: ignore[arg-type]
        self.slots = 0
        self.asked: list[datetime] = []

    @property
    def row(self) -> SignalRow | None:
        return self.state.signal

    def tick(self, minute: float, price: float) -> TickOutcome:
        when = at(minute)
        answer = None
        if wants_signal(self.state, when, self.ctx.interval):
            self.asked.append(when)
            try:
                answer = StrategyAnswer(raw=self.strategy(when, price))
            except Exception as exc:  # the runtime turns a raising get_signal into an answer
                answer = StrategyAnswer(error=f"{type(exc).__name__}: {exc}")
        outcome = advance(
            self.ctx, self.state, when, price, self.config, answer=answer, risk_check=self.risk
        )
        self.apply(outcome)
        return outcome

    def apply(self, outcome: TickOutcome) -> None:
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
        assert self.slots in (0, 1), "at most one live signal (and slot) per key"

    def command(self, command: str) -> None:
        self.state = replace(self.state, command=command)

    def set_status(self, status: str) -> None:
        self.state = replace(self.state, status=status)


def once(signal: Any) -> Callable[[datetime, float], Any]:
    """A strategy that returns `signal` the first time and None afterwards."""
    given: list[Any] = [signal]
    return lambda when, price: given.pop() if given else None


def opened_key(signal: dict[str, Any] | None = None, price: float = 100.0) -> Key:
    key = Key(once(signal or long_signal()))
    assert key.tick(0, price).result.action == "opened"
    return key


def assert_common(result: TickResult, action: str, minute: float, price: float) -> None:
    assert result.action == action
    assert (result.symbol, result.strategy_name, result.exchange_name) == (
        "BTC/USDT",
        "trend",
        "binance",
    )
    assert result.created_at == at(minute)
    assert result.current_price == price


# --- idle -----------------------------------------------------------------------------------
def test_idle_when_the_strategy_has_no_signal() -> None:
    key = Key()
    outcome = key.tick(0, 100.0)
    assert_common(outcome.result, "idle", 0, 100.0)
    assert outcome.result.signal is None
    assert outcome.signal is None and outcome.slot is None and outcome.order is None
    assert outcome.signal_window == signal_window_of(at(0), "1m")
    assert [c.name for c in outcome.callbacks] == ["on_idle"]
    assert outcome.callbacks[0].args == ("BTC/USDT", 100.0, at(0))
    assert key.asked == [at(0)]


def test_advance_rejects_a_bad_price() -> None:
    for price in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError, match="tick price"):
            advance(CTX, KeyState(), at(0), price, CONFIG)


# --- opened immediately ---------------------------------------------------------------------
def test_signal_without_price_open_opens_at_the_current_price() -> None:
    key = Key(once(long_signal(note="breakout", minute_estimated_time=60)))
    outcome = key.tick(0, 100.0)
    assert_common(outcome.result, "opened", 0, 100.0)
    signal = outcome.result.signal
    assert signal is not None
    assert (
        signal.position,
        signal.price_open,
        signal.price_take_profit,
        signal.price_stop_loss,
    ) == ("long", 100.0, 110.0, 95.0)
    assert (signal.minute_estimated_time, signal.note, signal.cost) == (60, "breakout", 100.0)
    assert signal.scheduled_at == at(0) and signal.pending_at == at(0)
    assert (signal.symbol, signal.strategy_name, signal.exchange_name) == (
        "BTC/USDT",
        "trend",
        "binance",
    )
    assert outcome.slot == "acquire"
    assert outcome.signal is not None and outcome.signal.state == "opened"
    assert [c.name for c in outcome.callbacks] == ["on_open"]
    assert outcome.callbacks[0].args[2:] == (100.0, at(0))


def test_price_open_already_crossed_opens_now_at_price_open() -> None:
    key = Key(once(long_signal(price_open=101.0, tp=105.0, sl=99.0)))
    outcome = key.tick(0, 100.0)
    assert_common(outcome.result, "opened", 0, 101.0)  # current_price = entry
    assert outcome.slot == "acquire"
    assert key.row is not None and key.row.pending_at == at(0)


def test_short_price_open_already_crossed_opens_now() -> None:
    key = Key(once(short_signal(price_open=99.0, tp=95.0, sl=101.0)))
    assert_common(key.tick(0, 100.0).result, "opened", 0, 99.0)


# --- scheduled, waiting, opened by activation ----------------------------------------------
def test_scheduled_waiting_then_opened_by_activation() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0, minute_estimated_time=30)))
    outcome = key.tick(0, 100.0)
    assert_common(outcome.result, "scheduled", 0, 100.0)
    assert outcome.slot == "acquire"
    assert outcome.signal is not None and outcome.signal.state == "scheduled"
    assert outcome.result.signal is not None
    assert outcome.result.signal.scheduled_at == at(0)
    assert outcome.result.signal.pending_at is None
    assert [c.name for c in outcome.callbacks] == ["on_schedule"]

    outcome = key.tick(1, 99.5)
    assert_common(outcome.result, "waiting", 1, 99.5)
    assert outcome.slot is None and outcome.signal is None

    outcome = key.tick(2, 98.8)  # falls through 99
    assert_common(outcome.result, "opened", 2, 99.0)  # entry at price_open
    assert outcome.slot is None  # the scheduled signal already holds its slot
    assert outcome.result.signal is not None
    assert outcome.result.signal.pending_at == at(2)
    assert outcome.result.signal.scheduled_at == at(0)
    assert key.slots == 1
    assert key.asked == [at(0)]  # a live signal: the strategy is not asked again


def test_short_scheduled_activates_when_price_rises_to_open() -> None:
    key = Key(once(short_signal(price_open=101.0, tp=98.0, sl=103.0)))
    assert key.tick(0, 100.0).result.action == "scheduled"
    assert key.tick(1, 100.9).result.action == "waiting"
    outcome = key.tick(2, 101.0)  # touching is crossing
    assert_common(outcome.result, "opened", 2, 101.0)


def test_never_activates_on_the_tick_that_created_it() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
    key.tick(0, 100.0)
    # the same minute again (a duplicate tick) with a crossing price: still waiting
    outcome = advance(CTX, key.state, at(0), 98.5, CONFIG)
    assert outcome.result.action == "waiting"
    assert advance(CTX, key.state, at(1), 98.5, CONFIG).result.action == "opened"


# --- active ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("signal", "price", "percent_tp", "percent_sl"),
    [
        (long_signal(tp=110.0, sl=95.0), 104.0, 40.0, 0.0),  # 4 of 10 toward TP
        (long_signal(tp=110.0, sl=95.0), 97.0, 0.0, 60.0),  # 3 of 5 toward SL
        (long_signal(tp=110.0, sl=95.0), 100.0, 0.0, 0.0),
        (short_signal(tp=90.0, sl=105.0), 97.0, 30.0, 0.0),  # 3 of 10 toward TP
        (short_signal(tp=90.0, sl=105.0), 102.0, 0.0, 40.0),  # 2 of 5 toward SL
    ],
)
def test_active_reports_progress_and_unrealised_pnl(
    signal: dict[str, Any], price: float, percent_tp: float, percent_sl: float
) -> None:
    key = opened_key({**signal, "cost": 250})
    outcome = key.tick(1, price)
    assert_common(outcome.result, "active", 1, price)
    assert outcome.result.percent_tp == pytest.approx(percent_tp, abs=1e-9)
    assert outcome.result.percent_sl == pytest.approx(percent_sl, abs=1e-9)
    pnl = outcome.result.pnl
    assert pnl is not None
    expected = spec_pnl(signal["position"], 100.0, price)
    assert pnl.pnl_percentage == pytest.approx(expected, abs=1e-9)
    assert pnl.pnl_cost == pytest.approx(expected / 100 * 250, abs=1e-9)
    assert (pnl.price_open, pnl.price_close) == (100.0, price)
    assert outcome.slot is None


def test_flat_active_pnl_is_the_spec_flat_value() -> None:
    key = opened_key(long_signal(tp=52_000.0, sl=46_000.0), price=50_000.0)
    pnl = key.tick(1, 50_000.0).result.pnl
    assert pnl is not None and pnl.pnl_percentage == pytest.approx(-0.399600400, abs=1e-9)


def test_progress_is_capped_at_100() -> None:
    key = opened_key()
    assert key.row is not None
    assert progress(key.row, 200.0) == (100.0, 0.0)
    assert progress(key.row, 1.0) == (0.0, 100.0)


# --- closed: take_profit, stop_loss, time_expired -------------------------------------------
@pytest.mark.parametrize(
    ("signal", "entry", "price", "close_price", "expected_pnl"),
    [
        (long_signal(tp=52_000.0, sl=46_000.0), 50_000.0, 52_000.0, 52_000.0, 3.588415584),
        (long_signal(tp=52_000.0, sl=46_000.0), 50_000.0, 55_000.0, 52_000.0, 3.588415584),
        (long_signal(tp=110.0, sl=95.0), 100.0, 123.0, 110.0, 9.570439560),
        (short_signal(tp=48_000.0, sl=52_000.0), 50_000.0, 47_000.0, 48_000.0, 3.611615616),
        (short_signal(tp=90.0, sl=105.0), 100.0, 80.0, 90.0, 9.629639640),
    ],
)
def test_take_profit_closes_at_exactly_tp(
    signal: dict[str, Any], entry: float, price: float, close_price: float, expected_pnl: float
) -> None:
    key = opened_key({**signal, "cost": 200}, price=entry)
    outcome = key.tick(1, price)
    assert_common(outcome.result, "closed", 1, close_price)  # TP, not the overshooting price
    assert outcome.result.close_reason == "take_profit"
    assert outcome.result.close_timestamp == at(1)
    pnl = outcome.result.pnl
    assert pnl is not None
    assert pnl.pnl_percentage == pytest.approx(expected_pnl, abs=1e-9)
    assert pnl.pnl_cost == pytest.approx(expected_pnl * 2, abs=1e-8)
    assert pnl.price_close == close_price
    assert outcome.slot == "release" and key.slots == 0
    row = outcome.signal
    assert row is not None and row.state == "closed" and not row.is_live
    assert (row.close_reason, row.price_close, row.closed_at) == ("take_profit", close_price, at(1))
    assert row.pnl_percentage == pytest.approx(expected_pnl, abs=1e-9)
    assert [c.name for c in outcome.callbacks] == ["on_close"]
    assert outcome.callbacks[0].args[2:] == (close_price, at(1))


@pytest.mark.parametrize(
    ("signal", "price", "expected_pnl"),
    [
        (long_signal(tp=52_000.0, sl=46_000.0), 46_000.0, -8.375632368),
        (long_signal(tp=52_000.0, sl=46_000.0), 40_000.0, -8.375632368),
        (short_signal(tp=48_000.0, sl=52_000.0), 60_000.0, spec_pnl("short", 50_000.0, 52_000.0)),
    ],
)
def test_stop_loss_closes_at_exactly_sl(
    signal: dict[str, Any], price: float, expected_pnl: float
) -> None:
    key = opened_key(signal, price=50_000.0)
    outcome = key.tick(1, price)
    sl = signal["price_stop_loss"]
    assert_common(outcome.result, "closed", 1, sl)
    assert outcome.result.close_reason == "stop_loss"
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(expected_pnl, abs=1e-9)
    assert outcome.slot == "release"


def test_short_stop_loss_pnl_by_hand() -> None:
    # short 50 000 → 52 000: open_adj 49 950, close_adj 52 052,
    # gross (49 950 − 52 052)/49 950 × 100 = −4.208208208…, fee 0.1 × (1 + 52 052/49 950)
    expected = (49_950 - 52_052) / 49_950 * 100 - 0.1 * (1 + 52_052 / 49_950)
    assert expected == pytest.approx(-4.412416416, abs=1e-9)
    assert spec_pnl("short", 50_000.0, 52_000.0) == pytest.approx(expected, abs=1e-12)


def test_time_expired_closes_at_the_current_price() -> None:
    key = opened_key(
        long_signal(tp=52_000.0, sl=46_000.0, minute_estimated_time=30), price=50_000.0
    )
    assert key.tick(29, 50_000.0).result.action == "active"
    outcome = key.tick(30, 50_000.0)
    assert_common(outcome.result, "closed", 30, 50_000.0)
    assert outcome.result.close_reason == "time_expired"
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(-0.399600400, abs=1e-9)
    assert outcome.slot == "release"


def test_time_is_checked_before_take_profit() -> None:
    key = opened_key(long_signal(minute_estimated_time=10))
    outcome = key.tick(10, 130.0)  # past TP 110, but the time is up first
    assert outcome.result.close_reason == "time_expired"
    assert outcome.result.current_price == 130.0
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(spec_pnl("long", 100, 130), abs=1e-9)


def test_lifetime_counts_from_activation_not_from_scheduling() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0, minute_estimated_time=30)))
    key.tick(0, 100.0)
    assert key.tick(20, 98.9).result.action == "opened"  # pending_at = minute 20
    assert key.tick(30, 99.5).result.action == "active"  # 30 min after scheduling: not expired
    assert key.tick(49, 99.5).result.action == "active"
    outcome = key.tick(50, 99.5)  # 30 min after activation
    assert (outcome.result.action, outcome.result.close_reason) == ("closed", "time_expired")


# --- cancelled: timeout, price_reject -------------------------------------------------------
def test_scheduled_signal_times_out_after_schedule_await() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
    key.tick(0, 100.0)
    assert key.tick(119, 100.0).result.action == "waiting"
    outcome = key.tick(120, 100.0)
    assert_common(outcome.result, "cancelled", 120, 100.0)
    assert outcome.result.reason == "timeout"
    assert outcome.result.close_timestamp == at(120)
    assert outcome.slot == "release" and key.slots == 0
    assert outcome.signal is not None and outcome.signal.state == "cancelled"
    assert outcome.signal.cancel_reason == "timeout"
    assert [c.name for c in outcome.callbacks] == ["on_cancel"]


def test_timeout_is_checked_before_the_price() -> None:
    for price in (98.0, 96.0):  # would activate / would price_reject
        key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
        key.tick(0, 100.0)
        outcome = key.tick(120, price)
        assert (outcome.result.action, outcome.result.reason) == ("cancelled", "timeout")


def test_schedule_await_follows_config() -> None:
    config = apply_config_changes(CONFIG, {"CC_SCHEDULE_AWAIT_MINUTES": 10})
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)), config=config)
    key.tick(0, 100.0)
    assert key.tick(9, 100.0).result.action == "waiting"
    assert key.tick(10, 100.0).result.reason == "timeout"


@pytest.mark.parametrize(
    ("signal", "price"),
    [
        (long_signal(price_open=99.0, tp=105.0, sl=97.0), 97.0),  # at SL
        (long_signal(price_open=99.0, tp=105.0, sl=97.0), 95.0),  # past open and SL
        (short_signal(price_open=101.0, tp=95.0, sl=103.0), 103.0),
        (short_signal(price_open=101.0, tp=95.0, sl=103.0), 110.0),
    ],
)
def test_price_crossing_stop_loss_rejects_the_scheduled_signal(
    signal: dict[str, Any], price: float
) -> None:
    key = Key(once(signal))
    key.tick(0, 100.0)
    outcome = key.tick(1, price)
    assert_common(outcome.result, "cancelled", 1, price)
    assert outcome.result.reason == "price_reject"
    assert outcome.slot == "release"
    assert key.tick(2, 99.0).result.action == "idle"  # nothing live any more


# --- user commands --------------------------------------------------------------------------
def test_close_position_closes_at_the_current_price_with_reason_closed() -> None:
    key = opened_key(long_signal(tp=52_000.0, sl=46_000.0), price=50_000.0)
    key.command("close_position")
    outcome = key.tick(1, 50_000.0)
    assert_common(outcome.result, "closed", 1, 50_000.0)
    assert outcome.result.close_reason == "closed"
    assert outcome.result.pnl is not None
    assert outcome.result.pnl.pnl_percentage == pytest.approx(-0.399600400, abs=1e-9)
    assert outcome.clear_command and key.state.command is None
    assert outcome.slot == "release"


def test_close_position_comes_before_take_profit() -> None:
    key = opened_key()
    key.command("close_position")
    outcome = key.tick(1, 120.0)  # beyond TP 110
    assert (outcome.result.close_reason, outcome.result.current_price) == ("closed", 120.0)


def test_cancel_scheduled_cancels_with_user_before_activation() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
    key.tick(0, 100.0)
    key.command("cancel_scheduled")
    outcome = key.tick(1, 98.0)  # would activate
    assert_common(outcome.result, "cancelled", 1, 98.0)
    assert outcome.result.reason == "user"
    assert outcome.clear_command and outcome.slot == "release"


def test_close_position_on_a_scheduled_signal_cancels_it() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
    key.tick(0, 100.0)
    key.command("close_position")
    outcome = key.tick(1, 100.0)
    assert (outcome.result.action, outcome.result.reason) == ("cancelled", "user")


def test_cancel_scheduled_on_an_open_position_is_dropped() -> None:
    key = opened_key()
    key.command("cancel_scheduled")
    outcome = key.tick(1, 104.0)
    assert outcome.result.action == "active"
    assert outcome.clear_command and key.state.command is None


def test_command_with_nothing_live_is_dropped_and_no_signal_is_asked() -> None:
    key = Key(lambda when, price: long_signal())
    key.command("close_position")
    outcome = key.tick(0, 100.0)
    assert outcome.result.action == "idle"
    assert outcome.clear_command
    assert key.asked == []
    assert key.tick(1, 100.0).result.action == "opened"


# --- stop (draining) and pause --------------------------------------------------------------
def test_stop_cancels_a_scheduled_signal_with_user_and_finishes() -> None:
    key = Key(once(long_signal(price_open=99.0, tp=105.0, sl=97.0)))
    key.tick(0, 100.0)
    key.set_status("draining")
    outcome = key.tick(1, 100.0)
    assert (outcome.result.action, outcome.result.reason) == ("cancelled", "user")
    assert outcome.finished and outcome.slot == "release"


def test_stop_keeps_monitoring_an_open_position_until_it_closes() -> None:
    key = opened_key(long_signal(minute_estimated_time=600))
    key.set_status("draining")
    for minute in range(1, 30):
        outcome = key.tick(minute, 101.0)
        assert outcome.result.action == "active"  # never abandoned, never closed on stop
        assert not outcome.finished
    assert key.asked == [at(0)]
    outcome = key.tick(30, 111.0)
    assert (outcome.result.action, outcome.result.close_reason) == ("closed", "take_profit")
    assert outcome.finished


@pytest.mark.parametrize(
    ("price", "minute", "reason"), [(90.0, 5, "stop_loss"), (101.0, 600, "time_expired")]
)
def test_draining_finishes_on_any_close(price: float, minute: int, reason: str) -> None:
    key = opened_key(long_signal(minute_estimated_time=600))
    key.set_status("draining")
    outcome = key.tick(minute, price)
    assert (outcome.result.close_reason, outcome.finished) == (reason, True)


def test_draining_with_nothing_live_finishes_without_asking() -> None:
    key = Key(lambda when, price: long_signal(), status="draining")
    outcome = key.tick(0, 100.0)
    assert outcome.result.action == "idle" and outcome.finished
    assert key.asked == []


def test_paused_asks_for_no_signal_but_manages_the_open_position() -> None:
    key = opened_key()
    key.set_status("paused")
    assert key.tick(1, 104.0).result.action == "active"
    outcome = key.tick(2, 111.0)
    assert (outcome.result.close_reason, outcome.finished) == ("take_profit", False)
    key.strategy = lambda when, price: long_signal()
    for minute in range(3, 8):
        assert key.tick(minute, 100.0).result.action == "idle"
    assert key.asked == [at(0)]
    assert not wants_signal(key.state, at(10), "1m")


def test_paused_ignores_an_answer_given_anyway() -> None:
    outcome = advance(
        CTX,
        KeyState(status="paused"),
        at(0),
        100.0,
        CONFIG,
        answer=StrategyAnswer(raw=long_signal()),
    )
    assert outcome.result.action == "idle" and outcome.signal is None and outcome.slot is None


def test_a_live_signal_ignores_a_new_answer() -> None:
    key = opened_key()
    assert key.row is not None
    live_id = key.row.id
    outcome = advance(
        CTX, key.state, at(1), 101.0, CONFIG, answer=StrategyAnswer(raw=short_signal())
    )
    assert outcome.result.action == "active"
    assert outcome.result.signal is not None and outcome.result.signal.id == live_id


# --- throttle by interval -------------------------------------------------------------------
def test_interval_asks_once_per_aligned_window() -> None:
    key = Key(ctx=replace(CTX, interval="5m"))
    for minute in range(3, 17):
        key.tick(minute, 100.0)
    assert key.asked == [at(3), at(5), at(10), at(15)]


@pytest.mark.parametrize(
    ("interval", "minutes", "asked"),
    [
        ("1m", range(4), [0, 1, 2, 3]),
        ("3m", range(7), [0, 3, 6]),
        ("15m", range(0, 46, 5), [0, 15, 30, 45]),
        ("1h", range(0, 121, 10), [0, 60, 120]),
    ],
)
def test_wants_signal_per_interval(interval: str, minutes: range, asked: list[int]) -> None:
    key = Key(ctx=replace(CTX, interval=interval))
    for minute in minutes:
        key.tick(minute, 100.0)
    assert key.asked == [at(m) for m in asked]


def test_validation_failure_consumes_the_window() -> None:
    key = Key(lambda when, price: long_signal(tp=100.1), ctx=replace(CTX, interval="5m"))
    outcome = key.tick(0, 100.0)
    assert outcome.result.action == "idle" and outcome.signal is None and outcome.slot is None
    [notice] = outcome.notices
    assert notice.kind == "error"
    assert "take-profit distance" in notice.message
    assert notice.data["stage"] == "validation"
    assert notice.data["reasons"] == ["take-profit distance 0.1000% < minimum 0.5%"]
    for minute in range(1, 6):
        key.tick(minute, 100.0)
    assert key.asked == [at(0), at(5)]


def test_get_signal_error_is_an_error_notice() -> None:
    def broken(when: datetime, price: float) -> Any:
        raise RuntimeError("feed down")

    key = Key(broken, ctx=replace(CTX, interval="5m"))
    outcome = key.tick(0, 100.0)
    assert outcome.result.action == "idle" and outcome.signal is None
    [notice] = outcome.notices
    assert notice.kind == "error" and "feed down" in notice.message
    assert notice.data == {"stage": "get_signal"}
    key.tick(1, 100.0)
    assert key.asked == [at(0)]


# --- risk -----------------------------------------------------------------------------------
@pytest.mark.parametrize("verdict", ["max 3 positions", RuntimeError("max 3 positions")])
def test_risk_rejection_is_a_risk_notice_and_retried_next_tick(verdict: Any) -> None:
    calls: list[Any] = []

    def risk(valid: Any, public: Any) -> str | None:
        calls.append((valid, public))
        if len(calls) == 1:
            if isinstance(verdict, Exception):
                raise verdict
            return verdict
        return None

    key = Key(lambda when, price: long_signal(), ctx=replace(CTX, interval="5m"), risk=risk)
    outcome = key.tick(0, 100.0)
    assert_common(outcome.result, "idle", 0, 100.0)
    assert outcome.signal is None and outcome.slot is None and outcome.order is None
    assert outcome.signal_window is None  # the window is not consumed
    [notice] = outcome.notices
    assert (notice.kind, notice.message) == ("risk", "max 3 positions")
    assert notice.data["signal"].price_take_profit == 110.0
    valid, public = calls[0]
    assert (valid.position, public.symbol, public.price_open) == ("long", "BTC/USDT", 100.0)
    outcome = key.tick(1, 100.0)  # asked again on the next tick, inside the same 5m window
    assert outcome.result.action == "opened"
    assert key.asked == [at(0), at(1)]


def test_risk_allowing_with_empty_string_or_none_opens() -> None:
    for verdict in ("", None):
        key = Key(once(long_signal()), risk=lambda valid, public, v=verdict: v)
        assert key.tick(0, 100.0).result.action == "opened"


def test_risk_exception_without_message_names_its_type() -> None:
    def risk(valid: Any, public: Any) -> None:
        raise PermissionError

    key = Key(once(long_signal()), risk=risk)
    [notice] = key.tick(0, 100.0).notices
    assert (notice.kind, notice.message) == ("risk", "PermissionError")


def test_risk_is_not_asked_for_an_invalid_signal() -> None:
    calls: list[Any] = []
    key = Key(once(long_signal(tp=90.0)), risk=lambda v, p: calls.append(v))
    assert key.tick(0, 100.0).notices[0].kind == "error"
    assert calls == []


# --- slots ----------------------------------------------------------------------------------
def test_slot_acquired_on_open_and_schedule_released_on_close_and_cancel() -> None:
    signals = [long_signal(), long_signal(price_open=99.0, tp=105.0, sl=97.0)]
    key = Key(lambda when, price: signals.pop(0) if signals else None)
    slots = [
        key.tick(0, 100.0).slot,
        key.tick(1, 111.0).slot,  # open, TP close
        key.tick(2, 100.0).slot,
        key.tick(3, 96.0).slot,  # schedule, price_reject
        key.tick(4, 100.0).slot,
    ]  # nothing
    assert slots == ["acquire", "release", "acquire", "release", None]


# --- milestones -----------------------------------------------------------------------------
def levels(outcome: TickOutcome, kind: str) -> list[int]:
    return [n.data["level"] for n in outcome.notices if n.kind == kind]


@pytest.mark.parametrize(
    ("signal", "profit_prices", "loss_prices"),
    [
        # long 100 → TP 110 (10 per 1 %), SL 95 (20 per 1 point)
        (
            long_signal(tp=110.0, sl=95.0),
            [101.5, 103.5, 102.0, 103.6, 106.5, 109.95],
            [98.5, 99.0, 96.2],
        ),
        (
            short_signal(tp=90.0, sl=105.0),
            [98.5, 96.5, 98.0, 96.4, 93.5, 90.05],
            [101.5, 101.0, 103.8],
        ),
    ],
)
def test_partial_milestones_fire_once_per_level(
    signal: dict[str, Any], profit_prices: list[float], loss_prices: list[float]
) -> None:
    key = opened_key(signal)
    profit = [levels(key.tick(i + 1, p), "partial_profit") for i, p in enumerate(profit_prices)]
    # 15 % → 10; 35 % → 20, 30; back to 20 % → none; 36 % → none; 65 % → 40..60; 99.5 % → 70..90
    assert profit == [[10], [20, 30], [], [], [40, 50, 60], [70, 80, 90]]
    loss = [levels(key.tick(10 + i, p), "partial_loss") for i, p in enumerate(loss_prices)]
    # 30 % → 10..30; 20 % → none; 76 % → 40..70
    assert loss == [[10, 20, 30], [], [40, 50, 60, 70]]
    assert key.row is not None
    assert (key.row.partial_profit_level, key.row.partial_loss_level) == (90, 70)
    # back and forth again: nothing fires twice
    for minute, price in enumerate(profit_prices + loss_prices, start=20):
        outcome = key.tick(minute, price)
        assert outcome.result.action == "active"
        assert outcome.notices == []


def test_partial_milestone_callbacks_carry_the_level() -> None:
    key = opened_key()
    outcome = key.tick(1, 102.5)  # 25 %
    partial = [c for c in outcome.callbacks if c.name == "on_partial_profit"]
    assert [(c.args[2], c.args[3], c.args[4]) for c in partial] == [
        (10, 102.5, at(1)),
        (20, 102.5, at(1)),
    ]
    assert outcome.signal is not None and outcome.signal.partial_profit_level == 20


def test_active_without_new_milestone_writes_nothing() -> None:
    key = opened_key()
    key.tick(1, 100.5)  # 5 %: below the first level
    outcome = key.tick(2, 100.5)
    assert outcome.signal is None and outcome.notices == [] and outcome.callbacks == []


@pytest.mark.parametrize(
    ("signal", "before", "at_threshold", "beyond"),
    [
        (long_signal(), 100.59, 100.6, 101.5),
        (short_signal(), 99.41, 99.4, 98.5),
    ],
)
def test_breakeven_fires_once_at_a_0_6_percent_favourable_move(
    signal: dict[str, Any], before: float, at_threshold: float, beyond: float
) -> None:
    key = opened_key(signal)
    assert "breakeven" not in [n.kind for n in key.tick(1, before).notices]
    outcome = key.tick(2, at_threshold)
    assert [n.kind for n in outcome.notices if n.kind == "breakeven"] == ["breakeven"]
    assert "on_breakeven" in [c.name for c in outcome.callbacks]
    assert key.row is not None and key.row.breakeven_fired
    for minute, price in enumerate([beyond, 100.0, at_threshold, beyond], start=3):
        assert "breakeven" not in [n.kind for n in key.tick(minute, price).notices]


def test_breakeven_threshold_follows_config() -> None:
    config = apply_config_changes(CONFIG, {"CC_BREAKEVEN_THRESHOLD": 0.6})  # 0.4 + 0.6 = 1 %
    key = Key(once(long_signal()), config=config)
    key.tick(0, 100.0)
    assert "breakeven" not in [n.kind for n in key.tick(1, 100.9).notices]
    assert "breakeven" in [n.kind for n in key.tick(2, 101.0).notices]


def test_no_breakeven_on_an_adverse_move() -> None:
    key = opened_key()
    outcome = key.tick(1, 99.0)  # 20 % toward SL
    assert [(n.kind, n.data["level"]) for n in outcome.notices] == [
        ("partial_loss", 10),
        ("partial_loss", 20),
    ]
    assert key.row is not None and not key.row.breakeven_fired


# --- results serialise ----------------------------------------------------------------------
def test_results_round_trip_through_json_form() -> None:
    key = opened_key()
    for outcome in (key.tick(1, 104.0), key.tick(2, 111.0)):
        data = outcome.result.to_dict()
        assert isinstance(data["created_at"], str)
        assert TickResult.from_dict(data) == outcome.result
        # The one-pass form equals the plain dataclasses.asdict one, nested parts included.
        assert data == jsonable(dataclasses.asdict(outcome.result))
        assert data["signal"]["id"] == outcome.result.signal.id  # type: ignore[union-attr]

"""Validation of a new signal (SPEC §3): every rule on its own, and all failures in one error."""

from __future__ import annotations

from typing import Any

import pytest

from bkit.core.config import Config, apply_config_changes
from bkit.core.errors import SignalValidationError
from bkit.core.signals import Signal, ValidSignal, validate_signal

SYMBOL = "BTC/USDT"
PRICE = 100.0
CONFIG = Config()


def check(raw: Any, *, price: float = PRICE, config: Config = CONFIG) -> ValidSignal:
    return validate_signal(raw, symbol=SYMBOL, current_price=price, config=config)


def reasons_of(raw: Any, *, price: float = PRICE, config: Config = CONFIG) -> list[str]:
    with pytest.raises(SignalValidationError) as info:
        check(raw, price=price, config=config)
    assert info.value.reasons, "a rejection must say why"
    assert str(info.value) == "invalid signal: " + "; ".join(info.value.reasons)
    return info.value.reasons


def only_reason(raw: Any, **kw: Any) -> str:
    reasons = reasons_of(raw, **kw)
    assert len(reasons) == 1, reasons
    return reasons[0]


def long(**changes: Any) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": 102.0, "price_stop_loss": 98.0, **changes}


def short(**changes: Any) -> dict[str, Any]:
    return {"position": "short", "price_take_profit": 98.0, "price_stop_loss": 102.0, **changes}


# --- valid signals and defaults -------------------------------------------------------------
def test_valid_immediate_long_gets_defaults() -> None:
    valid = check(long())
    assert valid.position == "long"
    assert valid.price_open == 100.0  # the current price
    assert valid.price_take_profit == 102.0
    assert valid.price_stop_loss == 98.0
    assert valid.minute_estimated_time == 1440  # CC_MAX_SIGNAL_LIFETIME_MINUTES
    assert valid.cost == 100.0  # CC_POSITION_ENTRY_COST
    assert valid.note == ""
    assert valid.immediate is True
    assert len(valid.id) == 32 and int(valid.id, 16) >= 0


def test_valid_immediate_short() -> None:
    valid = check(short(minute_estimated_time=60, note="fade", cost=250, id="my-id_1"))
    assert (valid.position, valid.price_open, valid.minute_estimated_time) == ("short", 100.0, 60)
    assert (valid.note, valid.cost, valid.id, valid.immediate) == ("fade", 250.0, "my-id_1", True)


def test_signal_dataclass_is_accepted() -> None:
    valid = check(
        Signal(
            position="long",
            price_take_profit=102,
            price_stop_loss=98,
            minute_estimated_time=30,
            symbol=SYMBOL,
        )
    )
    assert (valid.position, valid.minute_estimated_time) == ("long", 30)


def test_fresh_ids_differ_and_a_given_signal_id_is_used() -> None:
    assert check(long()).id != check(long()).id
    valid = validate_signal(
        long(), symbol=SYMBOL, current_price=PRICE, config=CONFIG, signal_id="abc"
    )
    assert valid.id == "abc"


def test_scheduled_long_waits_until_price_falls_to_open() -> None:
    valid = check(long(price_open=99.0, price_take_profit=101.0, price_stop_loss=97.0))
    assert (valid.price_open, valid.immediate) == (99.0, False)


def test_scheduled_short_waits_until_price_rises_to_open() -> None:
    valid = check(short(price_open=101.0, price_take_profit=99.0, price_stop_loss=103.0))
    assert (valid.price_open, valid.immediate) == (101.0, False)


def test_price_open_already_crossed_is_an_immediate_entry_at_price_open() -> None:
    valid = check(long(price_open=101.0, price_take_profit=103.0, price_stop_loss=99.0))
    assert (valid.price_open, valid.immediate) == (101.0, True)
    valid = check(short(price_open=99.0, price_take_profit=97.0, price_stop_loss=101.0))
    assert (valid.price_open, valid.immediate) == (99.0, True)
    valid = check(long(price_open=100.0, price_take_profit=103.0, price_stop_loss=99.0))
    assert valid.immediate is True  # touching is crossing


# --- rule 1: position and prices ------------------------------------------------------------
@pytest.mark.parametrize("position", ["buy", "LONG", "", None, 1, True])
def test_position_must_be_long_or_short(position: object) -> None:
    assert "position must be 'long' or 'short'" in only_reason(long(position=position))


def test_position_is_required() -> None:
    raw = long()
    del raw["position"]
    assert "position" in only_reason(raw)


@pytest.mark.parametrize("field", ["price_take_profit", "price_stop_loss", "price_open"])
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("nan"), "finite number > 0"),
        (float("inf"), "finite number > 0"),
        (float("-inf"), "finite number > 0"),
        (0, "finite number > 0"),
        (0.0, "finite number > 0"),
        (-101.0, "finite number > 0"),
        ("102", "must be a number"),
        ([102], "must be a number"),
        (True, "must be a number"),
        (10**400, "too large"),
    ],
)
def test_prices_must_be_finite_numbers_above_zero(field: str, value: object, words: str) -> None:
    reasons = reasons_of(long(**{field: value}))
    assert any(field in r and words in r for r in reasons), reasons
    assert len(reasons) == 1, reasons


@pytest.mark.parametrize("field", ["price_take_profit", "price_stop_loss"])
def test_missing_price_is_rejected(field: str) -> None:
    raw = long()
    del raw[field]
    assert f"{field} must be a number, got None" in only_reason(raw)


# --- rule 2: ordering (strict) --------------------------------------------------------------
# Scheduled at 95 while the price is 100, so rule 6 stays out of the way.
@pytest.mark.parametrize(
    ("tp", "sl"), [(95.0, 90.0), (94.0, 90.0), (97.0, 95.0), (97.0, 96.0), (90.0, 97.0)]
)
def test_long_needs_tp_above_open_above_sl(tp: float, sl: float) -> None:
    reason = only_reason(long(price_open=95.0, price_take_profit=tp, price_stop_loss=sl))
    assert "long needs take_profit > open > stop_loss" in reason


@pytest.mark.parametrize(
    ("tp", "sl"), [(105.0, 110.0), (106.0, 110.0), (103.0, 105.0), (103.0, 104.0), (110.0, 103.0)]
)
def test_short_needs_tp_below_open_below_sl(tp: float, sl: float) -> None:
    reason = only_reason(short(price_open=105.0, price_take_profit=tp, price_stop_loss=sl))
    assert "short needs take_profit < open < stop_loss" in reason


def test_immediate_long_with_tp_at_the_price_fails_ordering_and_rule_6() -> None:
    reasons = reasons_of(long(price_take_profit=100.0))
    assert any("take_profit > open > stop_loss" in r for r in reasons)
    assert any("already past take-profit" in r for r in reasons)


def test_short_with_long_prices_is_rejected() -> None:
    reasons = reasons_of(short(price_take_profit=102.0, price_stop_loss=98.0))
    assert any("take_profit < open < stop_loss" in r for r in reasons)


# --- rule 3: TP distance --------------------------------------------------------------------
def test_take_profit_too_close_is_rejected() -> None:
    reason = only_reason(long(price_take_profit=100.4))  # 0.4 % < 0.5 %
    assert "take-profit distance 0.4000% < minimum 0.5%" in reason
    reason = only_reason(short(price_take_profit=99.6))
    assert "take-profit distance 0.4000% < minimum 0.5%" in reason


def test_take_profit_at_exactly_the_minimum_is_accepted() -> None:
    assert check(long(price_take_profit=100.5)).price_take_profit == 100.5
    assert check(short(price_take_profit=99.5)).price_take_profit == 99.5


@pytest.mark.parametrize("price", [100.0, 50_000.0, 0.0016, 1234.5, 3.0])
def test_minimum_distances_computed_with_floats_are_accepted(price: float) -> None:
    # price × 1.005 is a hair under 0.5 % away in binary floats; it is still 0.5 %.
    valid = check(long(price_take_profit=price * 1.005, price_stop_loss=price * 0.995), price=price)
    assert valid.price_open == price
    check(short(price_take_profit=price * 0.995, price_stop_loss=price * 1.2), price=price)


def test_tp_distance_rule_is_skipped_when_zero_with_unsafe_config() -> None:
    unsafe = apply_config_changes(CONFIG, {"CC_MIN_TAKEPROFIT_DISTANCE_PERCENT": 0}, unsafe=True)
    assert check(long(price_take_profit=100.01), config=unsafe).price_take_profit == 100.01
    assert check(short(price_take_profit=99.99), config=unsafe).price_take_profit == 99.99
    # ordering still applies
    reasons = reasons_of(long(price_take_profit=100.0), config=unsafe)
    assert any("take_profit > open > stop_loss" in r for r in reasons)


def test_tp_distance_follows_config() -> None:
    config = apply_config_changes(CONFIG, {"CC_MIN_TAKEPROFIT_DISTANCE_PERCENT": 3})
    assert "minimum 3.0%" in only_reason(long(price_take_profit=102.9), config=config)
    assert check(long(price_take_profit=103.0), config=config).price_take_profit == 103.0


# --- rule 4: SL distance --------------------------------------------------------------------
def test_stop_loss_too_close_is_rejected() -> None:
    assert "stop-loss distance 0.4000% < minimum 0.5%" in only_reason(long(price_stop_loss=99.6))
    assert "stop-loss distance 0.4000% < minimum 0.5%" in only_reason(short(price_stop_loss=100.4))


def test_stop_loss_at_exactly_the_minimum_is_accepted() -> None:
    assert check(long(price_stop_loss=99.5)).price_stop_loss == 99.5
    assert check(short(price_stop_loss=100.5)).price_stop_loss == 100.5


def test_stop_loss_too_far_is_rejected() -> None:
    assert "stop-loss distance 21.0000% > maximum 20.0%" in only_reason(long(price_stop_loss=79.0))
    assert "stop-loss distance 21.0000% > maximum 20.0%" in only_reason(
        short(price_stop_loss=121.0)
    )


def test_stop_loss_at_exactly_the_maximum_is_accepted() -> None:
    assert check(long(price_stop_loss=80.0)).price_stop_loss == 80.0
    assert check(short(price_stop_loss=120.0)).price_stop_loss == 120.0


def test_sl_distance_is_measured_from_price_open_of_a_scheduled_signal() -> None:
    # open 90, SL 89.6 → 0.444 % from the open (it would be 10.4 % from the current 100).
    reason = only_reason(long(price_open=90.0, price_take_profit=95.0, price_stop_loss=89.6))
    assert "stop-loss distance 0.4444% < minimum" in reason


# --- rule 5: minute_estimated_time ----------------------------------------------------------
@pytest.mark.parametrize("minutes", [1.5, "60", True, float("nan"), float("inf"), [60]])
def test_minutes_must_be_a_whole_number(minutes: object) -> None:
    assert "minute_estimated_time must be a whole number" in only_reason(
        long(minute_estimated_time=minutes)
    )


@pytest.mark.parametrize("minutes", [0, -1, -60, 1441, 10**400])
def test_minutes_must_be_within_lifetime(minutes: int) -> None:
    assert "minute_estimated_time must be > 0 and <= 1440" in only_reason(
        long(minute_estimated_time=minutes)
    )


@pytest.mark.parametrize(("minutes", "expected"), [(1, 1), (1440, 1440), (60.0, 60), (None, 1440)])
def test_minutes_accepted(minutes: object, expected: int) -> None:
    valid = check(long(minute_estimated_time=minutes))
    assert valid.minute_estimated_time == expected
    assert isinstance(valid.minute_estimated_time, int)


def test_minutes_default_and_maximum_follow_config() -> None:
    config = apply_config_changes(CONFIG, {"CC_MAX_SIGNAL_LIFETIME_MINUTES": 60})
    assert check(long(), config=config).minute_estimated_time == 60
    assert "<= 60" in only_reason(long(minute_estimated_time=61), config=config)


# --- rule 6: an immediate entry not already past TP or SL ----------------------------------
def test_crossed_long_entry_already_past_stop_loss_is_rejected() -> None:
    # open 102 already crossed at 100, but 100 is at/below the SL 100.5
    raw = long(price_open=102.0, price_take_profit=105.0, price_stop_loss=100.5)
    assert "current price 100.0 is already past stop-loss 100.5" in only_reason(raw)
    raw = long(price_open=102.0, price_take_profit=105.0, price_stop_loss=100.0)
    assert "already past stop-loss 100.0" in only_reason(raw)


def test_crossed_short_entry_already_past_stop_loss_is_rejected() -> None:
    raw = short(price_open=99.0, price_take_profit=97.0, price_stop_loss=99.5)
    assert "current price 100.0 is already past stop-loss 99.5" in only_reason(raw)


def test_scheduled_entry_not_crossed_is_not_checked_against_current_price() -> None:
    # price 100 is above the TP 99.9 of a long waiting at 99: fine, it has not entered yet.
    valid = check(long(price_open=99.0, price_take_profit=99.9, price_stop_loss=98.0))
    assert valid.immediate is False


# --- symbol, cost, note, id, unknown fields -------------------------------------------------
def test_symbol_must_match_the_running_symbol() -> None:
    assert "signal symbol 'ETH/USDT' differs from running 'BTC/USDT'" in only_reason(
        long(symbol="ETH/USDT")
    )
    assert check(long(symbol=SYMBOL)).position == "long"
    assert check(long(symbol=None)).position == "long"


def test_cost_defaults_from_config_and_can_be_given() -> None:
    assert check(long()).cost == 100.0
    assert check(long(cost=None)).cost == 100.0
    assert check(long(cost=25)).cost == 25.0
    config = apply_config_changes(CONFIG, {"CC_POSITION_ENTRY_COST": 250})
    assert check(long(), config=config).cost == 250.0


@pytest.mark.parametrize("cost", [0, -10, float("nan"), "100", True])
def test_bad_cost_is_rejected(cost: object) -> None:
    assert "cost must be" in only_reason(long(cost=cost))


def test_note_must_be_a_string() -> None:
    assert "note must be a string" in only_reason(long(note=5))
    assert check(long(note=None)).note == ""


@pytest.mark.parametrize("signal_id", ["", "has space", "a" * 65, 7, "é"])
def test_bad_id_is_rejected(signal_id: object) -> None:
    assert "id must be 1-64 characters" in only_reason(long(id=signal_id))


def test_unknown_fields_are_rejected_by_name() -> None:
    reason = only_reason(long(leverage=3, price_take_profit_2=105))
    assert "unknown signal fields" in reason
    assert "leverage" in reason and "price_take_profit_2" in reason


def test_unknown_fields_of_mixed_key_types_do_not_crash() -> None:
    reason = only_reason({**long(), 1: "x", "extra": 2, None: 3})
    assert "unknown signal fields" in reason and "extra" in reason


@pytest.mark.parametrize("raw", [[("position", "long")], "long", 5, ("long", 102, 98)])
def test_something_that_is_not_a_signal_is_rejected(raw: object) -> None:
    assert "get_signal must return None, a dict or a Signal" in only_reason(raw)


@pytest.mark.parametrize("price", [float("nan"), 0.0, -1.0, float("inf")])
def test_bad_current_price_is_rejected(price: float) -> None:
    reasons = reasons_of(long(price_open=100.0), price=price)
    assert any("current price must be a finite number > 0" in r for r in reasons)


# --- all failures in one error --------------------------------------------------------------
def test_every_failure_is_collected_into_one_error() -> None:
    raw = {
        "position": "sideways",
        "price_take_profit": float("nan"),
        "price_stop_loss": -1,
        "price_open": "cheap",
        "minute_estimated_time": 0,
        "symbol": "ETH/USDT",
        "cost": 0,
        "note": 3,
        "id": "bad id",
        "leverage": 10,
    }
    reasons = reasons_of(raw)
    expected = [
        "unknown signal fields ['leverage']",
        "position must be 'long' or 'short'",
        "signal symbol 'ETH/USDT' differs",
        "price_take_profit must be a finite number > 0",
        "price_stop_loss must be a finite number > 0",
        "price_open must be a number",
        "minute_estimated_time must be > 0",
        "cost must be a finite number > 0",
        "note must be a string",
        "id must be 1-64 characters",
    ]
    assert len(reasons) == len(expected)
    for words in expected:
        assert any(words in r for r in reasons), (words, reasons)


def test_distance_failures_are_collected_together() -> None:
    reasons = reasons_of(
        long(price_take_profit=100.1, price_stop_loss=99.9, minute_estimated_time=2000)
    )
    assert len(reasons) == 3
    assert any("take-profit distance" in r for r in reasons)
    assert any("stop-loss distance" in r for r in reasons)
    assert any("minute_estimated_time" in r for r in reasons)


@pytest.mark.parametrize("note", [0, [], False, 1.5])
def test_a_note_that_is_not_a_string_is_rejected_even_when_falsy(note: object) -> None:
    from bkit.core.config import Config
    from bkit.core.errors import SignalValidationError
    from bkit.core.signals import validate_signal

    raw = {"position": "long", "price_take_profit": 110.0, "price_stop_loss": 95.0,
           "note": note}
    with pytest.raises(SignalValidationError, match="note must be a string"):
        validate_signal(raw, symbol="BTCUSDT", current_price=100.0, config=Config())

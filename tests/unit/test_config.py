"""The CC_* config (SPEC §1): defaults, rejected values, and a rejected change keeps the old."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bkit.core.config import CONFIG_KEYS, Config, apply_config_changes
from bkit.core.errors import ConfigError
from bkit.core.registry import get_config, reset_config, set_config


@pytest.fixture(autouse=True)
def default_config() -> Iterator[None]:
    reset_config()
    yield
    reset_config()


DEFAULTS = {
    "CC_PERCENT_SLIPPAGE": 0.1,
    "CC_PERCENT_FEE": 0.1,
    "CC_MIN_TAKEPROFIT_DISTANCE_PERCENT": 0.5,
    "CC_MIN_STOPLOSS_DISTANCE_PERCENT": 0.5,
    "CC_MAX_STOPLOSS_DISTANCE_PERCENT": 20,
    "CC_MAX_SIGNAL_LIFETIME_MINUTES": 1440,
    "CC_SCHEDULE_AWAIT_MINUTES": 120,
    "CC_AVG_PRICE_CANDLES_COUNT": 5,
    "CC_POSITION_ENTRY_COST": 100,
    "CC_BREAKEVEN_THRESHOLD": 0.2,
    "CC_MAX_LIVE_MARKDOWN_ROWS": 250,
    "CC_ORDER_OPEN_RETRY_ATTEMPTS": 5,
    "CC_ORDER_CLOSE_RETRY_ATTEMPTS": 5,
    "CC_ORDER_SETTLE_SECONDS": 120.0,
    "CC_EXCHANGE_STOP": True,
    "CC_EXCHANGE_STOP_LIMIT_OFFSET_PERCENT": 0.5,
    "CC_LEVERAGE": 1,
    "CC_MARGIN_MODE": "isolated",
    "CC_POSITION_MODE": "one_way",
    "CC_STOP_LOSS_TRIGGER": "vwap",
    "CC_SIZING_BALANCE": 0.0,
}


def test_defaults_are_the_spec_numbers() -> None:
    assert Config().as_dict() == DEFAULTS
    assert get_config() == Config()
    assert set(CONFIG_KEYS) == set(DEFAULTS)


def test_derived_percentages() -> None:
    config = Config()
    assert config.round_trip_cost_percent == pytest.approx(0.4, abs=1e-12)  # 2 × (0.1 + 0.1)
    assert config.breakeven_move_percent == pytest.approx(0.6, abs=1e-12)  # 0.4 + 0.2
    custom = Config(CC_PERCENT_SLIPPAGE=0.05, CC_PERCENT_FEE=0.075, CC_BREAKEVEN_THRESHOLD=0.1)
    assert custom.round_trip_cost_percent == pytest.approx(0.25, abs=1e-12)
    assert custom.breakeven_move_percent == pytest.approx(0.35, abs=1e-12)


def test_set_config_changes_values_and_keeps_the_rest() -> None:
    new = set_config(CC_SCHEDULE_AWAIT_MINUTES=60, CC_POSITION_ENTRY_COST=250)
    assert new is get_config()
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 60
    assert get_config().CC_POSITION_ENTRY_COST == 250
    assert get_config().CC_PERCENT_FEE == 0.1
    set_config(CC_PERCENT_FEE=0.05)
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 60  # earlier changes stay


def test_whole_float_is_accepted_for_a_minutes_key_and_stored_as_int() -> None:
    set_config(CC_SCHEDULE_AWAIT_MINUTES=90.0)
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 90
    assert isinstance(get_config().CC_SCHEDULE_AWAIT_MINUTES, int)


def test_integer_is_accepted_for_a_percent_key_and_stored_as_float() -> None:
    set_config(CC_MAX_STOPLOSS_DISTANCE_PERCENT=10)
    assert get_config().CC_MAX_STOPLOSS_DISTANCE_PERCENT == 10.0
    assert isinstance(get_config().CC_MAX_STOPLOSS_DISTANCE_PERCENT, float)


def test_reset_config_goes_back_to_defaults() -> None:
    set_config(CC_SCHEDULE_AWAIT_MINUTES=60)
    reset_config()
    assert get_config() == Config()


@pytest.mark.parametrize("value", ["0.2", None, True, False, [0.2], {"v": 1}, b"1"])
def test_non_numbers_are_rejected(value: object) -> None:
    with pytest.raises(ConfigError, match="CC_PERCENT_FEE must be a number"):
        set_config(CC_PERCENT_FEE=value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(value: float) -> None:
    with pytest.raises(ConfigError, match="CC_PERCENT_SLIPPAGE must be finite"):
        set_config(CC_PERCENT_SLIPPAGE=value)


@pytest.mark.parametrize("key", sorted(k for k, v in DEFAULTS.items()
                                        if not isinstance(v, bool | str)))
def test_negatives_are_rejected_for_every_key(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must not be negative"):
        set_config(unsafe=True, **{key: -1})
    assert get_config() == Config()


def test_switches_take_only_true_or_false() -> None:
    for bad in (1, 0, "yes", None, 1.0):
        with pytest.raises(ConfigError, match="CC_EXCHANGE_STOP must be True or False"):
            set_config(CC_EXCHANGE_STOP=bad)  # refused: not a bool
    assert get_config() == Config()
    assert set_config(CC_EXCHANGE_STOP=False).CC_EXCHANGE_STOP is False
    set_config(CC_EXCHANGE_STOP=True)
    for bad in ("ISOLATED", "hedge", 1, None):
        with pytest.raises(ConfigError, match="CC_MARGIN_MODE must be one of isolated, cross"):
            set_config(CC_MARGIN_MODE=bad)
    assert set_config(CC_MARGIN_MODE="cross", CC_LEVERAGE=5).CC_LEVERAGE == 5
    with pytest.raises(ConfigError, match="CC_POSITION_MODE must be one of one_way, hedge"):
        set_config(CC_POSITION_MODE="dual")
    with pytest.raises(ConfigError, match="CC_LEVERAGE must be greater than 0"):
        set_config(CC_LEVERAGE=0)


@pytest.mark.parametrize(
    "key",
    [
        "CC_MAX_SIGNAL_LIFETIME_MINUTES",
        "CC_SCHEDULE_AWAIT_MINUTES",
        "CC_AVG_PRICE_CANDLES_COUNT",
        "CC_POSITION_ENTRY_COST",
        "CC_MAX_STOPLOSS_DISTANCE_PERCENT",
    ],
)
def test_zero_is_rejected_where_meaningless(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be greater than 0"):
        set_config(unsafe=True, **{key: 0})


def test_fraction_for_a_whole_number_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="CC_AVG_PRICE_CANDLES_COUNT must be a whole number"):
        set_config(CC_AVG_PRICE_CANDLES_COUNT=2.5)


def test_zero_is_allowed_for_fee_and_slippage_with_a_safe_tp() -> None:
    set_config(CC_PERCENT_FEE=0, CC_PERCENT_SLIPPAGE=0)
    assert get_config().round_trip_cost_percent == 0


@pytest.mark.parametrize(("min_sl", "max_sl"), [(5, 5), (6, 5), (20, 20), (25, 20)])
def test_min_stop_loss_distance_must_be_below_max(min_sl: float, max_sl: float) -> None:
    with pytest.raises(ConfigError, match="CC_MIN_STOPLOSS_DISTANCE_PERCENT"):
        set_config(CC_MIN_STOPLOSS_DISTANCE_PERCENT=min_sl, CC_MAX_STOPLOSS_DISTANCE_PERCENT=max_sl)


def test_min_stop_loss_is_checked_against_the_current_max() -> None:
    with pytest.raises(ConfigError, match=r"must be below CC_MAX_STOPLOSS_DISTANCE_PERCENT \(20"):
        set_config(CC_MIN_STOPLOSS_DISTANCE_PERCENT=21)
    set_config(CC_MIN_STOPLOSS_DISTANCE_PERCENT=19.9)
    assert get_config().CC_MIN_STOPLOSS_DISTANCE_PERCENT == 19.9


@pytest.mark.parametrize("min_tp", [0.39, 0.3, 0.1, 0.0])
def test_min_tp_below_round_trip_cost_needs_unsafe(min_tp: float) -> None:
    with pytest.raises(ConfigError, match="unsafe=True"):
        set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=min_tp)
    assert get_config().CC_MIN_TAKEPROFIT_DISTANCE_PERCENT == 0.5
    set_config(unsafe=True, CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=min_tp)
    assert get_config().CC_MIN_TAKEPROFIT_DISTANCE_PERCENT == min_tp


def test_min_tp_equal_to_round_trip_cost_is_safe() -> None:
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4)  # exactly 2 × (0.1 + 0.1)
    assert get_config().CC_MIN_TAKEPROFIT_DISTANCE_PERCENT == 0.4


def test_zero_min_tp_needs_unsafe_even_without_costs() -> None:
    # 0 disables the TP-distance rule (SPEC §1), so it is unsafe whatever the costs are.
    with pytest.raises(ConfigError, match="unsafe=True"):
        set_config(CC_PERCENT_SLIPPAGE=0, CC_PERCENT_FEE=0, CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0)
    set_config(
        unsafe=True, CC_PERCENT_SLIPPAGE=0, CC_PERCENT_FEE=0, CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0
    )
    assert get_config().CC_MIN_TAKEPROFIT_DISTANCE_PERCENT == 0


def test_raising_costs_above_the_min_tp_needs_unsafe() -> None:
    # fee 0.2 → round trip 2 × (0.1 + 0.2) = 0.6 > min TP 0.5
    with pytest.raises(ConfigError, match=r"round-trip cost 0\.6 %"):
        set_config(CC_PERCENT_FEE=0.2)
    set_config(CC_PERCENT_FEE=0.2, CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.6)
    assert get_config().CC_PERCENT_FEE == 0.2


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'CC_PERCENT_FEES'"):
        set_config(CC_PERCENT_FEES=0.1)
    with pytest.raises(ConfigError, match="unknown config key 'percent_fee'"):
        apply_config_changes(Config(), {"percent_fee": 0.1})


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        set_config(CC_PERCENT_FEE="x", CC_SCHEDULE_AWAIT_MINUTES=-5, CC_NOPE=1)
    message = str(info.value)
    assert "CC_PERCENT_FEE must be a number" in message
    assert "CC_SCHEDULE_AWAIT_MINUTES must not be negative" in message
    assert "unknown config key 'CC_NOPE'" in message


def test_rejected_set_config_keeps_the_previous_config() -> None:
    set_config(CC_SCHEDULE_AWAIT_MINUTES=60)
    before = get_config()
    # one good and one bad value: nothing of it is applied
    with pytest.raises(ConfigError):
        set_config(CC_SCHEDULE_AWAIT_MINUTES=30, CC_PERCENT_FEE=float("nan"))
    assert get_config() is before
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 60
    with pytest.raises(ConfigError):
        set_config(CC_SCHEDULE_AWAIT_MINUTES=30, CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.1)
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 60


def test_apply_config_changes_does_not_mutate_its_input() -> None:
    current = Config()
    new = apply_config_changes(current, {"CC_PERCENT_FEE": 0.05})
    assert current.CC_PERCENT_FEE == 0.1
    assert new.CC_PERCENT_FEE == 0.05


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        set_config(CC_PERCENT_FEE=-1)


def test_slippage_of_100_percent_or_more_is_rejected_and_old_config_kept() -> None:
    from bkit.core.config import Config, apply_config_changes
    from bkit.core.errors import ConfigError

    current = Config()
    with pytest.raises(ConfigError, match="CC_PERCENT_SLIPPAGE"):
        apply_config_changes(current, {"CC_PERCENT_SLIPPAGE": 100}, unsafe=True)
    assert apply_config_changes(current, {"CC_PERCENT_SLIPPAGE": 99.0}, unsafe=True
                                ).CC_PERCENT_SLIPPAGE == 99.0

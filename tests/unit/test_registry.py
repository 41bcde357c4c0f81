"""Registration of exchanges, strategies and risk profiles (SPEC §1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bkit.core.config import Config
from bkit.core.errors import ConfigError, RegistrationError, UnknownNameError
from bkit.core.registry import (
    REGISTRY,
    RiskValidation,
    add_exchange,
    add_risk,
    add_strategy,
    candle_interval_ok,
    default_format_price,
    default_format_quantity,
    get_config,
    reset_config,
    set_config,
    set_logger,
)
from bkit.core.registry import logger as default_logger


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    REGISTRY.clear()
    reset_config()
    yield
    REGISTRY.clear()
    reset_config()
    set_logger(default_logger)


def get_candles(symbol: str, interval: str, since: Any, limit: int) -> list[Any]:
    return []


def get_signal(symbol: str, when: Any, price: float) -> None:
    return None


def noop(*args: Any) -> None:
    return None


# --- exchanges ------------------------------------------------------------------------------
def test_add_exchange_registers_with_default_formatters() -> None:
    schema = add_exchange("binance", get_candles, note="spot")
    assert REGISTRY.exchange("binance") is schema
    assert schema.get_candles is get_candles
    assert schema.format_price is default_format_price
    assert default_format_price("BTC/USDT", 1.2351) == "1.24"
    assert default_format_quantity("BTC/USDT", 0.123456789) == "0.12345679"
    assert schema.format_quantity is default_format_quantity
    assert schema.note == "spot"


def test_add_exchange_keeps_custom_formatters() -> None:
    def price4(symbol: str, value: float) -> str:
        return f"{value:.4f}"

    schema = add_exchange("kraken", get_candles, format_price=price4)
    assert schema.format_price("X", 1.0) == "1.0000"


def test_duplicate_exchange_raises() -> None:
    add_exchange("binance", get_candles)
    with pytest.raises(RegistrationError, match="exchange 'binance' is already registered"):
        add_exchange("binance", get_candles)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"get_candles": None}, "get_candles must be callable"),
        ({"get_candles": get_candles, "format_price": "2"}, "format_price must be callable"),
        ({"get_candles": get_candles, "format_quantity": 8}, "format_quantity must be callable"),
    ],
)
def test_exchange_functions_must_be_callable(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(RegistrationError, match=words):
        add_exchange("binance", **kwargs)
    assert REGISTRY.exchanges == {}


# --- strategies -----------------------------------------------------------------------------
@pytest.mark.parametrize("interval", ["1m", "3m", "5m", "15m", "30m", "1h"])
def test_strategy_intervals_accepted(interval: str) -> None:
    schema = add_strategy(f"s-{interval}", get_signal, interval=interval)
    assert REGISTRY.strategy(f"s-{interval}").interval == interval
    assert schema.interval == interval


@pytest.mark.parametrize("interval", ["2m", "4h", "1d", "2h", "", "5", "5M", None, 5])
def test_bad_strategy_interval_is_rejected(interval: Any) -> None:
    with pytest.raises(RegistrationError, match="interval"):
        add_strategy("trend", get_signal, interval=interval)
    assert REGISTRY.strategies == {}


def test_strategy_defaults() -> None:
    schema = add_strategy("trend", get_signal)
    assert (schema.interval, schema.risk_name, dict(schema.callbacks), schema.note) == (
        "1m",
        None,
        {},
        "",
    )


def test_duplicate_strategy_raises() -> None:
    add_strategy("trend", get_signal)
    with pytest.raises(RegistrationError, match="strategy 'trend' is already registered"):
        add_strategy("trend", get_signal, interval="5m")
    assert REGISTRY.strategy("trend").interval == "1m"  # the first one stays


def test_get_signal_must_be_callable() -> None:
    with pytest.raises(RegistrationError, match="get_signal must be callable"):
        add_strategy("trend", "not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["", " trend", "trend now", "-trend", "a" * 65, 5, None, "trénd", "a/b"]
)
def test_bad_names_are_rejected(name: Any) -> None:
    with pytest.raises(RegistrationError, match="name must be"):
        add_strategy(name, get_signal)
    with pytest.raises(RegistrationError, match="name must be"):
        add_exchange(name, get_candles)
    with pytest.raises(RegistrationError, match="name must be"):
        add_risk(name)


def test_good_names_are_accepted() -> None:
    for name in ("a", "Trend_2.v1-beta", "9lives", "a" * 64):
        add_strategy(name, get_signal)
    assert len(REGISTRY.strategies) == 4


def test_strategy_callbacks_are_validated_by_name() -> None:
    schema = add_strategy("trend", get_signal, callbacks={"on_open": noop, "on_close": noop})
    assert set(schema.callbacks) == {"on_open", "on_close"}
    with pytest.raises(RegistrationError, match=r"unknown callbacks \['on_opne'\]"):
        add_strategy("trend2", get_signal, callbacks={"on_opne": noop})
    with pytest.raises(RegistrationError, match="callback on_close must be callable"):
        add_strategy("trend3", get_signal, callbacks={"on_close": 42})
    assert set(REGISTRY.strategies) == {"trend"}


def test_every_spec_callback_name_is_allowed() -> None:
    names = [
        "on_tick",
        "on_open",
        "on_close",
        "on_active",
        "on_schedule",
        "on_cancel",
        "on_idle",
        "on_partial_profit",
        "on_partial_loss",
        "on_breakeven",
    ]
    schema = add_strategy("trend", get_signal, callbacks=dict.fromkeys(names, noop))
    assert sorted(schema.callbacks) == sorted(names)


def test_callbacks_can_be_an_object_with_methods() -> None:
    class Callbacks:
        def on_open(self, *args: Any) -> None: ...

        def helper(self) -> None: ...  # not a callback name: ignored

    schema = add_strategy("trend", get_signal, callbacks=Callbacks())
    assert set(schema.callbacks) == {"on_open"}


def test_risk_name_of_a_strategy_is_checked() -> None:
    assert add_strategy("trend", get_signal, risk_name="shared").risk_name == "shared"
    with pytest.raises(RegistrationError, match="risk name must be"):
        add_strategy("trend2", get_signal, risk_name="bad name")


# --- risk -----------------------------------------------------------------------------------
def test_add_risk_with_validations_in_every_form() -> None:
    def too_many(payload: Any) -> str | None:
        return None

    schema = add_risk(
        "shared",
        validations=[too_many, {"validate": noop, "note": "cap"}, RiskValidation(noop, "given")],
        max_concurrent_positions=3,
    )
    assert [v.note for v in schema.validations] == ["", "cap", "given"]
    assert schema.validations[0].validate is too_many
    assert schema.max_concurrent_positions == 3
    assert REGISTRY.risk("shared") is schema


def test_single_validation_is_accepted() -> None:
    assert len(add_risk("one", validations=noop).validations) == 1
    assert len(add_risk("two", validations={"validate": noop}).validations) == 1


@pytest.mark.parametrize("validations", [[42], [{"validate": None}], [{"note": "x"}]])
def test_risk_validations_must_be_callable(validations: Any) -> None:
    with pytest.raises(RegistrationError, match="validation #0 must be callable"):
        add_risk("shared", validations=validations)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "3"])
def test_max_concurrent_positions_must_be_a_whole_number_of_at_least_one(limit: Any) -> None:
    with pytest.raises(RegistrationError, match="max_concurrent_positions"):
        add_risk("shared", max_concurrent_positions=limit)


def test_risk_callbacks_are_validated() -> None:
    assert set(add_risk("a", callbacks={"on_rejected": noop}).callbacks) == {"on_rejected"}
    with pytest.raises(RegistrationError, match=r"unknown callbacks \['on_open'\]"):
        add_risk("b", callbacks={"on_open": noop})


def test_duplicate_risk_raises() -> None:
    add_risk("shared")
    with pytest.raises(RegistrationError, match="risk 'shared' is already registered"):
        add_risk("shared", max_concurrent_positions=2)


# --- unknown names --------------------------------------------------------------------------
def test_unknown_names_raise_naming_them() -> None:
    add_exchange("binance", get_candles)
    add_strategy("trend", get_signal)
    with pytest.raises(UnknownNameError, match=r"unknown strategy 'trnd' \(known: trend\)"):
        REGISTRY.strategy("trnd")
    with pytest.raises(UnknownNameError, match=r"unknown exchange 'binanse' \(known: binance\)"):
        REGISTRY.exchange("binanse")
    with pytest.raises(UnknownNameError, match=r"unknown risk profile 'x' \(known: none"):
        REGISTRY.risk("x")


def test_unknown_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="ghost"):
        REGISTRY.strategy("ghost")


def test_clear_forgets_everything() -> None:
    add_exchange("binance", get_candles)
    add_strategy("trend", get_signal)
    add_risk("shared")
    REGISTRY.clear()
    assert (REGISTRY.exchanges, REGISTRY.strategies, REGISTRY.risks) == ({}, {}, {})
    add_strategy("trend", get_signal)  # no longer a duplicate


# --- config through the registry ------------------------------------------------------------
def test_set_config_and_get_config() -> None:
    assert get_config() == Config()
    set_config(CC_SCHEDULE_AWAIT_MINUTES=30)
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 30
    with pytest.raises(ConfigError):
        set_config(CC_SCHEDULE_AWAIT_MINUTES=45, CC_PERCENT_FEE=-0.1)
    assert get_config().CC_SCHEDULE_AWAIT_MINUTES == 30
    reset_config()
    assert get_config() == Config()


# --- logger and intervals -------------------------------------------------------------------
def test_set_logger_needs_the_logging_methods() -> None:
    set_logger(logging.getLogger("custom"))

    class Half:
        def info(self, *a: Any) -> None: ...

    with pytest.raises(RegistrationError, match=r"warning\(\)"):
        set_logger(Half())


@pytest.mark.parametrize(
    ("interval", "ok"), [("1m", True), ("8h", True), ("1d", True), ("2m", False), ("1w", False)]
)
def test_candle_intervals(interval: str, ok: bool) -> None:
    assert candle_interval_ok(interval) is ok

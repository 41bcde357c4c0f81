"""The touch stop rule of SPEC §11 in the pure state machine: the last closed candle's low
(a short's high) at or past the SL closes at exactly SL, before the take-profit, after the
time limit; the VWAP alone no longer hits the SL; "vwap" stays the default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bkit.core.config import Config, apply_config_changes
from bkit.core.machine import KeyContext, KeyState, StrategyAnswer, advance

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CTX = KeyContext("ETH/USDT", "touchy", "paper")
TOUCH = apply_config_changes(Config(), {"CC_STOP_LOSS_TRIGGER": "touch"})


def opened(position: str, config: Config) -> KeyState:
    tp, sl = (110.0, 95.0) if position == "long" else (90.0, 105.0)
    outcome = advance(CTX, KeyState(), T0, 100.0, config, answer=StrategyAnswer(raw={
        "position": position, "price_take_profit": tp, "price_stop_loss": sl,
        "minute_estimated_time": 30}))
    assert outcome.result.action == "opened"
    return KeyState(outcome.signal)


def step(state: KeyState, minute: int, price: float, config: Config,
         touch: tuple[float, float] | None) -> tuple[str, str | None, float]:
    result = advance(CTX, state, T0 + timedelta(minutes=minute), price, config,
                     touch=touch).result
    return result.action, result.close_reason, result.current_price


def test_a_long_is_stopped_by_the_candle_low_at_exactly_sl() -> None:
    state = opened("long", TOUCH)
    assert step(state, 1, 99.0, TOUCH, (95.01, 99.5))[0] == "active"
    assert step(state, 1, 99.0, TOUCH, (95.0, 99.5)) == ("closed", "stop_loss", 95.0)
    # checked before the take-profit: a candle that touched both closes on the stop
    assert step(state, 1, 111.0, TOUCH, (94.0, 112.0)) == ("closed", "stop_loss", 95.0)
    # the VWAP below the SL without a touch does not stop it under "touch"
    assert step(state, 1, 94.0, TOUCH, (95.5, 96.0))[0] == "active"
    # time expiry stays first
    assert step(state, 30, 99.0, TOUCH, (90.0, 99.0))[1] == "time_expired"


def test_a_short_is_stopped_by_the_candle_high() -> None:
    state = opened("short", TOUCH)
    assert step(state, 1, 101.0, TOUCH, (100.0, 104.99))[0] == "active"
    assert step(state, 1, 101.0, TOUCH, (100.0, 105.0)) == ("closed", "stop_loss", 105.0)


def test_vwap_is_the_default_and_ignores_the_candle() -> None:
    config = Config()
    assert config.CC_STOP_LOSS_TRIGGER == "vwap"
    state = opened("long", config)
    assert step(state, 1, 99.0, config, (90.0, 99.0))[0] == "active"
    assert step(state, 1, 95.0, config, None) == ("closed", "stop_loss", 95.0)

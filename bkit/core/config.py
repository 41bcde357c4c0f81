"""The global trading config (`CC_*` values, SPEC §1) and its validation. Pure, no I/O.

`apply_config_changes` returns a new `Config` or raises `ConfigError`; the caller swaps the
current config only on success, so a bad call leaves the previous config in place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bkit.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Config:
    """Trading defaults. Percentages are per cent (0.1 = 0.1 %), durations whole minutes."""

    CC_PERCENT_SLIPPAGE: float = 0.1
    CC_PERCENT_FEE: float = 0.1
    CC_MIN_TAKEPROFIT_DISTANCE_PERCENT: float = 0.5
    CC_MIN_STOPLOSS_DISTANCE_PERCENT: float = 0.5
    CC_MAX_STOPLOSS_DISTANCE_PERCENT: float = 20.0
    CC_MAX_SIGNAL_LIFETIME_MINUTES: int = 1440
    CC_SCHEDULE_AWAIT_MINUTES: int = 120
    CC_AVG_PRICE_CANDLES_COUNT: int = 5
    CC_POSITION_ENTRY_COST: float = 100.0
    CC_BREAKEVEN_THRESHOLD: float = 0.2
    CC_MAX_LIVE_MARKDOWN_ROWS: int = 250
    CC_ORDER_OPEN_RETRY_ATTEMPTS: int = 5
    CC_ORDER_CLOSE_RETRY_ATTEMPTS: int = 5
    #: Seconds an order of unknown outcome is looked for (lookup, open orders, trades)
    #: before it may be sent again (SPEC §8).
    CC_ORDER_SETTLE_SECONDS: float = 120.0
    #: Exchange-side protection (SPEC §10): a stop order on the venue at the SL once an
    #: entry fills, where the venue supports it (False: the tick alone watches the SL).
    CC_EXCHANGE_STOP: bool = True
    #: Spot stops are stop-loss-limit orders: the limit sits this far (%) beyond the stop
    #: (below for a long's sell), so a fast fall still fills instead of resting unfilled.
    CC_EXCHANGE_STOP_LIMIT_OFFSET_PERCENT: float = 0.5
    #: Futures (SPEC §10): leverage and margin mode set on the venue per symbol before the
    #: first entry ("isolated" or "cross").
    CC_LEVERAGE: int = 1
    CC_MARGIN_MODE: str = "isolated"
    #: Futures position mode, set on the venue once before the first entry: "one_way" (one
    #: net position per symbol) or "hedge" (a LONG and a SHORT side per symbol; every order
    #: names its `positionSide`, exits and stops close only their own side).
    CC_POSITION_MODE: str = "one_way"
    #: How the stop-loss is hit (SPEC §11): "vwap" (the tick's VWAP at or past it) or
    #: "touch" (the last closed 1m candle's low, a short's high, at or past it; checked
    #: before the take-profit).
    CC_STOP_LOSS_TRIGGER: str = "vwap"
    #: Sizing without an account (SPEC §11): the starting balance (quote currency) of the
    #: notional account a signals-only key (no broker) sizes from, and the default starting
    #: balance of a backtest; that account moves with the realised PnL (`pnl_cost`) of the
    #: strategy's closed trades on the exchange. 0: not set, and such entries are refused.
    CC_SIZING_BALANCE: float = 0.0

    @property
    def round_trip_cost_percent(self) -> float:
        """Slippage and fee paid on entry and exit: 2 × (slippage + fee), in %."""
        return 2 * (self.CC_PERCENT_SLIPPAGE + self.CC_PERCENT_FEE)

    @property
    def breakeven_move_percent(self) -> float:
        """Favourable move (in %) after which breakeven is available (0.6 % by default)."""
        return self.round_trip_cost_percent + self.CC_BREAKEVEN_THRESHOLD

    def as_dict(self) -> dict[str, float | int | bool | str]:
        return asdict(self)


_INTEGER_KEYS = {
    "CC_MAX_SIGNAL_LIFETIME_MINUTES",
    "CC_SCHEDULE_AWAIT_MINUTES",
    "CC_AVG_PRICE_CANDLES_COUNT",
    "CC_MAX_LIVE_MARKDOWN_ROWS",
    "CC_ORDER_OPEN_RETRY_ATTEMPTS",
    "CC_ORDER_CLOSE_RETRY_ATTEMPTS",
    "CC_LEVERAGE",
}
#: Keys that must be strictly positive (a zero would make the engine meaningless).
_POSITIVE_KEYS = _INTEGER_KEYS | {"CC_POSITION_ENTRY_COST", "CC_MAX_STOPLOSS_DISTANCE_PERCENT"}
#: Switches (True / False).
_BOOLEAN_KEYS = {"CC_EXCHANGE_STOP"}
#: Keys that take one of a few words.
_CHOICE_KEYS = {"CC_MARGIN_MODE": ("isolated", "cross"),
                "CC_POSITION_MODE": ("one_way", "hedge"),
                "CC_STOP_LOSS_TRIGGER": ("vwap", "touch")}
CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Config))


def _coerce(key: str, value: Any, problems: list[str]) -> float | int | bool | str | None:
    if key in _CHOICE_KEYS:
        if not isinstance(value, str) or value not in _CHOICE_KEYS[key]:
            problems.append(f"{key} must be one of {', '.join(_CHOICE_KEYS[key])}, got "
                            f"a {type(value).__name__}" if not isinstance(value, str) else
                            f"{key} must be one of {', '.join(_CHOICE_KEYS[key])}, got "
                            f"{value[:32]!r}")
            return None
        return value
    if key in _BOOLEAN_KEYS:
        if not isinstance(value, bool):
            problems.append(f"{key} must be True or False, got a {type(value).__name__}")
            return None
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{key} must be a number, got {value!r}")
        return None
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range: refused, never a crash
        problems.append(f"{key} must be finite, got a number too large for a float")
        return None
    if not finite:
        problems.append(f"{key} must be finite, got {value!r}")
        return None
    if value < 0:
        problems.append(f"{key} must not be negative, got {value!r}")
        return None
    if key in _POSITIVE_KEYS and value == 0:
        problems.append(f"{key} must be greater than 0")
        return None
    if key in _INTEGER_KEYS:
        if value != int(value):
            problems.append(f"{key} must be a whole number, got {value!r}")
            return None
        return int(value)
    return float(value)


def apply_config_changes(
    current: Config, changes: dict[str, Any], *, unsafe: bool = False
) -> Config:
    """Validate `changes` against `current` and return the new config.

    Rejects unknown keys, non-numbers, NaN/inf, negatives, zero where zero is meaningless, a
    minimum SL distance ≥ the maximum, and (unless `unsafe`) a minimum TP distance below the
    round-trip cost `2 × (slippage + fee)` — 0 included, since 0 disables the TP-distance rule.
    All problems are collected into one `ConfigError`.
    """
    problems: list[str] = []
    clean: dict[str, float | int | bool | str] = {}
    for key, value in changes.items():
        if key not in CONFIG_KEYS:
            problems.append(f"unknown config key {key!r}")
            continue
        coerced = _coerce(key, value, problems)
        if coerced is not None:
            clean[key] = coerced
    if problems:
        raise ConfigError("; ".join(problems))
    new = replace(current, **clean)  # type: ignore[arg-type]  # keys checked above
    if new.CC_PERCENT_SLIPPAGE >= 100:
        problems.append(f"CC_PERCENT_SLIPPAGE ({new.CC_PERCENT_SLIPPAGE}) must be below 100 %: "
                        "a short's adjusted entry price would be zero or negative")
    if new.CC_MIN_STOPLOSS_DISTANCE_PERCENT >= new.CC_MAX_STOPLOSS_DISTANCE_PERCENT:
        problems.append(
            "CC_MIN_STOPLOSS_DISTANCE_PERCENT "
            f"({new.CC_MIN_STOPLOSS_DISTANCE_PERCENT}) must be below "
            f"CC_MAX_STOPLOSS_DISTANCE_PERCENT ({new.CC_MAX_STOPLOSS_DISTANCE_PERCENT})"
        )
    min_tp = new.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT
    # 0 disables the TP-distance rule, so it needs `unsafe` even when slippage and fee are 0.
    if not unsafe and (min_tp == 0 or min_tp < new.round_trip_cost_percent - 1e-12):
        problems.append(
            "CC_MIN_TAKEPROFIT_DISTANCE_PERCENT "
            f"({new.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT}) is 0 or below the round-trip cost "
            f"{new.round_trip_cost_percent:g} % (2 × (slippage + fee)): a take-profit that "
            "close loses money; pass unsafe=True to allow it"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    return new

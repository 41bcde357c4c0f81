"""Registration of exchanges, strategies, risk profiles and sizings (SPEC §1, §11), and the
global config.

Holds plain Python objects in this process; no I/O. Workers import the user's strategy
modules at start, so each process builds the same registry.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bkit.core.candles import CANDLE_INTERVAL_MINUTES
from bkit.core.config import Config, apply_config_changes
from bkit.core.errors import RegistrationError, UnknownNameError
from bkit.core.machine import SIGNAL_INTERVAL_MINUTES
from bkit.core.sizing import SizingSchema, validate_sizing

STRATEGY_CALLBACKS = frozenset({
    "on_tick", "on_open", "on_close", "on_active", "on_schedule", "on_cancel", "on_idle",
    "on_partial_profit", "on_partial_loss", "on_breakeven",
})
RISK_CALLBACKS = frozenset({"on_rejected", "on_allowed"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

GetCandles = Callable[..., Any]
Formatter = Callable[[str, float], str]


def default_format_price(symbol: str, value: float) -> str:
    """Two decimals, the default when an exchange gives no precision."""
    return f"{value:.2f}"


def default_format_quantity(symbol: str, value: float) -> str:
    """Eight decimals, the default when an exchange gives no precision."""
    return f"{value:.8f}"


@dataclass(frozen=True)
class ExchangeSchema:
    exchange_name: str
    get_candles: GetCandles
    format_price: Formatter = default_format_price
    format_quantity: Formatter = default_format_quantity
    note: str = ""
    source: Any = None  # the object behind the functions (e.g. a CcxtExchange), if any


@dataclass(frozen=True)
class StrategySchema:
    strategy_name: str
    get_signal: Callable[..., Any]
    interval: str = "1m"
    risk_name: str | None = None
    callbacks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    note: str = ""
    #: The sizing that turns a signal into a cost (SPEC §11); None: the signal's `cost`,
    #: else CC_POSITION_ENTRY_COST.
    sizing_name: str | None = None


@dataclass(frozen=True)
class RiskValidation:
    validate: Callable[[Mapping[str, Any]], Any]
    note: str = ""


@dataclass(frozen=True)
class RiskSchema:
    risk_name: str
    validations: tuple[RiskValidation, ...] = ()
    max_concurrent_positions: int | None = None
    callbacks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    note: str = ""


class Registry:
    """Named exchanges, strategies and risk profiles of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exchanges: dict[str, ExchangeSchema] = {}
        self.strategies: dict[str, StrategySchema] = {}
        self.risks: dict[str, RiskSchema] = {}
        self.sizings: dict[str, SizingSchema] = {}

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()
            self.strategies.clear()
            self.risks.clear()
            self.sizings.clear()

    def exchange(self, name: str) -> ExchangeSchema:
        try:
            return self.exchanges[name]
        except KeyError:
            raise UnknownNameError(_unknown("exchange", name, self.exchanges)) from None

    def strategy(self, name: str) -> StrategySchema:
        try:
            return self.strategies[name]
        except KeyError:
            raise UnknownNameError(_unknown("strategy", name, self.strategies)) from None

    def risk(self, name: str) -> RiskSchema:
        try:
            return self.risks[name]
        except KeyError:
            raise UnknownNameError(_unknown("risk profile", name, self.risks)) from None

    def sizing(self, name: str) -> SizingSchema:
        try:
            return self.sizings[name]
        except KeyError:
            raise UnknownNameError(_unknown("sizing", name, self.sizings)) from None

    def _add(self, table: dict[str, Any], kind: str, name: str, schema: Any) -> None:
        with self._lock:
            if name in table:
                raise RegistrationError(f"{kind} {name!r} is already registered")
            table[name] = schema


def _unknown(kind: str, name: object, known: Mapping[str, Any]) -> str:
    listed = ", ".join(sorted(known)) or "none registered"
    return f"unknown {kind} {name!r} (known: {listed})"


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistrationError(
            f"{kind} name must be 1-64 characters of letters, digits, '_', '.', '-' starting "
            f"with a letter or digit, got {name!r}")
    return name


def _check_callable(what: str, value: object) -> None:
    if not callable(value):
        raise RegistrationError(f"{what} must be callable, got {type(value).__name__}")


def _check_callbacks(kind: str, callbacks: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if callbacks is None:
        return {}
    if not isinstance(callbacks, Mapping):
        callbacks = {n: getattr(callbacks, n) for n in allowed if hasattr(callbacks, n)}
    unknown = sorted(set(callbacks) - allowed)
    if unknown:
        raise RegistrationError(f"{kind}: unknown callbacks {unknown} (allowed: "
                                f"{', '.join(sorted(allowed))})")
    for name, fn in callbacks.items():
        _check_callable(f"{kind} callback {name}", fn)
    return dict(callbacks)


REGISTRY = Registry()
_config_lock = threading.Lock()
_config = Config()
logger: logging.Logger | Any = logging.getLogger("bkit")


def add_exchange(exchange_name: str, get_candles: GetCandles,
                 format_price: Formatter | None = None,
                 format_quantity: Formatter | None = None, note: str = "",
                 source: Any = None) -> ExchangeSchema:
    """Register an exchange: `get_candles(symbol, interval, since, limit)` and formatters."""
    _check_name("exchange", exchange_name)
    _check_callable(f"exchange {exchange_name}: get_candles", get_candles)
    for label, fn in (("format_price", format_price), ("format_quantity", format_quantity)):
        if fn is not None:
            _check_callable(f"exchange {exchange_name}: {label}", fn)
    schema = ExchangeSchema(exchange_name, get_candles,
                            format_price or default_format_price,
                            format_quantity or default_format_quantity, str(note), source)
    REGISTRY._add(REGISTRY.exchanges, "exchange", exchange_name, schema)
    return schema


def add_strategy(strategy_name: str, get_signal: Callable[..., Any], interval: str = "1m",
                 risk_name: str | None = None, callbacks: Any = None,
                 note: str = "", sizing_name: str | None = None) -> StrategySchema:
    """Register a strategy. `interval` (1m 3m 5m 15m 30m 1h) throttles `get_signal`;
    `sizing_name` names a sizing registered before with `add_sizing` (SPEC §11): it then
    sets the cost of every entry (a signal's own `cost` is ignored)."""
    _check_name("strategy", strategy_name)
    _check_callable(f"strategy {strategy_name}: get_signal", get_signal)
    if interval not in SIGNAL_INTERVAL_MINUTES:
        raise RegistrationError(
            f"strategy {strategy_name}: interval {interval!r} is not one of "
            f"{', '.join(SIGNAL_INTERVAL_MINUTES)}")
    if risk_name is not None:
        _check_name("risk", risk_name)
    if sizing_name is not None:
        _check_name("sizing", sizing_name)
        if sizing_name not in REGISTRY.sizings:
            raise RegistrationError(
                f"strategy {strategy_name}: {_unknown('sizing', sizing_name, REGISTRY.sizings)}"
                "; register it with add_sizing first")
    schema = StrategySchema(strategy_name, get_signal, interval, risk_name,
                            _check_callbacks(f"strategy {strategy_name}", callbacks,
                                             STRATEGY_CALLBACKS), str(note), sizing_name)
    REGISTRY._add(REGISTRY.strategies, "strategy", strategy_name, schema)
    return schema


def _risk_validations(risk_name: str, validations: Iterable[Any]) -> tuple[RiskValidation, ...]:
    if isinstance(validations, Mapping) or callable(validations):
        validations = [validations]
    checked = []
    for i, item in enumerate(validations):
        if isinstance(item, RiskValidation):
            checked.append(item)
            continue
        if isinstance(item, Mapping):
            fn, note = item.get("validate"), item.get("note", "")
        else:
            fn, note = item, ""
        _check_callable(f"risk {risk_name}: validation #{i}", fn)
        checked.append(RiskValidation(fn, str(note)))  # type: ignore[arg-type]
    return tuple(checked)


def add_risk(risk_name: str, validations: Iterable[Any] = (),
             max_concurrent_positions: int | None = None, callbacks: Any = None,
             note: str = "") -> RiskSchema:
    """Register a risk profile shared by every strategy naming it, across symbols/workers."""
    _check_name("risk", risk_name)
    if max_concurrent_positions is not None and (
            isinstance(max_concurrent_positions, bool)
            or not isinstance(max_concurrent_positions, int) or max_concurrent_positions < 1):
        raise RegistrationError(f"risk {risk_name}: max_concurrent_positions must be a whole "
                                f"number >= 1 or None, got {max_concurrent_positions!r}")
    schema = RiskSchema(risk_name, _risk_validations(risk_name, validations),
                        max_concurrent_positions,
                        _check_callbacks(f"risk {risk_name}", callbacks, RISK_CALLBACKS),
                        str(note))
    REGISTRY._add(REGISTRY.risks, "risk", risk_name, schema)
    return schema


def add_sizing(sizing_name: str, method: str = "fixed", *,
               min_position_size: float | None = None,
               max_position_percentage: float | None = None,
               max_position_size: float | None = None, **params: float) -> SizingSchema:
    """Register a sizing (SPEC §11) that `add_strategy(..., sizing_name=...)` can name.

    `method` and its `params`: "fixed" (`cost`, quote currency), "fixed_percentage"
    (`risk_percentage`, % of balance lost at the SL), "kelly" (`kelly_multiplier`, default
    0.25), "atr" (`risk_percentage`, `atr_multiplier` default 2, `atr_period` default 14).
    Caps on the cost: `min_position_size` (quote), `max_position_percentage` (% of balance),
    `max_position_size` (quote), applied in that order. An unknown method, a missing, unknown
    or out-of-range param raises `RegistrationError` naming every problem."""
    _check_name("sizing", sizing_name)
    schema = validate_sizing(sizing_name, method, params,
                             min_position_size=min_position_size,
                             max_position_percentage=max_position_percentage,
                             max_position_size=max_position_size)
    REGISTRY._add(REGISTRY.sizings, "sizing", sizing_name, schema)
    return schema


def set_config(unsafe: bool = False, **values: Any) -> Config:
    """Change `CC_*` values. A bad value raises `ConfigError` and keeps the old config."""
    global _config
    with _config_lock:
        _config = apply_config_changes(_config, values, unsafe=unsafe)
        return _config


def get_config() -> Config:
    return _config


def reset_config() -> None:
    """Back to the defaults (tests)."""
    global _config
    with _config_lock:
        _config = Config()


def set_logger(new_logger: Any) -> None:
    """Use `new_logger` (anything with info/warning/error/debug methods) for bkit's logs."""
    global logger
    for method in ("info", "warning", "error", "debug"):
        if not callable(getattr(new_logger, method, None)):
            raise RegistrationError(f"logger needs a callable {method}()")
    logger = new_logger


def candle_interval_ok(interval: str) -> bool:
    return interval in CANDLE_INTERVAL_MINUTES

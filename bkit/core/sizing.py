"""Position sizing: from the account's balance to a signal's cost (SPEC §11). Pure, no I/O.

Units: `balance` and every returned cost in quote currency (USD for a USD quote); prices in
quote per base unit; `risk_percentage`, `max_position_percentage` and closed trades' PnL in
per cent; `atr` in price units. The caps `min_position_size`, `max_position_percentage` (of
the balance) and `max_position_size` apply to the **cost** (quote units), not to the base
quantity, in that order: a cost below the minimum is raised to it, then the two maxima cut it,
so the maxima always win over the minimum.

`position_cost` returns a cost or a `str` naming why it cannot size (no stop distance, too
little history for Kelly, no ATR, a non-positive balance, no edge): the caller refuses the
entry with that reason; there is never a default size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bkit.core.candles import Candle
from bkit.core.errors import RegistrationError
from bkit.core.signals import ValidSignal

SizingMethod = Literal["fixed", "fixed_percentage", "kelly", "atr"]
SIZING_METHODS: tuple[str, ...] = ("fixed", "fixed_percentage", "kelly", "atr")
#: Kelly needs at least this many closed trades of the key (the §9 ratio gate, also 10).
KELLY_MIN_CLOSED_TRADES = 10
#: Default ATR period (candles) for `atr` and the `atr` method's `atr_period`.
ATR_PERIOD = 14

#: Parameters per method: name → default (None = required).
_PARAMS: dict[str, dict[str, float | None]] = {
    "fixed": {"cost": None},
    "fixed_percentage": {"risk_percentage": None},
    "kelly": {"kelly_multiplier": 0.25},
    "atr": {"risk_percentage": None, "atr_multiplier": 2.0, "atr_period": float(ATR_PERIOD)},
}


@dataclass(frozen=True, slots=True)
class SizingSchema:
    """A registered sizing: `method` and its `params` (defaults filled in), and the caps in
    quote currency (`min_position_size`, `max_position_size`) and % of balance
    (`max_position_percentage`), each None when not set. Build it with `validate_sizing`."""

    sizing_name: str
    method: SizingMethod
    params: Mapping[str, float] = field(default_factory=dict)
    min_position_size: float | None = None
    max_position_percentage: float | None = None
    max_position_size: float | None = None


def validate_sizing(
    sizing_name: str,
    method: str,
    params: Mapping[str, float] | None = None,
    *,
    min_position_size: float | None = None,
    max_position_percentage: float | None = None,
    max_position_size: float | None = None,
) -> SizingSchema:
    """Check a sizing registration and return it with defaults filled in.

    Methods and params: `fixed(cost > 0)`; `fixed_percentage(0 < risk_percentage ≤ 100)`;
    `kelly(0 < kelly_multiplier ≤ 1, default 0.25)`; `atr(0 < risk_percentage ≤ 100,
    atr_multiplier > 0 default 2, atr_period whole ≥ 1 default 14)`. Caps: `min_position_size`
    ≥ 0, `max_position_size` > 0 and ≥ the minimum, `0 < max_position_percentage ≤ 100`.
    Raises `RegistrationError` listing every problem (unknown method, unknown, missing or
    out-of-range params).
    """
    problems: list[str] = []
    if not isinstance(sizing_name, str) or not sizing_name.strip():
        problems.append(f"sizing_name must be a non-empty string, got {sizing_name!r}")
    if method not in _PARAMS:
        raise RegistrationError(
            f"sizing {sizing_name!r}: unknown method {method!r} (known: {', '.join(_PARAMS)})"
        )
    given = dict(params or {})
    allowed = _PARAMS[method]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        problems.append(
            f"unknown params {unknown} for method {method!r} (allowed: {sorted(allowed)})"
        )
    clean: dict[str, float] = {}
    for name, default in allowed.items():
        value = given.get(name, default)
        if value is None:
            problems.append(f"{method} needs {name}")
        elif not _is_number(value):
            problems.append(f"{name} must be a finite number, got {value!r}")
        else:
            clean[name] = float(value)
    for name in ("cost", "atr_multiplier", "kelly_multiplier"):
        if name in clean and clean[name] <= 0:
            problems.append(f"{name} must be > 0, got {clean[name]:g}")
    if clean.get("kelly_multiplier", 0) > 1:
        problems.append(f"kelly_multiplier must be ≤ 1, got {clean['kelly_multiplier']:g}")
    if "risk_percentage" in clean and not 0 < clean["risk_percentage"] <= 100:
        problems.append(f"risk_percentage must be in (0, 100], got {clean['risk_percentage']:g}")
    if "atr_period" in clean and (
        clean["atr_period"] < 1 or clean["atr_period"] != int(clean["atr_period"])
    ):
        problems.append(f"atr_period must be a whole number ≥ 1, got {clean['atr_period']:g}")
    caps = {
        "min_position_size": min_position_size,
        "max_position_percentage": max_position_percentage,
        "max_position_size": max_position_size,
    }
    for name, value in caps.items():
        if value is not None and not _is_number(value):
            problems.append(f"{name} must be a finite number or None, got {value!r}")
    if not problems:
        if min_position_size is not None and min_position_size < 0:
            problems.append(f"min_position_size must be ≥ 0, got {min_position_size:g}")
        if max_position_size is not None and max_position_size <= 0:
            problems.append(f"max_position_size must be > 0, got {max_position_size:g}")
        if max_position_percentage is not None and not 0 < max_position_percentage <= 100:
            problems.append(
                f"max_position_percentage must be in (0, 100], got {max_position_percentage:g}"
            )
        if (
            min_position_size is not None
            and max_position_size is not None
            and min_position_size > max_position_size
        ):
            problems.append(
                f"min_position_size ({min_position_size:g}) must not exceed "
                f"max_position_size ({max_position_size:g})"
            )
    if problems:
        raise RegistrationError(f"sizing {sizing_name!r}: " + "; ".join(problems))
    return SizingSchema(
        sizing_name=sizing_name,
        method=method,  # type: ignore[arg-type]  # checked against _PARAMS above
        params=clean,
        min_position_size=None if min_position_size is None else float(min_position_size),
        max_position_percentage=(
            None if max_position_percentage is None else float(max_position_percentage)
        ),
        max_position_size=None if max_position_size is None else float(max_position_size),
    )


def kelly_fraction(closed_pnls: Sequence[float]) -> float:
    """Full Kelly `k = (W×R − (1−W))/R` from closed trades' PnL (%), same counting as §9:
    `W` = #{pnl > 0} / N (pnl = 0 is neither a win nor a loss), `R` = avg win / |avg loss|.
    With no losing trade `k = W`; with no winning trade `k = −(1−W)/R → −∞`, returned as
    `-inf`. Raises `ValueError` on an empty sequence."""
    if not closed_pnls:
        raise ValueError("kelly_fraction needs at least one closed trade")
    wins = [value for value in closed_pnls if value > 0]
    losses = [value for value in closed_pnls if value < 0]
    win_rate = len(wins) / len(closed_pnls)
    if not losses:
        return win_rate
    if not wins:
        return -math.inf
    ratio = (math.fsum(wins) / len(wins)) / abs(math.fsum(losses) / len(losses))
    return (win_rate * ratio - (1 - win_rate)) / ratio


def position_cost(
    sizing: SizingSchema,
    balance: float,
    price_open: float,
    price_stop_loss: float,
    closed_pnls: Sequence[float] = (),
    atr: float | None = None,
) -> float | str:
    """The cost (quote currency) of a new position, or a `str` saying why it cannot be sized.

    - `fixed`: `params["cost"]`.
    - `fixed_percentage`: `qty = balance × risk%/100 / |open − SL|`, cost = qty × open.
    - `kelly`: `k` from `closed_pnls` (the key's closed trades, %; at least
      `KELLY_MIN_CLOSED_TRADES`), `qty = balance × max(0, k) × kelly_multiplier / open`,
      cost = qty × open; refused when k ≤ 0 (no edge: the history says not to trade).
    - `atr`: `qty = balance × risk%/100 / (atr × atr_multiplier)`, cost = qty × open.
    Then `cost = max(cost, min_position_size)`, `min(cost, balance × max_position_percentage
    / 100)`, `min(cost, max_position_size)`, in that order.
    """
    if not _is_number(balance) or balance <= 0:
        return f"sizing {sizing.sizing_name!r}: balance must be a positive number, got {balance!r}"
    if not _is_number(price_open) or price_open <= 0:
        return f"sizing {sizing.sizing_name!r}: price_open must be positive, got {price_open!r}"
    params = sizing.params
    cost: float
    if sizing.method == "fixed":
        cost = params["cost"]
    elif sizing.method == "fixed_percentage":
        if not _is_number(price_stop_loss):
            return f"sizing {sizing.sizing_name!r}: no stop loss to size from"
        distance = abs(price_open - price_stop_loss)
        if distance <= 1e-12 * price_open:
            return (
                f"sizing {sizing.sizing_name!r}: no stop distance (open {price_open:g}, "
                f"stop loss {price_stop_loss:g})"
            )
        quantity = balance * params["risk_percentage"] / 100 / distance
        cost = quantity * price_open
    elif sizing.method == "kelly":
        if len(closed_pnls) < KELLY_MIN_CLOSED_TRADES:
            return (
                f"sizing {sizing.sizing_name!r}: Kelly needs {KELLY_MIN_CLOSED_TRADES} "
                f"closed trades, the key has {len(closed_pnls)}"
            )
        fraction = kelly_fraction(closed_pnls)
        if fraction <= 0:
            return (
                f"sizing {sizing.sizing_name!r}: Kelly fraction {fraction:.6g} ≤ 0, the "
                "closed trades show no edge"
            )
        quantity = balance * fraction * params["kelly_multiplier"] / price_open
        cost = quantity * price_open
    elif sizing.method == "atr":
        if atr is None or not _is_number(atr) or atr <= 0:
            return f"sizing {sizing.sizing_name!r}: no ATR (got {atr!r})"
        quantity = balance * params["risk_percentage"] / 100 / (atr * params["atr_multiplier"])
        cost = quantity * price_open
    else:
        raise ValueError(f"unknown sizing method {sizing.method!r}")
    return apply_position_caps(sizing, cost, balance)


def apply_position_caps(sizing: SizingSchema, cost: float, balance: float) -> float:
    """`min_position_size`, then `max_position_percentage` of `balance`, then
    `max_position_size`, on a cost in quote currency."""
    if sizing.min_position_size is not None:
        cost = max(cost, sizing.min_position_size)
    if sizing.max_position_percentage is not None:
        cost = min(cost, balance * sizing.max_position_percentage / 100)
    if sizing.max_position_size is not None:
        cost = min(cost, sizing.max_position_size)
    return cost


def atr(candles: Sequence[Candle], period: int = ATR_PERIOD) -> float | None:
    """Wilder's average true range over `candles` (oldest first), in price units.

    `TR_i = max(high_i − low_i, |high_i − close_{i−1}|, |low_i − close_{i−1}|)` for i ≥ 1;
    the first ATR is the mean of `TR_1 … TR_period`, then `ATR = (ATR_prev × (period − 1) +
    TR_i) / period`. Needs `period + 1` candles; returns None with fewer.
    """
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be a whole number ≥ 1, got {period!r}")
    if len(candles) < period + 1:
        return None
    ranges = [
        max(c.high - c.low, abs(c.high - prev.close), abs(c.low - prev.close))
        for prev, c in itertools.pairwise(candles)
    ]
    value = math.fsum(ranges[:period]) / period
    for true_range in ranges[period:]:
        value = (value * (period - 1) + true_range) / period
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- what an entry's sizing needs, and the decision on those inputs ---------------------------


@dataclass(frozen=True, slots=True)
class SizingInputs:
    """What the edges (the live tick, the backtest engine) read for one entry.

    `balance` (quote currency) or `balance_problem` (why it could not be read);
    `closed_pnls`: the key's closed trades' PnL (%), oldest first (Kelly only);
    `atr` (price units) or `atr_problem` (ATR method only)."""

    balance: float | None = None
    balance_problem: str | None = None
    closed_pnls: tuple[float, ...] = ()
    atr: float | None = None
    atr_problem: str | None = None


def needs_balance(sizing: SizingSchema) -> bool:
    """Every method sizes from the balance, except `fixed` without a `max_position_percentage`
    cap (its cost and its absolute caps need no account)."""
    return not (sizing.method == "fixed" and sizing.max_position_percentage is None)


def needs_history(sizing: SizingSchema) -> bool:
    """Kelly reads the key's closed trades."""
    return sizing.method == "kelly"


def needs_atr(sizing: SizingSchema) -> bool:
    """The `atr` method reads candles of the strategy's interval."""
    return sizing.method == "atr"


def size_entry(sizing: SizingSchema, inputs: SizingInputs, price_open: float,
               price_stop_loss: float) -> float | str:
    """The cost (quote currency) of a new entry at `price_open` with stop `price_stop_loss`,
    or why it is refused (an input could not be read, or `position_cost` cannot size).
    The same function sizes the live tick's and the backtest's entries."""
    name = sizing.sizing_name
    if not needs_balance(sizing):
        return apply_position_caps(sizing, sizing.params["cost"], math.nan)
    if inputs.balance is None:
        return f"sizing {name!r}: no balance to size from: {inputs.balance_problem or 'unknown'}"
    if needs_atr(sizing) and inputs.atr is None:
        return f"sizing {name!r}: no ATR: {inputs.atr_problem or 'unknown'}"
    return position_cost(sizing, inputs.balance, price_open, price_stop_loss,
                         closed_pnls=inputs.closed_pnls, atr=inputs.atr)


def entry_sizer(sizing: SizingSchema, inputs: SizingInputs
                ) -> Callable[[ValidSignal], float | str]:
    """The state machine's sizer (`bkit.core.machine.Sizer`) over inputs read beforehand."""
    def size(valid: ValidSignal) -> float | str:
        return size_entry(sizing, inputs, valid.price_open, valid.price_stop_loss)
    return size


def notional_balance(start: float, realised_costs: Sequence[float], missing: str
                     ) -> float | str:
    """A notional account (signals only, backtests): `start` plus the realised `pnl_cost` of
    the closed trades (quote currency, an exact sum whatever their order), or `missing`
    when no starting balance is set (`start` ≤ 0)."""
    if not (_is_number(start) and start > 0):
        return missing
    return start + math.fsum(realised_costs)


def atr_candle_window(when: datetime, step_minutes: int, period: int) -> tuple[datetime, int]:
    """(since, count) of the closed candles of `step_minutes` the ATR at `when` reads: the
    `period + 1` buckets before the bucket that contains `when` (that one is still forming)."""
    minute = int(when.timestamp() // 60)
    current = minute - minute % step_minutes
    since = datetime.fromtimestamp((current - (period + 1) * step_minutes) * 60, tz=UTC)
    return since, period + 1


def closed_window(candles: Sequence[Candle], when: datetime, step_minutes: int, period: int
                  ) -> list[Candle]:
    """The candles (of `step_minutes`) inside the ATR window at `when`, oldest first: open time
    at or after its start and closed by `when` (open + step ≤ when). A feed that returns later
    candles (a paper clock ahead of the tick) cannot leak them in."""
    since, _count = atr_candle_window(when, step_minutes, period)
    start_ms = int(since.timestamp()) * 1000
    end_ms = (int(when.timestamp() // 60) * 60) * 1000
    step_ms = step_minutes * 60_000
    return sorted((c for c in candles if c.timestamp >= start_ms and
                   c.timestamp + step_ms <= end_ms), key=lambda c: c.timestamp)


def window_atr(candles: Sequence[Candle], when: datetime, step_minutes: int, period: int
               ) -> float | str:
    """ATR(`period`) at `when` over the closed candles of `step_minutes` in its window, or why
    there is none (fewer than `period + 1` candles: a gap in the feed, the start of the data)."""
    window = closed_window(candles, when, step_minutes, period)
    value = atr(window, period)
    if value is None:
        return (f"ATR({period}) needs {period + 1} closed {step_minutes}m candles before "
                f"{when.isoformat()}, got {len(window)}")
    if not _is_number(value) or value <= 0:
        return f"ATR({period}) at {when.isoformat()} is {value!r}, not a positive number"
    return value


def aggregate_minutes(candles: Sequence[Candle], step_minutes: int) -> list[Candle]:
    """1m candles (oldest first) into buckets of `step_minutes` aligned on the epoch, as the
    paper exchange and the venues aggregate: first open, highest high, lowest low, last close,
    summed volume. Missing minutes are simply absent from their bucket."""
    if step_minutes == 1:
        return list(candles)
    step_ms = step_minutes * 60_000
    out: list[Candle] = []
    for c in candles:
        bucket = c.timestamp - c.timestamp % step_ms
        if out and out[-1].timestamp == bucket:
            prev = out[-1]
            out[-1] = Candle(bucket, prev.open, max(prev.high, c.high), min(prev.low, c.low),
                             c.close, prev.volume + c.volume)
        else:
            out.append(Candle(bucket, c.open, c.high, c.low, c.close, c.volume))
    return out

"""Signals: what a strategy returns, its validation (SPEC §3) and the stored row of a live
signal. Pure, no I/O."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal

from bkit.core.config import Config
from bkit.core.errors import SignalValidationError

Position = Literal["long", "short"]
#: Life of a signal row. `opening` / `closing`: an order intent is in flight (broker mode).
#: `quarantined`: a stored row that failed its integrity check; never traded again.
SignalState = Literal["scheduled", "opening", "opened", "closing", "closed", "cancelled",
                      "quarantined"]
LIVE_STATES: frozenset[str] = frozenset({"scheduled", "opening", "opened", "closing"})
CloseReason = Literal["take_profit", "stop_loss", "time_expired", "closed", "liquidation"]
CancelReason = Literal["timeout", "price_reject", "user"]

_SIGNAL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Tolerance (percentage points) for the distance rules: float rounding is not a violation.
_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class Signal:
    """A trade idea returned by `get_signal`. Prices and `cost` (the entry's notional) in the
    symbol's quote currency (USDT for BTC/USDT).

    Without `price_open` the entry is immediate at the current price; with it, the signal is
    scheduled until the price reaches `price_open` (long: falls to it, short: rises to it).
    """

    position: str
    price_take_profit: float
    price_stop_loss: float
    price_open: float | None = None
    minute_estimated_time: int | None = None
    note: str = ""
    id: str | None = None
    cost: float | None = None
    symbol: str | None = None


_SIGNAL_KEYS = {f.name for f in fields(Signal)}


@dataclass(frozen=True, slots=True)
class ValidSignal:
    """A signal that passed every rule of SPEC §3, with defaults filled in."""

    id: str
    position: Position
    price_open: float
    price_take_profit: float
    price_stop_loss: float
    minute_estimated_time: int
    note: str
    cost: float
    immediate: bool  # True: enter now at `price_open`; False: schedule until the price reaches it
    cost_explicit: bool = False  # the strategy gave `cost`; False: CC_POSITION_ENTRY_COST


@dataclass(frozen=True, slots=True)
class PublicSignal:
    """The signal as listeners, callbacks and reports see it (SPEC §4)."""

    id: str
    position: str
    price_open: float
    price_take_profit: float
    price_stop_loss: float
    minute_estimated_time: int
    note: str
    cost: float
    scheduled_at: datetime | None
    pending_at: datetime | None
    symbol: str
    strategy_name: str
    exchange_name: str
    # Broker mode (SPEC §8), so anyone can hold bkit's view against the account: base units
    # held now (net of base-asset fees), dust left behind, realised PnL from fills and fees,
    # `stuck` when the venue keeps refusing the exit, and the signal's orders.
    amount: float | None = None
    dust: float | None = None
    realised_pnl_cost: float | None = None
    realised_pnl_percentage: float | None = None
    fees_quote: float | None = None
    stuck: bool = False
    orders: list[dict[str, Any]] | None = None
    # Position management (SPEC §11): entries (DCA), partial closes, % of the cost closed.
    total_entries: int = 1
    total_partials: int = 0
    partial_executed: float = 0.0


@dataclass(frozen=True, slots=True)
class SignalRow:
    """The persisted state of one signal (live or history). Times are UTC-aware datetimes."""

    id: str
    symbol: str
    strategy_name: str
    exchange_name: str
    position: str
    price_open: float
    price_take_profit: float
    price_stop_loss: float
    minute_estimated_time: int
    note: str
    cost: float
    state: SignalState
    created_at: datetime
    scheduled_at: datetime | None = None
    pending_at: datetime | None = None
    # Milestones fired so far (SPEC §9): highest level 10..100 reached, breakeven once.
    partial_profit_level: int = 0
    partial_loss_level: int = 0
    breakeven_fired: bool = False
    # A close decided but not yet recorded (broker mode): reason and the price it closes at.
    pending_close_reason: str | None = None
    pending_close_price: float | None = None
    close_rejections: int = 0
    order_in_flight: bool = False
    # Terminal fields.
    close_reason: str | None = None
    cancel_reason: str | None = None
    closed_at: datetime | None = None
    price_close: float | None = None
    pnl_percentage: float | None = None
    pnl_cost: float | None = None
    # Exchange fills recorded next to the signal prices (broker mode).
    fill_price_open: float | None = None
    fill_price_close: float | None = None
    # What the account holds for this signal (broker mode, SPEC §8), from fills and fees.
    amount: float | None = None          # base units held now, net of base-asset fees
    dust: float | None = None            # base units left behind that the venue cannot sell
    entry_filled: float | None = None    # base units the entry filled (gross)
    entry_cost: float | None = None      # quote paid (long) / received (short) by the entry
    exit_filled: float = 0.0             # base units the exits filled so far
    exit_cost: float = 0.0               # quote received (long) / paid (short) by the exits
    fees_quote: float = 0.0              # fees valued in quote (base fees at the fill price)
    fees_paid_quote: float = 0.0         # fees charged in the quote currency itself
    realised_pnl_cost: float | None = None
    realised_pnl_percentage: float | None = None
    stuck: bool = False                  # the venue keeps refusing the exit: operator needed
    exit_orders: int = 0                 # exit orders sent so far (each its own client id)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    def public(self) -> PublicSignal:
        return PublicSignal(
            id=self.id, position=self.position, price_open=self.price_open,
            price_take_profit=self.price_take_profit, price_stop_loss=self.price_stop_loss,
            minute_estimated_time=self.minute_estimated_time, note=self.note, cost=self.cost,
            scheduled_at=self.scheduled_at, pending_at=self.pending_at, symbol=self.symbol,
            strategy_name=self.strategy_name, exchange_name=self.exchange_name,
            amount=self.amount, dust=self.dust, realised_pnl_cost=self.realised_pnl_cost,
            realised_pnl_percentage=self.realised_pnl_percentage,
            fees_quote=self.fees_quote or None, stuck=self.stuck,
            orders=self.extra.get("orders"), **_position_counts(self.extra),
        )

    def evolve(self, **changes: Any) -> SignalRow:
        return replace(self, **changes)


def _position_counts(extra: dict[str, Any]) -> dict[str, Any]:
    stored = extra.get("position")
    if not isinstance(stored, dict):
        return {}
    from bkit.core import position as pos

    held = pos.position_from_dict(stored)
    return {"total_entries": pos.total_entries(held), "total_partials": pos.total_partials(held),
            "partial_executed": pos.partial_executed(held)}


def new_signal_id() -> str:
    """A fresh signal id: 32 hex characters, safe inside a client order id."""
    return uuid.uuid4().hex


def _shown(value: Any) -> str:
    """`repr(value)` for an error message. Never raises (an int past Python's 4300-digit
    int→str limit, a broken `__repr__`): junk from a strategy is a rejection, not a crash."""
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _raw_fields(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Signal):
        return {f: getattr(raw, f) for f in _SIGNAL_KEYS}
    if isinstance(raw, dict):
        return dict(raw)
    raise SignalValidationError(
        [f"get_signal must return None, a dict or a Signal, got {type(raw).__name__}"]
    )


def given_signal_id(raw: Any) -> str | None:
    """The id a strategy's answer names itself, if any (bkit makes one otherwise)."""
    if isinstance(raw, Signal):
        return raw.id
    if isinstance(raw, dict):
        given = raw.get("id")
        return given if isinstance(given, str) else None
    return None


def _price(name: str, value: Any, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{name} must be a number, got {_shown(value)}")
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        problems.append(f"{name} must be a finite number > 0, got a number too large for a float")
        return None
    if not math.isfinite(number) or number <= 0:
        problems.append(f"{name} must be a finite number > 0, got {_shown(value)}")
        return None
    return number


def validate_signal(raw: Any, *, symbol: str, current_price: float, config: Config,
                    signal_id: str | None = None) -> ValidSignal:
    """Check a strategy's signal against every rule of SPEC §3 and return it with defaults.

    All failures are collected into one `SignalValidationError` (its `reasons` list). Rules:
    position long/short; prices finite and > 0; long TP > open > SL, short TP < open < SL;
    TP distance ≥ CC_MIN_TAKEPROFIT_DISTANCE_PERCENT (skipped when 0); SL distance within
    [CC_MIN_STOPLOSS_DISTANCE_PERCENT, CC_MAX_STOPLOSS_DISTANCE_PERCENT]; minute_estimated_time
    a whole number in (0, CC_MAX_SIGNAL_LIFETIME_MINUTES]; an immediate entry not already past
    TP or SL at `current_price`; `symbol`, when given, equal to the running symbol.
    """
    data = _raw_fields(raw)
    problems: list[str] = []
    unknown = sorted(set(data) - _SIGNAL_KEYS, key=_shown)  # keys may be of mixed types
    if unknown:
        problems.append(f"unknown signal fields [{', '.join(map(_shown, unknown))}]")

    position = data.get("position")
    if position not in ("long", "short"):
        problems.append(f"position must be 'long' or 'short', got {_shown(position)}")
    if data.get("symbol") not in (None, symbol):
        problems.append(f"signal symbol {_shown(data.get('symbol'))} differs from running "
                        f"{symbol!r}")

    tp = _price("price_take_profit", data.get("price_take_profit"), problems)
    sl = _price("price_stop_loss", data.get("price_stop_loss"), problems)
    raw_open = data.get("price_open")
    scheduled = raw_open is not None
    price_open = _price("price_open", raw_open, problems) if scheduled else current_price
    if not (isinstance(current_price, float | int) and math.isfinite(current_price)
            and current_price > 0):
        problems.append(f"current price must be a finite number > 0, got {current_price!r}")

    minutes_raw = data.get("minute_estimated_time")
    minutes = config.CC_MAX_SIGNAL_LIFETIME_MINUTES if minutes_raw is None else minutes_raw
    if (isinstance(minutes, bool) or not isinstance(minutes, int | float)
            or (isinstance(minutes, float) and not math.isfinite(minutes))
            or minutes != int(minutes)):
        problems.append(f"minute_estimated_time must be a whole number, got {_shown(minutes_raw)}")
        minutes = None
    elif not 0 < minutes <= config.CC_MAX_SIGNAL_LIFETIME_MINUTES:
        problems.append(
            f"minute_estimated_time must be > 0 and <= "
            f"{config.CC_MAX_SIGNAL_LIFETIME_MINUTES}, got {_shown(minutes_raw)}"
        )
        minutes = None

    cost_raw = data.get("cost")
    cost = config.CC_POSITION_ENTRY_COST if cost_raw is None else _price("cost", cost_raw, problems)
    note = data.get("note")
    note = "" if note is None else note
    if not isinstance(note, str):
        problems.append(f"note must be a string, got {type(note).__name__}")
    elif "\x00" in note:  # PostgreSQL text cannot hold it: the write-back would fail
        problems.append("note must not contain NUL characters")
    given_id = data.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not _SIGNAL_ID.match(given_id)):
        problems.append(f"id must be 1-64 characters of [A-Za-z0-9_.:-], got {_shown(given_id)}")

    if position in ("long", "short") and tp is not None and sl is not None and price_open:
        sign = 1 if position == "long" else -1
        if not (sign * tp > sign * price_open > sign * sl):
            order = "take_profit > open > stop_loss" if sign == 1 else \
                "take_profit < open < stop_loss"
            problems.append(f"{position} needs {order}, got TP {tp}, open {price_open}, SL {sl}")
        else:
            tp_distance = abs(tp - price_open) / price_open * 100
            sl_distance = abs(sl - price_open) / price_open * 100
            min_tp = config.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT
            # _EPS: a TP computed as open × 1.005 is 0.4999999999999858 % away in floats.
            if min_tp > 0 and tp_distance < min_tp - _EPS:
                problems.append(f"take-profit distance {tp_distance:.4f}% < minimum {min_tp}%")
            if sl_distance < config.CC_MIN_STOPLOSS_DISTANCE_PERCENT - _EPS:
                problems.append(f"stop-loss distance {sl_distance:.4f}% < minimum "
                                f"{config.CC_MIN_STOPLOSS_DISTANCE_PERCENT}%")
            if sl_distance > config.CC_MAX_STOPLOSS_DISTANCE_PERCENT + _EPS:
                problems.append(f"stop-loss distance {sl_distance:.4f}% > maximum "
                                f"{config.CC_MAX_STOPLOSS_DISTANCE_PERCENT}%")
        # Rule 6: an immediate entry must not already be past TP or SL at the current price.
        crossed = scheduled and sign * current_price <= sign * price_open
        if (not scheduled or crossed) and math.isfinite(current_price):
            if sign * current_price >= sign * tp:
                problems.append(f"current price {current_price} is already past take-profit {tp}")
            if sign * current_price <= sign * sl:
                problems.append(f"current price {current_price} is already past stop-loss {sl}")

    if problems:
        raise SignalValidationError(problems)
    assert tp is not None and sl is not None and price_open is not None and minutes is not None
    assert cost is not None
    sign = 1 if position == "long" else -1
    immediate = not scheduled or sign * current_price <= sign * price_open
    return ValidSignal(
        id=given_id or signal_id or new_signal_id(),
        position=position,  # type: ignore[arg-type]
        price_open=float(price_open),
        price_take_profit=tp,
        price_stop_loss=sl,
        minute_estimated_time=int(minutes),
        note=note,
        cost=float(cost),
        immediate=immediate,
        cost_explicit=cost_raw is not None,
    )


def stored_row_problems(row: SignalRow) -> list[str]:
    """Why a stored live signal row cannot be traded (hand-edited or corrupted): non-finite or
    non-positive prices, TP/SL on the wrong side of the entry, a bad lifetime or cost, missing
    times. Empty when the row is sound."""
    problems = []
    prices = {"price_open": row.price_open, "price_take_profit": row.price_take_profit,
              "price_stop_loss": row.price_stop_loss, "cost": row.cost}
    for name, value in prices.items():
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            problems.append(f"{name} is {value!r}, not a finite number > 0")
    if row.position not in ("long", "short"):
        problems.append(f"position is {row.position!r}")
    elif not problems:
        sign = 1 if row.position == "long" else -1
        take_profit, stop_loss = row.price_take_profit, row.price_stop_loss
        stored = row.extra.get("position")
        if isinstance(stored, dict):  # levels moved by §11 commands: check the originals
            take_profit = stored.get("price_take_profit", take_profit)
            stop_loss = stored.get("price_stop_loss", stop_loss)
            if not sign * row.price_take_profit > sign * row.price_stop_loss:
                problems.append(f"{row.position} with effective TP {row.price_take_profit} "
                                f"and SL {row.price_stop_loss} is impossible")
        if not sign * take_profit > sign * row.price_open > sign * stop_loss:
            problems.append(f"{row.position} with TP {row.price_take_profit}, open "
                            f"{row.price_open}, SL {row.price_stop_loss} is impossible")
    if not isinstance(row.minute_estimated_time, int) or row.minute_estimated_time <= 0:
        problems.append(f"minute_estimated_time is {row.minute_estimated_time!r}")
    if row.state == "scheduled" and row.scheduled_at is None:
        problems.append("scheduled without scheduled_at")
    if row.state in ("opened", "closing") and row.pending_at is None:
        problems.append("open without pending_at")
    return problems

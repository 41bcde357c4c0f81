"""An open position's entries, partial closes and moved TP/SL, and the §11 commands on it. Pure.

SPEC §11. Units: prices in quote per base unit, costs (`cost`, `cost_basis`, `invested`,
remaining basis) in quote currency (USD), `percent`, `shift` and PnL in per cent.

`OpenPosition` is the immutable record the state machine keeps per live signal. The commands
(`partial_profit`, `partial_loss`, `trailing_stop`, `trailing_take`, `breakeven`, `average_buy`)
return the new `OpenPosition` when accepted or a `str` saying which rule refused them: bad user
input is never an exception. They raise `ValueError` only on programming errors (a tick price
that is not a positive finite number, an inconsistent record).

`effective_take_profit` / `effective_stop_loss` are the prices every §4 check must use: the
originals unless `trailing_take` / `trailing_stop` / `breakeven` moved them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from bkit.core.config import Config
from bkit.core.pnl import Pnl, pnl_for

PartialKind = Literal["profit", "loss"]
#: Remaining basis at or below this share of the invested cost counts as fully closed.
CLOSED_SHARE_EPSILON = 1e-9
#: Relative tolerance when asking whether a moved price is strictly better than the last one.
_PRICE_EPSILON = 1e-12


class Entry(NamedTuple):
    """One buy (long) or sell (short) into the position: `price` and `cost` (USD)."""

    price: float
    cost: float


class PartialClose(NamedTuple):
    """One partial close: `percent` (0–100] of the remaining basis `cost_basis` (USD) at the
    time, at `price`, after the first `entry_count` entries."""

    kind: PartialKind
    percent: float
    price: float
    cost_basis: float
    entry_count: int


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """An open position: side, original TP/SL, entries, partial closes and the moved TP/SL.

    `trailing_take_profit` / `trailing_stop_loss` are None until a command moves them
    (`breakeven` sets `trailing_stop_loss` too). Prices > 0, costs > 0 (USD).
    """

    position: str
    price_take_profit: float
    price_stop_loss: float
    entries: tuple[Entry, ...]
    partials: tuple[PartialClose, ...] = ()
    trailing_take_profit: float | None = None
    trailing_stop_loss: float | None = None

    def __post_init__(self) -> None:
        if self.position not in ("long", "short"):
            raise ValueError(f"position must be 'long' or 'short', got {self.position!r}")
        if not self.entries:
            raise ValueError("a position needs at least one entry")
        for price in (
            self.price_take_profit,
            self.price_stop_loss,
            *(p for p in (self.trailing_take_profit, self.trailing_stop_loss) if p is not None),
        ):
            _require_price(price, "TP/SL price")
        for entry in self.entries:
            _require_price(entry.price, "entry price")
            _require_price(entry.cost, "entry cost")
        previous_count = 1
        for partial in self.partials:
            if partial.kind not in ("profit", "loss"):
                raise ValueError(f"partial kind must be 'profit' or 'loss', got {partial.kind!r}")
            if not 0 < partial.percent <= 100:
                raise ValueError(f"partial percent must be in (0, 100], got {partial.percent!r}")
            _require_price(partial.price, "partial price")
            if not (math.isfinite(partial.cost_basis) and partial.cost_basis >= 0):
                raise ValueError(f"partial cost_basis must be ≥ 0, got {partial.cost_basis!r}")
            if not previous_count <= partial.entry_count <= len(self.entries):
                raise ValueError(
                    f"partial entry_count {partial.entry_count} must be in "
                    f"[{previous_count}, {len(self.entries)}] (non-decreasing)"
                )
            previous_count = partial.entry_count

    @classmethod
    def opened(
        cls,
        position: str,
        price_open: float,
        cost: float,
        price_take_profit: float,
        price_stop_loss: float,
    ) -> OpenPosition:
        """A freshly opened position: one entry of `cost` USD at `price_open`."""
        return cls(position, price_take_profit, price_stop_loss, (Entry(price_open, cost),))

    @property
    def invested(self) -> float:
        """Σ cost of all entries (USD)."""
        return math.fsum(entry.cost for entry in self.entries)

    @property
    def effective_take_profit(self) -> float:
        """The TP every §4 check uses: the trailing one when set, else the original."""
        if self.trailing_take_profit is not None:
            return self.trailing_take_profit
        return self.price_take_profit

    @property
    def effective_stop_loss(self) -> float:
        """The SL every §4 check uses: the trailing/breakeven one when set, else the original."""
        if self.trailing_stop_loss is not None:
            return self.trailing_stop_loss
        return self.price_stop_loss

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for `SignalRow.extra`); `position_from_dict` reads it back."""
        return {
            "position": self.position,
            "price_take_profit": self.price_take_profit,
            "price_stop_loss": self.price_stop_loss,
            "entries": [[e.price, e.cost] for e in self.entries],
            "partials": [
                [p.kind, p.percent, p.price, p.cost_basis, p.entry_count] for p in self.partials
            ],
            "trailing_take_profit": self.trailing_take_profit,
            "trailing_stop_loss": self.trailing_stop_loss,
        }


def position_from_dict(data: dict[str, Any]) -> OpenPosition:
    """The inverse of `OpenPosition.as_dict`. Raises `ValueError`/`KeyError` on a bad record."""
    return OpenPosition(
        position=data["position"],
        price_take_profit=float(data["price_take_profit"]),
        price_stop_loss=float(data["price_stop_loss"]),
        entries=tuple(Entry(float(p), float(c)) for p, c in data["entries"]),
        partials=tuple(
            PartialClose(k, float(pct), float(p), float(cb), int(n))
            for k, pct, p, cb, n in data.get("partials", ())
        ),
        trailing_take_profit=_optional_float(data.get("trailing_take_profit")),
        trailing_stop_loss=_optional_float(data.get("trailing_stop_loss")),
    )


# --- effective entry, basis, counts -------------------------------------------------------


def _coins(entries: tuple[Entry, ...]) -> float:
    return math.fsum(entry.cost / entry.price for entry in entries)


def _walk(position: OpenPosition) -> tuple[list[float], float, float]:
    """Walk the partials in order (§11): the effective entry at each partial, the final
    effective entry, and the final remaining basis (USD)."""
    entries, partials = position.entries, position.partials
    if not partials:
        if len(entries) == 1:  # exactly the entry price, so §5 and §11 agree bit for bit
            return [], entries[0].price, entries[0].cost
        return [], position.invested / _coins(entries), position.invested
    at_partial = [partials[0].cost_basis / _coins(entries[: partials[0].entry_count])]
    for j in range(1, len(partials) + 1):
        before = partials[j - 1]
        added = entries[before.entry_count : partials[j].entry_count if j < len(partials) else None]
        remaining = before.cost_basis * (1 - before.percent / 100)
        coins = remaining / at_partial[-1] + _coins(added)
        basis = remaining + math.fsum(entry.cost for entry in added)
        # Everything closed and nothing added since: the entry stays what it was.
        effective = basis / coins if coins > 0 else at_partial[-1]
        if j < len(partials):
            at_partial.append(effective)
        else:
            return at_partial, effective, basis
    raise AssertionError("unreachable")


def effective_entry(position: OpenPosition) -> float:
    """The effective entry price `e` of SPEC §11.

    No partials: the cost-weighted harmonic mean `Σcost / Σ(cost/price)` (one entry: its
    price). With partials: `eff_0 = cb_0 / Σ(cost/price of the entries before partial 0)`;
    for j ≥ 1 `remCB = cb_{j−1} × (1 − pct_{j−1}/100)`, `coins = remCB / eff_{j−1} +
    Σ(cost/price of entries added between)`, `eff_j = (remCB + their cost) / coins`; the final
    `e` blends the last remaining basis with the entries added after it the same way.
    """
    return _walk(position)[1]


def remaining_basis(position: OpenPosition) -> float:
    """The cost basis still open (USD): the last partial's `cb × (1 − pct/100)` plus the cost
    of the entries added after it; `invested` when there is no partial."""
    return _walk(position)[2]


def closed_cost(position: OpenPosition) -> float:
    """Σ `pct_i/100 × cb_i` over the partials: the cost basis closed so far (USD)."""
    return math.fsum(p.percent / 100 * p.cost_basis for p in position.partials)


def total_partials(position: OpenPosition) -> int:
    """Number of partial closes so far."""
    return len(position.partials)


def total_entries(position: OpenPosition) -> int:
    """Number of entries (1 + DCA buys)."""
    return len(position.entries)


def partial_executed(position: OpenPosition) -> float:
    """Share of the invested cost closed by partials, in % (0–100)."""
    return closed_cost(position) / position.invested * 100


def fully_closed(position: OpenPosition) -> bool:
    """True when the remaining basis is ~0 (≤ 1e-9 of invested): close next tick (§11)."""
    return remaining_basis(position) <= CLOSED_SHARE_EPSILON * position.invested


# --- PnL ----------------------------------------------------------------------------------


def pnl_with_partials(position: OpenPosition, close_price: float, config: Config) -> Pnl:
    """PnL of the whole position closed at `close_price` (SPEC §11), slippage and fee of §5.

    `invested = Σcost`; partial i closes `dollar_i = pct_i/100 × cb_i`, weight `w_i =
    dollar_i / invested`, at its price from the effective entry at that time; the rest,
    `w_rem = (invested − Σdollar)/invested`, closes at `close_price` from the final `e`.
    SPEC writes `weighted − fees` with `weighted = Σ w_i × gross_i` and `fees = f + Σ f × w_i ×
    closeAdj_i/openAdj_i`; since Σw = 1 that is `Σ w_i × (gross_i − f × (1 + closeAdj_i /
    openAdj_i))` = Σ w_i × the §5 pnl of each leg, computed here with `bkit.core.pnl` so one
    entry and no partial gives exactly the §5 result.

    Returns `Pnl(pnl_percentage %, pnl_cost = pnl_percentage/100 × invested USD,
    price_open = final e, price_close = close_price)`.
    """
    _require_price(close_price, "close price")
    invested = position.invested
    at_partial, final_entry, _ = _walk(position)
    if not position.partials:
        return pnl_for(position.position, final_entry, close_price, invested, config)
    legs: list[float] = []
    for partial, entry_price in zip(position.partials, at_partial, strict=True):
        weight = partial.percent / 100 * partial.cost_basis / invested
        leg = pnl_for(position.position, entry_price, partial.price, invested, config)
        legs.append(weight * leg.pnl_percentage)
    remaining_weight = (invested - closed_cost(position)) / invested
    last = pnl_for(position.position, final_entry, close_price, invested, config)
    legs.append(remaining_weight * last.pnl_percentage)
    pnl_percentage = math.fsum(legs)
    return Pnl(pnl_percentage, pnl_percentage / 100 * invested, final_entry, close_price)


# --- commands -----------------------------------------------------------------------------


def partial_profit(position: OpenPosition, percent: float, price: float) -> OpenPosition | str:
    """Close `percent` (0 < p ≤ 100) of the remaining basis at `price`, in profit.

    Refused unless the price is on the profit side of `e` (long `P > e`, short `P < e`), when
    it has crossed the effective TP (long `P ≥ TP`, short `P ≤ TP`), or when the total closed
    would exceed the total invested.
    """
    return _partial(position, "profit", percent, price)


def partial_loss(position: OpenPosition, percent: float, price: float) -> OpenPosition | str:
    """Close `percent` (0 < p ≤ 100) of the remaining basis at `price`, at a loss.

    Refused unless the price is on the loss side of `e` (long `P < e`, short `P > e`), when it
    has crossed the effective SL (long `P ≤ SL`, short `P ≥ SL`), or when the total closed
    would exceed the total invested.
    """
    return _partial(position, "loss", percent, price)


def _partial(
    position: OpenPosition, kind: PartialKind, percent: float, price: float
) -> OpenPosition | str:
    _require_price(price, "price")
    name = f"partial {kind}"
    if not _is_number(percent) or not 0 < percent <= 100:
        return f"{name} refused: percent must be a number with 0 < percent ≤ 100, got {percent!r}"
    long = position.position == "long"
    entry = effective_entry(position)
    in_profit = price > entry if long else price < entry
    in_loss = price < entry if long else price > entry
    if kind == "profit" and not in_profit:
        side = "above" if long else "below"
        return (
            f"{name} refused: price {price:g} is not {side} the effective entry "
            f"{entry:g} ({position.position})"
        )
    if kind == "loss" and not in_loss:
        side = "below" if long else "above"
        return (
            f"{name} refused: price {price:g} is not {side} the effective entry "
            f"{entry:g} ({position.position})"
        )
    if kind == "profit":
        take_profit = position.effective_take_profit
        if (price >= take_profit) if long else (price <= take_profit):
            return f"{name} refused: price {price:g} has crossed the take profit {take_profit:g}"
    else:
        stop_loss = position.effective_stop_loss
        if (price <= stop_loss) if long else (price >= stop_loss):
            return f"{name} refused: price {price:g} has crossed the stop loss {stop_loss:g}"
    basis = remaining_basis(position)
    invested = position.invested
    if basis <= CLOSED_SHARE_EPSILON * invested:
        return f"{name} refused: nothing left to close (remaining basis {basis:g} USD)"
    closing = percent / 100 * basis
    already = closed_cost(position)
    if already + closing > invested * (1 + CLOSED_SHARE_EPSILON):
        return (
            f"{name} refused: closing {closing:g} USD would bring the total closed to "
            f"{already + closing:g} USD, above the {invested:g} USD invested"
        )
    record = PartialClose(kind, float(percent), price, basis, len(position.entries))
    return replace(position, partials=(*position.partials, record))


def trailing_stop(position: OpenPosition, shift: float, price: float) -> OpenPosition | str:
    """Move the SL by `shift` percentage points of distance (−100 ≤ shift ≤ 100, ≠ 0).

    `d0 = |e − SL₀| / e × 100` (SL₀ the original SL, e the effective entry now); new SL =
    `e × (1 − (d0 + shift)/100)` (long) or `e × (1 + (d0 + shift)/100)` (short): a negative
    shift tightens. The first move sets it (from the original); once the SL has been moved
    (by a trailing stop or breakeven) a new one is accepted only if better (long higher,
    short lower). Refused if the price has already crossed the new SL (long `P ≤ SL`, short
    `P ≥ SL`), if the new SL would reach the effective TP, or if it would be ≤ 0.
    Example (long, e = 100, SL 90): −5 → 95; then −3 → refused (93); then −7 → 97.
    """
    return _trail(position, shift, price, stop=True)


def trailing_take(position: OpenPosition, shift: float, price: float) -> OpenPosition | str:
    """Move the TP by `shift` percentage points of distance (−100 ≤ shift ≤ 100, ≠ 0).

    `dTP0 = |TP₀ − e| / e × 100`; new TP = `e × (1 + (dTP0 + shift)/100)` (long) or
    `e × (1 − (dTP0 + shift)/100)` (short): a negative shift brings it closer. The first move
    sets it; later ones are accepted only if more conservative (long lower, short higher).
    Refused if the price has already crossed the new TP (long `P ≥ TP`, short `P ≤ TP`), if
    the new TP would reach the effective SL, or if it would be ≤ 0.
    """
    return _trail(position, shift, price, stop=False)


def _trail(position: OpenPosition, shift: float, price: float, *, stop: bool) -> OpenPosition | str:
    """The rule both trailing commands share, for the SL (`stop`) or the TP.

    A level that sits above `e` (a long's TP, a short's SL) moves to `e × (1 + (d + shift)/100)`,
    one below `e` to `e × (1 − (d + shift)/100)`; either way "better" is towards `e`, "crossed"
    is the price at or beyond it, and it must not reach the other level.
    """
    _require_price(price, "price")
    name, level = ("trailing stop", "stop loss") if stop else ("trailing take", "take profit")
    problem = _shift_problem(name, shift)
    if problem:
        return problem
    above = (position.position == "long") != stop
    sign = 1 if above else -1
    entry = effective_entry(position)
    original = position.price_stop_loss if stop else position.price_take_profit
    distance = abs(entry - original) / entry * 100
    new = entry * (1 + sign * (distance + shift) / 100)
    if new <= 0:
        return f"{name} refused: shift {shift:g} puts the {level} at {new:g} (≤ 0)"
    current = position.trailing_stop_loss if stop else position.trailing_take_profit
    if current is not None and not _improves(new, current, higher=not above):
        direction = "lower" if above else "higher"
        return (
            f"{name} refused: new {level} {new:g} is not {direction} than the current {current:g}"
        )
    if (price >= new) if above else (price <= new):
        return f"{name} refused: price {price:g} has already crossed the new {level} {new:g}"
    other_name = "take profit" if stop else "stop loss"
    other = position.effective_take_profit if stop else position.effective_stop_loss
    if (new <= other) if above else (new >= other):
        return f"{name} refused: new {level} {new:g} would reach the {other_name} {other:g}"
    if stop:
        return replace(position, trailing_stop_loss=new)
    return replace(position, trailing_take_profit=new)


def breakeven_move(position: OpenPosition, price: float) -> float:
    """How far `price` has moved from `e` in the position's favour, in % (negative: against)."""
    entry = effective_entry(position)
    move = (price - entry) / entry * 100
    return move if position.position == "long" else -move


def breakeven(
    position: OpenPosition, price: float, config: Config, *, threshold_reached: bool = False
) -> OpenPosition | str:
    """Move the SL to `e` (SPEC §11).

    Accepted when the price has moved `config.breakeven_move_percent` (0.6 %) in favour of
    `e` — now, or earlier if `threshold_reached` (the §9 breakeven milestone already fired) —
    and has not fallen back through `e` (long `P > e`, short `P < e`). Refused when the SL is
    already at or beyond `e` in profit (a trailing SL in profit is kept, not moved back) or
    when `e` would reach the effective TP.
    """
    _require_price(price, "price")
    name = "breakeven"
    long = position.position == "long"
    entry = effective_entry(position)
    if not ((price > entry) if long else (price < entry)):
        return (
            f"{name} refused: price {price:g} is not in profit against the effective "
            f"entry {entry:g}"
        )
    threshold = config.breakeven_move_percent
    if not threshold_reached and breakeven_move(position, price) < threshold - 1e-12:
        return (
            f"{name} refused: price {price:g} has moved "
            f"{breakeven_move(position, price):.6g} % from the effective entry {entry:g}, "
            f"below the {threshold:g} % threshold"
        )
    stop_loss = position.effective_stop_loss
    if (stop_loss >= entry) if long else (stop_loss <= entry):
        return (
            f"{name} refused: the stop loss {stop_loss:g} is already at or beyond the "
            f"effective entry {entry:g}; kept"
        )
    take_profit = position.effective_take_profit
    if (entry >= take_profit) if long else (entry <= take_profit):
        return (
            f"{name} refused: the effective entry {entry:g} would reach the take profit "
            f"{take_profit:g}"
        )
    return replace(position, trailing_stop_loss=entry)


def average_buy(position: OpenPosition, cost: float, price: float) -> OpenPosition | str:
    """Add an entry of `cost` USD at `price` (DCA). TP and SL prices do not change.

    Long needs `P < min(entry prices)`, short `P > max(entry prices)`. Also refused when the
    price has crossed the effective SL (the tick would close the position at SL anyway) or
    `cost` is not a positive finite number.
    """
    _require_price(price, "price")
    name = "average buy"
    if not _is_number(cost) or cost <= 0:
        return f"{name} refused: cost must be a positive number (USD), got {cost!r}"
    long = position.position == "long"
    prices = [entry.price for entry in position.entries]
    if long and not price < min(prices):
        return f"{name} refused: price {price:g} is not below the lowest entry {min(prices):g}"
    if not long and not price > max(prices):
        return f"{name} refused: price {price:g} is not above the highest entry {max(prices):g}"
    stop_loss = position.effective_stop_loss
    if (price <= stop_loss) if long else (price >= stop_loss):
        return f"{name} refused: price {price:g} has crossed the stop loss {stop_loss:g}"
    return replace(position, entries=(*position.entries, Entry(price, float(cost))))


def record_partial(position: OpenPosition, kind: PartialKind, percent: float,
                   price: float) -> OpenPosition:
    """Record a partial close the venue already made (broker mode, SPEC §8 + §11): `percent`
    (0 < p ≤ 100, of the remaining basis) is the share of the held amount that really filled
    and `price` its real average fill price. No market rule is checked again: the command
    passed them at its tick, and a fill is a fact, whatever the price did since.
    Raises `ValueError` on a percent outside (0, 100] or a bad price (programming errors)."""
    _require_price(price, "partial fill price")
    if not _is_number(percent) or not 0 < percent <= 100:
        raise ValueError(f"partial percent must be in (0, 100], got {percent!r}")
    record = PartialClose(kind, float(percent), price, remaining_basis(position),
                          len(position.entries))
    return replace(position, partials=(*position.partials, record))


def record_entry(position: OpenPosition, price: float, cost: float) -> OpenPosition:
    """Record a DCA buy the venue already filled: an entry of `cost` (quote units, what was
    really paid) at `price` (the real average fill price). TP and SL do not change."""
    _require_price(price, "entry fill price")
    _require_price(cost, "entry fill cost")
    return replace(position, entries=(*position.entries, Entry(price, float(cost))))


# --- helpers ------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require_price(value: float, what: str) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _shift_problem(name: str, shift: float) -> str | None:
    if not _is_number(shift) or not -100 <= shift <= 100 or shift == 0:
        return (
            f"{name} refused: shift must be a number with −100 ≤ shift ≤ 100 and ≠ 0, got {shift!r}"
        )
    return None


def _improves(new: float, current: float, *, higher: bool) -> bool:
    """Strictly better beyond float noise: higher (or lower) than `current`."""
    tolerance = _PRICE_EPSILON * abs(current)
    return new > current + tolerance if higher else new < current - tolerance

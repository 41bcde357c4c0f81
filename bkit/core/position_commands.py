"""Position commands on an open signal (SPEC §11), applied by the tick under the key's lock:
partial profit / loss, trailing stop / take, breakeven, average buy (DCA). Pure.

The position's entries, partial closes and moved levels live in the signal row's extras
(`extra["position"]`, `bkit.core.position.OpenPosition.as_dict`); the row's
`price_take_profit` / `price_stop_loss` carry the *effective* levels, so every check of §4
(and the backtest's) uses them unchanged, and the public signal shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bkit.core.config import Config
from bkit.core.pnl import Pnl
from bkit.core.position import (
    OpenPosition,
    PartialKind,
    average_buy,
    breakeven,
    fully_closed,
    partial_executed,
    partial_loss,
    partial_profit,
    pnl_with_partials,
    position_from_dict,
    record_entry,
    record_partial,
    total_entries,
    total_partials,
    trailing_stop,
    trailing_take,
)
from bkit.core.signals import SignalRow

COMMANDS = ("partial_profit", "partial_loss", "trailing_stop", "trailing_take", "breakeven",
            "average_buy")
#: Commands that become an order on the venue with a broker (SPEC §11): a partial sell
#: (buy-to-cover for a short) and a DCA buy (sell for a short).
ORDER_COMMANDS = {"partial_profit": "partial", "partial_loss": "partial", "average_buy": "dca"}
#: Commands that move the stop-loss, so the exchange-side stop too (SPEC §10).
STOP_COMMANDS = frozenset({"trailing_stop", "breakeven"})


@dataclass(frozen=True, slots=True)
class PositionCommand:
    """A queued command: its id (for the write-back), name and argument (percent, shift in
    percentage points, or the DCA cost; None for breakeven)."""

    id: int
    name: str
    value: float | None = None


def position_of(row: SignalRow) -> OpenPosition:
    """The row's position state (one entry at the signal's price and cost until a command
    changed it)."""
    stored = row.extra.get("position")
    if isinstance(stored, dict):
        return position_from_dict(stored)
    return OpenPosition.opened(row.position, row.price_open, row.cost, row.price_take_profit,
                               row.price_stop_loss)


def with_position(row: SignalRow, position: OpenPosition) -> SignalRow:
    """The row with `position` stored and its effective levels in the price fields."""
    return row.evolve(price_take_profit=position.effective_take_profit,
                      price_stop_loss=position.effective_stop_loss,
                      extra={**row.extra, "position": position.as_dict()})


def apply_command(row: SignalRow, command: PositionCommand, price: float,
                  config: Config) -> SignalRow | str:
    """The row after `command` at the tick's `price`, or why it is refused."""
    if row.state != "opened":
        return f"{command.name} refused: the signal is {row.state}, not an open position"
    position = position_of(row)
    value = command.value
    result: OpenPosition | str
    if command.name == "partial_profit":
        result = partial_profit(position, _number(value), price)
    elif command.name == "partial_loss":
        result = partial_loss(position, _number(value), price)
    elif command.name == "trailing_stop":
        result = trailing_stop(position, _number(value), price)
    elif command.name == "trailing_take":
        result = trailing_take(position, _number(value), price)
    elif command.name == "breakeven":
        result = breakeven(position, price, config, threshold_reached=row.breakeven_fired)
    elif command.name == "average_buy":
        result = average_buy(position, config.CC_POSITION_ENTRY_COST if value is None
                             else _number(value), price)
    else:
        return f"unknown position command {command.name!r} (one of {', '.join(COMMANDS)})"
    if isinstance(result, str):
        return result
    return with_position(row, result)


def _number(value: Any) -> float:
    return float("nan") if value is None else value  # position.py refuses a NaN clearly


def has_position_state(row: SignalRow) -> bool:
    return isinstance(row.extra.get("position"), dict)


def closed_by_partials(row: SignalRow) -> bool:
    """Partial closes took the whole cost basis: the position closes (reason `closed`)."""
    return has_position_state(row) and fully_closed(position_of(row))


def position_pnl(row: SignalRow, close_price: float, config: Config) -> Pnl:
    """§11 PnL of a position with partials and DCA entries (§5 when it has neither)."""
    return pnl_with_partials(position_of(row), close_price, config)


def position_summary(row: SignalRow) -> dict[str, float | int]:
    """`total_entries`, `total_partials`, `partial_executed` (%) for the public signal."""
    position = position_of(row)
    return {"total_entries": total_entries(position),
            "total_partials": total_partials(position),
            "partial_executed": partial_executed(position)}


def command_in_flight(row: SignalRow) -> dict[str, Any] | None:
    """The position command whose order is on its way to the venue (broker mode), as stored
    on the row by the tick that accepted it: `id`, `name`, `value`, `price` (the tick's)."""
    stored = row.extra.get("command")
    return stored if isinstance(stored, dict) else None


def with_command(row: SignalRow, command: PositionCommand, price: float) -> SignalRow:
    """The row waiting for the order of `command` (accepted at the tick's `price`): nothing
    of the position changes until the venue confirms a fill."""
    return row.evolve(order_in_flight=True, extra={**row.extra, "command": {
        "id": command.id, "name": command.name, "value": command.value, "price": price}})


def without_command(row: SignalRow) -> SignalRow:
    """The row once its command's order is final (filled, refused or superseded)."""
    extra = {k: v for k, v in row.extra.items() if k != "command"}
    return row.evolve(order_in_flight=False, extra=extra)


def partial_filled(row: SignalRow, name: str, filled: float, held: float,
                   average: float) -> SignalRow:
    """The §11 bookkeeping of a partial the venue filled: `filled` of the `held` base units
    (contracts on futures) sold at the real `average` price, so the partial's percent of the
    remaining basis is `filled / held × 100` (capped at 100)."""
    kind: PartialKind = "loss" if name == "partial_loss" else "profit"
    percent = min(100.0, filled / held * 100) if held > 0 else 100.0
    return with_position(row, record_partial(position_of(row), kind, percent, average))


def entry_filled(row: SignalRow, cost: float, average: float) -> SignalRow:
    """The §11 bookkeeping of a DCA the venue filled: an entry of the real quote `cost` at
    the real `average` price."""
    return with_position(row, record_entry(position_of(row), average, cost))

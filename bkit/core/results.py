"""Tick results (SPEC §4) and the notices a tick produces. Pure data, JSON round-trippable."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from bkit.core.pnl import Pnl
from bkit.core.signals import PublicSignal

Action = Literal["idle", "scheduled", "waiting", "opened", "active", "closed", "cancelled"]
#: Actions that `Live.run` yields.
RUN_ACTIONS: frozenset[str] = frozenset({"opened", "closed", "cancelled"})


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did. `action` is the discriminator; unused fields stay None.

    `current_price` is the VWAP of the tick, the entry price for `opened` and the close price
    for `closed`. `pnl` is unrealised for `active`, realised for `closed`.
    """

    action: str
    symbol: str
    strategy_name: str
    exchange_name: str
    current_price: float
    created_at: datetime
    signal: PublicSignal | None = None
    percent_tp: float | None = None
    percent_sl: float | None = None
    pnl: Pnl | None = None
    close_reason: str | None = None
    close_timestamp: datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TickResult:
        signal = data.get("signal")
        pnl = data.get("pnl")
        return TickResult(
            action=data["action"], symbol=data["symbol"], strategy_name=data["strategy_name"],
            exchange_name=data["exchange_name"], current_price=data["current_price"],
            created_at=datetime.fromisoformat(data["created_at"])
            if isinstance(data["created_at"], str) else data["created_at"],
            signal=None if signal is None else PublicSignal(**{
                **signal, "scheduled_at": _dt(signal.get("scheduled_at")),
                "pending_at": _dt(signal.get("pending_at"))}),
            percent_tp=data.get("percent_tp"), percent_sl=data.get("percent_sl"),
            pnl=None if pnl is None else Pnl(**pnl),
            close_reason=data.get("close_reason"),
            close_timestamp=_dt(data.get("close_timestamp")), reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """A side event of a tick for the event log and listeners: `error`, `risk`,
    `partial_profit`, `partial_loss`, `breakeven`, `exit`, `done`."""

    kind: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallbackCall:
    """A strategy callback to run after the tick's state is safely stored."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order the broker must send for a signal (written to the outbox with the state).
    `partial` (a partial exit) and `dca` (an added entry) carry a position command
    (SPEC §11); the orders worker sizes them, like exits and stops, when it sends them.
    `cost` in quote units (the DCA's cost; the signal's cost otherwise)."""

    kind: Literal["open", "close", "stop", "partial", "dca"]
    signal_id: str
    symbol: str
    side: Literal["buy", "sell"]
    position: str
    price: float
    cost: float


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """`_jsonable(dataclasses.asdict(value))` in one pass, without asdict's deep copies (a
    result is made into a dict for every event and listener)."""
    if isinstance(value, datetime):
        return value.isoformat()
    kind = type(value)
    names = _FIELD_NAMES.get(kind)
    if names is None and hasattr(kind, "__dataclass_fields__"):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """`value` with datetimes turned into ISO strings, ready for `json.dumps`."""
    return _jsonable(value)

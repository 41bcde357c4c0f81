"""SQLModel tables: keys, signals (live and history), risk slots, events, the order outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Index,
    Integer,
    SmallInteger,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from bkit.store.types import JSONText, UTCDateTime

LIVE_STATES_SQL = "state IN ('scheduled','opening','opened','closing')"
#: The `event` columns only a tick result's report row fills (NULL in other events).
REPORT_ONLY_COLUMNS = ("position", "price_open", "price_take_profit", "price_stop_loss",
                       "pnl_percentage", "reason")
#: The `event` columns a report row reads (`bkit.store.event_log.report_rows_query`), in the
#: order of `bkit.core.statistics.ReportRow`'s fields.
REPORT_ROW_COLUMNS = ("created_at", "action", "symbol", "signal_id", *REPORT_ONLY_COLUMNS)


def _dt(**kw: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, **kw)


class StrategySymbol(SQLModel, table=True):
    """One key: strategy × exchange × symbol. `status`: enabled | draining | paused | disabled.

    `last_bucket` is the last tick minute (epoch minutes) claimed; `lease_*` fence the worker
    that holds the key between claim and write-back.
    """

    __tablename__ = "strategy_symbol"
    __table_args__ = (UniqueConstraint("strategy_name", "exchange_name", "symbol",
                                       name="uq_strategy_symbol_key"),
                      Index("ix_strategy_symbol_status", "status"))

    id: int | None = Field(default=None, primary_key=True)
    strategy_name: str = Field(max_length=64)
    exchange_name: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    status: str = Field(default="enabled", max_length=16)
    last_bucket: int = Field(default=-1, sa_type=BigInteger)
    lease_owner: str | None = Field(default=None, max_length=96)
    lease_until: datetime | None = _dt()
    lease_version: int = 0
    signal_window: int | None = Field(default=None, sa_type=BigInteger)
    command: str | None = Field(default=None, max_length=32)
    last_tick_at: datetime | None = _dt()
    last_tick_lag_ms: float | None = None
    last_error_at: datetime | None = _dt()
    created_at: datetime | None = _dt()
    updated_at: datetime | None = _dt()
    # Counters and the last result, kept on the key so that metrics and status read one row
    # per key however long bkit has run (SPEC §13).
    ticks_total: int = Field(default=0, sa_type=BigInteger)
    first_tick_at: datetime | None = _dt()
    ticks_failed: int = Field(default=0, sa_type=BigInteger)
    errors_total: int = Field(default=0, sa_type=BigInteger)
    last_action: str | None = Field(default=None, max_length=16)
    last_price: float | None = None
    last_error_message: str | None = None
    # Closed-trade totals (updated when a trade closes), for `bkit status`, the dashboard and
    # `Live.get_data`: the fields of `bkit.core.running_statistics.RunningStatistics`, mapped in
    # `bkit.store.closed_trades` (percentage points; %² for the M2).
    closed_total: int = 0
    closed_wins: int = 0
    closed_losses: int = 0
    closed_pnl_total: float = 0.0  # plain running sum of pnl_percentage, %
    closed_pnl_error: float = 0.0  # what that sum lost to rounding (compensated sum)
    closed_pnl_mean: float = 0.0  # Welford's running mean …
    closed_pnl_m2: float = 0.0  # … and sum of squared deviations, %²
    closed_win_sum: float = 0.0
    closed_loss_sum: float = 0.0
    closed_equity_peak: float = 0.0  # running peak of the cumulative pnl (from 0)
    closed_max_drawdown: float = 0.0
    closed_first_opened_at: datetime | None = _dt()
    closed_last_at: datetime | None = _dt()
    closed_realised_total: float | None = None  # sum of realised_pnl_cost (broker mode), quote


class SignalRecord(SQLModel, table=True):
    """One signal ever made. Terminal rows (closed, cancelled) stay as the trade history.
    A partial unique index allows at most one live signal per key."""

    __tablename__ = "signal"
    __table_args__ = (
        UniqueConstraint("key_id", "signal_id", name="uq_signal_key_signal_id"),
        Index("uq_signal_one_live_per_key", "key_id", unique=True,
              postgresql_where=text(LIVE_STATES_SQL), sqlite_where=text(LIVE_STATES_SQL)),
        Index("ix_signal_key_state", "key_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key_id: int = Field(foreign_key="strategy_symbol.id")
    signal_id: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    strategy_name: str = Field(max_length=64)
    exchange_name: str = Field(max_length=64)
    position: str = Field(max_length=8)
    state: str = Field(max_length=16)
    price_open: float
    price_take_profit: float
    price_stop_loss: float
    minute_estimated_time: int
    note: str = ""
    cost: float
    created_at: datetime = Field(sa_type=UTCDateTime)
    scheduled_at: datetime | None = _dt()
    pending_at: datetime | None = _dt()
    partial_profit_level: int = 0
    partial_loss_level: int = 0
    breakeven_fired: bool = False
    pending_close_reason: str | None = None
    pending_close_price: float | None = None
    close_rejections: int = 0
    order_in_flight: bool = False
    close_reason: str | None = None
    cancel_reason: str | None = None
    closed_at: datetime | None = _dt()
    price_close: float | None = None
    pnl_percentage: float | None = None
    pnl_cost: float | None = None
    fill_price_open: float | None = None
    fill_price_close: float | None = None
    # Broker mode (SPEC §8): what the account holds for the signal, from fills and fees.
    amount: float | None = None
    dust: float | None = None
    entry_filled: float | None = None
    entry_cost: float | None = None
    exit_filled: float = 0.0
    exit_cost: float = 0.0
    fees_quote: float = 0.0
    fees_paid_quote: float = 0.0
    realised_pnl_cost: float | None = None
    realised_pnl_percentage: float | None = None
    stuck: bool = False
    exit_orders: int = 0
    extra: dict[str, Any] | None = Field(default=None, sa_type=JSONText)
    updated_at: datetime | None = _dt()


class RiskBudget(SQLModel, table=True):
    """One row per risk profile: the lock that serialises slot counting across workers."""

    __tablename__ = "risk_budget"

    risk_name: str = Field(primary_key=True, max_length=64)
    version: int = 0


class RiskSlot(SQLModel, table=True):
    """A position or scheduled entry holding a place in a risk profile's budget."""

    __tablename__ = "risk_slot"
    __table_args__ = (UniqueConstraint("risk_name", "signal_id", name="uq_risk_slot_signal"),)

    id: int | None = Field(default=None, primary_key=True)
    risk_name: str = Field(max_length=64, index=True)
    key_id: int = Field(foreign_key="strategy_symbol.id")
    signal_id: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    strategy_name: str = Field(max_length=64)
    exchange_name: str = Field(max_length=64)
    acquired_at: datetime | None = _dt()


class EventRecord(SQLModel, table=True):
    """Append-only log of tick results, notices and admin actions, ordered by id. The source
    of `Live.run`, of listeners in other processes, of reports and statistics."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_key_id_id", "key_id", "id"),
                      Index("ix_event_kind_id", "kind", "id"),
                      # the newest N transitions of a key (reports), whatever other keys did;
                      # on PostgreSQL only `signal` events, with the report columns: read from
                      # the index alone
                      Index("ix_event_key_kind_id", "key_id", "kind", "id",
                            postgresql_include=list(REPORT_ROW_COLUMNS),
                            postgresql_where=text("kind = 'signal'")))

    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    key_id: int | None = Field(default=None, index=False)
    kind: str = Field(max_length=24)
    action: str | None = Field(default=None, max_length=16)
    symbol: str | None = Field(default=None, max_length=64)
    strategy_name: str | None = Field(default=None, max_length=64)
    exchange_name: str | None = Field(default=None, max_length=64)
    signal_id: str | None = Field(default=None, max_length=64)
    message: str = ""
    origin: str | None = Field(default=None, max_length=96)
    created_at: datetime = Field(sa_type=UTCDateTime)
    payload: dict[str, Any] | None = Field(default=None, sa_type=JSONText)
    # A tick result's report row (SPEC §9), also in `payload`: a report reads these columns
    # instead of parsing the JSON of every row. Prices in quote currency, pnl in %; `reason`
    # is the close reason of a `closed` row, the cancel reason of a `cancelled` one.
    position: str | None = Field(default=None, max_length=8)
    price_open: float | None = None
    price_take_profit: float | None = None
    price_stop_loss: float | None = None
    pnl_percentage: float | None = None
    reason: str | None = None


class OrderIntent(SQLModel, table=True):
    """The outbox: an order to send for a signal, written with the signal's state change.

    status (`bkit.core.orders`): pending | unknown | open | filled | canceled | expired |
    rejected | stuck (and, in databases of older versions, sending | acked | abandoned).
    `client_order_id` is deterministic and unique, so a resend can be looked up first.
    """

    __tablename__ = "order_intent"
    __table_args__ = (Index("ix_order_intent_status_next", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    key_id: int = Field(foreign_key="strategy_symbol.id")
    signal_id: str = Field(max_length=64)
    kind: str = Field(max_length=8)
    client_order_id: str = Field(max_length=36, unique=True)
    exchange_name: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    side: str = Field(max_length=4)
    order_type: str = Field(default="market", max_length=8)
    amount: float | None = None
    price: float
    cost: float
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime | None = _dt()
    sending_until: datetime | None = _dt()
    exchange_order_id: str | None = Field(default=None, max_length=64)
    filled_amount: float | None = None
    fill_price: float | None = None
    last_error: str | None = None
    created_at: datetime | None = _dt()
    updated_at: datetime | None = _dt()
    # The order lifecycle (SPEC §8): evidence gathered while the outcome is unknown, refusals
    # of an exit, routine polls of a resting order (polling is not retrying), fills and fees.
    unknown_since: datetime | None = _dt()
    not_found_looks: int = 0
    failed_looks: int = 0
    refusals: int = 0
    polls: int = 0
    resends: int = 0
    alerted: bool = False
    filled_cost: float | None = None
    base_fee: float | None = None
    fees_quote: float | None = None
    fees_paid_quote: float | None = None
    fees: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONText)


class PaperOrder(SQLModel, table=True):
    """A simulated order of the paper broker (dry runs), unique by client order id."""

    __tablename__ = "paper_order"

    id: int | None = Field(default=None, primary_key=True)
    client_order_id: str = Field(max_length=36, unique=True)
    exchange_name: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    side: str = Field(max_length=4)
    amount: float
    fill_price: float
    fee: float
    created_at: datetime | None = _dt()
    #: The asset the fee was charged in (the base asset on buys, like Binance).
    fee_currency: str | None = Field(default=None, max_length=16)


class BkitSetting(SQLModel, table=True):
    """Small key/value flags shared by every process (e.g. the global halt switch)."""

    __tablename__ = "bkit_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: str = ""
    updated_at: datetime | None = _dt()


class SchemaVersion(SQLModel, table=True):
    """The schema version this database was migrated to."""

    __tablename__ = "bkit_schema"

    id: int = Field(default=1, primary_key=True)
    version: int
    migrated_at: datetime | None = _dt()


class PositionCommandRecord(SQLModel, table=True):
    """A position command (SPEC §11: partial profit/loss, trailing stop/take, breakeven,
    average buy) queued for a key's next tick; the tick applies it under the key's lock and
    records whether it was accepted (`status` pending | accepted | refused, `message`)."""

    __tablename__ = "position_command"
    __table_args__ = (Index("ix_position_command_key_status", "key_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    key_id: int = Field(foreign_key="strategy_symbol.id")
    name: str = Field(max_length=24)
    value: float | None = None
    status: str = Field(default="pending", max_length=12)
    message: str | None = None
    actor: str | None = Field(default=None, max_length=96)
    created_at: datetime | None = _dt()
    applied_at: datetime | None = _dt()


class TickHistoryRecord(SQLModel, table=True):
    """One compact row per completed tick (SPEC §13): no signal JSON, times as epoch minutes.
    Kept `BKIT_TICK_HISTORY_DAYS` and pruned oldest-id-first by a beat task; the trades and
    transitions it summarises live in `signal` and `event` for ever."""

    __tablename__ = "tick_history"

    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    key_id: int = Field(sa_type=Integer)
    minute: int = Field(sa_type=BigInteger)  # market time, epoch minutes
    action: int = Field(sa_type=SmallInteger)  # bkit.store.tick_history.ACTION_CODES
    price: float
    pnl: float | None = Field(default=None, sa_type=REAL)  # % (unrealised while open)
    duration_ms: float | None = Field(default=None, sa_type=REAL)


class TickFeedRecord(SQLModel, table=True):
    """Tick results for listeners in other processes (SPEC §9), written only while a listener
    is present and pruned after minutes: delivery without a permanent row per tick."""

    __tablename__ = "tick_feed"

    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    written_at: float  # wall time, Unix seconds (pruning)
    origin: str | None = Field(default=None, max_length=96)
    payload: dict[str, Any] | None = Field(default=None, sa_type=JSONText)


class ListenerPresence(SQLModel, table=True):
    """A process following the event log, and when it last said so (wall time, Unix s)."""

    __tablename__ = "listener_presence"

    origin: str = Field(primary_key=True, max_length=96)
    seen_at: float

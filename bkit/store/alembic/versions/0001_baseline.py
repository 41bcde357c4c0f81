"""Baseline: the whole schema as the hand-made migrations left it at version 4.

Keys, signals (live and history), risk budget and slots, events, the order outbox, paper
broker orders, settings, the legacy `bkit_schema` row, the shared candle cache and backtest
results. The tables are written out here, frozen, rather than taken from the models: a later
change to `bkit/store/tables.py` needs a revision of its own (a test compares the two).

`define` is also what `bkit.store.migrations` brings a database made by the hand-made
migrations (versions 1 to 4) to before it stamps this revision: missing tables are created and
missing columns added, with the defaults below for the rows already there.

Revision ID: 0001_baseline
Revises:
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

#: The `bkit_schema` version this revision stands for (the last hand-made migration).
BKIT_SCHEMA_VERSION = 4

LIVE_STATES_SQL = "state IN ('scheduled','opening','opened','closing')"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)  # bkit.store.types.UTCDateTime stores this


def _name(length: int | None = 64) -> sa.String:
    return sa.String(length=length)


def define(metadata: sa.MetaData) -> None:
    """Add the baseline tables to `metadata`. `default=` is the value a legacy row gets when
    its table lacks a NOT NULL column (the models give the same default to new rows)."""
    key_fk = sa.ForeignKey("strategy_symbol.id")
    sa.Table(
        "strategy_symbol", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("strategy_name", _name(), nullable=False),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("status", _name(16), nullable=False, default="enabled"),
        sa.Column("last_bucket", sa.BigInteger(), nullable=False, default=-1),
        sa.Column("lease_owner", _name(96)),
        sa.Column("lease_until", _utc()),
        sa.Column("lease_version", sa.Integer(), nullable=False, default=0),
        sa.Column("signal_window", sa.BigInteger()),
        sa.Column("command", _name(32)),
        sa.Column("last_tick_at", _utc()),
        sa.Column("last_tick_lag_ms", sa.Float()),
        sa.Column("last_error_at", _utc()),
        sa.Column("created_at", _utc()),
        sa.Column("updated_at", _utc()),
        sa.UniqueConstraint("strategy_name", "exchange_name", "symbol",
                            name="uq_strategy_symbol_key"),
        sa.Index("ix_strategy_symbol_status", "status"),
    )
    sa.Table(
        "signal", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_id", sa.Integer(), key_fk, nullable=False),
        sa.Column("signal_id", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("strategy_name", _name(), nullable=False),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("position", _name(8), nullable=False),
        sa.Column("state", _name(16), nullable=False),
        sa.Column("price_open", sa.Float(), nullable=False),
        sa.Column("price_take_profit", sa.Float(), nullable=False),
        sa.Column("price_stop_loss", sa.Float(), nullable=False),
        sa.Column("minute_estimated_time", sa.Integer(), nullable=False),
        sa.Column("note", _name(None), nullable=False, default=""),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("scheduled_at", _utc()),
        sa.Column("pending_at", _utc()),
        sa.Column("partial_profit_level", sa.Integer(), nullable=False, default=0),
        sa.Column("partial_loss_level", sa.Integer(), nullable=False, default=0),
        sa.Column("breakeven_fired", sa.Boolean(), nullable=False, default=False),
        sa.Column("pending_close_reason", _name(None)),
        sa.Column("pending_close_price", sa.Float()),
        sa.Column("close_rejections", sa.Integer(), nullable=False, default=0),
        sa.Column("order_in_flight", sa.Boolean(), nullable=False, default=False),
        sa.Column("close_reason", _name(None)),
        sa.Column("cancel_reason", _name(None)),
        sa.Column("closed_at", _utc()),
        sa.Column("price_close", sa.Float()),
        sa.Column("pnl_percentage", sa.Float()),
        sa.Column("pnl_cost", sa.Float()),
        sa.Column("fill_price_open", sa.Float()),
        sa.Column("fill_price_close", sa.Float()),
        # Added by hand-made migration 4 (the order lifecycle).
        sa.Column("amount", sa.Float()),
        sa.Column("dust", sa.Float()),
        sa.Column("entry_filled", sa.Float()),
        sa.Column("entry_cost", sa.Float()),
        sa.Column("exit_filled", sa.Float(), nullable=False, default=0.0),
        sa.Column("exit_cost", sa.Float(), nullable=False, default=0.0),
        sa.Column("fees_quote", sa.Float(), nullable=False, default=0.0),
        sa.Column("fees_paid_quote", sa.Float(), nullable=False, default=0.0),
        sa.Column("realised_pnl_cost", sa.Float()),
        sa.Column("realised_pnl_percentage", sa.Float()),
        sa.Column("stuck", sa.Boolean(), nullable=False, default=False),
        sa.Column("exit_orders", sa.Integer(), nullable=False, default=0),
        sa.Column("extra", sa.Text()),
        sa.Column("updated_at", _utc()),
        sa.UniqueConstraint("key_id", "signal_id", name="uq_signal_key_signal_id"),
        sa.Index("uq_signal_one_live_per_key", "key_id", unique=True,
                 postgresql_where=sa.text(LIVE_STATES_SQL),
                 sqlite_where=sa.text(LIVE_STATES_SQL)),
        sa.Index("ix_signal_key_state", "key_id", "state"),
    )
    sa.Table(
        "risk_budget", metadata,
        sa.Column("risk_name", _name(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False, default=0),
    )
    sa.Table(
        "risk_slot", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("risk_name", _name(), nullable=False, index=True),
        sa.Column("key_id", sa.Integer(), sa.ForeignKey("strategy_symbol.id"), nullable=False),
        sa.Column("signal_id", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("strategy_name", _name(), nullable=False),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("acquired_at", _utc()),
        sa.UniqueConstraint("risk_name", "signal_id", name="uq_risk_slot_signal"),
    )
    sa.Table(
        "event", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("key_id", sa.Integer()),
        sa.Column("kind", _name(24), nullable=False),
        sa.Column("action", _name(16)),
        sa.Column("symbol", _name()),
        sa.Column("strategy_name", _name()),
        sa.Column("exchange_name", _name()),
        sa.Column("signal_id", _name()),
        sa.Column("message", _name(None), nullable=False, default=""),
        sa.Column("origin", _name(96)),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("payload", sa.Text()),
        sa.Index("ix_event_key_id_id", "key_id", "id"),
        sa.Index("ix_event_kind_id", "kind", "id"),
    )
    sa.Table(
        "order_intent", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_id", sa.Integer(), sa.ForeignKey("strategy_symbol.id"), nullable=False),
        sa.Column("signal_id", _name(), nullable=False),
        sa.Column("kind", _name(8), nullable=False),
        sa.Column("client_order_id", _name(36), nullable=False, unique=True),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("side", _name(4), nullable=False),
        sa.Column("order_type", _name(8), nullable=False, default="market"),
        sa.Column("amount", sa.Float()),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("status", _name(12), nullable=False, default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, default=0),
        sa.Column("next_attempt_at", _utc()),
        sa.Column("sending_until", _utc()),
        sa.Column("exchange_order_id", _name()),
        sa.Column("filled_amount", sa.Float()),
        sa.Column("fill_price", sa.Float()),
        sa.Column("last_error", _name(None)),
        sa.Column("created_at", _utc()),
        sa.Column("updated_at", _utc()),
        # Added by hand-made migration 4 (the order lifecycle).
        sa.Column("unknown_since", _utc()),
        sa.Column("not_found_looks", sa.Integer(), nullable=False, default=0),
        sa.Column("failed_looks", sa.Integer(), nullable=False, default=0),
        sa.Column("refusals", sa.Integer(), nullable=False, default=0),
        sa.Column("polls", sa.Integer(), nullable=False, default=0),
        sa.Column("resends", sa.Integer(), nullable=False, default=0),
        sa.Column("alerted", sa.Boolean(), nullable=False, default=False),
        sa.Column("filled_cost", sa.Float()),
        sa.Column("base_fee", sa.Float()),
        sa.Column("fees_quote", sa.Float()),
        sa.Column("fees_paid_quote", sa.Float()),
        sa.Column("fees", sa.Text()),
        sa.Index("ix_order_intent_status_next", "status", "next_attempt_at"),
    )
    sa.Table(
        "paper_order", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client_order_id", _name(36), nullable=False, unique=True),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("side", _name(4), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("fill_price", sa.Float(), nullable=False),
        sa.Column("fee", sa.Float(), nullable=False),
        sa.Column("created_at", _utc()),
        sa.Column("fee_currency", _name(16)),  # added by hand-made migration 4
    )
    sa.Table(
        "bkit_setting", metadata,
        sa.Column("key", _name(), primary_key=True),
        sa.Column("value", _name(None), nullable=False, default=""),
        sa.Column("updated_at", _utc()),
    )
    sa.Table(
        "bkit_schema", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("migrated_at", _utc()),
    )
    sa.Table(
        "candle_cache", metadata,
        sa.Column("cache_key", _name(255), primary_key=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False, index=True),
    )
    sa.Table(
        "backtest_result", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", _name(), nullable=False),
        sa.Column("strategy_name", _name(), nullable=False),
        sa.Column("exchange_name", _name(), nullable=False),
        sa.Column("symbol", _name(), nullable=False),
        sa.Column("frame_name", _name(), nullable=False),
        sa.Column("status", _name(16), nullable=False),
        sa.Column("error", _name(None)),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", _utc()),
        sa.UniqueConstraint("run_id", "strategy_name", "exchange_name", "symbol",
                            "frame_name", name="uq_backtest_result_task"),
        sa.Index("ix_backtest_result_run", "run_id"),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define(metadata)
    # checkfirst: the candle cache and backtest results may have been made on first use.
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("bkit does not downgrade a database: restore a backup instead")

"""Statistics and reports that cost the same however long a key has traded (SPEC §9, §13).

The key row gets the running figures of its closed trades (`closed_losses`, a compensated
pnl sum, Welford's mean and M2, the win and loss sums, the equity peak and max drawdown, the
history's span), kept up to date by every close, so `Live.get_data` reads one row instead of
every trade. Each transition event gets its report row as columns (`position`, the three
prices, `pnl_percentage`, `reason`) and an index on (key_id, kind, id), so a report reads
the key's newest 250 of them without parsing their JSON.

Existing databases move over with the same numbers: each key's figures are folded from its
closed trades in close-time order (exactly as the code folds a new close), and every event of
kind `signal` gets its columns from its payload, in batches.

Revision ID: 0004_running_statistics
Revises: 0003_tick_history
Created: 2026-12-08
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from alembic import op

revision = "0004_running_statistics"
down_revision = "0003_tick_history"
branch_labels = None
depends_on = None

BATCH = 5000
KEY_FLOATS = ("closed_pnl_error", "closed_pnl_mean", "closed_pnl_m2", "closed_win_sum",
              "closed_loss_sum", "closed_equity_peak", "closed_max_drawdown")
KEY_TIMES = ("closed_first_opened_at", "closed_last_at")
EVENT_COLUMNS = ("position", "price_open", "price_take_profit", "price_stop_loss",
                 "pnl_percentage", "reason")


def upgrade() -> None:
    with op.batch_alter_table("strategy_symbol", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_losses", sa.Integer(), nullable=False,
                                      server_default="0"))
        for name in KEY_FLOATS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
        for name in KEY_TIMES:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.String(length=8), nullable=True))
        for name in ("price_open", "price_take_profit", "price_stop_loss", "pnl_percentage"):
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.String(), nullable=True))
        batch_op.create_index("ix_event_key_kind_id", ["key_id", "kind", "id"], unique=False)
    conn = op.get_bind()
    meta = sa.MetaData()
    _key_statistics(conn, meta)
    _report_columns(conn, meta)


def _as_utc(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stored(conn: sa.Connection, moment: datetime | None) -> Any:
    """A UTC datetime as this backend stores it (SQLite: naive)."""
    if moment is None or conn.dialect.name != "sqlite":
        return moment
    return moment.replace(tzinfo=None)


def _fold(trades: list[tuple[float, datetime, datetime]]) -> dict[str, Any]:
    """The key columns after `trades` (pnl %, opened_at, closed_at; in close-time order):
    `bkit.core.running_statistics.add_trade` as of this revision, frozen here so that this
    migration gives the same numbers whatever that code becomes."""
    count = wins = losses = 0
    total = error = mean = m2 = win_sum = loss_sum = peak = drawdown = 0.0
    first: datetime | None = None
    last: datetime | None = None
    for pnl, opened_at, closed_at in trades:
        count += 1
        deviation = pnl - mean
        if count > 1:
            m2 += deviation * deviation * ((count - 1) / count)
        mean += pnl / count - mean / count
        new_total = total + pnl
        if math.isfinite(new_total):  # Neumaier's compensated sum
            error += (total - new_total) + pnl if abs(total) >= abs(pnl) \
                else (pnl - new_total) + total
        total = new_total
        equity = total + error
        peak = max(peak, equity)
        drawdown = max(drawdown, 0.0 if equity == peak else peak - equity)
        wins += pnl > 0
        losses += pnl < 0
        win_sum += max(pnl, 0.0)
        loss_sum += min(pnl, 0.0)
        first = opened_at if first is None else min(first, opened_at)
        last = closed_at if last is None else max(last, closed_at)
    return {"closed_total": count, "closed_wins": wins, "closed_losses": losses,
            "closed_pnl_total": total, "closed_pnl_error": error, "closed_pnl_mean": mean,
            "closed_pnl_m2": m2, "closed_win_sum": win_sum, "closed_loss_sum": loss_sum,
            "closed_equity_peak": peak, "closed_max_drawdown": drawdown,
            "closed_first_opened_at": first, "closed_last_at": last}


def _key_statistics(conn: sa.Connection, meta: sa.MetaData) -> None:
    """Each key's figures from its closed trades, read in close-time order (ties by id)."""
    key = sa.Table("strategy_symbol", meta, autoload_with=conn)
    signal = sa.Table("signal", meta, autoload_with=conn)
    closed_at = sa.func.coalesce(signal.c.closed_at, signal.c.created_at)
    for (key_id,) in conn.execute(sa.select(key.c.id).order_by(key.c.id)).all():
        rows = conn.execute(sa.select(
            signal.c.pnl_percentage, signal.c.pending_at, signal.c.created_at,
            signal.c.closed_at).where(signal.c.key_id == key_id, signal.c.state == "closed")
            .order_by(closed_at, signal.c.id))
        trades = []
        for pnl, pending_at, created_at, closed in rows:
            opened = _as_utc(pending_at or created_at)
            done = _as_utc(closed or created_at)
            assert opened is not None and done is not None  # created_at is NOT NULL
            trades.append((float(pnl or 0.0), opened, done))
        values = _fold(trades)
        for name in KEY_TIMES:
            values[name] = _stored(conn, values[name])
        conn.execute(sa.update(key).where(key.c.id == key_id).values(**values))


def _payload(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _report_row(payload: dict[str, Any]) -> dict[str, Any]:
    """The report columns of a stored tick result (as `bkit.store.event_log.result_event`
    writes them for a new one)."""
    signal = payload.get("signal") if isinstance(payload.get("signal"), dict) else {}
    pnl = payload.get("pnl") if isinstance(payload.get("pnl"), dict) else {}
    assert isinstance(signal, dict) and isinstance(pnl, dict)
    return {"position": _text(signal.get("position")),
            "price_open": _number(signal.get("price_open")),
            "price_take_profit": _number(signal.get("price_take_profit")),
            "price_stop_loss": _number(signal.get("price_stop_loss")),
            "pnl_percentage": _number(pnl.get("pnl_percentage")),
            "reason": _text(payload.get("close_reason") or payload.get("reason"))}


def _report_columns(conn: sa.Connection, meta: sa.MetaData) -> None:
    event = sa.Table("event", meta, autoload_with=conn)
    change = sa.update(event).where(event.c.id == sa.bindparam("event_id")).values(
        {name: sa.bindparam(f"new_{name}") for name in EVENT_COLUMNS})
    after = 0
    while True:
        rows = conn.execute(sa.select(event.c.id, event.c.payload).where(
            event.c.kind == "signal", event.c.id > after).order_by(event.c.id)
            .limit(BATCH)).all()
        if not rows:
            break
        after = rows[-1][0]
        changes = []
        for event_id, text in rows:
            values = _report_row(_payload(text))
            if any(value is not None for value in values.values()):
                changes.append({"event_id": event_id} |
                               {f"new_{name}": value for name, value in values.items()})
        if changes:
            conn.execute(change, changes)


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_key_kind_id")
        for name in reversed(EVENT_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table("strategy_symbol", schema=None) as batch_op:
        for name in (*reversed(KEY_TIMES), *reversed(KEY_FLOATS), "closed_losses"):
            batch_op.drop_column(name)

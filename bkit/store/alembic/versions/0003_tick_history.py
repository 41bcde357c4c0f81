"""History that does not grow the cost (SPEC §13).

Per-key counters and the last result move onto `strategy_symbol`; per-tick results leave the
event log for a compact `tick_history` table (kept 7 days) and, for listeners in other
processes, a short-lived `tick_feed` written only while a `listener_presence` row is fresh.

Existing databases keep every trade and every transition: the counters are computed from the
event log as it stands, the idle / active / waiting tick events of the newest 7 days become
compact tick rows, and then every idle / active / waiting event row is deleted (in batches, so
a large log moves over without one huge transaction on PostgreSQL).

Revision ID: 0003_tick_history
Revises: 0002_position_commands
Created: 2026-12-01
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from alembic import op

revision = "0003_tick_history"
down_revision = "0002_position_commands"
branch_labels = None
depends_on = None

TICK_ACTIONS = ("idle", "active", "waiting")
#: bkit.store.tick_history.ACTION_CODES, frozen here.
ACTION_CODES = {"idle": 0, "scheduled": 1, "waiting": 2, "opened": 3, "active": 4,
                "closed": 5, "cancelled": 6}
KEPT_DAYS = 7
BATCH = 5000


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "listener_presence",
        sa.Column("origin", sa.String(length=96), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("origin"),
    )
    op.create_table(
        "tick_feed",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("written_at", sa.Float(), nullable=False),
        sa.Column("origin", sa.String(length=96), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tick_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.SmallInteger(), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("pnl", sa.REAL(), nullable=True),
        sa.Column("duration_ms", sa.REAL(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("strategy_symbol", schema=None) as batch_op:
        for name in ("ticks_total", "ticks_failed", "errors_total"):
            batch_op.add_column(sa.Column(name, sa.BigInteger(), nullable=False,
                                          server_default="0"))
        batch_op.add_column(sa.Column("first_tick_at", _utc(), nullable=True))
        batch_op.add_column(sa.Column("last_action", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("last_price", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_error_message", sa.String(), nullable=True))
        for name in ("closed_total", "closed_wins"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False,
                                          server_default="0"))
        batch_op.add_column(sa.Column("closed_pnl_total", sa.Float(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("closed_realised_total", sa.Float(), nullable=True))
    _move_history(op.get_bind())


def _as_utc(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stored(conn: sa.Connection, moment: datetime) -> Any:
    """A UTC datetime as this backend stores it (SQLite: naive)."""
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment


def _payload(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _move_history(conn: sa.Connection) -> None:
    meta = sa.MetaData()
    event = sa.Table("event", meta, autoload_with=conn)
    key = sa.Table("strategy_symbol", meta, autoload_with=conn)
    history = sa.Table("tick_history", meta, autoload_with=conn)
    keys = [row[0] for row in conn.execute(sa.select(key.c.id))]
    for key_id in keys:
        _key_counters(conn, event, key, key_id)
    _trade_totals(conn, meta, key)
    newest = _as_utc(conn.execute(sa.select(sa.func.max(event.c.created_at)).where(
        event.c.kind == "signal")).scalar())
    if newest is None:
        return
    since = newest - timedelta(days=KEPT_DAYS)
    ticks = sa.and_(event.c.kind == "signal", event.c.action.in_(TICK_ACTIONS))
    after = 0
    while True:
        rows = list(conn.execute(sa.select(
            event.c.id, event.c.key_id, event.c.action, event.c.created_at, event.c.payload)
            .where(ticks, event.c.id > after).order_by(event.c.id).limit(BATCH)))
        if not rows:
            break
        after = rows[-1][0]
        kept = []
        for _id, key_id, action, created_at, text in rows:
            moment = _as_utc(created_at)
            payload = _payload(text)
            price = payload.get("current_price")
            if key_id is None or moment is None or moment < since or \
                    not isinstance(price, int | float):
                continue
            pnl = (payload.get("pnl") or {}).get("pnl_percentage") \
                if isinstance(payload.get("pnl"), dict) else None
            kept.append({"key_id": key_id, "minute": int(moment.timestamp() // 60),
                         "action": ACTION_CODES.get(action, 0), "price": float(price),
                         "pnl": pnl, "duration_ms": payload.get("duration_ms")})
        if kept:
            conn.execute(sa.insert(history), kept)
        conn.execute(sa.delete(event).where(event.c.id.in_([r[0] for r in rows])))


def _key_counters(conn: sa.Connection, event: sa.Table, key: sa.Table, key_id: int) -> None:
    of_key = event.c.key_id == key_id
    count, first = conn.execute(sa.select(sa.func.count(), sa.func.min(event.c.created_at))
                                .where(of_key, event.c.kind == "signal")).one()
    errors = conn.execute(sa.select(sa.func.count()).where(
        of_key, event.c.kind == "error")).scalar() or 0
    failed = conn.execute(sa.select(sa.func.count()).where(
        of_key, event.c.kind == "error",
        sa.cast(event.c.payload, sa.Text).like('%"stage":"tick"%'))).scalar() or 0
    last = conn.execute(sa.select(event.c.action, event.c.payload).where(
        of_key, event.c.kind == "signal").order_by(event.c.id.desc()).limit(1)).first()
    message = conn.execute(sa.select(event.c.message).where(
        of_key, event.c.kind == "error").order_by(event.c.id.desc()).limit(1)).scalar()
    price = None if last is None else _payload(last[1]).get("current_price")
    first_at = _as_utc(first)
    conn.execute(sa.update(key).where(key.c.id == key_id).values(
        ticks_total=int(count or 0), ticks_failed=int(failed), errors_total=int(errors),
        first_tick_at=None if first_at is None else _stored(conn, first_at),
        last_action=None if last is None else last[0],
        last_price=float(price) if isinstance(price, int | float) else None,
        last_error_message=message))


def _trade_totals(conn: sa.Connection, meta: sa.MetaData, key: sa.Table) -> None:
    signal = sa.Table("signal", meta, autoload_with=conn)
    pnl = signal.c.pnl_percentage
    totals = conn.execute(sa.select(
        signal.c.key_id, sa.func.count(), sa.func.sum(sa.case((pnl > 0, 1), else_=0)),
        sa.func.coalesce(sa.func.sum(pnl), 0.0), sa.func.sum(signal.c.realised_pnl_cost))
        .where(signal.c.state == "closed").group_by(signal.c.key_id)).all()
    for key_id, count, wins, total, realised in totals:
        conn.execute(sa.update(key).where(key.c.id == key_id).values(
            closed_total=int(count), closed_wins=int(wins or 0),
            closed_pnl_total=float(total or 0.0),
            closed_realised_total=None if realised is None else float(realised)))


def downgrade() -> None:
    with op.batch_alter_table("strategy_symbol", schema=None) as batch_op:
        for name in ("closed_realised_total", "closed_pnl_total", "closed_wins",
                     "closed_total", "last_error_message", "last_price", "last_action",
                     "first_tick_at", "errors_total", "ticks_failed", "ticks_total"):
            batch_op.drop_column(name)
    op.drop_table("tick_history")
    op.drop_table("tick_feed")
    op.drop_table("listener_presence")

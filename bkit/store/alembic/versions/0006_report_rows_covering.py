"""The report rows' index also holds the rows' columns (PostgreSQL): `Live.get_data`, the
reports and `bkit status` read a key's newest transitions from the index alone.

`ix_event_key_kind_id` (key_id, kind, id) found a key's newest 250 transitions without a
sort, but each row was then fetched from the table: on a database of months, where keys'
events are interleaved in time, that is a page per row, the part of `get_data` that grew
with history. With the report columns INCLUDEd the read is an index-only scan once
autovacuum has marked the pages visible (all but the newest).

Only `signal` events are reports' rows, and the index now holds only those (partial): a
milestone, error or admin event has no entry in it at all (the other reads by key find them
through `ix_event_key_id_id`). Measured on 50 keys × 600 minutes through the write path:
the INCLUDEd index over every event would have cost 11 bytes more per tick; over `signal`
events only, it costs less than the full plain index did.

The index is rebuilt under the upgrade's lock (writes to `event` wait for it: seconds on a
month of 1,000 keys). SQLite keeps the plain index.

Revision ID: 0006_report_rows_covering
Revises: 0005_key_row_fillfactor
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0006_report_rows_covering"
down_revision = "0005_key_row_fillfactor"
branch_labels = None
depends_on = None

#: What a report row reads (`bkit.store.event_log.report_rows_query`), as of this revision.
REPORT_COLUMNS = ["created_at", "action", "symbol", "signal_id", "position", "price_open",
                  "price_take_profit", "price_stop_loss", "pnl_percentage", "reason"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_event_key_kind_id", table_name="event")
        op.create_index("ix_event_key_kind_id", "event", ["key_id", "kind", "id"],
                        postgresql_include=REPORT_COLUMNS,
                        postgresql_where=sa.text("kind = 'signal'"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_event_key_kind_id", table_name="event")
        op.create_index("ix_event_key_kind_id", "event", ["key_id", "kind", "id"])

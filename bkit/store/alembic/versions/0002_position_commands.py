"""Position commands (SPEC §11): the queue of partial / trailing / breakeven / DCA commands
a key's next tick applies.

Revision ID: 0002_position_commands
Revises: 0001_baseline
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0002_position_commands"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "position_command",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=24), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("message", sa.String(), nullable=True),
        sa.Column("actor", sa.String(length=96), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["strategy_symbol.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("position_command", schema=None) as batch_op:
        batch_op.create_index("ix_position_command_key_status", ["key_id", "status"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("position_command", schema=None) as batch_op:
        batch_op.drop_index("ix_position_command_key_status")
    op.drop_table("position_command")

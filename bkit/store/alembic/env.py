"""Alembic's entry point, configured by `bkit.store.migrations`: it hands over an open
connection (already in its transaction, under the migration lock) in
`config.attributes["connection"]`; Alembic then joins that transaction instead of opening one.
`config.attributes["target_metadata"]` is given only when comparing with the models
(autogenerate, the schema test), so a worker's start imports no model module it does not need.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through bkit.store.migrations
    raise RuntimeError("run migrations through `bkit db upgrade` (bkit.store.migrations)")

context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    # SQLite cannot ALTER most things; batch mode rebuilds the table in later revisions.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

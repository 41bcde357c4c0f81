"""The Alembic environment of bkit's schema, shipped inside the package: `env.py` and the
revisions in `versions/`. Run through `bkit.store.migrations` (no alembic.ini needed)."""

"""Alembic revisions of bkit's schema, oldest first (`0001_baseline` = schema 4)."""

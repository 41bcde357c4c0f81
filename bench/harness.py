"""What the benchmark scripts share: a throwaway PostgreSQL database and pointing this process
(settings, engines, the Celery app) at the benchmark's environment."""

from __future__ import annotations

import importlib
import os
import uuid
from typing import Any

import psycopg

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def create_database(prefix: str) -> tuple[str, str]:
    """A new empty database: (its name, its SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    from bkit.store.engine import dispose_all

    dispose_all()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_settings(env: dict[str, str]) -> Any:
    """Apply the BKIT_* values of `env` to this process and return the Celery app built
    from them (its broker is read at import, so the module is reloaded)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("BKIT_")})
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all

    reset_settings()
    dispose_all()
    import bkit.celery

    importlib.reload(bkit.celery)
    return bkit.celery.app

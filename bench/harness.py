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


def insert_keys(engine: Any, symbols: list[str], strategy_name: str, exchange_name: str
                ) -> list[int]:
    """One enabled key per symbol (one multi-row insert); their ids in symbol order."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from bkit.store.tables import StrategySymbol

    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(StrategySymbol), [
            {"strategy_name": strategy_name, "exchange_name": exchange_name, "symbol": symbol,
             "status": "enabled", "last_bucket": -1, "lease_version": 0, "created_at": now,
             "updated_at": now} for symbol in symbols])
        return list(conn.execute(select(StrategySymbol.id).where(
            StrategySymbol.strategy_name == strategy_name,
            StrategySymbol.exchange_name == exchange_name).order_by(StrategySymbol.id))
            .scalars())


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

"""Results of a batch of backtests in the database (`backtest_result`): one row per
(run, strategy, exchange, symbol, frame), written once when its backtest has finished, so a
worker that dies mid-run leaves nothing behind and a redelivered task writes nothing twice.

The table is created here on first use (`ensure_table`, idempotent); it touches no live
table. A schema migration may take it over later (see the module `bkit.store.migrations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Index, UniqueConstraint, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from bkit.backtest.results import BacktestResult
from bkit.store.engine import session_scope
from bkit.store.types import JSONText, UTCDateTime


class BacktestRecord(SQLModel, table=True):
    """One finished backtest of a batch (`status` ok) or its error (`status` error)."""

    __tablename__ = "backtest_result"
    __table_args__ = (UniqueConstraint("run_id", "strategy_name", "exchange_name", "symbol",
                                       "frame_name", name="uq_backtest_result_task"),
                      Index("ix_backtest_result_run", "run_id"))

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=64)
    strategy_name: str = Field(max_length=64)
    exchange_name: str = Field(max_length=64)
    symbol: str = Field(max_length=64)
    frame_name: str = Field(max_length=64)
    status: str = Field(max_length=16)
    error: str | None = None
    result: Any = Field(default=None, sa_type=JSONText)
    created_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


_ready: set[str] = set()


def ensure_table(engine: Engine) -> None:
    """Create `backtest_result` if missing (once per process and database)."""
    key = str(engine.url)
    if key not in _ready:
        SQLModel.metadata.create_all(engine, tables=[BacktestRecord.__table__],  # type: ignore
                                     checkfirst=True)
        _ready.add(key)


def save_results(engine: Engine, run_id: str, results: Sequence[BacktestResult]) -> int:
    """Store finished results in one transaction; rows already there (a redelivered task)
    are kept as they are. Returns how many rows were written."""
    return _save(engine, [BacktestRecord(
        run_id=run_id, strategy_name=r.strategy_name, exchange_name=r.exchange_name,
        symbol=r.symbol, frame_name=r.frame_name, status="ok", result=r.to_dict(),
        created_at=datetime.now(UTC)) for r in results])


def save_error(engine: Engine, run_id: str, strategy_name: str, exchange_name: str,
               symbols: Sequence[str], frame_name: str, error: str) -> int:
    """Record that a task failed (unknown name, no candles, …), one row per symbol."""
    return _save(engine, [BacktestRecord(
        run_id=run_id, strategy_name=strategy_name[:64], exchange_name=exchange_name[:64],
        symbol=symbol[:64], frame_name=frame_name[:64], status="error", error=error[:4000],
        created_at=datetime.now(UTC)) for symbol in symbols])


def _save(engine: Engine, records: list[BacktestRecord]) -> int:
    ensure_table(engine)
    try:
        with session_scope(engine) as session:
            session.add_all(records)
        return len(records)
    except IntegrityError:  # written before by the same task: keep the first
        return 0


def count_rows(engine: Engine, run_id: str) -> int:
    ensure_table(engine)
    with session_scope(engine) as session:
        return int(session.execute(select(func.count()).select_from(BacktestRecord).where(
            BacktestRecord.run_id == run_id)).scalar_one())  # type: ignore[arg-type]


def load_run(engine: Engine, run_id: str) -> tuple[list[BacktestResult], list[BacktestRecord]]:
    """The finished results of a run and its error rows."""
    ensure_table(engine)
    with session_scope(engine) as session:
        rows = list(session.execute(select(BacktestRecord).where(
            BacktestRecord.run_id == run_id).order_by(BacktestRecord.id)).scalars())  # type: ignore
    results = [BacktestResult.from_dict(r.result) for r in rows if r.status == "ok"]
    return results, [r for r in rows if r.status != "ok"]

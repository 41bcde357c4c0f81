"""A key's closed trades (SPEC §9, §13): the trades themselves, for reports that chart every
trade, and their running statistics on the key row, updated in the transaction that records
each close, so `Live.get_data` reads one row however long the key has traded.

Every path that closes a signal (a tick, the orders worker booking an exit fill, an operator's
close, a liquidation found by reconciliation) goes through `bkit.store.outcomes.store_outcome`,
which calls `count_close` under the key's row lock. A partial exit does not close the signal:
the trade counts once, when its last part closes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlmodel import Session

from bkit.core.running_statistics import RunningStatistics, add_trade, fold_trades
from bkit.core.statistics import ClosedTrade, as_utc
from bkit.store.row_updates import LoadedRow
from bkit.store.tables import SignalRecord, StrategySymbol

#: `RunningStatistics` field → `strategy_symbol` column.
COLUMNS: dict[str, str] = {
    "total_closed": "closed_total",
    "win_count": "closed_wins",
    "loss_count": "closed_losses",
    "pnl_sum": "closed_pnl_total",
    "pnl_sum_error": "closed_pnl_error",
    "pnl_mean": "closed_pnl_mean",
    "pnl_m2": "closed_pnl_m2",
    "win_sum": "closed_win_sum",
    "loss_sum": "closed_loss_sum",
    "equity_peak": "closed_equity_peak",
    "max_drawdown": "closed_max_drawdown",
    "first_opened_at": "closed_first_opened_at",
    "last_closed_at": "closed_last_at",
}


class _Closed(Protocol):
    """What a closed signal has, as a `SignalRecord` or a core `SignalRow`."""

    pnl_percentage: float | None
    pending_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


def trade_figures(signal: _Closed) -> tuple[float, datetime, datetime]:
    """`(pnl_percentage %, opened_at, closed_at)` of a closed signal, as the statistics take
    it: no pnl counts as 0, a signal never opened counts from its creation."""
    return (signal.pnl_percentage or 0.0, as_utc(signal.pending_at or signal.created_at),
            as_utc(signal.closed_at or signal.created_at))


def key_statistics(key: StrategySymbol | LoadedRow) -> RunningStatistics:
    """The running statistics held on the key row."""
    values = {field: getattr(key, column) for field, column in COLUMNS.items()}
    return RunningStatistics(**{k: v for k, v in values.items() if v is not None})


def statistics_values(stats: RunningStatistics) -> dict[str, Any]:
    """`stats` as `strategy_symbol` column values (for an UPDATE or a bulk load)."""
    return {column: getattr(stats, field) for field, column in COLUMNS.items()}


def _set_statistics(key: StrategySymbol | LoadedRow, stats: RunningStatistics) -> None:
    for column, value in statistics_values(stats).items():
        setattr(key, column, value)


def _stored_figures(session: Session, key_id: int) -> list[tuple[float, datetime, datetime]]:
    """The key's closed trades as `trade_figures`, in close-time order (ties by row id)."""
    closed = SignalRecord.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(select(closed.pnl_percentage, closed.pending_at, closed.created_at,
                                  closed.closed_at)
                           .where(closed.key_id == key_id, closed.state == "closed")
                           .order_by(func.coalesce(closed.closed_at, closed.created_at),
                                     closed.id))
    return [trade_figures(row) for row in rows]  # type: ignore[arg-type]


def count_close(session: Session, key: StrategySymbol | LoadedRow, signal: _Closed) -> None:
    """A trade closed: add it to the key's running statistics (the caller holds the key row
    lock and has not stored the close yet). A close dated before the newest one counted (an
    orders worker booking a fill at its wall minute while ticks catch up on older minutes) is
    folded in again with every stored trade, in close-time order: the drawdown follows it."""
    figures = trade_figures(signal)
    stats = key_statistics(key)
    if stats.in_close_order(figures[2]):
        stats = add_trade(stats, *figures)
    else:
        assert key.id is not None
        with session.no_autoflush:
            stored = _stored_figures(session, key.id)
        # stable: among trades closed at the same time, this one (the newest) comes last
        stats = fold_trades(sorted([*stored, figures], key=lambda f: f[2]))
    _set_statistics(key, stats)


def closed_trades(session: Session, key_id: int) -> list[ClosedTrade]:
    """Every closed trade of the key, in close-time order (ties by row id)."""
    records = session.execute(select(SignalRecord).where(
        SignalRecord.key_id == key_id, SignalRecord.state == "closed")
        .order_by(SignalRecord.closed_at, SignalRecord.id)).scalars()  # type: ignore[arg-type]
    out = []
    for record in records:
        pnl, opened_at, closed_at = trade_figures(record)
        out.append(ClosedTrade(signal_id=record.signal_id, symbol=record.symbol,
                               position=record.position, pnl_percentage=pnl,
                               pnl_cost=record.pnl_cost or 0.0, opened_at=opened_at,
                               closed_at=closed_at, close_reason=record.close_reason or ""))
    return out

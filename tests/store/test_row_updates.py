"""`LoadedRow` / `write_rows`: the tick's batched write-back of key and signal rows, on both
databases. What is read back must be exactly what an ORM flush would have written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from bkit.store.engine import make_engine, session_scope
from bkit.store.migrations import upgrade
from bkit.store.row_updates import LoadedRow, loaded_rows, write_rows
from bkit.store.tables import SignalRecord, StrategySymbol

KEYS = StrategySymbol.__table__  # type: ignore[attr-defined]
SIGNALS = SignalRecord.__table__  # type: ignore[attr-defined]
T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert(KEYS), [
            {"strategy_name": "s", "exchange_name": "paper", "symbol": f"K{i}/USDT",
             "status": "enabled", "last_bucket": 7, "lease_version": 3, "created_at": T0,
             "updated_at": T0, "ticks_total": 10 * i, "errors_total": 0}
            for i in range(1, 6)])
    yield engine
    engine.dispose()


def _rows(session, table, ids: list[int]) -> list[LoadedRow]:  # type: ignore[no-untyped-def]
    return loaded_rows(table, session.connection().execute(
        select(table).where(table.c.id.in_(ids)).order_by(table.c.id)))


def test_changed_columns_of_many_rows_are_written_and_nothing_else(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        rows = _rows(session, KEYS, [1, 2, 3, 4, 5])
        for row in rows[:3]:  # one shape: three rows (PostgreSQL: one unnest statement)
            row.last_tick_at = T0 + timedelta(minutes=row.id)
            row.ticks_total += 1
            row.lease_owner = None
            row.last_price = 1.5 * row.id
        rows[3].last_action = "closed"  # a second shape, a single row
        rows[3].signal_window = None  # None over None: not a change
        rows[4].status = rows[4].status  # the same value: not a change
        # Meanwhile another statement of the same transaction counts an error on key 1: a
        # column no group changed must keep that count.
        session.execute(update(StrategySymbol).where(StrategySymbol.id == 1)  # type: ignore[arg-type]
                        .values(errors_total=StrategySymbol.errors_total + 2)
                        .execution_options(synchronize_session=False))
        assert write_rows(session, rows) == 4
        assert all(row.changes() == {} for row in rows)  # they count as just read
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(select(KEYS).order_by(KEYS.c.id))}
    for i in (1, 2, 3):
        assert got[i].last_tick_at == T0 + timedelta(minutes=i)
        assert got[i].ticks_total == 10 * i + 1
        assert got[i].last_price == 1.5 * i
        assert got[i].last_action is None
    assert got[1].errors_total == 2
    assert got[4].last_action == "closed" and got[4].ticks_total == 40
    assert got[4].last_tick_at is None
    assert got[5].ticks_total == 50 and got[5].status == "enabled"
    assert all(got[i].updated_at == T0 and got[i].lease_version == 3 for i in got)


def test_json_none_and_times_round_trip_through_a_batch(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(insert(SIGNALS), [
            {"key_id": k, "signal_id": f"sig{k}", "symbol": f"K{k}/USDT", "strategy_name": "s",
             "exchange_name": "paper", "position": "long", "state": "active",
             "price_open": 100.0, "price_take_profit": 110.0, "price_stop_loss": 95.0,
             "minute_estimated_time": 60, "cost": 100.0, "created_at": T0,
             "updated_at": T0, "extra": {"n": k}} for k in (1, 2, 3)])
    closed_at = T0 + timedelta(hours=2)
    with session_scope(engine) as session:
        rows = _rows(session, SIGNALS, [1, 2, 3])
        for row in rows:
            row.state, row.closed_at, row.close_reason = "closed", closed_at, "take_profit"
            row.extra = {"n": row.id, "fills": [{"price": 101.25, "at": "09:31"}]} \
                if row.id != 2 else None
        assert write_rows(session, rows) == 3
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(select(SIGNALS).order_by(SIGNALS.c.id))}
    assert [got[i].state for i in (1, 2, 3)] == ["closed"] * 3
    assert all(got[i].closed_at == closed_at for i in (1, 2, 3))
    assert got[1].extra == {"n": 1, "fills": [{"price": 101.25, "at": "09:31"}]}
    assert got[2].extra is None
    assert got[3].extra == {"n": 3, "fills": [{"price": 101.25, "at": "09:31"}]}


def test_a_row_names_the_column_it_does_not_have(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        row = _rows(session, KEYS, [1])[0]
        with pytest.raises(AttributeError, match="strategy_symbol row has no column 'nope'"):
            _ = row.nope

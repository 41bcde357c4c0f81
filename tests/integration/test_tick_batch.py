"""Batch ticks (`run_ticks`): one claim and one write-back for many keys, with each key keeping
the semantics of a lone tick — claimed once per minute, fenced by its own lease, and a key
whose write-back fails costs the other keys of its batch nothing. PostgreSQL and SQLite."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text, update

from bkit.core.registry import add_strategy
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol, TickHistoryRecord
from bkit.ticking import bucket_of, run_ticks
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
SYMBOLS = [f"B{i}/ETH" for i in range(6)]


@pytest.fixture
def runtime(in_process_runtime: Runtime) -> Runtime:
    upgrade(get_engine())
    return in_process_runtime


def _keys(strategy: str) -> list[int]:
    return [ensure_key(get_engine(), strategy, "paper", s) for s in SYMBOLS]


def _long(symbol: str, when: datetime, price: float) -> dict:
    return {"position": "long", "price_take_profit": price * 1.006,
            "price_stop_loss": price * 0.994, "minute_estimated_time": 20}


def _count(kind: str, **where: object) -> int:
    with session_scope(get_engine()) as session:
        stmt = select(func.count()).select_from(EventRecord).where(EventRecord.kind == kind)
        for name, value in where.items():
            stmt = stmt.where(getattr(EventRecord, name) == value)
        return int(session.execute(stmt).scalar_one())


def _ticks() -> int:
    """Completed ticks: the compact tick history (SPEC §13)."""
    with session_scope(get_engine()) as session:
        return int(session.execute(select(func.count()).select_from(TickHistoryRecord))
                   .scalar_one())


def test_a_batch_ticks_every_key_once_per_minute(runtime: Runtime) -> None:
    add_strategy("batch-long", _long, interval="1m")
    ids = _keys("batch-long")
    env = Live._tick_env()
    bucket = bucket_of(START)
    first = run_ticks(env, ids, bucket).results
    assert [first[i].action for i in ids] == ["opened"] * len(ids)  # type: ignore[union-attr]
    again = run_ticks(env, list(reversed(ids)), bucket).results  # a redelivered duplicate
    assert again == dict.fromkeys(ids)
    nxt = run_ticks(env, ids, bucket + 1).results
    assert all(nxt[i] is not None and nxt[i].action in ("active", "closed") for i in ids)
    assert _ticks() == 2 * len(ids)
    with session_scope(get_engine()) as session:
        keys = list(session.execute(select(StrategySymbol)).scalars())
        live = session.execute(select(func.count()).select_from(SignalRecord)).scalar_one()
    assert {k.last_bucket for k in keys} == {bucket + 1}
    assert all(k.lease_owner is None for k in keys)  # every lease given back
    assert live == len(ids)  # one signal per key, no duplicate open


def test_a_key_whose_lease_was_taken_mid_tick_is_fenced_off_alone(runtime: Runtime) -> None:
    engine = get_engine()
    ids: list[int] = []

    def steal_b2(symbol: str, when: datetime, price: float) -> dict:
        if symbol == SYMBOLS[2]:  # another worker takes this key over while we compute
            with engine.begin() as conn:
                conn.execute(update(StrategySymbol).where(StrategySymbol.id == ids[2])
                             .values(lease_owner="other-worker",
                                     lease_version=StrategySymbol.lease_version + 1))
        return _long(symbol, when, price)

    add_strategy("batch-steal", steal_b2, interval="1m")
    ids.extend(_keys("batch-steal"))
    results = run_ticks(Live._tick_env(), ids, bucket_of(START)).results
    assert results[ids[2]] is None
    assert all(results[i].action == "opened" for i in ids if i != ids[2])  # type: ignore[union-attr]
    with session_scope(get_engine()) as session:
        stolen = session.get(StrategySymbol, ids[2])
        opened = {r.key_id for r in session.execute(select(SignalRecord)).scalars()}
    assert stolen is not None and stolen.lease_owner == "other-worker"  # left untouched
    assert opened == set(ids) - {ids[2]}
    assert _ticks() == len(ids) - 1


def _fail_inserts_for(symbol: str) -> None:
    """A database that refuses one key's signal row: a trigger, on either backend."""
    engine = get_engine()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(
                "CREATE FUNCTION refuse_signal() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by the test trigger'; END $$ LANGUAGE plpgsql"))
            conn.execute(text(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON signal FOR EACH ROW "
                f"WHEN (NEW.symbol = '{symbol}') EXECUTE FUNCTION refuse_signal()"))
        else:
            conn.execute(text(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON signal "
                f"WHEN NEW.symbol = '{symbol}' BEGIN "
                "SELECT RAISE(ABORT, 'refused by the test trigger'); END"))


def test_one_failing_key_costs_the_rest_of_its_batch_nothing(runtime: Runtime) -> None:
    add_strategy("batch-fail", _long, interval="1m")
    ids = _keys("batch-fail")
    _fail_inserts_for(SYMBOLS[3])
    env = Live._tick_env()
    bucket = bucket_of(START)
    with pytest.raises(Exception, match="refused by the test trigger"):
        run_ticks(env, ids, bucket)
    with session_scope(get_engine()) as session:
        opened = {r.key_id for r in session.execute(select(SignalRecord)).scalars()}
        bad = session.get(StrategySymbol, ids[3])
    assert opened == set(ids) - {ids[3]}  # the others were written, one by one
    assert _ticks() == len(ids) - 1
    assert _count("error", key_id=ids[3]) == 1
    assert bad is not None and bad.lease_owner is None  # its lease was given back
    # The failing key is retried the next minute; the others carry on.
    with get_engine().begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_one" +
                          (" ON signal" if get_engine().dialect.name == "postgresql" else "")))
    nxt = run_ticks(env, ids, bucket + 1).results
    assert nxt[ids[3]] is not None and nxt[ids[3]].action == "opened"
    assert all(nxt[i] is not None and nxt[i].action in ("active", "closed")
               for i in ids if i != ids[3])


def test_a_batch_out_of_time_hands_its_unreached_keys_back_for_another_batch(
        runtime: Runtime) -> None:
    def slow(symbol: str, when: datetime, price: float) -> dict:
        time.sleep(0.15)
        return _long(symbol, when, price)

    add_strategy("batch-slow", slow, interval="1m")
    ids = _keys("batch-slow")
    env = Live._tick_env()
    bucket = bucket_of(START)
    batch = run_ticks(env, ids, bucket, budget_seconds=0.2)
    ticked = [i for i in ids if batch.results[i] is not None]
    assert ticked == ids[:2]  # 0.15 s each: the budget is spent after the second key
    assert batch.handed_back == ids[2:]
    with session_scope(get_engine()) as session:
        back = [session.get(StrategySymbol, i) for i in batch.handed_back]
    assert all(k is not None and k.lease_owner is None and k.last_bucket == bucket - 1
               for k in back)  # the minute is open again for exactly these keys
    rest = run_ticks(env, batch.handed_back, bucket)  # the new batch, e.g. on another worker
    assert all(rest.results[i] is not None and rest.results[i].action == "opened"
               for i in batch.handed_back)
    assert run_ticks(env, ids, bucket).results == dict.fromkeys(ids)  # never twice a minute
    assert _ticks() == len(ids)


def test_fanout_batches_are_smaller_when_there_are_few_keys() -> None:
    from workers.ticks import batch_size

    assert [batch_size(n, 20) for n in (0, 1, 2, 8, 9, 100, 160, 1000, 10_000)] == \
        [1, 1, 1, 1, 2, 13, 20, 20, 20]
    assert batch_size(1000, 1) == 1  # BKIT_TICK_BATCH_SIZE=1: one task per key

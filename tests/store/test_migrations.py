"""Schema migrations through Alembic, on SQLite and real PostgreSQL: a fresh database gets
exactly the models' schema; databases of the hand-made migrations (versions 1 to 4, and the
shipped v3 SQLite file made by that code) upgrade in place with their trades intact; what is
newer or of unknown shape is refused untouched; two upgrades at once do not race."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session

from bkit.store import migrations, schema_check
from bkit.store.engine import make_engine
from bkit.store.migrations import (
    BASELINE,
    HEAD,
    LATEST_VERSION,
    SchemaError,
    current_revision,
    current_version,
    schema_differences,
    upgrade,
)
from bkit.store.tables import OrderIntent, PaperOrder, SignalRecord, StrategySymbol
from tests.ops.conftest import clean_env

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).with_name("fixtures") / "bkit_v3.sqlite"
BKIT = Path(sys.executable).parent / "bkit"

#: What each hand-made migration made (4 added the order-lifecycle columns below).
LEGACY_TABLES = {
    1: {"strategy_symbol", "signal", "risk_budget", "risk_slot", "event", "order_intent",
        "bkit_setting", "bkit_schema"},
    2: {"candle_cache"},
    3: {"paper_order"},
}
V4_COLUMNS = {
    "signal": ["amount", "dust", "entry_filled", "entry_cost", "exit_filled", "exit_cost",
               "fees_quote", "fees_paid_quote", "realised_pnl_cost", "realised_pnl_percentage",
               "stuck", "exit_orders"],
    "order_intent": ["unknown_since", "not_found_looks", "failed_looks", "refusals", "polls",
                     "resends", "alerted", "filled_cost", "base_fee", "fees_quote",
                     "fees_paid_quote", "fees"],
    "paper_order": ["fee_currency"],
}


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def _engine(url: str, engines: list[Engine]) -> Engine:
    engine = make_engine(url)
    engines.append(engine)
    return engine


def _rows(engine: Engine, table: str, order: str = "id") -> list[dict[str, Any]]:
    t = sa.Table(table, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c[order]))]


def _legacy_metadata(version: int) -> sa.MetaData:
    """The tables of hand-made version `version`, as that code made them: the baseline
    (version 4) less what later migrations added; version 4's columns nullable, as its
    ALTERs left them."""
    baseline = sa.MetaData()
    migrations._scripts().get_revision(BASELINE).module.define(baseline)
    wanted = set().union(*(LEGACY_TABLES[v] for v in range(1, min(version, 3) + 1)))
    legacy = sa.MetaData()
    for table in baseline.sorted_tables:
        if table.name not in wanted:
            continue
        dropped = [] if version >= 4 else V4_COLUMNS.get(table.name, [])
        columns = [sa.Column(c.name, c.type,
                             *[sa.ForeignKey(fk.target_fullname) for fk in c.foreign_keys],
                             primary_key=c.primary_key, unique=c.unique, index=c.index,
                             nullable=c.nullable or c.name in V4_COLUMNS.get(table.name, []),
                             default=c.default.arg if c.default is not None else None)
                   for c in table.columns if c.name not in dropped]
        others = [sa.UniqueConstraint(*[col.name for col in c.columns], name=c.name)
                  for c in table.constraints if isinstance(c, sa.UniqueConstraint)]
        t = sa.Table(table.name, legacy, *columns, *others)
        for index in table.indexes:
            if all(col.name in t.c for col in index.columns) and not any(
                    col.index for col in index.columns):
                sa.Index(index.name, *[t.c[col.name] for col in index.columns],
                         unique=index.unique, **index.dialect_kwargs)
    return legacy


def _make_legacy(engine: Engine, version: int) -> None:
    """A database of hand-made version `version` holding the v3 fixture's rows."""
    legacy = _legacy_metadata(version)
    legacy.create_all(engine)
    source = make_engine(f"sqlite:///{FIXTURE}")
    try:
        with engine.begin() as conn:
            for table in legacy.sorted_tables:
                rows = _rows(source, table.name, order=next(iter(table.primary_key)).name)
                if table.name == "bkit_schema":
                    rows = [{**r, "version": version} for r in rows]
                if rows:
                    conn.execute(table.insert(), rows)
    finally:
        source.dispose()
    if engine.dialect.name == "postgresql":  # ids were given explicitly: move the sequences
        with engine.begin() as conn:
            for table in legacy.sorted_tables:
                if "id" in table.c and table.c.id.primary_key:
                    top = select(sa.func.max(table.c.id)).scalar_subquery()
                    conn.execute(select(sa.func.setval(
                        sa.func.pg_get_serial_sequence(table.name, "id"), top)))


def _check_trades_intact(before: dict[str, list[dict[str, Any]]], engine: Engine) -> None:
    for table, rows in before.items():
        after = _rows(engine, table)
        assert len(after) == len(rows), table
        for old, new in zip(rows, after, strict=True):
            assert {k: new[k] for k in old} == old, table
    with Session(engine) as session:
        signals = list(session.execute(select(SignalRecord).order_by(SignalRecord.id)).scalars())
        assert [(s.signal_id, s.state, s.pnl_percentage) for s in signals] == [
            ("sig-1", "closed", 0.4), ("sig-2", "closed", -1.6), ("sig-3", "closed", 0.2),
            ("sig-4", "cancelled", None)]
        assert all(s.exit_filled == 0.0 and s.stuck is False and s.exit_orders == 0
                   and s.amount is None and s.fees_quote == 0.0 for s in signals)
        intents = list(session.execute(select(OrderIntent)).scalars())
        assert len(intents) == 6 and all(i.polls == 0 and i.alerted is False for i in intents)
        assert {p.fee_currency for p in session.execute(select(PaperOrder)).scalars()} <= {None}


def test_a_fresh_database_gets_exactly_the_models(db_url: str, engines: list[Engine]) -> None:
    engine = _engine(db_url, engines)
    assert upgrade(engine) == (None, LATEST_VERSION)
    assert upgrade(engine) == (LATEST_VERSION, LATEST_VERSION)
    with engine.connect() as conn:
        assert current_revision(conn) == HEAD
        assert current_version(conn) == LATEST_VERSION
        assert schema_differences(conn) == []
    with engine.begin() as conn:  # the comparison is not vacuous
        conn.execute(sa.text("DROP INDEX ix_event_kind_id"))
    with engine.connect() as conn:
        assert [d[0] for d in schema_differences(conn)] == ["add_index"]


def test_the_v3_sqlite_fixture_upgrades_in_place(tmp_path: Path,
                                                 engines: list[Engine]) -> None:
    path = tmp_path / "bkit.sqlite"
    shutil.copy(FIXTURE, path)
    engine = _engine(f"sqlite:///{path}", engines)
    before = {t: _rows(engine, t) for t in ("signal", "order_intent", "paper_order", "event",
                                             "strategy_symbol")}
    with engine.connect() as conn:
        assert (current_version(conn), current_revision(conn)) == (3, None)
    assert upgrade(engine) == (3, LATEST_VERSION)
    with engine.connect() as conn:
        assert (current_version(conn), current_revision(conn)) == (LATEST_VERSION, HEAD)
        assert schema_differences(conn) == []  # added NOT NULL with defaults, as made fresh
        assert "fee_currency" in {c["name"] for c in inspect(conn).get_columns("paper_order")}
    _check_trades_intact(before, engine)
    assert upgrade(engine) == (LATEST_VERSION, LATEST_VERSION)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_hand_made_version_upgrades_with_its_trades(db_url: str, version: int,
                                                          engines: list[Engine]) -> None:
    engine = _engine(db_url, engines)
    _make_legacy(engine, version)
    before = {t: _rows(engine, t) for t in ("signal", "order_intent", "event")}
    assert upgrade(engine) == (version, LATEST_VERSION)
    _check_trades_intact(before, engine)
    with engine.connect() as conn:
        assert current_revision(conn) == HEAD
        assert {"paper_order", "candle_cache", "backtest_result"} <= set(
            inspect(conn).get_table_names())
        left = schema_differences(conn)
    if engine.dialect.name == "postgresql" or version < 4:
        assert left == []
    else:  # SQLite cannot make version 4's nullable columns NOT NULL without a rebuild
        assert {d[0][0] for d in left} == {"modify_nullable"}
    with Session(engine) as session:  # the new code writes through the upgraded tables
        key = session.execute(select(StrategySymbol)).scalars().one()
        session.add(SignalRecord(
            key_id=key.id, signal_id="sig-5", symbol="XRP/ETH", strategy_name="momentum",
            exchange_name="paper", position="long", state="opened", price_open=0.025,
            price_take_profit=0.0252, price_stop_loss=0.0247, minute_estimated_time=60,
            cost=100.0, created_at=datetime(2019, 10, 12, tzinfo=UTC), amount=4000.0))
        session.commit()


def test_bkit_db_upgrade_migrates_the_v3_fixture(tmp_path: Path) -> None:
    path = tmp_path / "bkit.sqlite"
    shutil.copy(FIXTURE, path)
    env = clean_env(BKIT_HOME=str(tmp_path), BKIT_DATABASE_URL=f"sqlite:///{path}")
    done = subprocess.run([str(BKIT), "db", "upgrade"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (
        0, f"database schema: 3 -> {LATEST_VERSION}"), done.stderr
    health = subprocess.run([str(BKIT), "health"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert health.stdout.strip() == "healthy", health.stdout + health.stderr


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_a_newer_database_is_refused_untouched(db_url: str, engines: list[Engine]) -> None:
    engine = _engine(db_url, engines)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    tables = _tables(engine)
    with pytest.raises(SchemaError, match="0099_from_the_future is newer than this bkit"):
        upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :h"), {"h": HEAD})
        conn.execute(sa.text("UPDATE bkit_schema SET version = 99"))
    with pytest.raises(SchemaError, match="version 99 is newer than this bkit"):
        upgrade(engine)
    assert _tables(engine) == tables


def test_a_legacy_database_newer_than_the_baseline_is_refused(
        db_url: str, engines: list[Engine]) -> None:
    engine = _engine(db_url, engines)
    _make_legacy(engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE bkit_schema SET version = {LATEST_VERSION + 1}"))
    with pytest.raises(SchemaError, match=f"version {LATEST_VERSION + 1} is newer"):
        upgrade(engine)
    assert "alembic_version" not in _tables(engine)


def test_bkit_tables_without_a_version_are_refused(db_url: str, engines: list[Engine]) -> None:
    engine = _engine(db_url, engines)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE signal (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaError, match=r"\(signal\) without a schema version"):
        upgrade(engine)
    assert _tables(engine) == {"signal"}


def test_tables_made_on_first_use_do_not_block_a_fresh_upgrade(db_url: str,
                                                                engines: list[Engine]) -> None:
    from bkit.backtest.store import ensure_table

    engine = _engine(db_url, engines)
    ensure_table(engine)  # `bkit backtest` may run before any worker
    assert upgrade(engine) == (None, LATEST_VERSION)
    with engine.connect() as conn:
        assert schema_differences(conn) == []


def test_two_upgrades_at_once_do_not_race(db_url: str, engines: list[Engine]) -> None:
    """Two workers starting together on an empty database: one creates, the other waits for
    the lock and finds the head (on PostgreSQL the advisory lock, on SQLite BEGIN IMMEDIATE)."""
    first, second = _engine(db_url, engines), _engine(db_url, engines)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def start(engine: Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(engine))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results, key=str) == [(LATEST_VERSION, LATEST_VERSION), (None, LATEST_VERSION)]
    with first.connect() as conn:
        assert schema_differences(conn) == []


def test_key_rows_leave_room_for_their_next_version_on_postgresql(pg_url: str) -> None:
    """0005: `strategy_symbol` pages are filled to half, so the two updates every tick makes
    to a key row stay on its page (HOT: no index entry written)."""
    engine = make_engine(pg_url)
    upgrade(engine)
    with engine.connect() as conn:
        options = conn.execute(sa.text(
            "SELECT reloptions FROM pg_class WHERE relname = 'strategy_symbol'")).scalar_one()
    engine.dispose()
    assert options == ["fillfactor=50"]


def test_the_schema_check_knows_the_head_as_alembic_does() -> None:
    """`ensure_schema` skips Alembic when the database is at the head: its own idea of the
    head (file names, numbered) must be Alembic's."""
    scripts = migrations._scripts()
    chain = [s.revision for s in reversed(list(scripts.walk_revisions("base", HEAD)))]
    files = sorted(p.stem for p in schema_check.VERSIONS.glob("[0-9]*.py"))
    assert chain == files  # every revision is named after its file, in file order
    assert schema_check.head_revision() == HEAD
    assert schema_check.head_schema_version() == LATEST_VERSION
    assert scripts.get_revision(BASELINE).module.BKIT_SCHEMA_VERSION \
        == schema_check.BASELINE_SCHEMA_VERSION


def test_ensure_schema_upgrades_any_database_not_at_the_head(
        db_url: str, engines: list[Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """New, one revision behind, or at the head with `bkit_schema` disagreeing: each goes
    through the full upgrade (which refuses what must be refused); only a database at the
    head skips it."""
    engine = _engine(db_url, engines)
    upgrades: list[str] = []
    real_upgrade = migrations.upgrade

    def counted(target: Engine) -> tuple[int | None, int]:
        upgrades.append(str(target.url))
        return real_upgrade(target)

    monkeypatch.setattr(migrations, "upgrade", counted)

    def ensure() -> None:
        schema_check._ready.discard(str(engine.url))
        schema_check.ensure_schema(engine)

    assert not schema_check.at_head(engine)
    ensure()
    assert len(upgrades) == 1 and schema_check.at_head(engine)
    ensure()
    assert len(upgrades) == 1  # at the head: one query, no Alembic
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"),
                     {"r": migrations._scripts().get_revision(HEAD).down_revision})
    assert not schema_check.at_head(engine)
    ensure()
    assert len(upgrades) == 2 and schema_check.at_head(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE bkit_schema SET version = 99"))
    assert not schema_check.at_head(engine)
    with pytest.raises(SchemaError, match="version 99 is newer than this bkit"):
        ensure()
    assert len(upgrades) == 3

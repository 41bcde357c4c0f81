"""`Live.get_data` / `Live.get_report` read the key's running statistics (kept on its row by
every close) and its newest report rows (narrow columns), and give what the trades and the
payloads give (SPEC §9, §13). Expected numbers are worked out by hand below."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Column, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import visitors

from bkit.core.machine import TickOutcome
from bkit.core.pnl import Pnl
from bkit.core.registry import set_config
from bkit.core.results import TickResult
from bkit.core.running_statistics import running_statistics
from bkit.core.signals import SignalRow
from bkit.core.statistics import LiveStatistics, ReportRow, compute_statistics, report_row
from bkit.live import Live
from bkit.ops import admin
from bkit.report.markdown import render_markdown_report
from bkit.store import signal_rows
from bkit.store.closed_trades import key_statistics
from bkit.store.engine import session_scope
from bkit.store.event_log import report_rows_query
from bkit.store.keys import ensure_key
from bkit.store.outcomes import store_outcome
from bkit.store.tables import REPORT_ROW_COLUMNS, EventRecord, StrategySymbol
from tests.ops.conftest import OpsEnv
from tests.ops.strategies_ops import EXCHANGE, START, STRATEGY

XRP = "XRP/ETH"
#: SPEC §9's check returns, a trade at exactly 0 % (neither win nor loss) and one more win.
RETURNS = [0.4, -0.2, 0.6, -0.4, 0.3, 0.1, -0.1, 0.5, -0.3, 0.2, 0.0, 0.25]
SPACING = timedelta(days=1, hours=12)  # 11 × 1.5 days + the last trade's hour: 16.54 days


@pytest.fixture(params=["sqlite", "postgresql"])
def ops(request: pytest.FixtureRequest) -> OpsEnv:
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_ops")


def _key(ops: OpsEnv) -> int:
    return ensure_key(ops.engine, STRATEGY, EXCHANGE, XRP)


def _trade(ops: OpsEnv, key_id: int, n: int, pnl: float, opened_at: datetime,
           closed_at: datetime) -> None:
    """Open then close signal `t{n}` through `store_outcome`, the write path of every close
    (ticks, the orders worker, admin close, liquidation), each in its own transaction under
    the key's row lock."""
    opened = SignalRow(id=f"t{n}", symbol=XRP, strategy_name=STRATEGY, exchange_name=EXCHANGE,
                       position="short" if n % 2 else "long", price_open=100.0 + n,
                       price_take_profit=110.0 + n, price_stop_loss=90.0 + n,
                       minute_estimated_time=60, note="", cost=100.0, state="opened",
                       created_at=opened_at, scheduled_at=opened_at, pending_at=opened_at)
    reason = "take_profit" if pnl > 0 else "stop_loss" if pnl < 0 else "time_expired"
    closed = opened.evolve(state="closed", close_reason=reason, closed_at=closed_at,
                           price_close=100.0, pnl_percentage=pnl, pnl_cost=pnl)

    def result(row: SignalRow, when: datetime, **extra: object) -> TickResult:
        return TickResult(row.state, XRP, STRATEGY, EXCHANGE, 100.0 + n, when,
                          signal=row.public(), **extra)  # type: ignore[arg-type]

    for row, when, extra in (
            (opened, opened_at, {}),
            (closed, closed_at, {"pnl": Pnl(pnl, pnl, 100.0 + n, 100.0), "close_reason": reason,
                                 "close_timestamp": closed_at})):
        with session_scope(ops.engine) as session:
            key = session.execute(select(StrategySymbol).where(StrategySymbol.id == key_id)
                                  .with_for_update()).scalar_one()
            record = signal_rows.find_signal(session, key_id, row.id, for_update=True)
            outcome = TickOutcome(result=result(row, when, **extra), signal=row,
                                  slot="release" if row.state == "closed" else None)
            store_outcome(session, key, record, outcome, when, when, "test")


def _trades(ops: OpsEnv, key_id: int, returns: list[float], first: int = 0) -> None:
    for n, pnl in enumerate(returns, start=first):
        opened_at = START + n * SPACING
        _trade(ops, key_id, n, pnl, opened_at, opened_at + timedelta(hours=1))


def _rows_from_payloads(ops: OpsEnv, key_id: int, limit: int) -> list[ReportRow]:
    """The report rows as they were read before the report columns: every payload parsed."""
    with session_scope(ops.engine) as session:
        records = list(session.execute(select(EventRecord).where(
            EventRecord.key_id == key_id, EventRecord.kind == "signal")
            .order_by(EventRecord.id.desc()).limit(limit)).scalars())  # type: ignore[union-attr]
    return [report_row(TickResult.from_dict(record.payload or {}))
            for record in reversed(records)]


def _same(data: dict[str, object], stats: LiveStatistics) -> None:
    for field in dataclasses.fields(LiveStatistics):
        want = getattr(stats, field.name)
        if want is None or isinstance(want, int):
            assert data[field.name] == want, field.name
        else:
            assert data[field.name] == pytest.approx(want, rel=1e-12, abs=1e-15), field.name


def test_get_data_reads_the_running_statistics_with_the_hand_computed_figures(
        ops: OpsEnv) -> None:
    key_id = _key(ops)
    _trades(ops, key_id, RETURNS)
    data = Live.get_data(XRP, STRATEGY, EXCHANGE)
    # 12 trades: wins 0.4 0.6 0.3 0.1 0.5 0.2 0.25 (7), losses −0.2 −0.4 −0.1 −0.3 (4), one 0.
    assert (data["total_closed"], data["win_count"], data["loss_count"]) == (12, 7, 4)
    assert data["win_rate"] == pytest.approx(7 / 12 * 100, abs=1e-9)
    assert data["total_pnl"] == pytest.approx(1.35, abs=1e-12)
    assert data["avg_pnl"] == pytest.approx(0.1125, abs=1e-12)
    # Σ (r − 0.1125)² = Σ r² − 12 × 0.1125² = 1.2725 − 0.151875 = 1.120625; / 11 = 0.101875
    assert data["std_dev"] == pytest.approx(0.319178633370, abs=1e-9)
    assert data["sharpe_ratio"] == pytest.approx(0.352467202495, abs=1e-9)
    # avg win 2.35 / 7, avg loss −1.0 / 4: 9.4 / 7
    assert data["certainty_ratio"] == pytest.approx(1.342857142857, abs=1e-9)
    # D = 11 × 1.5 days + 1 hour = 16.5417 days ≥ 14: T = 12 / (D / 365) = 264.785894207
    assert data["expected_yearly_returns"] == pytest.approx(29.788413098237, abs=1e-9)
    assert data["annualized_sharpe_ratio"] == pytest.approx(5.735431989701, abs=1e-9)
    # Running 0.4 0.2 0.8 0.4 0.7 0.8 0.7 1.2 0.9 1.1 1.1 1.35: peak 0.8, trough 0.4 after it.
    assert data["max_drawdown"] == pytest.approx(0.4, abs=1e-12)

    # … what compute_statistics gives over the stored trades, and the rows the payloads give.
    trades = Live._closed_trades(key_id)
    assert [t.pnl_percentage for t in trades] == RETURNS
    _same(data, compute_statistics(trades))
    with session_scope(ops.engine) as session:
        key = session.get(StrategySymbol, key_id)
        assert key is not None
        assert key_statistics(key) == running_statistics(trades)
    rows = _rows_from_payloads(ops, key_id, 250)
    assert data["event_list"] == rows and len(rows) == 24
    assert [r.action for r in rows[-2:]] == ["opened", "closed"]
    assert (rows[-1].close_reason, rows[-1].pnl_percentage, rows[-1].position) == (
        "take_profit", 0.25, "short")


def test_get_report_is_the_report_of_the_trades_and_payloads(ops: OpsEnv) -> None:
    key_id = _key(ops)
    _trades(ops, key_id, RETURNS)
    report = Live.get_report(XRP, STRATEGY, EXCHANGE)
    old = render_markdown_report(
        f"{STRATEGY} · {EXCHANGE} · {XRP}", _rows_from_payloads(ops, key_id, 250),
        compute_statistics(Live._closed_trades(key_id)), max_rows=250,
        generated_at=START)

    def without_time(markdown: str) -> str:
        return re.sub(r"Generated at: \S+", "Generated at: X", markdown)

    assert without_time(report) == without_time(old)


def test_the_newest_rows_only_and_a_key_without_trades(ops: OpsEnv) -> None:
    key_id = _key(ops)
    empty = Live.get_data(XRP, STRATEGY, EXCHANGE)
    assert (empty["total_closed"], empty["total_pnl"], empty["max_drawdown"]) == (0, 0.0, 0.0)
    assert empty["avg_pnl"] is None and empty["event_list"] == []
    _trades(ops, key_id, RETURNS[:5])
    set_config(CC_MAX_LIVE_MARKDOWN_ROWS=3)  # the ops fixture resets the config after
    data = Live.get_data(XRP, STRATEGY, EXCHANGE)
    assert data["event_list"] == _rows_from_payloads(ops, key_id, 250)[-3:]
    assert [(r.action, r.signal_id) for r in data["event_list"]] == [
        ("closed", "t3"), ("opened", "t4"), ("closed", "t4")]
    assert data["total_closed"] == 5  # the statistics cover every trade, not the rows shown


def test_closes_made_by_ticks_keep_the_statistics_of_the_trades(ops: OpsEnv) -> None:
    """The tick's own write-back (key rows read with Core and written back by shape)."""
    admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t")
    for minute in range(90):
        Live.tick(XRP, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
    key_id = _key(ops)
    trades = Live._closed_trades(key_id)
    assert len(trades) >= 10
    data = Live.get_data(XRP, STRATEGY, EXCHANGE)
    _same(data, compute_statistics(trades))
    assert data["event_list"] == _rows_from_payloads(ops, key_id, 250)
    with session_scope(ops.engine) as session:
        key = session.get(StrategySymbol, key_id)
        assert key is not None
        assert key_statistics(key) == running_statistics(trades)


def test_a_close_dated_before_the_newest_is_folded_in_close_order(ops: OpsEnv) -> None:
    """An orders worker books an exit at its wall minute while ticks catch up on older
    minutes: a close can be stored after one dated later. The drawdown follows close time."""
    key_id = _key(ops)
    late = START + timedelta(days=20)
    _trade(ops, key_id, 0, 2.0, START, START + timedelta(days=1))
    _trade(ops, key_id, 1, -1.0, START, START + timedelta(days=2))
    _trade(ops, key_id, 2, -1.0, START, late)
    _trade(ops, key_id, 3, 3.0, START, late - timedelta(days=1))  # stored last, closed before
    # close order +2 −1 +3 −1: running 2 1 4 3, deepest fall 1 (arrival order would say 2)
    data = Live.get_data(XRP, STRATEGY, EXCHANGE)
    assert data["max_drawdown"] == pytest.approx(1.0, abs=1e-12)
    assert data["total_pnl"] == pytest.approx(3.0, abs=1e-12)
    _same(data, compute_statistics(Live._closed_trades(key_id)))
    _trade(ops, key_id, 4, -0.5, late, late + timedelta(hours=1))  # in order again
    _same(Live.get_data(XRP, STRATEGY, EXCHANGE), compute_statistics(Live._closed_trades(key_id)))


def test_the_report_rows_of_an_aged_key_are_an_index_only_scan_on_postgresql(
        pg_ops: OpsEnv) -> None:
    """"Newest N transitions of key K" walks `ix_event_key_kind_id` backwards from the key's
    newest event: no sort of the key's events, no scan of other keys' events, and once
    vacuum has marked the pages visible, no read of the table at all. Here 50 keys
    of 800 events each, interleaved in time as live keys write them, payloads of real size
    (a transition's payload is about 1 KB). (A key with only a few hundred events may be
    read by a bitmap scan and a sort of those few hundred: the planner's choice, bounded.)"""
    engine = pg_ops.engine
    with session_scope(engine) as session:
        session.add_all([StrategySymbol(strategy_name=STRATEGY, exchange_name=EXCHANGE,
                                        symbol=f"K{n}/ETH") for n in range(50)])
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO event (key_id, kind, action, message, created_at, payload)
            SELECT 1 + n % 50, CASE WHEN n % 10 = 0 THEN 'error' ELSE 'signal' END,
                   CASE WHEN n % 10 = 0 THEN NULL WHEN n % 2 = 0 THEN 'opened'
                        ELSE 'closed' END,
                   '', now() - n * interval '1 minute',
                   '{"note":"' || repeat('x', 1000) || '"}'
            FROM generate_series(1, 40000) AS n"""))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE event"))
        query = report_rows_query(7, 250).compile(dialect=postgresql.dialect(),
                                                  compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN ANALYZE {query}")))
    assert "Index Only Scan Backward using ix_event_key_kind_id on event" in plan, plan
    assert re.search(r"Index Cond: \(+key_id = 7\)", plan), plan
    assert "Heap Fetches: 0" in plan and "rows=250 " in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


def test_the_covering_index_holds_every_column_a_report_row_reads() -> None:
    table = EventRecord.__table__  # type: ignore[attr-defined]
    read = {element.name for element in visitors.iterate(report_rows_query(1, 1))
            if isinstance(element, Column) and element.table is table}
    assert read == {"key_id", "kind", "id", *REPORT_ROW_COLUMNS}
    index = next(i for i in table.indexes if i.name == "ix_event_key_kind_id")
    assert [c.name for c in index.columns] == ["key_id", "kind", "id"]
    assert tuple(index.dialect_options["postgresql"]["include"]) == REPORT_ROW_COLUMNS
    # on PostgreSQL only the events reports read are in it
    assert str(index.dialect_options["postgresql"]["where"]) == "kind = 'signal'"

"""`Live.tick` runs the worker's tick code in-process, on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bkit import UnknownNameError, listen_error
from bkit.live import Live
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import claim_key, ensure_key
from bkit.store.migrations import upgrade
from bkit.store.tables import EventRecord, SignalRecord, StrategySymbol, TickHistoryRecord
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)


@pytest.fixture
def runtime(in_process_runtime: Runtime) -> Runtime:
    return in_process_runtime


def test_live_tick_opens_once_per_minute_and_closes_with_history(runtime: Runtime) -> None:
    first = Live.tick("XRP/ETH", "it-long", "paper", START)
    assert first is not None and first.action == "opened"
    # The same minute again (even with seconds) is a no-op that changes nothing.
    assert Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(seconds=30)) is None
    actions = [first.action]
    for minute in range(1, 40):
        result = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=minute))
        assert result is not None
        actions.append(result.action)
    assert "closed" in actions
    with session_scope(get_engine()) as session:
        rows = list(session.execute(select(SignalRecord).order_by(SignalRecord.id)).scalars())
        signal_events = list(session.execute(select(EventRecord.action).where(
            EventRecord.kind == "signal").order_by(EventRecord.id)).scalars())
        ticks = list(session.execute(select(TickHistoryRecord.minute).order_by(
            TickHistoryRecord.id)).scalars())
        key = session.execute(select(StrategySymbol)).scalars().one()
    # one compact tick row per ticked minute, none for the duplicate; only the transitions
    # stay in the event log (SPEC §13)
    assert ticks == [int(START.timestamp() // 60) + m for m in range(40)]
    assert key.ticks_total == 40 and key.last_action == actions[-1]
    assert signal_events == [a for a in actions if a in ("scheduled", "opened", "closed",
                                                          "cancelled")]
    closed = [r for r in rows if r.state == "closed"]
    assert closed, "a closed trade stays in the table as history"
    assert sum(r.state in ("scheduled", "opened") for r in rows) <= 1
    assert actions.count("opened") == len(rows)
    data = Live.get_data("XRP/ETH", "it-long", "paper")
    assert data["total_closed"] == len(closed)
    assert data["total_pnl"] == pytest.approx(sum(r.pnl_percentage for r in closed), abs=1e-9)
    report = Live.get_report("XRP/ETH", "it-long", "paper")
    assert closed[0].signal_id in report


def test_unknown_names_raise_clear_errors_and_create_nothing(runtime: Runtime) -> None:
    with pytest.raises(UnknownNameError, match="no-such-strategy"):
        Live.tick("XRP/ETH", "no-such-strategy", "paper", START)
    with pytest.raises(UnknownNameError, match="no-such-exchange"):
        Live.tick("XRP/ETH", "it-long", "no-such-exchange", START)
    assert Live.list() == []


def test_a_minute_without_candles_is_an_error_event_and_the_next_minute_retries(
        runtime: Runtime) -> None:
    errors: list[dict] = []
    listen_error(errors.append)
    before_data = datetime(2019, 10, 10, 0, 0, tzinfo=UTC)  # before the sample starts
    assert Live.tick("XRP/ETH", "it-long", "paper", before_data) is None
    assert errors and "no closed candles" in errors[0]["message"]
    assert "XRP/ETH" in errors[0]["message"]
    assert Live.tick("XRP/ETH", "it-long", "paper", START) is not None


def test_claim_race_has_exactly_one_winner(runtime: Runtime) -> None:
    engine = get_engine()
    upgrade(engine)
    key_id = ensure_key(engine, "it-long", "paper", "XRP/ETH")
    wins: list[object] = []
    barrier = threading.Barrier(8)

    def contender(i: int) -> None:
        barrier.wait()
        claim = claim_key(engine, key_id, 1000, f"owner-{i}", 30)
        if claim is not None:
            wins.append(claim)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    # The lease blocks the next minute until released or expired.
    assert claim_key(engine, key_id, 1001, "late", 30) is None


def test_global_halt_blocks_new_entries_but_keeps_managing_open_positions(
        runtime: Runtime) -> None:
    from bkit.store.tables import BkitSetting

    opened = Live.tick("XRP/ETH", "it-long", "paper", START)
    assert opened is not None and opened.action == "opened"
    with session_scope(get_engine()) as session:
        session.add(BkitSetting(key="halt", value="1"))
    managed = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=1))
    assert managed is not None and managed.action in ("active", "closed")
    fresh = Live.tick("ETH/BTC-HALTED", "it-long", "paper", START + timedelta(minutes=1))
    assert fresh is not None and fresh.action == "idle" and fresh.signal is None
    with session_scope(get_engine()) as session:
        session.get(BkitSetting, "halt").value = "0"  # type: ignore[union-attr]
    resumed = Live.tick("ETH/BTC-HALTED", "it-long", "paper", START + timedelta(minutes=2))
    assert resumed is not None and resumed.action == "opened"


def test_hand_edited_impossible_row_is_quarantined_with_an_error_and_never_traded(
        runtime: Runtime) -> None:
    errors: list[dict] = []
    listen_error(errors.append)
    opened = Live.tick("XRP/ETH", "it-long", "paper", START)
    assert opened is not None and opened.action == "opened"
    with session_scope(get_engine()) as session:  # an operator's typo: SL above the entry
        record = session.execute(select(SignalRecord)).scalars().one()
        record.price_stop_loss = record.price_open * 2
    result = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=1))
    assert result is not None and result.action == "idle"
    with session_scope(get_engine()) as session:
        record = session.execute(select(SignalRecord)).scalars().one()
        closed_events = session.execute(select(func.count()).select_from(EventRecord).where(
            EventRecord.action == "closed")).scalar_one()
    assert record.state == "quarantined" and record.pnl_percentage is None
    assert closed_events == 0
    assert any("quarantined" in e["message"] and record.signal_id in e["message"]
               for e in errors)


@pytest.mark.parametrize("symbol", ["", "XRP ETH", "x" * 65, "BTC\tUSDT", "a\x00b"])
def test_malformed_symbols_are_refused_and_create_nothing(runtime: Runtime,
                                                          symbol: str) -> None:
    with pytest.raises(ValueError, match="symbol must be 1-64 printable characters"):
        Live.tick(symbol, "it-long", "paper", START)
    assert Live.list() == []


def test_a_stopped_flat_key_ticks_idle_not_none(runtime: Runtime) -> None:
    """SPEC §6: once stopped and flat, `Live.tick` on the key returns `idle`; None stays for
    a minute already ticked."""
    opened = Live.tick("XRP/ETH", "it-long", "paper", START)
    assert opened is not None and opened.action == "opened"
    Live.stop("XRP/ETH", "it-long", "paper")
    minute, actions = 1, []
    while "closed" not in actions:  # the open position runs to its close first
        result = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=minute))
        assert result is not None
        actions.append(result.action)
        minute += 1
        assert minute < 60
    finished = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=minute))
    assert finished is not None and finished.action == "idle"  # the drained key finishes
    later = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=minute + 1))
    assert later is not None and later.action == "idle" and later.signal is None
    assert later.current_price > 0
    assert later.created_at == START + timedelta(minutes=minute + 1)
    with session_scope(get_engine()) as session:
        assert session.execute(select(func.count()).select_from(SignalRecord)).scalar_one() == 1

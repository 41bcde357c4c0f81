"""`bkit.ops.admin` on a real PostgreSQL database: key changes, their event records, refusals that
change nothing, drain/pause semantics through real ticks, the halt switch and key status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bkit.core.registry import REGISTRY
from bkit.live import Live
from bkit.ops import admin
from bkit.store.engine import session_scope
from bkit.store.keys import is_halted
from bkit.store.tables import BkitSetting, EventRecord, StrategySymbol
from tests.ops.conftest import OpsEnv
from tests.ops.strategies_ops import EXCHANGE, OTHER_EXCHANGE, QUIET, START, STRATEGY

pytestmark = pytest.mark.integration
XRP, BTC = "XRP/ETH", "UNITTEST/BTC"


def _statuses(ops: OpsEnv) -> dict[tuple[str, str, str], str]:
    with session_scope(ops.engine) as session:
        return {(k.strategy_name, k.exchange_name, k.symbol): k.status
                for k in session.execute(select(StrategySymbol)).scalars()}


def _admin_events(ops: OpsEnv) -> list[EventRecord]:
    with session_scope(ops.engine) as session:
        return list(session.execute(select(EventRecord).where(EventRecord.kind == "admin")
                                    .order_by(EventRecord.id)).scalars())


def _counts(ops: OpsEnv) -> tuple[int, int]:
    with session_scope(ops.engine) as session:
        keys = session.execute(select(func.count()).select_from(StrategySymbol)).scalar_one()
        events = session.execute(select(func.count()).select_from(EventRecord)).scalar_one()
    return int(keys), int(events)


def _tick(symbol: str, minute: int) -> str | None:
    result = Live.tick(symbol, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))
    return None if result is None else result.action


def test_enable_creates_keys_then_reenables_and_records_who(pg_ops: OpsEnv) -> None:
    report = admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="alice@desk")
    assert [(c.symbol, c.before, c.after) for c in report.changes] == [
        (XRP, None, "enabled"), (BTC, None, "enabled")]
    assert report.changed_count == 2
    assert _statuses(pg_ops) == {(STRATEGY, EXCHANGE, XRP): "enabled",
                                 (STRATEGY, EXCHANGE, BTC): "enabled"}

    admin.change_status(STRATEGY, [BTC], "disabled", EXCHANGE, actor="bob@ops")
    again = admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="carol@ops")
    assert [(c.before, c.changed) for c in again.changes] == [("enabled", False),
                                                             ("disabled", True)]
    events = _admin_events(pg_ops)
    assert [(e.symbol, e.origin, (e.payload or {}).get("to")) for e in events] == [
        (XRP, "alice@desk", "enabled"), (BTC, "alice@desk", "enabled"),
        (BTC, "bob@ops", "disabled"), (BTC, "carol@ops", "enabled")]
    assert all(e.payload and e.payload["actor"] == e.origin and e.payload["at"]
               for e in events)
    assert "status disabled -> enabled" in events[-1].message


@pytest.mark.parametrize("call", [
    pytest.param(lambda: admin.enable_keys("no-such", [XRP], EXCHANGE, actor="t"),
                 id="unknown-strategy"),
    pytest.param(lambda: admin.enable_keys(STRATEGY, [XRP], "no-such-exchange", actor="t"),
                 id="unknown-exchange"),
    pytest.param(lambda: admin.enable_keys(STRATEGY, [BTC, "DOGE/USDT"], EXCHANGE, actor="t"),
                 id="symbol-the-exchange-lacks"),
    pytest.param(lambda: admin.enable_keys(STRATEGY, [XRP], None, actor="t"),
                 id="ambiguous-exchange"),
    pytest.param(lambda: admin.change_status(STRATEGY, [XRP, BTC], "paused", EXCHANGE,
                                             actor="t"), id="pause-missing-key"),
    pytest.param(lambda: admin.change_status(STRATEGY, [XRP], "draining", OTHER_EXCHANGE,
                                             actor="t"), id="drain-key-on-other-exchange"),
    pytest.param(lambda: admin.change_status(QUIET, None, "disabled", EXCHANGE, actor="t"),
                 id="all-keys-of-strategy-without-keys"),
])
def test_unknown_names_change_nothing(pg_ops: OpsEnv, call: object) -> None:
    admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="setup")
    before, statuses = _counts(pg_ops), _statuses(pg_ops)
    with pytest.raises(admin.UnknownTargetError):
        call()  # type: ignore[operator]
    assert _counts(pg_ops) == before
    assert _statuses(pg_ops) == statuses


def test_disable_refuses_a_live_position_unless_forced(pg_ops: OpsEnv) -> None:
    admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t")
    assert _tick(XRP, 0) == "opened"
    before = _counts(pg_ops)
    with pytest.raises(admin.AdminError, match="drain"):
        admin.change_status(STRATEGY, [XRP], "disabled", EXCHANGE, actor="t")
    assert _counts(pg_ops) == before
    assert _statuses(pg_ops)[(STRATEGY, EXCHANGE, XRP)] == "enabled"

    forced = admin.change_status(STRATEGY, [XRP], "disabled", EXCHANGE, actor="t", force=True)
    assert forced.changed_count == 1
    assert _tick(XRP, 1) is None  # a disabled key is not ticked any more


def test_drain_lets_the_position_close_then_the_key_disables_itself(pg_ops: OpsEnv) -> None:
    admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t")
    assert _tick(XRP, 0) == "opened"
    admin.change_status(STRATEGY, [XRP], "draining", EXCHANGE, actor="t")
    actions = [_tick(XRP, minute) for minute in range(1, 8)]
    assert "opened" not in actions  # no new signal while draining
    assert "closed" in actions  # the open position ran to its close (TP, SL or 4 minutes)
    assert _statuses(pg_ops)[(STRATEGY, EXCHANGE, XRP)] == "disabled"
    # once stopped and flat, a tick is `idle` (SPEC §6): the beat no longer ticks it
    assert actions[actions.index("closed") + 1:] == ["idle"] * (6 - actions.index("closed"))
    with session_scope(pg_ops.engine) as session:
        done = session.execute(select(func.count()).select_from(EventRecord).where(
            EventRecord.kind == "done")).scalar_one()
    assert done == 1


def test_pause_manages_open_positions_and_resume_only_touches_paused(pg_ops: OpsEnv) -> None:
    admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="t")
    assert _tick(XRP, 0) == "opened"
    admin.change_status(STRATEGY, [XRP], "paused", EXCHANGE, actor="t")
    admin.change_status(STRATEGY, [BTC], "disabled", EXCHANGE, actor="t")
    paused = [_tick(XRP, minute) for minute in range(1, 9)]
    assert "closed" in paused and "opened" not in paused
    assert all(action is not None for action in paused)  # a paused key is still ticked

    resumed = admin.change_status(STRATEGY, None, "enabled", EXCHANGE, actor="t",
                                  only_from=("paused",))
    assert {(c.symbol, c.before, c.after) for c in resumed.changes} == {
        (XRP, "paused", "enabled"), (BTC, "disabled", "disabled")}
    assert _tick(XRP, 9) == "opened"


def test_halt_is_stored_recorded_and_reported(pg_ops: OpsEnv) -> None:
    assert admin.halt_state() == admin.HaltState(False)
    assert admin.set_halt(True, actor="dana@ops", reason="exchange maintenance") is True
    assert admin.set_halt(True, actor="eve@ops") is False  # already halted: no new record
    with session_scope(pg_ops.engine) as session:
        assert session.get(BkitSetting, "halt").value == "1"  # type: ignore[union-attr]
        assert is_halted(session)
    state = admin.halt_state()
    assert (state.halted, state.actor, state.reason) == (True, "dana@ops",
                                                         "exchange maintenance")
    assert state.at is not None

    assert admin.set_halt(False, actor="frank@ops") is True
    with session_scope(pg_ops.engine) as session:
        assert not is_halted(session)
    events = [(e.action, e.origin, e.key_id) for e in _admin_events(pg_ops)]
    assert events == [("halt", "dana@ops", None), ("unhalt", "frank@ops", None)]
    assert admin.halt_state().actor == "frank@ops"


def test_key_status_figures_match_the_live_statistics(pg_ops: OpsEnv) -> None:
    admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="t")
    admin.enable_keys(QUIET, [XRP], EXCHANGE, actor="t")
    for minute in range(45):
        _tick(XRP, minute)
    Live.tick(XRP, QUIET, EXCHANGE, START)
    rows = {(k.strategy_name, k.symbol): k for k in admin.key_statuses()}
    xrp = rows[(STRATEGY, XRP)]
    data = Live.get_data(XRP, STRATEGY, EXCHANGE)
    assert data["total_closed"] >= 5
    assert xrp.closed_trades == data["total_closed"]
    assert xrp.win_rate == pytest.approx(data["win_rate"])
    assert xrp.total_pnl == pytest.approx(data["total_pnl"])
    assert xrp.last_tick_at == START + timedelta(minutes=44)
    assert xrp.last_tick_lag_ms is not None and xrp.last_tick_lag_ms > 0
    live = [s for s in Live.list() if s["symbol"] == XRP and s["strategy_name"] == STRATEGY]
    assert (xrp.signal_id, xrp.signal_state) == (live[0]["signal_id"],
                                                 live[0]["signal_state"])
    assert rows[(STRATEGY, BTC)].closed_trades == 0 and rows[(STRATEGY, BTC)].win_rate is None
    assert rows[(QUIET, XRP)].last_tick_at == START

    only = admin.key_statuses(QUIET)
    assert [(k.strategy_name, k.symbol) for k in only] == [(QUIET, XRP)]
    overview = {i.strategy_name: i for i in admin.strategies_overview(registry=REGISTRY)}
    assert sorted(k.symbol for k in overview[STRATEGY].keys) == sorted([XRP, BTC])
    assert overview[QUIET].interval == "1m"


def test_enable_refuses_a_default_cost_on_a_non_usd_quote_with_a_broker(pg_ops: OpsEnv) -> None:
    from bkit.broker import Broker
    from bkit.broker.paper_broker import PaperBroker

    Broker.use(EXCHANGE, PaperBroker(pg_ops.engine, exchange_name=EXCHANGE))
    try:
        before = _counts(pg_ops)
        with pytest.raises(admin.AdminError, match=r"XRP/ETH is quoted in ETH.*--explicit-cost"):
            admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t")
        assert _counts(pg_ops) == before  # nothing written
        report = admin.enable_keys(STRATEGY, [XRP], EXCHANGE, actor="t", explicit_cost=True)
        assert [c.symbol for c in report.changes] == [XRP]
    finally:
        Broker.clear()
    # signals only (no broker): nothing is ever sent, nothing to refuse
    assert admin.enable_keys(STRATEGY, [BTC], EXCHANGE, actor="t").changes


def test_enable_refuses_a_new_key_whose_symbol_is_not_a_ccxt_symbol(pg_ops: OpsEnv) -> None:
    from bkit.core.registry import add_exchange

    add_exchange("any-symbol", lambda *a: [], note="cannot tell its symbols")
    before = _counts(pg_ops)
    for bad in ("xrp/eth", "FOO", "BTC-USDT", "BTC/"):
        with pytest.raises(admin.UnknownTargetError, match="BASE/QUOTE"):
            admin.enable_keys(STRATEGY, [bad], "any-symbol", actor="t")
    assert _counts(pg_ops) == before
    assert admin.enable_keys(STRATEGY, ["FOO/BAR", "BTC/USDT:USDT"], "any-symbol",
                             actor="t").changes

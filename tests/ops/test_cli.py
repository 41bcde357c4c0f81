"""The real `bkit` console script as a subprocess: help, exit codes, key changes and what they
record, refusals that change nothing, halt, status, health and db upgrade (`bkit demo` is
run by `tests/integration/test_demo.py`)."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bkit.live import Live
from bkit.store.engine import session_scope
from bkit.store.keys import is_halted
from bkit.store.migrations import LATEST_VERSION
from bkit.store.tables import EventRecord, StrategySymbol
from tests.ops.conftest import OpsEnv
from tests.ops.strategies_ops import EXCHANGE, OTHER_EXCHANGE, QUIET, START, STRATEGY

XRP, BTC = "XRP/ETH", "UNITTEST/BTC"
COMMANDS = ("db", "demo", "strategies", "enable", "disable", "drain", "pause", "resume", "errors",
            "status", "halt", "unhalt", "report", "flower", "metrics", "health")


def _keys(ops: OpsEnv) -> dict[str, str]:
    with session_scope(ops.engine) as session:
        return {f"{k.strategy_name}/{k.exchange_name}/{k.symbol}": k.status
                for k in session.execute(select(StrategySymbol)).scalars()}


def _admin_origins(ops: OpsEnv) -> list[str | None]:
    with session_scope(ops.engine) as session:
        return [e.origin for e in session.execute(select(EventRecord).where(
            EventRecord.kind == "admin").order_by(EventRecord.id)).scalars()]


def test_help_and_usage_errors(sqlite_ops: OpsEnv) -> None:
    usage_errors = [[], ["bogus"], ["enable"], ["enable", STRATEGY], ["status", "--bogus"]]
    helped, no_target, *results = sqlite_ops.bkit_at_once(
        ["--help"], ["disable", STRATEGY, "--exchange", EXCHANGE], *usage_errors)
    assert helped.returncode == 0
    assert all(command in helped.stdout for command in COMMANDS)
    assert "Exit codes: 0 ok, 1 error" in helped.stdout
    for args, result in zip(usage_errors, results, strict=True):
        assert result.returncode == 2, args
        assert "usage: bkit" in result.stderr
    assert no_target.returncode == 2
    assert "--all" in no_target.stderr


def test_key_lifecycle_records_who_and_refuses_unknown_names(sqlite_ops: OpsEnv) -> None:
    listed = sqlite_ops.bkit("strategies")
    assert listed.returncode == 0, listed.stderr
    assert STRATEGY in listed.stdout and QUIET in listed.stdout
    assert f"exchanges: {EXCHANGE}, {OTHER_EXCHANGE}" in listed.stdout

    enabled = sqlite_ops.bkit("enable", STRATEGY, XRP, BTC, "--exchange", EXCHANGE,
                              "--actor", "alice@desk")
    assert enabled.returncode == 0, enabled.stderr
    assert f"enable {STRATEGY}/{EXCHANGE}/{XRP}: new key -> enabled" in enabled.stdout
    assert _keys(sqlite_ops) == {f"{STRATEGY}/{EXCHANGE}/{XRP}": "enabled",
                                 f"{STRATEGY}/{EXCHANGE}/{BTC}": "enabled"}

    refused = [
        (["enable", "no-such", XRP, "--exchange", EXCHANGE], "unknown strategy 'no-such'"),
        (["enable", STRATEGY, XRP, "--exchange", "nowhere"], "unknown exchange 'nowhere'"),
        (["enable", STRATEGY, "DOGE/USDT", "--exchange", EXCHANGE], "no symbol 'DOGE/USDT'"),
        (["enable", STRATEGY, XRP], "pass --exchange NAME"),
        (["pause", STRATEGY, XRP, "ETH/BTC", "--exchange", EXCHANGE], "'ETH/BTC'"),
        (["drain", QUIET, "--all", "--exchange", EXCHANGE], "has no keys"),
    ]
    before = (_keys(sqlite_ops), _admin_origins(sqlite_ops))
    results = sqlite_ops.bkit_at_once(*(args for args, _message in refused))
    for (args, message), result in zip(refused, results, strict=True):
        assert (result.returncode, result.stdout) == (2, ""), args
        assert message in result.stderr, (args, result.stderr)
    assert (_keys(sqlite_ops), _admin_origins(sqlite_ops)) == before

    env_user = {"USER": "tester"}
    paused = sqlite_ops.bkit("pause", STRATEGY, XRP, "--exchange", EXCHANGE, **env_user)
    assert paused.returncode == 0, paused.stderr
    assert f"pause {STRATEGY}/{EXCHANGE}/{XRP}: enabled -> paused" in paused.stdout
    resumed = sqlite_ops.bkit("resume", STRATEGY, "--all", "--exchange", EXCHANGE)
    assert "1 of 2 keys changed" in resumed.stdout
    drained = sqlite_ops.bkit("drain", STRATEGY, BTC, "--exchange", EXCHANGE)
    assert drained.returncode == 0
    disabled = sqlite_ops.bkit("disable", STRATEGY, XRP, "--exchange", EXCHANGE)
    assert disabled.returncode == 0, disabled.stderr
    assert _keys(sqlite_ops) == {f"{STRATEGY}/{EXCHANGE}/{XRP}": "disabled",
                                 f"{STRATEGY}/{EXCHANGE}/{BTC}": "draining"}
    origins = _admin_origins(sqlite_ops)
    assert origins[:2] == ["alice@desk", "alice@desk"]
    assert origins[2] == f"tester@{socket.gethostname()}"
    assert len(origins) == 6  # 2 created, paused, resumed, draining, disabled

    status = sqlite_ops.bkit("status", STRATEGY)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == "trading: running (not halted)"
    assert lines[1].split() == ["STRATEGY", "EXCHANGE", "SYMBOL", "STATUS", "LIVE", "SIGNAL",
                                "LAST", "TICK", "(UTC)", "LAG", "CLOSED", "WIN", "%", "PNL",
                                "%", "REALISED", "LAST", "ERROR"]
    assert [line.split()[2:4] for line in lines[3:]] == [[BTC, "draining"], [XRP, "disabled"]]


def test_disable_with_an_open_position_exits_1_until_forced(sqlite_ops: OpsEnv) -> None:
    assert sqlite_ops.bkit("enable", STRATEGY, XRP, "--exchange", EXCHANGE).returncode == 0
    Live.tick(XRP, STRATEGY, EXCHANGE, START)
    refused = sqlite_ops.bkit("disable", STRATEGY, XRP, "--exchange", EXCHANGE)
    assert refused.returncode == 1
    assert "bkit drain" in refused.stderr and "--force" in refused.stderr
    assert _keys(sqlite_ops)[f"{STRATEGY}/{EXCHANGE}/{XRP}"] == "enabled"
    status = json.loads(sqlite_ops.bkit("status", "--json").stdout)
    key = status["keys"][0]
    assert (key["signal_state"], key["position"]) == ("opened", "long")
    assert key["last_tick_at"].startswith(START.isoformat()[:16])
    forced = sqlite_ops.bkit("disable", STRATEGY, XRP, "--exchange", EXCHANGE, "--force")
    assert forced.returncode == 0, forced.stderr
    assert Live.tick(XRP, STRATEGY, EXCHANGE, START + timedelta(minutes=1)) is None


def test_halt_and_unhalt_are_stored_and_shown_by_status(sqlite_ops: OpsEnv) -> None:
    halted = sqlite_ops.bkit("halt", "--reason", "exchange incident", "--actor", "ops@pager")
    assert (halted.returncode, halted.stdout.strip()) == (0, "trading halted")
    with session_scope(sqlite_ops.engine) as session:
        assert is_halted(session)
    status = sqlite_ops.bkit("status")
    assert status.stdout.startswith("TRADING HALTED by ops@pager at ")
    assert "exchange incident" in status.stdout.splitlines()[0]
    data = json.loads(sqlite_ops.bkit("status", "--json").stdout)
    assert data["halted"] is True and data["halt"]["actor"] == "ops@pager"
    again = sqlite_ops.bkit("halt")
    assert again.stdout.strip() == "trading halted (unchanged)"

    assert sqlite_ops.bkit("unhalt", "--actor", "ops@pager").returncode == 0
    with session_scope(sqlite_ops.engine) as session:
        assert not is_halted(session)
    assert sqlite_ops.bkit("status").stdout.startswith("trading: running")
    assert json.loads(sqlite_ops.bkit("status", "--json").stdout)["halted"] is False


def test_db_upgrade_health_and_broken_strategy_modules(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    env = OpsEnv(home, f"sqlite:///{home / 'bkit.sqlite'}")
    latest = LATEST_VERSION
    first = env.bkit("db", "upgrade")
    assert (first.returncode, first.stdout.strip()) == (0, f"database schema: empty -> {latest}")
    second, healthy, no_beat = env.bkit_at_once(["db", "upgrade"], ["health"],
                                                ["health", "--beat-max-age", "60"])
    assert second.stdout.strip() == f"database schema: {latest} -> {latest}"
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy")
    assert no_beat.returncode == 1 and "beat schedule" in no_beat.stdout

    down = env.bkit("health", BKIT_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert down.returncode == 1 and down.stdout.startswith("unhealthy: database")
    broken = env.bkit("strategies", BKIT_STRATEGIES="tests.ops.no_such_module")
    assert broken.returncode == 1
    assert "cannot import strategy module 'tests.ops.no_such_module'" in broken.stderr


def test_failing_ticks_show_in_the_log_in_status_and_in_errors(
        sqlite_ops: OpsEnv, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from datetime import UTC, datetime

    from bkit.ticking import failure_log

    failure_log._last.clear()
    caplog.set_level(logging.WARNING, logger="bkit.tick")
    late = datetime(2026, 1, 1, tzinfo=UTC)  # the live clock, candles from 2019: no price
    for minute in range(3):
        assert Live.tick(XRP, STRATEGY, EXCHANGE, late + timedelta(minutes=minute)) is None
    lines = [r.getMessage() for r in caplog.records if "tick failed" in r.getMessage()]
    # one line with the reason; the next failures of the key within 10 minutes are counted
    assert len(lines) == 1, lines
    assert f"{XRP}·{STRATEGY}@{EXCHANGE} minute 2026-01-01T00:00Z" in lines[0]
    assert "candles" in lines[0] and "BKIT_REPLAY_START" in lines[0]  # says how to fix it
    bad_symbols = ("xrp/eth", "FOO", "BTC-USDT")  # not ccxt symbols: refused, nothing written
    status, listed, bad_since, *refusals = sqlite_ops.bkit_at_once(
        ["status"], ["errors", STRATEGY, XRP], ["errors", "--since", "bogus"],
        *(["enable", STRATEGY, bad, "--exchange", EXCHANGE] for bad in bad_symbols))
    assert status.returncode == 0, status.stderr
    assert "1 key(s) FAILING" in status.stdout
    assert "NOW 2026-01-01 00:02" in status.stdout and "candles" in status.stdout
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("no closed candles to price from") == 3
    assert bad_since.returncode == 2
    for bad, refused in zip(bad_symbols, refusals, strict=True):
        assert refused.returncode == 2, bad  # the paper exchange knows its symbols
        assert "has no symbol" in refused.stderr or "BASE/QUOTE" in refused.stderr, bad
    # a strategy module that does not import is an error, not a silent empty status
    broken = sqlite_ops.bkit("status", BKIT_STRATEGIES="tests.integration.broken_strategy")
    assert broken.returncode == 1
    assert "broken_strategy" in broken.stderr


def test_position_commands_from_the_admin_script_are_applied_and_audited(
        sqlite_ops: OpsEnv) -> None:
    assert sqlite_ops.bkit("enable", STRATEGY, XRP, "--exchange", EXCHANGE).returncode == 0
    assert Live.tick(XRP, STRATEGY, EXCHANGE, START).action == "opened"  # type: ignore[union-attr]
    queued = sqlite_ops.bkit("trail", STRATEGY, XRP, "--exchange", EXCHANGE, "--shift", "-0.3",
                             "--actor", "carol@ops")
    assert queued.returncode == 0, queued.stderr
    assert "trailing_stop -0.3 queued" in queued.stdout
    refused = sqlite_ops.bkit("partial", STRATEGY, XRP, "--exchange", EXCHANGE,
                              "--percent", "150")
    assert refused.returncode == 0  # queued; the tick refuses it with the rule
    assert sqlite_ops.bkit("dca", STRATEGY, "NOPE/ETH", "--exchange", EXCHANGE).returncode == 2
    result = Live.tick(XRP, STRATEGY, EXCHANGE, START + timedelta(minutes=1))
    assert result is not None and result.signal is not None
    with session_scope(sqlite_ops.engine) as session:
        admin = [e for e in session.execute(select(EventRecord).where(
            EventRecord.kind == "admin")).scalars() if e.action == "command"]
        errors = [e.message for e in session.execute(select(EventRecord).where(
            EventRecord.kind == "error")).scalars()]
    assert len(admin) == 2 and admin[0].origin == "carol@ops"
    assert any("partial profit refused: percent must be" in m for m in errors)

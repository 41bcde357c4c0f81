"""Bad input, fuzzed with hypothesis: each gets a clear error and loses nothing.

- What a strategy returns, through the real tick (`Live.tick`, SQLite, paper exchange).
- What a candle feed sends, through a custom `get_candles` registered with `add_exchange`.
- What `set_config` is given.
- What the admin script is given, through the real `bkit` console script.
- Stored signal rows edited by hand into impossible trades (PostgreSQL, paper broker).
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update
from sqlmodel import SQLModel, col

from bkit import set_config
from bkit.broker import Broker
from bkit.broker.paper_broker import PaperBroker
from bkit.broker.registry import broker_for
from bkit.clock import ManualClock
from bkit.core.candles import to_ms
from bkit.core.config import CONFIG_KEYS
from bkit.core.errors import ConfigError
from bkit.core.registry import add_exchange, add_strategy, get_config, reset_config
from bkit.exchange.paper import add_paper_exchange
from bkit.live import Live
from bkit.orders import OrdersEnv, submit_intent
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import EventRecord, OrderIntent, SignalRecord, StrategySymbol
from tests.e2e.fuzz_inputs import (
    MUST_SUCCEED,
    PWNED,
    SYMBOL_PREFIX,
    Answer,
    admin_argv,
    candle_feeds,
    check_stored_signal,
    config_keys,
    config_values,
    good_window,
    impossible_edit,
    impossible_edits,
    judge_feed,
    strategy_answers,
)
from tests.e2e.sec_canary_flow import BKIT, PG_ADMIN, REPO, START, reset_process_state

AFTER_SAMPLE = datetime(2019, 10, 14, tzinfo=UTC)
_symbols = itertools.count()
FUZZ = settings(deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def fresh_symbol() -> str:
    """A symbol never ticked before in this process: each example gets a key of its own."""
    return f"{SYMBOL_PREFIX}{next(_symbols):05d}/ETH"


def _use_database(monkeypatch: pytest.MonkeyPatch, home: Path, url: str) -> None:
    for name in [k for k in os.environ if k.startswith("BKIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BKIT_HOME", str(home))
    monkeypatch.setenv("BKIT_DATABASE_URL", url)
    reset_process_state()


@pytest.fixture
def sqlite_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SQLite database and registry; a paper exchange whose clock stands after the
    shipped sample, so every candle before a tick's minute has closed."""
    _use_database(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'bkit.sqlite'}")
    add_paper_exchange("paper", clock=ManualClock(AFTER_SAMPLE))
    yield tmp_path
    reset_process_state()


def _key_id(symbol: str, strategy_name: str) -> int | None:
    with session_scope(get_engine()) as session:
        return session.execute(select(col(StrategySymbol.id)).where(
            StrategySymbol.symbol == symbol,
            StrategySymbol.strategy_name == strategy_name)).scalar()


def _signals(key_id: int | None) -> list[SignalRecord]:
    with session_scope(get_engine()) as session:
        return list(session.execute(select(SignalRecord).where(
            SignalRecord.key_id == key_id).order_by(SignalRecord.id)).scalars())


def _events(key_id: int | None, kind: str | None = None, action: str | None = None
            ) -> list[EventRecord]:
    with session_scope(get_engine()) as session:
        stmt = select(EventRecord).where(EventRecord.key_id == key_id).order_by(EventRecord.id)
        if kind is not None:
            stmt = stmt.where(EventRecord.kind == kind)
        if action is not None:
            stmt = stmt.where(EventRecord.action == action)
        return list(session.execute(stmt).scalars())


def _tick(symbol: str, strategy_name: str, exchange_name: str, when: datetime) -> Any:
    """`Live.tick`, where any exception is a crash the test reports."""
    try:
        return Live.tick(symbol, strategy_name, exchange_name, when)
    except Exception as exc:  # pragma: no cover - only on failure
        pytest.fail(f"tick of {symbol} at {when:%H:%M} crashed: {type(exc).__name__}: "
                    f"{str(exc)[:300]}")


# ----------------------------------------------------------------------------------------
# Strategy return values
# ----------------------------------------------------------------------------------------


class Answers:
    """The registered strategy: returns, per symbol, what the current example says."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, list[Answer]] = {}
        self.given: dict[str, Any] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, symbol: str, when: datetime, price: float) -> Any:
        self.calls[symbol] = self.calls.get(symbol, 0) + 1
        queue = self.by_symbol[symbol]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        self.given[symbol] = answer.build(price)
        return self.given[symbol]


@pytest.fixture
def answers(sqlite_live: Path) -> Answers:
    strategy = Answers()
    add_strategy("fz-answer", strategy, interval="1m")
    return strategy


def _given_fields(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {
        f: getattr(value, f) for f in ("position", "price_take_profit", "price_stop_loss",
                                       "price_open")}


@pytest.mark.integration
@settings(FUZZ, max_examples=150)
@given(answer=strategy_answers())
def test_a_strategy_answer_is_stored_valid_or_rejected_with_a_reason(
        answers: Answers, answer: Answer) -> None:
    symbol = fresh_symbol()
    answers.by_symbol[symbol] = [answer]
    result = _tick(symbol, "fz-answer", "paper", START)
    assert result is not None
    key_id = _key_id(symbol, "fz-answer")
    stored, errors = _signals(key_id), _events(key_id, kind="error")
    event(f"{result.action}{' (must fail)' if answer.must_fail else ''}")
    if result.action in ("opened", "scheduled"):
        assert not answer.must_fail, f"stored a signal SPEC §3 forbids: {answers.given[symbol]}"
        assert len(stored) == 1 and errors == []
        assert stored[0].state == result.action and stored[0].signal_id == result.signal.id
        check_stored_signal(stored[0], _given_fields(answers.given[symbol]),
                            result.current_price)
    else:
        assert result.action == "idle" and result.signal is None
        assert stored == [], "a rejected answer stores nothing"
        assert len(errors) == 1, [e.message for e in errors]
        assert errors[0].message.startswith("invalid signal: ")
        assert errors[0].payload and errors[0].payload["stage"] == "validation"
        assert errors[0].payload["reasons"] and all(errors[0].payload["reasons"])
        assert errors[0].symbol == symbol


def _trade_fields(record: SignalRecord) -> tuple[Any, ...]:
    return (record.signal_id, record.position, record.price_open, record.price_take_profit,
            record.price_stop_loss, record.minute_estimated_time, record.cost, record.note,
            record.pending_at)


@pytest.mark.integration
@settings(FUZZ, max_examples=25)
@given(junk=st.lists(strategy_answers(junk=True), min_size=1, max_size=3))
def test_junk_after_a_trade_never_touches_the_position_or_its_history(
        answers: Answers, junk: list[Answer]) -> None:
    """The strategy is not asked while its position is open; once closed, its junk answers
    are error events and change nothing stored."""
    symbol = fresh_symbol()
    entry = Answer(lambda price: {"position": "long", "price_take_profit": price * 1.01,
                                  "price_stop_loss": price * 0.99,
                                  "minute_estimated_time": 3}, False, "valid entry")
    answers.by_symbol[symbol] = [entry, *junk]
    opened = _tick(symbol, "fz-answer", "paper", START)
    assert opened is not None and opened.action == "opened"
    key_id = _key_id(symbol, "fz-answer")
    (record,) = _signals(key_id)
    trade = _trade_fields(record)
    minute, closed_at = 1, None
    while closed_at is None:
        assert minute <= 3, "a 3-minute trade closes by time at the latest"
        result = _tick(symbol, "fz-answer", "paper", START + timedelta(minutes=minute))
        assert result is not None and result.action in ("active", "closed")
        (record,) = _signals(key_id)
        assert _trade_fields(record) == trade, "an open position's trade never changes"
        assert answers.calls[symbol] == 1, "the strategy is not asked while a position is open"
        closed_at = minute if result.action == "closed" else None
        minute += 1
    history = _signals(key_id)
    for later in range(closed_at + 1, closed_at + 4):
        result = _tick(symbol, "fz-answer", "paper", START + timedelta(minutes=later))
        assert result is not None and result.action == "idle" and result.signal is None
    assert answers.calls[symbol] == 4  # the entry, then one junk answer per flat minute
    assert _signals(key_id) == history, "the closed trade and nothing else is stored"
    assert history[0].state == "closed" and history[0].pnl_percentage is not None
    errors = _events(key_id, kind="error")
    assert len(errors) == 3 and all(e.message.startswith("invalid signal: ") for e in errors)


# ----------------------------------------------------------------------------------------
# Candle feeds
# ----------------------------------------------------------------------------------------


class Feed:
    """A custom `get_candles`: per (symbol, since) a scripted answer, else a sane window."""

    def __init__(self) -> None:
        self.scripted: dict[tuple[str, int], list[Any]] = {}

    def __call__(self, symbol: str, interval: str, since: datetime, limit: int) -> list[Any]:
        assert interval == "1m" and limit == 5
        return self.scripted.get((symbol, to_ms(since)), good_window(to_ms(since)))


def always_long(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    return {"position": "long", "price_take_profit": price * 1.01,
            "price_stop_loss": price * 0.99, "minute_estimated_time": 30,
            "cost": 0.1}  # in the quote coin (ETH): no default USD cost on a non-USD quote


@pytest.fixture
def feed(sqlite_live: Path) -> Feed:
    source = Feed()
    add_exchange("fz-feed", source)
    add_strategy("fz-long", always_long, interval="1m")
    return source


SINCE_MS = to_ms(START - timedelta(minutes=5))


@pytest.mark.integration
@settings(FUZZ, max_examples=150)
@given(scripted=candle_feeds(SINCE_MS))
def test_bad_candles_fail_the_tick_naming_symbol_and_candle_then_the_next_minute_trades(
        feed: Feed, scripted: tuple[list[Any], list[str]]) -> None:
    rows, _edits = scripted
    symbol = fresh_symbol()
    feed.scripted[(symbol, SINCE_MS)] = rows
    verdict = judge_feed(rows, SINCE_MS, to_ms(START))
    result = _tick(symbol, "fz-long", "fz-feed", START)
    key_id = _key_id(symbol, "fz-long")
    event(verdict.kind)
    if verdict.kind == "price":
        assert result is not None and result.action == "opened", result
        assert result.current_price == pytest.approx(verdict.price, rel=1e-9)
        assert _events(key_id, kind="error") == []
        return
    assert result is None, "a tick without a trustworthy price does nothing"
    assert _signals(key_id) == [] and _events(key_id, action="opened") == []
    (error,) = _events(key_id, kind="error")
    assert error.symbol == symbol and symbol in error.message
    if verdict.kind == "bad":
        assert str(verdict.timestamp) in error.message, (error.message, verdict)
    else:
        assert "no closed candles" in error.message
    retried = _tick(symbol, "fz-long", "fz-feed", START + timedelta(minutes=1))
    assert retried is not None and retried.action == "opened"


# ----------------------------------------------------------------------------------------
# set_config
# ----------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(changes=st.dictionaries(config_keys, config_values, max_size=4), unsafe=st.booleans(),
       base=st.dictionaries(st.sampled_from(["CC_PERCENT_FEE", "CC_PERCENT_SLIPPAGE",
                                             "CC_MIN_TAKEPROFIT_DISTANCE_PERCENT"]),
                            st.floats(0.5, 2.0), max_size=2))
@example(changes={"CC_PERCENT_FEE": 10**400}, unsafe=False, base={})
@example(changes={"CC_MAX_SIGNAL_LIFETIME_MINUTES": -(10**5000)}, unsafe=True, base={})
@example(changes={"CC_POSITION_ENTRY_COST": 10**5000}, unsafe=True, base={})
def test_a_rejected_config_change_raises_config_error_and_keeps_the_config(
        changes: dict[str, Any], unsafe: bool, base: dict[str, float]) -> None:
    reset_config()
    set_config(unsafe=True, **base)  # start from a non-default config sometimes
    before = get_config()
    try:
        after = set_config(unsafe=unsafe, **changes)
    except ConfigError as exc:
        event("rejected")
        assert str(exc), "the error says what was wrong"
        assert get_config() is before and get_config().as_dict() == before.as_dict()
        return
    event("accepted")
    assert after is not before and set(changes) <= set(CONFIG_KEYS)
    values = after.as_dict()
    for key, value in changes.items():
        if isinstance(values[key], bool | str):  # a switch or a choice takes only its kind
            assert type(value) is type(values[key]) and values[key] == value
            continue
        assert not isinstance(value, bool) and values[key] == value
        assert math.isfinite(values[key]) and values[key] >= 0
    assert all(values[k] == v for k, v in before.as_dict().items() if k not in changes)
    assert get_config() is after
    assert after.CC_MIN_STOPLOSS_DISTANCE_PERCENT < after.CC_MAX_STOPLOSS_DISTANCE_PERCENT
    if not unsafe:
        assert 0 < after.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT
        assert after.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT >= after.round_trip_cost_percent - 1e-9


# ----------------------------------------------------------------------------------------
# The admin script
# ----------------------------------------------------------------------------------------


def _dump(engine: Engine) -> list[tuple[Any, ...]]:
    """The key, event and signal tables, every column, for before/after comparisons."""
    with engine.connect() as conn:
        return [(name, *row) for name in ("strategy_symbol", "event", "signal")
                for row in conn.execute(select(SQLModel.metadata.tables[name])).all()]


@pytest.fixture
def admin_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A SQLite database with one enabled key, and the env for the real `bkit` script."""
    url = f"sqlite:///{tmp_path / 'bkit.sqlite'}"
    _use_database(monkeypatch, tmp_path, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BKIT_", "FLOWER_"))}
    env.update({"BKIT_HOME": str(tmp_path), "BKIT_DATABASE_URL": url,
                "BKIT_STRATEGIES": "tests.e2e.fuzz_strategies", "PYTHONUNBUFFERED": "1"})
    created = _run_bkit(env, ["enable", "fz-trend", "XRP/ETH", "--exchange", "fz-paper"])
    assert created.returncode == 0, created.stderr
    yield env
    reset_process_state()


def _run_bkit(env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BKIT), *argv], cwd=REPO, env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=60, check=False)


@pytest.mark.integration
@settings(FUZZ, max_examples=6)  # each example is a `bkit` process (~1.4 s)
@given(case=admin_argv())
@example(case=(["enable", "no-such-strategy", "XRP/ETH", "--exchange", "fz-paper"], True))
@example(case=(["pause", "fz-trend", f"$(touch {PWNED});`id`", "--exchange", "fz-paper"],
               True))
@example(case=(list(MUST_SUCCEED[0]), False))
@example(case=(list(MUST_SUCCEED[1]), False))
@example(case=(list(MUST_SUCCEED[2]), False))
@example(case=(list(MUST_SUCCEED[3]), False))
@example(case=(["disable", "fz-trend", "XRP/ETH", "--exchange", "ｆｚ-paper"], True))
@example(case=(["enable", "fz-trend", "x" * 300, "--exchange", "fz-paper"], True))
@example(case=(["drain", "fz-trend", "XRP/ETH"], True))  # two exchanges: --exchange needed
def test_admin_script_arguments_never_crash_and_unknown_names_change_nothing(
        admin_db: dict[str, str], case: tuple[list[str], bool]) -> None:
    argv, unknown = case
    engine = get_engine()
    before = _dump(engine)
    done = _run_bkit(admin_db, argv)
    event(f"exit {done.returncode}")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode in (0, 1, 2), (done.returncode, done.stderr[-500:])
    if tuple(argv) in MUST_SUCCEED:
        assert done.returncode == 0, (argv, done.stderr)
    if unknown:
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert done.stderr.strip(), "an unknown name is explained on stderr"
    if done.returncode != 0:  # README: on 1 and 2 nothing changed
        assert _dump(engine) == before, argv
    assert not PWNED.exists(), "no argument ever reaches a shell"


# ----------------------------------------------------------------------------------------
# Hand-edited rows
# ----------------------------------------------------------------------------------------


@pytest.fixture
def pg_paper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A fresh PostgreSQL database, the paper exchange with the paper broker, and the
    intents each tick hands to the orders queue (recorded, sent by the test itself)."""
    name = f"bkit_fz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _use_database(monkeypatch, tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    add_paper_exchange("paper", clock=ManualClock(AFTER_SAMPLE))
    add_strategy("fz-long", always_long, interval="1m")
    Broker.use("paper", PaperBroker(get_engine(), exchange_name="paper"))
    enqueued: list[int] = []
    import bkit.live

    monkeypatch.setattr(bkit.live, "enqueue_submit", enqueued.append)
    try:
        yield enqueued
    finally:
        reset_process_state()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _send(enqueued: list[int]) -> None:
    """What the orders worker does with each enqueued intent."""
    env = OrdersEnv(engine=get_engine(), clock=ManualClock(START), brokers=broker_for,
                    enqueue=lambda _intent, _delay: None)
    while enqueued:
        assert submit_intent(env, enqueued.pop(0)) == "filled"


@pytest.mark.integration
@settings(FUZZ, max_examples=20)
@given(edit=impossible_edits)
def test_a_hand_edited_impossible_row_is_quarantined_never_traded_and_the_key_trades_again(
        pg_paper: list[int], edit: tuple[str, Any]) -> None:
    symbol = fresh_symbol()
    first = _tick(symbol, "fz-long", "paper", START)
    assert first is not None and first.signal is not None
    _send(pg_paper)
    key_id = _key_id(symbol, "fz-long")
    (record,) = _signals(key_id)
    assert record.state == "opened"
    changes = impossible_edit(*edit, record)
    with session_scope(get_engine()) as session:  # an operator's edit in psql
        session.execute(update(SignalRecord).where(SignalRecord.id == record.id)
                        .values(**changes))
    result = _tick(symbol, "fz-long", "paper", START + timedelta(minutes=1))
    assert result is not None and result.action == "idle"
    (held,) = _signals(key_id)
    assert held.state == "quarantined", changes
    for name, value in changes.items():
        stored = getattr(held, name)
        nan = isinstance(value, float) and math.isnan(value)
        assert (math.isnan(stored) if nan else stored == value), (name, stored, value)
    errors = [e for e in _events(key_id, kind="error") if "quarantined" in e.message]
    assert len(errors) == 1 and record.signal_id in errors[0].message
    assert _events(key_id, action="closed") == []
    with session_scope(get_engine()) as session:
        intents = list(session.execute(select(OrderIntent).where(
            OrderIntent.key_id == key_id)).scalars())
    assert [(i.kind, i.signal_id) for i in intents] == [("open", record.signal_id)]
    assert pg_paper == [], "no order was handed to the orders queue"

    again = _tick(symbol, "fz-long", "paper", START + timedelta(minutes=2))
    assert again is not None and again.signal is not None
    assert again.signal.id != record.signal_id
    _send(pg_paper)
    records = _signals(key_id)
    assert [r.state for r in records] == ["quarantined", "opened"]
    assert repr(_trade_fields(records[0])) == repr(_trade_fields(held)), "left as found"


@pytest.mark.integration
def test_a_note_postgresql_cannot_store_is_a_rejection_not_a_crashed_tick(
        pg_paper: list[int]) -> None:
    """A NUL character in the note: PostgreSQL text cannot hold it, so the signal is
    rejected with a reason (before, the write-back failed and the tick raised every minute)."""
    def nul_note(symbol: str, when: datetime, price: float) -> dict[str, Any]:
        return {**always_long(symbol, when, price), "note": "momentum\x00 +1 %"}

    add_strategy("fz-nul-note", nul_note, interval="1m")
    symbol = fresh_symbol()
    for minute in range(2):
        result = _tick(symbol, "fz-nul-note", "paper", START + timedelta(minutes=minute))
        assert result is not None and result.action == "idle" and result.signal is None
    key_id = _key_id(symbol, "fz-nul-note")
    assert _signals(key_id) == [] and pg_paper == []
    errors = _events(key_id, kind="error")
    assert len(errors) == 2 and all("NUL" in e.message for e in errors)

"""The tick, as DESIGN "The tick", for one key or a batch of keys (the worker tasks and
`Live.tick` all call `run_ticks`; a lone key is a batch of one):

1. claim the keys for the minute (one conditional UPDATE, committed at once);
2. outside any transaction: price (VWAP) and, if the state machine asks, `get_signal`;
3. one short transaction: lock the keys in id order (`SELECT … FOR UPDATE`), check each
   fencing version, apply the pure state machine, write signals, risk slots, events and any
   order intents, release the leases, commit;
4. after commit: strategy callbacks, listeners of this process, enqueue order submits.

Batching changes the cost, not the semantics: each key is claimed, fenced and written exactly
as if alone, and a key whose write-back fails is retried alone so it cannot hold back others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from bkit import events
from bkit.broker.base import OrderBroker
from bkit.clock import Clock
from bkit.core.callbacks import run_callbacks
from bkit.core.candles import floor_to_minute
from bkit.core.config import Config
from bkit.core.errors import BkitError
from bkit.core.machine import (
    KeyContext,
    KeyState,
    Sizer,
    StrategyAnswer,
    TickOutcome,
    advance,
    wants_signal,
)
from bkit.core.position_commands import PositionCommand
from bkit.core.registry import REGISTRY, Registry, RiskSchema, StrategySchema, get_config
from bkit.core.results import CallbackCall, Notice, TickResult
from bkit.core.risk import risk_verdict
from bkit.core.signals import PublicSignal, SignalRow, ValidSignal, given_signal_id
from bkit.core.sizing import entry_sizer
from bkit.faults import crash_point
from bkit.pricing import tick_price_and_touch
from bkit.sizing_inputs import live_inputs
from bkit.store import signal_rows
from bkit.store.commands import mark_commands, orders_in_flight, pending_commands
from bkit.store.engine import DatabaseUnavailableError, session_scope
from bkit.store.event_log import (
    count_errors,
    event_as_dict,
    notice_event,
    result_as_dict,
    result_payload,
)
from bkit.store.id_lists import ids_in
from bkit.store.keys import (
    Claim,
    claim_keys,
    hand_back,
    is_halted,
    lock_keys,
    release_claim,
)
from bkit.store.outcomes import BatchInserts, store_outcome
from bkit.store.row_updates import LoadedRow, write_rows
from bkit.store.tables import (
    EventRecord,
    RiskBudget,
    RiskSlot,
)
from bkit.store.tick_history import (
    TRANSITIONS,
    history_row,
    insert_feed,
    insert_history,
    listeners_present,
)

log = logging.getLogger("bkit.tick")


@dataclass
class TickEnv:
    """What a tick needs from its process: database, clock, registry and broker hooks."""

    engine: Engine
    clock: Clock
    registry: Registry = REGISTRY
    config: Callable[[], Config] = get_config
    lease_seconds: float = 55.0
    #: The order broker of an exchange, or None: signals only (SPEC §8).
    brokers: Callable[[str], OrderBroker | None] = lambda _name: None
    enqueue_order: Callable[[int], None] | None = None
    #: Restored-signal detection: key id → the live signal this process last ticked. A live
    #: signal it has not seen (a restart, or another process made it) gets `on_schedule` /
    #: `on_active` first. One entry per key with a live signal: a key's entry goes when a
    #: tick finds the key flat, however its signal ended (here, in another process, or by
    #: the orders worker), so the map never grows with the signals ever made.
    seen_signals: dict[int, str] = field(default_factory=dict)
    #: BKIT_TICK_HISTORY_DAYS: days of compact tick history kept (0: none written).
    history_days: float = 7.0

    @property
    def origin(self) -> str:
        return events.process_origin()


def bucket_of(when: datetime) -> int:
    """The tick minute of `when` (epoch minutes, UTC)."""
    return int(floor_to_minute(when).timestamp() // 60)


def minute_of(bucket: int) -> datetime:
    return datetime.fromtimestamp(bucket * 60, tz=UTC)


@dataclass
class _Snapshot:
    key: LoadedRow  # the key's row as claimed
    signal: SignalRow | None
    halted: bool = False
    commands: tuple[PositionCommand, ...] = ()


@dataclass
class _Prepared:
    """A claimed key with everything read outside any transaction: price and answer."""

    claim: Claim
    key: LoadedRow
    strategy: StrategySchema
    risk: RiskSchema | None
    config: Config
    ctx: KeyContext
    price: float
    answer: StrategyAnswer | None
    halted: bool
    touch: tuple[float, float] | None = None  # the last closed candle's (low, high)
    commands: tuple[PositionCommand, ...] = ()  # position commands read at claim
    sizer: Sizer | None = None  # the strategy's sizing over inputs read here (SPEC §11)


@dataclass
class _Written:
    outcome: TickOutcome
    records: list[dict[str, Any]]
    intent_ids: list[int]
    restored: SignalRow | None
    duration_ms: float | None = None
    live_signal_id: str | None = None  # the key's live signal after this tick, if any


def _claim(env: TickEnv, key_ids: Sequence[int], bucket: int
           ) -> list[tuple[Claim, _Snapshot]]:
    """Claim the keys for the minute and read their live signals in one short committed
    transaction (one conditional UPDATE for all keys, one SELECT of their signals)."""
    with session_scope(env.engine) as session:
        if env.engine.dialect.name == "postgresql":
            # Safe without an fsync: a write-back commits after this claim in the WAL and
            # flushes it too; a claim lost in a crash had no write-back, so re-ticking it is
            # right. Saves one disk flush per batch.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        keys = claim_keys(session, key_ids, bucket, env.origin, env.lease_seconds)
        if not keys:
            return []
        claimed_ids = [int(k.id) for k in keys]
        records = signal_rows.live_signals(session, claimed_ids)
        commands = pending_commands(session, claimed_ids)
        halted = is_halted(session)
    order = {key_id: i for i, key_id in enumerate(key_ids)}
    keys.sort(key=lambda k: order.get(int(k.id), 0))
    claimed = []
    for key in keys:
        record = records.get(int(key.id))
        claimed.append((Claim(int(key.id), bucket, env.origin, int(key.lease_version)),
                        _Snapshot(key, None if record is None else signal_rows.to_core(record),
                                  halted=halted, commands=commands.get(int(key.id), ()))))
    return claimed


def _effective_status(status: str, halted: bool) -> str:
    """The global kill switch pauses enabled keys: no new entries, positions managed."""
    return "paused" if halted and status == "enabled" else status


def _ask_strategy(strategy: StrategySchema, symbol: str, when: datetime, price: float
                  ) -> StrategyAnswer:
    try:
        return StrategyAnswer(raw=strategy.get_signal(symbol, when, price))
    except Exception as exc:  # the strategy's bug is an error event, never a crashed tick
        return StrategyAnswer(error=f"{type(exc).__name__}: {exc}")


def _prepare(env: TickEnv, claim: Claim, snap: _Snapshot, when: datetime) -> _Prepared | None:
    """Price and, if the state machine asks, the strategy's answer (no transaction open).
    None: the tick failed here (unknown names, no price) and an error event says why."""
    key = snap.key
    try:
        strategy = env.registry.strategy(key.strategy_name)
        exchange = env.registry.exchange(key.exchange_name)
        risk = env.registry.risk(strategy.risk_name) if strategy.risk_name else None
        sizing = env.registry.sizing(strategy.sizing_name) if strategy.sizing_name else None
        config = env.config()
        price, touch = tick_price_and_touch(exchange, key.symbol, when, config)
    except BkitError as exc:  # unknown names, no price (PriceUnavailableError is one)
        _fail(env, claim, when, str(exc), (key.symbol, key.strategy_name, key.exchange_name))
        return None
    ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name, strategy.interval)
    pre_status = _effective_status(key.status, snap.halted)
    pre_state = KeyState(snap.signal, pre_status, key.signal_window, key.command)  # type: ignore
    answer = sizer = None
    if wants_signal(pre_state, when, strategy.interval):
        answer = _ask_strategy(strategy, key.symbol, when, price)
        if sizing is not None and answer.error is None and answer.raw is not None:
            # An entry may follow: read its sizing inputs now, outside the transaction.
            sizer = entry_sizer(sizing, live_inputs(env.engine, sizing, claim.key_id, ctx,
                                                  exchange, env.brokers(key.exchange_name),
                                                  config, when))
    return _Prepared(claim, key, strategy, risk, config, ctx, price, answer, snap.halted,
                     touch if config.CC_STOP_LOSS_TRIGGER == "touch" else None, snap.commands,
                     sizer)


def run_tick(env: TickEnv, key_id: int, bucket: int) -> TickResult | None:
    """Tick `key_id` for minute `bucket`. None: not claimed (already ticked this minute,
    disabled, or leased elsewhere) or the tick failed (an error event says why)."""
    return run_ticks(env, [key_id], bucket).results.get(key_id)


@dataclass
class BatchOutcome:
    """What a batch did: each key's result (None: not claimed, failed or fenced off) and the
    keys handed back unticked because the batch ran out of its time budget."""

    results: dict[int, TickResult | None]
    handed_back: list[int] = field(default_factory=list)


def run_ticks(env: TickEnv, key_ids: Sequence[int], bucket: int, *,
              budget_seconds: float | None = None) -> BatchOutcome:
    """Tick a batch of keys for minute `bucket`: one claim, one write-back transaction (keys
    locked in id order), then each key's after-commit work. Each key keeps the semantics of
    a lone tick: a key not claimed, failed or fenced off maps to None and costs the others
    nothing. If the batch's write-back fails for one key, the keys are written one by one.

    `budget_seconds`: once pricing and strategies have taken this long, the keys not reached
    yet are handed back (claim undone) for the caller to queue as a new batch, so a slow
    strategy spreads over free workers instead of making its batch-mates wait."""
    started = time.perf_counter()
    outcome = BatchOutcome(dict.fromkeys(key_ids))
    when = minute_of(bucket)
    claimed = _claim(env, key_ids, bucket)
    priced_from = time.perf_counter()  # the budget counts pricing and strategies only
    prepared: list[_Prepared] = []
    for index, (claim, snap) in enumerate(claimed):
        if budget_seconds is not None and prepared and \
                time.perf_counter() - priced_from > budget_seconds:
            outcome.handed_back = hand_back(env.engine, [c for c, _ in claimed[index:]])
            break
        p = _prepare(env, claim, snap, when)
        if p is not None:
            prepared.append(p)
    if not prepared:
        return outcome
    crash_point("tick.before_writeback")
    written, error = _write_back_each(env, prepared, when, started)
    crash_point("tick.after_commit")
    if any(w.outcome.command_results and w.outcome.order for w in written.values()):
        crash_point("tick.after_commit.command")  # a position command's tick (crash tests)
    for p in prepared:
        done = written.get(p.claim.key_id)
        if done is None:
            continue
        _after_commit(env, p, done, when)
        failure_log.tick_recovered(p.claim.key_id)
        outcome.results[p.claim.key_id] = done.outcome.result
    if error is not None:
        raise error
    return outcome


def _database_gone(exc: BaseException) -> bool:
    """A lost or refusing database (connection dropped, server shutting down or restarting,
    SQLite locked past its busy timeout): every key of the batch would fail the same way,
    so the batch gives up at once and the leases expire (one log line, not one per key)."""
    return isinstance(exc, DatabaseUnavailableError | OperationalError) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated))


class _FailureLog:
    """One log line per failing key and minute, with its reason, rate-limited per key: the
    first failure at once, then at most one line per `every_s` (wall seconds) saying how
    many failures it stood for, so a dead feed does not flood the log."""

    def __init__(self, every_s: float = 600.0) -> None:
        self.every_s = every_s
        self._last: dict[int, tuple[float, int]] = {}
        self._db_down_at = -1e18

    def tick_failed(self, key_id: int, names: tuple[str | None, str | None, str | None],
                    when: datetime, message: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key_id, (-1e18, 0))
        if now - last < self.every_s:
            self._last[key_id] = (last, suppressed + 1)
            return
        symbol, strategy_name, exchange_name = names
        more = f" ({suppressed} more failures of this key since the last line)" \
            if suppressed else ""
        log.warning("tick failed: %s·%s@%s minute %s: %s%s", symbol, strategy_name,
                    exchange_name, f"{when:%Y-%m-%dT%H:%MZ}", message, more)
        self._last[key_id] = (now, 0)

    def tick_recovered(self, key_id: int) -> None:
        self._last.pop(key_id, None)

    def database_down(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._db_down_at >= 30.0:
            log.error("database unavailable (%s): %s: %s", what, type(exc).__name__,
                      str(exc).splitlines()[0] if str(exc) else "")
            self._db_down_at = now


failure_log = _FailureLog()


def _write_back_each(env: TickEnv, prepared: list[_Prepared], when: datetime, started: float
                     ) -> tuple[dict[int, _Written], Exception | None]:
    """The batch's write-back in one transaction; if it fails (a bad row, a deadlock between
    two risk budgets), each key in its own transaction, so one key's failure is its alone.
    A lost database connection is raised at once: every lease simply expires."""
    if len(prepared) > 1:
        try:
            return _write_back(env, prepared, when, started), None
        except Exception as exc:
            if _database_gone(exc):
                raise
            log.warning("batch write-back of %d keys failed (%s: %s); writing them one by one",
                        len(prepared), type(exc).__name__, exc)
    written: dict[int, _Written] = {}
    first_error: Exception | None = None
    for p in prepared:
        try:
            written.update(_write_back(env, [p], when, started))
        except Exception as exc:
            if _database_gone(exc):
                raise
            key = p.key
            _fail(env, p.claim, when, f"tick write-back failed: {type(exc).__name__}: {exc}",
                  (key.symbol, key.strategy_name, key.exchange_name))
            first_error = first_error or exc
    return written, first_error


def _fail(env: TickEnv, claim: Claim, when: datetime, message: str,
          names: tuple[str | None, str | None, str | None]) -> None:
    """A failed tick: an error event and the lease given back; the next minute retries."""
    symbol, strategy_name, exchange_name = names
    record = EventRecord(key_id=claim.key_id, kind="error", symbol=symbol,
                         strategy_name=strategy_name, exchange_name=exchange_name,
                         message=message, origin=env.origin, created_at=when,
                         payload={"stage": "tick"})
    failure_log.tick_failed(claim.key_id, names, when, message)
    try:
        with session_scope(env.engine) as session:
            session.add(record)
            session.flush()
            count_errors(session, [record], failed_tick=True)
            dispatched = event_as_dict(record)
        release_claim(env.engine, claim)
        events.dispatch([dispatched])
    except Exception as exc:
        if _database_gone(exc):  # the lease simply expires; one line per outage
            failure_log.database_down("recording a failed tick", exc)
            return
        log.exception("could not record a failed tick of key %s: %s", claim.key_id, message)


def _risk_check(session: Session, risk: RiskSchema, ctx: KeyContext, when: datetime,
                price: float) -> Callable[[ValidSignal, PublicSignal], str | None]:
    def check(valid: ValidSignal, public: PublicSignal) -> str | None:
        _lock_budget(session, risk.risk_name)
        session.flush()  # slots this batch took already count (the batch runs no_autoflush)
        slots = [{"symbol": s.symbol, "strategy_name": s.strategy_name,
                  "exchange_name": s.exchange_name, "signal_id": s.signal_id}
                 for s in session.execute(select(RiskSlot).where(
                     RiskSlot.risk_name == risk.risk_name)).scalars()]
        return risk_verdict(risk, ctx, when, price, public, slots)
    return check


def _lock_budget(session: Session, risk_name: str) -> None:
    """Serialise slot counting of one risk profile across workers (a row lock on
    PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises every writer)."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(RiskBudget).values(risk_name=risk_name, version=0)
                    .on_conflict_do_nothing(index_elements=["risk_name"]))
    session.execute(select(RiskBudget).where(RiskBudget.risk_name == risk_name)
                    .with_for_update())


@dataclass
class _Batch:
    """One write-back transaction's rows: the locked keys, their live signals and risk
    slots as read under the locks, and the new rows inserted at the end."""

    keys: dict[int, LoadedRow]
    records: dict[int, LoadedRow]
    held: set[tuple[int, str]]
    when: datetime
    now: datetime
    started: float
    inserts: BatchInserts = field(default_factory=BatchInserts)


def _write_back(env: TickEnv, prepared: list[_Prepared], when: datetime, started: float
                ) -> dict[int, _Written]:
    """One transaction for `prepared`: lock the keys (id order, so batches never deadlock on
    keys), check each lease (fencing), apply the state machine, store the outcomes: the
    changed key and signal rows in one statement per shape, the new signals and events in
    one statement each (bkit.store.row_updates, BatchInserts)."""
    ids = sorted(p.claim.key_id for p in prepared)
    with session_scope(env.engine) as session:
        keys = lock_keys(session, ids)
        # Lock discipline: every writer of a key's signal rows (ticks, the orders worker)
        # locks the key row first, so the key locks above also guard their signal rows.
        records = signal_rows.live_signals(session, ids)
        batch = _Batch(keys, records, _held_slots(session, ids), when, datetime.now(UTC),
                       started)
        written: dict[int, _Written] = {}
        with session.no_autoflush:  # one flush for the batch (see _risk_check)
            for p in prepared:
                key = keys.get(p.claim.key_id)
                if key is None or key.lease_owner != p.claim.owner or \
                        key.lease_version != p.claim.version:
                    holder = None if key is None else (key.lease_owner, key.lease_version)
                    log.warning("tick %s bucket %s: lease lost (now held by %r); nothing "
                                "written", p.claim.key_id, p.claim.bucket, holder)
                    continue
                written[p.claim.key_id] = _write_key(session, env, p, key, batch)
            write_rows(session, [*records.values(), *keys.values()])
            batch.inserts.write(session)
        session.flush()  # what the ORM still holds: risk slots, commands
        _write_tick_rows(session, env, written)
    return written


def _held_slots(session: Session, key_ids: list[int]) -> set[tuple[int, str]]:
    """The risk slots the locked keys hold (only their own writers change them)."""
    return {(int(k), str(s)) for k, s in session.execute(
        select(RiskSlot.key_id, RiskSlot.signal_id).where(
            ids_in(RiskSlot.key_id, key_ids, session.get_bind().dialect.name)))}


def _write_tick_rows(session: Session, env: TickEnv, written: dict[int, _Written]) -> None:
    """The batch's compact history rows (one multi-row insert) and, while some process
    follows the log, its non-transition results for those listeners (SPEC §13, §9)."""
    if env.history_days > 0:
        insert_history(session, [history_row(key_id, done.outcome.result, done.duration_ms)
                                 for key_id, done in written.items()])
    quiet = [(key_id, done) for key_id, done in written.items()
             if done.outcome.result.action not in TRANSITIONS]
    if quiet and listeners_present(session):
        insert_feed(session, [result_payload(done.outcome.result, done.duration_ms)
                              | {"key_id": key_id} for key_id, done in quiet], env.origin)


def _write_key(session: Session, env: TickEnv, p: _Prepared, key: LoadedRow, batch: _Batch
               ) -> _Written:
    """Apply the state machine to one locked key and add its rows to the batch."""
    record, when, now = batch.records.get(p.claim.key_id), batch.when, batch.now
    ctx = p.ctx
    row = None if record is None else signal_rows.to_core(record)
    seen = env.seen_signals.get(p.claim.key_id)
    restored = row if row is not None and row.id != seen else None
    status = _effective_status(key.status, p.halted)  # halt read at claim, ms ago
    uses_broker = env.brokers(key.exchange_name) is not None
    in_flight = bool(p.commands) and uses_broker and orders_in_flight(session, p.claim.key_id)
    state = KeyState(row, status, key.signal_window, key.command,  # type: ignore[arg-type]
                     p.commands, orders_in_flight=in_flight)
    check = _risk_check(session, p.risk, ctx, when, p.price) if p.risk else None
    outcome = advance(ctx, state, when, p.price, p.config, answer=p.answer, risk_check=check,
                      uses_broker=uses_broker, touch=p.touch, sizer=p.sizer)
    if outcome.signal is not None and record is None and p.answer is not None and \
            given_signal_id(p.answer.raw) == outcome.signal.id and \
            signal_rows.find_signal(session, p.claim.key_id, outcome.signal.id) is not None:
        # A strategy reused a signal id of this key: refuse it, never overwrite history
        # (an id bkit made is a fresh uuid4: nothing to look up).
        outcome = TickOutcome(result=TickResult(
            "idle", ctx.symbol, ctx.strategy_name, ctx.exchange_name, p.price, when),
            notices=[Notice("error", f"signal id {outcome.signal.id!r} already used "
                            "for this key", {"stage": "validation"})],
            signal_window=outcome.signal_window)

    if outcome.command_results:
        mark_commands(session, outcome.command_results, now)
    outcome, amount = _plan_order(session, env, key, outcome, ctx, p.price, when)
    duration_ms = (time.perf_counter() - batch.started) * 1000
    added, intent_ids = store_outcome(session, key, record, outcome, when, now, env.origin,
                                      duration_ms=duration_ms, order_amount=amount,
                                      held_slots=batch.held, inserts=batch.inserts)
    lag = env.clock.wall_seconds((env.clock.now() - when).total_seconds()) * 1000
    # The lease released, and the counters and the last result of SPEC §13, on the row this
    # transaction already writes: no statement of their own.
    key.lease_owner, key.lease_until = None, None
    key.last_tick_at, key.last_tick_lag_ms, key.updated_at = when, lag, now
    key.ticks_total = (key.ticks_total or 0) + 1
    key.first_tick_at = key.first_tick_at or when
    key.last_action, key.last_price = outcome.result.action, outcome.result.current_price
    after = outcome.signal if outcome.signal is not None else row
    live_id = after.id if after is not None and after.is_live else None
    return _Written(outcome, added, intent_ids, restored, duration_ms, live_id)


def _plan_order(session: Session, env: TickEnv, key: LoadedRow, outcome: TickOutcome,
                ctx: KeyContext, price: float, when: datetime
                ) -> tuple[TickOutcome, float | None]:
    """Size the order of `outcome` before its intent is queued. An entry that the market's
    precision or limits refuse is dropped here with an error event: nothing is stored. An exit
    is sized by the orders worker when it sends it: `min(position, free balance)` floored to
    the step, read from the venue then, not now; so are a position command's orders (a
    partial exit, a DCA entry) and a moved stop."""
    order = outcome.order
    if order is None or order.kind != "open":
        return outcome, None
    broker = env.brokers(key.exchange_name)
    assert broker is not None
    plan = broker.plan_open(order.symbol, order.side, order.cost, order.price)
    if plan.problem is None:
        return outcome, plan.amount
    refused = TickOutcome(
        result=TickResult("idle", ctx.symbol, ctx.strategy_name, ctx.exchange_name, price,
                          when),
        notices=[Notice("error", f"entry refused before sending: {plan.problem}",
                        {"stage": "order_check", "signal_id": order.signal_id})],
        signal_window=outcome.signal_window)
    return refused, None


def _after_commit(env: TickEnv, p: _Prepared, done: _Written, when: datetime) -> None:
    ctx, outcome, restored, price = p.ctx, done.outcome, done.restored, p.price
    calls: list[CallbackCall] = []
    if restored is not None:
        name = "on_schedule" if restored.state == "scheduled" else "on_active"
        calls.append(CallbackCall(name, (ctx.symbol, restored.public(), price, when)))
    calls += outcome.callbacks
    calls.append(CallbackCall("on_tick", (ctx.symbol, outcome.result, when)))
    if done.live_signal_id is None:
        env.seen_signals.pop(p.claim.key_id, None)
    else:
        env.seen_signals[p.claim.key_id] = done.live_signal_id
    for intent_id in done.intent_ids:
        if env.enqueue_order is not None:
            try:
                env.enqueue_order(intent_id)
            except Exception:  # the relay re-sends it; the intent is safe in the outbox
                log.warning("could not enqueue order intent %s", intent_id, exc_info=True)
    records = done.records
    if outcome.result.action not in TRANSITIONS and events.has_listeners():
        records = [result_as_dict(p.claim.key_id, outcome.result, env.origin,
                                  done.duration_ms), *records]
    errors = run_callbacks(p.strategy.callbacks, calls, ctx, when)
    if errors:
        records = records + record_notices(env, p.claim.key_id, ctx, when, errors)
    events.dispatch(records)


def record_notices(env: TickEnv, key_id: int | None, ctx: KeyContext, when: datetime,
                   notices: list[Notice]) -> list[dict[str, Any]]:
    records = [notice_event(key_id, n, symbol=ctx.symbol, strategy_name=ctx.strategy_name,
                            exchange_name=ctx.exchange_name, when=when, origin=env.origin)
               for n in notices]
    try:
        with session_scope(env.engine) as session:
            session.add_all(records)
            session.flush()
            count_errors(session, records)
            return [event_as_dict(r) for r in records]
    except Exception:
        log.exception("could not record %d notices", len(notices))
        return []

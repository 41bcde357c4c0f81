"""The tick of one key, exactly as DESIGN "The tick" (the worker task and `Live.tick` both
call `run_tick`):

1. claim the key for the minute (conditional UPDATE, committed at once);
2. outside any transaction: price (VWAP) and, if the state machine asks, `get_signal`;
3. one short transaction: lock the key and its live signal (`SELECT … FOR UPDATE`), check the
   fencing version, apply the pure state machine, write signal, risk slots, events and any
   order intent, release the lease, commit;
4. after commit: strategy callbacks, listeners of this process, enqueue order submits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from bkit import events
from bkit.broker.base import OrderBroker
from bkit.clock import Clock
from bkit.core.candles import floor_to_minute
from bkit.core.config import Config
from bkit.core.errors import BkitError
from bkit.core.machine import (
    KeyContext,
    KeyState,
    StrategyAnswer,
    TickOutcome,
    advance,
    wants_signal,
)
from bkit.core.registry import REGISTRY, Registry, RiskSchema, StrategySchema, get_config
from bkit.core.results import CallbackCall, Notice, TickResult
from bkit.core.signals import PublicSignal, SignalRow, ValidSignal
from bkit.faults import crash_point
from bkit.pricing import tick_price
from bkit.store import signal_rows
from bkit.store.engine import session_scope
from bkit.store.event_log import event_as_dict, notice_event
from bkit.store.keys import Claim, claim_statement, is_halted, release_claim
from bkit.store.outcomes import store_outcome
from bkit.store.tables import EventRecord, OrderIntent, RiskBudget, RiskSlot, StrategySymbol

log = logging.getLogger("bkit.tick")


class LeaseLostError(BkitError):
    """Another worker took the key over (our lease expired): nothing was written."""


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
    seen_signals: set[str] = field(default_factory=set)  # restored-signal detection

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
    key: StrategySymbol
    signal: SignalRow | None
    halted: bool = False


def _claim(env: TickEnv, key_id: int, bucket: int) -> tuple[Claim, _Snapshot] | None:
    """Claim the key and read its live signal in one short committed transaction."""
    with session_scope(env.engine) as session:
        if env.engine.dialect.name == "postgresql":
            # Safe without an fsync: a write-back commits after this claim in the WAL and
            # flushes it too; a claim lost in a crash had no write-back, so re-ticking it is
            # right. Saves one disk flush per tick.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        key = session.execute(claim_statement(key_id, bucket, env.origin, env.lease_seconds)
                              ).scalars().first()
        if key is None:
            return None
        record = signal_rows.live_signal(session, key_id)
        snapshot = _Snapshot(key, None if record is None else signal_rows.to_core(record),
                             halted=is_halted(session))
    return Claim(key_id, bucket, env.origin, int(key.lease_version)), snapshot


def _ask_strategy(strategy: StrategySchema, symbol: str, when: datetime, price: float
                  ) -> StrategyAnswer:
    try:
        return StrategyAnswer(raw=strategy.get_signal(symbol, when, price))
    except Exception as exc:  # the strategy's bug is an error event, never a crashed tick
        return StrategyAnswer(error=f"{type(exc).__name__}: {exc}")


def run_tick(env: TickEnv, key_id: int, bucket: int) -> TickResult | None:
    """Tick `key_id` for minute `bucket`. None: not claimed (already ticked this minute,
    disabled, or leased elsewhere) or the tick failed (an error event says why)."""
    started = time.perf_counter()
    claimed = _claim(env, key_id, bucket)
    if claimed is None:
        return None
    claim, snap = claimed
    key = snap.key
    when = minute_of(bucket)
    try:
        strategy = env.registry.strategy(key.strategy_name)
        exchange = env.registry.exchange(key.exchange_name)
        risk = env.registry.risk(strategy.risk_name) if strategy.risk_name else None
        config = env.config()
        price = tick_price(exchange, key.symbol, when, config)
    except BkitError as exc:  # unknown names, no price (PriceUnavailableError is one)
        _fail(env, claim, when, str(exc), (key.symbol, key.strategy_name, key.exchange_name))
        return None

    ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name, strategy.interval)
    pre_status = "paused" if snap.halted and key.status == "enabled" else key.status
    pre_state = KeyState(snap.signal, pre_status, key.signal_window, key.command)  # type: ignore
    answer = None
    if wants_signal(pre_state, when, strategy.interval):
        answer = _ask_strategy(strategy, key.symbol, when, price)

    crash_point("tick.before_writeback")
    try:
        outcome, records, intent_ids, restored = _write_back(
            env, claim, ctx, when, price, config, answer, risk, started, snap.halted)
    except LeaseLostError as exc:
        log.warning("tick %s bucket %s: %s", key_id, bucket, exc)
        return None
    except Exception as exc:
        _fail(env, claim, when, f"tick write-back failed: {type(exc).__name__}: {exc}",
              (key.symbol, key.strategy_name, key.exchange_name))
        raise
    crash_point("tick.after_commit")
    _after_commit(env, key_id, strategy, ctx, outcome, records, intent_ids, restored, when,
                  price)
    return outcome.result


def _fail(env: TickEnv, claim: Claim, when: datetime, message: str,
          names: tuple[str | None, str | None, str | None]) -> None:
    """A failed tick: an error event and the lease given back; the next minute retries."""
    symbol, strategy_name, exchange_name = names
    record = EventRecord(key_id=claim.key_id, kind="error", symbol=symbol,
                         strategy_name=strategy_name, exchange_name=exchange_name,
                         message=message, origin=env.origin, created_at=when,
                         payload={"stage": "tick"})
    try:
        with session_scope(env.engine) as session:
            session.add(record)
            session.flush()
            dispatched = event_as_dict(record)
        release_claim(env.engine, claim, last_error_at=datetime.now(UTC))
        events.dispatch([dispatched])
    except Exception:
        log.exception("could not record a failed tick of key %s: %s", claim.key_id, message)


def _risk_check(session: Session, risk: RiskSchema, ctx: KeyContext, when: datetime,
                price: float) -> Callable[[ValidSignal, PublicSignal], str | None]:
    def check(valid: ValidSignal, public: PublicSignal) -> str | None:
        _lock_budget(session, risk.risk_name)
        slots = list(session.execute(select(RiskSlot).where(
            RiskSlot.risk_name == risk.risk_name)).scalars())
        if risk.max_concurrent_positions is not None and \
                len(slots) >= risk.max_concurrent_positions:
            return (f"risk {risk.risk_name}: {len(slots)} of "
                    f"{risk.max_concurrent_positions} concurrent positions in use")
        payload = {
            "symbol": ctx.symbol, "strategy_name": ctx.strategy_name,
            "exchange_name": ctx.exchange_name, "current_price": price, "when": when,
            "signal": public, "active_position_count": len(slots),
            "active_positions": [{"symbol": s.symbol, "strategy_name": s.strategy_name,
                                  "exchange_name": s.exchange_name, "signal_id": s.signal_id}
                                 for s in slots]}
        for validation in risk.validations:
            try:
                verdict = validation.validate(payload)
            except Exception as exc:
                return str(exc) or validation.note or type(exc).__name__
            if verdict:
                return verdict if isinstance(verdict, str) else (validation.note or "rejected")
        return None
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


def _write_back(env: TickEnv, claim: Claim, ctx: KeyContext, when: datetime, price: float,
                config: Config, answer: StrategyAnswer | None, risk: RiskSchema | None,
                started: float, halted: bool
                ) -> tuple[TickOutcome, list[dict[str, Any]], list[int], SignalRow | None]:
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        key = session.execute(select(StrategySymbol).where(StrategySymbol.id == claim.key_id)
                              .with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()
        if key.lease_owner != claim.owner or key.lease_version != claim.version:
            raise LeaseLostError(f"lease of key {claim.key_id} lost (now held by "
                                 f"{key.lease_owner!r} v{key.lease_version})")
        # Lock discipline: every writer of a key's signal rows (ticks, the orders worker)
        # locks the key row first, so the key lock above also guards its signal rows.
        record = signal_rows.live_signal(session, claim.key_id)
        row = None if record is None else signal_rows.to_core(record)
        restored = row if row is not None and row.id not in env.seen_signals else None
        status = key.status
        if status == "enabled" and halted:  # read at claim, milliseconds ago
            status = "paused"  # the global kill switch: no new entries, positions managed
        state = KeyState(row, status, key.signal_window, key.command)  # type: ignore
        check = _risk_check(session, risk, ctx, when, price) if risk else None
        outcome = advance(ctx, state, when, price, config, answer=answer, risk_check=check,
                          uses_broker=env.brokers(key.exchange_name) is not None)
        if outcome.signal is not None and record is None and \
                signal_rows.find_signal(session, claim.key_id, outcome.signal.id) is not None:
            # A strategy reused a signal id of this key: refuse it, never overwrite history.
            outcome = TickOutcome(result=TickResult(
                "idle", ctx.symbol, ctx.strategy_name, ctx.exchange_name, price, when),
                notices=[Notice("error", f"signal id {outcome.signal.id!r} already used "
                                "for this key", {"stage": "validation"})],
                signal_window=outcome.signal_window)

        outcome, amount = _plan_order(session, env, key, outcome, ctx, price, when)
        duration_ms = (time.perf_counter() - started) * 1000
        added, intent_ids = store_outcome(session, key, record, outcome, when, now, env.origin,
                                          duration_ms=duration_ms, order_amount=amount)
        lag = env.clock.wall_seconds((env.clock.now() - when).total_seconds()) * 1000
        key.lease_owner, key.lease_until = None, None
        key.last_tick_at, key.last_tick_lag_ms, key.updated_at = when, lag, now
        session.flush()
        dispatched = [event_as_dict(r) for r in added]
    return outcome, dispatched, intent_ids, restored


def _plan_order(session: Session, env: TickEnv, key: StrategySymbol, outcome: TickOutcome,
                ctx: KeyContext, price: float, when: datetime
                ) -> tuple[TickOutcome, float | None]:
    """Size the order of `outcome` before its intent is queued. An entry that the market's
    precision or limits refuse is dropped here with an error event: nothing is stored. An exit
    sells what the entry bought."""
    order = outcome.order
    if order is None:
        return outcome, None
    broker = env.brokers(key.exchange_name)
    assert broker is not None
    if order.kind == "close":
        filled = session.execute(select(OrderIntent.filled_amount).where(
            OrderIntent.key_id == key.id, OrderIntent.signal_id == order.signal_id,
            OrderIntent.kind == "open", OrderIntent.status == "filled")).scalar()
        return outcome, filled
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


def _after_commit(env: TickEnv, key_id: int, strategy: StrategySchema, ctx: KeyContext,
                  outcome: TickOutcome, records: list[dict[str, Any]], intent_ids: list[int],
                  restored: SignalRow | None, when: datetime, price: float) -> None:
    calls: list[CallbackCall] = []
    if restored is not None:
        name = "on_schedule" if restored.state == "scheduled" else "on_active"
        calls.append(CallbackCall(name, (ctx.symbol, restored.public(), price, when)))
    calls += outcome.callbacks
    calls.append(CallbackCall("on_tick", (ctx.symbol, outcome.result, when)))
    if outcome.signal is not None:
        if outcome.signal.is_live:
            env.seen_signals.add(outcome.signal.id)
        else:
            env.seen_signals.discard(outcome.signal.id)
    elif restored is not None:
        env.seen_signals.add(restored.id)
    for intent_id in intent_ids:
        if env.enqueue_order is not None:
            try:
                env.enqueue_order(intent_id)
            except Exception:  # the relay re-sends it; the intent is safe in the outbox
                log.warning("could not enqueue order intent %s", intent_id, exc_info=True)
    errors = run_callbacks(strategy.callbacks, calls, ctx, when)
    if errors:
        records = records + record_notices(env, key_id, ctx, when, errors)
    events.dispatch(records)


def run_callbacks(callbacks: dict[str, Callable[..., Any]] | Any, calls: list[CallbackCall],
                  ctx: KeyContext, when: datetime) -> list[Notice]:
    """Run strategy callbacks; an exception becomes an error notice, never a broken tick."""
    errors = []
    for call in calls:
        fn = callbacks.get(call.name) if callbacks else None
        if fn is None:
            continue
        try:
            fn(*call.args)
        except Exception as exc:
            errors.append(Notice("error", f"callback {call.name} of {ctx.strategy_name} "
                                 f"failed: {type(exc).__name__}: {exc}",
                                 {"stage": "callback", "callback": call.name}))
    return errors


def record_notices(env: TickEnv, key_id: int | None, ctx: KeyContext, when: datetime,
                   notices: list[Notice]) -> list[dict[str, Any]]:
    records = [notice_event(key_id, n, symbol=ctx.symbol, strategy_name=ctx.strategy_name,
                            exchange_name=ctx.exchange_name, when=when, origin=env.origin)
               for n in notices]
    try:
        with session_scope(env.engine) as session:
            session.add_all(records)
            session.flush()
            return [event_as_dict(r) for r in records]
    except Exception:
        log.exception("could not record %d notices", len(notices))
        return []

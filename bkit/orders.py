"""Sending order intents (the outbox) and resolving them from the venue's evidence (SPEC §8).

`submit_intent` is what the `orders` queue's task runs. It claims the intent with a short
send-lease (two copies never act at once) and does one step of the order's lifecycle
(`bkit.core.orders`):

- `pending` (nothing on the venue): size it (an exit sells `min(position, free balance)`
  floored to the step), mark it `unknown` *before* sending (a crash after the send is then
  resolved by looking, never by a blind re-send), send it;
- `unknown` (sent; answer lost, ambiguous or without a status): look it up by client order
  id, then in the open orders and the order's trades; re-send only after the settle window
  (`CC_ORDER_SETTLE_SECONDS`) showed no order and no trade twice;
- `open` (resting): poll it; polls never use up retry attempts.

A final order (filled, or canceled/expired with or without fills) is recorded with the
signal's transition in one transaction under the key lock. Only the *create* call's
definitive refusal counts as a rejection; errors of lookups, cancels and balance reads are
"could not look", never a rollback.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, select, update

from bkit import events
from bkit.broker.base import OrderBroker, stop_broker
from bkit.clock import Clock
from bkit.core.callbacks import run_callbacks
from bkit.core.candles import floor_to_minute
from bkit.core.config import Config
from bkit.core.machine import KeyContext, TickOutcome, is_protected
from bkit.core.order_outcomes import (
    OrderFill,
    command_refused,
    confirm_open,
    record_dca_fill,
    record_exit_fill,
    record_partial_fill,
    record_stop_fill,
    refuse_close,
    reject_open,
    replace_stop,
    stop_refused,
)
from bkit.core.orders import (
    FINAL_STATUSES,
    MarketRules,
    SettleState,
    VenueOrder,
    base_fee,
    base_of,
    can_move,
    exit_size,
    fees_of_fills,
    floor_to_step,
    look_delay,
    quote_fees,
    quote_of,
    remainder_is_dust,
    sellable,
    settle_verdict,
)
from bkit.core.position_commands import command_in_flight
from bkit.core.registry import REGISTRY, get_config
from bkit.core.results import Notice, TickResult
from bkit.exchange.errors import DefinitiveExchangeError, ExchangeError, TransientExchangeError
from bkit.faults import crash_point
from bkit.store import signal_rows
from bkit.store.commands import settle_commands
from bkit.store.engine import session_scope
from bkit.store.event_log import count_errors, event_as_dict, notice_event
from bkit.store.keys import is_halted
from bkit.store.outcomes import client_order_id, store_outcome
from bkit.store.tables import OrderIntent, StrategySymbol

log = logging.getLogger("bkit.orders")
#: Intent statuses the worker still acts on; `sending` / `acked` are older names of
#: `unknown` / `open` (databases of schema 3).
RETRYABLE = ("pending", "unknown", "open", "sending", "acked")
_LEGACY = {"sending": "unknown", "acked": "open"}
#: How the broker sends each intent kind: a partial exit reduces (reduce-only on futures,
#: always at market), a DCA adds to the position like an entry.
_BROKER_KIND = {"partial": "close", "dca": "open"}
#: Signal states an intent's evidence may still act on (else it is kept on the intent only).
_EXPECTED = {"open": ("opening",), "close": ("closing",), "stop": ("opened", "closing"),
             "partial": ("opened",), "dca": ("opened",)}


@dataclass
class OrdersEnv:
    engine: Engine
    clock: Clock
    brokers: Callable[[str], OrderBroker | None]
    enqueue: Callable[[int, float], None]  # (intent id, countdown seconds)
    config: Callable[[], Config] = get_config
    send_lease_seconds: float = 45.0
    #: A resting entry (limit) not filled after this long (wall s) is cancelled; what filled
    #: of it stays the position, an entry with nothing filled is rolled back.
    entry_timeout_seconds: float = 7200.0
    backoff_ceiling_seconds: float = 60.0
    rate_limit_backoff_seconds: float = 30.0
    #: How often a resting order is polled (wall s); a resting protective stop, less often.
    poll_seconds: float = 5.0
    stop_poll_seconds: float = 30.0

    @property
    def origin(self) -> str:
        return events.process_origin()


def backoff_seconds(attempt: int, *, rate_limited: bool = False,
                    retry_after: float | None = None, ceiling_s: float = 60.0,
                    rate_limit_s: float = 30.0) -> float:
    """Exponential backoff with jitter: between half and all of 2^attempt s (capped at
    `ceiling_s`), at least 1 s; a rate limit waits at least `rate_limit_s` or what the venue
    asked (`retry_after`)."""
    ceiling = min(ceiling_s, 2.0 ** max(1, attempt))
    delay = max(1.0, random.uniform(ceiling / 2, ceiling))
    if rate_limited:
        delay = max(delay, rate_limit_s, retry_after or 0.0)
    return delay


def _claim(env: OrdersEnv, intent_id: int) -> OrderIntent | None:
    """Take the send-lease of an intent the worker still has to act on (one holder)."""
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        return session.execute(
            update(OrderIntent)
            .where(OrderIntent.id == intent_id, OrderIntent.status.in_(RETRYABLE),  # type: ignore
                   or_(OrderIntent.sending_until.is_(None),  # type: ignore[union-attr]
                       OrderIntent.sending_until < now))  # type: ignore[operator]
            .values(sending_until=now + timedelta(seconds=env.send_lease_seconds),
                    updated_at=now)
            .returning(OrderIntent).execution_options(synchronize_session=False)
        ).scalars().first()


def _release(env: OrdersEnv, intent: OrderIntent, status: str, *, delay: float | None = None,
             error: str | None = None, enqueue: bool = True, **values: Any) -> None:
    """Write the intent's new status and evidence, give the lease back, and (with a delay)
    schedule its next step."""
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        session.execute(update(OrderIntent).where(OrderIntent.id == intent.id).values(
            status=status, sending_until=None, updated_at=now,
            next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
            last_error=error if error is not None else intent.last_error, **values)
            .execution_options(synchronize_session=False))
    if enqueue and delay is not None and intent.id is not None:
        env.enqueue(intent.id, delay)


def submit_intent(env: OrdersEnv, intent_id: int) -> str:
    """Do the next step of one intent. Returns what happened, for logs and tests."""
    intent = _claim(env, intent_id)
    if intent is None:
        return "skipped"
    status = _LEGACY.get(intent.status, intent.status)
    broker = env.brokers(intent.exchange_name)
    if broker is None:
        _release(env, intent, status, delay=60,
                 error=f"no broker configured for exchange {intent.exchange_name!r}")
        return "no_broker"
    if status == "pending":
        return _send(env, intent, broker)
    return _look(env, intent, broker, status)


# --- sending --------------------------------------------------------------------------------
def _send(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker) -> str:
    if intent.kind in ("open", "dca"):
        with session_scope(env.engine) as session:
            halted = is_halted(session)
        if halted:
            _release(env, intent, "pending", delay=30)
            return "halted"  # the kill switch holds new entries in the outbox; exits still go
    if intent.kind in ("partial", "dca"):
        sized = _size_command(env, intent, broker)
        if isinstance(sized, str):
            return sized
        amount = sized
    elif intent.kind == "open":
        setup = getattr(broker, "ensure_setup", None)
        if callable(setup):  # futures: leverage, margin and position mode before the entry
            try:
                setup(intent.symbol)
            except DefinitiveExchangeError as exc:
                return _refused(env, intent, f"venue setup refused: {exc}")
            except ExchangeError as exc:  # nothing was sent: try again later
                return _cannot_tell(env, intent, "pending", exc, counts_as_look=False)
        amount = intent.amount if intent.amount is not None else intent.cost / intent.price
        beyond = _stop_beyond_liquidation(env, intent, broker, amount)
        if beyond is not None:
            return _refused(env, intent, beyond)
    else:
        if intent.kind in ("close", "stop"):
            # One protective order at a time: a new stop (moved SL, re-placed for a
            # remainder) takes the old one off the venue first, as an exit does.
            waiting = _clear_stops(env, intent, broker,
                                   expect="closing" if intent.kind == "close" else "opened")
            if waiting is not None:
                return waiting
        sized = _size_exit(env, intent, broker)
        if isinstance(sized, str):
            return sized
        amount = sized
    # From here the order may exist on the venue: never "pending" again without evidence.
    now = datetime.now(UTC)
    with session_scope(env.engine) as session:
        session.execute(update(OrderIntent).where(OrderIntent.id == intent.id).values(
            status="unknown", amount=amount, attempts=OrderIntent.attempts + 1,
            unknown_since=now, not_found_looks=0, updated_at=now)
            .execution_options(synchronize_session=False))
    intent.amount, intent.attempts, intent.unknown_since = amount, intent.attempts + 1, now
    intent.not_found_looks = 0
    try:
        crash_point("submit.before_send")
        crash_point(f"submit.{intent.kind}.before_send")  # one kind only (crash tests)
        if intent.kind == "stop":
            answer = _place_stop(env, intent, broker, amount)
        else:
            answer = broker.place(intent.symbol, intent.side, amount, intent.price,
                                  intent.client_order_id,
                                  kind=_BROKER_KIND.get(intent.kind, intent.kind))
        crash_point("submit.after_send")
        crash_point(f"submit.{intent.kind}.after_send")
    except DefinitiveExchangeError as exc:
        if exc.kind == "duplicate_order":  # an order with this id is open: look at it
            _release(env, intent, "unknown", delay=1, error=str(exc))
            return "unknown"
        return _refused(env, intent, str(exc))
    except ExchangeError as exc:  # transient, or anything we cannot be sure about
        return _cannot_tell(env, intent, "unknown", exc, counts_as_look=False)
    return _evidence(env, intent, broker, "unknown", answer)


def _stop_beyond_liquidation(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker,
                             amount: float) -> str | None:
    """Futures (SPEC §10): an entry whose SL lies beyond its liquidation price is refused
    before it is sent (the venue would liquidate first)."""
    check = getattr(broker, "stop_problem", None)
    if not callable(check):
        return None
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        if record is None:
            return None
        position, stop = record.position, record.price_stop_loss
    try:
        problem = check(intent.symbol, position, intent.price, stop, amount)
    except ExchangeError:
        return None  # the venue's margin table is unreadable: its own checks still apply
    return None if problem is None else f"entry refused before sending: {problem}"


def _size_exit(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker) -> float | str:
    """The exit's amount: `min(position, free balance)` floored to the step (SPEC §8).
    A string is what happened instead (nothing sellable: a refusal; no answer: retry)."""
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        held = None if record is None else record.amount
        position = None if record is None else record.position
    if held is None:  # a row from before the lifecycle: what the entry filled
        with session_scope(env.engine) as session:
            held = session.execute(select(OrderIntent.filled_amount).where(
                OrderIntent.key_id == intent.key_id, OrderIntent.signal_id == intent.signal_id,
                OrderIntent.kind == "open", OrderIntent.status == "filled")).scalar()
    if not held:
        return _refused(env, intent, "no position amount is known for this signal")
    try:
        rules = broker.rules(intent.symbol)
    except ExchangeError as exc:  # market rules unreadable: nothing was sent, try again
        return _cannot_tell(env, intent, "pending", exc, counts_as_look=False)
    return _within_free(env, intent, broker, rules, position, held, "nothing sellable sent")


def _within_free(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker,
                 rules: MarketRules, position: str | None, wanted: float,
                 refusal: str) -> float | str:
    """`min(wanted, free balance)` floored to the step (SPEC §8; a short owes, its free
    balance is not the limit): what an order that reduces a position may sell (base units).
    A string is what happened instead (nothing sellable: refused with `refusal`)."""
    try:
        free = broker.free_balance(rules.base) if position == "long" else float("inf")
    except ExchangeError as exc:  # a balance read that failed proves nothing
        return _cannot_tell(env, intent, "pending", exc, counts_as_look=False)
    size = exit_size(wanted, free, intent.price, rules)
    if size.problem is not None:
        return _refused(env, intent, f"{refusal}: {size.problem}")
    return size.amount


def _waiting_row(env: OrdersEnv, intent: OrderIntent) -> Any:
    """The signal (core row) if it still waits for this position command's order."""
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        row = None if record is None else signal_rows.to_core(record)
    if row is None or row.state != "opened" or not row.order_in_flight or \
            command_in_flight(row) is None:
        return None
    return row


def _size_command(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker) -> float | str:
    """The amount of a position command's order, sized now (SPEC §8, §11); a string is what
    happened instead.

    A partial sells `percent` of what the position holds (net of base-asset fees), floored
    to the step, never more than the free balance; a DCA buys its cost at the tick's price
    at the market's precision. Checked against the venue's filters first (a refusal changes
    nothing, the stop stays); then the protective stop leaves the venue (cancelled and
    looked up: one that filled meanwhile is the close, and this order is not sent); the
    stop goes back on the venue, for what the position then holds, once this order is final.
    """
    row = _waiting_row(env, intent)
    if row is None:
        return _superseded(env, intent, "the position closed first (its protective stop "
                           "filled, or it was resolved) before this order was sent")
    try:
        rules = broker.rules(intent.symbol)
        if intent.kind == "dca":
            plan = broker.plan_open(intent.symbol, intent.side, intent.cost, intent.price)
            if plan.problem is not None or not plan.amount:
                return _refused(env, intent, f"nothing sent: {plan.problem}")
            wanted = plan.amount
        else:
            percent = float((command_in_flight(row) or {}).get("value") or 0.0)
            wanted = floor_to_step((row.amount or 0.0) * percent / 100, rules.amount_step)
            problem = sellable(wanted, intent.price, rules)
            if problem is not None:
                return _refused(env, intent, f"nothing sent: {problem}")
    except ExchangeError as exc:  # market rules unreadable: nothing was sent, try again
        return _cannot_tell(env, intent, "pending", exc, counts_as_look=False)
    waiting = _clear_stops(env, intent, broker, expect="opened")
    if waiting is not None:
        return waiting
    if intent.kind == "dca":
        return wanted
    return _within_free(env, intent, broker, rules, row.position, wanted, "nothing sent")


# --- protective stops (SPEC §10) -----------------------------------------------------------
def _place_stop(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker,
                amount: float) -> VenueOrder:
    protector = stop_broker(broker, intent.symbol)
    if protector is None:
        raise DefinitiveExchangeError(f"{intent.exchange_name} cannot hold a stop on "
                                      f"{intent.symbol}", kind="not_supported")
    offset = env.config().CC_EXCHANGE_STOP_LIMIT_OFFSET_PERCENT / 100
    limit = intent.price * (1 - offset) if intent.side == "sell" else \
        intent.price * (1 + offset)
    return protector.place_stop(intent.symbol, intent.side, amount, intent.price, limit,
                                intent.client_order_id)


def _active_stops(env: OrdersEnv, intent: OrderIntent) -> list[OrderIntent]:
    with session_scope(env.engine) as session:
        return list(session.execute(select(OrderIntent).where(
            OrderIntent.key_id == intent.key_id, OrderIntent.signal_id == intent.signal_id,
            OrderIntent.kind == "stop",
            OrderIntent.status.in_(RETRYABLE))).scalars())  # type: ignore[attr-defined]


def _clear_stops(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker, *,
                 expect: str = "closing") -> str | None:
    """Before bkit exits (part of) a position itself, adds to it, or moves its stop, the
    protective stop leaves the venue: cancelled, then looked up; a stop that filled
    meanwhile is the close (recorded now), and an exit then sells only what is left, if
    anything. None: go on (the signal is still `expect`); else what happened (the order
    waits for the stop's final state, or is not needed any more)."""
    for stop in _active_stops(env, intent):
        if stop.id != intent.id and not _settle_stop(env, stop, broker):
            _release(env, intent, "pending", delay=2.0)
            return "waiting_for_stop"
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        state = None if record is None else record.state
    if state != expect:  # the stop closed it: this order is not needed
        return _superseded(env, intent, "the protective stop closed the position")
    return None


def _superseded(env: OrdersEnv, intent: OrderIntent, why: str) -> str:
    """The signal no longer waits for this order (never sent): it is cancelled on the
    outbox, and a position command's order marks its command refused, with the reason."""
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        command = None if record is None else (record.extra or {}).get("command")
        if intent.kind in ("partial", "dca") and isinstance(command, dict):
            settle_commands(session, [(int(command["id"]), "refused",
                                       f"{command['name']} not sent: {why}")],
                            datetime.now(UTC))
    _release(env, intent, "canceled", enqueue=False, error=f"superseded: {why}")
    return "superseded"


def _reprotect(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker | None) -> bool:
    """After a position command's order: whether the stop goes back on the venue (exchange
    stops on, the venue takes them, and none is left there for this signal)."""
    return intent.kind in ("partial", "dca") and env.config().CC_EXCHANGE_STOP and \
        stop_broker(broker, intent.symbol) is not None and not _active_stops(env, intent)


def _is_current_stop(intent: OrderIntent, row: Any) -> bool:
    """Whether `intent` is the signal's newest stop (an older one was replaced on purpose:
    its cancel must not put yet another stop on the venue)."""
    number = int(row.extra.get("stop_orders", 0))
    return intent.client_order_id == client_order_id(intent.key_id, intent.signal_id, "stop",
                                                     number)


def _settle_stop(env: OrdersEnv, stop: OrderIntent, broker: OrderBroker) -> bool:
    """Cancel a stop and record its final state. False: not final yet (try again)."""
    claimed = _claim(env, stop.id) if stop.id is not None else None
    if claimed is None:
        return False  # another worker is on it right now
    if claimed.status == "pending":  # never on the venue (or refused): nothing to cancel
        _release(env, claimed, "canceled", enqueue=False, error="exit: stop not needed")
        return True
    try:
        broker.cancel(claimed.symbol, claimed.client_order_id)
        order = broker.lookup(claimed.symbol, claimed.client_order_id)
    except ExchangeError as exc:
        _cannot_tell(env, claimed, _LEGACY.get(claimed.status, claimed.status), exc)
        return False
    if order is None or order.state in ("open", "unknown"):
        _release(env, claimed, _LEGACY.get(claimed.status, claimed.status), delay=1.0)
        return False
    try:
        fill = _fill_of(claimed, broker, order)
    except ExchangeError as exc:
        _cannot_tell(env, claimed, claimed.status, exc)
        return False
    _finish(env, claimed, broker, order, fill)
    return True


def _stop_refused(env: OrdersEnv, intent: OrderIntent, message: str) -> str:
    """The venue refused the protective stop: the tick watches the SL; tried again with
    backoff (nothing exists on the venue, so the same client id is safe)."""
    refusals = intent.refusals + 1
    delay = min(300.0, backoff_seconds(refusals, ceiling_s=300.0))
    values: dict[str, Any] = {"status": "pending", "refusals": refusals, "last_error": message,
                              "unknown_since": None,
                              "next_attempt_at": datetime.now(UTC) + timedelta(seconds=delay)}
    done = _transition(env, intent, values,
                       lambda ctx, row, _c, when, _f: stop_refused(ctx, row, when, message))
    if done and intent.id is not None:
        env.enqueue(intent.id, delay)
    return "stop_refused" if done else "stale"


# --- looking --------------------------------------------------------------------------------
def _look(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker, status: str) -> str:
    try:
        order = broker.lookup(intent.symbol, intent.client_order_id)
    except ExchangeError as exc:
        return _cannot_tell(env, intent, status, exc)
    if order is not None:
        return _evidence(env, intent, broker, status, order)
    if status == "open" or intent.exchange_order_id:
        # The venue accepted it (we saw it, or it gave its id): a "not found" is lag.
        _release(env, intent, status, delay=env.poll_seconds, polls=intent.polls + 1)
        return status
    try:
        listed = [o for o in broker.open_orders(intent.symbol)
                  if o.client_order_id == intent.client_order_id]
    except ExchangeError as exc:
        return _cannot_tell(env, intent, status, exc)
    if listed:
        return _evidence(env, intent, broker, status, listed[0])
    looks = intent.not_found_looks + 1
    since = intent.unknown_since or intent.created_at or datetime.now(UTC)
    state = SettleState((datetime.now(UTC) - since).total_seconds(), looks, intent.failed_looks)
    settle = getattr(broker, "settle_seconds", None)  # a venue without lookup lag says so
    if settle is None:
        settle = env.config().CC_ORDER_SETTLE_SECONDS
    if settle_verdict(state, settle) == "resend":
        log.info("intent %s: no order, open order or trade under %s for %.0f s: sending it",
                 intent.id, intent.client_order_id, state.seconds_unknown)
        _release(env, intent, "pending", delay=0, resends=intent.resends + 1,
                 not_found_looks=looks, unknown_since=None)
        return "resend"
    _release(env, intent, "unknown", delay=look_delay(settle, looks), not_found_looks=looks)
    return "settling"


def _cannot_tell(env: OrdersEnv, intent: OrderIntent, status: str, exc: ExchangeError, *,
                 counts_as_look: bool = True) -> str:
    """No answer (network, time-out, 5xx, 429, or an error from a lookup): the outcome stays
    what it was. After CC_ORDER_*_RETRY_ATTEMPTS such looks an `exit` event asks an operator
    to look; the worker keeps looking with backoff. Never a rejection, never a re-send."""
    message = f"{type(exc).__name__}: {exc}"
    failed = intent.failed_looks + 1
    config = env.config()
    limit = (config.CC_ORDER_OPEN_RETRY_ATTEMPTS if intent.kind == "open"
             else config.CC_ORDER_CLOSE_RETRY_ATTEMPTS)
    alerted = intent.alerted
    if failed >= limit and not alerted and status != "pending":
        alerted = True
        _notice(env, intent, Notice(
            "exit", f"{intent.kind} order {intent.client_order_id} on {intent.exchange_name} "
            f"{intent.symbol}: outcome unknown after {failed} looks without an answer; still "
            f"looking — check the account: {message}",
            {"intent_id": intent.id, "signal_id": intent.signal_id, "stage": "order_unknown"}))
    rate_limited = isinstance(exc, TransientExchangeError) and exc.rate_limited
    delay = backoff_seconds(failed, rate_limited=rate_limited,
                            retry_after=getattr(exc, "retry_after_s", None),
                            ceiling_s=env.backoff_ceiling_seconds,
                            rate_limit_s=env.rate_limit_backoff_seconds)
    _release(env, intent, status, delay=delay, error=message,
             failed_looks=failed if counts_as_look else intent.failed_looks, alerted=alerted)
    return "unknown" if status != "pending" else "retry"


# --- evidence -------------------------------------------------------------------------------
def _evidence(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker, status: str,
              order: VenueOrder) -> str:
    state = order.state
    ids: dict[str, Any] = {}
    if order.exchange_order_id:
        ids["exchange_order_id"] = order.exchange_order_id
        intent.exchange_order_id = order.exchange_order_id
    if state == "unknown":  # an answer without a status (ACK): accepted, outcome unknown
        _release(env, intent, "unknown", delay=min(2.0, env.poll_seconds), **ids)
        return "unknown"
    if not can_move(status, state):
        log.warning("intent %s: ignoring stale evidence %s after %s", intent.id, state, status)
        _release(env, intent, status, delay=env.poll_seconds, **ids)
        return status
    if state == "open":
        _maybe_cancel_resting_entry(env, intent, broker)
        if intent.kind == "stop" and intent.status != "open":
            _protected(env, intent)
        delay = env.stop_poll_seconds if intent.kind == "stop" else env.poll_seconds
        _release(env, intent, "open", delay=delay, polls=intent.polls + 1,
                 filled_amount=order.filled_amount, fill_price=order.average, **ids)
        return "open"
    try:
        fill = _fill_of(intent, broker, order)
    except ExchangeError as exc:  # fees unknown yet: look again, change nothing
        return _cannot_tell(env, intent, status, exc)
    return _finish(env, intent, broker, order, fill)


def _protected(env: OrdersEnv, intent: OrderIntent) -> None:
    """The stop rests on the venue: the position is protected (shown on the signal)."""
    with session_scope(env.engine) as session:
        session.execute(select(StrategySymbol).where(StrategySymbol.id == intent.key_id)
                        .with_for_update())  # lock discipline: the key row first
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id,
                                         for_update=True)
        if record is not None and record.state == "opened":
            record.extra = {**(record.extra or {}), "protection": "open",
                            "stop_client_order_id": intent.client_order_id}


def _maybe_cancel_resting_entry(env: OrdersEnv, intent: OrderIntent,
                                broker: OrderBroker) -> None:
    if intent.kind not in ("open", "dca") or intent.created_at is None:
        return
    if (datetime.now(UTC) - intent.created_at).total_seconds() <= env.entry_timeout_seconds:
        return
    try:  # the next poll reads its final state; a cancel error never rolls anything back
        broker.cancel(intent.symbol, intent.client_order_id)
    except ExchangeError as exc:
        log.warning("intent %s: cancel of the resting entry failed: %s", intent.id, exc)


def _fill_of(intent: OrderIntent, broker: OrderBroker, order: VenueOrder) -> OrderFill:
    """What the final order filled and the fees it paid, from its own answer or its trades."""
    filled = order.filled_amount
    if filled <= 0:
        return OrderFill(0.0, 0.0)
    fees = order.fees
    cost = order.filled_cost
    if not fees and order.exchange_order_id:
        try:
            trades = broker.fills(intent.symbol, order.exchange_order_id)
        except DefinitiveExchangeError as exc:
            # The venue will not list the trades (no endpoint, no permission): the fill is
            # evidence enough; its fees stay unknown (the exit's balance rule covers a base
            # fee we could not see) and the operator is told.
            log.warning("intent %s: fees unknown, the venue refused the trade list: %s",
                        intent.id, exc)
            trades = []
        fees = fees_of_fills(trades)
        if cost <= 0 and trades:
            cost = sum(t.amount * t.price for t in trades)
    base, quote = base_of(intent.symbol), quote_of(intent.symbol)
    price = cost / filled if filled > 0 and cost > 0 else (order.average or intent.price)
    if cost <= 0:
        cost = filled * price
    return OrderFill(filled, cost, fees_quote=quote_fees(fees, base, quote, price),
                     fees_paid_quote=quote_fees([f for f in fees if f.currency == quote],
                                                base, quote, price),
                     base_fee=base_fee(fees, base))


def _with_funding(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker,
                  fill: OrderFill) -> OrderFill:
    """Futures: the funding paid (or received) while the position was open enters its
    realised PnL as a fee in quote (SPEC §10), counted once, on the exit that closes it."""
    funding = getattr(broker, "funding_fees", None)
    if not callable(funding):
        return fill
    with session_scope(env.engine) as session:
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        if record is None or record.pending_at is None or (record.extra or {}).get(
                "funding_counted"):
            return fill
        held, since = float(record.amount or 0.0), record.pending_at
    if held - fill.filled > 1e-12:  # not the exit that closes it
        return fill
    paid = -sum(amount for _ts, amount in funding(intent.symbol, int(since.timestamp() * 1000)))
    return replace(fill, fees_quote=fill.fees_quote + paid,
                   fees_paid_quote=fill.fees_paid_quote + paid)


def _fees_json(order: VenueOrder) -> list[dict[str, Any]]:
    return [{"cost": f.cost, "currency": f.currency} for f in order.fees]


def _finish(env: OrdersEnv, intent: OrderIntent, broker: OrderBroker, order: VenueOrder,
            fill: OrderFill) -> str:
    """Record a final order and the signal's transition in one transaction."""
    state = order.state
    dust_rule = None
    if intent.kind in ("close", "stop", "partial"):
        try:
            dust_rule = broker.rules(intent.symbol)
        except ExchangeError as exc:
            return _cannot_tell(env, intent, _LEGACY.get(intent.status, intent.status), exc)
    protect = intent.kind == "open" and env.config().CC_EXCHANGE_STOP and \
        stop_broker(broker, intent.symbol) is not None
    reprotect = _reprotect(env, intent, broker)
    if intent.kind in ("close", "stop", "partial") and fill.filled > 0:
        try:
            fill = _with_funding(env, intent, broker, fill)
        except ExchangeError as exc:  # the funding list is part of the evidence: look again
            return _cannot_tell(env, intent, _LEGACY.get(intent.status, intent.status), exc)
    values = {"status": state, "filled_amount": fill.filled, "fill_price": fill.average,
              "filled_cost": fill.cost, "base_fee": fill.base_fee, "fees_quote": fill.fees_quote,
              "fees_paid_quote": fill.fees_paid_quote, "fees": _fees_json(order) or None,
              "exchange_order_id": order.exchange_order_id or intent.exchange_order_id}

    def step(ctx: KeyContext, row: Any, config: Config, when: datetime,
             finished: bool) -> TickOutcome:
        if intent.kind == "open":
            if fill.filled > 0:
                return confirm_open(ctx, row, fill, when, protect=protect)
            return reject_open(ctx, row, when, f"entry order {intent.client_order_id} ended "
                               f"{state} with nothing filled")
        if intent.kind == "dca":
            return record_dca_fill(ctx, row, fill, when,
                                   protect=reprotect and is_protected(row))
        assert dust_rule is not None
        remaining = (row.amount or 0.0) - fill.filled
        price = fill.average or intent.price
        dust = remainder_is_dust(remaining, price, dust_rule)
        if intent.kind == "partial":
            return record_partial_fill(ctx, row, fill, when, config, remainder_is_dust=dust,
                                       protect=reprotect and is_protected(row))
        if intent.kind == "stop":
            if fill.filled > 0:
                return record_stop_fill(ctx, row, fill, when, config, remainder_is_dust=dust,
                                        finished=finished)
            if row.state == "opened" and not row.order_in_flight and \
                    _is_current_stop(intent, row):
                return replace_stop(ctx, row, when, f"the stop ended {state} unfilled")
            return TickOutcome(result=TickResult("idle", ctx.symbol, ctx.strategy_name,
                                                 ctx.exchange_name, row.price_open, when,
                                                 signal=row.public()))
        return record_exit_fill(ctx, row, fill, when, config, remainder_is_dust=dust,
                                finished=finished)

    done = _transition(env, intent, values, step)
    return state if done else "stale"


def _refused(env: OrdersEnv, intent: OrderIntent, message: str) -> str:
    """The venue refused the create call (or nothing sellable could be sent): nothing exists
    on the venue under this id. An entry is rolled back; an exit is retried (same id, safe:
    no order exists) with backoff until it is `stuck`."""
    if intent.kind == "stop":
        return _stop_refused(env, intent, message)
    if intent.kind in ("partial", "dca"):  # a refused command changes nothing (SPEC §11)
        reprotect = _reprotect(env, intent, env.brokers(intent.exchange_name))
        done = _transition(env, intent, {"status": "rejected", "last_error": message},
                           lambda ctx, row, _c, when, _f: command_refused(
                               ctx, row, when, message,
                               protect=reprotect and is_protected(row)))
        return "rejected" if done else "stale"
    if intent.kind == "open":
        done = _transition(env, intent, {"status": "rejected", "last_error": message},
                           lambda ctx, row, config, when, _f: reject_open(ctx, row, when,
                                                                          message))
        return "rejected" if done else "stale"
    refusals = intent.refusals + 1
    config = env.config()
    stuck = refusals >= config.CC_ORDER_CLOSE_RETRY_ATTEMPTS
    delay = backoff_seconds(refusals, ceiling_s=env.backoff_ceiling_seconds)
    values: dict[str, Any] = {"status": "stuck" if stuck else "pending", "refusals": refusals,
                              "last_error": message, "unknown_since": None,
                              "next_attempt_at": None if stuck else
                              datetime.now(UTC) + timedelta(seconds=delay)}
    done = _transition(env, intent, values,
                       lambda ctx, row, cfg, when, _f: refuse_close(ctx, row, when, message, cfg))
    if done and not stuck and intent.id is not None:
        env.enqueue(intent.id, delay)
    return ("stuck" if stuck else "refused") if done else "stale"


Step = Callable[[KeyContext, Any, Config, datetime, bool], TickOutcome]


def _transition(env: OrdersEnv, intent: OrderIntent, values: dict[str, Any], step: Step
                ) -> bool:
    """Write the intent's evidence and the signal's transition in one transaction under the
    key lock, then enqueue any new intent (an exit for a remainder). False: the signal was
    no longer waiting for this order (the evidence is kept on the intent only)."""
    now = datetime.now(UTC)
    when = floor_to_minute(env.clock.now())
    config = env.config()
    with session_scope(env.engine) as session:
        key = session.execute(select(StrategySymbol).where(StrategySymbol.id == intent.key_id)
                              .with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()
        record = signal_rows.find_signal(session, intent.key_id, intent.signal_id)
        stored = session.get(OrderIntent, intent.id, populate_existing=True)
        assert stored is not None
        for name, value in values.items():
            setattr(stored, name, value)
        stored.sending_until, stored.updated_at = None, now
        row = None if record is None else signal_rows.to_core(record)
        expected = _EXPECTED[intent.kind]
        if row is not None and intent.kind in ("partial", "dca") and \
                command_in_flight(row) is None:
            expected = ()  # the row waits for no command's order any more
        if row is None or row.state not in expected:
            log.warning("intent %s: signal %s is not %s; evidence %s recorded on the intent "
                        "only", intent.id, intent.signal_id, " or ".join(expected),
                        values.get("status"))
            if stored.status in ("pending", "unknown", "open") and not stored.filled_amount:
                stored.status = "canceled"  # nothing waits for it any more: never re-sent
            return False
        ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name)
        outcome = step(ctx, _with_order(row, stored), config, when, key.status == "draining")
        added, intent_ids = store_outcome(session, key, record, outcome, when, now, env.origin)
        if outcome.command_results:
            settle_commands(session, outcome.command_results, now)
        dispatched = [event_as_dict(r) for r in added]
    events.dispatch(dispatched)
    for new_id in intent_ids:
        env.enqueue(new_id, 0)
    _callbacks(key.strategy_name, outcome, ctx, when)
    return True


def order_summary(intent: OrderIntent) -> dict[str, Any]:
    """An order as the public signal shows it (SPEC §8 "Visible to an operator")."""
    return {"client_order_id": intent.client_order_id, "side": intent.side,
            "kind": intent.kind, "amount": intent.amount, "filled": intent.filled_amount,
            "average_price": intent.fill_price, "fees": intent.fees, "status": intent.status,
            "exchange_order_id": intent.exchange_order_id}


def _with_order(row: Any, intent: OrderIntent) -> Any:
    orders = [o for o in row.extra.get("orders", [])
              if o.get("client_order_id") != intent.client_order_id]
    orders.append(order_summary(intent))
    return row.evolve(extra={**row.extra, "orders": orders})


def _notice(env: OrdersEnv, intent: OrderIntent, notice: Notice) -> None:
    with session_scope(env.engine) as session:
        key = session.get(StrategySymbol, intent.key_id)
        record = notice_event(intent.key_id, notice, symbol=intent.symbol,
                              strategy_name=key.strategy_name if key else None,
                              exchange_name=intent.exchange_name,
                              when=floor_to_minute(env.clock.now()), origin=env.origin)
        session.add(record)
        session.flush()
        count_errors(session, [record])
        dispatched = event_as_dict(record)
    events.dispatch([dispatched])


def _callbacks(strategy_name: str, outcome: TickOutcome, ctx: KeyContext,
               when: datetime) -> None:
    strategy = REGISTRY.strategies.get(strategy_name)
    if strategy is not None:
        for notice in run_callbacks(strategy.callbacks, outcome.callbacks, ctx, when):
            log.error("%s", notice.message)


def due_intents(engine: Engine, limit: int = 200) -> list[int]:
    """Intents the relay must (re-)enqueue: not final, due, and not leased. Their next
    attempt is pushed back so the relay does not flood the queue with copies."""
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        stmt = (select(OrderIntent).where(
            OrderIntent.status.in_(RETRYABLE),  # type: ignore[attr-defined]
            or_(OrderIntent.next_attempt_at.is_(None),  # type: ignore[union-attr]
                OrderIntent.next_attempt_at <= now),  # type: ignore[operator]
            or_(OrderIntent.sending_until.is_(None),  # type: ignore[union-attr]
                OrderIntent.sending_until < now))  # type: ignore[operator]
            .order_by(OrderIntent.id).limit(limit))  # type: ignore[arg-type]
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        intents = list(session.execute(stmt).scalars())
        for intent in intents:
            intent.next_attempt_at = now + timedelta(seconds=30)
        return [i.id for i in intents if i.id is not None]


__all__ = ["FINAL_STATUSES", "RETRYABLE", "OrdersEnv", "backoff_seconds", "due_intents",
           "order_summary", "submit_intent"]

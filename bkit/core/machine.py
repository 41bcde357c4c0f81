"""The tick state machine of one key (strategy × exchange × symbol), SPEC §4, §6-§9.

`advance` takes the stored state, the tick's time and VWAP and (when asked) the strategy's
answer, and returns the new signal row, the tick result and the side effects to perform.
It does no I/O: the runtime loads state under a row lock, calls it, and writes the outcome.
Broker-mode confirmations (`bkit.core.order_outcomes`) are pure too; the orders worker calls
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from bkit.core.config import Config
from bkit.core.errors import SignalValidationError
from bkit.core.orders import default_cost_problem, is_spot_symbol
from bkit.core.pnl import Pnl, pnl_for
from bkit.core.position_commands import (
    ORDER_COMMANDS,
    STOP_COMMANDS,
    PositionCommand,
    apply_command,
    closed_by_partials,
    has_position_state,
    position_pnl,
    with_command,
)
from bkit.core.results import CallbackCall, Notice, OrderRequest, TickResult
from bkit.core.signals import (
    PublicSignal,
    SignalRow,
    ValidSignal,
    stored_row_problems,
    validate_signal,
)

KeyStatus = Literal["enabled", "draining", "paused", "disabled"]
Command = Literal["close_position", "cancel_scheduled"]
#: Strategy intervals that throttle `get_signal` (SPEC §1), in minutes.
SIGNAL_INTERVAL_MINUTES: dict[str, int] = {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30,
                                           "1h": 60}
MILESTONE_STEP = 10

#: A risk check: gets the candidate (valid and public form), returns a rejection note or None.
RiskCheck = Callable[[ValidSignal, PublicSignal], str | None]
#: A sizing (SPEC §11): gets the validated candidate, returns its cost (quote currency) or
#: why the entry is refused. Built by the edges from `bkit.core.sizing.size_entry`.
Sizer = Callable[[ValidSignal], float | str]


@dataclass(frozen=True, slots=True)
class KeyContext:
    """Who is ticking: the key's names and the strategy's signal interval."""

    symbol: str
    strategy_name: str
    exchange_name: str
    interval: str = "1m"


@dataclass(frozen=True, slots=True)
class KeyState:
    """What is stored for a key between ticks.

    `signal_window` is the start (epoch minutes) of the last interval window in which
    `get_signal` was consumed, so the strategy is asked at most once per aligned window.
    """

    signal: SignalRow | None = None
    status: KeyStatus = "enabled"
    signal_window: int | None = None
    command: Command | None = None
    #: Position commands queued for this tick (SPEC §11), in the order they were given.
    position_commands: tuple[PositionCommand, ...] = ()
    #: Broker mode: an order of the key is on its way (an intent not yet final; a stop
    #: resting on the venue does not count). Queued commands then wait for a later tick.
    orders_in_flight: bool = False


@dataclass(frozen=True, slots=True)
class StrategyAnswer:
    """What `get_signal` gave this tick: `raw` (None or a signal) or the `error` it raised."""

    raw: Any = None
    error: str | None = None


@dataclass(slots=True)
class TickOutcome:
    """Everything a tick decided. The runtime stores `signal`, applies `slot`, writes `order`
    to the outbox, appends `result` and `notices` to the event log, then runs `callbacks`."""

    result: TickResult
    signal: SignalRow | None = None          # row to write (new, updated or terminal)
    notices: list[Notice] = field(default_factory=list)
    callbacks: list[CallbackCall] = field(default_factory=list)
    slot: Literal["acquire", "release"] | None = None
    order: OrderRequest | None = None
    signal_window: int | None = None         # new window marker, None = unchanged
    clear_command: bool = False
    finished: bool = False                   # a draining key has nothing live: disable it
    #: (command id, "accepted" | "refused", message) of the position commands applied.
    command_results: list[tuple[int, str, str]] = field(default_factory=list)


def epoch_minutes(when: datetime) -> int:
    return int(when.timestamp() // 60)


def signal_window_of(when: datetime, interval: str) -> int:
    """Start (epoch minutes) of the aligned interval window containing `when`."""
    step = SIGNAL_INTERVAL_MINUTES[interval]
    minute = epoch_minutes(when)
    return minute - minute % step


def wants_signal(state: KeyState, when: datetime, interval: str) -> bool:
    """Whether this tick should call `get_signal` (SPEC §4 step 4): no live signal, key enabled,
    no pending command, and the strategy not yet asked in this aligned interval window."""
    if state.status != "enabled" or state.command is not None:
        return False
    if state.signal is not None and state.signal.is_live:
        return False
    return state.signal_window != signal_window_of(when, interval)


def minutes_between(start: datetime, end: datetime) -> float:
    return (end - start) / timedelta(minutes=1)


def _sign(position: str) -> int:
    return 1 if position == "long" else -1


def progress(row: SignalRow, price: float) -> tuple[float, float]:
    """(percent_tp, percent_sl): 0-100 progress from entry toward TP or SL at `price`."""
    sign = _sign(row.position)
    move = sign * (price - row.price_open)
    to_tp = sign * (row.price_take_profit - row.price_open)
    to_sl = sign * (row.price_open - row.price_stop_loss)
    percent_tp = min(100.0, max(0.0, move / to_tp * 100)) if move > 0 else 0.0
    percent_sl = min(100.0, max(0.0, -move / to_sl * 100)) if move < 0 else 0.0
    return percent_tp, percent_sl


class _Tick:
    """One evaluation of `advance`; holds the shared inputs so each branch stays short."""

    def __init__(self, ctx: KeyContext, when: datetime, price: float, config: Config,
                 uses_broker: bool, touch: tuple[float, float] | None = None) -> None:
        self.ctx, self.when, self.price, self.config = ctx, when, price, config
        self.uses_broker = uses_broker
        self.touch = touch
        self.answer: StrategyAnswer | None = None
        self.risk_check: RiskCheck | None = None
        self.sizer: Sizer | None = None

    def result(self, action: str, row: SignalRow | None = None, **extra: Any) -> TickResult:
        return TickResult(
            action=action, symbol=self.ctx.symbol, strategy_name=self.ctx.strategy_name,
            exchange_name=self.ctx.exchange_name, current_price=extra.pop("price", self.price),
            created_at=self.when, signal=None if row is None else row.public(), **extra)

    def idle(self, row: SignalRow | None = None, **kw: Any) -> TickOutcome:
        outcome = TickOutcome(result=self.result("idle", row), **kw)
        if row is None:
            outcome.callbacks.append(CallbackCall("on_idle", (self.ctx.symbol, self.price,
                                                              self.when)))
        return outcome

    # --- closing and cancelling -------------------------------------------------------------
    def cancel(self, row: SignalRow, reason: str, **kw: Any) -> TickOutcome:
        done = row.evolve(state="cancelled", cancel_reason=reason, closed_at=self.when,
                          order_in_flight=False)
        return TickOutcome(
            result=self.result("cancelled", done, reason=reason, close_timestamp=self.when),
            signal=done, slot="release",
            callbacks=[CallbackCall("on_cancel", (self.ctx.symbol, done.public(), self.price,
                                                  self.when))], **kw)

    def close(self, row: SignalRow, reason: str, close_price: float, **kw: Any) -> TickOutcome:
        if self.uses_broker:
            # Not finished yet: the position stays live until the exchange confirms the close
            # (a rejected close is retried by later ticks, so the key must keep ticking).
            kw.pop("finished", None)
            closing = row.evolve(state="closing", pending_close_reason=reason,
                                 pending_close_price=close_price, order_in_flight=True)
            return TickOutcome(result=self.result("idle", closing), signal=closing,
                               order=close_order(closing), **kw)
        return record_close(self.ctx, row, reason, close_price, self.when, self.config, **kw)


def signal_pnl(row: SignalRow, price: float, config: Config) -> Pnl:
    """§5 PnL at `price`, or §11's with partial closes and DCA entries when the position
    has them."""
    if has_position_state(row):
        return position_pnl(row, price, config)
    return pnl_for(row.position, row.price_open, price, row.cost, config)


def close_order(row: SignalRow) -> OrderRequest:
    price = row.pending_close_price if row.pending_close_price is not None else row.price_open
    return OrderRequest(kind="close", signal_id=row.id, symbol=row.symbol,
                        side="sell" if row.position == "long" else "buy",
                        position=row.position, price=price, cost=row.cost)


def stop_order(row: SignalRow) -> OrderRequest:
    """The protective stop of an open position (SPEC §10): sells a long (buys back a short)
    at its stop-loss; the orders worker sizes it from what the account holds."""
    return OrderRequest(kind="stop", signal_id=row.id, symbol=row.symbol,
                        side="sell" if row.position == "long" else "buy",
                        position=row.position, price=row.price_stop_loss, cost=row.cost)


def partial_order(row: SignalRow, price: float) -> OrderRequest:
    """A partial exit (SPEC §11): sells part of a long (buys back part of a short) at market;
    the orders worker sizes it from what the account holds when it sends it."""
    return OrderRequest(kind="partial", signal_id=row.id, symbol=row.symbol,
                        side="sell" if row.position == "long" else "buy",
                        position=row.position, price=price, cost=row.cost)


def dca_order(row: SignalRow, price: float, cost: float) -> OrderRequest:
    """A DCA entry (SPEC §11): buys `cost` (quote units) more of a long (sells more of a
    short) at market, at the tick's `price`."""
    return OrderRequest(kind="dca", signal_id=row.id, symbol=row.symbol,
                        side="buy" if row.position == "long" else "sell",
                        position=row.position, price=price, cost=cost)


#: Protection states in which an exchange-side stop is (or should be) on the venue.
PROTECTED_STATES = frozenset({"placing", "open", "refused"})


def is_protected(row: SignalRow) -> bool:
    """Whether the position keeps a protective stop on the venue (SPEC §10)."""
    return row.extra.get("protection") in PROTECTED_STATES


def with_protection(row: SignalRow, state: str, *, new_stop: bool = False) -> SignalRow:
    """Record the exchange-side protection of a position in its extras: `placing`, `open`
    (a stop rests on the venue), `refused` (the venue would not take it: the tick watches
    the SL), `none`; and number the stop orders (each one its own client order id)."""
    extra = {**row.extra, "protection": state}
    if new_stop:
        extra["stop_orders"] = int(row.extra.get("stop_orders", -1)) + 1
    return row.evolve(extra=extra)


def open_order(row: SignalRow) -> OrderRequest:
    return OrderRequest(kind="open", signal_id=row.id, symbol=row.symbol,
                        side="buy" if row.position == "long" else "sell",
                        position=row.position, price=row.price_open, cost=row.cost)


def record_close(ctx: KeyContext, row: SignalRow, reason: str, close_price: float,
                 when: datetime, config: Config, **kw: Any) -> TickOutcome:
    """The terminal `closed` transition: PnL at `close_price`, slot released, `on_close`."""
    pnl = signal_pnl(row, close_price, config)
    done = row.evolve(state="closed", close_reason=reason, closed_at=when,
                      price_close=close_price, pnl_percentage=pnl.pnl_percentage,
                      pnl_cost=pnl.pnl_cost, order_in_flight=False,
                      pending_close_reason=None, pending_close_price=None)
    result = TickResult(
        action="closed", symbol=ctx.symbol, strategy_name=ctx.strategy_name,
        exchange_name=ctx.exchange_name, current_price=close_price, created_at=when,
        signal=done.public(), pnl=pnl, close_reason=reason, close_timestamp=when)
    return TickOutcome(result=result, signal=done, slot="release",
                       callbacks=[CallbackCall("on_close", (ctx.symbol, done.public(),
                                                            close_price, when))], **kw)


def record_open(ctx: KeyContext, row: SignalRow, when: datetime, **kw: Any) -> TickOutcome:
    """The `opened` transition: the position is live from `when` (its pending_at)."""
    opened = row.evolve(state="opened", pending_at=when, order_in_flight=False)
    result = TickResult(
        action="opened", symbol=ctx.symbol, strategy_name=ctx.strategy_name,
        exchange_name=ctx.exchange_name, current_price=opened.price_open, created_at=when,
        signal=opened.public())
    return TickOutcome(result=result, signal=opened, callbacks=[CallbackCall(
        "on_open", (ctx.symbol, opened.public(), opened.price_open, when))], **kw)


def advance(ctx: KeyContext, state: KeyState, when: datetime, price: float, config: Config, *,
            answer: StrategyAnswer | None = None, risk_check: RiskCheck | None = None,
            uses_broker: bool = False, touch: tuple[float, float] | None = None,
            sizer: Sizer | None = None) -> TickOutcome:
    """Run one tick of SPEC §4 (first match wins): pending commands, the scheduled signal,
    the open position, then (no signal) maybe a new signal from `answer`.

    `price` must be a finite VWAP > 0 (the runtime fails the tick earlier otherwise).
    `answer` is None when the strategy was not asked this tick. `touch`: (low, high) of
    the last closed 1m candle, for `CC_STOP_LOSS_TRIGGER = "touch"` (SPEC §11). `sizer`:
    the strategy's sizing, which sets a new entry's cost (or refuses it, stage "sizing").
    """
    if not (isinstance(price, float | int) and math.isfinite(price) and price > 0):
        raise ValueError(f"tick price must be a finite number > 0, got {price!r}")
    tick = _Tick(ctx, when, float(price), config, uses_broker, touch)
    tick.answer, tick.risk_check, tick.sizer = answer, risk_check, sizer
    row = state.signal if state.signal is not None and state.signal.is_live else None

    if row is not None and (problems := stored_row_problems(row)):
        return quarantine(tick, row, problems)

    if row is not None and row.order_in_flight:
        return tick.idle(row)  # no new decision while the exchange has not answered
    if row is not None and row.state == "closing" and row.stuck:
        # The venue kept refusing the exit: only an operator (`bkit resolve`) or
        # reconciliation ends it. The position stays ours, its slot held, nothing re-sent.
        return tick.idle(row)
    if row is not None and row.state == "closing":
        # A close whose exit intent ended without one (legacy rows): send it again.
        retry = row.evolve(order_in_flight=True, exit_orders=row.exit_orders + 1)
        return TickOutcome(result=tick.result("idle", retry), signal=retry,
                           order=close_order(retry))

    applied: list[tuple[int, str, str]] = []
    command_notices: list[Notice] = []
    if state.position_commands and not (uses_broker and state.orders_in_flight):
        # (an order of the key still at the venue: the commands stay queued for later)
        row, order = _apply_position_commands(tick, row, state.position_commands, applied,
                                              command_notices)
        if order is not None and row is not None:
            # The position's order goes out now; TP/SL/time are watched again from the next
            # tick (the exchange-side stop, if any, protects it meanwhile).
            sent = TickOutcome(result=tick.result("idle", row), signal=row, order=order)
            return _with_commands(sent, row, state, applied, command_notices)
    if state.command is not None:
        outcome = _apply_command(tick, row, state.command)
        if outcome is not None:
            return _with_commands(outcome, row, state, applied, command_notices)
    outcome = _monitor(tick, state, row)
    outcome = _with_commands(outcome, row, state, applied, command_notices)
    # A command with nothing to act on (cancel_scheduled on an open position) is dropped.
    outcome.clear_command = outcome.clear_command or state.command is not None
    return outcome


def _apply_position_commands(tick: _Tick, row: SignalRow | None,
                             commands: tuple[PositionCommand, ...],
                             applied: list[tuple[int, str, str]], notices: list[Notice]
                             ) -> tuple[SignalRow | None, OrderRequest | None]:
    """Apply the queued position commands at this tick's price, in order (SPEC §11): each
    accepted one changes the row; a refused one is an error event with the rule that refused
    it, and changes nothing. Returns the row and the order the commands need, if any.

    With a broker (SPEC §8, §10) a command is checked by the same rules at the tick's price,
    then: a partial profit/loss becomes a `partial` order and a DCA a `dca` order, and the
    row only waits for it (`order_in_flight`, the command kept in `extra["command"]`): its
    position changes when the venue confirms a fill, by what filled. A trailing stop or a
    breakeven changes the row's SL at once and, when the position is protected on the venue,
    moves the exchange-side stop (a new `stop` order; the orders worker cancels the old one
    first). A trailing take changes the TP only (the tick watches it).

    One order per key at a time: the commands after the first that needs an order are not
    applied this tick; they stay queued (status `pending`) and are applied, in order, by the
    first tick after that order is final. A trader gets every command applied in the order
    given, none refused merely because another was still at the venue.
    """
    for command in commands:
        if row is None:
            verdict: SignalRow | str = f"{command.name} refused: no open position"
        elif tick.uses_broker and (problem := _default_cost_problem(tick, command)):
            verdict = f"{command.name} refused before sending: {problem}"
        else:
            verdict = apply_command(row, command, tick.price, tick.config)
        if isinstance(verdict, str):
            applied.append((command.id, "refused", verdict))
            notices.append(Notice("error", verdict, {"stage": "command", "command": command.name,
                                                     "command_id": command.id}))
            continue
        assert row is not None
        order: OrderRequest | None = None
        if tick.uses_broker and command.name in ORDER_COMMANDS:
            verdict = with_command(row, command, tick.price)
            if command.name == "average_buy":
                cost = tick.config.CC_POSITION_ENTRY_COST if command.value is None \
                    else float(command.value)
                order = dca_order(verdict, tick.price, cost)
            else:
                order = partial_order(verdict, tick.price)
        elif tick.uses_broker and command.name in STOP_COMMANDS and is_protected(row) and \
                verdict.price_stop_loss != row.price_stop_loss:
            verdict = with_protection(verdict, "placing", new_stop=True)
            order = stop_order(verdict)
        row = verdict
        sent = "" if order is None else f": {order.kind} order queued for the venue"
        message = f"{command.name} accepted at {tick.price:.10g}{sent}"
        applied.append((command.id, "accepted", message))
        notices.append(Notice("command", message, {
            "command": command.name, "command_id": command.id, "signal_id": row.id,
            "value": command.value, "take_profit": row.price_take_profit,
            "stop_loss": row.price_stop_loss}))
        if order is not None:
            return row, order  # the commands after it wait for a later tick (see above)
    return row, None


def _default_cost_problem(tick: _Tick, command: PositionCommand) -> str | None:
    """SPEC §8: a DCA without a cost buys CC_POSITION_ENTRY_COST, meant as USD; on a market
    not quoted in a USD stablecoin it needs an explicit cost, never an absurd order."""
    if command.name != "average_buy" or command.value is not None:
        return None
    return default_cost_problem(tick.ctx.symbol, False, tick.config.CC_POSITION_ENTRY_COST)


def _with_commands(outcome: TickOutcome, row: SignalRow | None, state: KeyState,
                   applied: list[tuple[int, str, str]], notices: list[Notice]) -> TickOutcome:
    """Attach what the commands did; keep the row they changed if the tick wrote none."""
    if not applied:
        return outcome
    outcome.command_results = applied
    outcome.notices = notices + outcome.notices
    changed = row is not None and state.signal is not None and row is not state.signal
    if changed and outcome.signal is None:
        outcome.signal = row
    return outcome


def _monitor(tick: _Tick, state: KeyState, row: SignalRow | None) -> TickOutcome:
    if row is not None and row.state == "scheduled":
        if state.status == "draining":
            return tick.cancel(row, "user", finished=True)  # stop cancels a resting entry
        return _scheduled(tick, row)
    if row is not None:
        return _open_position(tick, row, finished_on_close=state.status == "draining")

    if state.status == "draining":
        return tick.idle(finished=True)
    if state.status != "enabled" or tick.answer is None:
        return tick.idle()
    return _new_signal(tick, tick.answer, tick.risk_check)


def quarantine(tick: _Tick, row: SignalRow, problems: list[str]) -> TickOutcome:
    """A corrupted stored row is taken out of trading (never traded on), its slot freed, and
    an error event says why. The row stays for an operator to inspect."""
    held = row.evolve(state="quarantined", order_in_flight=False,
                      extra={**row.extra, "quarantine": problems})
    return TickOutcome(result=tick.result("idle"), signal=held, slot="release", notices=[Notice(
        "error", f"signal {row.id} quarantined, never traded: " + "; ".join(problems),
        {"stage": "integrity", "signal_id": row.id, "problems": problems})])


def _apply_command(tick: _Tick, row: SignalRow | None, command: str) -> TickOutcome | None:
    """User commands come first. None: the command does not apply to this state."""
    if row is None:
        return tick.idle(clear_command=True)
    if row.state == "scheduled":  # both commands cancel a resting entry
        return tick.cancel(row, "user", clear_command=True)
    if command == "close_position":
        return tick.close(row, "closed", tick.price, clear_command=True)
    return None


def _scheduled(tick: _Tick, row: SignalRow) -> TickOutcome:
    sign = _sign(row.position)
    assert row.scheduled_at is not None
    if minutes_between(row.scheduled_at, tick.when) >= tick.config.CC_SCHEDULE_AWAIT_MINUTES:
        return tick.cancel(row, "timeout")
    if sign * tick.price <= sign * row.price_stop_loss:
        return tick.cancel(row, "price_reject")  # beats activation
    if tick.when > row.scheduled_at and sign * tick.price <= sign * row.price_open:
        if tick.uses_broker:
            opening = row.evolve(state="opening", order_in_flight=True)
            return TickOutcome(result=tick.result("idle", opening), signal=opening,
                               order=open_order(opening))
        return record_open(tick.ctx, row, tick.when)
    return TickOutcome(result=tick.result("waiting", row))


def _open_position(tick: _Tick, row: SignalRow, *, finished_on_close: bool) -> TickOutcome:
    sign = _sign(row.position)
    assert row.pending_at is not None
    if minutes_between(row.pending_at, tick.when) >= row.minute_estimated_time:
        return tick.close(row, "time_expired", tick.price, finished=finished_on_close)
    if closed_by_partials(row):  # partial closes took the whole basis (SPEC §11)
        return tick.close(row, "closed", tick.price, finished=finished_on_close)
    if tick.config.CC_STOP_LOSS_TRIGGER == "touch":
        # SPEC §11: the last closed candle's extreme touching the SL hits it, before TP.
        if stop_touched(row, tick.touch):
            return tick.close(row, "stop_loss", row.price_stop_loss, finished=finished_on_close)
        if sign * tick.price >= sign * row.price_take_profit:
            return tick.close(row, "take_profit", row.price_take_profit,
                              finished=finished_on_close)
    else:
        if sign * tick.price >= sign * row.price_take_profit:
            return tick.close(row, "take_profit", row.price_take_profit,
                              finished=finished_on_close)
        if sign * tick.price <= sign * row.price_stop_loss:
            return tick.close(row, "stop_loss", row.price_stop_loss, finished=finished_on_close)

    percent_tp, percent_sl = progress(row, tick.price)
    pnl = signal_pnl(row, tick.price, tick.config)
    notices, callbacks = [], []
    updated = row
    public = row.public()
    for kind, percent, level_field in (("partial_profit", percent_tp, "partial_profit_level"),
                                       ("partial_loss", percent_sl, "partial_loss_level")):
        reached = int(percent // MILESTONE_STEP) * MILESTONE_STEP
        fired = getattr(updated, level_field)
        for level in range(fired + MILESTONE_STEP, reached + 1, MILESTONE_STEP):
            notices.append(Notice(kind, f"{kind.replace('_', ' ')} {level}%",
                                  {"level": level, "signal_id": row.id, "price": tick.price}))
            callbacks.append(CallbackCall(f"on_{kind}", (tick.ctx.symbol, public, level,
                                                         tick.price, tick.when)))
        if reached > fired:
            updated = updated.evolve(**{level_field: reached})
    move_percent = sign * (tick.price - row.price_open) / row.price_open * 100
    if not row.breakeven_fired and move_percent >= tick.config.breakeven_move_percent - 1e-12:
        updated = updated.evolve(breakeven_fired=True)
        notices.append(Notice("breakeven", "breakeven available",
                              {"signal_id": row.id, "price": tick.price}))
        callbacks.append(CallbackCall("on_breakeven", (tick.ctx.symbol, public, tick.price,
                                                       tick.when)))
    result = tick.result("active", updated, percent_tp=percent_tp, percent_sl=percent_sl,
                         pnl=pnl)
    return TickOutcome(result=result, signal=updated if updated is not row else None,
                       notices=notices, callbacks=callbacks)


def stop_touched(row: SignalRow, touch: tuple[float, float] | None) -> bool:
    """The touch rule: a long's SL is hit when the last closed candle's low is at or below
    it, a short's when its high is at or above it. No candle: not hit."""
    if touch is None:
        return False
    low, high = touch
    return low <= row.price_stop_loss if row.position == "long" else \
        high >= row.price_stop_loss


def _new_signal(tick: _Tick, answer: StrategyAnswer,
                risk_check: RiskCheck | None) -> TickOutcome:
    ctx, when = tick.ctx, tick.when
    window = signal_window_of(when, ctx.interval)
    if answer.error is not None:
        return tick.idle(signal_window=window, notices=[Notice(
            "error", f"get_signal failed: {answer.error}", {"stage": "get_signal"})])
    if answer.raw is None:
        return tick.idle(signal_window=window)
    try:
        valid = validate_signal(answer.raw, symbol=ctx.symbol, current_price=tick.price,
                                config=tick.config)
    except SignalValidationError as exc:
        return tick.idle(signal_window=window, notices=[Notice(
            "error", str(exc), {"stage": "validation", "reasons": exc.reasons})])

    if tick.uses_broker and valid.position == "short" and is_spot_symbol(ctx.symbol):
        return tick.idle(signal_window=window, notices=[Notice(
            "error", f"short on the spot market {ctx.symbol} refused before sending: spot "
            "has no shorts (it would sell coins the account holds). Trade the perpetual "
            f"({ctx.symbol}:{ctx.symbol.split('/')[-1]}) on a futures exchange, e.g. "
            "add_ccxt_exchange('binanceusdm', …) with CC_LEVERAGE / CC_MARGIN_MODE",
            {"stage": "order_check", "signal_id": valid.id})])
    cost = valid.cost
    if tick.sizer is not None:  # SPEC §11: the sizing sets the cost, never a default size
        sized = tick.sizer(valid)
        if isinstance(sized, str):
            return tick.idle(signal_window=window, notices=[Notice(
                "error", f"entry refused: {sized}", {"stage": "sizing", "signal_id": valid.id})])
        cost = sized
    elif tick.uses_broker and (problem := default_cost_problem(
            ctx.symbol, valid.cost_explicit, tick.config.CC_POSITION_ENTRY_COST)):
        return tick.idle(signal_window=window, notices=[Notice(
            "error", f"entry refused before sending: {problem}",
            {"stage": "order_check", "signal_id": valid.id})])
    row = SignalRow(
        id=valid.id, symbol=ctx.symbol, strategy_name=ctx.strategy_name,
        exchange_name=ctx.exchange_name, position=valid.position, price_open=valid.price_open,
        price_take_profit=valid.price_take_profit, price_stop_loss=valid.price_stop_loss,
        minute_estimated_time=valid.minute_estimated_time, note=valid.note, cost=cost,
        state="scheduled", created_at=when, scheduled_at=when,
    )
    if risk_check is not None:
        try:
            note = risk_check(valid, row.public())
        except Exception as exc:  # a validation that raises rejects, with its message
            note = str(exc) or type(exc).__name__
        if note:
            # Not consuming the window: the risk check is tried again on the next tick.
            return tick.idle(notices=[Notice("risk", note, {"signal_id": valid.id,
                                                            "signal": row.public()})])
    if not valid.immediate:
        return TickOutcome(result=tick.result("scheduled", row), signal=row, slot="acquire",
                           signal_window=window, callbacks=[CallbackCall(
                               "on_schedule", (ctx.symbol, row.public(), tick.price, when))])
    if tick.uses_broker:
        opening = row.evolve(state="opening", order_in_flight=True)
        return TickOutcome(result=tick.result("idle", opening), signal=opening, slot="acquire",
                           signal_window=window, order=open_order(opening))
    return record_open(ctx, row, when, slot="acquire", signal_window=window)


__all__ = ["KeyContext", "KeyState", "Sizer", "StrategyAnswer", "TickOutcome", "advance",
           "progress", "signal_window_of", "wants_signal"]

"""The backtest loop: the live tick of `bkit.ticking`, minute by minute, in memory.

Each key (strategy × exchange × symbol) of a backtest is a `KeyRun`. A *full tick* at a
minute does what the live tick does for a key: the VWAP of the closed candles before the
minute (precomputed, `bkit.backtest.prices`), `get_signal` exactly when
`bkit.core.machine.wants_signal` says so, the pure `advance` of `bkit.core.machine` with the
risk check of the key's profile, then the outcome applied as `bkit.store.outcomes` applies it
(signal, risk slot, window, command, drain) and the callbacks run after it, as after commit.

Most minutes change nothing: a flat key inside a window it already asked in, a resting entry
that is neither reached nor cancelled, an open position away from TP, SL, its time limit and
its next milestone. For those minutes `advance` would return an `idle`/`waiting`/`active`
result and no state change, notice or callback (other than `on_tick` / `on_idle`), so the
scan (`KeyRun.next_tick`) skips them, evaluating the very same comparisons `advance` makes,
on the same floats, in the same order; the first minute where any of them would fire is
given to a full tick. A strategy with `on_tick` (or, when flat, `on_idle`) callbacks gets a
full tick every minute. The parity test (`tests/backtest/test_parity.py`) holds the whole
loop against `Live.tick`.

Sizing (SPEC §11): a strategy with a sizing gets each new entry's cost from the pure
`bkit.core.sizing.size_entry`, as the live tick does, over the backtest's inputs: the balance
of its notional `Account` (the starting balance plus the realised `pnl_cost` of its closed
trades, shared by the symbols of one run), the key's closed trades (Kelly) and the ATR over
the closed candles of the strategy's interval (read once per frame with the prices).

Position commands (SPEC §11): a callback calling `Live.commit_*` (or `Backtest.commit_*`)
during the run queues the command on its key (`bkit.backtest.commands`); the next minute
with a price is a full tick that applies it, as the live tick applies a command queued
after its commit.

Keys of one multi-symbol backtest run in lockstep (a heap ordered by minute, then symbol),
so a risk profile's `max_concurrent_positions` is counted across them at each minute as the
live database counts it.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bkit import events
from bkit.backtest import commands as backtest_commands
from bkit.backtest import simclock
from bkit.backtest.candles import CandleColumns
from bkit.backtest.prices import PriceSeries
from bkit.core.callbacks import run_callbacks
from bkit.core.candles import Candle
from bkit.core.config import Config
from bkit.core.machine import (
    MILESTONE_STEP,
    SIGNAL_INTERVAL_MINUTES,
    KeyContext,
    KeyState,
    StrategyAnswer,
    TickOutcome,
    advance,
    wants_signal,
)
from bkit.core.position_commands import PositionCommand, closed_by_partials
from bkit.core.registry import RiskSchema, StrategySchema
from bkit.core.results import CallbackCall, Notice, TickResult
from bkit.core.risk import risk_verdict
from bkit.core.signals import PublicSignal, SignalRow, ValidSignal
from bkit.core.sizing import (
    SizingInputs,
    SizingSchema,
    aggregate_minutes,
    atr_candle_window,
    entry_sizer,
    needs_atr,
    needs_balance,
    needs_history,
    notional_balance,
    window_atr,
)
from bkit.core.statistics import ClosedTrade

#: The results a backtest keeps and yields (SPEC §12).
TRANSITIONS = frozenset({"scheduled", "opened", "closed", "cancelled"})
#: Notice kinds delivered to the live listener channels of the same name.
_NOTICE_CHANNELS = {"error": "error", "risk": "risk", "partial_profit": "partial_profit",
                    "partial_loss": "partial_loss", "breakeven": "breakeven", "exit": "exit"}


#: Notices kept per key for the report (the rest are counted).
_KEPT_NOTICES = 20


def minute_at(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


@dataclass
class RiskBook:
    """The risk slots of one backtest (the in-memory `risk_slot` table): per risk profile,
    the held slots in the order they were taken."""

    slots: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)

    def held(self, risk_name: str) -> list[dict[str, Any]]:
        return list(self.slots.get(risk_name, {}).values())

    def acquire(self, risk_name: str, ctx: KeyContext, signal_id: str) -> None:
        self.slots.setdefault(risk_name, {})[(ctx.symbol, signal_id)] = {
            "symbol": ctx.symbol, "strategy_name": ctx.strategy_name,
            "exchange_name": ctx.exchange_name, "signal_id": signal_id}

    def release(self, ctx: KeyContext, signal_id: str) -> None:
        for held in self.slots.values():
            held.pop((ctx.symbol, signal_id), None)


#: Why a backtest with a balance-based sizing cannot size.
NO_STARTING_BALANCE = ("the backtest has no starting balance: pass Backtest.run(..., "
                       "balance=…) or set CC_SIZING_BALANCE (quote currency)")


@dataclass
class Account:
    """The notional account of one backtest (SPEC §11): `start` (quote currency; ≤ 0: none)
    moved by the realised `pnl_cost` of every closed trade of the run, as a signals-only live
    key's account moves with the strategy's closed trades."""

    start: float
    realised: list[float] = field(default_factory=list)

    def balance(self) -> float | str:
        return notional_balance(self.start, self.realised, NO_STARTING_BALANCE)


def ask_strategy(strategy: StrategySchema, symbol: str, when: datetime, price: float
                 ) -> StrategyAnswer:
    """`get_signal` as the live tick calls it: an exception is the strategy's error."""
    try:
        return StrategyAnswer(raw=strategy.get_signal(symbol, when, price))
    except Exception as exc:
        return StrategyAnswer(error=f"{type(exc).__name__}: {exc}")


class KeyRun:
    """One key replayed over a frame; see the module docstring."""

    def __init__(self, ctx: KeyContext, strategy: StrategySchema, risk: RiskSchema | None,
                 config: Config, series: PriceSeries, book: RiskBook, *,
                 frame_name: str = "", on_transition: Callable[[TickResult], None] | None = None,
                 sizing: SizingSchema | None = None, account: Account | None = None,
                 atr_candles: CandleColumns | None = None) -> None:
        self.ctx, self.strategy, self.risk, self.config = ctx, strategy, risk, config
        self.series, self.book, self.frame_name = series, book, frame_name
        self.prices = series.prices
        self.on_transition = on_transition
        self.sizing, self.account = sizing, account or Account(0.0)
        self.atr_candles = atr_candles
        #: Position commands queued by callbacks, applied at the next full tick, and the
        #: (status, message) of each command of this key.
        self.pending: list[PositionCommand] = []
        self.command_log: dict[int, tuple[str, str | None]] = {}
        self.signal: SignalRow | None = None
        self.status = "enabled"
        self.signal_window: int | None = None
        self.command: str | None = None
        self.used_ids: set[str] = set()
        self.transitions: list[TickResult] = []
        self.trades: list[ClosedTrade] = []
        self.ticked = 0          # minutes with a price, every one a live tick
        self.full_ticks = 0      # minutes that ran `advance`
        self.failed = 0          # minutes whose tick failed (no price), as live
        self.notice_counts: dict[str, int] = {}
        self.last_notices: list[dict[str, Any]] = []
        self.finished = False
        self.stop_requested = False
        callbacks = strategy.callbacks or {}
        self.every_minute = "on_tick" in callbacks
        self.every_idle_minute = self.every_minute or "on_idle" in callbacks
        self._be_threshold = config.breakeven_move_percent - 1e-12
        self.touch = config.CC_STOP_LOSS_TRIGGER == "touch"
        self._milestone_audience = bool(
            {"on_partial_profit", "on_partial_loss", "on_breakeven"} & set(callbacks)
            or events._listeners["partial_profit"] or events._listeners["partial_loss"]
            or events._listeners["breakeven"])

    # --- one full tick ----------------------------------------------------------------------
    def tick(self, index: int) -> None:
        """The live tick at tick `index`: price, maybe `get_signal`, `advance`, apply."""
        price = self.prices[index]
        if price != price:  # NaN: no price, the tick fails and the next minute retries
            self._fail(index)
            return
        self.ticked += 1
        self.full_ticks += 1
        if self.stop_requested and self.status == "enabled":
            self.status = "draining"
        when = minute_at(self.series.minute(index))
        ctx = self.ctx
        state = KeyState(self.signal, self.status, self.signal_window,  # type: ignore[arg-type]
                         self.command, tuple(self.pending))  # type: ignore[arg-type]
        self.pending = []
        simclock.set_now(when)
        try:
            answer = sizer = None
            if wants_signal(state, when, ctx.interval):
                answer = ask_strategy(self.strategy, ctx.symbol, when, price)
                if self.sizing is not None and answer.error is None and answer.raw is not None:
                    sizer = entry_sizer(self.sizing, self._sizing_inputs(self.sizing, when))
            check = self._risk_check(when, price) if self.risk is not None else None
            touch = (self.series.lows[index], self.series.highs[index]) if self.touch else None
            outcome = advance(ctx, state, when, price, self.config, answer=answer,
                              risk_check=check, uses_broker=False, touch=touch, sizer=sizer)
            for command_id, verdict, message in outcome.command_results:
                self.command_log[command_id] = (verdict, message)
            if outcome.signal is not None and self.signal is None and \
                    outcome.signal.id in self.used_ids:
                # As live: a reused signal id of this key is refused, history is never
                # overwritten.
                outcome = TickOutcome(result=TickResult(
                    "idle", ctx.symbol, ctx.strategy_name, ctx.exchange_name, price, when),
                    notices=[Notice("error", f"signal id {outcome.signal.id!r} already used "
                                    "for this key", {"stage": "validation"})],
                    signal_window=outcome.signal_window)
            self._apply(outcome, when)
        finally:
            simclock.set_now(None)

    # --- sizing and commands (SPEC §11) ----------------------------------------------------
    def _sizing_inputs(self, sizing: SizingSchema, when: datetime) -> SizingInputs:
        """What the live tick reads for an entry (`bkit.sizing_inputs.live_inputs`), from the
        backtest's account, trades and candles."""
        balance: float | None = None
        balance_problem: str | None = None
        if needs_balance(sizing):
            found = self.account.balance()
            balance, balance_problem = (None, found) if isinstance(found, str) else (found, None)
        history = tuple(t.pnl_percentage for t in self.trades) if needs_history(sizing) else ()
        atr_value: float | None = None
        atr_problem: str | None = None
        if needs_atr(sizing):
            found = self._atr(when, int(sizing.params["atr_period"]))
            atr_value, atr_problem = (None, found) if isinstance(found, str) else (found, None)
        return SizingInputs(balance, balance_problem, history, atr_value, atr_problem)

    def _atr(self, when: datetime, period: int) -> float | str:
        """ATR over the closed candles of the strategy's interval before `when`, aggregated
        from the frame's 1m candles as the exchange aggregates them."""
        columns = self.atr_candles
        if columns is None:
            return "no candles were loaded for the ATR"
        step = SIGNAL_INTERVAL_MINUTES[self.ctx.interval]
        since, _count = atr_candle_window(when, step, period)
        first, end = int(since.timestamp() // 60), int(when.timestamp() // 60)
        bad = [m for m in columns.bad if first <= m < end]
        if bad:
            return f"reading {self.ctx.interval} candles failed: {columns.bad[min(bad)]}"
        lo = bisect.bisect_left(columns.minutes, first)
        hi = bisect.bisect_left(columns.minutes, end)
        minutes = [Candle(columns.minutes[i] * 60_000, columns.close[i], columns.high[i],
                          columns.low[i], columns.close[i], columns.volume[i])
                   for i in range(lo, hi)]
        return window_atr(aggregate_minutes(minutes, step), when, step, period)

    def queue_command(self, command_id: int, name: str, value: float | None) -> None:
        """A position command from a callback, for the next full tick."""
        self.pending.append(PositionCommand(command_id, name, value))
        self.command_log[command_id] = ("pending", None)

    def command_status(self, command_id: int) -> tuple[str, str | None] | None:
        return self.command_log.get(command_id)

    def _apply(self, outcome: TickOutcome, when: datetime) -> None:
        row = outcome.signal
        ctx = self.ctx
        if row is not None:
            if outcome.slot == "acquire" and self.strategy.risk_name is not None:
                self.book.acquire(self.strategy.risk_name, ctx, row.id)
            elif outcome.slot == "release":
                self.book.release(ctx, row.id)
            self.used_ids.add(row.id)
            self.signal = row if row.is_live else None
        if outcome.signal_window is not None:
            self.signal_window = outcome.signal_window
        if outcome.clear_command:
            self.command = None
        if outcome.finished:
            self.status = "disabled"
            self.finished = True
        result = outcome.result
        if result.action in TRANSITIONS:
            self.transitions.append(result)
            if result.action == "closed" and row is not None:
                assert row.closed_at is not None
                self.account.realised.append(row.pnl_cost or 0.0)
                self.trades.append(ClosedTrade(
                    signal_id=row.id, symbol=row.symbol, position=row.position,
                    pnl_percentage=row.pnl_percentage or 0.0, pnl_cost=row.pnl_cost or 0.0,
                    opened_at=row.pending_at or row.created_at, closed_at=row.closed_at,
                    close_reason=row.close_reason or ""))
            if self.on_transition is not None:
                self.on_transition(result)
        notices = list(outcome.notices)
        calls = list(outcome.callbacks)
        if self.every_minute:
            calls.append(CallbackCall("on_tick", (ctx.symbol, result, when)))
        if calls and self.strategy.callbacks:
            notices += run_callbacks(self.strategy.callbacks, calls, ctx)
        if notices:
            self._notify(notices, when)

    def _risk_check(self, when: datetime, price: float
                    ) -> Callable[[ValidSignal, PublicSignal], str | None]:
        """`bkit.ticking._risk_check` over the backtest's slots instead of the table."""
        risk, ctx, book = self.risk, self.ctx, self.book
        assert risk is not None

        def check(valid: ValidSignal, public: PublicSignal) -> str | None:
            return risk_verdict(risk, ctx, when, price, public, book.held(risk.risk_name))
        return check

    def _fail(self, index: int) -> None:
        self.failed += 1
        if events._listeners["error"] or len(self.last_notices) < _KEPT_NOTICES:
            message = self.series.failure(index, self.ctx.exchange_name, self.ctx.symbol)
            self._notify([Notice("error", message, {"stage": "tick"})],
                         minute_at(self.series.minute(index)), count=False)
        self.notice_counts["error"] = self.notice_counts.get("error", 0) + 1

    def _notify(self, notices: Sequence[Notice], when: datetime, *, count: bool = True
                ) -> None:
        """Notices go to the live listener channels of their kind (with `backtest: True`)
        and are counted; the first few are kept for the report."""
        ctx = self.ctx
        for notice in notices:
            if count:
                self.notice_counts[notice.kind] = self.notice_counts.get(notice.kind, 0) + 1
            event = {"symbol": ctx.symbol, "strategy_name": ctx.strategy_name,
                     "exchange_name": ctx.exchange_name, "frame_name": self.frame_name,
                     "signal_id": notice.data.get("signal_id"), "message": notice.message,
                     "created_at": when, "kind": notice.kind, "data": notice.data,
                     "backtest": True}
            if len(self.last_notices) < _KEPT_NOTICES:
                self.last_notices.append(event)
            channel = _NOTICE_CHANNELS.get(notice.kind)
            if channel is not None and events._listeners[channel]:
                events._emit(channel, event)

    # --- the scan over minutes where nothing happens ---------------------------------------
    def next_tick(self, index: int) -> int:
        """The next tick index after `index` that needs a full tick (len(prices) if none).
        Minutes without a price on the way are failed ticks, counted as live counts them."""
        end = len(self.prices)
        if self.finished:
            return end
        start = index + 1
        if self.command is not None or self.status != "enabled" or self.stop_requested or \
                self.pending:
            return self._next_priced(start, end)
        row = self.signal
        if row is None:
            if self.every_idle_minute:
                return self._next_priced(start, end)
            return self._next_flat(start, end)
        if self.every_minute or row.state not in ("scheduled", "opened") or \
                row.order_in_flight or (row.state == "opened" and closed_by_partials(row)):
            return self._next_priced(start, end)
        if row.state == "scheduled":
            return self._next_scheduled(row, start, end)
        return self._next_open(row, start, end)

    def _next_priced(self, start: int, end: int) -> int:
        prices = self.prices
        for k in range(start, end):
            if prices[k] == prices[k]:
                return k
            self._fail(k)
        return end

    def _next_flat(self, start: int, end: int) -> int:
        """A flat key asks the strategy at the first priced minute of a window it has not
        asked in yet (`wants_signal`)."""
        prices, series = self.prices, self.series
        step = series.step
        interval = SIGNAL_INTERVAL_MINUTES[self.ctx.interval]
        window = self.signal_window
        first = series.first_minute
        for k in range(start, end):
            minute = first + k * step
            if minute - minute % interval != window:
                if prices[k] == prices[k]:
                    return k
                self._fail(k)
                continue
            if prices[k] != prices[k]:
                self._fail(k)
            else:
                self.ticked += 1
        return end

    def _next_scheduled(self, row: SignalRow, start: int, end: int) -> int:
        """`bkit.core.machine._scheduled`: timeout, price_reject, activation."""
        prices, series = self.prices, self.series
        assert row.scheduled_at is not None
        scheduled = int(row.scheduled_at.timestamp() // 60)
        await_minutes = self.config.CC_SCHEDULE_AWAIT_MINUTES
        sign = 1 if row.position == "long" else -1
        stop_loss, price_open = sign * row.price_stop_loss, sign * row.price_open
        first, step = series.first_minute, series.step
        for k in range(start, end):
            price = prices[k]
            if price != price:
                self._fail(k)
                continue
            minute = first + k * step
            if minute - scheduled >= await_minutes:
                return k
            signed = sign * price
            if signed <= stop_loss or (minute > scheduled and signed <= price_open):
                return k
            self.ticked += 1
        return end

    def _next_open(self, row: SignalRow, start: int, end: int) -> int:
        """`bkit.core.machine._open_position` and `progress` on the minutes before the next
        close: time, TP and SL send the minute to a full tick; a new partial-profit /
        partial-loss level or breakeven is fired here, with the machine's expressions, the
        same notices and callbacks, and the level kept (written to the row once, below)."""
        prices, series = self.prices, self.series
        assert row.pending_at is not None
        pending = int(row.pending_at.timestamp() // 60)
        lifetime = row.minute_estimated_time
        sign = 1 if row.position == "long" else -1
        entry = row.price_open
        take_profit, stop_loss = sign * row.price_take_profit, sign * row.price_stop_loss
        to_tp = sign * (row.price_take_profit - entry)
        to_sl = sign * (entry - row.price_stop_loss)
        profit_level, loss_level = row.partial_profit_level, row.partial_loss_level
        breakeven_fired = row.breakeven_fired
        threshold = self._be_threshold
        touch, lows, highs = self.touch, self.series.lows, self.series.highs
        first, step = series.first_minute, series.step
        found = end
        for k in range(start, end):
            price = prices[k]
            if price != price:
                self._fail(k)
                continue
            if first + k * step - pending >= lifetime:
                found = k
                break
            signed = sign * price
            if signed >= take_profit:
                found = k
                break
            if touch:  # the last closed candle's low (a short's high) against the SL
                if sign * (lows[k] if sign == 1 else highs[k]) <= stop_loss:
                    found = k
                    break
            elif signed <= stop_loss:
                found = k
                break
            self.ticked += 1
            move = sign * (price - entry)
            reached_profit = reached_loss = 0
            if move > 0:
                percent = min(100.0, max(0.0, move / to_tp * 100))
                reached_profit = int(percent // MILESTONE_STEP) * MILESTONE_STEP
            elif move < 0:
                percent = min(100.0, max(0.0, -move / to_sl * 100))
                reached_loss = int(percent // MILESTONE_STEP) * MILESTONE_STEP
            breakeven = not breakeven_fired and \
                sign * (price - entry) / entry * 100 >= threshold
            if reached_profit > profit_level or reached_loss > loss_level or breakeven:
                self._milestones(row, k, price, (profit_level, reached_profit),
                                 (loss_level, reached_loss), breakeven)
                profit_level = max(profit_level, reached_profit)
                loss_level = max(loss_level, reached_loss)
                breakeven_fired = breakeven_fired or breakeven
                if self.pending:  # a callback queued a command: the next minute applies it
                    self.signal = row.evolve(partial_profit_level=profit_level,
                                             partial_loss_level=loss_level,
                                             breakeven_fired=breakeven_fired)
                    return self._next_priced(k + 1, end)
        # A minute that closes (time, TP, SL) never reads the levels (`_open_position`
        # returns before them), so they are written only if the position goes on.
        if found == end and (profit_level, loss_level, breakeven_fired) != (
                row.partial_profit_level, row.partial_loss_level, row.breakeven_fired):
            self.signal = row.evolve(partial_profit_level=profit_level,
                                     partial_loss_level=loss_level,
                                     breakeven_fired=breakeven_fired)
        return found

    def _milestones(self, row: SignalRow, index: int, price: float,
                    profit: tuple[int, int], loss: tuple[int, int], breakeven: bool) -> None:
        """The notices and callbacks `_open_position` makes for new levels (same order)."""
        if not self._milestone_audience and len(self.last_notices) >= _KEPT_NOTICES:
            # Nobody listens, no callback: what remains of the notices is their count.
            counts = self.notice_counts
            for kind, (fired, reached) in (("partial_profit", profit), ("partial_loss", loss)):
                if reached > fired:
                    counts[kind] = counts.get(kind, 0) + (reached - fired) // MILESTONE_STEP
            if breakeven:
                counts["breakeven"] = counts.get("breakeven", 0) + 1
            return
        when = minute_at(self.series.minute(index))
        symbol = self.ctx.symbol
        public = row.public()
        notices: list[Notice] = []
        calls: list[CallbackCall] = []
        for kind, (fired, reached) in (("partial_profit", profit), ("partial_loss", loss)):
            for level in range(fired + MILESTONE_STEP, reached + 1, MILESTONE_STEP):
                notices.append(Notice(kind, f"{kind.replace('_', ' ')} {level}%",
                                      {"level": level, "signal_id": row.id, "price": price}))
                calls.append(CallbackCall(f"on_{kind}", (symbol, public, level, price, when)))
        if breakeven:
            notices.append(Notice("breakeven", "breakeven available",
                                  {"signal_id": row.id, "price": price}))
            calls.append(CallbackCall("on_breakeven", (symbol, public, price, when)))
        if self.strategy.callbacks:
            simclock.set_now(when)
            try:
                notices += run_callbacks(self.strategy.callbacks, calls, self.ctx)
            finally:
                simclock.set_now(None)
        self._notify(notices, when)


def run_keys(runs: Sequence[KeyRun], *, cancelled: threading.Event | None = None
             ) -> Iterator[TickResult]:
    """Replay `runs` in lockstep (minute, then the given order) and yield every transition
    as it happens. `cancelled`: once set, every key drains as after `Live.stop` (no new
    signals, a resting entry cancelled, an open position followed to its close)."""
    pending: list[TickResult] = []
    for run in runs:
        run.on_transition = pending.append
    keys = {(run.ctx.symbol, run.ctx.strategy_name, run.ctx.exchange_name): run for run in runs}
    with backtest_commands.routing(keys):
        heap = [(run.next_tick(-1), order, run) for order, run in enumerate(runs)]
    heap = [item for item in heap if item[0] < len(item[2].prices)]
    heapq.heapify(heap)
    stopping = False
    while heap:
        if cancelled is not None and cancelled.is_set() and not stopping:
            stopping = True
            for run in runs:
                run.stop_requested = True
        index, order, run = heapq.heappop(heap)
        with backtest_commands.routing(keys):  # callbacks may issue position commands
            run.tick(index)
            following = run.next_tick(index)
        if pending:
            yield from pending
            pending.clear()
        if following < len(run.prices):
            heapq.heappush(heap, (following, order, run))

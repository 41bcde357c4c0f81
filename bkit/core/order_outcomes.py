"""What the venue's evidence about an order does to its signal (SPEC §8). Pure: the orders
worker calls these under the key's row lock and stores the outcome.

The signal follows its orders: `opening` until the entry order is final, `opened` with what
filled net of base-asset fees, `closing` until the exits have sold what the account holds,
`closed` only from a filled exit (or an operator / reconciliation that saw the asset gone),
`closing` + `stuck` when the venue keeps refusing the exit. No function here records a close
the venue did not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bkit.core.config import Config
from bkit.core.machine import (
    KeyContext,
    TickOutcome,
    close_order,
    record_close,
    record_open,
    stop_order,
    with_protection,
)
from bkit.core.orders import realised_pnl
from bkit.core.position_commands import (
    command_in_flight,
    entry_filled,
    partial_filled,
    without_command,
)
from bkit.core.results import Notice, TickResult
from bkit.core.signals import SignalRow


@dataclass(frozen=True, slots=True)
class OrderFill:
    """What one order filled, from the venue's evidence: base units `filled`, quote units
    `cost`, the fees valued in quote (`fees_quote`), those charged in quote itself
    (`fees_paid_quote`) and those taken from the base asset (`base_fee`)."""

    filled: float
    cost: float
    fees_quote: float = 0.0
    fees_paid_quote: float = 0.0
    base_fee: float = 0.0

    @property
    def average(self) -> float | None:
        return self.cost / self.filled if self.filled > 0 else None


def _idle(ctx: KeyContext, row: SignalRow, when: datetime, price: float | None = None
          ) -> TickResult:
    return TickResult(action="idle", symbol=ctx.symbol, strategy_name=ctx.strategy_name,
                      exchange_name=ctx.exchange_name,
                      current_price=row.price_open if price is None else price,
                      created_at=when, signal=row.public())


def confirm_open(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime, *,
                 protect: bool = False) -> TickOutcome:
    """The venue filled the entry (wholly or partly): the position is `opened` at its signal
    price, holding what filled minus base-asset fees (a long) or owing what was sold (a
    short), with the real average fill price and fees beside it. `protect`: a protective
    stop goes to the venue next (SPEC §10)."""
    held = fill.filled - fill.base_fee if row.position == "long" else fill.filled
    outcome = record_open(ctx, row.evolve(
        fill_price_open=fill.average, entry_filled=fill.filled, entry_cost=fill.cost,
        amount=max(0.0, held), fees_quote=row.fees_quote + fill.fees_quote,
        fees_paid_quote=row.fees_paid_quote + fill.fees_paid_quote), when)
    if protect and outcome.signal is not None:
        outcome.signal = with_protection(outcome.signal, "placing", new_stop=True)
        outcome.order = stop_order(outcome.signal)
    return outcome


def record_stop_fill(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime,
                     config: Config, *, remainder_is_dust: bool, finished: bool = False
                     ) -> TickOutcome:
    """The protective stop on the venue filled (wholly or partly), while bkit watched, while
    it was down, or while it was exiting: that is the close (reason `stop_loss`, at the real
    fill price). Never followed by a second sell: an exit already in flight sizes itself
    from what is left; an open position's remainder is sold at market."""
    # The signal closes at exactly its SL (§4/§5, as the tick and the backtest would); the
    # venue's real fill price is recorded beside it (`fill_price_close`, realised PnL).
    stopped = with_protection(row, "filled").evolve(
        state="closing", pending_close_reason="stop_loss",
        pending_close_price=row.price_stop_loss)
    if row.state == "closing" and not remainder_is_dust:
        amount = max(0.0, (row.amount or 0.0) - fill.filled)
        exit_filled, exit_cost = row.exit_filled + fill.filled, row.exit_cost + fill.cost
        kept = stopped.evolve(amount=amount, exit_filled=exit_filled, exit_cost=exit_cost,
                              fees_quote=row.fees_quote + fill.fees_quote,
                              fees_paid_quote=row.fees_paid_quote + fill.fees_paid_quote,
                              fill_price_close=exit_cost / exit_filled if exit_filled else None)
        return TickOutcome(result=_idle(ctx, kept, when), signal=kept)
    return record_exit_fill(ctx, stopped.evolve(order_in_flight=True), fill, when, config,
                            remainder_is_dust=remainder_is_dust, finished=finished)


def record_liquidation(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime,
                       config: Config, *, finished: bool = False) -> TickOutcome:
    """The venue liquidated the position (futures): the signal is closed with reason
    `liquidation` at the liquidation fill, its realised PnL from that fill (SPEC §10)."""
    price = fill.average if fill.average is not None else row.price_stop_loss
    liquidated = with_protection(row, "none").evolve(
        state="closing", pending_close_reason="liquidation", pending_close_price=price,
        order_in_flight=True)
    return record_exit_fill(ctx, liquidated, fill, when, config, remainder_is_dust=True,
                            finished=finished)


def replace_stop(ctx: KeyContext, row: SignalRow, when: datetime, why: str) -> TickOutcome:
    """The stop is gone from the venue without a fill (cancelled by hand, expired) while the
    position is open: put a new one there."""
    placing = with_protection(row, "placing", new_stop=True)
    return TickOutcome(result=_idle(ctx, placing, when), signal=placing,
                       order=stop_order(placing), notices=[Notice(
                           "order", f"protective stop of signal {row.id} re-placed: {why}",
                           {"signal_id": row.id})])


def stop_refused(ctx: KeyContext, row: SignalRow, when: datetime, error: str) -> TickOutcome:
    """The venue refused the protective stop (a filter, price protection): the position is
    watched by the tick as without one; an error event; the stop is tried again later."""
    refused = with_protection(row, "refused")
    return TickOutcome(result=_idle(ctx, refused, when), signal=refused, notices=[Notice(
        "error", f"protective stop of signal {row.id} refused by the venue (the tick watches "
        f"the stop-loss meanwhile; retried): {error}",
        {"stage": "order_stop", "signal_id": row.id})])


def reject_open(ctx: KeyContext, row: SignalRow, when: datetime, error: str) -> TickOutcome:
    """Rollback of an entry the venue refused (or that ended with nothing filled): the signal
    is dropped, its slot freed, an error event. Only for evidence that nothing was bought."""
    dropped = row.evolve(state="cancelled", cancel_reason="rejected", closed_at=when,
                         order_in_flight=False)
    return TickOutcome(result=_idle(ctx, dropped, when), signal=dropped, slot="release",
                       notices=[Notice("error", f"entry order rejected, signal {row.id} rolled "
                                       f"back: {error}",
                                       {"stage": "order_open", "signal_id": row.id})])


def record_exit_fill(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime,
                     config: Config, *, remainder_is_dust: bool, finished: bool = False
                     ) -> TickOutcome:
    """An exit order ended (filled, or partly filled then expired/cancelled). What it sold
    leaves the position; if what remains can still be sold, a new exit goes out for it and
    the signal stays `closing`; if the remainder is dust (or nothing), the signal is
    `closed` at the decided price (§5 signal PnL) with the realised PnL from the fills."""
    if fill.filled <= 0:  # ended with nothing sold (a market order with no book): a refusal
        return refuse_close(ctx, row.evolve(exit_orders=row.exit_orders + 1), when,
                            "the exit order ended with nothing filled", config, resend=True)
    amount = max(0.0, (row.amount or 0.0) - fill.filled)
    exit_filled = row.exit_filled + fill.filled
    exit_cost = row.exit_cost + fill.cost
    updated = row.evolve(amount=amount, exit_filled=exit_filled, exit_cost=exit_cost,
                         fees_quote=row.fees_quote + fill.fees_quote,
                         fees_paid_quote=row.fees_paid_quote + fill.fees_paid_quote,
                         fill_price_close=exit_cost / exit_filled if exit_filled > 0 else None,
                         close_rejections=0)
    if not remainder_is_dust:
        again = updated.evolve(order_in_flight=True, exit_orders=row.exit_orders + 1)
        notices = [] if fill.filled <= 0 else [Notice(
            "order", f"exit of signal {row.id} filled {fill.filled:.10g} of "
            f"{row.amount or 0.0:.10g}; the remaining {amount:.10g} is sent again",
            {"signal_id": row.id, "filled": fill.filled, "remaining": amount})]
        return TickOutcome(result=_idle(ctx, again, when), signal=again,
                           order=close_order(again), notices=notices)
    realised = realised_pnl(row.position, row.entry_cost or 0.0, exit_cost,
                            updated.fees_paid_quote)
    done = updated.evolve(amount=0.0, dust=amount if amount > 0 else None,
                          realised_pnl_cost=realised.pnl_cost,
                          realised_pnl_percentage=realised.pnl_percentage, stuck=False)
    reason = row.pending_close_reason or "closed"
    price = row.pending_close_price if row.pending_close_price is not None else row.price_open
    return record_close(ctx, done, reason, price, when, config, finished=finished)


def refuse_close(ctx: KeyContext, row: SignalRow, when: datetime, error: str,
                 config: Config, *, resend: bool = False) -> TickOutcome:
    """The venue refused the exit (or nothing sellable could be sent). The position stays
    ours (`closing`, slot held, no new entries) and the exit is retried with backoff; after
    CC_ORDER_CLOSE_RETRY_ATTEMPTS refusals it is `stuck`: an `exit` event for an operator,
    and only `bkit resolve` or reconciliation ends it. Never a close. `resend`: the refused
    order existed on the venue (it ended unfilled), so the retry is a new exit order."""
    refusals = row.close_rejections + 1
    limit = config.CC_ORDER_CLOSE_RETRY_ATTEMPTS
    if refusals >= limit:
        stuck = row.evolve(close_rejections=refusals, order_in_flight=False, stuck=True)
        return TickOutcome(result=_idle(ctx, stuck, when), signal=stuck, notices=[Notice(
            "exit", f"exit of signal {row.id} refused {refusals} times: the position is "
            f"stuck, still held ({row.amount or 0.0:.10g} {ctx.symbol.split('/')[0]}); "
            f"check the account, then `bkit resolve` it: {error}",
            {"signal_id": row.id, "attempts": refusals, "stage": "order_close",
             "stuck": True})])
    kept = row.evolve(close_rejections=refusals, order_in_flight=True)
    return TickOutcome(result=_idle(ctx, kept, when), signal=kept,
                       order=close_order(kept) if resend else None, notices=[Notice(
        "error", f"exit order refused ({refusals}/{limit}) for signal {row.id}: {error}",
        {"stage": "order_close", "signal_id": row.id})])


def retry_stuck(ctx: KeyContext, row: SignalRow, when: datetime) -> TickOutcome:
    """An operator asked to try the stuck exit again: a fresh exit intent, refusals reset."""
    again = row.evolve(stuck=False, close_rejections=0, order_in_flight=True,
                       exit_orders=row.exit_orders + 1)
    return TickOutcome(result=_idle(ctx, again, when), signal=again, order=close_order(again),
                       notices=[Notice("admin", f"exit of signal {row.id} retried by operator",
                                       {"signal_id": row.id})])


def close_as_gone(ctx: KeyContext, row: SignalRow, when: datetime, config: Config, why: str,
                  *, finished: bool = False) -> TickOutcome:
    """An operator (`bkit resolve --flat`) or reconciliation saw that the account no longer
    holds the position: the signal is `closed` (reason `closed`). The realised PnL counts only
    the exits the venue confirmed; what left the account otherwise is not priced."""
    realised = realised_pnl(row.position, row.entry_cost or 0.0, row.exit_cost,
                            row.fees_paid_quote)
    done = row.evolve(amount=0.0, stuck=False, realised_pnl_cost=realised.pnl_cost,
                      realised_pnl_percentage=realised.pnl_percentage,
                      extra={**row.extra, "closed_without_exit": why})
    price = row.pending_close_price if row.pending_close_price is not None else row.price_open
    outcome = record_close(ctx, done, "closed", price, when, config, finished=finished)
    outcome.notices.append(Notice("admin", f"signal {row.id} closed: {why}",
                                  {"signal_id": row.id}))
    return outcome


# --- position commands with a broker (SPEC §11 with §8 and §10) ----------------------------
def _command_notice(row: SignalRow, kind: str, message: str, **data: object) -> Notice:
    command = command_in_flight(row) or {}
    return Notice(kind, message, {"stage": "command", "signal_id": row.id,
                                  "command": command.get("name"),
                                  "command_id": command.get("id"), **data})


def _command_result(row: SignalRow, status: str, message: str) -> list[tuple[int, str, str]]:
    command = command_in_flight(row)
    return [] if command is None else [(int(command["id"]), status, message)]


def _reprotect(outcome: TickOutcome, protect: bool) -> TickOutcome:
    """Put the protective stop back on the venue for what the position holds now (the
    orders worker cancelled the old one before the command's order went out)."""
    if protect and outcome.signal is not None and outcome.signal.state == "opened":
        outcome.signal = with_protection(outcome.signal, "placing", new_stop=True)
        outcome.order = stop_order(outcome.signal)
    return outcome


def command_refused(ctx: KeyContext, row: SignalRow, when: datetime, error: str, *,
                    protect: bool = False) -> TickOutcome:
    """The venue refused the command's order (a filter, min-notional, funds), or it ended
    with nothing filled, or nothing could be sent: the position is exactly what it was; an
    error event with the reason; the command is `refused`. `protect`: the stop that was
    taken off for it goes back on the venue."""
    command = command_in_flight(row) or {}
    message = f"{command.get('name', 'position command')} refused: {error}"
    kept = without_command(row)
    outcome = TickOutcome(result=_idle(ctx, kept, when), signal=kept,
                          notices=[_command_notice(row, "error", message)],
                          command_results=_command_result(row, "refused", message))
    return _reprotect(outcome, protect)


def record_partial_fill(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime,
                        config: Config, *, remainder_is_dust: bool, protect: bool = False
                        ) -> TickOutcome:
    """A partial exit ended with `fill` (all of it, or part of it then expired). What was
    sold leaves the position (`amount`, base units or contracts) and the §11 partial is
    recorded with the real share (`filled / held`) at the real average price. A remainder
    the venue could no longer sell is the close (reason `closed`); otherwise the stop goes
    back on the venue for the remainder (`protect`). The exit totals (`exit_filled`,
    `exit_cost`, `fill_price_close` their average) include the partial sells, so the
    realised PnL at the close counts them. Nothing filled: `command_refused`."""
    command = command_in_flight(row)
    held = row.amount or 0.0
    if fill.filled <= 0 or fill.average is None or command is None or held <= 0:
        return command_refused(ctx, row, when, "the order ended with nothing filled",
                               protect=protect)
    name = str(command["name"])
    booked = without_command(partial_filled(row, name, min(fill.filled, held), held,
                                            fill.average))
    message = (f"{name} of signal {row.id} filled {fill.filled:.10g} of {held:.10g} at "
               f"{fill.average:.10g}")
    results = _command_result(row, "filled", message)
    notice = _command_notice(row, "order", message, filled=fill.filled,
                             average=fill.average)
    if remainder_is_dust:
        closing = booked.evolve(state="closing", pending_close_reason="closed",
                                pending_close_price=fill.average, order_in_flight=True)
        outcome = record_exit_fill(ctx, closing, fill, when, config, remainder_is_dust=True)
    else:
        exit_filled, exit_cost = row.exit_filled + fill.filled, row.exit_cost + fill.cost
        # a fee taken from the coin sold (a venue that charges sells in the base) leaves too
        sold = fill.filled + (fill.base_fee if row.position == "long" else 0.0)
        kept = booked.evolve(amount=max(0.0, held - sold), exit_filled=exit_filled,
                             exit_cost=exit_cost, fees_quote=row.fees_quote + fill.fees_quote,
                             fees_paid_quote=row.fees_paid_quote + fill.fees_paid_quote,
                             fill_price_close=exit_cost / exit_filled)
        outcome = _reprotect(TickOutcome(result=_idle(ctx, kept, when), signal=kept), protect)
    outcome.notices.insert(0, notice)
    outcome.command_results = results
    return outcome


def record_dca_fill(ctx: KeyContext, row: SignalRow, fill: OrderFill, when: datetime, *,
                    protect: bool = False) -> TickOutcome:
    """A DCA entry ended with `fill`: the position grows by what filled net of base-asset
    fees (a long; a short owes what was sold), the §11 entry is the real quote cost at the
    real average price, the entry totals (for the realised PnL) grow by the same; the stop
    goes back on the venue for the whole position (`protect`). Nothing filled:
    `command_refused`."""
    command = command_in_flight(row)
    if fill.filled <= 0 or fill.average is None or command is None:
        return command_refused(ctx, row, when, "the order ended with nothing filled",
                               protect=protect)
    added = fill.filled - fill.base_fee if row.position == "long" else fill.filled
    booked = without_command(entry_filled(row, fill.cost, fill.average)).evolve(
        amount=(row.amount or 0.0) + max(0.0, added),
        entry_filled=(row.entry_filled or 0.0) + fill.filled,
        entry_cost=(row.entry_cost or 0.0) + fill.cost,
        fees_quote=row.fees_quote + fill.fees_quote,
        fees_paid_quote=row.fees_paid_quote + fill.fees_paid_quote)
    message = (f"average_buy of signal {row.id} filled {fill.filled:.10g} at "
               f"{fill.average:.10g} for {fill.cost:.10g}")
    outcome = _reprotect(TickOutcome(result=_idle(ctx, booked, when), signal=booked,
                                     notices=[_command_notice(row, "order", message,
                                                              filled=fill.filled,
                                                              average=fill.average)],
                                     command_results=_command_result(row, "filled", message)),
                         protect)
    return outcome

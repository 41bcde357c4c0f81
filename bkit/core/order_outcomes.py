"""What the exchange's answer to an order intent does to its signal (SPEC §8). Pure: the
orders worker calls these under the key's row lock and stores the outcome."""

from __future__ import annotations

from datetime import datetime

from bkit.core.config import Config
from bkit.core.machine import KeyContext, TickOutcome, record_close, record_open
from bkit.core.results import Notice, TickResult
from bkit.core.signals import SignalRow


def confirm_open(ctx: KeyContext, row: SignalRow, fill_price: float | None,
                 when: datetime) -> TickOutcome:
    """The exchange filled the entry: the position is `opened` at its signal price, with the
    exchange's fill price recorded next to it."""
    return record_open(ctx, row.evolve(fill_price_open=fill_price), when)


def reject_open(ctx: KeyContext, row: SignalRow, when: datetime, error: str) -> TickOutcome:
    """Rollback of a rejected entry: the signal is dropped, its slot freed, an error event."""
    dropped = row.evolve(state="cancelled", cancel_reason="rejected", closed_at=when,
                         order_in_flight=False)
    result = TickResult(action="idle", symbol=ctx.symbol, strategy_name=ctx.strategy_name,
                        exchange_name=ctx.exchange_name, current_price=row.price_open,
                        created_at=when, signal=dropped.public())
    return TickOutcome(result=result, signal=dropped, slot="release", notices=[Notice(
        "error", f"entry order rejected, signal {row.id} rolled back: {error}",
        {"stage": "order_open", "signal_id": row.id})])


def confirm_close(ctx: KeyContext, row: SignalRow, fill_price: float | None, when: datetime,
                  config: Config, *, finished: bool = False) -> TickOutcome:
    """The exchange filled the exit: record the close at the decided price (TP/SL exact)."""
    reason = row.pending_close_reason or "closed"
    price = row.pending_close_price if row.pending_close_price is not None else row.price_open
    return record_close(ctx, row.evolve(fill_price_close=fill_price), reason, price, when,
                        config, finished=finished)


def reject_close(ctx: KeyContext, row: SignalRow, when: datetime, error: str,
                 config: Config) -> TickOutcome:
    """A rejected exit keeps the position (`closing`, retried every tick); after
    CC_ORDER_CLOSE_RETRY_ATTEMPTS rejections the close is recorded and `exit` is raised."""
    rejections = row.close_rejections + 1
    kept = row.evolve(close_rejections=rejections, order_in_flight=False)
    if rejections >= config.CC_ORDER_CLOSE_RETRY_ATTEMPTS:
        price = kept.pending_close_price if kept.pending_close_price is not None \
            else kept.price_open
        outcome = record_close(ctx, kept, "closed", price, when, config)
        outcome.notices.append(Notice(
            "exit", f"close of signal {row.id} rejected {rejections} times; recorded as closed "
            f"— check the position on the exchange: {error}",
            {"signal_id": row.id, "attempts": rejections}))
        return outcome
    result = TickResult(action="idle", symbol=ctx.symbol, strategy_name=ctx.strategy_name,
                        exchange_name=ctx.exchange_name, current_price=row.price_open,
                        created_at=when, signal=kept.public())
    return TickOutcome(result=result, signal=kept, notices=[Notice(
        "error", f"exit order rejected ({rejections}/{config.CC_ORDER_CLOSE_RETRY_ATTEMPTS}) for "
        f"signal {row.id}: {error}", {"stage": "order_close", "signal_id": row.id})])

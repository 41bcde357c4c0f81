"""The I/O of sizing at a live entry (SPEC §11): the balance, the key's closed trades and the
ATR, read by the tick outside any transaction, for the pure `bkit.core.sizing.size_entry`.

Where the balance comes from:
- **with a broker** (ccxt spot or futures, paper): the free balance of the symbol's quote
  currency on the venue (`broker.free_balance`); a paper account without a starting quote
  balance (unlimited) cannot size and refuses the entry.
- **signals only** (no broker): there is no account to read, so the key sizes from a notional
  account: `CC_SIZING_BALANCE` (quote currency) plus the realised PnL (`pnl_cost`) of every
  closed trade of the strategy on that exchange, the book a backtest started at the same
  balance keeps. With `CC_SIZING_BALANCE = 0` (the default) such entries are refused.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import Engine, select
from sqlmodel import col

from bkit.broker.base import OrderBroker
from bkit.core.candles import parse_candles
from bkit.core.config import Config
from bkit.core.machine import SIGNAL_INTERVAL_MINUTES, KeyContext
from bkit.core.orders import quote_of
from bkit.core.registry import ExchangeSchema
from bkit.core.sizing import (
    SizingInputs,
    SizingSchema,
    atr_candle_window,
    needs_atr,
    needs_balance,
    needs_history,
    notional_balance,
    window_atr,
)
from bkit.store.engine import session_scope
from bkit.store.tables import SignalRecord, StrategySymbol

#: Why a signals-only key cannot size without the notional balance.
NO_NOTIONAL_BALANCE = ("signals only (no broker): no account to read; set CC_SIZING_BALANCE "
                       "to the notional account's starting balance (quote currency)")


def live_inputs(engine: Engine, sizing: SizingSchema, key_id: int, ctx: KeyContext,
                exchange: ExchangeSchema, broker: OrderBroker | None, config: Config,
                when: datetime) -> SizingInputs:
    """Read what `sizing` needs for an entry of the key at `when`. A read that fails is a
    `*_problem` the sizing refuses with, never a default."""
    balance: float | None = None
    balance_problem: str | None = None
    if needs_balance(sizing):
        balance, balance_problem = _balance(engine, ctx, broker, config)
    history: tuple[float, ...] = ()
    if needs_history(sizing):
        history = key_history(engine, key_id)
    atr_value: float | None = None
    atr_problem: str | None = None
    if needs_atr(sizing):
        found = read_atr(exchange, ctx, when, int(sizing.params["atr_period"]))
        if isinstance(found, str):
            atr_problem = found
        else:
            atr_value = found
    return SizingInputs(balance, balance_problem, history, atr_value, atr_problem)


def _balance(engine: Engine, ctx: KeyContext, broker: OrderBroker | None, config: Config
             ) -> tuple[float | None, str | None]:
    if broker is None:
        found = notional_balance(config.CC_SIZING_BALANCE,
                                 realised_costs(engine, ctx.strategy_name, ctx.exchange_name),
                                 NO_NOTIONAL_BALANCE)
        return (None, found) if isinstance(found, str) else (found, None)
    quote = quote_of(ctx.symbol)
    try:
        free = float(broker.free_balance(quote))
    except Exception as exc:  # the venue did not answer: refuse, the next interval retries
        return None, f"reading the free {quote} balance failed: {type(exc).__name__}: {exc}"
    if math.isinf(free):
        return None, (f"the paper account's {quote} balance is unlimited; give it a starting "
                      "balance (PaperBroker(quote_balance=…) or BKIT_PAPER_BALANCE)")
    return free, None


def realised_costs(engine: Engine, strategy_name: str, exchange_name: str) -> list[float]:
    """`pnl_cost` (quote currency) of every closed trade of the strategy on the exchange."""
    with session_scope(engine) as session:
        keys = select(col(StrategySymbol.id)).where(
            StrategySymbol.strategy_name == strategy_name,
            StrategySymbol.exchange_name == exchange_name)
        rows = session.execute(select(col(SignalRecord.pnl_cost)).where(
            col(SignalRecord.key_id).in_(keys), SignalRecord.state == "closed")).scalars()
        return [float(v or 0.0) for v in rows]


def key_history(engine: Engine, key_id: int) -> tuple[float, ...]:
    """The key's closed trades' PnL (%), oldest first (Kelly's W and R)."""
    with session_scope(engine) as session:
        rows = session.execute(select(col(SignalRecord.pnl_percentage)).where(
            SignalRecord.key_id == key_id, SignalRecord.state == "closed")
            .order_by(col(SignalRecord.closed_at), col(SignalRecord.id))).scalars()
        return tuple(float(v or 0.0) for v in rows)


def read_atr(exchange: ExchangeSchema, ctx: KeyContext, when: datetime, period: int
             ) -> float | str:
    """ATR(`period`) over the closed candles of the strategy's interval before `when`."""
    step = SIGNAL_INTERVAL_MINUTES[ctx.interval]
    since, count = atr_candle_window(when, step, period)
    try:
        raw = exchange.get_candles(ctx.symbol, ctx.interval, since, count)
        candles = parse_candles(raw or [], ctx.symbol)
    except Exception as exc:  # a feed error or a bad candle: no ATR this time
        return f"reading {ctx.interval} candles failed: {type(exc).__name__}: {exc}"
    return window_atr(candles, when, step, period)


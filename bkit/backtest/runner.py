"""One backtest from names to results: check the names and the frame, read the candles once
(`bkit.backtest.candles`), price every minute (`bkit.backtest.prices`), replay the keys
(`bkit.backtest.engine`) and collect a `BacktestResult` per symbol.

Everything that can be refused (an unknown name, a bad symbol, start ≥ end, a frame with no
candles) is refused by `prepare` before the first minute runs; results exist only once a run
has finished, so nothing is ever half-written.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from bkit.backtest.candles import CandleColumns, load_candles
from bkit.backtest.engine import Account, KeyRun, RiskBook, run_keys
from bkit.backtest.frames import FRAMES, FrameRegistry, FrameSchema
from bkit.backtest.prices import PriceSeries, price_series
from bkit.backtest.results import BacktestResult
from bkit.core.config import Config
from bkit.core.errors import BkitError
from bkit.core.machine import SIGNAL_INTERVAL_MINUTES, KeyContext
from bkit.core.registry import (
    REGISTRY,
    ExchangeSchema,
    Registry,
    RiskSchema,
    StrategySchema,
    get_config,
)
from bkit.core.results import TickResult
from bkit.core.sizing import SizingSchema, needs_atr

_SYMBOL = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")
_SERIES_CACHE_SIZE = 16


class BacktestDataError(BkitError, ValueError):
    """The frame cannot be replayed with the exchange's candles (none in the frame)."""


@dataclass(frozen=True)
class BacktestPlan:
    """What one backtest runs: a strategy on one exchange over a frame, for `symbols`."""

    symbols: tuple[str, ...]
    strategy: StrategySchema
    exchange: ExchangeSchema
    risk: RiskSchema | None
    frame: FrameSchema
    config: Config
    sizing: SizingSchema | None = None


def plan_backtest(symbols: str | Sequence[str], strategy_name: str, exchange_name: str,
                  frame: str | FrameSchema, *, registry: Registry = REGISTRY,
                  frames: FrameRegistry = FRAMES) -> BacktestPlan:
    """Check every name (raising `UnknownNameError` naming it) and the symbols."""
    listed = [symbols] if isinstance(symbols, str) else list(symbols)
    if not listed:
        raise ValueError("a backtest needs at least one symbol")
    for symbol in listed:
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            raise ValueError(f"symbol must be 1-64 printable characters without spaces, "
                             f"got {symbol!r}")
    if len(set(listed)) != len(listed):
        raise ValueError(f"symbols listed twice: {listed}")
    strategy = registry.strategy(strategy_name)
    exchange = registry.exchange(exchange_name)
    risk = registry.risk(strategy.risk_name) if strategy.risk_name else None
    sizing = registry.sizing(strategy.sizing_name) if strategy.sizing_name else None
    schema = frames.get(frame) if isinstance(frame, str) else frame
    return BacktestPlan(tuple(listed), strategy, exchange, risk, schema, get_config(), sizing)


_series_lock = threading.Lock()
_series: OrderedDict[tuple[object, ...], PriceSeries] = OrderedDict()


def frame_prices(exchange: ExchangeSchema, symbol: str, frame: FrameSchema, config: Config,
                 *, use_cache: bool = True) -> PriceSeries:
    """Tick prices of `symbol` over `frame` (candles read once, from the disk cache when
    there). Kept in memory for the next backtest of the same symbol and frame."""
    count = config.CC_AVG_PRICE_CANDLES_COUNT
    key = (exchange.exchange_name, id(exchange.get_candles), symbol, frame.first_minute,
           frame.tick_count, frame.step_minutes, count)
    with _series_lock:
        if use_cache and key in _series:
            _series.move_to_end(key)
            return _series[key]
    first = frame.first_minute
    last = first + (frame.tick_count - 1) * frame.step_minutes
    columns = load_candles(exchange, symbol, first - count, last, use_cache=use_cache)
    series = price_series(columns, first, frame.tick_count, frame.step_minutes, count)
    if not series.priced():
        raise BacktestDataError(
            f"no candles from exchange {exchange.exchange_name!r} for {symbol} in frame "
            f"{frame.frame_name!r} ({frame.start.isoformat()} .. {frame.end.isoformat()}): "
            "the frame lies outside the candles the exchange has")
    with _series_lock:
        _series[key] = series
        while len(_series) > _SERIES_CACHE_SIZE:
            _series.popitem(last=False)
    return series


def clear_price_cache() -> None:
    with _series_lock:
        _series.clear()


class BacktestRun:
    """A prepared backtest. Iterate it for the transitions (time order); `results` (one per
    symbol) is filled once the iteration has finished."""

    def __init__(self, plan: BacktestPlan, *, use_cache: bool = True,
                 balance: float | None = None) -> None:
        """`balance`: the starting balance (quote currency) of the run's notional account,
        which a sizing sizes from (SPEC §11); None: `CC_SIZING_BALANCE`."""
        if balance is not None and (isinstance(balance, bool) or not isinstance(
                balance, int | float) or not math.isfinite(balance) or balance <= 0):
            raise ValueError(f"balance must be a finite number > 0 (quote currency), "
                             f"got {balance!r}")
        self.plan = plan
        self.cancelled = threading.Event()
        self.results: list[BacktestResult] | None = None
        self.account = Account(plan.config.CC_SIZING_BALANCE if balance is None
                               else float(balance))
        book = RiskBook()
        self.keys = []
        for symbol in plan.symbols:
            series = frame_prices(plan.exchange, symbol, plan.frame, plan.config,
                                  use_cache=use_cache)
            ctx = KeyContext(symbol, plan.strategy.strategy_name, plan.exchange.exchange_name,
                             plan.strategy.interval)
            atr_candles = None
            if plan.sizing is not None and needs_atr(plan.sizing):
                atr_candles = self._atr_candles(symbol, plan.sizing, use_cache)
            self.keys.append(KeyRun(ctx, plan.strategy, plan.risk, plan.config, series, book,
                                    frame_name=plan.frame.frame_name, sizing=plan.sizing,
                                    account=self.account, atr_candles=atr_candles))

    def _atr_candles(self, symbol: str, sizing: SizingSchema, use_cache: bool
                     ) -> CandleColumns:
        """The 1m candles the ATR of any entry of the frame reads: from `atr_period + 2`
        strategy intervals before the first minute to the last (read once per frame)."""
        frame, plan = self.plan.frame, self.plan
        step = SIGNAL_INTERVAL_MINUTES[plan.strategy.interval]
        first = frame.first_minute
        last = first + (frame.tick_count - 1) * frame.step_minutes
        lead = (int(sizing.params["atr_period"]) + 2) * step
        return load_candles(plan.exchange, symbol, first - lead, last, use_cache=use_cache)

    def cancel(self) -> None:
        """Stop as `Live.stop` stops: no new signals, a resting entry cancelled, an open
        position followed to its close (or to the end of the frame)."""
        self.cancelled.set()

    def __iter__(self) -> Iterator[TickResult]:
        started = time.perf_counter()
        yield from run_keys(self.keys, cancelled=self.cancelled)
        elapsed = time.perf_counter() - started
        self.results = [self._result(key, elapsed) for key in self.keys]

    def run_all(self) -> list[BacktestResult]:
        for _ in self:
            pass
        assert self.results is not None
        return self.results

    def _result(self, key: KeyRun, elapsed: float) -> BacktestResult:
        frame, live = self.plan.frame, key.signal
        return BacktestResult(
            symbol=key.ctx.symbol, strategy_name=key.ctx.strategy_name,
            exchange_name=key.ctx.exchange_name, frame_name=frame.frame_name,
            start=frame.start, end=frame.end, ticks=frame.tick_count, ticked=key.ticked,
            failed=key.failed, full_ticks=key.full_ticks, transitions=key.transitions,
            trades=key.trades, open_signal=None if live is None else live.public(),
            open_state=None if live is None else live.state,
            notice_counts=dict(key.notice_counts),
            notices=[_plain(n) for n in key.last_notices],
            wall_seconds=elapsed / max(1, len(self.keys)))


def _plain(notice: dict[str, object]) -> dict[str, object]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in notice.items()
            if k != "data"}

"""The tick's price: VWAP of the last closed 1m candles, fetched through the exchange."""

from __future__ import annotations

from datetime import datetime

from bkit.core.candles import CandleError, closed_candles_before, parse_candles, price_window, vwap
from bkit.core.config import Config
from bkit.core.errors import BkitError
from bkit.core.registry import ExchangeSchema


class PriceUnavailableError(BkitError):
    """No price this tick (no candles, bad candles, exchange error); the next tick retries."""


def tick_price(exchange: ExchangeSchema, symbol: str, when: datetime, config: Config) -> float:
    """VWAP of the closed 1m candles in `[when − N min, when)`, N = CC_AVG_PRICE_CANDLES_COUNT.

    Raises `PriceUnavailableError` naming the exchange, symbol and cause.
    """
    return tick_price_and_touch(exchange, symbol, when, config)[0]


def tick_price_and_touch(exchange: ExchangeSchema, symbol: str, when: datetime,
                         config: Config) -> tuple[float, tuple[float, float]]:
    """The tick's VWAP and the (low, high) of the last closed 1m candle before `when` (for
    `CC_STOP_LOSS_TRIGGER = "touch"`), from one read of the candles."""
    count = config.CC_AVG_PRICE_CANDLES_COUNT
    since, _end = price_window(when, count)
    where = f"{exchange.exchange_name} {symbol} at {when.isoformat()}"
    try:
        raw = exchange.get_candles(symbol, "1m", since, count)
    except BkitError as exc:
        raise PriceUnavailableError(f"{where}: {exc}") from exc
    except Exception as exc:  # user-written get_candles may raise anything
        raise PriceUnavailableError(f"{where}: get_candles failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
    try:
        candles = closed_candles_before(parse_candles(raw or [], symbol), when, count)
        price = vwap(candles)
        last = max(candles, key=lambda c: c.timestamp)
        return price, (last.low, last.high)
    except CandleError as exc:
        raise PriceUnavailableError(f"{where}: {exc}{_outside_data(exchange, symbol, when)}"
                                    ) from exc


def _outside_data(exchange: ExchangeSchema, symbol: str, when: datetime) -> str:
    """A hint when a paper exchange's data and the clock do not overlap (the usual cause of
    "no closed candles" on the live clock: the shipped candles are from 2019)."""
    span = getattr(exchange.source, "span", None)
    if not callable(span):
        return ""
    try:
        first, last = span(symbol)
    except (ValueError, KeyError):
        return ""
    if first <= when <= last:
        return ""
    return (f" (the paper exchange's candles for {symbol} run {first:%Y-%m-%d %H:%M} to "
            f"{last:%Y-%m-%d %H:%M} UTC, the tick is at {when:%Y-%m-%d %H:%M}: replay them with "
            "BKIT_REPLAY_START / BKIT_REPLAY_SPEED / BKIT_REPLAY_EPOCH, see the README)")

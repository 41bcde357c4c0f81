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
        return vwap(candles)
    except CandleError as exc:
        raise PriceUnavailableError(f"{where}: {exc}") from exc

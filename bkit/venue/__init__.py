"""The venue model: a stateful simulated Binance spot exchange for tests and paper trading.

It speaks Binance's REST dialect to the real `ccxt.binance` client over HTTP on 127.0.0.1:
balances with fees, Binance's filters on every order, fills against replayed candle prices,
partial market fills that expire, lookups that lag, client ids unique among open orders, the
ACK / RESULT / FULL answers and scriptable faults. Run it alone with `python -m bkit.venue`.
"""

from bkit.venue.client import binance_client, futures_client, point_ccxt_at
from bkit.venue.errors import VenueError
from bkit.venue.faults import VenueFault
from bkit.venue.futures_model import DEFAULT_FUTURES_MARKETS, FuturesSpec, Position
from bkit.venue.markets import DEFAULT_MARKETS, MarketSpec
from bkit.venue.orders import VenueOrder, VenueTrade
from bkit.venue.prices import read_candles_csv
from bkit.venue.venue import Venue

__all__ = [
    "DEFAULT_FUTURES_MARKETS",
    "DEFAULT_MARKETS",
    "FuturesSpec",
    "MarketSpec",
    "Position",
    "Venue",
    "VenueError",
    "VenueFault",
    "VenueOrder",
    "VenueTrade",
    "binance_client",
    "futures_client",
    "point_ccxt_at",
    "read_candles_csv",
]

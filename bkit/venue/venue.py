"""`Venue`: a stateful simulated Binance spot exchange served over HTTP on 127.0.0.1.

It owns the spot engine (markets, balances, orders, prices), the clock, the fault board and the
per-path request counters, all behind one lock, and exposes the Python API tests and the paper
trading command use to drive it (prices, clock, fills, lags, faults, observations).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from bkit.core.candles import Candle
from bkit.venue.accounts import FeeRule, dec
from bkit.venue.faults import FaultBoard, VenueFault
from bkit.venue.futures import FuturesEngine
from bkit.venue.futures_model import (
    DEFAULT_FUTURES_MARKETS,
    FuturesOrder,
    FuturesSpec,
    FuturesTrade,
    Income,
    Position,
)
from bkit.venue.markets import DEFAULT_MARKETS, MarketSpec
from bkit.venue.orders import RESPONSE_TYPES, VenueOrder, VenueTrade
from bkit.venue.server import VenueHTTPServer, make_handler
from bkit.venue.spot import SpotEngine

DEFAULT_BALANCES: dict[str, float] = {"USDT": 10000.0, "BTC": 0.0}
DEFAULT_FUTURES_BALANCES: dict[str, float] = {"USDT": 10000.0}


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Venue:
    """A simulated Binance spot venue. Thread-safe; start with `start()` or a `with` block.

    `balances` are the initial free balances; `fee_rate` a fraction (0.001 = 0.1 %);
    `fee_rule` "base", "quote" or a third asset ("BNB", priced at `fee_asset_price` in the
    traded market's quote currency); `clock` returns the venue time in ms (default: the wall
    clock; `set_clock` freezes it); `slippage` a fraction moved against market orders.
    Futures (USDⓈ-M, `/fapi/`): `futures_markets` (symbols like "BTC/USDT:USDT") and
    `futures_balances` (the USDT wallet; only USDT is modelled).
    """

    def __init__(self, markets: Iterable[MarketSpec] = DEFAULT_MARKETS,
                 balances: Mapping[str, float | int | str | Decimal] | None = None,
                 fee_rate: float | str | Decimal = "0.001", fee_rule: str = "base",
                 fee_asset_price: float | str | Decimal | None = None,
                 clock: Callable[[], int] | None = None, slippage: float | str = 0,
                 host: str = "127.0.0.1", port: int = 0,
                 futures_markets: Iterable[FuturesSpec] = DEFAULT_FUTURES_MARKETS,
                 futures_balances: Mapping[str, float | int | str | Decimal] | None = None
                 ) -> None:
        fees = FeeRule(dec(fee_rate), fee_rule,
                       None if fee_asset_price is None else dec(fee_asset_price))
        if fee_rule not in ("base", "quote") and fees.asset_price is None:
            raise ValueError(f"fee rule {fee_rule!r} needs fee_asset_price")
        self.lock = threading.RLock()
        self._clock: Callable[[], int] = clock or wall_clock_ms
        self.engine = SpotEngine(markets, DEFAULT_BALANCES if balances is None else balances,
                                 fees, self.now_ms)
        self.engine.slippage = dec(slippage)
        wallet = (DEFAULT_FUTURES_BALANCES if futures_balances is None
                  else futures_balances).get("USDT", 0)
        self.futures = FuturesEngine(futures_markets, dec(wallet), self.now_ms,
                                     self.engine.prices)
        self.futures.slippage = dec(slippage)
        self.faults = FaultBoard()
        self._counts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._address = (host, port)
        self._server: VenueHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Venue:
        """Listen (default 127.0.0.1 on a free port) and serve from a daemon thread."""
        server = VenueHTTPServer(self._address, make_handler(self))
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="venue", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; handlers sleeping in a fault are woken and their connections dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Venue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the venue is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = self._server.server_address[0] if self._server is not None else self._address[0]
        return f"http://{host}:{self.port}"

    # clock and prices --------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The venue time (ms, UTC)."""
        return self._clock()

    def set_clock(self, now_ms: int | Callable[[], int] | None) -> None:
        """Freeze the clock at `now_ms`, follow a callable (a replay clock), or None: wall
        clock. Resting orders are matched against the new time."""
        with self.lock:
            if now_ms is None:
                self._clock = wall_clock_ms
            elif callable(now_ms):
                self._clock = now_ms
            else:
                frozen = int(now_ms)
                self._clock = lambda: frozen
            self._match()

    def _match(self) -> None:
        self.engine.match()
        self.futures.match()

    def load_candles(self, symbol: str, candles: Sequence[Candle]) -> None:
        """Serve these 1m candles for `symbol` and price from them (a futures symbol such as
        "BTC/USDT:USDT" gets its own; otherwise futures price from the spot market's)."""
        with self.lock:
            if ":" in symbol:
                self.futures.prices.load(self.futures.spec(symbol).market_id, candles)
            else:
                self.engine.prices.load(self.engine.spec(symbol).market_id, candles)
            self._match()

    def set_price(self, symbol: str, price: float | str | Decimal | None) -> None:
        """Override the current price of `symbol` (None: back to the candles); then match.
        A spot symbol moves the futures market of the same id too, unless that one has its own
        price ("BTC/USDT:USDT", `set_mark_price`)."""
        with self.lock:
            value = None if price is None else dec(price)
            if ":" in symbol:
                self.futures.prices.set_price(self.futures.spec(symbol).market_id, value)
            else:
                self.engine.prices.set_price(self.engine.spec(symbol).market_id, value)
            self._match()

    def set_mark_price(self, symbol: str, price: float | str | Decimal | None) -> None:
        """The futures mark (= trade) price of `symbol`; stops, limits and liquidations
        follow it."""
        self.set_price(self.futures.spec(symbol).symbol, price)

    def price(self, symbol: str) -> Decimal | None:
        """The current price of `symbol` (override, else the last closed 1m close)."""
        with self.lock:
            if ":" in symbol:
                return self.futures.mark(self.futures.spec(symbol).market_id)
            return self.engine.prices.current(self.engine.spec(symbol).market_id, self.now_ms())

    def set_slippage(self, fraction: float | str | Decimal) -> None:
        """Market orders fill at the current price moved by `fraction` against the taker."""
        with self.lock:
            self.engine.slippage = dec(fraction)
            self.futures.slippage = dec(fraction)

    def set_fill_fraction(self, fraction: float | str | Decimal,
                          symbol: str | None = None) -> None:
        """Market orders (on `symbol`, or everywhere) fill only `fraction`, the rest EXPIRED."""
        with self.lock:
            key = None if symbol is None else self.engine.spec(symbol).market_id
            self.engine.fill_fraction[key] = dec(fraction)

    def match(self) -> None:
        """Fill the resting limit orders the price has reached, trigger stops, liquidate and
        charge funding (run at every request too)."""
        with self.lock:
            self._match()

    def fill_order(self, client_order_id: str, price: float | str | Decimal | None = None,
                   fraction: float | str | Decimal = 1.0) -> None:
        """Fill `fraction` of the open order's quantity at `price` (default its limit price)."""
        with self.lock:
            self.engine.fill_order(client_order_id, None if price is None else dec(price),
                                   dec(fraction))

    # behaviour ---------------------------------------------------------------------------------
    def set_lookup_lag(self, seconds: float) -> None:
        """GET /api/v3/order answers -2013 for an order until `seconds` after its acceptance."""
        with self.lock:
            self.engine.lookup_lag = max(0.0, float(seconds))
            self.futures.lookup_lag = max(0.0, float(seconds))

    def set_response_type(self, forced: str | None) -> None:
        """Answer every create in `forced` (ACK, RESULT, FULL) whatever was asked; None: as
        asked (Binance's default FULL)."""
        if forced is not None and forced not in RESPONSE_TYPES:
            raise ValueError(f"response type must be one of {RESPONSE_TYPES}")
        with self.lock:
            self.engine.forced_response = forced

    # balances ----------------------------------------------------------------------------------
    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """{asset: (free, locked)}."""
        with self.lock:
            return self.engine.accounts.snapshot()

    def balance(self, asset: str) -> Decimal:
        """Total (free + locked) of `asset`."""
        free, locked = self.balances().get(asset, (Decimal(0), Decimal(0)))
        return free + locked

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        """Set the free balance of `asset` (locked amounts are kept)."""
        with self.lock:
            self.engine.set_free(asset, free)

    # orders and trades -------------------------------------------------------------------------
    def orders(self) -> list[VenueOrder]:
        """Every order accepted so far, oldest first (copies)."""
        with self.lock:
            return [replace(o, trades=list(o.trades)) for o in self.engine.orders]

    def orders_for(self, client_order_id: str) -> list[VenueOrder]:
        """The orders accepted under `client_order_id`, oldest first (copies)."""
        return [o for o in self.orders() if o.client_order_id == client_order_id]

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        """The open orders (on `symbol`), oldest first (copies)."""
        with self.lock:
            market_id = None if symbol is None else self.engine.spec(symbol).market_id
        return [o for o in self.orders() if o.is_open and market_id in (None, o.market_id)]

    def trades(self, symbol: str | None = None) -> list[VenueTrade]:
        """Every fill (on `symbol`), oldest first."""
        with self.lock:
            market_id = None if symbol is None else self.engine.spec(symbol).market_id
            return [replace(t) for t in self.engine.trades if market_id in (None, t.market_id)]

    # futures -----------------------------------------------------------------------------------
    def positions(self, symbol: str | None = None) -> list[Position]:
        """Open futures positions (copies), on `symbol` if given."""
        with self.lock:
            market_id = None if symbol is None else self.futures.spec(symbol).market_id
            return [replace(p) for p in self.futures.positions.values()
                    if p.amount and market_id in (None, p.market_id)]

    def wallet(self) -> Decimal:
        """The futures USDT wallet balance (margins included, unrealised PnL not)."""
        with self.lock:
            return self.futures.wallet_balance

    def available(self) -> Decimal:
        """The futures balance free for new margin."""
        with self.lock:
            return self.futures.available()

    def liquidation_price(self, symbol: str, position_side: str = "BOTH") -> Decimal | None:
        with self.lock:
            pos = self.futures.positions.get((self.futures.spec(symbol).market_id,
                                              position_side))
            return None if pos is None else self.futures.liquidation_price(pos)

    def leverage(self, symbol: str) -> int:
        with self.lock:
            return self.futures.settings[self.futures.spec(symbol).market_id].leverage

    def margin_type(self, symbol: str) -> str:
        """ISOLATED or CROSSED (Binance's default)."""
        with self.lock:
            return self.futures.settings[self.futures.spec(symbol).market_id].margin_type

    def hedge_mode(self) -> bool:
        with self.lock:
            return self.futures.hedge_mode

    def set_funding_rate(self, symbol: str, rate: float | str | Decimal) -> None:
        """The funding rate charged at the next 8-hour marks (default 0.0001)."""
        with self.lock:
            self.futures.funding_rates[self.futures.spec(symbol).market_id] = dec(rate)

    def set_maintenance_margin_rate(self, rate: float | str | Decimal) -> None:
        with self.lock:
            self.futures.maintenance_rate = dec(rate)

    def set_futures_fee(self, taker: float | str | Decimal,
                        maker: float | str | Decimal | None = None) -> None:
        """Futures commission rates (fractions; default taker 0.0004, maker 0.0002)."""
        with self.lock:
            self.futures.taker_fee = dec(taker)
            self.futures.maker_fee = dec(taker if maker is None else maker)

    def set_wallet(self, amount: float | str | Decimal) -> None:
        with self.lock:
            self.futures.set_wallet(amount)

    def futures_orders(self) -> list[FuturesOrder]:
        """Every futures order (conditional ones have `algo`), oldest first (copies)."""
        with self.lock:
            return [replace(o, trades=list(o.trades)) for o in self.futures.orders]

    def futures_trades(self) -> list[FuturesTrade]:
        with self.lock:
            return [replace(t) for t in self.futures.trades]

    def incomes(self, income_type: str | None = None) -> list[Income]:
        """The futures income log (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR)."""
        with self.lock:
            return [i for i in self.futures.incomes if income_type in (None, i.income_type)]

    # faults and counters -----------------------------------------------------------------------
    def fail_next(self, path: str, fault: VenueFault, count: int = 1) -> None:
        """The next `count` requests to `path` ("/api/v3/order", "POST /api/v3/order", "*")
        meet `fault`."""
        self.faults.fail_next(path, fault, count)

    def set_fault(self, path: str, fault: VenueFault | None) -> None:
        """Every request to `path` meets `fault` until cleared with None."""
        self.faults.set_fault(path, fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def count(self, path: str) -> None:
        with self.lock:
            self._counts[path] += 1

    def request_count(self, path: str | None = None) -> int:
        """Requests received for `path` (every path if None), faulted ones included."""
        with self.lock:
            return sum(n for p, n in self._counts.items() if path in (None, p))

    def pause(self, seconds: float) -> bool:
        """Sleep `seconds` unless the venue stops first; True if it is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"Venue({where}, markets={sorted(self.engine.markets)})"

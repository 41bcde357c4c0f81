"""Spot markets as Binance describes them, and Binance's order filters.

`MarketSpec` is one `exchangeInfo` symbol (tick size, step size, minimum quantity and notional);
`DEFAULT_MARKETS` are the markets bkit's tests and the runnable venue use, with real 2024 filters.
`check_filters` applies PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and NOTIONAL exactly as Binance
does: a value off the grid is refused with -1013, never rounded for the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bkit.venue.errors import VenueError

#: Order types a market lists in exchangeInfo (the fake exchange of `bkit.testing` serves these).
LISTED_ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
#: Order types the venue implements and lists (ccxt refuses a type missing from `orderTypes`
#: before sending it). Binance lists STOP_LOSS and TAKE_PROFIT (stop-market) too; the venue does
#: not implement them, so ccxt refuses a spot market order with a stop price before sending.
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One spot market as binance describes it in exchangeInfo. Sizes are decimal strings.

    `market_step_size` / `market_min_qty` are MARKET_LOT_SIZE ("0" = no constraint, Binance's
    usual value); `apply_min_to_market` is NOTIONAL's `applyMinToMarket`.
    """

    symbol: str
    tick_size: str
    step_size: str
    min_qty: str
    min_notional: str
    max_qty: str = "9000000.00000000"
    min_price: str | None = None
    max_price: str = "1000000.00000000"
    market_min_qty: str = "0.00000000"
    market_step_size: str = "0.00000000"
    max_notional: str = "9000000.00000000"
    apply_min_to_market: bool = True

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    @property
    def market_id(self) -> str:
        return self.base + self.quote

    def exchange_info(self, order_types: tuple[str, ...] = LISTED_ORDER_TYPES) -> dict[str, Any]:
        """The `symbols[]` entry of `GET /api/v3/exchangeInfo` for this market."""
        return {
            "symbol": self.market_id, "status": "TRADING",
            "baseAsset": self.base, "baseAssetPrecision": 8,
            "quoteAsset": self.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": list(order_types),
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
            "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": self.min_price or self.tick_size,
                 "maxPrice": self.max_price, "tickSize": self.tick_size},
                {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": self.max_qty,
                 "stepSize": self.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": self.market_min_qty,
                 "maxQty": self.max_qty, "stepSize": self.market_step_size},
                {"filterType": "NOTIONAL", "minNotional": self.min_notional,
                 "applyMinToMarket": self.apply_min_to_market,
                 "maxNotional": self.max_notional, "applyMaxToMarket": False,
                 "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER",
                                                "EXPIRE_BOTH"],
        }


#: Realistic binance spot filters (2024) for the markets the tests use.
DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("BTC/USDT", tick_size="0.01000000", step_size="0.00001000",
               min_qty="0.00001000", min_notional="5.00000000", max_qty="9000.00000000"),
    MarketSpec("ETH/USDT", tick_size="0.01000000", step_size="0.00010000",
               min_qty="0.00010000", min_notional="5.00000000", max_qty="9000.00000000"),
    MarketSpec("XRP/ETH", tick_size="0.00000001", step_size="1.00000000",
               min_qty="1.00000000", min_notional="0.00100000", max_qty="90000000.00000000"),
    MarketSpec("UNITTEST/BTC", tick_size="0.00000001", step_size="1.00000000",
               min_qty="1.00000000", min_notional="0.00010000", max_qty="90000000.00000000"),
)


def _off_grid(value: Decimal, origin: Decimal, step: Decimal) -> bool:
    return step > 0 and (value - origin) % step != 0


def check_price(spec: MarketSpec, price: Decimal) -> None:
    """PRICE_FILTER: minPrice <= price <= maxPrice and (price - minPrice) % tickSize == 0."""
    low = Decimal(spec.min_price or spec.tick_size)
    if price < low or price > Decimal(spec.max_price) or _off_grid(price, low,
                                                                    Decimal(spec.tick_size)):
        raise VenueError.filter("PRICE_FILTER")


def check_quantity(spec: MarketSpec, quantity: Decimal, market: bool) -> None:
    """LOT_SIZE on every order, and MARKET_LOT_SIZE on market orders."""
    low, step = Decimal(spec.min_qty), Decimal(spec.step_size)
    if quantity < low or quantity > Decimal(spec.max_qty) or _off_grid(quantity, low, step):
        raise VenueError.filter("LOT_SIZE")
    if market:
        low, step = Decimal(spec.market_min_qty), Decimal(spec.market_step_size)
        if quantity < low or quantity > Decimal(spec.max_qty) or _off_grid(quantity, low, step):
            raise VenueError.filter("MARKET_LOT_SIZE")


def check_notional(spec: MarketSpec, notional: Decimal, market: bool) -> None:
    """NOTIONAL: minNotional (market orders only with applyMinToMarket) and maxNotional
    (limit orders; applyMaxToMarket is false)."""
    if (not market or spec.apply_min_to_market) and notional < Decimal(spec.min_notional):
        raise VenueError.filter("NOTIONAL")
    if not market and notional > Decimal(spec.max_notional):
        raise VenueError.filter("NOTIONAL")


def floor_to_step(spec: MarketSpec, quantity: Decimal) -> Decimal:
    """`quantity` floored to the LOT_SIZE step (how Binance derives a quoteOrderQty size)."""
    step = Decimal(spec.step_size)
    return quantity if step <= 0 else (quantity // step) * step

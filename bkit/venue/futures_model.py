"""USDⓈ-M futures records: markets, positions, orders, income rows and their Binance JSON.

`FuturesSpec` is one `fapi/v1/exchangeInfo` symbol (perpetual, contractSize 1); `Position` one
position (signed amount: SHORT in hedge mode is negative, as Binance answers); `FuturesOrder` a
regular order (`fapi/v1/order`) or a conditional algo order (`fapi/v1/algoOrder`, where ccxt 4.5
sends every STOP_MARKET); `Income` one `fapi/v1/income` row. Numbers are strings, ids numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bkit.venue.orders import OPEN_STATUSES


def sx(value: Decimal | None, places: int = 8) -> str:
    """A futures amount string with `places` decimals."""
    quantum = Decimal(1).scaleb(-places)
    return f"{(value or Decimal(0)).quantize(quantum, rounding=ROUND_HALF_UP):f}"


@dataclass(frozen=True, slots=True)
class FuturesSpec:
    """One USDⓈ-M perpetual as `fapi/v1/exchangeInfo` describes it (sizes are strings)."""

    symbol: str  # "BTC/USDT:USDT"
    tick_size: str
    step_size: str
    min_qty: str
    min_notional: str
    max_qty: str = "1000"
    market_max_qty: str = "120"
    min_price: str = "556.80"
    max_price: str = "4529764"
    price_precision: int = 2
    quantity_precision: int = 3

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]

    @property
    def market_id(self) -> str:
        return self.base + self.quote

    def exchange_info(self, order_types: tuple[str, ...]) -> dict[str, Any]:
        return {
            "symbol": self.market_id, "pair": self.market_id, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": self.base, "quoteAsset": self.quote, "marginAsset": self.quote,
            "pricePrecision": self.price_precision, "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
            "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": self.min_price,
                 "maxPrice": self.max_price, "tickSize": self.tick_size},
                {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": self.max_qty,
                 "stepSize": self.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": self.min_qty,
                 "maxQty": self.market_max_qty, "stepSize": self.step_size},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": self.min_notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
                 "multiplierDown": "0.9500", "multiplierDecimal": "4"},
            ],
            "orderTypes": list(order_types),
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY"],
        }


#: Binance USDⓈ-M filters (2024) for the perpetuals the tests use.
DEFAULT_FUTURES_MARKETS: tuple[FuturesSpec, ...] = (
    FuturesSpec("BTC/USDT:USDT", tick_size="0.10", step_size="0.001", min_qty="0.001",
                min_notional="100"),
    FuturesSpec("ETH/USDT:USDT", tick_size="0.01", step_size="0.001", min_qty="0.001",
                min_notional="20", min_price="39.86", max_price="306177", max_qty="10000",
                market_max_qty="2000"),
)


@dataclass(slots=True)
class Position:
    """One position: `amount` signed (long > 0), `margin` its isolated wallet."""

    market_id: str
    side: str  # BOTH, LONG, SHORT
    amount: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    margin: Decimal = Decimal(0)
    update_ms: int = 0


@dataclass(slots=True)
class FuturesTrade:
    trade_id: int
    order_id: int
    market_id: str
    side: str
    position_side: str
    price: Decimal
    qty: Decimal
    realized_pnl: Decimal
    commission: Decimal
    time_ms: int
    is_maker: bool

    def answer(self) -> dict[str, Any]:
        """One row of `GET /fapi/v1/userTrades`."""
        return {"symbol": self.market_id, "id": self.trade_id, "orderId": self.order_id,
                "side": self.side, "price": sx(self.price, 2), "qty": sx(self.qty, 3),
                "realizedPnl": sx(self.realized_pnl), "marginAsset": "USDT",
                "quoteQty": sx(self.price * self.qty, 5), "commission": sx(self.commission),
                "commissionAsset": "USDT", "time": self.time_ms,
                "positionSide": self.position_side, "maker": self.is_maker,
                "buyer": self.side == "BUY"}


@dataclass(slots=True)
class FuturesOrder:
    """A regular order, or (`algo`) a conditional one waiting for its trigger."""

    order_id: int
    client_order_id: str
    market_id: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    time_ms: int
    accepted_at: float
    position_side: str = "BOTH"
    reduce_only: bool = False
    close_position: bool = False
    stop_price: Decimal | None = None
    time_in_force: str = "GTC"
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_ms: int = 0
    algo: bool = False
    trigger_ms: int = 0
    actual_order_id: int | None = None
    trades: list[FuturesTrade] = field(default_factory=list)
    checked_ms: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def average(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else Decimal(0)

    def answer(self, create: bool = False) -> dict[str, Any]:
        """`fapi/v1/order` query / openOrders rows, or (`create`) the RESULT create and cancel
        answer: Binance's create has `cumQty` and no `time`, its query the reverse."""
        answer = {"orderId": self.order_id, "symbol": self.market_id, "status": self.status,
                "clientOrderId": self.client_order_id, "price": sx(self.price, 2),
                "avgPrice": sx(self.average, 2), "origQty": sx(self.quantity, 3),
                "executedQty": sx(self.executed_qty, 3), "cumQty": sx(self.executed_qty, 3),
                "cumQuote": sx(self.cum_quote, 5), "timeInForce": self.time_in_force,
                "type": self.type, "reduceOnly": self.reduce_only,
                "closePosition": self.close_position, "side": self.side,
                "positionSide": self.position_side, "stopPrice": sx(self.stop_price, 2),
                "workingType": "CONTRACT_PRICE", "priceProtect": False,
                "origType": self.type, "priceMatch": "NONE",
                "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
                "time": self.time_ms, "updateTime": self.update_ms}
        del answer["time" if create else "cumQty"]
        return answer

    def ack_answer(self) -> dict[str, Any]:
        return {"orderId": self.order_id, "symbol": self.market_id, "status": self.status,
                "clientOrderId": self.client_order_id, "updateTime": self.update_ms}

    def algo_answer(self) -> dict[str, Any]:
        """`fapi/v1/algoOrder` (create, query) and `openAlgoOrders` rows."""
        answer: dict[str, Any] = {
            "algoId": self.order_id, "clientAlgoId": self.client_order_id,
            "algoType": "CONDITIONAL", "orderType": self.type, "symbol": self.market_id,
            "side": self.side, "positionSide": self.position_side,
            "timeInForce": self.time_in_force, "quantity": sx(self.quantity, 3),
            "algoStatus": self.status, "triggerPrice": sx(self.stop_price, 2),
            "price": sx(self.price, 2), "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE", "closePosition": self.close_position, "priceProtect": False,
            "reduceOnly": self.reduce_only, "createTime": self.time_ms,
            "updateTime": self.update_ms, "triggerTime": self.trigger_ms, "goodTillDate": 0}
        if self.actual_order_id is not None:
            answer["actualOrderId"] = str(self.actual_order_id)
        return answer


@dataclass(frozen=True, slots=True)
class Income:
    """One `fapi/v1/income` row (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR)."""

    tran_id: int
    market_id: str
    income_type: str
    income: Decimal
    time_ms: int
    trade_id: str = ""

    def answer(self) -> dict[str, Any]:
        return {"symbol": self.market_id, "incomeType": self.income_type,
                "income": sx(self.income), "asset": "USDT", "info": self.income_type,
                "time": self.time_ms, "tranId": self.tran_id, "tradeId": self.trade_id}

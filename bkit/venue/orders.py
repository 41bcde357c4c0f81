"""Order and trade records of the venue, and their Binance JSON answers.

`VenueOrder` is one accepted order (with what it still holds locked); `VenueTrade` one fill with
its commission. `create_answer` renders `POST /api/v3/order` in the ACK, RESULT or FULL response
type with Binance's keys; `VenueOrder.query_answer` renders `GET /api/v3/order` / `openOrders`.
Every number is a string with 8 decimals and every id a JSON number, as Binance answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bkit.venue.accounts import quantize

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")


def s8(value: Decimal | None) -> str:
    """A Binance amount string: 8 decimals (`"0.01000000"`)."""
    return f"{quantize(value or Decimal(0)):f}"


@dataclass(slots=True)
class VenueTrade:
    """One fill of one order."""

    trade_id: int
    order_id: int
    market_id: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool

    def fill_answer(self) -> dict[str, Any]:
        """One entry of a FULL create answer's `fills`."""
        return {"price": s8(self.price), "qty": s8(self.qty),
                "commission": s8(self.commission), "commissionAsset": self.commission_asset,
                "tradeId": self.trade_id}

    def my_trades_answer(self) -> dict[str, Any]:
        """One row of `GET /api/v3/myTrades`."""
        return {"symbol": self.market_id, "id": self.trade_id, "orderId": self.order_id,
                "orderListId": -1, "price": s8(self.price), "qty": s8(self.qty),
                "quoteQty": s8(self.quote_qty), "commission": s8(self.commission),
                "commissionAsset": self.commission_asset, "time": self.time_ms,
                "isBuyer": self.side == "BUY", "isMaker": self.is_maker, "isBestMatch": True}


@dataclass(slots=True)
class VenueOrder:
    """One accepted order. Quantities and prices are Decimals; times in ms (venue clock).

    `locked_asset` / `locked` are what the order still holds reserved; `accepted_at` is the
    wall-clock (monotonic, s) acceptance time the lookup lag counts from; `checked_ms` the venue
    time up to which the candles were already matched against a resting limit order.
    """

    order_id: int
    client_order_id: str
    market_id: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    time_ms: int
    accepted_at: float
    time_in_force: str = "GTC"
    quote_order_qty: Decimal = Decimal(0)
    iceberg_qty: Decimal | None = None
    stp_mode: str = "EXPIRE_MAKER"
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cumm_quote: Decimal = Decimal(0)
    update_ms: int = 0
    locked_asset: str = ""
    locked: Decimal = Decimal(0)
    trades: list[VenueTrade] = field(default_factory=list)
    checked_ms: int = 0
    stop_price: Decimal | None = None
    working_ms: int = -1

    @property
    def is_stop(self) -> bool:
        return self.stop_price is not None

    @property
    def is_working(self) -> bool:
        """False while a stop order waits for its trigger (Binance's `isWorking`)."""
        return self.working_ms >= 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty

    def _common(self) -> dict[str, Any]:
        return {"symbol": self.market_id, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_order_id}

    def _state(self) -> dict[str, Any]:
        return {"price": s8(self.price), "origQty": s8(self.quantity),
                "executedQty": s8(self.executed_qty),
                "cummulativeQuoteQty": s8(self.cumm_quote), "status": self.status,
                "timeInForce": self.time_in_force, "type": self.type, "side": self.side}

    def query_answer(self) -> dict[str, Any]:
        """`GET /api/v3/order` (and each `openOrders` row)."""
        return {**self._common(), **self._state(), "stopPrice": s8(self.stop_price),
                "icebergQty": s8(self.iceberg_qty), "time": self.time_ms,
                "updateTime": self.update_ms, "isWorking": self.is_working,
                "workingTime": self.working_ms,
                "origQuoteOrderQty": s8(self.quote_order_qty),
                "selfTradePreventionMode": self.stp_mode}

    def create_answer(self, response_type: str, fills: list[VenueTrade]) -> dict[str, Any]:
        """`POST /api/v3/order` in `response_type` (ACK, RESULT or FULL)."""
        answer = {**self._common(), "transactTime": self.time_ms}
        if response_type == "ACK":
            return answer
        state = self._state()
        answer.update({"price": state.pop("price"), "origQty": state.pop("origQty"),
                       "executedQty": state.pop("executedQty"),
                       "origQuoteOrderQty": s8(self.quote_order_qty),
                       "cummulativeQuoteQty": state.pop("cummulativeQuoteQty"), **state,
                       "workingTime": self.working_ms})
        if self.stop_price is not None:
            answer["stopPrice"] = s8(self.stop_price)
        if self.iceberg_qty is not None:
            answer["icebergQty"] = s8(self.iceberg_qty)
        if response_type == "FULL":
            answer["fills"] = [t.fill_answer() for t in fills]
        answer["selfTradePreventionMode"] = self.stp_mode
        return answer

    def cancel_answer(self, cancel_client_id: str) -> dict[str, Any]:
        """`DELETE /api/v3/order`: the cancel's own client id, the order's in origClientOrderId."""
        return {"symbol": self.market_id, "origClientOrderId": self.client_order_id,
                "orderId": self.order_id, "orderListId": -1, "clientOrderId": cancel_client_id,
                "transactTime": self.update_ms, **self._state(),
                "origQuoteOrderQty": s8(self.quote_order_qty),
                "selfTradePreventionMode": self.stp_mode}

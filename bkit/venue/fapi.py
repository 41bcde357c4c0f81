"""The `/fapi/...` endpoints of the futures account, as Binance answers them to ccxt 4.5.

Orders: `fapi/v1/order` takes LIMIT and MARKET (a conditional type there is refused -4120, as
Binance does since its algo-order migration); ccxt 4.5 sends STOP_MARKET / TAKE_PROFIT_MARKET
to `fapi/v1/algoOrder` (`algoType=CONDITIONAL`, `clientAlgoId`, `triggerPrice`), listed by
`fapi/v1/openAlgoOrders`. Account: `fapi/v2|v3/positionRisk`, `fapi/v2|v3/account`,
`fapi/v2|v3/balance`, `fapi/v1/leverage`, `fapi/v1/marginType`, `fapi/v1/positionSide/dual`,
`fapi/v1/leverageBracket`, `fapi/v1/income`, `fapi/v1/userTrades`, `fapi/v1/premiumIndex`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

from bkit.venue.errors import VenueError
from bkit.venue.futures import (
    ALGO_ONLY,
    ORDER_TYPES,
    FuturesEngine,
    decimal_param,
    flag,
)
from bkit.venue.futures_model import FuturesOrder, Position, sx
from bkit.venue.stops import FUTURES_STOP_TYPES, STOP_IMMEDIATE_FUTURES, reached

Handler = Callable[[dict[str, str]], Any]
SUCCESS = {"code": 200, "msg": "success"}


def _off_grid(value: Decimal, origin: Decimal, step: Decimal) -> bool:
    return step > 0 and (value - origin) % step != 0


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    return None if raw in (None, "") else int(raw)


class Fapi:
    """Binance USDⓈ-M REST handlers over one `FuturesEngine`."""

    def __init__(self, engine: FuturesEngine) -> None:
        self.e = engine

    def routes(self) -> dict[tuple[str, str], Handler]:
        e = self
        table: dict[tuple[str, str], Handler] = {
            ("GET", "/fapi/v1/ping"): lambda p: {},
            ("GET", "/fapi/v1/time"): lambda p: {"serverTime": e.e.clock()},
            ("GET", "/fapi/v1/exchangeInfo"): lambda p: e.exchange_info(),
            ("GET", "/fapi/v1/premiumIndex"): e.premium_index,
            ("GET", "/fapi/v1/leverageBracket"): e.leverage_bracket,
            ("POST", "/fapi/v1/order"): e.create_order,
            ("GET", "/fapi/v1/order"): e.query_order,
            ("DELETE", "/fapi/v1/order"): e.cancel_order,
            ("GET", "/fapi/v1/openOrders"): e.open_orders,
            ("GET", "/fapi/v1/openOrder"): e.query_open_order,
            ("POST", "/fapi/v1/algoOrder"): e.create_algo,
            ("GET", "/fapi/v1/algoOrder"): e.query_algo,
            ("DELETE", "/fapi/v1/algoOrder"): e.cancel_algo,
            ("GET", "/fapi/v1/openAlgoOrders"): e.open_algos,
            ("GET", "/fapi/v1/userTrades"): e.user_trades,
            ("GET", "/fapi/v1/income"): e.income,
            ("POST", "/fapi/v1/leverage"): e.set_leverage,
            ("POST", "/fapi/v1/marginType"): e.set_margin_type,
            ("GET", "/fapi/v1/positionSide/dual"): lambda p: {
                "dualSidePosition": e.e.hedge_mode},
            ("POST", "/fapi/v1/positionSide/dual"): e.set_dual,
        }
        for version in ("v2", "v3"):
            table[("GET", f"/fapi/{version}/positionRisk")] = partial(
                e.position_risk, version=version)
            table[("GET", f"/fapi/{version}/account")] = lambda p: e.account()
            table[("GET", f"/fapi/{version}/balance")] = lambda p: e.balance()
        return table

    # market data -------------------------------------------------------------------------------
    def exchange_info(self) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": self.e.clock(), "futuresType": "U_MARGINED",
                "rateLimits": [], "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True,
                            "autoAssetExchange": "-10000"}],
                "symbols": [m.exchange_info(ORDER_TYPES) for m in self.e.markets.values()]}

    def premium_index(self, params: Mapping[str, str]) -> Any:
        now = self.e.clock()
        specs = [self.e.spec(params["symbol"])] if params.get("symbol") else list(
            self.e.markets.values())
        rows = [{"symbol": s.market_id, "markPrice": sx(self.e.mark(s.market_id)),
                 "indexPrice": sx(self.e.mark(s.market_id)),
                 "estimatedSettlePrice": sx(self.e.mark(s.market_id)),
                 "lastFundingRate": sx(self.e.funding_rates.get(s.market_id,
                                                                Decimal("0.0001"))),
                 "interestRate": "0.00010000", "nextFundingTime": self.e.next_funding_ms(now),
                 "time": now} for s in specs]
        return rows[0] if params.get("symbol") else rows

    def leverage_bracket(self, params: Mapping[str, str]) -> Any:
        rate = float(self.e.maintenance_rate)
        return [{"symbol": s.market_id, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 100_000_000,
             "notionalFloor": 0, "maintMarginRatio": rate, "cum": 0.0}]}
            for s in self.e.markets.values()
            if not params.get("symbol") or s.market_id == params["symbol"]]

    # orders ------------------------------------------------------------------------------------
    def _common(self, params: Mapping[str, str], algo: bool) -> dict[str, Any]:
        e = self.e
        spec = e.spec(params.get("symbol"))
        side = params.get("side", "").upper()
        kind = params.get("type", "").upper()
        if side not in ("BUY", "SELL"):
            raise VenueError.missing("side")
        if kind not in ORDER_TYPES:
            raise VenueError(400, -1116, "Invalid orderType.")
        position_side = params.get("positionSide", "BOTH").upper()
        if e.hedge_mode != (position_side in ("LONG", "SHORT")):
            raise VenueError(400, -4061,
                             "Order's position side does not match user's setting.")
        reduce_only = flag(params, "reduceOnly")
        if reduce_only and e.hedge_mode:
            raise VenueError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
        close_position = flag(params, "closePosition")
        quantity = decimal_param(params, "quantity")
        if quantity is None and not close_position:
            raise VenueError.missing("quantity")
        if quantity is not None:
            low, step = Decimal(spec.min_qty), Decimal(spec.step_size)
            top = Decimal(spec.market_max_qty if kind != "LIMIT" else spec.max_qty)
            if quantity < low or quantity > top or _off_grid(quantity, low, step):
                raise VenueError(400, -1111, "Precision is over the maximum defined for this "
                                             "asset." if _off_grid(quantity, low, step)
                                 else "Quantity less than or equal to zero.")
        client_id = params.get("clientAlgoId" if algo else "newClientOrderId") or (
            f"venue-f{len(e.orders) + 1}")
        if any(o.is_open and o.client_order_id == client_id for o in e.orders):
            raise VenueError(400, -4116, "ClientOrderId is duplicated.")
        return {"spec": spec, "side": side, "kind": kind, "position_side": position_side,
                "reduce_only": reduce_only, "close_position": close_position,
                "quantity": quantity or Decimal(0), "client_id": client_id}

    def _check_price(self, spec: Any, price: Decimal) -> None:
        tick = Decimal(spec.tick_size)
        if price < Decimal(spec.min_price) or price > Decimal(spec.max_price) or (
                price % tick != 0):
            raise VenueError(400, -4014, "Price not increased by tick size.")

    def create_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order: LIMIT or MARKET."""
        e, c = self.e, self._common(params, algo=False)
        spec, side, kind, qty = c["spec"], c["side"], c["kind"], c["quantity"]
        if kind not in ("LIMIT", "MARKET"):
            raise VenueError(400, -4120, ALGO_ONLY)
        mark = e.mark(spec.market_id)
        price = decimal_param(params, "price") if kind == "LIMIT" else None
        if kind == "LIMIT":
            if price is None:
                raise VenueError.missing("price")
            if not params.get("timeInForce"):
                raise VenueError.missing("timeInForce")
            self._check_price(spec, price)
        elif mark is None:
            raise VenueError(400, -1013, "Market is closed.")
        reference = price if price is not None else mark
        assert reference is not None
        if not c["reduce_only"] and qty * reference < Decimal(spec.min_notional):
            raise VenueError(400, -4164, f"Order's notional must be no smaller than "
                                         f"{spec.min_notional} (unless you choose reduce only).")
        e.check_reduce(side, c["position_side"], spec.market_id, qty, c["reduce_only"])
        takes = kind == "MARKET" or (mark is not None and price is not None and (
            mark <= price if side == "BUY" else mark >= price))
        fill = e.taker(spec, side, mark) if takes and mark is not None else None
        if fill is not None and price is not None:
            fill = min(fill, price) if side == "BUY" else max(fill, price)
        e.require_margin(spec, side, c["position_side"], qty, fill or reference,
                         c["reduce_only"])
        now = e.clock()
        order = FuturesOrder(len(e.orders) + 1, c["client_id"], spec.market_id, side, kind, qty,
                             price, now, time.monotonic(), c["position_side"], c["reduce_only"],
                             time_in_force=params.get("timeInForce", "GTC").upper(),
                             update_ms=now, checked_ms=now)
        e.orders.append(order)
        if fill is not None:
            e.execute(order, fill, qty, maker=False)
        if params.get("newOrderRespType", "ACK").upper() == "ACK":
            return order.ack_answer()
        return order.answer(create=True)

    def create_algo(self, params: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/algoOrder: STOP_MARKET / TAKE_PROFIT_MARKET, triggerPrice."""
        e, c = self.e, self._common(params, algo=True)
        spec, side, kind = c["spec"], c["side"], c["kind"]
        if params.get("algoType", "").upper() != "CONDITIONAL":
            raise VenueError.missing("algoType")
        if kind not in FUTURES_STOP_TYPES:
            raise VenueError(400, -1116, "Invalid orderType.")
        trigger = decimal_param(params, "triggerPrice")
        if trigger is None:
            raise VenueError.missing("triggerPrice")
        self._check_price(spec, trigger)
        if c["close_position"] and (params.get("quantity") or c["reduce_only"]):
            raise VenueError(400, -1106, "Parameter 'quantity' sent when not required.")
        mark = e.mark(spec.market_id)
        if mark is not None and reached(kind, side, trigger, mark):
            raise VenueError(400, -2021, STOP_IMMEDIATE_FUTURES)
        if c["reduce_only"]:
            e.check_reduce(side, c["position_side"], spec.market_id, c["quantity"], True)
        now = e.clock()
        order = FuturesOrder(len(e.orders) + 1, c["client_id"], spec.market_id, side, kind,
                             c["quantity"], None, now, time.monotonic(), c["position_side"],
                             c["reduce_only"], c["close_position"], stop_price=trigger,
                             update_ms=now, algo=True, checked_ms=now)
        e.orders.append(order)
        return order.algo_answer()

    def _find(self, params: Mapping[str, str], algo: bool,
              open_only: bool = False) -> FuturesOrder | None:
        spec = self.e.spec(params.get("symbol")) if params.get("symbol") else None
        order_id = _int(params, "algoId" if algo else "orderId")
        client_id = params.get("clientAlgoId" if algo else "origClientOrderId")
        if order_id is None and not client_id:
            raise VenueError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                         "but both were empty/null!")
        for order in reversed(self.e.orders):
            if order.algo != algo or (spec and order.market_id != spec.market_id) or (
                    open_only and not order.is_open):
                continue
            if (order_id is not None and order.order_id == order_id) or (
                    order_id is None and order.client_order_id == client_id):
                return order
        return None

    def query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(params, algo=False)
        if order is None or time.monotonic() - order.accepted_at < self.e.lookup_lag:
            raise VenueError(400, -2013, "Order does not exist.")
        return order.answer()

    def query_open_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(params, algo=False, open_only=True)
        if order is None:
            raise VenueError(400, -2013, "Order does not exist.")
        return order.answer()

    def cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(params, algo=False, open_only=True)
        if order is None:
            raise VenueError(400, -2011, "Unknown order sent.")
        order.status, order.update_ms = "CANCELED", self.e.clock()
        return order.answer(create=True)

    def open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        market_id = self.e.spec(params["symbol"]).market_id if params.get("symbol") else None
        return [o.answer() for o in self.e.orders if o.is_open and not o.algo
                and market_id in (None, o.market_id)]

    def query_algo(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(params, algo=True)
        if order is None:
            raise VenueError(400, -2013, "Order does not exist.")
        return order.algo_answer()

    def cancel_algo(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(params, algo=True, open_only=True)
        if order is None:
            raise VenueError(400, -2011, "Unknown order sent.")
        order.status, order.update_ms = "CANCELED", self.e.clock()
        return {"algoId": order.order_id, "clientAlgoId": order.client_order_id,
                "code": "200", "msg": "success"}

    def open_algos(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        market_id = self.e.spec(params["symbol"]).market_id if params.get("symbol") else None
        return [o.algo_answer() for o in self.e.orders if o.is_open and o.algo
                and market_id in (None, o.market_id)]

    def user_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        spec = self.e.spec(params.get("symbol"))
        order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 500
        rows = [t for t in self.e.trades if t.market_id == spec.market_id
                and order_id in (None, t.order_id) and (from_id is None or t.trade_id >= from_id)
                and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.answer() for t in rows]

    def income(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        market_id = self.e.spec(params["symbol"]).market_id if params.get("symbol") else None
        kind = params.get("incomeType")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 100
        rows = [i for i in self.e.incomes if market_id in (None, i.market_id)
                and kind in (None, i.income_type) and (start is None or i.time_ms >= start)
                and (end is None or i.time_ms <= end)]
        return [i.answer() for i in rows[:limit]]

    # settings ----------------------------------------------------------------------------------
    def set_leverage(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self.e.spec(params.get("symbol"))
        leverage = _int(params, "leverage")
        if leverage is None or not 1 <= leverage <= 125:
            raise VenueError(400, -4028, "Leverage is not valid")
        self.e.settings[spec.market_id].leverage = leverage
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": spec.market_id}

    def set_margin_type(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self.e.spec(params.get("symbol"))
        wanted = params.get("marginType", "").upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise VenueError(400, -1116, "Invalid marginType.")
        settings = self.e.settings[spec.market_id]
        if settings.margin_type == wanted:
            raise VenueError(400, -4046, "No need to change margin type.")
        if any(p.amount for p in self.e.positions.values() if p.market_id == spec.market_id):
            raise VenueError(400, -4048,
                             "Margin type cannot be changed if there exists position.")
        settings.margin_type = wanted
        return dict(SUCCESS)

    def set_dual(self, params: Mapping[str, str]) -> dict[str, Any]:
        wanted = flag(params, "dualSidePosition")
        if wanted == self.e.hedge_mode:
            raise VenueError(400, -4059, "No need to change position side.")
        if any(p.amount for p in self.e.positions.values()) or any(
                o.is_open for o in self.e.orders):
            raise VenueError(400, -4068,
                             "Position side cannot be changed if there exists position.")
        self.e.hedge_mode = wanted
        return dict(SUCCESS)

    # account -----------------------------------------------------------------------------------
    def _position_row(self, pos: Position, version: str) -> dict[str, Any]:
        e = self.e
        mark = e.mark(pos.market_id) or Decimal(0)
        upnl = e.unrealized(pos)
        isolated = e.is_isolated(pos.market_id)
        notional = pos.amount * mark
        maint = abs(notional) * e.maintenance_rate
        row: dict[str, Any] = {
            "symbol": pos.market_id, "positionSide": pos.side, "positionAmt": sx(pos.amount, 3),
            "entryPrice": sx(pos.entry), "breakEvenPrice": sx(pos.entry * (
                1 + e.taker_fee) if pos.amount > 0 else pos.entry * (1 - e.taker_fee)),
            "markPrice": sx(mark), "unRealizedProfit": sx(upnl),
            "liquidationPrice": sx(e.liquidation_price(pos) or Decimal(0)),
            "isolatedMargin": sx(pos.margin + upnl if isolated else Decimal(0)),
            "notional": sx(notional), "marginAsset": "USDT",
            "isolatedWallet": sx(pos.margin if isolated else Decimal(0)),
            "initialMargin": sx(abs(notional) / e.settings[pos.market_id].leverage),
            "maintMargin": sx(maint),
            "positionInitialMargin": sx(abs(notional) / e.settings[pos.market_id].leverage),
            "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
            "updateTime": pos.update_ms}
        if version == "v2":
            row = {k: row[k] for k in ("symbol", "positionAmt", "entryPrice", "breakEvenPrice",
                                       "markPrice", "unRealizedProfit", "liquidationPrice",
                                       "isolatedMargin", "notional", "marginAsset",
                                       "isolatedWallet", "positionSide", "updateTime")}
            row.update({"leverage": str(e.settings[pos.market_id].leverage),
                        "maxNotionalValue": "1000000",
                        "marginType": "isolated" if isolated else "cross",
                        "isAutoAddMargin": "false", "isolated": isolated, "adlQuantile": 0})
        return row

    def position_risk(self, params: Mapping[str, str], version: str) -> list[dict[str, Any]]:
        """v3 lists open positions only; v2 every symbol and side, with leverage/marginType."""
        e = self.e
        wanted = e.spec(params["symbol"]).market_id if params.get("symbol") else None
        sides = ("LONG", "SHORT") if e.hedge_mode else ("BOTH",)
        rows = []
        for market_id in e.markets:
            if wanted not in (None, market_id):
                continue
            for side in sides:
                pos = e.positions.get((market_id, side)) or Position(market_id, side)
                if version == "v2" or pos.amount:
                    rows.append(self._position_row(pos, version))
        return rows

    def _totals(self) -> dict[str, Decimal]:
        e = self.e
        upnl = sum((e.unrealized(p) for p in e.positions.values()), Decimal(0))
        margin = sum((p.margin for p in e.positions.values()), Decimal(0))
        maint = sum((abs(p.amount * (e.mark(p.market_id) or 0)) * e.maintenance_rate
                     for p in e.positions.values()), Decimal(0))
        available = max(Decimal(0), e.available())
        return {"wallet": e.wallet_balance, "upnl": upnl, "margin": margin, "maint": maint,
                "orders": e.order_margin(), "available": available}

    def account(self) -> dict[str, Any]:
        t, now = self._totals(), self.e.clock()
        asset = {"asset": "USDT", "walletBalance": sx(t["wallet"]),
                 "unrealizedProfit": sx(t["upnl"]), "marginBalance": sx(t["wallet"] + t["upnl"]),
                 "maintMargin": sx(t["maint"]),
                 "initialMargin": sx(t["margin"] + t["orders"]),
                 "positionInitialMargin": sx(t["margin"]),
                 "openOrderInitialMargin": sx(t["orders"]),
                 "maxWithdrawAmount": sx(t["available"]),
                 "crossWalletBalance": sx(t["wallet"]), "crossUnPnl": sx(t["upnl"]),
                 "availableBalance": sx(t["available"]), "marginAvailable": True,
                 "updateTime": now}
        positions = [{"symbol": p.market_id, "positionSide": p.side,
                      "positionAmt": sx(p.amount, 3),
                      "unrealizedProfit": sx(self.e.unrealized(p)),
                      "isolatedMargin": sx(p.margin + self.e.unrealized(p)
                                           if self.e.is_isolated(p.market_id) else Decimal(0)),
                      "notional": sx(p.amount * (self.e.mark(p.market_id) or 0)),
                      "isolatedWallet": sx(p.margin if self.e.is_isolated(p.market_id)
                                           else Decimal(0)),
                      "initialMargin": sx(p.margin),
                      "maintMargin": sx(abs(p.amount * (self.e.mark(p.market_id) or 0))
                                        * self.e.maintenance_rate),
                      "updateTime": p.update_ms}
                     for p in self.e.positions.values() if p.amount]
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "tradeGroupId": -1, "updateTime": 0, "multiAssetsMargin": False,
                "totalInitialMargin": sx(t["margin"] + t["orders"]),
                "totalMaintMargin": sx(t["maint"]), "totalWalletBalance": sx(t["wallet"]),
                "totalUnrealizedProfit": sx(t["upnl"]),
                "totalMarginBalance": sx(t["wallet"] + t["upnl"]),
                "totalPositionInitialMargin": sx(t["margin"]),
                "totalOpenOrderInitialMargin": sx(t["orders"]),
                "totalCrossWalletBalance": sx(t["wallet"]), "totalCrossUnPnl": sx(t["upnl"]),
                "availableBalance": sx(t["available"]), "maxWithdrawAmount": sx(t["available"]),
                "assets": [asset], "positions": positions}

    def balance(self) -> list[dict[str, Any]]:
        t = self._totals()
        return [{"accountAlias": "SgsR", "asset": "USDT", "balance": sx(t["wallet"]),
                 "crossWalletBalance": sx(t["wallet"]), "crossUnPnl": sx(t["upnl"]),
                 "availableBalance": sx(t["available"]),
                 "maxWithdrawAmount": sx(t["available"]), "marginAvailable": True,
                 "updateTime": self.e.clock()}]


"""Orders on a linear USDT-margined futures market through a `CcxtExchange` (SPEC §10).

`FuturesBroker` speaks the `OrderBroker` protocol for symbols like `BTC/USDT:USDT`
(ccxt `binanceusdm`): amounts are contracts (`contractSize` base units each), an entry is a
market order that opens a long (buy) or a short (sell), an exit a reduce-only market order,
a protective stop a reduce-only STOP_MARKET (`place_stop`). In hedge mode every order carries
the `positionSide` of its position and no `reduceOnly` (Binance refuses both together).

Leverage (`CC_LEVERAGE`), margin mode (`CC_MARGIN_MODE`) and the position mode are set on the
venue by `ensure_setup(symbol)` once per symbol per `CcxtExchange` in this process (before
the first entry; "already set" answers are success).

ccxt 4.5 and Binance since its algo-order migration: STOP_MARKET orders live apart
(`fapi/v1/algoOrder`, id = algoId, client id = clientAlgoId); ccxt reaches them only with
`{'trigger': True}`. `lookup`, `cancel` and `open_orders` ask both endpoints, so a client id
of either kind resolves. A triggered algo order reads `closed` with `filled` 0: the fill is on
the regular order named by its `actualOrderId`, which `lookup` follows.

Every ccxt call goes through `CcxtExchange._call` (errors translated into the
`bkit.exchange.errors` hierarchy). Binance codes that ccxt leaves as a plain `ExchangeError`
against a non-Binance URL are given their kind here (-2019 insufficient_funds; -2022, -2021,
-4120, -4164, -1111 invalid_order).
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bkit.broker.base import OrderPlan
from bkit.broker.ccxt_broker import _number, fills_from_trades, venue_order
from bkit.core.margin import contracts_for_cost, liquidation_price, stop_beyond_liquidation
from bkit.core.orders import Fill, MarketRules, VenueOrder, base_of, quote_of
from bkit.core.recent import put_recent
from bkit.exchange.ccxt_exchange import CcxtExchange, ExchangeOrder
from bkit.exchange.errors import (
    DefinitiveExchangeError,
    ExchangeError,
    OrderNotFoundError,
)

MARGIN_MODES = ("isolated", "cross")
#: Client order id prefixes Binance gives the orders that close a position by liquidation
#: (and by auto-deleveraging).
LIQUIDATION_PREFIXES = ("autoclose-", "adl_autoclose")
#: Orders a broker remembers (stops it placed, final orders it looked up), most recent kept:
#: memory only saves requests (a forgotten stop is asked on both endpoints, a forgotten final
#: order looked up again), so a worker that trades for months keeps a bounded amount of it.
REMEMBERED_ORDERS = 10_000
#: Binance codes ccxt raises as a plain ExchangeError when the URL is not Binance's.
_CODE_KINDS = {-2019: "insufficient_funds", -2018: "insufficient_funds",
               -2022: "invalid_order", -2021: "invalid_order", -4120: "invalid_order",
               -4164: "invalid_order", -1111: "invalid_order", -4061: "invalid_order",
               -1106: "bad_request"}
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')

#: What `ensure_setup` already did, per exchange object: (symbol, leverage, mode, hedge).
_setup_done: weakref.WeakKeyDictionary[CcxtExchange, set[tuple[Any, ...]]] = \
    weakref.WeakKeyDictionary()
_setup_lock = threading.Lock()


def _code(error: ExchangeError) -> int | None:
    match = _CODE.search(error.message)
    return int(match.group(1)) if match else None


def _already(error: ExchangeError) -> bool:
    """Binance's "nothing to change" answers (-4046 margin type, -4059 position side)."""
    return error.ccxt_error == "MarginModeAlreadySet" or _code(error) in (-4046, -4059) or \
        "no need to change" in error.message.lower()


@dataclass(frozen=True, slots=True)
class FuturesPosition:
    """One open position as the venue reports it (`fetch_positions`)."""

    symbol: str
    side: str  # "long" | "short"
    contracts: float
    entry_price: float
    liquidation_price: float | None
    unrealised_pnl: float
    margin_mode: str | None  # "isolated" | "cross"
    leverage: float | None
    contract_size: float = 1.0
    margin: float | None = None  # collateral (isolated: the position's wallet + uPnL)


class FuturesBroker:
    """Orders, stops, positions, funding and liquidations on one ccxt futures venue."""

    def __init__(self, exchange: CcxtExchange, *, leverage: int = 1,
                 margin_mode: str = "isolated", hedge: bool = False) -> None:
        if isinstance(leverage, bool) or not isinstance(leverage, int) or not \
                1 <= leverage <= 125:
            raise ValueError(f"leverage must be an integer from 1 to 125, got {leverage!r}")
        if margin_mode not in MARGIN_MODES:
            raise ValueError(f"margin_mode must be one of {', '.join(MARGIN_MODES)}, "
                             f"got {margin_mode!r}")
        self.exchange = exchange
        self.leverage = leverage
        self.margin_mode = margin_mode
        self.hedge = hedge
        self.remembered = REMEMBERED_ORDERS
        #: (symbol, client id) of the stops placed here (the value is unused)
        self._stop_ids: OrderedDict[tuple[str, str], str] = OrderedDict()
        #: (symbol, exchange order id) → client id of the final orders looked up here
        self._order_clients: OrderedDict[tuple[str, str], str] = OrderedDict()

    # plumbing ---------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        """`client.<method>(*args)`, signed, through the exchange's error translation, with
        the kinds Binance's codes deserve (see the module docstring)."""
        client = self.exchange._private_client(method)
        try:
            return self.exchange._call(method, lambda: getattr(client, method)(*args), client)
        except DefinitiveExchangeError as error:
            kind = _CODE_KINDS.get(_code(error) or 0)
            if error.kind == "exchange_error" and kind is not None:
                raise DefinitiveExchangeError(error.message, kind=kind,
                                              exchange_name=error.exchange_name,
                                              operation=error.operation,
                                              ccxt_error=error.ccxt_error) from error
            raise

    def _market(self, symbol: str) -> dict[str, Any]:
        market = self.exchange._market(symbol)
        if market.get("spot") or not (market.get("swap") or market.get("future")):
            raise DefinitiveExchangeError(
                f"{self.exchange.exchange_name}: {symbol} is not a futures market (use a "
                f"symbol like {base_of(symbol)}/{quote_of(symbol)}:{quote_of(symbol)})",
                kind="bad_symbol", exchange_name=self.exchange.exchange_name,
                operation="market")
        if market.get("inverse"):
            raise DefinitiveExchangeError(
                f"{self.exchange.exchange_name}: {symbol} is an inverse market; only linear "
                f"(USDT-margined) futures are supported", kind="not_supported",
                exchange_name=self.exchange.exchange_name, operation="market")
        return market

    def contract_size(self, symbol: str) -> float:
        return float(self._market(symbol).get("contractSize") or 1.0)

    def _position_side(self, side: str, closing: bool) -> str:
        """Hedge mode: the position an order acts on (buy opens LONG, closes SHORT)."""
        opens_long = side == "buy"
        return ("SHORT" if opens_long else "LONG") if closing else (
            "LONG" if opens_long else "SHORT")

    def _params(self, side: str, client_order_id: str | None, closing: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": client_order_id} if client_order_id else {}
        if self.hedge:
            params["positionSide"] = self._position_side(side, closing)
        elif closing:
            params["reduceOnly"] = True
        return params

    @staticmethod
    def _check_side(side: str) -> None:
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")

    # setup ------------------------------------------------------------------------------------
    def ensure_setup(self, symbol: str) -> bool:
        """Set the position mode (hedge or one-way), the margin mode and the leverage of
        `symbol` on the venue, once per symbol per exchange object in this process. True if
        requests were made now, False if it had been done. "Already so" is success; any other
        refusal (e.g. -4048: a position is open in the other margin mode) raises."""
        self._market(symbol)
        key = (symbol, self.leverage, self.margin_mode, self.hedge)
        with _setup_lock:
            done = _setup_done.setdefault(self.exchange, set())
            if key in done:
                return False
        mode_key = ("<position mode>", self.hedge)
        if mode_key not in done:
            try:
                self._call("set_position_mode", self.hedge, symbol)
            except DefinitiveExchangeError as error:
                if not _already(error):
                    raise
            done.add(mode_key)
        try:
            self._call("set_margin_mode", self.margin_mode, symbol)
        except DefinitiveExchangeError as error:
            if not _already(error):
                raise
        self._call("set_leverage", self.leverage, symbol)
        with _setup_lock:
            done.add(key)
        return True

    # sizing and rules -------------------------------------------------------------------------
    def plan_open(self, symbol: str, side: str, cost: float, price: float) -> OrderPlan:
        """Contracts for a notional of `cost` quote units at `price`, floored to the step and
        checked against the minimum amount and notional."""
        try:
            size = self.contract_size(symbol)
            limits = self.exchange.market_limits(symbol)
            amount = contracts_for_cost(cost, price, size, limits.amount_step)
        except (DefinitiveExchangeError, ValueError) as exc:
            return OrderPlan(None, f"{symbol}: cannot size an order of {cost} at {price}: {exc}")
        if amount <= 0:
            return OrderPlan(None, f"{symbol}: {cost} {quote_of(symbol)} at {price} is less "
                                   f"than one contract step {limits.amount_step}")
        if limits.min_amount is not None and amount < limits.min_amount:
            return OrderPlan(None, f"{symbol}: amount {amount} contracts below the minimum "
                                   f"{limits.min_amount}")
        if limits.min_cost is not None and amount * size * price < limits.min_cost - 1e-9:
            return OrderPlan(None, f"{symbol}: notional {amount * size * price:.8g} below the "
                                   f"minimum {limits.min_cost}")
        return OrderPlan(amount)

    def rules(self, symbol: str) -> MarketRules:
        """Step and minimum amount in contracts. No minimum notional: every exit is
        reduce-only, which Binance exempts from it (entries are checked in `plan_open`)."""
        self._market(symbol)
        limits = self.exchange.market_limits(symbol)
        return MarketRules(base_of(symbol), quote_of(symbol), limits.amount_step,
                           limits.min_amount, None)

    def maintenance_margin_rate(self, symbol: str, notional: float = 0.0) -> float:
        """The maintenance margin rate of the leverage bracket holding `notional`."""
        tiers = self._call("fetch_market_leverage_tiers", symbol)
        chosen = None
        for tier in tiers:
            low, high = _number(tier.get("minNotional")) or 0.0, _number(tier.get("maxNotional"))
            if chosen is None or (low <= notional and (high is None or notional < high)):
                chosen = tier
        rate = _number((chosen or {}).get("maintenanceMarginRate"))
        if rate is None:
            raise DefinitiveExchangeError(
                f"{self.exchange.exchange_name}: no maintenance margin rate for {symbol}",
                kind="not_supported", exchange_name=self.exchange.exchange_name,
                operation="fetch_leverage_tiers")
        return rate

    def liquidation_price(self, symbol: str, position: str, entry: float,
                          amount: float = 1.0) -> float:
        """The isolated liquidation price of a new `position` at `entry` with this broker's
        leverage (`bkit.core.margin.liquidation_price`, the venue's maintenance rate)."""
        size = self.contract_size(symbol)
        rate = self.maintenance_margin_rate(symbol, amount * size * entry)
        return liquidation_price(position, entry, self.leverage, rate, contracts=amount,
                                 contract_size=size)

    def stop_problem(self, symbol: str, position: str, entry: float, stop: float,
                     amount: float = 1.0) -> str | None:
        """SPEC §10 at entry: why an SL at `stop` is refused (beyond liquidation), or None."""
        size = self.contract_size(symbol)
        rate = self.maintenance_margin_rate(symbol, amount * size * entry)
        return stop_beyond_liquidation(position, entry, stop, self.leverage, rate)

    # orders -----------------------------------------------------------------------------------
    def _create(self, symbol: str, side: str, amount: float, client_order_id: str,
                params: dict[str, Any]) -> VenueOrder:
        quantity = float(self.exchange.format_quantity(symbol, amount))
        order = self._call("create_order",
            symbol, "market", side, quantity, None, params)
        return venue_order(ExchangeOrder.from_ccxt(order), client_order_id)

    def place(self, symbol: str, side: str, amount: float, price: float,
              client_order_id: str, *, kind: str = "open") -> VenueOrder:
        """A market order of `amount` contracts. `kind="open"` opens (buy: long, sell: short;
        `ensure_setup` first); `kind="close"` reduces: reduce-only, or in hedge mode the
        positionSide of the position it closes. `price` is not used (market orders)."""
        self._check_side(side)
        if kind not in ("open", "close"):
            raise ValueError(f"kind must be 'open' or 'close', got {kind!r}")
        self._market(symbol)
        if kind == "open":
            self.ensure_setup(symbol)
        return self._create(symbol, side, amount, client_order_id,
                            self._params(side, client_order_id, closing=kind == "close"))

    def supports_stops(self, symbol: str) -> bool:
        """Whether the venue lists STOP_MARKET for `symbol`."""
        try:
            info = self._market(symbol).get("info") or {}
        except ExchangeError:
            return False
        types = {str(t).upper() for t in info.get("orderTypes") or []}
        return not types or "STOP_MARKET" in types

    def place_stop(self, symbol: str, side: str, amount: float, stop_price: float,
                   *args: Any, client_order_id: str | None = None) -> VenueOrder:
        """A reduce-only STOP_MARKET of `amount` contracts triggering at `stop_price`
        (`side` is the order's: sell protects a long). Called as
        `place_stop(symbol, side, amount, stop_price, client_order_id)` or, as spot
        stop-limit brokers are, `(…, stop_price, limit_price, client_order_id)`: a
        stop-market has no limit, it is ignored."""
        if client_order_id is None:
            if not args:
                raise TypeError("place_stop needs a client_order_id")
            client_order_id = str(args[-1])
        self._check_side(side)
        self._market(symbol)
        params = self._params(side, client_order_id, closing=True)
        params["stopLossPrice"] = float(self.exchange.format_price(symbol, stop_price))
        put_recent(self._stop_ids, (symbol, client_order_id), "", self.remembered)
        return self._create(symbol, side, amount, client_order_id, params)

    def _kinds(self, symbol: str, client_order_id: str) -> tuple[bool, bool]:
        """The endpoints to ask, in order: (trigger first?) — a known stop id asks the
        trigger endpoint first."""
        return ((True, False) if (symbol, client_order_id) in self._stop_ids
                else (False, True))

    def cancel(self, symbol: str, client_order_id: str) -> None:
        """Cancel the open order or stop `client_order_id`; not found on either endpoint is
        not an error (it may have filled or triggered: `lookup` tells)."""
        self._market(symbol)
        for trigger in self._kinds(symbol, client_order_id):
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if trigger:
                params["trigger"] = True
            try:
                self._call("cancel_order", None, symbol, params)
                return
            except OrderNotFoundError:
                continue

    def _fetch(self, symbol: str, client_order_id: str, trigger: bool) -> VenueOrder | None:
        params: dict[str, Any] = {"clientOrderId": client_order_id}
        if trigger:
            params["trigger"] = True
        try:
            raw = self._call("fetch_order", None, symbol, params)
        except OrderNotFoundError:
            return None
        if not trigger:
            return venue_order(ExchangeOrder.from_ccxt(raw), client_order_id)
        return self._algo_evidence(symbol, client_order_id, raw)

    def _algo_evidence(self, symbol: str, client_order_id: str,
                       raw: Mapping[str, Any]) -> VenueOrder:
        """A conditional order as evidence: open/canceled/expired as they are; a triggered one
        (FINISHED/TRIGGERED) is the regular order it became, or unknown until that is
        readable (never "closed with nothing filled")."""
        info = raw.get("info") or {}
        order = venue_order(ExchangeOrder.from_ccxt(raw), client_order_id)
        algo_status = str(info.get("algoStatus") or "").upper()
        actual = info.get("actualOrderId")
        if algo_status not in ("FINISHED", "TRIGGERED", "TRIGGERING") and order.state != "filled":
            return order
        if actual not in (None, "", "0", 0):
            try:
                filled = self._call("fetch_order", str(actual), symbol)
                return venue_order(ExchangeOrder.from_ccxt(filled), client_order_id)
            except OrderNotFoundError:
                pass
        regular = self._fetch(symbol, client_order_id, trigger=False)
        if regular is not None:  # the triggered order under the stop's client id
            return regular
        return VenueOrder(client_order_id, order.exchange_order_id, None, order.amount, None,
                          None)

    def lookup(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        """The order or stop placed under `client_order_id` (a triggered stop: the order it
        became, with its fill), or None when neither endpoint knows it."""
        self._market(symbol)
        for trigger in self._kinds(symbol, client_order_id):
            found = self._fetch(symbol, client_order_id, trigger)
            if found is not None:
                return found
        return None

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        """Open regular orders, then open stops (conditional orders) on `symbol`."""
        self._market(symbol)
        plain = self._call("fetch_open_orders", symbol)
        stops = self._call("fetch_open_orders",
            symbol, None, None, {"trigger": True})
        return [venue_order(ExchangeOrder.from_ccxt(o), o.get("clientOrderId") or "")
                for o in [*plain, *stops]]

    def fills(self, symbol: str, exchange_order_id: str) -> list[Fill]:
        """The trades of one regular order (amounts in contracts, fees in USDT)."""
        return fills_from_trades(self.exchange.fetch_order_trades(symbol, exchange_order_id))

    # account ----------------------------------------------------------------------------------
    def positions(self, symbol: str | None = None) -> list[FuturesPosition]:
        """Open positions (all symbols, or `symbol`'s). `leverage` is the venue's when it
        says (fapi/v3/positionRisk does not), else notional / initial margin."""
        symbols = [symbol] if symbol else None
        rows = self._call("fetch_positions", symbols)
        out = []
        for row in rows:
            contracts = _number(row.get("contracts")) or 0.0
            if contracts <= 0 or row.get("side") not in ("long", "short"):
                continue
            leverage = _number(row.get("leverage"))
            if leverage is None:
                notional, initial = _number(row.get("notional")), _number(
                    row.get("initialMargin"))
                if notional and initial:
                    leverage = float(round(abs(notional) / initial))
            out.append(FuturesPosition(
                symbol=str(row.get("symbol")), side=str(row["side"]), contracts=contracts,
                entry_price=_number(row.get("entryPrice")) or 0.0,
                liquidation_price=_number(row.get("liquidationPrice")) or None,
                unrealised_pnl=_number(row.get("unrealizedPnl")) or 0.0,
                margin_mode=row.get("marginMode"), leverage=leverage,
                contract_size=_number(row.get("contractSize")) or 1.0,
                margin=_number(row.get("collateral"))))
        return out

    def _long_contracts(self) -> dict[str, float]:
        held: dict[str, float] = {}
        for pos in self.positions():
            if pos.side == "long":
                base = base_of(pos.symbol)
                held[base] = held.get(base, 0.0) + pos.contracts
        return held

    def free_balance(self, asset: str) -> float:
        """The margin asset (USDT): what is available for new margin. A base asset (BTC):
        the contracts of its long positions, so an exit's `min(position, free)` (SPEC §8)
        reads what the account holds; shorts are not counted."""
        wallet = self.exchange.fetch_balance()
        if asset in wallet:
            return wallet[asset][0]
        return self._long_contracts().get(asset, 0.0)

    def balances(self) -> dict[str, tuple[float, float]]:
        """The wallet's (free, total) per margin asset, plus each base asset's long contracts
        as (held, held) for a balance-minded reconciliation (positions: `positions()`)."""
        out = dict(self.exchange.fetch_balance())
        for base, held in self._long_contracts().items():
            out.setdefault(base, (held, held))
        return out

    def funding_fees(self, symbol: str, since_ms: int) -> list[tuple[int, float]]:
        """(timestamp ms, amount USDT) of every funding fee on `symbol` since `since_ms`:
        negative when paid, positive when received."""
        self._market(symbol)
        out: list[tuple[int, float]] = []
        cursor = since_ms
        while True:
            rows = self._call("fetch_funding_history",
                symbol, cursor, 1000)
            for row in rows:
                when, amount = row.get("timestamp"), _number(row.get("amount"))
                if when is not None and amount is not None and int(when) >= since_ms:
                    out.append((int(when), amount))
            if len(rows) < 1000:
                break
            newest = max(int(r.get("timestamp") or 0) for r in rows)
            if newest < cursor:
                break
            cursor = newest + 1
        return sorted(set(out))

    def liquidations(self, symbol: str, since_ms: int) -> list[VenueOrder]:
        """The orders that closed a position on `symbol` by liquidation since `since_ms`
        (client id `autoclose-…` / `adl_autoclose…`), oldest first. Read from the account's
        trades (one week from `since_ms`, Binance's window) and a lookup of each order that
        realised PnL, once per order per broker."""
        self._market(symbol)
        trades = self._call("fetch_my_trades", symbol, since_ms)
        order_ids: list[str] = []
        for trade in trades:
            order_id = trade.get("order")
            realised = _number((trade.get("info") or {}).get("realizedPnl"))
            if order_id and str(order_id) not in order_ids and realised != 0:
                order_ids.append(str(order_id))
        found = []
        for order_id in order_ids:
            known = self._order_clients.get((symbol, order_id))
            if known is not None and not known.startswith(LIQUIDATION_PREFIXES):
                continue
            raw = self._call("fetch_order", order_id, symbol)
            order = ExchangeOrder.from_ccxt(raw)
            client_id = order.client_order_id or ""
            if order.status in ("closed", "canceled", "expired", "rejected"):
                put_recent(self._order_clients, (symbol, order_id), client_id, self.remembered)
            if client_id.startswith(LIQUIDATION_PREFIXES):
                found.append(venue_order(order, client_id))
        return found


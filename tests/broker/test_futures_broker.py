"""`FuturesBroker` through the real ccxt `binanceusdm` client against the venue's USDⓈ-M
futures (SPEC §10): setup once, hedge mode, reduce-only, STOP_MARKET (ccxt 4.5: an algo
order), contract sizing, funding, liquidation, the liquidation price and the SL check."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal as D

import pytest

from bkit.broker.futures_broker import FuturesBroker, FuturesPosition
from bkit.core.margin import liquidation_price, stop_beyond_liquidation
from bkit.exchange.ccxt_exchange import CcxtExchange
from bkit.exchange.errors import DefinitiveExchangeError
from bkit.venue import Venue
from tests.broker.conftest import EIGHT_UTC, NOW_MS, SYMBOL

Make = Callable[..., FuturesBroker]
SETUP_PATHS = ("/fapi/v1/leverage", "/fapi/v1/marginType", "/fapi/v1/positionSide/dual")


def _setup_requests(fut: Venue) -> tuple[int, ...]:
    return tuple(fut.request_count(p) for p in SETUP_PATHS)


def _long(broker: FuturesBroker, amount: float = 0.1, cid: str = "e1") -> None:
    order = broker.place(SYMBOL, "buy", amount, 50000, cid)
    assert order.state == "filled" and order.filled_amount == amount


# setup ---------------------------------------------------------------------------------------
def test_leverage_and_margin_mode_set_once(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5, margin_mode="isolated")
    assert (fut.leverage(SYMBOL), fut.margin_type(SYMBOL)) == (20, "CROSSED")  # Binance's
    assert broker.ensure_setup(SYMBOL) is True
    assert (fut.leverage(SYMBOL), fut.margin_type(SYMBOL), fut.hedge_mode()) == (
        5, "ISOLATED", False)
    assert _setup_requests(fut) == (1, 1, 1)  # the one-way mode answered -4059: success
    assert broker.ensure_setup(SYMBOL) is False
    _long(broker)  # the first entry finds it done
    assert make_broker(leverage=5).ensure_setup(SYMBOL) is False  # same exchange, process
    assert _setup_requests(fut) == (1, 1, 1)
    [pos] = broker.positions()
    assert pos == FuturesPosition(SYMBOL, "long", 0.1, 50000.0, 40160.64257028, 0.0,
                                  "isolated", 5.0, 1.0, 1000.0)


def test_first_entry_sets_up_and_already_set_is_success(fut: Venue, exchange: CcxtExchange,
                                                        make_broker: Make) -> None:
    exchange.client.set_margin_mode("isolated", SYMBOL)  # done by hand before bkit
    broker = make_broker(leverage=3)
    _long(broker, 0.01)  # -4046 "No need to change margin type." is success
    assert (fut.leverage(SYMBOL), fut.margin_type(SYMBOL)) == (3, "ISOLATED")
    assert [p.margin for p in fut.positions()] == [D("500") / 3]


def test_margin_mode_that_cannot_change_is_a_definitive_error(
        fut: Venue, exchange: CcxtExchange, make_broker: Make) -> None:
    _long(make_broker(margin_mode="cross"), 0.01)
    with pytest.raises(DefinitiveExchangeError, match="-4048"):
        make_broker(margin_mode="isolated").ensure_setup(SYMBOL)


def test_a_spot_symbol_is_not_a_futures_market(make_broker: Make) -> None:
    with pytest.raises(DefinitiveExchangeError) as info:
        make_broker().place("BTC/USDT", "sell", 0.1, 50000, "x")
    assert info.value.kind == "bad_symbol"


# positions -----------------------------------------------------------------------------------
def test_hedge_mode_long_and_short(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=10, hedge=True)
    _long(broker)
    fut.set_price("BTC/USDT", 51000)
    short = broker.place(SYMBOL, "sell", 0.05, 51000, "e2")
    assert (short.state, short.filled_amount, short.average) == ("filled", 0.05, 51000.0)
    assert fut.hedge_mode() is True
    by_side = {p.side: p for p in broker.positions(SYMBOL)}
    assert {s: (p.contracts, p.entry_price, p.leverage, p.margin_mode)
            for s, p in by_side.items()} == {"long": (0.1, 50000.0, 10.0, "isolated"),
                                              "short": (0.05, 51000.0, 10.0, "isolated")}
    assert by_side["long"].unrealised_pnl == 100.0
    assert broker.free_balance("BTC") == 0.1  # a long's contracts; the short is not counted
    # closing the long: positionSide LONG, no reduceOnly (Binance refuses both, -1106)
    close = broker.place(SYMBOL, "sell", 0.1, 51000, "x1", kind="close")
    assert close.state == "filled"
    assert [(p.side, p.amount) for p in fut.positions()] == [("SHORT", D("-0.05"))]
    close = broker.place(SYMBOL, "buy", 0.05, 51000, "x2", kind="close")
    assert fut.positions() == [] and broker.positions() == []


def test_reduce_only_close_that_would_flip_is_refused(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    with pytest.raises(DefinitiveExchangeError, match="ReduceOnly Order is rejected") as info:
        broker.place(SYMBOL, "sell", 0.2, 50000, "x1", kind="close")
    assert info.value.kind == "invalid_order"  # -2022; ccxt says plain ExchangeError here
    with pytest.raises(DefinitiveExchangeError, match="ReduceOnly"):
        broker.place(SYMBOL, "buy", 0.1, 50000, "x2", kind="close")  # would increase a long...
    assert [p.amount for p in fut.positions()] == [D("0.1")]  # ...nothing moved
    assert broker.place(SYMBOL, "sell", 0.1, 50000, "x3", kind="close").state == "filled"
    assert fut.positions() == []


def test_hedge_close_larger_than_the_position_is_refused(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(hedge=True)
    _long(broker)
    with pytest.raises(DefinitiveExchangeError, match="ReduceOnly") as info:
        broker.place(SYMBOL, "sell", 0.2, 50000, "x1", kind="close")
    assert info.value.kind == "invalid_order"
    assert [(p.side, p.amount) for p in fut.positions()] == [("LONG", D("0.1"))]


def test_insufficient_margin_is_insufficient_funds(make_broker: Make) -> None:
    with pytest.raises(DefinitiveExchangeError) as info:
        make_broker(leverage=1).place(SYMBOL, "buy", 1, 50000, "big")  # 50,000 on 10,000
    assert info.value.kind == "insufficient_funds"  # -2019


def test_fills_balances_and_rules(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    order = broker.place(SYMBOL, "buy", 0.1, 50000, "e1")
    assert order.exchange_order_id is not None and order.cost == 5000.0
    [fill] = broker.fills(SYMBOL, order.exchange_order_id)
    assert (fill.amount, fill.price, fill.fee) == (0.1, 50000.0, fill.fee)
    assert fill.fee is not None and (fill.fee.cost, fill.fee.currency) == (2.0, "USDT")
    assert broker.free_balance("USDT") == 8998.0
    assert broker.balances() == {"USDT": (8998.0, 9998.0), "BTC": (0.1, 0.1)}
    rules = broker.rules(SYMBOL)
    assert (rules.base, rules.quote, rules.amount_step, rules.min_amount, rules.min_cost) == (
        "BTC", "USDT", 0.001, 0.001, None)  # reduce-only exits have no minimum notional


# stops ---------------------------------------------------------------------------------------
def test_stop_market_placed_found_listed_and_cancelled(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    stop = broker.place_stop(SYMBOL, "sell", 0.1, 49000, "sl-1")
    assert (stop.state, stop.client_order_id, stop.amount, stop.filled_amount) == (
        "open", "sl-1", 0.1, 0.0)
    [algo] = [o for o in fut.futures_orders() if o.algo]
    assert (algo.type, algo.reduce_only, algo.stop_price) == ("STOP_MARKET", True, D("49000"))
    for reader in (broker, make_broker(leverage=5)):  # a fresh broker asks both endpoints
        found = reader.lookup(SYMBOL, "sl-1")
        assert found is not None and (found.state, found.exchange_order_id) == (
            "open", stop.exchange_order_id)
        assert [(o.client_order_id, o.state) for o in reader.open_orders(SYMBOL)] == [
            ("sl-1", "open")]
    make_broker(leverage=5).cancel(SYMBOL, "sl-1")  # not known as a stop there: both tried
    gone = broker.lookup(SYMBOL, "sl-1")
    assert gone is not None and gone.state == "canceled"
    assert broker.open_orders(SYMBOL) == []
    broker.cancel(SYMBOL, "sl-1")  # gone already: not an error
    broker.cancel(SYMBOL, "never-placed")
    fut.set_price("BTC/USDT", 48000)
    assert [p.amount for p in fut.positions()] == [D("0.1")]


def test_a_broker_remembers_a_bounded_number_of_stops_and_still_finds_the_forgotten(
        fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    broker.remembered = 2
    _long(broker, 0.3)
    for cid in ("sl-a", "sl-b", "sl-c"):
        broker.place_stop(SYMBOL, "sell", 0.1, 49000, cid)
    assert list(broker._stop_ids) == [(SYMBOL, "sl-b"), (SYMBOL, "sl-c")]
    forgotten = broker.lookup(SYMBOL, "sl-a")  # asked on both endpoints, as a fresh broker
    assert forgotten is not None and (forgotten.state, forgotten.amount) == ("open", 0.1)
    broker.cancel(SYMBOL, "sl-a")
    assert broker.lookup(SYMBOL, "sl-a").state == "canceled"  # type: ignore[union-attr]
    assert sorted(o.client_order_id for o in broker.open_orders(SYMBOL)) == ["sl-b", "sl-c"]


def test_stop_that_triggers_is_found_filled(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    broker.place_stop(SYMBOL, "sell", 0.1, 49000, "sl-2")
    fut.set_price("BTC/USDT", 49100)
    assert broker.lookup(SYMBOL, "sl-2").state == "open"  # type: ignore[union-attr]
    fut.set_price("BTC/USDT", 48900)
    assert broker.positions() == []
    # the placing broker asks the trigger endpoint first and follows actualOrderId; a fresh
    # one finds the triggered market order under the same client id
    for reader in (broker, make_broker(leverage=5)):
        done = reader.lookup(SYMBOL, "sl-2")
        assert done is not None
        assert (done.state, done.client_order_id, done.filled_amount, done.average) == (
            "filled", "sl-2", 0.1, 48900.0)
        assert done.exchange_order_id is not None
        [fill] = reader.fills(SYMBOL, done.exchange_order_id)
        assert (fill.price, fill.amount) == (48900.0, 0.1)
    assert broker.open_orders(SYMBOL) == []


def test_stop_after_bkit_closed_expires_without_reversing(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    broker.place_stop(SYMBOL, "sell", 0.1, 49000, "sl-3")
    broker.place(SYMBOL, "sell", 0.1, 50000, "x1", kind="close")
    fut.set_price("BTC/USDT", 48000)
    assert fut.positions() == []
    late = broker.lookup(SYMBOL, "sl-3")
    assert late is not None and late.state == "expired" and late.filled_amount == 0.0


def test_hedge_mode_stop_carries_the_position_side(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5, hedge=True)
    broker.place(SYMBOL, "sell", 0.1, 50000, "e1")
    stop = broker.place_stop(SYMBOL, "buy", 0.1, 51000, "sl-s")  # protects the short
    assert stop.state == "open"
    [algo] = [o for o in fut.futures_orders() if o.algo]
    assert (algo.side, algo.position_side, algo.reduce_only) == ("BUY", "SHORT", False)
    fut.set_price("BTC/USDT", 51100)
    done = broker.lookup(SYMBOL, "sl-s")
    assert done is not None and (done.state, done.average) == ("filled", 51100.0)
    assert fut.positions() == []


def test_place_stop_also_takes_the_stop_limit_signature(fut: Venue, make_broker: Make) -> None:
    broker = make_broker()
    _long(broker, 0.01)
    assert broker.supports_stops(SYMBOL) is True
    stop = broker.place_stop(SYMBOL, "sell", 0.01, 45000, 44900, "sl-4")  # limit ignored
    assert stop.client_order_id == "sl-4" and stop.state == "open"


# sizing ------------------------------------------------------------------------------------
def test_contract_sizing_with_exact_numbers(make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    assert broker.contract_size(SYMBOL) == 1.0
    assert broker.plan_open(SYMBOL, "buy", 1000, 50000).amount == 0.02
    assert broker.plan_open(SYMBOL, "sell", 1234.5, 50000).amount == 0.024  # 0.02469 floored
    assert broker.plan_open(SYMBOL, "buy", 100, 50000).amount == 0.002
    small = broker.plan_open(SYMBOL, "buy", 99, 50000)  # 0.001 contracts: 50 USDT notional
    assert small.amount is None and "below the minimum 100" in (small.problem or "")
    dust = broker.plan_open(SYMBOL, "buy", 20, 50000)
    assert dust.amount is None and "less than one contract step" in (dust.problem or "")
    bad = broker.plan_open(SYMBOL, "buy", float("nan"), 50000)
    assert bad.amount is None and bad.problem


# funding, liquidation --------------------------------------------------------------------------
def test_funding_fees_read_at_eight(fut: Venue, make_broker: Make) -> None:
    fut.set_clock(EIGHT_UTC - 1000)
    broker = make_broker(leverage=5)
    _long(broker)
    fut.set_funding_rate(SYMBOL, "0.0001")
    assert broker.funding_fees(SYMBOL, EIGHT_UTC - 60_000) == []
    fut.set_clock(EIGHT_UTC)
    assert broker.funding_fees(SYMBOL, EIGHT_UTC - 60_000) == [(EIGHT_UTC, -0.5)]
    fut.set_funding_rate(SYMBOL, "-0.0002")
    fut.set_clock(EIGHT_UTC + 8 * 3600 * 1000)  # 16:00: a long is paid a negative rate
    assert broker.funding_fees(SYMBOL, EIGHT_UTC - 60_000) == [
        (EIGHT_UTC, -0.5), (EIGHT_UTC + 8 * 3600 * 1000, 1.0)]
    assert broker.funding_fees(SYMBOL, EIGHT_UTC + 1) == [(EIGHT_UTC + 8 * 3600 * 1000, 1.0)]


def test_liquidation_detected(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    broker.place_stop(SYMBOL, "sell", 0.1, 40000, "sl-5")  # beyond liquidation: never acts
    fut.set_price("BTC/USDT", 51000)
    broker.place(SYMBOL, "sell", 0.05, 51000, "x1", kind="close")  # a plain partial exit
    assert broker.liquidations(SYMBOL, NOW_MS) == []
    fut.set_price("BTC/USDT", 40100)
    assert broker.positions() == []
    [liq] = broker.liquidations(SYMBOL, NOW_MS)
    assert liq.client_order_id.startswith("autoclose-")
    assert (liq.state, liq.filled_amount, liq.average) == ("filled", 0.05, 40160.6)
    assert broker.liquidations(SYMBOL, NOW_MS + 1) == []
    assert broker.free_balance("BTC") == 0.0
    expired = broker.lookup(SYMBOL, "sl-5")  # Binance drops the symbol's reduce-only orders
    assert expired is not None and expired.state == "expired"


def test_liquidation_price_matches_the_venue(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    _long(broker)
    venue_price = fut.liquidation_price(SYMBOL)
    assert venue_price == D("40160.64257028")
    assert round(liquidation_price("long", 50000, 5, 0.004, contracts=0.1), 8) == float(
        venue_price)
    assert round(broker.liquidation_price(SYMBOL, "long", 50000, 0.1), 8) == float(venue_price)
    assert broker.positions()[0].liquidation_price == float(venue_price)


def test_short_liquidation_price_matches_the_venue(fut: Venue, make_broker: Make) -> None:
    fut.set_maintenance_margin_rate("0.01")
    broker = make_broker(leverage=10)
    broker.place(SYMBOL, "sell", 0.2, 50000, "e1")
    venue_price = fut.liquidation_price(SYMBOL)
    assert venue_price is not None
    assert broker.maintenance_margin_rate(SYMBOL) == 0.01
    ours = broker.liquidation_price(SYMBOL, "short", 50000, 0.2)
    assert round(ours, 8) == float(venue_price) == round(55000 / 1.01, 8)
    fut.set_price("BTC/USDT", 54400)
    assert len(broker.positions()) == 1
    fut.set_price("BTC/USDT", 54500)
    assert broker.positions() == []
    [liq] = broker.liquidations(SYMBOL, NOW_MS)
    assert (liq.filled_amount, liq.average) == (0.2, 54455.4)


def test_stop_beyond_liquidation_refused(fut: Venue, make_broker: Make) -> None:
    broker = make_broker(leverage=5)
    reason = broker.stop_problem(SYMBOL, "long", 50000, 40000)  # liquidation 40160.64
    assert reason is not None and "beyond the liquidation price 40160.64257" in reason
    assert reason == stop_beyond_liquidation("long", 50000, 40000, 5, 0.004)
    assert broker.stop_problem(SYMBOL, "long", 50000, 45000) is None
    assert broker.stop_problem(SYMBOL, "short", 50000, 60000) is not None  # 59760.96
    assert broker.stop_problem(SYMBOL, "short", 50000, 55000) is None
    assert make_broker(leverage=1).stop_problem(SYMBOL, "long", 50000, 1000) is None


def test_hedge_stop_after_bkit_closed_expires(fut: Venue, make_broker: Make) -> None:
    """In hedge mode a SELL of the LONG side only closes it: a stop that fires after bkit
    closed the position expires instead of opening anything."""
    broker = make_broker(hedge=True)
    _long(broker)
    broker.place_stop(SYMBOL, "sell", 0.1, 49000, "sl-h")
    broker.place(SYMBOL, "sell", 0.1, 50000, "x1", kind="close")
    fut.set_price("BTC/USDT", 48000)
    assert fut.positions() == []
    late = broker.lookup(SYMBOL, "sl-h")
    assert late is not None and late.state == "expired"


def test_triggered_stop_whose_fill_is_not_readable_yet_is_unknown(
        fut: Venue, make_broker: Make) -> None:
    """ccxt reads a FINISHED algo order as `closed` with `filled` 0: that is no evidence of
    an empty fill. Until the order it became can be read, the stop's outcome is unknown."""
    broker = make_broker()
    _long(broker)
    broker.place_stop(SYMBOL, "sell", 0.1, 49000, "sl-6")
    fut.set_lookup_lag(60)  # GET fapi/v1/order answers "does not exist" for a minute
    fut.set_price("BTC/USDT", 48900)
    seen = broker.lookup(SYMBOL, "sl-6")
    assert seen is not None and (seen.state, seen.filled) == ("unknown", None)
    fut.set_lookup_lag(0)
    done = broker.lookup(SYMBOL, "sl-6")
    assert done is not None and (done.state, done.filled_amount) == ("filled", 0.1)

"""Protection on the exchange (SPEC §10, issue 12 A) against the venue model through the real
ccxt client: once an entry fills, a stop-loss-limit rests on the venue at the SL; it protects
the position while bkit is down, its fill is recorded as the close (reason `stop_loss`, at the
real fill price), bkit's own exits cancel it first, and a stop that fills in the same minute
as an exit is never followed by a second sell. Every test ends with the venue's balances
equal to the initial ones plus every fill bkit recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from bkit.core.registry import set_config
from bkit.live import Live
from bkit.orders import RETRYABLE
from bkit.venue import VenueFault
from tests.integration.test_money_path import (  # noqa: F401 - shared fixtures and helpers
    EXCHANGE,
    ORDER,
    STRATEGY,
    SYMBOL,
    Money,
    events,
    intents,
    money,
    open_long,
    signal,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def protected(money: Money) -> Iterator[Money]:  # noqa: F811 - the imported fixture
    set_config(CC_EXCHANGE_STOP=True)
    yield money


def resting_stops(m: Money) -> list[Any]:
    return [o for o in m.venue.open_orders(SYMBOL)
            if o.client_order_id in {i.client_order_id for i in intents("stop")}]


def settle(m: Money, **kw: Any) -> None:
    """Run the orders worker (every intent it still acts on, resting stops included, looked
    at twice) until nothing but a resting stop is left to do."""
    for _ in range(2):
        for intent in intents():
            if intent.status in RETRYABLE and intent.id is not None:
                m.step(intent.id)
    m.drive(until=lambda: all(i.status not in ("pending", "unknown") and
                              (i.status != "open" or i.kind == "stop") for i in intents()),
            **kw)


def open_protected(m: Money) -> None:
    m.tick(0)
    settle(m)
    row = signal()
    assert row.state == "opened" and (row.extra or {}).get("protection") == "open"
    [stop] = resting_stops(m)
    assert stop.status == "NEW" and stop.type == "STOP_LOSS_LIMIT"
    assert Decimal(stop.stop_price) == Decimal("49500")
    assert Decimal(stop.price) == Decimal("49252.50")  # 0.5 % below the stop
    assert stop.quantity == Decimal("0.00999")  # what the account holds
    assert m.venue.balances()["BTC"] == (Decimal("0"), Decimal("0.00999"))  # locked


def test_entry_fill_puts_a_stop_on_the_venue(protected: Money) -> None:
    open_protected(protected)
    (stop,) = intents("stop")
    assert stop.status == "open" and stop.side == "sell" and stop.price == 49_500.0


def test_stop_fills_while_bkit_is_down_and_is_found_at_restart(protected: Money) -> None:
    open_protected(protected)
    # every bkit process is gone; the market falls through the stop meanwhile
    protected.venue.set_price(SYMBOL, 49_400)
    assert resting_stops(protected) == []  # the venue filled it
    # bkit starts again: the stop is looked up and recorded as the close
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "stop_loss")
    (stop,) = intents("stop")
    assert stop.status == "filled" and stop.filled_amount == pytest.approx(0.00999)
    fill = stop.fill_price
    assert fill is not None and 49_252.5 <= fill <= 49_500.0  # the stop ± its limit offset
    # the signal closes at exactly its SL (§5 PnL); the venue's real fill is beside it
    assert row.price_close == 49_500.0 and row.fill_price_close == pytest.approx(fill)
    realised = 0.00999 * fill * 0.999 - 500.0  # the sell's fee is charged in USDT
    assert row.realised_pnl_cost == pytest.approx(realised, abs=1e-6)
    assert intents("close") == []  # no second exit
    assert protected.venue.balance("BTC") == 0


def test_a_bkit_exit_cancels_the_stop_first(protected: Money) -> None:
    open_protected(protected)
    protected.venue.set_price(SYMBOL, 50_200)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    protected.tick(1)
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "closed")
    (stop,) = intents("stop")
    assert stop.status == "canceled" and not stop.filled_amount
    (exit_,) = intents("close")
    assert exit_.status == "filled" and exit_.amount == pytest.approx(0.00999)
    sells = [o for o in protected.venue.orders() if o.side == "SELL" and o.executed_qty]
    assert len(sells) == 1 and protected.venue.balance("BTC") == 0


def test_stop_and_exit_in_the_same_minute_sell_once(protected: Money) -> None:
    open_protected(protected)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    protected.tick(1)  # the exit intent is written …
    protected.venue.set_price(SYMBOL, 49_450)  # … and the stop fills before it is sent
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "stop_loss")
    (exit_,) = intents("close")
    assert exit_.status == "canceled" and "superseded" in (exit_.last_error or "")
    sells = [o for o in protected.venue.orders() if o.side == "SELL" and o.executed_qty]
    assert len(sells) == 1  # the stop: never a second sell
    assert protected.venue.balance("BTC") == 0


def test_a_refused_stop_leaves_the_tick_watching_and_is_retried(protected: Money) -> None:
    protected.tick(0)
    (entry,) = intents("open")
    protected.step(entry.id)  # type: ignore[arg-type]
    protected.venue.fail_next("POST " + ORDER,
                              VenueFault.error(400, -1013, "Filter failure: PRICE_FILTER"))
    (stop,) = intents("stop")
    assert protected.step(stop.id) == "stop_refused"  # type: ignore[arg-type]
    row = signal()
    assert row.state == "opened" and (row.extra or {}).get("protection") == "refused"
    assert [e for e in events("error") if "protective stop" in e.message]
    settle(protected, pause=0.1)  # the retry goes out
    assert len(resting_stops(protected)) == 1
    assert (signal().extra or {}).get("protection") == "open"
    # the tick still watches: a stop-loss by the VWAP exits through the cancel-first path
    protected.candles(49_000.0, range(0, 6))
    protected.venue.set_price(SYMBOL, 49_600)  # the venue's stop has not triggered
    protected.tick(5)
    settle(protected)
    row = signal()
    assert (row.state, row.close_reason) == ("closed", "stop_loss")
    assert intents("stop")[0].status == "canceled"
    assert protected.venue.balance("BTC") == 0

"""Limit entries: the order rests on the exchange (intent `open`, signal still `opening`,
ticks decide nothing), is polled until filled, or is cancelled and rolled back when it rests
past the entry timeout. Exits stay market orders."""

from __future__ import annotations

import pytest

from bkit.testing import FakeExchange
from tests.integration.conftest import Runtime, wait_until
from tests.integration.test_orders import (
    START,
    _filled,
    _intents,
    _open_intent,
    _signal,
    fake,  # noqa: F401 - fixture
    orders_runtime,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.integration
SYMBOL = "XRP/ETH"


@pytest.fixture
def limit_runtime(orders_runtime: Runtime, fake: FakeExchange,  # noqa: F811
                  monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("ORDERS_ENTRY_TYPE", "limit")
    orders_runtime.env["ORDERS_ENTRY_TYPE"] = "limit"
    import importlib
    import sys

    from bkit.broker import Broker
    from bkit.core.registry import REGISTRY

    Broker.clear()
    REGISTRY.exchanges.pop("fakebin", None)
    REGISTRY.strategies.pop("ord-long", None)
    sys.modules.pop("tests.integration.strategies_orders", None)
    importlib.import_module("tests.integration.strategies_orders")
    fake.set_last_price(SYMBOL, "0.01")  # far above the entry: a buy limit rests
    return orders_runtime


def test_a_resting_limit_entry_is_polled_until_filled(limit_runtime: Runtime,
                                                      fake: FakeExchange) -> None:  # noqa: F811
    limit_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    wait_until(lambda: _intents("open")[0].status == "open", 20, message="resting order")
    (order,) = fake.orders_for(intent.client_order_id)
    assert order.type == "LIMIT" and order.is_open
    assert float(order.price) == pytest.approx(intent.price, abs=1e-8)  # one tick size
    assert _signal().state == "opening"
    from datetime import timedelta

    from bkit.live import Live

    waiting = Live.tick(SYMBOL, "ord-long", "fakebin", START + timedelta(minutes=1))
    assert waiting is not None and waiting.action == "idle" and waiting.signal is not None
    fake.fill_order(intent.client_order_id)
    wait_until(lambda: _filled(intent.id), 30, message="fill picked up by polling")
    assert _signal().state == "opened"
    assert len(fake.orders_for(intent.client_order_id)) == 1


def test_a_limit_entry_resting_past_the_timeout_is_cancelled_and_rolled_back(
        limit_runtime: Runtime, fake: FakeExchange) -> None:  # noqa: F811
    limit_runtime.env["BKIT_ORDER_ENTRY_TIMEOUT_SECONDS"] = "3"
    limit_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    # the intent ends with the order's own final status: cancelled, nothing filled
    wait_until(lambda: _intents("open")[0].status == "canceled", 40,
               message="cancelled after the entry timeout")
    (order,) = fake.orders_for(intent.client_order_id)
    assert order.status == "CANCELED"
    dropped = _signal()
    assert dropped.state == "cancelled" and dropped.cancel_reason == "rejected"
    assert not _intents("open")[0].filled_amount


def test_a_partly_filled_limit_entry_opens_with_what_filled_and_the_exit_sells_that(
        limit_runtime: Runtime, fake: FakeExchange) -> None:  # noqa: F811
    from datetime import timedelta
    from decimal import Decimal

    from bkit.live import Live
    from bkit.testing import DEFAULT_MARKETS

    limit_runtime.env["BKIT_ORDER_ENTRY_TIMEOUT_SECONDS"] = "3"
    limit_runtime.start_worker("-Q", "orders", concurrency=2)
    intent = _open_intent(fake)
    wait_until(lambda: _intents("open")[0].status == "open", 20, message="resting order")
    (order,) = fake.orders_for(intent.client_order_id)
    step = Decimal(next(m for m in DEFAULT_MARKETS if m.symbol == SYMBOL).step_size)
    part = (order.quantity * Decimal("0.4") / step).to_integral_value() * step
    assert 0 < part < order.quantity
    fake.fill_order(intent.client_order_id, quantity=part)
    # The rest never fills: at the entry timeout the order is cancelled, and the position
    # opens with the part that did fill (a venue keeps what it executed).
    wait_until(lambda: _intents("open")[0].status == "canceled", 40,
               message="partial entry settled")
    (entry,) = _intents("open")
    assert entry.filled_amount == pytest.approx(float(part), abs=1e-12)
    (order,) = fake.orders_for(intent.client_order_id)
    assert order.status == "CANCELED" and order.executed_qty == part
    assert _signal().state == "opened"

    Live.close_position(SYMBOL, "ord-long", "fakebin")
    closing = Live.tick(SYMBOL, "ord-long", "fakebin", START + timedelta(minutes=2))
    assert closing is not None
    wait_until(lambda: _intents("close") and _filled(_intents("close")[0].id), 30,
               message="exit filled")
    (exit_intent,) = _intents("close")
    assert exit_intent.amount == pytest.approx(float(part), abs=1e-12)
    (exit_order,) = fake.orders_for(exit_intent.client_order_id)
    assert exit_order.side == "SELL" and exit_order.type == "MARKET"
    assert exit_order.quantity == part  # sells exactly what the entry bought, no more
    assert _signal().state == "closed"

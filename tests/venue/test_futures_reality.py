"""The futures venue against reality: ccxt's parse of the venue's answers has the keys and value
types of the captured Binance USDⓈ-M cases (tests/venue/fixtures/binance_futures_responses.json)
and the raw answers carry the captured keys."""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import pytest

from bkit.venue import Venue
from tests.venue.conftest import FIXTURES
from tests.venue.shapes import shape_diff
from tests.venue.test_futures import SYMBOL, _long

#: The captured parse is from an older ccxt: 4.5 renamed `marginType` (a duplicate of
#: `marginMode`) away and added `positionMargin`. Not the venue's doing.
CCXT_VERSION_KEYS = ["$[0]: missing key 'marginType'", "$[0]: extra key 'positionMargin'"]


@pytest.fixture(scope="module")
def cases() -> dict[str, Any]:
    data = json.loads((FIXTURES / "binance_futures_responses.json").read_text())
    return {name: rows[0] for name, rows in data["methods"].items()}


def test_fetch_positions_matches_captured(fut: Venue, fc: Any, cases: dict[str, Any]) -> None:
    reference = cases["fetchPositions"]
    _long(fc)
    positions = fc.fetch_positions()
    assert shape_diff(reference["parsedResponse"], positions) == CCXT_VERSION_KEYS
    assert set(positions[0]["info"]) == set(reference["httpResponse"][0])
    assert positions[0]["marginMode"] == "isolated"


def test_fetch_cross_position_matches_captured(fut: Venue, fc: Any,
                                               cases: dict[str, Any]) -> None:
    reference = cases["fetchPositions"]
    fc.create_order(SYMBOL, "market", "buy", 3)  # big enough for a cross liquidation price
    positions = fc.fetch_positions()
    assert shape_diff(reference["parsedResponse"], positions) == CCXT_VERSION_KEYS
    assert positions[0]["marginMode"] == "cross"
    # cross: the margin is the wallet less the other positions' margins (here none)
    # (3 x 50,000 - 9,940) / (3 x 0.996), the wallet 10,000 less the 60 USDT fee
    assert fut.wallet() == D("9940")
    assert fut.liquidation_price(SYMBOL) == D("46874.16331995")


def test_fetch_balance_matches_captured(fut: Venue, fc: Any, cases: dict[str, Any]) -> None:
    reference = cases["fetchBalance"]
    balance = fc.fetch_balance()
    assert shape_diff(reference["parsedResponse"], balance) == []
    assert set(balance["info"]) == set(reference["httpResponse"])
    assert set(balance["info"]["assets"][0]) == set(reference["httpResponse"]["assets"][0])


def test_fetch_my_trades_matches_captured(fut: Venue, fc: Any, cases: dict[str, Any]) -> None:
    reference = cases["fetchMyTrades"]
    fc.create_order(SYMBOL, "market", "buy", 0.01)
    trades = fc.fetch_my_trades(SYMBOL)
    assert shape_diff(reference["parsedResponse"], trades) == []
    assert set(trades[0]["info"]) == set(reference["httpResponse"][0])


def test_fetch_open_order_matches_captured(fut: Venue, fc: Any, cases: dict[str, Any]) -> None:
    reference = cases["fetchOpenOrder"]
    placed = fc.create_order(SYMBOL, "limit", "buy", 0.01, 40000)
    order = fc.fetch_open_order(placed["id"], SYMBOL)
    assert shape_diff(reference["parsedResponse"], order) == []
    assert set(order["info"]) == set(reference["httpResponse"])


def test_create_answer_has_the_captured_keys(fut: Venue, fc: Any,
                                             cases: dict[str, Any]) -> None:
    reference = cases["createOrders"]
    order = fc.create_order(SYMBOL, "limit", "sell", 0.01, 60000)
    assert set(order["info"]) == set(reference["httpResponse"][0])
    assert shape_diff(reference["parsedResponse"][0], order) == []

"""Fixtures for the broker tests: the venue's USDⓈ-M futures on a frozen clock, and a
`CcxtExchange("binanceusdm")` (the real ccxt client) aimed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bkit.broker.futures_broker import FuturesBroker
from bkit.exchange.ccxt_exchange import CcxtExchange
from bkit.venue import Venue
from bkit.venue.client import FUTURES_OPTIONS

SYMBOL = "BTC/USDT:USDT"
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
EIGHT_UTC = 1_700_035_200_000  # 2023-11-15T08:00:00Z
CREDENTIALS = {"BKIT_BINANCEUSDM_API_KEY": "venue-key", "BKIT_BINANCEUSDM_SECRET": "venue-secret"}


@pytest.fixture
def fut() -> Iterator[Venue]:
    """A 10,000 USDT futures wallet; clock frozen; BTC at 50,000."""
    with Venue(futures_balances={"USDT": 10000}) as v:
        v.set_clock(NOW_MS)
        v.set_price("BTC/USDT", 50000)
        yield v


def make_exchange(venue: Venue) -> CcxtExchange:
    return CcxtExchange("binanceusdm", api_base_url=venue.base_url,
                        options={**FUTURES_OPTIONS}, env=CREDENTIALS)


@pytest.fixture
def exchange(fut: Venue) -> CcxtExchange:
    return make_exchange(fut)


@pytest.fixture
def make_broker(exchange: CcxtExchange) -> Callable[..., FuturesBroker]:
    def build(**settings: object) -> FuturesBroker:
        return FuturesBroker(exchange, **settings)  # type: ignore[arg-type]
    return build

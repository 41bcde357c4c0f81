"""Fixtures for the venue tests: a running `Venue` on a frozen clock and a real ccxt client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest

from bkit.testing.fake_exchange import point_ccxt_at
from bkit.venue import DEFAULT_MARKETS, MarketSpec, Venue, futures_client

FIXTURES = Path(__file__).with_name("fixtures")
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z

#: Markets of the captured ccxt cases, with Binance's real filters of the time.
EXTRA_MARKETS = (
    MarketSpec("SOL/USDT", tick_size="0.01000000", step_size="0.00100000",
               min_qty="0.00100000", min_notional="5.00000000", max_qty="9000.00000000"),
    MarketSpec("LTC/USDT", tick_size="0.01000000", step_size="0.00100000",
               min_qty="0.00100000", min_notional="5.00000000", max_qty="9000.00000000"),
)
MARKETS = (*DEFAULT_MARKETS, *EXTRA_MARKETS)


def make_client(venue: Venue | str, timeout_ms: int = 10_000) -> Any:
    """The real ccxt binance client, spot only, pointed at `venue` (or a base URL), markets
    loaded."""
    client = ccxt.binance({"apiKey": "k", "secret": "s", "enableRateLimit": False,
                           "timeout": timeout_ms,
                           "options": {"fetchMarkets": ["spot"], "fetchCurrencies": False,
                                       "fetchMargins": False}})
    point_ccxt_at(client, venue if isinstance(venue, str) else venue.base_url)
    client.load_markets()
    return client


@pytest.fixture
def venue() -> Iterator[Venue]:
    """10,000 USDT, no BTC, base-asset fees of 0.1 %; clock frozen, BTC/USDT at 50,000."""
    with Venue(MARKETS, balances={"USDT": 10000, "BTC": 0}) as v:
        v.set_clock(NOW_MS)
        v.set_price("BTC/USDT", 50000)
        yield v


@pytest.fixture
def client(venue: Venue) -> Any:
    return make_client(venue)


@pytest.fixture(scope="session")
def captured() -> dict[str, list[dict[str, Any]]]:
    """The captured Binance cases (ccxt static tests), by ccxt method name."""
    data = json.loads((FIXTURES / "binance_spot_responses.json").read_text())
    return data["methods"]


@pytest.fixture
def fut() -> Iterator[Venue]:
    """A 10,000 USDT futures wallet; clock frozen; BTC at 50,000 (spot and futures)."""
    with Venue(futures_balances={"USDT": 10000}) as v:
        v.set_clock(NOW_MS)
        v.set_price("BTC/USDT", 50000)
        yield v


@pytest.fixture
def fc(fut: Venue) -> Any:
    client = futures_client(fut.base_url)
    client.load_markets()
    return client

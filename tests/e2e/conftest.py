"""Fixtures of the proof tests: the fake exchange with real candles on one market clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from bkit.testing import FakeExchange
from tests.integration.conftest import (  # noqa: F401 - shared fixtures
    REPO,
    clean_process_state,
    make_runtime,
    pg_url,
    redis_broker_url,
)
from tests.real_candles import UNITTEST_BTC_CSV, XRP_ETH_CSV, real_candles

SYMBOLS = ("XRP/ETH", "UNITTEST/BTC")


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    """The fake binance server serving both shipped samples; the 2017 series is shifted to
    start with the 2019 one so one replay clock drives both (prices and gaps untouched)."""
    xrp = real_candles(XRP_ETH_CSV)
    btc = real_candles(UNITTEST_BTC_CSV)
    shift = xrp[0].timestamp - btc[0].timestamp
    with FakeExchange() as server:
        server.load_candles("XRP/ETH", xrp)
        server.load_candles("UNITTEST/BTC", [replace(c, timestamp=c.timestamp + shift)
                                             for c in btc])
        yield server

"""Fixtures for the exchange tests: the fake binance server with real candles, a real
`ccxt.binance` client pointed at it, and real Redis / PostgreSQL when available."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from bkit.core.candles import Candle
from bkit.exchange import MARKETS_DIR, CcxtExchange
from bkit.testing import FakeExchange
from bkit.testing.tcp_proxy import TcpProxy, free_port
from tests.real_candles import UNITTEST_BTC_CSV, XRP_ETH_CSV, real_candles

EXCHANGE_NAME = "fake-binance"
API_KEY = "test-key-0123456789"
SECRET = "test-secret-0123456789"
CREDENTIALS = {"BKIT_FAKE_BINANCE_API_KEY": API_KEY, "BKIT_FAKE_BINANCE_SECRET": SECRET}
REDIS_URL = os.environ.get("BKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("BKIT_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def xrp_candles() -> list[Candle]:
    """XRP/ETH, 2,469 real 1m candles with 676 gaps."""
    return real_candles(XRP_ETH_CSV)


@pytest.fixture(scope="session")
def btc_candles() -> list[Candle]:
    """UNITTEST/BTC, 3,000 real 1m candles with 203 gaps."""
    return real_candles(UNITTEST_BTC_CSV)


@pytest.fixture
def fake(xrp_candles: list[Candle], btc_candles: list[Candle]) -> Iterator[FakeExchange]:
    with FakeExchange() as server:
        server.load_candles("XRP/ETH", xrp_candles)
        server.load_candles("UNITTEST/BTC", btc_candles)
        yield server


ExchangeFactory = Callable[..., CcxtExchange]


@pytest.fixture
def make_exchange(fake: FakeExchange) -> ExchangeFactory:
    """Build a real ccxt binance client on the fake server (offline markets, test keys);
    keyword arguments override the `CcxtExchange` settings."""

    def build(**overrides: object) -> CcxtExchange:
        settings: dict[str, Any] = {
            "exchange_name": EXCHANGE_NAME, "api_base_url": fake.base_url,
            "markets": MARKETS_DIR / "binance_markets.json", "timeout_ms": 2_000,
            "env": CREDENTIALS,
        }
        settings.update(overrides)
        return CcxtExchange("binance", **settings)

    return build


@pytest.fixture
def exchange(make_exchange: ExchangeFactory) -> CcxtExchange:
    return make_exchange()


@pytest.fixture
def credentials() -> dict[str, str]:
    """The test API key and secret, by environment variable name."""
    return dict(CREDENTIALS)


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening."""
    return free_port()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    parsed = urlsplit(REDIS_URL)
    if not _reachable(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set BKIT_TEST_REDIS_URL)")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of our own; only these keys are deleted afterwards (never FLUSHALL)."""
    import redis

    prefix = f"bkit-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def pg_engine() -> Iterator[sa.Engine]:
    """PostgreSQL in a schema of our own, dropped afterwards (the database is shared)."""
    url = sa.engine.make_url(POSTGRES_URL)
    if not _reachable(url.host or "127.0.0.1", url.port or 5432):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} (set BKIT_TEST_POSTGRES_URL)")
    schema = f"bkit_exchange_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = admin.execution_options(schema_translate_map={None: schema})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    target = urlsplit(redis_url).port or 6379
    proxy = TcpProxy(("127.0.0.1", target))
    proxy.start()
    yield proxy
    proxy.stop()

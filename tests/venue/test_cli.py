"""The runnable venue: `python -m bkit.venue` as a subprocess answers the real ccxt client."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bkit.venue.cli import build_parser, replay_clock
from tests.venue.conftest import make_client


@pytest.fixture
def served() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bkit.venue", "--port", "0", "--speed", "600",
         "--balance", "ETH=1", "--balance", "BTC=0.5", "--start", "2019-10-11T12:00:00"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr \
            else line
        yield line
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_subprocess_venue_answers_ccxt(served: str) -> None:
    client = make_client(served)
    assert {"XRP/ETH", "UNITTEST/BTC", "BTC/USDT"} <= set(client.markets)
    rows = client.fetch_ohlcv("XRP/ETH", "1m", limit=5)
    assert 1 <= len(rows) <= 5 and rows[-1][0] >= 1570795200000 - 600_000
    assert client.fetch_balance()["ETH"]["free"] == 1.0
    order = client.create_order("XRP/ETH", "market", "buy", 100)
    assert order["status"] == "closed" and order["fee"]["currency"] == "XRP"
    balance = client.fetch_balance()
    assert balance["XRP"]["total"] == 99.9
    assert balance["ETH"]["total"] < 1.0


def test_replay_clock_runs_at_speed() -> None:
    now = [100.0]
    clock = replay_clock(1_000_000, 60, now=lambda: now[0])
    assert clock() == 1_000_000
    now[0] += 2.5
    assert clock() == 1_000_000 + 150_000


def test_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.port, args.host, args.fee_rule, args.speed) == (8765, "127.0.0.1", "base", 60)

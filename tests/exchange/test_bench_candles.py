"""The candle benchmark runs (small) and meets its own target, so it cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "candles.py"


@pytest.mark.integration
def test_bench_makes_one_upstream_request_per_symbol_and_minute(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_candles", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_candles", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)

    summary = bench.main(["--symbols", "20", "--strategies", "5", "--minutes", "2",
                          "--threads", "8", "--redis-url", redis_url])

    assert summary["upstream_per_minute"] == 20
    assert summary["min_per_symbol_minute"] == summary["max_per_symbol_minute"] == 1
    assert summary["wrong"] == 0
    assert "upstream klines requests per minute: 20" in capsys.readouterr().out

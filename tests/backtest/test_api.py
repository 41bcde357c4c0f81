"""The Backtest API (SPEC §12): frames, bad input refused before anything runs, listeners,
an open trade staying open, background/cancel, reports and dump, the candle cache, the CLI
(in-process and through the Celery task) and the quickstart example."""

from __future__ import annotations

import argparse
import runpy
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bkit import (
    Backtest,
    UnknownNameError,
    add_exchange,
    add_frame,
    add_strategy,
    listen_done_backtest,
    listen_error,
    listen_signal_backtest,
    set_config,
)
from bkit.backtest import BacktestDataError, FrameError
from bkit.backtest.runner import clear_price_cache
from bkit.clock import ManualClock
from bkit.exchange.paper import add_paper_exchange, shipped_series
from tests.backtest import strategies

REPO = Path(__file__).resolve().parents[2]
START = datetime(2019, 10, 11, 0, 10, tzinfo=UTC)


@pytest.fixture
def paper() -> None:
    add_paper_exchange("csv", clock=ManualClock(START), series=shipped_series())
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4, CC_MIN_STOPLOSS_DISTANCE_PERCENT=0.4)
    add_strategy("long15", strategies.market_long, interval="15m")
    add_strategy("unruly", strategies.unruly, interval="1m")


def test_bad_input_is_refused_before_anything_runs(paper: None) -> None:
    add_frame("day", START, START + timedelta(days=1))
    with pytest.raises(UnknownNameError, match="no-frame"):
        Backtest.run("XRP/ETH", "long15", "csv", "no-frame")
    with pytest.raises(UnknownNameError, match="no-strategy"):
        Backtest.run("XRP/ETH", "no-strategy", "csv", "day")
    with pytest.raises(UnknownNameError, match="no-exchange"):
        Backtest.run("XRP/ETH", "long15", "no-exchange", "day")
    with pytest.raises(FrameError, match="must be before"):
        add_frame("backwards", START, START)
    add_frame("2030", datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    with pytest.raises(BacktestDataError, match="outside the candles"):
        Backtest.run("XRP/ETH", "long15", "csv", "2030")
    with pytest.raises(ValueError, match="symbol"):
        Backtest.run("bad symbol", "long15", "csv", "day")
    with pytest.raises(ValueError, match="no finished backtest"):
        Backtest.get_report("XRP/ETH", "long15", "csv", "day")


def test_a_strategy_that_raises_or_returns_garbage_is_an_error_and_the_run_goes_on(
        paper: None) -> None:
    errors: list[dict[str, Any]] = []
    listen_error(errors.append)
    add_frame("f", START + timedelta(minutes=2000), START + timedelta(minutes=2300))
    results = Backtest.run_all("XRP/ETH", "unruly", "csv", "f")
    messages = " ".join(e["message"] for e in errors)
    assert "strategy bug" in messages and "get_signal must return None" in messages
    assert "already used" in messages  # the fixed id, refused the second time
    assert all(e["backtest"] for e in errors)
    assert results[0].trades


def test_listeners_open_trade_at_the_end_and_reports(paper: None, tmp_path: Path) -> None:
    seen: list[Any] = []
    done: list[dict[str, Any]] = []
    listen_signal_backtest(seen.append)
    listen_done_backtest(done.append)
    add_frame("f", START, START + timedelta(minutes=181))
    transitions = list(Backtest.run("XRP/ETH", "long15", "csv", "f"))
    assert seen == transitions and transitions
    assert [d["frame_name"] for d in done] == ["f"]
    assert all(START <= t.created_at <= START + timedelta(minutes=181) for t in transitions)
    data = Backtest.get_data("XRP/ETH", "long15", "csv", "f")
    opened = sum(t.action == "opened" for t in transitions)
    assert data["total_closed"] == opened - (1 if data["open_state"] == "opened" else 0)
    last = transitions[-1]
    if last.action == "opened":  # still open at the end: reported open, never closed
        assert data["open_signal"].id == last.signal.id
    report = Backtest.get_report("XRP/ETH", "long15", "csv", "f")
    assert "Closed trades" in report and "Frame:" in report
    path = Backtest.dump("XRP/ETH", "long15", "csv", "f", path=tmp_path / "dump")
    assert "Closed trades" in path.read_text() and not list(path.parent.glob(".*.tmp"))
    assert path.with_suffix(".html").read_text().startswith("<!DOCTYPE html>")


def test_background_cancel_stops_new_signals(paper: None) -> None:
    gate = threading.Event()

    def slow(symbol: str, when: datetime, price: float) -> dict[str, Any] | None:
        gate.wait(5)
        return strategies.market_long(symbol, when, price)

    add_strategy("slow", slow, interval="15m")
    add_frame("f", START, START + timedelta(minutes=2000))
    done: list[dict[str, Any]] = []
    listen_done_backtest(done.append)
    cancel = Backtest.background("XRP/ETH", "slow", "csv", "f")
    cancel()
    gate.set()
    cancel.thread.join(30)  # type: ignore[attr-defined]
    assert done
    data = Backtest.get_data("XRP/ETH", "slow", "csv", "f")
    assert data["total_closed"] <= 1 and data["open_signal"] is None


def test_candles_are_cached_on_disk_a_second_run_makes_no_request(
        backtest_home: Path) -> None:
    series = shipped_series()["XRP/ETH"]
    calls: list[datetime] = []

    def get_candles(symbol: str, interval: str, since: datetime, limit: int) -> list[Any]:
        calls.append(since)
        start = int(since.timestamp() * 1000)
        return [c for c in series if c.timestamp >= start][:limit]

    add_exchange("counting", get_candles)
    add_strategy("long15", strategies.market_long, interval="15m")
    set_config(CC_MIN_TAKEPROFIT_DISTANCE_PERCENT=0.4, CC_MIN_STOPLOSS_DISTANCE_PERCENT=0.4)
    add_frame("f", START, START + timedelta(days=2))
    first = Backtest.run_all("XRP/ETH", "long15", "counting", "f")
    assert calls
    assert list((backtest_home / "backtest" / "candles" / "counting").rglob("*.csv"))
    calls.clear()
    clear_price_cache()
    second = Backtest.run_all("XRP/ETH", "long15", "counting", "f")
    assert calls == []
    assert [t.pnl_percentage for t in second[0].trades] == \
        [t.pnl_percentage for t in first[0].trades]


def _parser() -> argparse.ArgumentParser:
    from bkit.cli.backtest import add_backtest_commands

    parser = argparse.ArgumentParser(prog="bkit")
    add_backtest_commands(parser.add_subparsers(dest="command", required=True))
    return parser


STRATEGY_MODULE = "tests.backtest.cli_strategies"


def test_cli_backtest_in_process_ranks_and_writes_one_merged_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args([
        "backtest", "cli-long", "cli-short", "--module", STRATEGY_MODULE, "--symbols",
        "XRP/ETH", "UNITTEST/BTC", "--start", "2019-10-11T00:10", "--end",
        "2019-10-12T00:10", "--processes", "2", "--out", str(tmp_path), "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cli-long" in out and "cli-short" in out
    reports = list(tmp_path.rglob("report.md"))
    assert len(reports) == 1 and "Ranked by `sharpe_ratio`" in reports[0].read_text()
    assert reports[0].with_suffix(".html").exists()

    bad = _parser().parse_args(["backtest", "nope", "--module", STRATEGY_MODULE,
                                "--symbols", "XRP/ETH", "--start", "2019-10-12",
                                "--end", "2019-10-11", "--quiet"])
    assert bad.func(bad) == 2


def test_cli_backtest_on_workers_stores_results_once(
        backtest_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        celery_worker: Callable[..., str]) -> None:
    """The Celery task path on a real worker process (embedded SQLite + filesystem broker
    under the test's BKIT_HOME): each task writes its rows once, the CLI merges them."""
    from bkit.backtest.store import count_rows
    from bkit.store.engine import get_engine

    celery_worker(strategies=STRATEGY_MODULE)
    out = tmp_path / "out"
    args = _parser().parse_args([
        "backtest", "cli-long", "--module", STRATEGY_MODULE, "--symbols", "XRP/ETH",
        "UNITTEST/BTC", "--start", "2019-10-11T00:10", "--end", "2019-10-11T12:00",
        "--workers", "--out", str(out), "--quiet", "--timeout", "40"])
    assert args.func(args) == 0
    run_id = next(out.iterdir()).name
    assert count_rows(get_engine(), run_id) == 2
    report = out / run_id / "report.md"
    assert "Ranked by `sharpe_ratio`" in report.read_text() and "cli-long" in report.read_text()
    assert report.with_suffix(".html").read_text().startswith("<!DOCTYPE html>")


def test_cli_download_fills_the_cache(backtest_home: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["download", "csv", "XRP/ETH", "--module", STRATEGY_MODULE,
                                 "--start", "2019-10-11", "--end", "2019-10-12", "--quiet"])
    assert args.func(args) == 0
    assert "candles in the cache" in capsys.readouterr().out
    assert len(list((backtest_home / "backtest" / "candles" / "csv").rglob("*.csv"))) == 2


def test_quickstart_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # the registry is fresh: `my_strategy` must register again, even if another test of
    # this process imported it already
    monkeypatch.delitem(sys.modules, "my_strategy", raising=False)
    namespace = runpy.run_path(str(REPO / "examples" / "backtest_quickstart.py"))
    report = namespace["main"]()
    assert "Backtest my-momentum" in report

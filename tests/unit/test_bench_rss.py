"""The soak's RSS series (bench/rss.py): process trees sampled by pid, and the figures that
"worker memory stays flat" is judged on (start, 50 %, end, max, second-half growth)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench.rss import RssSeries, at_fraction, figures, report


def test_figures_judge_the_second_half_not_the_warm_up() -> None:
    times = [0.0, 10.0, 20.0, 30.0, 40.0]
    warm_then_flat = {0: 100.0, 1: 180.0, 2: 200.0, 3: 201.0, 4: 202.0}
    f = figures(times, warm_then_flat)
    assert f is not None
    assert (f.start, f.half, f.end, f.peak) == (100.0, 200.0, 202.0, 202.0)
    assert f.second_half_growth_pct == pytest.approx(1.0)
    leak = figures(times, {0: 100.0, 1: 125.0, 2: 150.0, 3: 175.0, 4: 200.0})
    assert leak is not None and leak.second_half_growth_pct == pytest.approx(100 / 3)


def test_half_time_is_the_sample_nearest_the_middle_of_a_process_own_span() -> None:
    times = [0.0, 30.0, 60.0, 90.0, 120.0]
    assert at_fraction(times, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0}, 0.5) == 3.0
    # A child that came up late (a replaced one) is judged over the samples it has.
    assert at_fraction(times, {2: 10.0, 3: 20.0, 4: 30.0}, 0.5) == 20.0
    assert at_fraction(times, {}, 0.5) is None


def test_a_tree_is_its_main_process_and_children_and_each_is_reported() -> None:
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "time.sleep(30)")
    main = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not psutil.Process(main.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        series = RssSeries()
        for elapsed in (0.0, 1.0, 2.0):
            series.sample(elapsed, [("w0", main.pid)])
    finally:
        main.kill()
        main.wait()
    roles = sorted(label.split()[1] for label in series.processes)
    assert roles == ["child", "main"]
    total = series.tree_total("w0", 2)
    assert total is not None and total == pytest.approx(
        sum(s[2] for s in series.processes.values()))
    text = report(series)
    assert "w0 main" in text and "w0 child" in text and "second half" in text


def test_a_gone_process_is_skipped_not_fatal() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    series = RssSeries()
    series.sample(0.0, [("w0", gone.pid)])
    assert series.processes == {} and series.total(0) is None
    assert "no samples" in report(series)

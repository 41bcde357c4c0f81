"""The one-line summary of the expired tick tasks a worker discards (bkit.expired_tasks)."""

from __future__ import annotations

import logging

import pytest

from bkit.expired_tasks import CELERY_REQUEST_LOGGER, ExpiredTaskSummary


def _discarding(name: str, suffix: str = "") -> logging.LogRecord:
    return logging.LogRecord(CELERY_REQUEST_LOGGER, logging.INFO, __file__, 1,
                             "Discarding revoked task: %s[%s]" + suffix, (name, "id-1"), None)


def test_bkit_discards_are_dropped_and_counted_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    summary = ExpiredTaskSummary(first_after_s=3600, every_s=3600)  # flushed by hand below
    try:
        kept = [summary.filter(_discarding(name)) for name in
                ["bkit.tick_batch"] * 40 + ["bkit.fanout_ticks"] * 2]
        assert not any(kept)
        with caplog.at_level(logging.INFO, logger="bkit.expired_tasks"):
            assert summary.flush() == 42
            assert summary.flush() == 0  # nothing new: no second line
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith("bkit: 42 expired task(s) discarded unrun")
        assert "bkit.fanout_ticks, bkit.tick_batch" in line and "after a pause" in line
    finally:
        if summary._timer is not None:
            summary._timer.cancel()


def test_other_lines_keep_celerys_own_wording() -> None:
    summary = ExpiredTaskSummary(first_after_s=3600)
    assert summary.filter(_discarding("someone_else.task"))
    assert summary.filter(_discarding("bkit.tick_batch", " (revoked by header: %s)"))
    other = logging.LogRecord(CELERY_REQUEST_LOGGER, logging.INFO, __file__, 1, "Task %s ok",
                              ("bkit.tick",), None)
    assert summary.filter(other)
    assert summary.flush() == 0


def test_the_first_summary_comes_soon_after_the_first_discard(
        caplog: pytest.LogCaptureFixture) -> None:
    summary = ExpiredTaskSummary(first_after_s=0.05, every_s=3600)
    with caplog.at_level(logging.INFO, logger="bkit.expired_tasks"):
        summary.filter(_discarding("bkit.tick_batch"))
        timer = summary._timer
        assert timer is not None
        timer.join(5)
    assert [r.getMessage()[:38] for r in caplog.records] == [
        "bkit: 1 expired task(s) discarded unru"]

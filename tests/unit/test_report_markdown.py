"""The Markdown live report: structure, row order and cap, cell formatting, N/A rendering."""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bkit.core.statistics import LiveStatistics, ReportRow
from bkit.report.markdown import (
    STATISTIC_LABELS,
    format_pnl,
    format_price,
    format_timestamp,
    render_markdown_report,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GENERATED = datetime(2024, 5, 2, 8, 30, 15, tzinfo=UTC)
HEADER = (
    "| Timestamp | Action | Symbol | Signal ID | Position | Open | Take Profit | Stop Loss "
    "| PNL | Close Reason |"
)

FULL_STATS = LiveStatistics(
    total_closed=12,
    win_count=7,
    loss_count=4,
    win_rate=58.333333,
    avg_pnl=0.126,
    total_pnl=1.5,
    std_dev=0.4,
    sharpe_ratio=0.31622,
    annualized_sharpe_ratio=2.71828,
    certainty_ratio=1.4,
    expected_yearly_returns=-12.3456,
    max_drawdown=0.75,
)
EMPTY_STATS = LiveStatistics(
    total_closed=0,
    win_count=0,
    loss_count=0,
    win_rate=None,
    avg_pnl=None,
    total_pnl=0.0,
    std_dev=None,
    sharpe_ratio=None,
    annualized_sharpe_ratio=None,
    certainty_ratio=None,
    expected_yearly_returns=None,
    max_drawdown=0.0,
)


def closed_row(minute: int, **changes: object) -> ReportRow:
    row = ReportRow(
        timestamp=T0 + timedelta(minutes=minute),
        action="closed",
        symbol="BTCUSDT",
        signal_id=f"sig-{minute}",
        position="long",
        price_open=50_000.0,
        price_take_profit=52_000.0,
        price_stop_loss=46_000.0,
        pnl_percentage=3.588415584,
        close_reason="take_profit",
    )
    return dataclasses.replace(row, **changes)


def split_cells(line: str) -> list[str]:
    """Cells of a Markdown table line, splitting on pipes not escaped with a backslash."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def event_lines(report: str) -> list[str]:
    lines = report.splitlines()
    start = lines.index(HEADER)
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append(line)
    return body


def stat_value(report: str, label: str) -> str:
    matches = [
        split_cells(line)[1] for line in report.splitlines() if line.startswith(f"| {label} |")
    ]
    assert len(matches) == 1, (label, matches)
    return matches[0]


def test_header_and_column_line() -> None:
    rows = [closed_row(0), closed_row(1), closed_row(2, action="opened", pnl_percentage=None)]
    report = render_markdown_report(
        "trend / binance / BTCUSDT", rows, FULL_STATS, generated_at=GENERATED
    )
    lines = report.splitlines()
    assert lines[0] == "# Live report: trend / binance / BTCUSDT"
    assert "- Generated at: 2024-05-02T08:30:15Z" in lines
    assert "- Total events: 3" in lines
    assert "- Closed signals: 12" in lines
    header_at = lines.index(HEADER)
    assert split_cells(lines[header_at + 1]) == ["---"] * 10
    assert len(event_lines(report)) == 3
    assert lines.index("## Statistics") > header_at


def test_rows_are_newest_first_whatever_the_input_order() -> None:
    rows = [closed_row(minute) for minute in range(20)]
    random.Random(7).shuffle(rows)
    report = render_markdown_report("t", rows, FULL_STATS, generated_at=GENERATED)
    ids = [split_cells(line)[3] for line in event_lines(report)]
    assert ids == [f"sig-{minute}" for minute in range(19, -1, -1)]


def test_equal_timestamps_show_the_later_input_row_first() -> None:
    rows = [closed_row(0, signal_id="first"), closed_row(0, signal_id="second")]
    report = render_markdown_report("t", rows, FULL_STATS, generated_at=GENERATED)
    assert [split_cells(line)[3] for line in event_lines(report)] == ["second", "first"]


@pytest.mark.parametrize(
    ("count", "max_rows", "shown"), [(300, 250, 250), (30, 250, 30), (30, 5, 5)]
)
def test_table_is_capped_to_the_newest_rows(count: int, max_rows: int, shown: int) -> None:
    rows = [closed_row(minute) for minute in range(count)]
    report = render_markdown_report(
        "t", rows, FULL_STATS, max_rows=max_rows, generated_at=GENERATED
    )
    lines = event_lines(report)
    assert len(lines) == shown
    assert split_cells(lines[0])[3] == f"sig-{count - 1}"
    assert split_cells(lines[-1])[3] == f"sig-{count - shown}"
    assert f"- Total events: {count}" in report
    assert (f"Showing the newest {shown} of {count} events." in report) == (shown < count)


def test_default_cap_is_250() -> None:
    rows = [closed_row(minute) for minute in range(260)]
    report = render_markdown_report("t", rows, FULL_STATS, generated_at=GENERATED)
    assert len(event_lines(report)) == 250


def test_cells_of_a_closed_row() -> None:
    row = closed_row(
        0,
        price_open=0.00162008,
        price_take_profit=0.1 + 0.2,
        price_stop_loss=50_000.0,
        pnl_percentage=-8.375632368,
        close_reason="stop_loss",
    )
    report = render_markdown_report("t", [row], FULL_STATS, generated_at=GENERATED)
    assert split_cells(event_lines(report)[0]) == [
        "2024-05-01T12:00:00Z",
        "closed",
        "BTCUSDT",
        "sig-0",
        "long",
        "0.00162008",
        "0.3",
        "50000",
        "-8.38%",
        "stop_loss",
    ]


def test_none_fields_give_empty_cells() -> None:
    row = ReportRow(
        timestamp=T0,
        action="cancelled",
        symbol="ETHUSDT",
        signal_id="c1",
        position="short",
        price_open=3000.5,
        close_reason="timeout",
    )
    report = render_markdown_report("t", [row], FULL_STATS, generated_at=GENERATED)
    cells = split_cells(event_lines(report)[0])
    assert cells == [
        "2024-05-01T12:00:00Z",
        "cancelled",
        "ETHUSDT",
        "c1",
        "short",
        "3000.5",
        "",
        "",
        "",
        "timeout",
    ]


def test_free_text_is_escaped() -> None:
    row = closed_row(0, symbol="BTC|USDT", signal_id="a\nb", close_reason="manual | stop")
    report = render_markdown_report("x|y", [row], FULL_STATS, generated_at=GENERATED)
    line = event_lines(report)[0]
    cells = split_cells(line)
    assert len(cells) == 10
    assert cells[2] == "BTC\\|USDT"
    assert cells[3] == "a b"
    assert cells[9] == "manual \\| stop"


def test_every_statistic_is_listed_and_none_is_na() -> None:
    report = render_markdown_report("t", [], EMPTY_STATS, generated_at=GENERATED)
    none_fields = [
        f.name for f in dataclasses.fields(EMPTY_STATS) if getattr(EMPTY_STATS, f.name) is None
    ]
    assert len(none_fields) == 7
    values = [
        split_cells(line)[1]
        for line in report.splitlines()
        if line.startswith("| ") and len(split_cells(line)) == 2
    ]
    assert values.count("N/A") == 7
    by_field = {label.field: label.label for label in STATISTIC_LABELS}
    for name in none_fields:
        assert stat_value(report, by_field[name]) == "N/A"
    assert stat_value(report, by_field["total_closed"]) == "0"
    assert stat_value(report, by_field["max_drawdown"]) == "0.00%"
    assert stat_value(report, by_field["total_pnl"]) == "0.00%"
    assert "No events yet." in report
    assert HEADER not in report


def test_statistic_formats() -> None:
    report = render_markdown_report("t", [], FULL_STATS, generated_at=GENERATED)
    by_field = {label.field: label.label for label in STATISTIC_LABELS}
    expected = {
        "total_closed": "12",
        "win_count": "7",
        "loss_count": "4",
        "win_rate": "58.33%",
        "avg_pnl": "+0.13%",
        "total_pnl": "+1.50%",
        "std_dev": "0.40%",
        "sharpe_ratio": "0.316",
        "annualized_sharpe_ratio": "2.718",
        "certainty_ratio": "1.400",
        "expected_yearly_returns": "-12.35%",
        "max_drawdown": "0.75%",
    }
    assert set(expected) == set(by_field)
    for name, text in expected.items():
        assert stat_value(report, by_field[name]) == text, name
    assert "N/A" not in [
        split_cells(line)[1]
        for line in report.splitlines()
        if line.startswith("| ") and len(split_cells(line)) == 2
    ]


def test_labels_cover_every_statistics_field_once() -> None:
    names = [label.field for label in STATISTIC_LABELS]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(LiveStatistics))
    assert len({label.label for label in STATISTIC_LABELS}) == len(names)


def test_zero_rows_shown_and_bad_cap() -> None:
    report = render_markdown_report(
        "t", [closed_row(0)], FULL_STATS, max_rows=0, generated_at=GENERATED
    )
    assert HEADER not in report
    assert "Showing the newest 0 of 1 events." in report
    with pytest.raises(ValueError):
        render_markdown_report("t", [], FULL_STATS, max_rows=-1, generated_at=GENERATED)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (50_000.0, "50000"),
        (0.00162008, "0.00162008"),
        (0.1 + 0.2, "0.3"),
        (1.23456789123, "1.23456789"),
        (64_123.5, "64123.5"),
        (1.2345e-09, "0.0000000012345"),
        (0.0, "0"),
        (None, ""),
    ],
)
def test_format_price(value: float | None, text: str) -> None:
    assert format_price(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.588415584, "+3.59%"),
        (-8.375632368, "-8.38%"),
        (0.0, "0.00%"),
        (None, ""),
    ],
)
def test_format_pnl(value: float | None, text: str) -> None:
    assert format_pnl(value) == text


def test_format_timestamp_is_utc_with_z() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert format_timestamp(datetime(2024, 1, 1, 7, 0, tzinfo=eastern)) == "2024-01-01T12:00:00Z"
    assert format_timestamp(datetime(2024, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)) == (
        "2024-01-01T12:00:00.250Z"
    )

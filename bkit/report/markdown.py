"""The Markdown live report (SPEC §9) and the cell formatting shared with the HTML report.

Pure: everything is rendered into a string in memory. Free text (symbol, ids, reasons, title) is
escaped so it cannot break the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bkit.core.statistics import LiveStatistics, ReportRow, as_utc

#: Column headers of the event table, in order.
REPORT_COLUMNS: tuple[str, ...] = (
    "Timestamp",
    "Action",
    "Symbol",
    "Signal ID",
    "Position",
    "Open",
    "Take Profit",
    "Stop Loss",
    "PNL",
    "Close Reason",
)

#: Default cap on table rows (`CC_MAX_LIVE_MARKDOWN_ROWS`).
DEFAULT_MAX_ROWS = 250

#: Digits after the decimal point a price keeps (more for prices below 0.1, see `format_price`).
PRICE_DECIMALS = 8

NA = "N/A"

StatisticKind = Literal["count", "percent", "signed_percent", "ratio"]


@dataclass(frozen=True, slots=True)
class StatisticLabel:
    """How one `LiveStatistics` field is shown: its label and its kind of number."""

    field: str
    label: str
    kind: StatisticKind


#: One entry per `LiveStatistics` field, in display order.
STATISTIC_LABELS: tuple[StatisticLabel, ...] = (
    StatisticLabel("total_closed", "Closed trades", "count"),
    StatisticLabel("win_count", "Winning trades", "count"),
    StatisticLabel("loss_count", "Losing trades", "count"),
    StatisticLabel("win_rate", "Win rate", "percent"),
    StatisticLabel("avg_pnl", "Average PNL per trade", "signed_percent"),
    StatisticLabel("total_pnl", "Total PNL", "signed_percent"),
    StatisticLabel("std_dev", "Standard deviation (per trade)", "percent"),
    StatisticLabel("sharpe_ratio", "Sharpe ratio (per trade)", "ratio"),
    StatisticLabel("annualized_sharpe_ratio", "Annualized Sharpe ratio", "ratio"),
    StatisticLabel("certainty_ratio", "Certainty ratio (avg win / avg loss)", "ratio"),
    StatisticLabel("expected_yearly_returns", "Expected yearly returns", "signed_percent"),
    StatisticLabel("max_drawdown", "Max drawdown", "percent"),
)

#: Why a figure may read N/A; printed under the statistics in both reports.
NA_EXPLANATION = (
    "N/A: not defined for this history. Ratios need enough closed trades; annualized figures "
    "also need enough days of history; a ratio with a zero denominator (no spread, no losing "
    "trade) is not defined. Percent figures are percentage points of the entry cost per trade, "
    "summed without compounding."
)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z` suffix: seconds, or milliseconds when there is a fraction."""
    moment = as_utc(moment)
    timespec = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def format_price(value: float | None) -> str:
    """A price with up to 8 decimals and no float noise: `50000`, `0.00162008`, `0.3`.

    Prices below 0.1 keep 8 significant digits instead, so `1.2345e-09` is not shown as 0.
    None gives an empty string.
    """
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(PRICE_DECIMALS, PRICE_DECIMALS - 1 - magnitude)
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_pnl(value: float | None) -> str:
    """A PnL in % with its sign and 2 decimals: `+3.59%`, `-8.38%`, `0.00%`; None gives ``."""
    if value is None:
        return ""
    if value == 0:
        return "0.00%"
    return f"{value:+.2f}%"


def format_statistic(value: float | None, kind: StatisticKind) -> str:
    """One statistic as text: counts as integers, percents with 2 decimals and `%`, ratios with
    3 decimals, `N/A` for None."""
    if value is None:
        return NA
    if kind == "count":
        return str(int(value))
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "signed_percent":
        return format_pnl(value)
    return f"{value:.2f}%"


def statistic_rows(stats: LiveStatistics) -> list[tuple[str, str]]:
    """`(label, formatted value)` for every statistic, in display order."""
    return [
        (label.label, format_statistic(getattr(stats, label.field), label.kind))
        for label in STATISTIC_LABELS
    ]


def newest_first(rows: Sequence[ReportRow], max_rows: int) -> list[ReportRow]:
    """The newest `max_rows` rows, newest first. Equal timestamps keep their given order, read
    as oldest to newest (so the later of two rows in the same minute is shown first)."""
    if max_rows < 0:
        raise ValueError(f"max_rows must be ≥ 0, got {max_rows}")
    indexed = sorted(enumerate(rows), key=lambda item: (item[1].timestamp, item[0]), reverse=True)
    return [row for _, row in indexed[:max_rows]]


def row_cells(row: ReportRow) -> list[str]:
    """The cells of one event row as plain (unescaped) text, one per `REPORT_COLUMNS` entry."""
    return [
        format_timestamp(row.timestamp),
        row.action,
        row.symbol,
        row.signal_id or "",
        row.position or "",
        format_price(row.price_open),
        format_price(row.price_take_profit),
        format_price(row.price_stop_loss),
        format_pnl(row.pnl_percentage),
        row.close_reason or "",
    ]


def escape_markdown_cell(text: str) -> str:
    """Make free text safe inside a Markdown table cell: one line, `|` and `\\` escaped."""
    one_line = " ".join(text.splitlines())
    return one_line.replace("\\", "\\\\").replace("|", "\\|")


def _table_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


#: What a report shows: trading on a venue, on a paper exchange, or a backtest.
ReportMode = Literal["live", "paper", "backtest"]
_MODE_HEADINGS: dict[str, str] = {"live": "Live report", "paper": "Paper report",
                                  "backtest": "Backtest report"}


def report_mode(title: str) -> ReportMode:
    """The mode a report title implies, for callers that do not say: `backtest` for titles
    starting with "Backtest" (`bkit.backtest` names its reports so), `paper` when the title's
    exchange (`strategy · exchange · symbols`) is a registered paper exchange, else `live`."""
    if title.startswith("Backtest"):
        return "backtest"
    parts = title.split(" · ")
    if len(parts) >= 2 and _is_paper_exchange(parts[1]):
        return "paper"
    return "live"


def _is_paper_exchange(exchange_name: str) -> bool:
    from bkit.core.registry import REGISTRY
    from bkit.exchange.paper import PaperExchange

    schema = REGISTRY.exchanges.get(exchange_name)
    return schema is not None and isinstance(schema.source, PaperExchange)


def report_heading(title: str, mode: ReportMode | None = None) -> str:
    """`Live report: …`, `Paper report: …` or `Backtest report: …` (unescaped); `mode` None
    is inferred from the title (`report_mode`)."""
    mode = mode or report_mode(title)
    return f"{_MODE_HEADINGS[mode]}: {title}"


def render_markdown_report(
    title: str,
    rows: Sequence[ReportRow],
    stats: LiveStatistics,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    generated_at: datetime,
    mode: ReportMode | None = None,
) -> str:
    """The report as Markdown: a header, the newest `max_rows` events (newest first), then
    every statistic (`N/A` where None).

    `title` is usually `strategy · exchange · symbol`; the heading names the mode (live, paper
    or backtest; inferred from the title when `mode` is None). Times are shown in UTC, prices
    in quote currency, PnL in %.
    """
    shown = newest_first(rows, max_rows)
    lines = [
        f"# {escape_markdown_cell(report_heading(title, mode))}",
        "",
        f"- Generated at: {format_timestamp(generated_at)}",
        f"- Total events: {len(rows)}",
        f"- Closed signals: {stats.total_closed}",
        "",
        "## Events",
        "",
    ]
    if len(shown) < len(rows):
        lines += [f"Showing the newest {len(shown)} of {len(rows)} events.", ""]
    if shown:
        lines.append(_table_line(REPORT_COLUMNS))
        lines.append(_table_line(["---"] * len(REPORT_COLUMNS)))
        lines += [
            _table_line([escape_markdown_cell(cell) for cell in row_cells(row)]) for row in shown
        ]
    elif not rows:
        lines.append("No events yet.")
    lines += ["", "## Statistics", "", _table_line(("Metric", "Value")), _table_line(("---",) * 2)]
    lines += [_table_line((label, value)) for label, value in statistic_rows(stats)]
    lines += ["", NA_EXPLANATION, ""]
    return "\n".join(lines)

"""The HTML report (live, paper or backtest): one self-contained page (inline CSS, inline SVG
charts, no scripts, no external resources). Pure rendering into a string; `write_html` is the
only function that writes.

Charts: the equity curve (cumulative `pnl_percentage` in percentage points against close time,
starting at 0 when the first trade opened) and the drawdown ("underwater") curve, the distance of
the equity below its running peak.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path

from bkit.core.statistics import (
    ClosedTrade,
    LiveStatistics,
    ReportRow,
    drawdown_curve,
    equity_curve,
)
from bkit.report.markdown import (
    DEFAULT_MAX_ROWS,
    NA_EXPLANATION,
    REPORT_COLUMNS,
    ReportMode,
    format_timestamp,
    newest_first,
    report_heading,
    row_cells,
    statistic_rows,
)

#: Chart size and inner margins, in SVG user units (pixels at 100 % zoom).
CHART_WIDTH = 760
CHART_HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 16, 16, 36

_PNL_COLUMN = REPORT_COLUMNS.index("PNL")
#: Signal ids (32 hex digits, no break point) may wrap anywhere; timestamps never wrap, so the
#: events table fits a 1,400 px window with every column visible.
_ID_COLUMN = REPORT_COLUMNS.index("Signal ID")
_TIME_COLUMN = REPORT_COLUMNS.index("Timestamp")
_NUMERIC_COLUMNS = frozenset(range(REPORT_COLUMNS.index("Open"), _PNL_COLUMN + 1))

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1340px; padding: 0 1rem; color: #1f2933; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
.meta { color: #52606d; margin: 0; }
.note, .placeholder { color: #52606d; font-size: .9rem; }
.placeholder { padding: 1.5rem; border: 1px dashed #bcccdc; text-align: center; }
table { border-collapse: collapse; font-size: .85rem; margin-top: .5rem; }
th, td { border: 1px solid #d9e2ec; padding: .25rem .5rem; text-align: left; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.events { width: 100%; font-size: .8rem; }
table.events td.ts { white-space: nowrap; }
table.events td.id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .75rem;
                     word-break: break-all; min-width: 9ch; }
td.pos { color: #137333; } td.neg { color: #b3261e; }
.scroll { overflow-x: auto; }
svg.chart { width: 100%; max-width: 760px; height: auto; display: block; }
svg .frame { fill: #fbfcfd; stroke: #d9e2ec; }
svg .zero { stroke: #9aa5b1; stroke-dasharray: 4 3; }
svg .line { fill: none; stroke-width: 1.5; }
svg.equity .line { stroke: #1a73e8; }
svg.drawdown .line { stroke: #b3261e; }
svg.drawdown .area { fill: #b3261e; fill-opacity: .15; stroke: none; }
svg text { font-size: 11px; fill: #52606d; }
"""


def _percent_label(value: float) -> str:
    return "0%" if value == 0 else f"{value:+.2f}%"


def _render_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    origin: tuple[datetime, float],
    name: str,
    caption: str,
    fill_area: bool = False,
) -> str:
    """An inline SVG line chart: one polyline vertex for `origin` plus one per point.

    x is time (linear, UTC), y is percentage points; the dashed line marks 0 %.
    """
    series = [origin, *points]
    start = origin[0]
    seconds = [(moment - start).total_seconds() for moment, _ in series]
    values = [value for _, value in series]
    span = max(seconds) or 1.0
    low, high = min(0.0, *values), max(0.0, *values)
    if high == low:
        high, low = high + 1.0, low - 1.0
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad
    inner_w = CHART_WIDTH - _LEFT - _RIGHT
    inner_h = CHART_HEIGHT - _TOP - _BOTTOM

    def x_of(offset: float) -> float:
        return _LEFT + offset / span * inner_w

    def y_of(value: float) -> float:
        return _TOP + (high - value) / (high - low) * inner_h

    vertices = " ".join(
        f"{x_of(offset):.2f},{y_of(value):.2f}"
        for offset, value in zip(seconds, values, strict=True)
    )
    zero_y = y_of(0.0)
    parts = [
        f'<svg class="chart {name}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-label="{escape(caption)}">',
        f"<title>{escape(caption)}</title>",
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{inner_w}" height="{inner_h}"/>',
        f'<line class="zero" x1="{_LEFT}" y1="{zero_y:.2f}" x2="{_LEFT + inner_w}" '
        f'y2="{zero_y:.2f}"/>',
    ]
    if fill_area:
        last_x = x_of(seconds[-1])
        parts.append(f'<polygon class="area" points="{vertices} {last_x:.2f},{zero_y:.2f}"/>')
    parts += [
        f'<polyline class="line" points="{vertices}"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 10}" text-anchor="end">'
        f"{escape(_percent_label(max(values)))}</text>",
        f'<text x="{_LEFT - 6}" y="{_TOP + inner_h}" text-anchor="end">'
        f"{escape(_percent_label(min(values)))}</text>",
        f'<text x="{_LEFT}" y="{CHART_HEIGHT - 12}">{escape(format_timestamp(start))}</text>',
        f'<text x="{_LEFT + inner_w}" y="{CHART_HEIGHT - 12}" text-anchor="end">'
        f"{escape(format_timestamp(series[-1][0]))}</text>",
        "</svg>",
    ]
    return "\n".join(parts)


def render_charts(trades: Sequence[ClosedTrade]) -> str:
    """The equity and drawdown charts as HTML, or a placeholder paragraph when there is nothing
    to draw (no closed trade, or values beyond the float range)."""
    if not trades:
        return (
            '<p class="placeholder">No closed trades yet. The equity curve and the drawdown '
            "chart appear here once the first trade closes.</p>"
        )
    equity = equity_curve(trades)
    drawdown = drawdown_curve(trades)
    if not all(math.isfinite(value) for _, value in (*equity, *drawdown)):
        return '<p class="placeholder">PnL values are too large to chart.</p>'
    origin = (min(trade.opened_at for trade in trades), 0.0)
    return "\n".join(
        [
            "<h3>Equity curve (cumulative PNL, %)</h3>",
            _render_chart(
                equity,
                origin=origin,
                name="equity",
                caption="Equity curve: cumulative PNL in % against close time",
            ),
            "<h3>Drawdown (below running peak, %)</h3>",
            _render_chart(
                drawdown,
                origin=origin,
                name="drawdown",
                caption="Drawdown: cumulative PNL below its running peak, in %",
                fill_area=True,
            ),
        ]
    )


def _statistics_table(stats: LiveStatistics) -> str:
    body = "\n".join(
        f'<tr><th scope="row">{escape(label)}</th><td class="num">{escape(value)}</td></tr>'
        for label, value in statistic_rows(stats)
    )
    return f'<table class="statistics">\n<tbody>\n{body}\n</tbody>\n</table>'


def _event_cell(index: int, text: str) -> str:
    css = "id" if index == _ID_COLUMN else "ts" if index == _TIME_COLUMN else ""
    if index in _NUMERIC_COLUMNS and text:
        css = "num"
        if index == _PNL_COLUMN:
            css += " pos" if text.startswith("+") else " neg" if text.startswith("-") else ""
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(text)}</td>"


def _events_table(rows: Sequence[ReportRow], max_rows: int) -> str:
    shown = newest_first(rows, max_rows)
    if not rows:
        return '<p class="placeholder">No events yet.</p>'
    parts = []
    if len(shown) < len(rows):
        parts.append(f'<p class="note">Showing the newest {len(shown)} of {len(rows)} events.</p>')
    header = "".join(f'<th scope="col">{escape(column)}</th>' for column in REPORT_COLUMNS)
    body = "\n".join(
        "<tr>" + "".join(_event_cell(i, cell) for i, cell in enumerate(row_cells(row))) + "</tr>"
        for row in shown
    )
    parts.append(
        f'<div class="scroll"><table class="events">\n<thead><tr>{header}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )
    return "\n".join(parts)


def render_html_report(
    title: str,
    rows: Sequence[ReportRow],
    stats: LiveStatistics,
    trades: Sequence[ClosedTrade],
    *,
    generated_at: datetime,
    max_rows: int = DEFAULT_MAX_ROWS,
    mode: ReportMode | None = None,
) -> str:
    """The report as one self-contained HTML page, titled by its mode ("Live report", "Paper
    report", "Backtest report"; inferred from `title` when `mode` is None).

    Sections: header (title, generation time in UTC, event and closed-signal counts), the equity
    and drawdown charts drawn from `trades` (PnL in %), the statistics (`N/A` where None) and the
    newest `max_rows` events, newest first. All user text is HTML-escaped.
    """
    page_title = escape(report_heading(title, mode))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{page_title}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{page_title}</h1>",
            f'<p class="meta">Generated at {escape(format_timestamp(generated_at))} · '
            f"{len(rows)} events · {stats.total_closed} closed signals</p>",
            "<h2>Performance</h2>",
            render_charts(trades),
            "<h2>Statistics</h2>",
            _statistics_table(stats),
            f'<p class="note">{escape(NA_EXPLANATION)}</p>',
            "<h2>Events</h2>",
            _events_table(rows, max_rows),
            "</body>",
            "</html>",
            "",
        ]
    )


def write_html(path: str | os.PathLike[str], document: str) -> Path:
    """Write `document` to `path` as UTF-8, atomically (temp file, then rename); creates parent
    directories. Returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(document)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target

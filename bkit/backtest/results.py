"""What a backtest leaves: per key, its transitions, closed trades, the signal still open at
the end of the frame, counters and the SPEC §9 statistics; and the reports over them
(Markdown, HTML with the equity curve, a merged report ranking many runs by a metric)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bkit.core.results import TickResult, jsonable
from bkit.core.signals import PublicSignal
from bkit.core.statistics import (
    RANK_METRICS,
    ClosedTrade,
    LiveStatistics,
    ReportRow,
    compute_statistics,
    report_row,
)
from bkit.report.markdown import (
    DEFAULT_MAX_ROWS,
    escape_markdown_cell,
    format_statistic,
    render_markdown_report,
)


@dataclass
class BacktestResult:
    """One key over one frame. Times UTC; PnL in % of the entry cost (SPEC §5)."""

    symbol: str
    strategy_name: str
    exchange_name: str
    frame_name: str
    start: datetime
    end: datetime
    ticks: int                       # minutes of the frame
    ticked: int                      # minutes with a price (each a live tick)
    failed: int                      # minutes without a price (the tick failed, as live)
    full_ticks: int                  # minutes that ran the state machine
    transitions: list[TickResult] = field(default_factory=list)
    trades: list[ClosedTrade] = field(default_factory=list)
    open_signal: PublicSignal | None = None
    open_state: str | None = None    # "scheduled" or "opened": still live at the end
    notice_counts: dict[str, int] = field(default_factory=dict)
    notices: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def statistics(self) -> LiveStatistics:
        return compute_statistics(self.trades)

    @property
    def title(self) -> str:
        return (f"Backtest {self.strategy_name} · {self.exchange_name} · {self.symbol} · "
                f"{self.frame_name}")

    def report_rows(self) -> list[ReportRow]:
        return [report_row(r) for r in self.transitions]

    def get_data(self) -> dict[str, Any]:
        """`Live.get_data`'s figures and `event_list`, plus the backtest's own fields."""
        data = asdict(self.statistics)
        data["event_list"] = self.report_rows()
        data.update(frame_name=self.frame_name, start=self.start, end=self.end,
                    ticks=self.ticks, ticked=self.ticked, failed=self.failed,
                    open_signal=self.open_signal, open_state=self.open_state,
                    notice_counts=dict(self.notice_counts), wall_seconds=self.wall_seconds)
        return data

    def markdown(self, *, max_rows: int = DEFAULT_MAX_ROWS) -> str:
        body = render_markdown_report(self.title, self.report_rows(), self.statistics,
                                      max_rows=max_rows, generated_at=datetime.now(UTC))
        return body + "\n" + self._footer()

    def html(self, *, max_rows: int = DEFAULT_MAX_ROWS) -> str:
        from bkit.report.html import render_html_report

        return render_html_report(self.title, self.report_rows(), self.statistics,
                                  self.trades, generated_at=datetime.now(UTC),
                                  max_rows=max_rows)

    def _footer(self) -> str:
        lines = [f"Frame: {self.start.isoformat()} .. {self.end.isoformat()} ({self.ticks} "
                 f"minutes; {self.ticked} priced, {self.failed} without candles)."]
        if self.open_signal is not None:
            s = self.open_signal
            lines.append(f"Still {self.open_state} at the end of the frame (not closed): "
                         f"{escape_markdown_cell(s.id)} {s.position} open {s.price_open!r}, "
                         f"TP {s.price_take_profit!r}, SL {s.price_stop_loss!r}.")
        if self.notice_counts:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.notice_counts.items()))
            lines.append(f"Notices: {counts}.")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (database row, Celery result)."""
        return jsonable({
            "symbol": self.symbol, "strategy_name": self.strategy_name,
            "exchange_name": self.exchange_name, "frame_name": self.frame_name,
            "start": self.start, "end": self.end, "ticks": self.ticks,
            "ticked": self.ticked, "failed": self.failed, "full_ticks": self.full_ticks,
            "transitions": [r.to_dict() for r in self.transitions],
            "trades": [asdict(t) for t in self.trades],
            "open_signal": None if self.open_signal is None else asdict(self.open_signal),
            "open_state": self.open_state, "notice_counts": self.notice_counts,
            "notices": self.notices, "wall_seconds": self.wall_seconds})

    @staticmethod
    def from_dict(data: dict[str, Any]) -> BacktestResult:
        def dt(value: Any) -> Any:
            return datetime.fromisoformat(value) if isinstance(value, str) else value

        open_signal = data.get("open_signal")
        if open_signal is not None:
            open_signal = PublicSignal(**{**open_signal,
                                          "scheduled_at": dt(open_signal.get("scheduled_at")),
                                          "pending_at": dt(open_signal.get("pending_at"))})
        return BacktestResult(
            symbol=data["symbol"], strategy_name=data["strategy_name"],
            exchange_name=data["exchange_name"], frame_name=data["frame_name"],
            start=dt(data["start"]), end=dt(data["end"]), ticks=data["ticks"],
            ticked=data["ticked"], failed=data["failed"], full_ticks=data["full_ticks"],
            transitions=[TickResult.from_dict(r) for r in data["transitions"]],
            trades=[ClosedTrade(**{**t, "opened_at": dt(t["opened_at"]),
                                   "closed_at": dt(t["closed_at"])}) for t in data["trades"]],
            open_signal=open_signal, open_state=data.get("open_state"),
            notice_counts=dict(data.get("notice_counts") or {}),
            notices=list(data.get("notices") or []),
            wall_seconds=float(data.get("wall_seconds") or 0.0))


def metric_value(stats: LiveStatistics, metric: str) -> float | None:
    if metric not in RANK_METRICS:
        raise ValueError(f"unknown rank metric {metric!r} (one of {', '.join(RANK_METRICS)})")
    value = getattr(stats, metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass
class RankedRun:
    """One (strategy × frame) of a walk, its symbols merged: statistics over all its trades."""

    strategy_name: str
    exchange_name: str
    frame_name: str
    symbols: list[str]
    stats: LiveStatistics
    value: float | None
    results: list[BacktestResult]


def rank(results: Sequence[BacktestResult], metric: str = "sharpe_ratio") -> list[RankedRun]:
    """The walker: group results by strategy (and frame), statistics over each group's
    trades, best first by `metric` (None last; max_drawdown ranks lower as better)."""
    metric_value(compute_statistics([]), metric)  # validates the name
    groups: dict[tuple[str, str, str], list[BacktestResult]] = {}
    for result in results:
        groups.setdefault((result.strategy_name, result.exchange_name, result.frame_name),
                          []).append(result)
    ranked = []
    for (strategy, exchange, frame), members in groups.items():
        stats = compute_statistics([t for r in members for t in r.trades])
        ranked.append(RankedRun(strategy, exchange, frame, sorted(r.symbol for r in members),
                                stats, metric_value(stats, metric), members))
    sign = 1 if metric == "max_drawdown" else -1
    ranked.sort(key=lambda r: (r.value is None, 0.0 if r.value is None else sign * r.value,
                               r.strategy_name))
    return ranked


def merged_markdown(results: Sequence[BacktestResult], metric: str = "sharpe_ratio", *,
                    title: str = "Backtest", max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """One report for many runs: the ranking by `metric`, then each run's report."""
    ranked = rank(results, metric)
    lines = [f"# {escape_markdown_cell(title)}", "",
             f"Generated {datetime.now(UTC).isoformat(timespec='seconds')}. Ranked by "
             f"`{metric}` (per strategy, its symbols' trades merged).", "",
             "| Rank | Strategy | Exchange | Frame | Symbols | Closed trades | Win rate | "
             "Total PNL | Sharpe ratio | Max drawdown | " + f"{metric} |",
             "|" + " --- |" * 11]
    for place, run in enumerate(ranked, 1):
        s = run.stats
        value = "N/A" if run.value is None else f"{run.value:.6g}"
        lines.append(
            f"| {place} | {escape_markdown_cell(run.strategy_name)} | "
            f"{escape_markdown_cell(run.exchange_name)} | {escape_markdown_cell(run.frame_name)}"
            f" | {escape_markdown_cell(', '.join(run.symbols))} | {s.total_closed} | "
            f"{format_statistic(s.win_rate, 'percent')} | "
            f"{format_statistic(s.total_pnl, 'signed_percent')} | "
            f"{format_statistic(s.sharpe_ratio, 'ratio')} | "
            f"{format_statistic(s.max_drawdown, 'percent')} | {value} |")
    lines.append("")
    for run in ranked:
        for result in sorted(run.results, key=lambda r: r.symbol):
            lines.append(result.markdown(max_rows=max_rows))
    return "\n".join(lines)


def merged_html(results: Sequence[BacktestResult], *, title: str = "Backtest",
                max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """One HTML page over every run: all transitions, all trades, one equity curve."""
    from bkit.report.html import render_html_report

    rows = sorted((report_row(t) for r in results for t in r.transitions),
                  key=lambda row: row.timestamp)
    trades = sorted((t for r in results for t in r.trades), key=lambda t: t.closed_at)
    return render_html_report(title, rows, compute_statistics(trades), trades,
                              generated_at=datetime.now(UTC), max_rows=max_rows)

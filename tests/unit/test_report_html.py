"""The HTML live report: well-formed, self-contained, escaped, one chart vertex per trade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkit.core.statistics import ClosedTrade, ReportRow, compute_statistics
from bkit.report import REPORT_COLUMNS, render_html_report, write_html

T0 = datetime(2024, 6, 1, tzinfo=UTC)
GENERATED = datetime(2024, 6, 30, 9, 15, tzinfo=UTC)
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}
# SVG shapes we emit self-closed (<rect/>); html.parser reports them as start+end.
SELF_CLOSED = {"rect", "line", "polyline", "polygon", "path", "circle"}


class PageParser(HTMLParser):
    """Checks nesting of every tag and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.cells: dict[str, list[list[str]]] = {}
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = attributes.get("class") or ""
            self.cells[self._table] = []
        if tag == "tr" and self._table is not None:
            self.cells[self._table].append([])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID | SELF_CLOSED:
            self.errors.append(f"unexpected self-closed <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag for void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._table is not None and self.stack and self.stack[-1] in {"td", "th"}:
            self.cells[self._table][-1].append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == [], "unclosed tags"
    return parser


def polylines(parser: PageParser) -> dict[str, list[tuple[float, float]]]:
    """Vertices of each chart's polyline, keyed by the chart's class (equity / drawdown)."""
    result: dict[str, list[tuple[float, float]]] = {}
    chart = ""
    for tag, attrs in parser.tags:
        if tag == "svg":
            chart = (attrs.get("class") or "").replace("chart", "").strip()
        if tag == "polyline":
            pairs = (attrs.get("points") or "").split()
            result[chart] = [(float(x), float(y)) for x, y in (p.split(",") for p in pairs)]
    return result


def make_trades(returns: list[float]) -> list[ClosedTrade]:
    return [
        ClosedTrade(
            f"s{i}",
            "BTCUSDT",
            "long",
            pnl,
            pnl,
            T0 + timedelta(days=i),
            T0 + timedelta(days=i, hours=6),
            "take_profit" if pnl > 0 else "stop_loss",
        )
        for i, pnl in enumerate(returns)
    ]


def make_rows(trades: list[ClosedTrade]) -> list[ReportRow]:
    return [
        ReportRow(
            trade.closed_at,
            "closed",
            trade.symbol,
            trade.signal_id,
            trade.position,
            50_000.0,
            52_000.0,
            46_000.0,
            trade.pnl_percentage,
            trade.close_reason,
        )
        for trade in trades
    ]


def render(
    trades: list[ClosedTrade],
    title: str = "trend / binance / BTCUSDT",
    rows: list[ReportRow] | None = None,
    **kwargs: int,
) -> str:
    rows = make_rows(trades) if rows is None else rows
    return render_html_report(
        title, rows, compute_statistics(trades), trades, generated_at=GENERATED, **kwargs
    )


def test_page_is_well_formed_and_self_contained() -> None:
    page = render(make_trades([1.0, -2.0, 3.0]))
    parser = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    names = [tag for tag, _ in parser.tags]
    for banned in ("script", "link", "img", "iframe", "object", "embed"):
        assert banned not in names
    for _, attrs in parser.tags:
        for key in ("src", "href", "xlink:href"):
            assert key not in attrs
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page
    assert names.count("style") == 1 and names.count("svg") == 2


@pytest.mark.parametrize("count", [1, 2, 7, 40])
def test_each_chart_has_one_vertex_per_trade_plus_origin(count: int) -> None:
    returns = [(-1.0) ** i * (i + 1) for i in range(count)]
    charts = polylines(parse(render(make_trades(returns))))
    assert set(charts) == {"equity", "drawdown"}
    for vertices in charts.values():
        assert len(vertices) == count + 1
        xs = [x for x, _ in vertices]
        assert xs == sorted(xs)
        assert xs[-1] > xs[0]


def test_equity_curve_goes_up_and_down_with_cumulative_pnl() -> None:
    # Cumulative: 0 (origin), +1, −1, +2: SVG y grows downwards.
    equity = polylines(parse(render(make_trades([1.0, -2.0, 3.0]))))["equity"]
    ys = [y for _, y in equity]
    assert ys[1] < ys[0]  # +1 above 0
    assert ys[2] > ys[0]  # −1 below 0
    assert ys[3] < ys[1]  # +2 above +1
    # Equal steps in value give equal steps in y: 0 → +1 is a third of +2 → −1.
    assert ys[0] - ys[1] == pytest.approx((ys[2] - ys[3]) / 3, abs=0.02)


def test_drawdown_is_never_above_zero_line() -> None:
    parser = parse(render(make_trades([2.0, -1.0, -0.5, 3.0])))
    zero_lines = [
        attrs for tag, attrs in parser.tags if tag == "line" and attrs.get("class") == "zero"
    ]
    assert len(zero_lines) == 2  # equity chart first, drawdown chart second
    zero_y = float(zero_lines[1]["y1"] or "nan")
    ys = [y for _, y in polylines(parser)["drawdown"]]
    # Running sum 0, 2, 1, 0.5, 3.5; running peak 0, 2, 2, 2, 3.5 → drawdown 0, 0, −1, −1.5, 0.
    assert ys[0] == pytest.approx(zero_y) and ys[1] == pytest.approx(zero_y)
    assert zero_y < ys[2] < ys[3]  # deeper below zero = larger SVG y
    assert ys[4] == pytest.approx(zero_y)


def test_no_trades_gives_placeholder_instead_of_charts() -> None:
    page = render([])
    parser = parse(page)
    assert "svg" not in [tag for tag, _ in parser.tags]
    assert "No closed trades yet" in "".join(parser.text)
    assert "No events yet." in "".join(parser.text)
    assert parser.cells["statistics"][3] == ["Win rate", "N/A"]


def test_single_instant_trade_does_not_break_the_chart() -> None:
    trade = ClosedTrade("x", "BTCUSDT", "long", -0.4, -0.4, T0, T0, "closed")
    charts = polylines(parse(render([trade])))
    assert [len(vertices) for vertices in charts.values()] == [2, 2]


def test_user_text_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    trades = make_trades([1.0])
    rows = [ReportRow(T0, "closed", evil, "id&<b>", "long", 1.0, 2.0, 0.5, 1.0, 'x"><img>')]
    page = render(trades, title=evil, rows=rows)
    parser = parse(page)
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "img" not in names and "b" not in names
    assert evil not in page
    assert "&lt;script&gt;" in page
    first_row = parser.cells["events"][1]
    assert first_row[2] == evil and first_row[3] == "id&<b>" and first_row[9] == 'x"><img>'
    assert "".join(t for t in parser.text).count("Live report: " + evil) == 2  # title + h1


def test_tables_show_statistics_and_newest_events_first() -> None:
    trades = make_trades([0.5, -0.25, 1.0])
    parser = parse(render(trades))
    events = parser.cells["events"]
    assert events[0] == list(REPORT_COLUMNS)
    assert [row[3] for row in events[1:]] == ["s2", "s1", "s0"]
    assert events[1][5:9] == ["50000", "52000", "46000", "+1.00%"]
    stats = dict(tuple(row) for row in parser.cells["statistics"])
    assert stats["Closed trades"] == "3"
    assert stats["Total PNL"] == "+1.25%"  # 0.5 − 0.25 + 1.0
    assert stats["Sharpe ratio (per trade)"] == "N/A"  # fewer than 10 trades


def test_event_table_is_capped() -> None:
    trades = make_trades([0.1] * 12)
    parser = parse(render(trades, max_rows=5))
    assert [row[3] for row in parser.cells["events"][1:]] == ["s11", "s10", "s9", "s8", "s7"]
    assert "Showing the newest 5 of 12 events." in "".join(parser.text)


def test_write_html_writes_atomically(tmp_path: Path) -> None:
    page = render(make_trades([1.0]))
    target = tmp_path / "reports" / "live" / "report.html"
    assert write_html(target, page) == target
    assert target.read_text(encoding="utf-8") == page
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


@settings(max_examples=60, deadline=None)
@given(returns=st.lists(st.floats(-1e6, 1e6), max_size=25), symbol=st.text(max_size=12))
def test_any_history_renders_a_well_formed_page(returns: list[float], symbol: str) -> None:
    trades = [
        ClosedTrade(
            f"s{i}",
            symbol,
            "short",
            pnl,
            pnl,
            T0 + timedelta(hours=i),
            T0 + timedelta(hours=i + 1),
            "closed",
        )
        for i, pnl in enumerate(returns)
    ]
    parser = parse(render(trades))
    charts = polylines(parser)
    assert all(len(vertices) == len(trades) + 1 for vertices in charts.values())
    assert len(charts) == (2 if trades else 0)


@pytest.mark.parametrize(
    ("title", "mode", "heading"),
    [
        ("trend / binance / BTCUSDT", None, "Live report: trend / binance / BTCUSDT"),
        ("Backtest trend · csv · XRP/ETH · day", None,
         "Backtest report: Backtest trend · csv · XRP/ETH · day"),
        ("trend · binance · BTC/USDT", "paper", "Paper report: trend · binance · BTC/USDT"),
        ("anything", "backtest", "Backtest report: anything"),
    ],
)
def test_the_title_names_the_mode(title: str, mode: str | None, heading: str) -> None:
    trades = make_trades([1.0])
    page = render_html_report(title, make_rows(trades), compute_statistics(trades), trades,
                              generated_at=GENERATED, mode=mode)  # type: ignore[arg-type]
    assert "".join(parse(page).text).count(heading) == 2  # <title> and <h1>
    assert "Live report" not in page or heading.startswith("Live report")


def test_a_registered_paper_exchange_makes_a_paper_report() -> None:
    from bkit.core.registry import REGISTRY
    from bkit.exchange.paper import add_paper_exchange

    add_paper_exchange("unit-paper")
    try:
        page = render(make_trades([1.0]), title="trend · unit-paper · XRP/ETH")
    finally:
        REGISTRY.exchanges.pop("unit-paper")
    assert "<h1>Paper report: trend · unit-paper · XRP/ETH</h1>" in page

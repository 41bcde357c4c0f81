"""Reports: Markdown per key and merged across symbols, `bkit report` to stdout and HTML files,
the HTML checked with a strict parser (always) and rendered by headless Chromium (when
/usr/bin/chromium is installed)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bkit.live import Live
from bkit.ops import admin
from bkit.report.markdown import statistic_rows
from tests.ops.conftest import OpsEnv
from tests.ops.strategies_ops import EXCHANGE, START, STRATEGY

XRP, BTC = "XRP/ETH", "UNITTEST/BTC"
CHROMIUM = Path("/usr/bin/chromium")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
SVG_LEAVES = {"line", "path", "polyline", "rect", "circle", "text", "polygon"}


class StrictHTML(HTMLParser):
    """Fails on a mismatched or unclosed tag; collects text, titles and table rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1  # <x/>: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def parse_strict(document: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(document)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    assert document.startswith("<!DOCTYPE html>")
    for tag in ("html", "head", "title", "body", "table", "svg"):
        assert parser.tags.get(tag, 0) >= 1, tag
    return parser


def _trade(sqlite_ops: OpsEnv, minutes: int = 40) -> None:
    admin.enable_keys(STRATEGY, [XRP, BTC], EXCHANGE, actor="t")
    for minute in range(minutes):
        for symbol in (XRP, BTC):
            Live.tick(symbol, STRATEGY, EXCHANGE, START + timedelta(minutes=minute))


def _without_generated(markdown: str) -> str:
    return re.sub(r"Generated at: \S+", "Generated at: X", markdown)


def test_single_key_report_is_the_live_report(sqlite_ops: OpsEnv) -> None:
    _trade(sqlite_ops)
    merged, per_key = admin.build_report(STRATEGY, [XRP], EXCHANGE)
    assert merged is per_key[0]
    assert _without_generated(admin.render_report(merged)) == _without_generated(
        Live.get_report(XRP, STRATEGY, EXCHANGE))


def test_merged_report_spans_every_symbol(sqlite_ops: OpsEnv) -> None:
    _trade(sqlite_ops)
    merged, per_key = admin.build_report(STRATEGY, None, EXCHANGE)
    assert [r.title.rsplit(" · ", 1)[1] for r in per_key] == [XRP, BTC]
    counts = [Live.get_data(s, STRATEGY, EXCHANGE)["total_closed"] for s in (XRP, BTC)]
    assert min(counts) >= 3
    assert merged.stats.total_closed == sum(counts)
    assert merged.stats.total_pnl == pytest.approx(
        sum(Live.get_data(s, STRATEGY, EXCHANGE)["total_pnl"] for s in (XRP, BTC)))
    assert {r.symbol for r in merged.rows} == {XRP, BTC}
    assert [r.timestamp for r in merged.rows] == sorted(r.timestamp for r in merged.rows)
    markdown = admin.render_report(merged)
    assert markdown.startswith(f"# Paper report: {STRATEGY} · {EXCHANGE} · {XRP}, {BTC}")
    assert f"- Closed signals: {sum(counts)}" in markdown


def test_cli_report_markdown_html_and_per_key(sqlite_ops: OpsEnv, tmp_path: Path) -> None:
    _trade(sqlite_ops, minutes=20)
    out = sqlite_ops.bkit("report", STRATEGY, XRP, "--exchange", EXCHANGE)
    assert out.returncode == 0, out.stderr
    assert _without_generated(out.stdout.rstrip("\n")) == _without_generated(
        Live.get_report(XRP, STRATEGY, EXCHANGE).rstrip("\n"))

    page = tmp_path / "out" / "report.html"
    html = sqlite_ops.bkit("report", STRATEGY, "--exchange", EXCHANGE, "--html", str(page))
    assert html.returncode == 0, html.stderr
    parsed = parse_strict(page.read_text(encoding="utf-8"))
    assert f"Paper report: {STRATEGY} · {EXCHANGE} · {XRP}, {BTC}" in parsed.text
    assert {XRP, BTC} <= set(parsed.text)

    folder = tmp_path / "per-key"
    split = sqlite_ops.bkit("report", STRATEGY, "--exchange", EXCHANGE, "--html", str(folder),
                            "--per-key")
    assert split.returncode == 0, split.stderr
    pages = sorted(folder.glob("*.html"))
    assert len(pages) == 2
    for path, symbol in zip(pages, (BTC, XRP), strict=True):
        text = parse_strict(path.read_text(encoding="utf-8")).text
        assert f"Paper report: {STRATEGY} · {EXCHANGE} · {symbol}" in text

    missing = sqlite_ops.bkit("report", STRATEGY, "DOGE/USDT", "--exchange", EXCHANGE)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "DOGE/USDT" in missing.stderr


def _png_pixels_vary(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the pixel data) of a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    data, pos = b"", 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos:pos + 4])[0]
        kind = png[pos + 4:pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(data)))


def test_html_report_is_well_formed_and_renders(sqlite_ops: OpsEnv, tmp_path: Path) -> None:
    _trade(sqlite_ops)
    merged, _ = admin.build_report(STRATEGY, None, EXCHANGE)
    page = tmp_path / "report.html"
    page.write_text(admin.render_report(merged, html=True), encoding="utf-8")
    parsed = parse_strict(page.read_text(encoding="utf-8"))
    # one row per statistic, the events header, one row per event (fewer than the cap here)
    assert len(merged.rows) < merged.max_rows
    assert parsed.tags["tr"] == len(statistic_rows(merged.stats)) + 1 + len(merged.rows)
    assert "Equity curve (cumulative PNL, %)" in parsed.text
    if not CHROMIUM.exists():
        return  # the rendering half needs Debian's chromium; the parser half always runs
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--screenshot={shot}",
                    "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=60, check=True)
    width, height, distinct = _png_pixels_vary(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    assert distinct > 50  # text, tables and charts drawn, not a blank page


#: Appended to a copy of the report: measures the events table and writes the numbers into
#: the page title, which `--dump-dom` prints (the report itself carries no script).
_MEASURE = """<script>
const table = document.querySelector('table.events'), box = table.parentElement;
document.title = 'FIT ' + JSON.stringify({right: table.getBoundingClientRect().right,
  view: document.documentElement.clientWidth, scroll: box.scrollWidth, client: box.clientWidth,
  last: table.querySelector('th:last-child').getBoundingClientRect().right});
</script></body>"""


def test_html_report_events_table_fits_1400_pixels(sqlite_ops: OpsEnv, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "this test needs Debian's chromium (apt-get install chromium)"
    _trade(sqlite_ops)
    merged, _ = admin.build_report(STRATEGY, None, EXCHANGE)
    document = admin.render_report(merged, html=True)
    assert f"<h1>Paper report: {STRATEGY} · {EXCHANGE}" in document
    page = tmp_path / "measured.html"
    page.write_text(document.replace("</body>", _MEASURE), encoding="utf-8")
    dom = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                          "--no-first-run", "--window-size=1400,1000", "--dump-dom",
                          page.as_uri()], capture_output=True, timeout=60, check=True).stdout
    found = re.search(rb"<title>FIT ([^<]*)</title>", dom)
    assert found is not None, dom[:500]
    box = json.loads(found.group(1).decode().replace("&quot;", '"'))
    assert box["scroll"] <= box["client"], box  # nothing hidden behind a scroll bar
    assert box["last"] <= box["view"] and box["right"] <= box["view"], box  # Close Reason shows
    shot = tmp_path / "report-1400.png"  # kept in tmp_path to look at
    (tmp_path / "report.html").write_text(document, encoding="utf-8")
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--window-size=1400,2200", f"--screenshot={shot}",
                    (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=60, check=True)
    assert _png_pixels_vary(shot.read_bytes())[:2] == (1400, 2200)

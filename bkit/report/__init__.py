"""Live reports: pure renderers of events and statistics into Markdown or one HTML page.

The statistics themselves are computed in `bkit.core.statistics`.
"""

from bkit.report.html import render_html_report, write_html
from bkit.report.markdown import REPORT_COLUMNS, render_markdown_report

__all__ = ["REPORT_COLUMNS", "render_html_report", "render_markdown_report", "write_html"]

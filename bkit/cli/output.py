"""Output helpers and exit codes shared by the `bkit` commands."""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def say(line: str) -> None:
    print(line, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows as aligned text columns under a dashed header line."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

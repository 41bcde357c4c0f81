"""Resident memory of worker process trees sampled over a run, and what "flat" means for it.

A soak samples every worker (its main process and its pool children, by pid) every few wall
seconds; the report gives each tree's series, its start / 50 % / end / max and the growth over
the second half of the run (RSS at the end against RSS at half time), which is what "memory
stays flat" is judged on: the first half holds the warm-up (imports, caches filling, the
allocator's arenas), a leak keeps growing after it. Per-process figures show a single growing
child that a tree's total would hide. RSS of forked children counts the pages they still share
with their parent, so a tree's RSS over-states its private memory; growth is what matters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil


@dataclass
class RssSeries:
    """RSS samples (MB) of labelled processes at wall times (s since the run started)."""

    times: list[float] = field(default_factory=list)
    #: label ("w0 main 1234", "w0 child 1240") → {sample index: MB}
    processes: dict[str, dict[int, float]] = field(default_factory=dict)
    #: label → the tree it belongs to ("w0")
    tree_of: dict[str, str] = field(default_factory=dict)

    def sample(self, elapsed_s: float, trees: Sequence[tuple[str, int]]) -> None:
        """Record the RSS of every process of each (tree name, main pid) now."""
        index = len(self.times)
        self.times.append(elapsed_s)
        for tree, pid in trees:
            with contextlib.suppress(psutil.Error):
                main = psutil.Process(pid)
                members = [("main", main)] + [("child", c) for c in main.children(recursive=True)]
                for role, proc in members:
                    with contextlib.suppress(psutil.Error):
                        self.record(index, tree, f"{tree} {role} {proc.pid}",
                                    proc.memory_info().rss / 1e6)

    def record(self, index: int, tree: str, label: str, mb: float) -> None:
        self.processes.setdefault(label, {})[index] = mb
        self.tree_of[label] = tree

    def trees(self) -> list[str]:
        return sorted(set(self.tree_of.values()))

    def tree_total(self, tree: str, index: int) -> float | None:
        """The tree's RSS at sample `index` (MB), None if none of its processes was read."""
        values = [s[index] for label, s in self.processes.items()
                  if self.tree_of[label] == tree and index in s]
        return sum(values) if values else None

    def total(self, index: int) -> float | None:
        values = [v for t in self.trees() if (v := self.tree_total(t, index)) is not None]
        return sum(values) if values else None


def at_fraction(times: Sequence[float], values: dict[int, float], fraction: float
                ) -> float | None:
    """The sampled value nearest to `fraction` of the run's sampled span (first to last)."""
    if not values:
        return None
    span_start, span_end = times[min(values)], times[max(values)]
    target = span_start + fraction * (span_end - span_start)
    return values[min(values, key=lambda i: abs(times[i] - target))]


@dataclass(frozen=True)
class RssFigures:
    """One series' start, half-time, end and max (MB), and its second-half growth (%)."""

    start: float
    half: float
    end: float
    peak: float

    @property
    def second_half_growth_pct(self) -> float:
        return 100.0 * (self.end - self.half) / self.half if self.half else 0.0


def figures(times: Sequence[float], values: dict[int, float]) -> RssFigures | None:
    if not values:
        return None
    half = at_fraction(times, values, 0.5)
    assert half is not None
    return RssFigures(values[min(values)], half, values[max(values)], max(values.values()))


def _line(name: str, f: RssFigures | None) -> str:
    if f is None:
        return f"  {name:<24} no samples"
    return (f"  {name:<24} start {f.start:7.1f}  50 % {f.half:7.1f}  end {f.end:7.1f}  "
            f"max {f.peak:7.1f} MB   second half {f.second_half_growth_pct:+5.1f} %")


def report(series: RssSeries) -> str:
    """The series (one row per sample: each tree and the total, MB), then start / 50 % / end /
    max and second-half growth per tree, for the total and for every process."""
    trees = series.trees()
    lines = ["worker RSS series (MB; a tree = a worker's main process and its pool children):",
             "  " + f"{'t (s)':>7}" + "".join(f"{t:>9}" for t in trees) + f"{'total':>9}"]
    tree_values: dict[str, dict[int, float]] = {t: {} for t in [*trees, "total"]}
    for i, t in enumerate(series.times):
        row = f"  {t:7.0f}"
        for tree in trees:
            value = series.tree_total(tree, i)
            if value is not None:
                tree_values[tree][i] = value
            row += f"{value:9.1f}" if value is not None else f"{'-':>9}"
        total = series.total(i)
        if total is not None:
            tree_values["total"][i] = total
        row += f"{total:9.1f}" if total is not None else f"{'-':>9}"
        lines.append(row)
    lines.append("per worker tree:")
    lines += [_line(name, figures(series.times, values)) for name, values in tree_values.items()]
    lines.append("per process:")
    lines += [_line(label, figures(series.times, values))
              for label, values in sorted(series.processes.items())]
    return "\n".join(lines)

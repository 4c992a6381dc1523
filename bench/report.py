"""Rows, the table, the targets and the JSON file.

A `Row` is one tool in one scenario: the wall times of its successful runs (median and min are
what the table shows), what went wrong in the others, and side measurements (CPU seconds of the
tool and of the emulator, peak RSS). The ratio column is syncd's median divided by the tool's
median in the same scenario: below 1 syncd was faster, above 1 slower. The issue's targets are
phrased that way too ("syncd at most 0.7x rclone" is a ratio of at most 0.70).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.settings import RESULTS_DIR

SYNCD = "syncd"


@dataclass
class Row:
    """One tool in one scenario."""

    scenario: str
    tool: str
    command: str = ""
    #: Wall seconds of each successful run.
    samples: list[float] = field(default_factory=list)
    #: One line per run that did not count (exit code, timeout, wrong result).
    failures: list[str] = field(default_factory=list)
    #: What one run moves, for the rate column: ("files", count) or ("MB", megabytes).
    amount: tuple[str, float] | None = None
    #: Side measurements per run, e.g. {"moto CPU s": [...], "peak RSS MB": [...]}.
    extra: dict[str, list[float]] = field(default_factory=dict)
    #: Why the tool did not run at all (unavailable), or a remark shown in the notes column.
    note: str = ""
    #: For rows that are not timings (latency percentiles, idle CPU): the text of the value.
    value: str = ""
    #: Whether this row is compared with the scenario's syncd row.
    compare: bool = True

    def add(self, wall_s: float, **extra: float) -> None:
        self.samples.append(wall_s)
        for key, value in extra.items():
            self.extra.setdefault(key, []).append(value)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def minimum(self) -> float | None:
        return min(self.samples) if self.samples else None

    def extra_median(self, key: str) -> float | None:
        values = self.extra.get(key)
        return statistics.median(values) if values else None

    def extra_max(self, key: str) -> float | None:
        values = self.extra.get(key)
        return max(values) if values else None

    def rate(self) -> str:
        median = self.median
        if self.amount is None or not median:
            return ""
        unit, quantity = self.amount
        return (
            f"{quantity / median:,.0f} {unit}/s"
            if unit == "files"
            else (f"{quantity / median:,.1f} {unit}/s")
        )


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def ratio(rows: Sequence[Row], row: Row) -> float | None:
    """syncd's median / this row's median, within the row's scenario."""
    if not row.compare:
        return None
    reference = next((r for r in rows if r.scenario == row.scenario and r.tool == SYNCD), None)
    if reference is None or reference.median is None or not row.median:
        return None
    return reference.median / row.median


def _notes(row: Row) -> str:
    parts: list[str] = []
    for key in sorted(row.extra):
        value = row.extra_median(key)
        if value is None:
            continue
        if key.endswith("RSS MB"):
            peak = row.extra_max(key)
            parts.append(f"{key} {peak:.0f} (max)")
        else:
            parts.append(f"{key} {value:.2f}")
    if row.failures:
        parts.append(f"{len(row.failures)} run(s) failed: {row.failures[0]}")
    if row.note:
        parts.append(row.note)
    return "; ".join(parts)


def grouped(rows: Sequence[Row]) -> list[Row]:
    """Rows grouped by scenario (in the order scenarios first appear), tools in run order."""
    order: dict[str, int] = {}
    for row in rows:
        order.setdefault(row.scenario, len(order))
    return sorted(rows, key=lambda row: order[row.scenario])


def table(rows: Sequence[Row]) -> str:
    """The table, as aligned plain text, one block per scenario."""
    rows = grouped(rows)
    header = ("scenario", "tool", "median s", "min s", "rate", "syncd/tool", "notes")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        if row.value:
            median, minimum = row.value, ""
        else:
            median, minimum = _fmt(row.median), _fmt(row.minimum)
        r = ratio(rows, row)
        lines.append(
            (
                row.scenario,
                row.tool,
                median,
                minimum,
                row.rate(),
                f"{r:.2f}" if r is not None else "",
                _notes(row),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out: list[str] = []
    previous = ""
    for index, line in enumerate(lines):
        if index > 1 and line[0] != previous:
            out.append("")
        previous = line[0]
        cells = [
            line[i].rjust(widths[i]) if i in (2, 3, 4, 5) else line[i].ljust(widths[i])
            for i in range(len(header) - 1)
        ]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths) + "  -----")
    return "\n".join(out)


@dataclass
class Target:
    """One of the issue's targets, as measured in this run: met, not met, or not measured."""

    name: str
    goal: str
    measured: str
    met: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        detail = self.measured if self.met is None else f"measured {self.measured}"
        return f"  [{verdict:>12}] {self.name}: {self.goal} — {detail}"


def find_row(rows: Iterable[Row], scenario_prefix: str, tool: str) -> Row | None:
    return next(
        (r for r in rows if r.scenario.startswith(scenario_prefix) and r.tool == tool), None
    )


def machine() -> dict[str, object]:
    """Cores, memory, CPU model, kernel: what the numbers depend on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_mb": memory_mb,
        "cpu_model": model,
        "kernel": platform.release(),
        "os": platform.platform(),
    }


def write_json(
    rows: Sequence[Row],
    targets: Sequence[Target],
    *,
    settings: dict[str, object],
    versions: dict[str, str],
    commands: dict[str, str],
    missing: dict[str, str],
    started: float,
    findings: Sequence[str],
) -> Path:
    """bench/results/bench-YYYYmmdd-HHMMSS.json (and latest.json beside it)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    document = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "versions": versions,
        "settings": settings,
        "commands": commands,
        "unavailable": missing,
        "rows": [
            {
                **asdict(row),
                "median_s": row.median,
                "min_s": row.minimum,
                "rate": row.rate(),
                "syncd_over_tool": ratio(rows, row),
            }
            for row in grouped(rows)
        ],
        "targets": [asdict(t) for t in targets],
        "findings": list(findings),
    }
    path = RESULTS_DIR / f"bench-{stamp}.json"
    text = json.dumps(document, indent=2)
    path.write_text(text + "\n")
    (RESULTS_DIR / "latest.json").write_text(text + "\n")
    return path

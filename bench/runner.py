"""The shared context of one bench run: settings, peers, emulators, the work folder, the rows.

Scenarios (bench/scenarios.py, bench/daemon.py) call `Bench.measure` for every timed command;
it runs the command, records the run in its row (or the failure: exit code, timeout) and
keeps the command line for the "flags" section of the output.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import proc
from bench.emulators import Azurite, FakeGCS, Moto
from bench.peers import Peers
from bench.report import Row
from bench.settings import Settings

Extra = Mapping[str, Callable[[proc.Measured], float]]
#: Side measurements of a timed command, by the name they have in the table.
#: "tool sys s" is the kernel's part of the CPU: on this kind of VM it drifts a lot between
#: runs (the same rsync: 1.1 s to 3 s), so it tells a slow kernel from a slow tool.
TOOL_CPU: Extra = {"tool CPU s": lambda m: m.cpu_s, "tool sys s": lambda m: m.sys_s}
RSS_AND_CPU: Extra = {"peak RSS MB": lambda m: m.peak_rss_mb, **TOOL_CPU}


def say(message: str) -> None:
    """Progress on stderr (the table goes to stdout at the end)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    settings: Settings
    peers: Peers
    work: Path
    env: dict[str, str]
    moto: Moto | None = None
    gcs: FakeGCS | None = None
    azurite: Azurite | None = None
    rows: list[Row] = field(default_factory=list)
    #: tool -> the command lines it ran, with the work folder shown as $WORK.
    commands: dict[str, list[str]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    _serial: int = 0

    # -- rows ----------------------------------------------------------------------------------
    def row(self, scenario: str, tool: str, **kwargs: Any) -> Row:
        """The row of (scenario, tool), created on first use, in first-use order."""
        for existing in self.rows:
            if existing.scenario == scenario and existing.tool == tool:
                return existing
        created = Row(scenario=scenario, tool=tool, **kwargs)
        self.rows.append(created)
        return created

    def unavailable(self, scenario: str, tool: str, reason: str) -> None:
        self.row(scenario, tool, note=f"unavailable: {reason}")

    # -- folders -------------------------------------------------------------------------------
    def fresh_dir(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def serial(self) -> int:
        self._serial += 1
        return self._serial

    def shown(self, argv: Sequence[str]) -> str:
        """A command line as printed: the work folder as $WORK, secrets elided."""
        from bench.emulators import AZURITE_KEY

        text = shlex.join(argv).replace(str(self.work), "$WORK")
        return text.replace(AZURITE_KEY, "<azurite-dev-key>")

    # -- running -------------------------------------------------------------------------------
    def measure(
        self,
        row: Row,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: Callable[[], str | None] | None = None,
        cwd: Path | None = None,
        extra: Extra | None = None,
    ) -> proc.Measured | None:
        """Run one timed command for `row`. On success (exit 0, in time, and `check` returning
        None) the wall time and each `extra` measurement (default: the tool's CPU seconds) are
        added to the row and the run is returned; otherwise the failure is recorded and None
        is returned."""
        shown = self.shown(argv)
        row.command = row.command or shown
        lines = self.commands.setdefault(row.tool, [])
        template = _template(shown)
        if template not in lines:
            lines.append(template)
        log_path = self.work / "logs" / f"{_slug(row.scenario)}--{_slug(row.tool)}.log"
        result = proc.run(
            argv,
            env=env if env is not None else self.env,
            timeout_s=self.settings.timeout_s,
            log_path=log_path,
            cwd=cwd,
        )
        problem: str | None = None
        if result.timed_out:
            problem = f"timed out after {self.settings.timeout_s:.0f} s"
        elif result.returncode != 0:
            last = result.log_tail.strip().splitlines()[-1:] or [""]
            problem = f"exit {result.returncode}: {last[0][:160]}"
        elif check is not None:
            problem = check()
        if problem is not None:
            row.failures.append(problem)
            say(f"  {row.scenario} / {row.tool}: FAILED ({problem}); log: {log_path}")
            return None
        measures = TOOL_CPU if extra is None else extra
        row.add(result.wall_s, **{key: get(result) for key, get in measures.items()})
        say(f"  {row.scenario} / {row.tool}: {result.wall_s:.2f} s")
        return result

    def timed_out(self, row: Row) -> bool:
        """Whether an earlier run of this row hit the time limit (later runs are skipped)."""
        return any(failure.startswith("timed out") for failure in row.failures)


def syncd_config(
    path: Path,
    *,
    local: Path,
    remote: str,
    state_dir: Path,
    workers: int,
    options: Mapping[str, str] | None = None,
    **pair: object,
) -> Path:
    """A syncd config with one pair (JSON is YAML, and needs no quoting rules)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    entry: dict[str, object] = {"name": "bench", "local": str(local), "remote": remote}
    if options:
        entry["options"] = dict(options)
    entry.update(pair)
    config = {
        "state": f"sqlite:///{state_dir / 'state.db'}",
        "socket": str(state_dir / "s.sock"),
        "workers": workers,
        "pairs": [entry],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:60]


def _template(command: str) -> str:
    """A command line with the per-run parts (bucket names, numbered folders) generalised."""
    import re

    command = re.sub(r"bench-[0-9a-f]{12}", "BUCKET", command)
    return re.sub(r"/run-\d+", "/run-N", command)

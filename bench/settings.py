"""What one bench run measures: sizes (shrunk by BENCH_SCALE), repetitions, time limits, paths.

Every size of the issue's scenarios lives here, at full scale, so the README and the output can
name them; `Settings.from_env()` applies BENCH_SCALE (a quick run: `BENCH_SCALE=0.05 make bench`).
Counts never drop below a floor that still measures something (a 3-file "upload" would only
measure process start-up).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TOOLS_DIR = BENCH_DIR / ".tools"
RESULTS_DIR = BENCH_DIR / "results"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"bench: {name} must be a number (got {raw!r})") from None
    if value <= 0:
        raise SystemExit(f"bench: {name} must be greater than 0 (got {raw!r})")
    return value


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise SystemExit(f"bench: {name} must be a whole number >= {minimum} (got {raw!r})")
    return int(raw)


def _scaled(full: int, scale: float, floor: int) -> int:
    return max(floor, round(full * scale))


@dataclass(frozen=True)
class Settings:
    """Sizes at the chosen scale, plus how each tool is run."""

    scale: float
    runs: int
    #: Longest a single command may run before it is stopped and reported as timed out.
    timeout_s: float
    #: Scenario numbers to run ("1".."7"); all by default.
    only: frozenset[str]
    #: `workers:` in syncd's config (and `--transfers` for `syncd upload`).
    syncd_workers: int

    # scenarios 1-3 and 6: many small files
    small_files: int
    small_folders: int
    small_size: int
    # scenario 4: one big file
    big_size: int
    # scenario 5: a local-folder remote
    local_files: int
    local_size: int
    # scenario 7: the daemon
    drops: int
    settle_s: float
    watch_files: int
    idle_window_s: float

    @classmethod
    def from_env(cls) -> Settings:
        scale = _env_float("BENCH_SCALE", 1.0)
        only_raw = os.environ.get("BENCH_ONLY", "").replace(",", " ").split()
        only = frozenset(only_raw) if only_raw else frozenset("1234567")
        unknown = only - frozenset("1234567")
        if unknown:
            raise SystemExit(
                f"bench: BENCH_ONLY takes scenario numbers 1-7 (got {sorted(unknown)})"
            )
        return cls(
            scale=scale,
            runs=_env_int("BENCH_RUNS", 3, minimum=3),
            timeout_s=_env_float("BENCH_TIMEOUT", max(120.0, 1800.0 * scale)),
            only=only,
            syncd_workers=_env_int("BENCH_SYNCD_WORKERS", 16),
            small_files=_scaled(2000, scale, 40),
            small_folders=20,
            small_size=4 * KiB,
            big_size=max(16 * MiB, round(GiB * scale) // MiB * MiB),
            local_files=_scaled(20_000, scale, 100),
            local_size=1 * KiB,
            drops=_scaled(200, scale, 20),
            settle_s=0.5,
            watch_files=_scaled(100_000, scale, 1000),
            idle_window_s=max(10.0, 60.0 * scale),
        )

    def describe(self) -> dict[str, object]:
        """The sizes as they were used, for the output's header and the JSON file."""
        return {
            "scale": self.scale,
            "runs": self.runs,
            "timeout_s": self.timeout_s,
            "scenarios": sorted(self.only),
            "syncd_workers": self.syncd_workers,
            "small_files": self.small_files,
            "small_folders": self.small_folders,
            "small_size": self.small_size,
            "big_size": self.big_size,
            "local_files": self.local_files,
            "local_size": self.local_size,
            "drops": self.drops,
            "settle_s": self.settle_s,
            "watch_files": self.watch_files,
            "idle_window_s": self.idle_window_s,
        }

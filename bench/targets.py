"""The issue's targets, evaluated on this run's rows: met, not met, or not measured.

Nothing here fails the run: `make bench` reports, tests never assert timings.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import daemon, scenarios
from bench.report import Row, Target, find_row

NOT_RUN = "scenario not run"


def _median(row: Row | None) -> float | None:
    return row.median if row is not None else None


def _ratio_target(
    rows: Sequence[Row], name: str, *, scenario: str, peer: str, limit: float, goal: str
) -> Target:
    syncd_row, peer_row = find_row(rows, scenario, "syncd"), find_row(rows, scenario, peer)
    if syncd_row is None and peer_row is None:
        return Target(name, goal, NOT_RUN, None)
    mine, theirs = _median(syncd_row), _median(peer_row)
    timed_out = [f for f in (syncd_row.failures if syncd_row else []) if f.startswith("timed out")]
    if mine is None and theirs and timed_out:
        return Target(name, goal, f"syncd {timed_out[0]} ({peer}: {theirs:.3f} s)", False)
    if mine is None or not theirs:
        return Target(name, goal, f"syncd or {peer} has no successful run", None)
    value = mine / theirs
    return Target(name, goal, f"{value:.2f}x ({mine:.3f} s vs {theirs:.3f} s)", value <= limit)


def _under(
    name: str,
    goal: str,
    value: float | None,
    *,
    limit: float,
    shown: str,
    missing: str = "no successful run",
) -> Target:
    """Met when `value` is below `limit`; `shown` formats it, `missing` says why it is None."""
    if value is None:
        return Target(name, goal, missing, None)
    return Target(name, goal, shown.format(value), value < limit)


def _with_floor(target: Target, rows: Sequence[Row]) -> Target:
    """Target 2 with its floor beside it: the bare listing of the bucket against the same
    `aws s3 sync` (a target below the floor is out of any tool's reach on this emulator)."""
    floor = _median(find_row(rows, scenarios.S2, scenarios.RAW_LIST_NAME))
    theirs = _median(find_row(rows, scenarios.S2, "aws s3 sync"))
    if floor is None or not theirs:
        return target
    return Target(
        target.name,
        target.goal,
        f"{target.measured}; floor: {scenarios.RAW_LIST_NAME} {floor:.3f} s = "
        f"{floor / theirs:.2f}x",
        target.met,
    )


def evaluate(rows: Sequence[Row], settle_s: float) -> list[Target]:
    def ratio(name: str, scenario: str, peer: str, limit: float, goal: str) -> Target:
        return _ratio_target(rows, name, scenario=scenario, peer=peer, limit=limit, goal=goal)

    found = [
        ratio("1a", scenarios.S1, "rclone", 0.7, "first upload: syncd at most 0.7x rclone"),
        ratio(
            "1b",
            scenarios.S1,
            "boto3 put_object x16",
            1.1,
            "first upload: syncd within 10% of the raw boto3 ceiling",
        ),
        _with_floor(
            ratio("2", scenarios.S2, "aws s3 sync", 0.3, "no-op: syncd at most 0.3x aws s3 sync"),
            rows,
        ),
        ratio("4a", scenarios.S4_UP, "aws s3 cp", 1.0, "big upload: at least as fast as aws s3 cp"),
    ]
    big = [
        r for r in rows if r.scenario in (scenarios.S4_UP, scenarios.S4_DOWN) and r.tool == "syncd"
    ]
    peaks = [v for r in big for v in r.extra.get("peak RSS MB", [])]
    found.append(
        _under(
            "4b",
            "big file: syncd peak RSS under 150 MB (up and down)",
            max(peaks) if peaks else None,
            limit=150,
            shown="{:.0f} MB",
            missing="no successful run" if big else NOT_RUN,
        )
    )
    found.append(ratio("5", scenarios.S5, "rsync -a", 1.5, "local remote: at most 1.5x rsync"))
    for cloud in ("Azure", "GCS"):
        for label, scenario in (("first upload", "6 first upload"), ("no-op", "6 no-op")):
            found.append(
                ratio(
                    f"6 {cloud} {label}",
                    f"{scenario} ({cloud})",
                    "rclone",
                    1.0,
                    "no slower than rclone",
                )
            )
    latency = find_row(rows, daemon.S7_LATENCY, "syncd run")
    p99 = latency.extra.get("p99 s", [None])[0] if latency else None
    idle = find_row(rows, daemon.S7_IDLE, "syncd run")
    cpu = idle.extra_median("CPU %") if idle else None
    rss = idle.extra_max("RSS MB") if idle else None
    goal_7a = f"close->object p99 under 1.5 s with settle {settle_s}"
    idle_missing = "no successful run" if idle else NOT_RUN
    found += [
        _under(
            "7a",
            goal_7a,
            p99,
            limit=1.5,
            shown="{:.3f} s",
            missing="no successful run" if latency else NOT_RUN,
        ),
        _under("7b", "idle CPU under 1 %", cpu, limit=1.0, shown="{:.2f} %", missing=idle_missing),
        _under(
            "7c",
            "idle RSS under 200 MB with the files under watch",
            rss,
            limit=200,
            shown="{:.0f} MB",
            missing=idle_missing,
        ),
    ]
    found.append(
        ratio("7d", daemon.S7_START, "find -printf", 3.0, "startup reconciliation at most 3x find")
    )
    return found

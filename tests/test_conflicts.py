"""Conflict rules and names, from tables; trash layout and pruning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.engine.conflicts import Winner, conflict_name, is_conflict_copy_of, resolve
from syncd.engine.trash import move_to_local_trash, prune_local_trash, remote_trash_key

OLD, NEW = 1_000, 2_000

RESOLUTIONS = [
    # id, strategy, local mtime, remote mtime, winner, older
    ("timestamp: local newer", "timestamp_wins", NEW, OLD, Winner.LOCAL, None),
    ("timestamp: remote newer", "timestamp_wins", OLD, NEW, Winner.REMOTE, None),
    ("timestamp: exact tie keeps both", "timestamp_wins", NEW, NEW, Winner.BOTH, "remote"),
    ("timestamp: unknown remote time is older", "timestamp_wins", OLD, None, Winner.LOCAL, None),
    ("local_wins even when older", "local_wins", OLD, NEW, Winner.LOCAL, None),
    ("cloud_wins even when older", "cloud_wins", NEW, OLD, Winner.REMOTE, None),
    ("manual touches nothing", "manual", NEW, OLD, Winner.NONE, None),
    ("version_preserve: local older", "version_preserve", OLD, NEW, Winner.BOTH, "local"),
    ("version_preserve: remote older", "version_preserve", NEW, OLD, Winner.BOTH, "remote"),
]


@pytest.mark.parametrize(
    ("strategy", "local", "remote", "winner", "older"),
    [case[1:] for case in RESOLUTIONS],
    ids=[case[0] for case in RESOLUTIONS],
)
def test_resolution_table(
    strategy: str, local: int, remote: int | None, winner: Winner, older: str | None
) -> None:
    resolution = resolve(strategy, local, remote)
    assert (resolution.winner, resolution.older) == (winner, older)
    assert resolution.reason


def test_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="newest"):
        resolve("newest", OLD, NEW)


WHEN = datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC)
NAMES = [
    ("report.csv", "report.conflict-20261124-101500-laptop.csv"),
    ("dir/sub/report.csv", "dir/sub/report.conflict-20261124-101500-laptop.csv"),
    ("archive.tar.gz", "archive.tar.conflict-20261124-101500-laptop.gz"),
    ("Makefile", "Makefile.conflict-20261124-101500-laptop"),
    (".bashrc", ".bashrc.conflict-20261124-101500-laptop"),
    (
        "report.conflict-20261123-090000-pc.csv",
        "report.conflict-20261123-090000-pc.conflict-20261124-101500-laptop.csv",
    ),
]


@pytest.mark.parametrize(("path", "expected"), NAMES, ids=[n[0] for n in NAMES])
def test_conflict_names(path: str, expected: str) -> None:
    assert conflict_name(path, WHEN, "laptop", lambda _: False) == expected
    assert ".conflict-" in expected


def test_conflict_name_never_reuses_a_taken_name() -> None:
    taken = {
        "report.conflict-20261124-101500-laptop.csv",
        "report.conflict-20261124-101500-laptop-1.csv",
    }
    name = conflict_name("report.csv", WHEN, "laptop", taken.__contains__)
    assert name == "report.conflict-20261124-101500-laptop-2.csv"


def test_local_trash_keeps_every_version_and_prunes_old_ones(tmp_path: Path) -> None:
    for content in (b"first", b"second"):
        victim = tmp_path / "a" / "doc.txt"
        victim.parent.mkdir(exist_ok=True)
        victim.write_bytes(content)
        move_to_local_trash(tmp_path, victim, "a/doc.txt", WHEN)
    kept = sorted(p.read_bytes() for p in (tmp_path / ".syncd" / "trash").rglob("doc.txt"))
    assert kept == [b"first", b"second"]  # the same second twice: a -1 folder, no overwrite
    assert prune_local_trash(tmp_path, days=30, now=WHEN.timestamp() + 29 * 86400) == 0
    assert prune_local_trash(tmp_path, days=30, now=WHEN.timestamp() + 31 * 86400) == 2
    assert not list((tmp_path / ".syncd" / "trash").rglob("doc.txt"))


def test_remote_trash_key_is_under_the_trash_prefix_and_free() -> None:
    taken = {".syncd-trash/20261124-101500/a.txt"}
    key = remote_trash_key("a.txt", WHEN, taken.__contains__)
    assert key == ".syncd-trash/20261124-101500-1/a.txt"


@pytest.mark.parametrize(
    ("candidate", "path", "expected"),
    [
        ("d/report.conflict-20261124-101500-vm.csv", "d/report.csv", True),
        ("d/report.conflict-20261124-101500-vm-2.csv", "d/report.csv", True),
        ("d/Makefile.conflict-20261124-101500-vm", "d/Makefile", True),
        ("report.conflict-20261124-101500-vm.csv", "d/report.csv", False),  # other folder
        ("d/reportx.conflict-20261124-101500-vm.csv", "d/report.csv", False),  # other file
        ("d/report.conflict-20261124-101500-other.csv", "d/report.csv", False),  # other host
        ("d/report.conflict-2026-vm.csv", "d/report.csv", False),  # not a time stamp
    ],
)
def test_conflict_copies_are_recognised(candidate: str, path: str, expected: bool) -> None:
    """How a restart finds the copy an interrupted run already made (never a second one)."""
    assert is_conflict_copy_of(candidate, path, "vm") is expected

"""Conflict rules and names, from tables; trash layout and pruning, and a trash that a symlink
would lead out of the root (never followed: nothing outside the root is written or deleted)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import Setup, nest_deep, syncd, unnest_deep

from syncd.engine.conflicts import Winner, conflict_name, is_conflict_copy_of, resolve
from syncd.engine.trash import (
    UnsafeTrash,
    move_to_local_trash,
    prune_local_trash,
    remote_trash_key,
    stamp,
)

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
    """Pruned after trash_days; 0 keeps them for good (as log_retention_days: 0 does; it
    emptied the trash at every pass)."""
    for content in (b"first", b"second"):
        victim = tmp_path / "a" / "doc.txt"
        victim.parent.mkdir(exist_ok=True)
        victim.write_bytes(content)
        move_to_local_trash(tmp_path, victim, "a/doc.txt", WHEN)
    kept = sorted(p.read_bytes() for p in (tmp_path / ".syncd" / "trash").rglob("doc.txt"))
    assert kept == [b"first", b"second"]  # the same second twice: a -1 folder, no overwrite
    assert prune_local_trash(tmp_path, 30, _no_skip, now=WHEN.timestamp() + 29 * 86400) == 0
    assert prune_local_trash(tmp_path, 0, _no_skip, now=WHEN.timestamp() + 9999 * 86400) == 0
    assert prune_local_trash(tmp_path, 30, _no_skip, now=WHEN.timestamp() + 31 * 86400) == 2
    assert not list((tmp_path / ".syncd" / "trash").rglob("doc.txt"))


def test_a_trash_folder_is_as_old_as_its_name_or_its_mtime_says(tmp_path: Path) -> None:
    """The age of a trash folder came from the time in its name only: one aged on disk (by
    hand, or restored from a backup with its times) was never pruned."""
    for name, when in (("aged.txt", datetime.now(UTC)), ("fresh.txt", datetime.now(UTC))):
        victim = tmp_path / name
        victim.write_bytes(name.encode())
        move_to_local_trash(tmp_path, victim, name, when.replace(second=len(name) % 60))
    trash = tmp_path / ".syncd" / "trash"
    (aged,) = [folder for folder in trash.iterdir() if (folder / "aged.txt").exists()]
    forty_days_ago = time.time() - 40 * 86400
    os.utime(aged, (forty_days_ago, forty_days_ago))
    assert prune_local_trash(tmp_path, 30, _no_skip) == 1
    assert [p.name for p in trash.rglob("*.txt")] == ["fresh.txt"]


def test_a_trash_folder_too_deep_to_remove_is_said_and_left(tmp_path: Path) -> None:
    """A tree ~1100 folders deep deleted on the other side went to the trash whole; pruning
    it (`shutil.rmtree` recurses once per level) raised RecursionError out of every later
    pass and the daemon's start. It is left, said once, and the other old folders go."""
    deep = tmp_path / "deep.txt"
    deep.write_bytes(b"deep")
    move_to_local_trash(tmp_path, deep, "deep.txt", WHEN)
    (old,) = (tmp_path / ".syncd" / "trash").iterdir()
    nest_deep(old, 1100)
    shallow = tmp_path / "shallow.txt"
    shallow.write_bytes(b"shallow")
    move_to_local_trash(tmp_path, shallow, "shallow.txt", WHEN.replace(second=1))
    skipped: list[tuple[str, str]] = []
    later = WHEN.timestamp() + 31 * 86400
    assert prune_local_trash(tmp_path, 30, lambda *said: skipped.append(said), now=later) == 1
    assert skipped == [
        (f".syncd/trash/{old.name}", "nested too deeply to remove: remove it by hand")
    ]
    assert [p.name for p in (tmp_path / ".syncd" / "trash").iterdir()] == [old.name]
    unnest_deep(old)


def test_a_path_trashed_as_a_file_then_as_a_folder_in_one_second(tmp_path: Path) -> None:
    """`x` trashed as a file, then `x/y` the same second: that second's trash folder holds a
    file where `x/` would go, so `x/y` goes to the next one (it was refused as unsafe)."""
    (tmp_path / "x").write_bytes(b"x was a file")
    move_to_local_trash(tmp_path, tmp_path / "x", "x", WHEN)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "y").write_bytes(b"then a folder")
    kept = move_to_local_trash(tmp_path, tmp_path / "x" / "y", "x/y", WHEN)
    trash = tmp_path / ".syncd" / "trash"
    assert sorted(p.relative_to(trash).as_posix() for p in trash.rglob("*") if p.is_file()) == [
        f"{stamp(WHEN)}-1/x/y",
        f"{stamp(WHEN)}/x",
    ]
    assert kept.read_bytes() == b"then a folder"


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


def _bytes(name: str) -> int:
    return len(name.rpartition("/")[2].encode())


MARKER = ".conflict-20261124-101500-laptop"


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("y" * 226 + ".md", ".md"),  # 229 bytes: the copy's name would be 261
        ("y" * 255, ""),  # no extension: NAME_MAX itself
        ("é" * 120 + ".txt", ".txt"),  # two bytes a character: cut between two of them
        ("日本" * 40 + ".csv", ".csv"),  # three
    ],
    ids=["ascii", "no extension", "two-byte", "three-byte"],
)
def test_a_copy_of_a_long_name_is_shortened_to_fit_a_file_name(name: str, ext: str) -> None:
    """A copy's name longer than 255 bytes could never be made (the conflict never settled):
    NAME is shortened on a character boundary; the marker and the extension stay whole."""
    copy = conflict_name(f"dir/{name}", WHEN, "laptop", lambda _: False)
    assert copy.startswith("dir/") and copy.endswith(MARKER + ext)
    assert 252 <= _bytes(copy) <= 255  # the most of NAME that fits
    kept = copy.rpartition("/")[2].removesuffix(MARKER + ext)
    assert kept and name.startswith(kept)
    assert is_conflict_copy_of(copy, f"dir/{name}", "laptop")


def test_the_counter_of_a_taken_long_name_fits_too() -> None:
    name = "y" * 226 + ".md"
    taken: set[str] = set()
    for _ in range(12):
        taken.add(conflict_name(name, WHEN, "laptop", taken.__contains__))
    assert {_bytes(each) for each in taken} == {255}
    assert any(each.endswith(f"{MARKER}-11.md") for each in taken)
    assert all(is_conflict_copy_of(each, name, "laptop") for each in taken)


def test_a_copy_fits_a_buckets_key_limit_too() -> None:
    """A bucket takes keys of 1024 bytes (its prefix included): a deep path's copy is
    shortened to fit that, and is still recognised as the copy it is."""
    path = "/".join(["d" * 200] * 4) + "/" + "n" * 200 + ".txt"  # 1008 bytes
    copy = conflict_name(path, WHEN, "laptop", lambda _: False, max_path=1020)
    assert len(copy.encode()) == 1020 and copy.endswith(MARKER + ".txt")
    assert copy.rpartition("/")[0] == path.rpartition("/")[0]
    assert is_conflict_copy_of(copy, path, "laptop", max_path=1020)
    assert conflict_name("short.txt", WHEN, "laptop", lambda _: False, max_path=1020) == (
        f"short{MARKER}.txt"
    )


def test_an_extension_too_long_to_keep_becomes_part_of_the_name() -> None:
    name = "a." + "x" * 240
    copy = conflict_name(name, WHEN, "laptop", lambda _: False)
    assert _bytes(copy) == 255 and copy.endswith(MARKER) and copy.startswith("a.xxx")
    assert is_conflict_copy_of(copy, name, "laptop")


def test_a_shortened_copy_is_the_copy_of_its_own_long_name_only() -> None:
    long_a = "y" * 240 + "a.md"
    long_b = "y" * 240 + "b.md"
    copy = conflict_name(long_a, WHEN, "laptop", lambda _: False)
    assert is_conflict_copy_of(copy, long_a, "laptop")
    assert is_conflict_copy_of(copy, long_b, "laptop")  # the same start: neither can tell
    short = "y" * 10 + ".md"
    assert not is_conflict_copy_of(copy, short, "laptop")  # never shortened that far
    assert not is_conflict_copy_of(f"y{MARKER}.md", short, "laptop")
    assert not is_conflict_copy_of(f"yyyyyyyyyy{MARKER}-01.md", short, "laptop")


# -- a trash that leads out of the root ------------------------------------------------------


def _no_skip(path: str, reason: str) -> None:
    raise AssertionError(f"unexpected skip: {path}: {reason}")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the root, holding one file that must survive everything."""
    folder = tmp_path / "outside"
    (folder / "20200101-000000").mkdir(parents=True)
    (folder / "20200101-000000" / "keep.txt").write_bytes(b"not syncd's")
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(folder / "20200101-000000" / "keep.txt", (old, old))
    return folder


OUTSIDE_BEFORE = {"20200101-000000/keep.txt": b"not syncd's"}

# Each folder on the way into the trash, in turn replaced by a symlink out of the root.
LINKED = [
    ".syncd",
    ".syncd/trash",
    ".syncd/trash/20261124-101500",
    ".syncd/trash/20261124-101500/a",
]


@pytest.mark.parametrize("linked", LINKED)
def test_a_symlink_on_the_way_into_the_trash_is_not_followed_and_nothing_moves(
    tmp_path: Path, outside: Path, linked: str
) -> None:
    root = tmp_path / "root"
    (root / linked).parent.mkdir(parents=True)
    (root / linked).symlink_to(outside, target_is_directory=True)
    victim = root / "a" / "doc.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"mine")

    with pytest.raises(UnsafeTrash) as refused:
        move_to_local_trash(root, victim, "a/doc.txt", WHEN)

    assert str(refused.value) == f"{root}/{linked} is a symlink: not followed, nothing moved"
    assert victim.read_bytes() == b"mine"  # still in place: a later pass tries again
    assert _files(outside) == OUTSIDE_BEFORE


def test_a_file_where_the_trash_folder_belongs_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".syncd").write_bytes(b"")
    victim = tmp_path / "doc.txt"
    victim.write_bytes(b"mine")
    with pytest.raises(UnsafeTrash, match=r"/\.syncd is not a folder: not followed, nothing moved"):
        move_to_local_trash(tmp_path, victim, "doc.txt", WHEN)
    assert victim.read_bytes() == b"mine"


def test_a_symlinked_parent_of_the_file_is_not_followed_either(
    tmp_path: Path, outside: Path
) -> None:
    """The source side too: a folder swapped for a link after the scan moves nothing out."""
    (tmp_path / "a").symlink_to(outside / "20200101-000000", target_is_directory=True)
    with pytest.raises(UnsafeTrash, match=r"/a is a symlink: not followed, nothing moved"):
        move_to_local_trash(tmp_path, tmp_path / "a" / "keep.txt", "a/keep.txt", WHEN)
    assert _files(outside) == OUTSIDE_BEFORE
    assert not _files(tmp_path / ".syncd")


@pytest.mark.parametrize("linked", [".syncd", ".syncd/trash"])
def test_pruning_a_symlinked_trash_skips_it_with_a_warning(
    tmp_path: Path, outside: Path, linked: str
) -> None:
    root = tmp_path / "root"
    (root / linked).parent.mkdir(parents=True)
    (root / linked).symlink_to(outside, target_is_directory=True)
    skipped: list[tuple[str, str]] = []

    assert prune_local_trash(root, 1, lambda *skip: skipped.append(skip)) == 0

    assert skipped == [(linked, "is a symlink: not followed, nothing pruned")]
    assert _files(outside) == OUTSIDE_BEFORE


def test_pruning_removes_links_inside_the_trash_never_what_they_point_to(
    tmp_path: Path, outside: Path
) -> None:
    trash = tmp_path / ".syncd" / "trash"
    (trash / "20200102-000000" / "sub").mkdir(parents=True)
    (trash / "20200102-000000" / "sub" / "old.txt").write_bytes(b"old")
    (trash / "20200102-000000" / "sub" / "inner").symlink_to(outside, target_is_directory=True)
    (trash / "20200103-000000").symlink_to(outside / "20200101-000000", target_is_directory=True)
    skipped: list[tuple[str, str]] = []

    assert prune_local_trash(tmp_path, 1, lambda *skip: skipped.append(skip)) == 2

    assert list(trash.iterdir()) == []  # the old folder and both links went ...
    assert _files(outside) == OUTSIDE_BEFORE  # ... and nothing they pointed to
    assert skipped == [
        (".syncd/trash/20200103-000000", "is a symlink: removed the link, not followed")
    ]


# -- the same through `syncd once`, a folder remote -------------------------------------------


def _pair(tmp_path: Path, **extra: object) -> Setup:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra=dict(extra))
    setup.write()
    return setup


def _synced(setup: Setup, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (setup.local / name).write_bytes(data)
    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stderr


FIVE = {f"f{n}": f"file {n}".encode() for n in range(1, 6)}


@pytest.mark.parametrize("linked", [".syncd", ".syncd/trash"])
def test_once_a_remote_deletion_with_a_symlinked_trash_fails_and_keeps_the_file(
    tmp_path: Path, outside: Path, linked: str
) -> None:
    setup = _pair(tmp_path)
    _synced(setup, FIVE)
    (setup.local / linked).parent.mkdir(parents=True, exist_ok=True)
    (setup.local / linked).symlink_to(outside, target_is_directory=True)
    (tmp_path / "remote" / "f1").unlink()

    run = syncd("once", "-c", setup.config)

    assert run.returncode == 1, run.stderr
    message = f"{setup.local}/{linked} is a symlink: not followed, nothing moved"
    assert f"f1: {message}" in run.stdout
    assert (setup.local / "f1").read_bytes() == b"file 1"  # not lost
    assert _files(outside) == OUTSIDE_BEFORE  # nothing written out of the root

    (setup.local / linked).unlink()  # once the link is gone, the deletion goes through
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stdout
    assert not (setup.local / "f1").exists()
    assert [p.read_bytes() for p in (setup.local / ".syncd" / "trash").glob("*/f1")] == [b"file 1"]


def test_once_a_conflict_loser_with_a_symlinked_trash_is_not_overwritten(
    tmp_path: Path, outside: Path
) -> None:
    setup = _pair(tmp_path, conflict="cloud_wins")
    _synced(setup, FIVE)
    (setup.local / "f2").write_bytes(b"local edit")
    (tmp_path / "remote" / "f2").write_bytes(b"remote edit")
    (setup.local / ".syncd").mkdir(exist_ok=True)
    (setup.local / ".syncd" / "trash").symlink_to(outside, target_is_directory=True)

    run = syncd("once", "-c", setup.config)

    assert run.returncode == 1, run.stderr
    assert f"{setup.local}/.syncd/trash is a symlink: not followed, nothing moved" in run.stdout
    assert (setup.local / "f2").read_bytes() == b"local edit"  # kept, not replaced
    assert _files(outside) == OUTSIDE_BEFORE
    assert not [p for p in setup.local.iterdir() if p.name.startswith(".syncd-tmp-")]


def test_once_pruning_a_symlinked_trash_deletes_nothing_outside(
    tmp_path: Path, outside: Path
) -> None:
    setup = _pair(tmp_path, trash_days=1)
    _synced(setup, FIVE)
    (setup.local / ".syncd").mkdir(exist_ok=True)
    (setup.local / ".syncd" / "trash").symlink_to(outside, target_is_directory=True)

    run = syncd("once", "-c", setup.config)

    assert run.returncode == 0, run.stderr
    assert _files(outside) == OUTSIDE_BEFORE
    assert "is a symlink: not followed, nothing pruned" in run.stderr


def test_once_a_symlinked_remote_trash_is_not_followed(tmp_path: Path, outside: Path) -> None:
    """A folder remote's `.syncd-trash` is walked the same way: the deletion waits."""
    setup = _pair(tmp_path)
    _synced(setup, FIVE)
    (tmp_path / "remote" / ".syncd-trash").symlink_to(outside, target_is_directory=True)
    (setup.local / "f3").unlink()

    run = syncd("once", "-c", setup.config)

    assert run.returncode == 1, run.stderr
    assert "f3:" in run.stdout and "a parent is a symlink or a file" in run.stdout
    assert (tmp_path / "remote" / "f3").read_bytes() == b"file 3"
    assert _files(outside) == OUTSIDE_BEFORE


def test_resolve_takes_a_path_relative_to_the_folder_it_is_run_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`f.txt` in conflict in two pairs: said from inside one pair's folder it names that
    pair's file (it was refused as naming several); from elsewhere it still needs more."""
    from syncd.cli import _find_conflict
    from syncd.config.model import PairPlace

    pairs = [
        PairPlace(name="p1", local=tmp_path / "one"),
        PairPlace(name="p2", local=tmp_path / "two"),
    ]
    open_conflicts = [(pair, "f.txt", "changed on both sides", 0.0) for pair in ("p1", "p2")]
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "two")
    assert _find_conflict(pairs, open_conflicts, "f.txt") == ("p2", "f.txt")
    assert _find_conflict(pairs, open_conflicts, "p1/f.txt") == ("p1", "f.txt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        _find_conflict(pairs, open_conflicts, "f.txt")
    assert exited.value.code == 2


def test_resolve_takes_the_name_as_it_is_on_disk_in_nfd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict is recorded as NFC (`été.txt`); the file on disk is NFD, and tab completion
    gives that spelling: `resolve` said "no open conflict" of a name that looks the same as
    the one `syncd conflicts` lists. It is normalized as every path is, relative to the pair's
    folder or in full."""
    setup = _pair(tmp_path, conflict="manual")
    names = {"e\u0301te\u0301.txt": "relative", "cafe\u0301.txt": "absolute"}
    for name in names:
        (setup.local / name).write_bytes(b"local " + name.encode())
        (tmp_path / "remote" / name).write_bytes(b"remote " + name.encode())
    assert syncd("once", "-c", setup.config).returncode == 4

    monkeypatch.chdir(setup.local)
    relative = syncd("resolve", "e\u0301te\u0301.txt", "--keep", "local", "-c", setup.config)
    assert relative.returncode == 0, relative.stdout + relative.stderr
    assert relative.stdout.strip() == "docs/\u00e9t\u00e9.txt: kept local"
    full = syncd("resolve", setup.local / "cafe\u0301.txt", "--keep", "remote", "-c", setup.config)
    assert full.returncode == 0, full.stdout + full.stderr
    assert full.stdout.strip() == "docs/caf\u00e9.txt: kept remote"

    assert syncd("conflicts", "-c", setup.config).returncode == 0
    remote = {p.name: p.read_bytes() for p in (tmp_path / "remote").iterdir() if p.is_file()}
    assert remote == {
        "e\u0301te\u0301.txt": b"local " + "e\u0301te\u0301.txt".encode(),
        "cafe\u0301.txt": b"remote " + "cafe\u0301.txt".encode(),
    }

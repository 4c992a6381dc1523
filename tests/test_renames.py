"""The renames that close the gap between syncd's last check and its act (renameat2's
RENAME_EXCHANGE and RENAME_NOREPLACE), their fallbacks where a filesystem lacks them, and the
trash's look at what it moved; and a rename made on the remote, which the max_delete guard
tells from deletions."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hand_driven import first_pass, hand_driven_pair, work_off
from harness import tree
from sqlalchemy import event

from syncd.daemon.daemon import Daemon
from syncd.engine import localfs, transfer, trash
from syncd.engine.core import Engine
from syncd.engine.localfs import local_file
from syncd.engine.model import LocalFile
from syncd.providers import renames
from syncd.state import StateStore

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture(params=["renameat2", "without renameat2"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with the real renameat2, and as on a filesystem (or libc) without it."""
    if request.param == "without renameat2":
        monkeypatch.setattr(renames, "_renameat2", None)
    return str(request.param)


def test_exchange_swaps_two_names_at_once(tmp_path: Path, folder: int, kernel: str) -> None:
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    swapped = renames.exchange(folder, "a", "b")
    assert swapped == (kernel == "renameat2")
    expected = (b"B", b"A") if swapped else (b"A", b"B")
    assert ((tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()) == expected


def test_exchange_of_a_missing_name_is_file_not_found(tmp_path: Path, folder: int) -> None:
    (tmp_path / "b").write_bytes(b"B")
    with pytest.raises(FileNotFoundError):
        renames.exchange(folder, "gone", "b")
    assert (tmp_path / "b").read_bytes() == b"B"


def test_move_free_moves_to_a_free_name_only(tmp_path: Path, folder: int, kernel: str) -> None:
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "taken").write_bytes(b"T")
    with pytest.raises(FileExistsError):
        renames.move_free(folder, "a", folder, "taken")
    assert (tmp_path / "a").read_bytes() == b"A"
    assert (tmp_path / "taken").read_bytes() == b"T"
    renames.move_free(folder, "a", folder, "free")
    assert sorted(os.listdir(tmp_path)) == ["free", "taken"]
    assert (tmp_path / "free").read_bytes() == b"A"


def test_an_unsupported_flag_is_told_from_a_real_failure(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL (a filesystem without the flag) means: take the fallback. Any other errno is
    the rename's own failure, raised as the OSError it is."""

    def answering(code: int) -> Any:
        def fake(*_args: Any) -> int:
            ctypes.set_errno(code)
            return -1

        return fake

    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    monkeypatch.setattr(renames, "_renameat2", answering(errno.EINVAL))
    assert renames.exchange(folder, "a", "b") is False
    renames.move_free(folder, "a", folder, "c")  # the link-and-unlink fallback
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]
    monkeypatch.setattr(renames, "_renameat2", answering(errno.EACCES))
    with pytest.raises(PermissionError):
        renames.exchange(folder, "b", "c")


def test_a_download_without_the_swap_still_replaces_and_keeps_the_mode(
    tmp_path: Path, folder: int, kernel: str
) -> None:
    target = tmp_path / "run.sh"
    target.write_bytes(b"old")
    os.chmod(target, 0o700)
    decided = local_file(target.lstat())
    (tmp_path / "tmp").write_bytes(b"new version")
    placed = transfer._put_in_place(localfs.Spot(folder, "run.sh"), "tmp", decided)
    assert target.read_bytes() == b"new version"
    assert target.stat().st_mode & 0o777 == 0o700
    assert placed.inode == target.stat().st_ino
    assert sorted(os.listdir(tmp_path)) == ["run.sh"]


def test_a_download_over_a_file_written_after_the_check_is_swapped_back(
    tmp_path: Path, folder: int
) -> None:
    target = tmp_path / "notes.txt"
    target.write_bytes(b"as decided")
    decided = local_file(target.lstat())
    target.write_bytes(b"written after the check")
    (tmp_path / "tmp").write_bytes(b"downloaded")
    with pytest.raises(transfer.WrittenMeanwhile):
        transfer._put_in_place(localfs.Spot(folder, "notes.txt"), "tmp", decided)
    assert target.read_bytes() == b"written after the check"
    assert (tmp_path / "tmp").read_bytes() == b"downloaded"  # the caller removes its temp


def test_a_download_decided_on_no_file_never_replaces_one(tmp_path: Path, folder: int) -> None:
    (tmp_path / "new.txt").write_bytes(b"appeared after the check")
    (tmp_path / "tmp").write_bytes(b"downloaded")
    with pytest.raises(FileExistsError):
        transfer._put_in_place(localfs.Spot(folder, "new.txt"), "tmp", None)
    assert (tmp_path / "new.txt").read_bytes() == b"appeared after the check"


def test_the_trash_takes_the_file_decided_on(tmp_path: Path, kernel: str) -> None:
    victim = tmp_path / "doc.txt"
    victim.write_bytes(b"deleted on the other side")
    moved = trash.move_to_local_trash(tmp_path, victim, "doc.txt", WHEN, local_file(victim.lstat()))
    assert not victim.exists()
    assert moved.read_bytes() == b"deleted on the other side"


def test_a_file_saved_over_after_the_check_comes_back_from_the_trash(
    tmp_path: Path, kernel: str
) -> None:
    victim = tmp_path / "doc.txt"
    victim.write_bytes(b"as decided")
    decided = local_file(victim.lstat())
    saved = tmp_path / "doc.txt.swp"
    saved.write_bytes(b"saved after the check")
    os.replace(saved, victim)
    with pytest.raises(trash.WrittenMeanwhile):
        trash.move_to_local_trash(tmp_path, victim, "doc.txt", WHEN, decided)
    assert victim.read_bytes() == b"saved after the check"
    assert not [p for p in (tmp_path / ".syncd" / "trash").rglob("*") if p.is_file()]


def test_a_save_whose_name_is_taken_again_stays_in_the_trash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved over after the check, and the name taken once more before the save could go
    back: the save stays in the trash, kept, and the newest file keeps the name."""
    victim = tmp_path / "doc.txt"
    victim.write_bytes(b"as decided")
    decided = local_file(victim.lstat())
    victim.unlink()
    victim.write_bytes(b"saved after the check")
    real_move_free = renames.move_free
    moves: list[int] = []

    def taken_first(*args: Any) -> None:
        moves.append(1)
        if len(moves) == 2:  # into the trash, then back: the name is taken before that
            victim.write_bytes(b"written last")
        real_move_free(*args)

    monkeypatch.setattr(renames, "move_free", taken_first)
    with pytest.raises(trash.WrittenMeanwhile):
        trash.move_to_local_trash(tmp_path, victim, "doc.txt", WHEN, decided)
    assert victim.read_bytes() == b"written last"
    kept = [p.read_bytes() for p in (tmp_path / ".syncd" / "trash").rglob("doc.txt")]
    assert kept == [b"saved after the check"]


# -- the swap back after a download found a write: whatever it takes out is kept -------------


def _swapped_out_write(tmp_path: Path) -> tuple[Path, LocalFile]:
    """notes.txt decided on, then written after the check; the download waits in `tmp`."""
    target = tmp_path / "notes.txt"
    target.write_bytes(b"as decided")
    decided = local_file(target.lstat())
    target.write_bytes(b"written after the check")
    (tmp_path / "tmp").write_bytes(b"downloaded")
    return target, decided


def _second_exchange(monkeypatch: pytest.MonkeyPatch, before: Callable[[], None]) -> None:
    """The real first swap; the second (the swap back) runs `before` first."""
    real = renames.exchange
    calls: list[int] = []

    def exchange(folder: int, a: str, b: str) -> bool:
        calls.append(1)
        if len(calls) == 2:
            before()
        return real(folder, a, b)

    monkeypatch.setattr(renames, "exchange", exchange)


def _beside(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if ".conflict-" in p.name}


def test_a_swap_back_that_fails_keeps_the_write_as_a_conflict_copy(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, decided = _swapped_out_write(tmp_path)

    def fail() -> None:
        raise OSError(errno.EIO, "I/O error")

    _second_exchange(monkeypatch, fail)
    with pytest.raises(transfer.WrittenMeanwhile):
        transfer._put_in_place(localfs.Spot(folder, "notes.txt"), "tmp", decided)
    assert target.read_bytes() == b"downloaded"
    assert list(_beside(tmp_path).values()) == [b"written after the check"]
    assert not (tmp_path / "tmp").exists()


def test_a_write_whose_name_is_taken_while_it_goes_back_is_kept_beside(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download deleted at once (the swap back finds no name), then a new file takes the
    name before the write can go back: both stay."""
    target, decided = _swapped_out_write(tmp_path)

    def deleted_then_recreated() -> None:
        target.unlink()
        real_move_free = renames.move_free

        def taken_first(*args: Any) -> None:
            target.write_bytes(b"made anew")
            real_move_free(*args)

        monkeypatch.setattr(renames, "move_free", taken_first)

    _second_exchange(monkeypatch, deleted_then_recreated)
    with pytest.raises(transfer.WrittenMeanwhile):
        transfer._put_in_place(localfs.Spot(folder, "notes.txt"), "tmp", decided)
    assert target.read_bytes() == b"made anew"
    assert list(_beside(tmp_path).values()) == [b"written after the check"]
    assert not (tmp_path / "tmp").exists()


def test_a_save_landing_before_the_swap_back_is_kept_beside(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved over the download in the instant before the swap back: the swap back takes that
    save out. It is not the download, so it is kept, not removed with the temp."""
    target, decided = _swapped_out_write(tmp_path)

    def saved_over() -> None:
        fresh = tmp_path / "notes.txt.swp"
        fresh.write_bytes(b"saved last")
        os.replace(fresh, target)

    _second_exchange(monkeypatch, saved_over)
    with pytest.raises(transfer.WrittenMeanwhile):
        transfer._put_in_place(localfs.Spot(folder, "notes.txt"), "tmp", decided)
    assert target.read_bytes() == b"written after the check"
    assert list(_beside(tmp_path).values()) == [b"saved last"]
    assert not (tmp_path / "tmp").exists()


# -- a rename made on the remote and the max_delete guard ------------------------------------
def _statements_weighing_one_deletion(tmp_path: Path, files: int) -> int:
    """How many SQL statements the daemon's end of a pass runs when one of `files` synced
    files of one size is deleted on a folder remote (whose listing states no SHA-256)."""
    tmp_path.mkdir()
    _setup, remote, config = hand_driven_pair(
        tmp_path, {f"f{i:03d}.txt": f"{i:03d}" for i in range(files)}
    )
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        syncer = engine.syncers["docs"]
        first_pass(daemon, engine)
        (remote / "f000.txt").unlink()
        daemon.full_scan("docs")  # a poll: f000.txt is to be deleted here
        work_off(engine)
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(engine.store._engine, "before_cursor_execute", count)
        try:
            approved = syncer.flush_deletions()
        finally:
            event.remove(engine.store._engine, "before_cursor_execute", count)
        assert approved == ["f000.txt"]
    return len(statements)


def test_weighing_a_deletion_on_a_folder_remote_does_not_look_up_every_object(
    tmp_path: Path,
) -> None:
    """Whether a deletion is a remote rename is known by the same bytes under another name;
    a folder remote's listing states no SHA-256, so the base's, recorded this pass, is
    used. It was looked up once per listed object of the deleted file's size: one deletion
    on a remote of 20,000 same-size files cost 20,000 state queries at each end of a pass.
    The entries recorded this pass are read at once: as many queries for 40 files as for 10."""
    few = _statements_weighing_one_deletion(tmp_path / "few", 10)
    many = _statements_weighing_one_deletion(tmp_path / "many", 40)
    assert many == few


def test_a_remote_rename_is_known_while_the_new_names_records_are_written_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon writes a folder remote's records behind (`StateStore.defer`). A folder
    renamed on the remote comes down under its new names, whose records may still wait in
    the queue when the pass ends: they count all the same, and the rename (4 of 5 files) is
    followed, not held as a mass deletion."""
    monkeypatch.setattr(StateStore, "_flush_deferred", lambda _store: None)  # no background
    setup, remote, config = hand_driven_pair(tmp_path, {"top.txt": "top"})
    (setup.local / "project").mkdir()
    for i in range(4):
        (setup.local / "project" / f"f{i}.txt").write_text(f"file {i}")
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        engine.write_behind("docs")
        first_pass(daemon, engine)
        (remote / "project").rename(remote / "project-2026")
        daemon.full_scan("docs")  # a poll: four new names to come down, four gone
        work_off(engine)
        renamed = {f"project-2026/f{i}.txt" for i in range(4)}
        assert renamed <= set(engine.store._deferred["docs"])  # not committed yet
        for _ in range(2):  # the end of the pass, then of the deletions it let through
            daemon._end_quiet_passes()
            work_off(engine)
        assert daemon.status()["pairs"][0]["state"] == "idle"
    expected = {
        "top.txt": b"top",
        **{f"project-2026/f{i}.txt": f"file {i}".encode() for i in range(4)},
    }
    assert tree(setup.local) == tree(remote) == expected

"""The checked moves of syncd/providers/renames.py on their own: `swap_in_checked` (a download,
a folder remote's conditional replace) and `check_aside` (the local trash, a folder remote's
conditional delete). Real files in a real folder, the real renameat2; the races are forced
from inside the look (`expected`, which runs after the rename and before any undo) or by
wrapping the rename the undo makes.

Whatever happens, no file is lost: the expected one is replaced or moved, any other stays at
its name, goes back to it, or is handed to `keep`."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import unavailable_here

from syncd.providers import renames
from syncd.providers.renames import Check

_move_free = renames.move_free  # the real one, for `Kept` while a test wraps it


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not renames.exchange(fd, "a", "b"):
            unavailable_here("no RENAME_EXCHANGE on this filesystem")
        os.unlink("a", dir_fd=fd)
        os.unlink("b", dir_fd=fd)
        yield fd
    finally:
        os.close(fd)


class Kept:
    """A `keep` that moves the file to `NAME.kept-N` beside, and remembers it."""

    def __init__(self, folder: int) -> None:
        self.folder = folder
        self.names: list[str] = []

    def __call__(self, held: str) -> None:
        kept = f"notes.txt.kept-{len(self.names)}"
        _move_free(self.folder, held, self.folder, kept)
        self.names.append(kept)


def tree(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def decided_then_written(tmp_path: Path) -> Check:
    """notes.txt decided on (its stat taken), then saved over by another program; the new
    file waits in `tmp`. The check that tells the file decided on by inode, size and mtime."""
    target = tmp_path / "notes.txt"
    target.write_bytes(b"as decided")
    decided = target.lstat()
    save(target, b"written after the check")
    (tmp_path / "tmp").write_bytes(b"ours")
    return same_as(decided)


def same_as(decided: os.stat_result) -> Check:
    def expected(out: os.stat_result) -> bool:
        return (out.st_ino, out.st_size, out.st_mtime_ns) == (
            decided.st_ino,
            decided.st_size,
            decided.st_mtime_ns,
        )

    return expected


def meanwhile(action: Callable[[], object], check: Check) -> Check:
    """`check`, with `action` run first: a write landing after the rename, before the undo."""

    def expected(out: os.stat_result) -> bool:
        action()
        return check(out)

    return expected


def save(path: Path, data: bytes) -> None:
    """An editor's atomic save: a new file renamed over the name."""
    fresh = path.with_name(path.name + ".swp")
    fresh.write_bytes(data)
    os.replace(fresh, path)


def swap(tmp_path: Path, folder: int, expected: Check, keep: Kept) -> bool:
    """Swap `tmp` (ours) in at notes.txt."""
    ours = (tmp_path / "tmp").lstat().st_ino
    return renames.swap_in_checked(
        folder, "tmp", "notes.txt", ours=ours, expected=expected, keep=keep
    )


# -- swap_in_checked ---------------------------------------------------------------------------


def test_the_file_expected_is_swapped_out(tmp_path: Path, folder: int) -> None:
    (tmp_path / "notes.txt").write_bytes(b"as decided")
    (tmp_path / "tmp").write_bytes(b"ours")
    keep = Kept(folder)
    assert swap(tmp_path, folder, same_as((tmp_path / "notes.txt").lstat()), keep)
    assert tree(tmp_path) == {"notes.txt": b"ours", "tmp": b"as decided"}  # tmp: the caller's
    assert keep.names == []


def test_a_file_written_after_the_check_goes_back(tmp_path: Path, folder: int) -> None:
    expected = decided_then_written(tmp_path)
    keep = Kept(folder)
    with pytest.raises(renames.Mismatch):
        swap(tmp_path, folder, expected, keep)
    assert keep.names == []
    assert tree(tmp_path) == {"notes.txt": b"written after the check", "tmp": b"ours"}


def test_ours_deleted_from_the_name_at_once_lets_the_write_take_it(
    tmp_path: Path, folder: int
) -> None:
    """The swap back finds no file at the name (ours removed in the instant after the swap):
    the write moves to the free name."""
    written = decided_then_written(tmp_path)
    keep = Kept(folder)
    with pytest.raises(renames.Mismatch):
        swap(tmp_path, folder, meanwhile((tmp_path / "notes.txt").unlink, written), keep)
    assert tree(tmp_path) == {"notes.txt": b"written after the check"}
    assert keep.names == []


def test_a_name_taken_again_before_the_write_goes_back_keeps_it_beside(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ours deleted from the name, then a new file made there before the write could take
    it: the new file keeps the name, the write is kept beside, nothing left under `tmp`."""
    written = decided_then_written(tmp_path)
    real_move_free = renames.move_free

    def made_anew_first(*args: Any) -> None:
        (tmp_path / "notes.txt").write_bytes(b"made anew")
        real_move_free(*args)

    def deleted() -> None:
        (tmp_path / "notes.txt").unlink()
        monkeypatch.setattr(renames, "move_free", made_anew_first)

    with pytest.raises(renames.Mismatch):
        swap(tmp_path, folder, meanwhile(deleted, written), Kept(folder))
    assert tree(tmp_path) == {
        "notes.txt": b"made anew",
        "notes.txt.kept-0": b"written after the check",
    }


def test_a_save_over_ours_before_the_swap_back_is_kept_beside(tmp_path: Path, folder: int) -> None:
    """Saved over our file at the name in the instant before the swap back: the swap back
    takes that save out into `tmp`, which the caller unlinks: it is kept beside first."""
    written = decided_then_written(tmp_path)
    saved = meanwhile(lambda: save(tmp_path / "notes.txt", b"saved last"), written)
    with pytest.raises(renames.Mismatch):
        swap(tmp_path, folder, saved, Kept(folder))
    assert tree(tmp_path) == {
        "notes.txt": b"written after the check",
        "notes.txt.kept-0": b"saved last",
    }


def test_a_swap_back_that_fails_keeps_the_write_beside(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = decided_then_written(tmp_path)
    real_exchange = renames.exchange
    calls: list[int] = []

    def exchange(*args: Any) -> bool:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_exchange(*args)

    monkeypatch.setattr(renames, "exchange", exchange)
    with pytest.raises(renames.Mismatch):
        swap(tmp_path, folder, written, Kept(folder))
    assert tree(tmp_path) == {"notes.txt": b"ours", "notes.txt.kept-0": b"written after the check"}


def test_a_look_that_fails_swaps_back_then_raises(tmp_path: Path, folder: int) -> None:
    (tmp_path / "notes.txt").write_bytes(b"as decided")
    (tmp_path / "tmp").write_bytes(b"ours")

    def failing(_out: os.stat_result) -> bool:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        swap(tmp_path, folder, failing, Kept(folder))
    assert tree(tmp_path) == {"notes.txt": b"as decided", "tmp": b"ours"}


def test_a_missing_name_is_missing_and_nothing_moves(tmp_path: Path, folder: int) -> None:
    (tmp_path / "tmp").write_bytes(b"ours")
    with pytest.raises(renames.Missing) as raised:
        swap(tmp_path, folder, lambda _out: True, Kept(folder))
    assert isinstance(raised.value, FileNotFoundError)  # what the engine catches
    assert tree(tmp_path) == {"tmp": b"ours"}


def test_a_filesystem_without_the_swap_answers_false_and_moves_nothing(
    tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renames, "_renameat2", None)
    (tmp_path / "notes.txt").write_bytes(b"as decided")
    (tmp_path / "tmp").write_bytes(b"ours")
    looked: list[os.stat_result] = []

    def expected(out: os.stat_result) -> bool:
        looked.append(out)
        return True

    keep = Kept(folder)
    assert not renames.swap_in_checked(
        folder, "tmp", "notes.txt", ours=0, expected=expected, keep=keep
    )
    assert looked == []
    assert keep.names == []
    assert tree(tmp_path) == {"notes.txt": b"as decided", "tmp": b"ours"}


# -- check_aside -------------------------------------------------------------------------------


def moved_aside(tmp_path: Path, folder: int) -> Check:
    """notes.txt decided on, saved over by another program, then moved aside (to `aside`,
    as the trash or a conditional delete does: one rename of whatever stands at the name)."""
    expected = decided_then_written(tmp_path)
    (tmp_path / "tmp").unlink()
    renames.move_to_fresh(folder, "notes.txt", folder, "aside")
    return expected


def test_the_file_expected_stays_aside(tmp_path: Path, folder: int) -> None:
    (tmp_path / "notes.txt").write_bytes(b"as decided")
    expected = same_as((tmp_path / "notes.txt").lstat())
    renames.move_to_fresh(folder, "notes.txt", folder, "aside")
    keep = Kept(folder)
    renames.check_aside((folder, "aside"), (folder, "notes.txt"), expected=expected, keep=keep)
    assert tree(tmp_path) == {"aside": b"as decided"}


def test_a_file_written_after_the_check_is_put_back(tmp_path: Path, folder: int) -> None:
    expected = moved_aside(tmp_path, folder)
    keep = Kept(folder)
    with pytest.raises(renames.Mismatch):
        renames.check_aside((folder, "aside"), (folder, "notes.txt"), expected=expected, keep=keep)
    assert tree(tmp_path) == {"notes.txt": b"written after the check"}


def test_a_name_taken_again_keeps_the_write_beside(tmp_path: Path, folder: int) -> None:
    written = moved_aside(tmp_path, folder)
    taken = meanwhile(lambda: (tmp_path / "notes.txt").write_bytes(b"made anew"), written)
    with pytest.raises(renames.Mismatch):
        renames.check_aside(
            (folder, "aside"), (folder, "notes.txt"), expected=taken, keep=Kept(folder)
        )
    assert tree(tmp_path) == {
        "notes.txt": b"made anew",
        "notes.txt.kept-0": b"written after the check",
    }


def test_a_look_aside_that_fails_puts_back_then_raises(tmp_path: Path, folder: int) -> None:
    (tmp_path / "notes.txt").write_bytes(b"as decided")
    renames.move_to_fresh(folder, "notes.txt", folder, "aside")

    def failing(_out: os.stat_result) -> bool:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        renames.check_aside(
            (folder, "aside"), (folder, "notes.txt"), expected=failing, keep=Kept(folder)
        )
    assert tree(tmp_path) == {"notes.txt": b"as decided"}


def test_put_back_across_folders(tmp_path: Path, folder: int) -> None:
    """The trash's case: aside in another folder, back home by its folder descriptor."""
    expected = decided_then_written(tmp_path)
    (tmp_path / "tmp").unlink()
    (tmp_path / "trash").mkdir()
    trash = os.open(tmp_path / "trash", os.O_RDONLY | os.O_DIRECTORY)
    try:
        renames.move_free(folder, "notes.txt", trash, "notes.txt")
        with pytest.raises(renames.Mismatch):
            renames.check_aside(
                (trash, "notes.txt"), (folder, "notes.txt"), expected=expected, keep=Kept(folder)
            )
    finally:
        os.close(trash)
    assert (tmp_path / "notes.txt").read_bytes() == b"written after the check"
    assert os.listdir(tmp_path / "trash") == []

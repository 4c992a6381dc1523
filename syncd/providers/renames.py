"""Renames that check what they move: Linux's renameat2 flags, which `os` does not offer.

A check right before a rename leaves a gap of microseconds in which a program can write or
replace the file; whatever the rename then moves over or away is what the user loses. Two
flags close it, for the engine's local side and for the folder remote's conditional writes:

- RENAME_EXCHANGE swaps two names at once. A download swaps its finished temp file in and
  then looks at what came out: the file it decided to replace, or a newer write (swapped
  back, nothing replaced).
- RENAME_NOREPLACE moves a file only to a free name. Moving a file aside (a conflict copy,
  the trash) then moves whatever stands at the name, newest write included, and never lands
  on another file.

`swap_in_checked` and `check_aside` are those two moves with the look and the undo: what
the rename took out must be the file the caller decided on, else it goes back (or, where it
cannot, beside), for every caller alike.

Both are in ext4, XFS, Btrfs and tmpfs (Linux 3.15 and later, by filesystem), through glibc
2.28 or later. Where a filesystem or libc lacks them, `exchange` says so (the caller falls back
to a plain replace) and `move_free` falls back to a link and an unlink (create-only still,
atomic no more).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable

RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1

#: What renameat2 answers when the kernel, the filesystem or the flag is not there.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def _load() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's renameat2 (glibc 2.28 and later), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the libc this process runs on
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load()


class Unsupported(OSError):
    """This filesystem (or libc) has no such rename: the caller takes its fallback."""


def _rename2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    if _renameat2 is None:
        raise Unsupported(errno.ENOSYS, "renameat2 is not in this libc")
    names = os.fsencode(src), os.fsencode(dst)
    while True:
        if _renameat2(src_fd, names[0], dst_fd, names[1], flags) == 0:
            return
        code = ctypes.get_errno()
        if code != errno.EINTR:  # a signal: tried again, as os.rename is (PEP 475)
            break
    if code in _UNSUPPORTED:
        raise Unsupported(code, os.strerror(code), src)
    raise OSError(code, os.strerror(code), src, None, dst)


def exchange(folder: int, a: str, b: str) -> bool:
    """Swap the names `a` and `b` in the open folder `folder`, both at once. False (nothing
    done) where the filesystem cannot; FileNotFoundError when either name is missing."""
    try:
        _rename2(folder, a, folder, b, RENAME_EXCHANGE)
    except Unsupported:
        return False
    return True


def move_free(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename `src` to `dst` only if no file has that name (FileExistsError, nothing moved).
    Atomic where the filesystem has RENAME_NOREPLACE; a link and an unlink elsewhere."""
    try:
        _rename2(src_fd, src, dst_fd, dst, RENAME_NOREPLACE)
    except Unsupported:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        os.unlink(src, dir_fd=src_fd)


def move_to_fresh(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename `src` to `dst`, a fresh name nobody else uses (a random temp name), moving the
    very file that stands at `src` at one instant. RENAME_NOREPLACE where there is one; a
    plain rename elsewhere, not a link and an unlink, between which a file saved at `src`
    would be the one unlinked."""
    try:
        _rename2(src_fd, src, dst_fd, dst, RENAME_NOREPLACE)
    except Unsupported:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


# -- checked moves: look at what a rename took out, put back what was not expected ------------
# The engine's download and local trash, the folder remote's conditional replace and delete.
# A file written after the caller's check goes back to its name; one that cannot (its name
# taken again, the swap back failed) goes to `keep`, never left under a name the caller will
# unlink. Each branch covers a race a review found (git log of engine/transfer.py).

#: Is this (the lstat of what a rename took out) the file the caller decided on?
Check = Callable[[os.stat_result], bool]
#: Give the stray file at this name (in the folder the caller knows) a name of its own.
Keep = Callable[[str], None]


class Mismatch(Exception):
    """What the rename took out was not the file expected: it went back to its name, or was
    kept beside it (the caller raises its own error)."""


class Missing(FileNotFoundError):
    """The swap itself found either name missing: nothing was done. (A FileNotFoundError of
    a later step, the swap already made, is a plain one.)"""


def swap_in_checked(
    folder: int, tmp: str, name: str, *, ours: int, expected: Check, keep: Keep
) -> bool:
    """Swap `tmp` (the caller's new file, inode `ours`) in at `name`, and only over the file
    `expected` says was decided on.

    True: swapped; `tmp` now names the file replaced, for the caller to dispose of. False:
    the filesystem has no swap, nothing done (the caller's fallback: a plain replace, the
    check before it the only one). Missing (a FileNotFoundError): a name missing, nothing
    done. Mismatch: what came out was not expected (written after the caller's check: its
    size, mtime or inode moved; the ctime cannot tell, the swap moves it) and was swapped
    back (`_swap_back`). A look that fails swaps back too, then raises."""
    try:
        if not exchange(folder, tmp, name):
            return False
    except FileNotFoundError as exc:
        raise Missing(exc.errno, exc.strerror, exc.filename, None, exc.filename2) from None
    _look(folder, tmp, expected, undo=lambda: _swap_back(folder, tmp, name, ours, keep))
    return True


def check_aside(
    aside: tuple[int, str], home: tuple[int, str], *, expected: Check, keep: Keep
) -> None:
    """The file just moved from `home` to `aside` (each a folder fd and a name, by one rename
    of whatever stood at the name) must be the one `expected` says was decided on. Else (or
    if looking fails) it goes back home, only to a free name: if the name was taken again
    meanwhile (a second save), `keep(aside's name)` keeps it; then Mismatch."""
    _look(aside[0], aside[1], expected, undo=lambda: _put_back(aside, home, keep))


def _look(folder: int, moved: str, expected: Check, undo: Callable[[], None]) -> None:
    """`expected` of the file at `moved`: else, or if looking fails, `undo`, and Mismatch."""
    same = False
    try:
        same = expected(os.lstat(moved, dir_fd=folder))
    finally:
        if not same:
            undo()
    if not same:
        raise Mismatch(moved)


def _swap_back(folder: int, tmp: str, name: str, ours: int, keep: Keep) -> None:
    """Put the file the swap took out back at `name`. From here on `tmp` may hold another
    program's file, and the caller unlinks `tmp`: whatever it holds that is not ours (the
    swap back failed, the write found its name taken again, or a save landed at the name in
    between and came out instead) goes to `keep` first."""
    try:
        back = exchange(folder, tmp, name)
    except FileNotFoundError:  # ours was deleted from the name at once: the write takes it
        back = False
        with contextlib.suppress(FileExistsError):
            move_free(folder, tmp, folder, name)
    except OSError:
        back = False
    held = _lstat(folder, tmp)
    if held is not None and not (back and held.st_ino == ours):
        keep(tmp)


def _put_back(aside: tuple[int, str], home: tuple[int, str], keep: Keep) -> None:
    """Move another program's file from `aside` back `home`, to a free name only; if the name
    was taken again meanwhile, `keep` it."""
    try:
        move_free(*aside, *home)
    except FileExistsError:
        keep(aside[1])


def _lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return None

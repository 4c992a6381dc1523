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

Both are in ext4, XFS, Btrfs and tmpfs (Linux 3.15 and later, by filesystem), through glibc
2.28 or later. Where a filesystem or libc lacks them, `exchange` says so (the caller falls back
to a plain replace) and `move_free` falls back to a link and an unlink (create-only still,
atomic no more).
"""

from __future__ import annotations

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

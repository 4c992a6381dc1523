"""One daemon per state database: an exclusive, non-blocking flock next to it.

flock is released by the kernel when the process dies (even by kill -9), so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import ClassVar

from syncd.oserror import not_a_folder_or


class LockUnavailable(Exception):
    """The lock cannot be taken; the message is one line for the user."""


class AlreadyRunning(LockUnavailable):
    """Another syncd holds the lock."""


class LockFileUnusable(LockUnavailable):
    """The lock's file cannot be made or opened (its folder is a file, or one syncd may not
    write): said as such, not as a traceback."""


class InstanceLock:
    #: The (device, inode) of the lock files this process holds: a refusal names this
    #: process, not "another syncd", when the holder is one of them (a pid alone cannot
    #: tell: two containers sharing a state volume are both pid 1).
    _held_here: ClassVar[set[tuple[int, int]]] = set()

    def __init__(self, path: Path, what: str, guarded: Path | None = None) -> None:
        self.path = path
        self.what = what
        #: The file the lock keeps (the SQLite state), when there is one.
        self.guarded = guarded
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> None:
        if self.guarded is not None:
            _file_or_nothing(self.guarded, self.what)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            where = exc.filename or self.path
            raise LockFileUnusable(
                f"cannot use {self.what}: {where}: {not_a_folder_or(exc)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            here = _identity(fd) in self._held_here
            os.close(fd)
            if here:
                # A script's other Engine (not closed, or dropped without `close()`), or a
                # one-way copy running in another thread: "another syncd, stop it" sent the
                # reader looking for a process that is their own.
                raise AlreadyRunning(
                    f"this process (pid {holder}) is already using {self.what}: another "
                    "Engine holds it; close() that one first"
                ) from None
            raise AlreadyRunning(
                f"another syncd (pid {holder}) is already using {self.what}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        self._identity = _identity(fd)
        self._held_here.add(self._identity)

    def release(self) -> None:
        if self._fd is not None:
            if self._identity is not None:
                self._held_here.discard(self._identity)
                self._identity = None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def instance_lock(state_url: str, socket: Path) -> InstanceLock:
    """The lock that keeps two syncd processes off one state: beside the SQLite file, or
    beside the socket for other databases."""
    from syncd.state import sqlite_path

    db = sqlite_path(state_url)
    if db is not None:
        return InstanceLock(db.with_name(db.name + ".lock"), f"state {db}", guarded=db)
    return InstanceLock(socket.with_name(socket.name + ".lock"), f"socket {socket}")


def _file_or_nothing(path: Path, what: str) -> None:
    """A state that names a folder, a device or a pipe (`sqlite:////dev/null`) is refused
    before a lock is made beside it: run as root, that made `/dev/null.lock`."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (made later), or unreachable: the lock's own open says why
    if not stat.S_ISREG(mode):
        raise LockFileUnusable(f"cannot use {what}: not a regular file")


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return (info.st_dev, info.st_ino)

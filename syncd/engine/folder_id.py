"""Which folder a pair's local root is: a random id in `<root>/.syncd/folder-id`, recorded in
the state when the pair first syncs there.

Syncthing keeps a `.stfolder` marker for the same reason. A disk that is not mounted leaves its
mount point behind, an empty folder at the same path; a root renamed away and made anew is
another folder. Taken for the synced one, its emptiness read as "every file deleted" (the
bucket wiped at `max_delete: 100`), and what came down landed on the wrong disk, then went up
over the other machines' edits once the disk was back. A device and inode number would not do:
a disk's device number can change at a reboot.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

from syncd.engine.paths import STATE_DIR
from syncd.providers.local import NotAFolder, descend, open_root

NAME = "folder-id"
#: Where the id is, relative to the root (for messages).
WHERE = f"{STATE_DIR}/{NAME}"
_MOST = 64  # an id is 32 hex digits; a larger file is no id of ours


def read(root: Path) -> str | None:
    """The root's id, or None when it has none (no `.syncd/folder-id`, or something other
    than a small regular file there). Nothing is reached through a symlink. Raises OSError
    when the root or its `.syncd` cannot be read."""
    top = open_root(str(root))
    try:
        with descend(top, (STATE_DIR,), create=False) as fds:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
            fd = os.open(NAME, flags, dir_fd=fds[-1])
            with open(fd, "rb") as marker:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                data = marker.read(_MOST + 1)
    except (FileNotFoundError, NotAFolder):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the marker is a symlink: not ours
            return None
        raise
    finally:
        os.close(top)
    text = data.decode("ascii", "replace").strip()
    return text if text and len(data) <= _MOST else None


def make(root: Path) -> str:
    """Give the root a new id (or read the one another writer made meanwhile). Raises
    OSError when it cannot be written (a read-only root)."""
    made = secrets.token_hex(16)
    top = open_root(str(root))
    try:
        with descend(top, (STATE_DIR,), create=True) as fds:
            try:
                fd = os.open(
                    NAME,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o644,
                    dir_fd=fds[-1],
                )
            except FileExistsError:
                found = read(root)
                if found is None:
                    raise
                return found
            try:
                os.write(fd, f"{made}\n".encode())
                os.fsync(fd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(NAME, dir_fd=fds[-1])
                raise
            finally:
                os.close(fd)
    finally:
        os.close(top)
    return made


def present(root: Path) -> bool:
    """A quick look, for each path synced: is the marker still there (a disk unmounted under
    a running daemon takes it away)?"""
    return os.path.isfile(root / STATE_DIR / NAME)

"""Where replaced and deleted versions wait: nothing a strategy throws away is destroyed.

Local: `<root>/.syncd/trash/<YYYYMMDD-HHMMSS>/<path>` (never synced, pruned after trash_days).
Remote: `.syncd-trash/<YYYYMMDD-HHMMSS>/<path>` under the pair's prefix, a server-side copy
(`<digest of the folders>/<name>` for a path too long for the bucket's key limit there).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import shutil
import stat as stat_mod
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from syncd.engine import localfs
from syncd.engine.localfs import local_file
from syncd.engine.model import LocalFile
from syncd.engine.paths import REMOTE_TRASH, STATE_DIR
from syncd.engine.transfer import keep_beside, same_stat, untouched
from syncd.providers import renames
from syncd.providers.local import NotAFolder, descend, open_root

TRASH_DIR = f"{STATE_DIR}/trash"
#: The same folder, one component each, as `descend` walks it from the root.
TRASH = (STATE_DIR, "trash")
_STAMP = "%Y%m%d-%H%M%S"


class UnsafeTrash(OSError):
    """The trash cannot be used without following a symlink (or passing through a file where a
    folder belongs). An OSError, so the path it was needed for fails and is retried."""


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_STAMP)


def trash_key(path: str, when: datetime, taken: Callable[[str], bool]) -> str:
    """A free trash location for `path`, relative to the root (local or remote)."""
    base = stamp(when)
    counter = 0
    while True:
        folder = base + (f"-{counter}" if counter else "")
        candidate = f"{folder}/{path}"
        if not taken(candidate):
            return candidate
        counter += 1


class WrittenMeanwhile(Exception):
    """The file moved to the trash was not the one decided on: written (or saved over) in the
    instant after the last check. It went back to its name; where another file took that
    name meanwhile, it stays in the trash (kept, never lost)."""


def move_to_local_trash(
    root: Path, source: Path, path: str, when: datetime, expected: LocalFile | None = None
) -> Path:
    """Move the local file at `source` (the on-disk name of `path`) into the pair's trash.

    Both sides are reached from the root one folder at a time, never through a symlink:
    `.syncd`, its trash and every folder made in it must be real folders inside the root.
    Otherwise UnsafeTrash, and nothing moved (the file stays; a later pass tries again).

    With `expected` (the file as decided on), what was moved is looked at once it is in the
    trash: a file written after the caller's last check goes back, WrittenMeanwhile (an edit
    beats a deletion, however late it comes). Its size, mtime and inode tell; not its ctime,
    which the move itself moves.

    A file on another filesystem than the root's (a disk or a bind mount inside it) cannot be
    renamed into the trash (EXDEV): it is copied there instead (`_copy_to_trash`). A move that
    fails leaves no empty trash folder behind.
    """
    *source_folders, source_name = source.relative_to(root).parts
    try:
        top = open_root(str(root))
        try:
            rel = _trash_from(top, (source_folders, source_name), path, when, expected)
        finally:
            os.close(top)
    except NotAFolder as exc:
        what = _what(root, exc.filename)
        raise UnsafeTrash(f"{root}/{exc.filename} {what}: not followed, nothing moved") from exc
    return root.joinpath(*TRASH, *rel.split("/"))


def _trash_from(
    top: int,
    source: tuple[list[str], str],
    path: str,
    when: datetime,
    expected: LocalFile | None,
) -> str:
    """Move the file at `source` (its folders and name below the open root `top`) to a free
    trash name for `path`; returns that name, relative to the trash."""
    source_folders, source_name = source
    while True:
        rel = trash_key(path, when, lambda candidate: _exists(top, [*TRASH, candidate]))
        *folders, name = rel.split("/")
        try:
            with (
                descend(top, source_folders, create=False) as source_fds,
                descend(top, [*TRASH, *folders], create=True) as trash_fds,
            ):
                home, trashed = (source_fds[-1], source_name), (trash_fds[-1], name)
                if _moved(home, trashed, expected):
                    return rel
        except BaseException:
            _drop_empty(top, folders)  # a failed move leaves no empty stamp folder
            raise
        # taken since it was looked at: the next free name


def _moved(home: tuple[int, str], trashed: tuple[int, str], expected: LocalFile | None) -> bool:
    """Move the file at `home` to `trashed` (each a folder fd and a name); False when that
    name was taken meanwhile (nothing moved)."""
    try:
        renames.move_free(*home, *trashed)  # never over another trashed file
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return _copy_to_trash(home, trashed, expected)
    if expected is not None:
        _keep_if_written(expected, trashed, home)
    return True


def _copy_to_trash(
    home: tuple[int, str], trashed: tuple[int, str], expected: LocalFile | None
) -> bool:
    """The move of a file on another filesystem: its bytes, mode and mtime copied to
    `trashed` and made durable, then the original removed, only if it is still the very file
    copied. False when the trash name was taken meanwhile (nothing done).

    A file that is not `expected` (by size, mtime and inode), or is written while it is
    copied (its ctime tells, even of a write that puts size and mtime back), stays and the
    copy goes: WrittenMeanwhile. The original is then moved aside at once and looked at
    (`_remove_copied`), so a save that lands at its name in the last instant is never the
    file removed."""
    fd = os.open(home[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=home[0])
    try:
        before = os.fstat(fd)
        if not stat_mod.S_ISREG(before.st_mode):
            raise OSError(errno.EXDEV, "not a regular file on another filesystem", home[1])
        if expected is not None and not same_stat(local_file(before), expected):
            raise WrittenMeanwhile(home[1])
        try:
            out = os.open(trashed[1], _NEW_FILE, 0o600, dir_fd=trashed[0])
        except FileExistsError:
            return False
        try:
            _copy_file(fd, out, before)
            os.fsync(trashed[0])
            if not untouched(local_file(before), local_file(os.fstat(fd))):
                raise WrittenMeanwhile(home[1])
            _remove_copied(home, before)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(trashed[1], dir_fd=trashed[0])
            raise
    finally:
        os.close(fd)
    return True


#: A trash copy: a new file only, never through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _copy_file(src: int, out: int, st: os.stat_result) -> None:
    """Copy every byte of `src` to `out` (closed here), with `st`'s mode and times, fsynced."""
    try:
        while chunk := os.read(src, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fchmod(out, stat_mod.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fsync(out)
    finally:
        os.close(out)


def _remove_copied(home: tuple[int, str], copied: os.stat_result) -> None:
    """Remove the original of a trash copy: moved aside to a fresh temp name first, at once,
    and looked at there. Another file (saved at the name since the copy) goes back, or beside
    the name where it was taken again (`transfer.keep_beside`), then WrittenMeanwhile."""
    folder, name = home
    aside = localfs.temp_name()
    try:
        renames.move_to_fresh(folder, name, folder, aside)
    except FileNotFoundError:
        return  # removed meanwhile by its user: the copy in the trash is what is left of it
    try:
        renames.check_aside(
            (folder, aside),
            home,
            expected=lambda moved: same_stat(local_file(moved), local_file(copied)),
            keep=lambda held: keep_beside(folder, held, name),
        )
    except renames.Mismatch:
        raise WrittenMeanwhile(name) from None
    os.unlink(aside, dir_fd=folder)


def _drop_empty(top: int, folders: Sequence[str]) -> None:
    """Remove the trash folders `folders` (below .syncd/trash) that are empty, deepest first:
    what a failed move made. A folder that holds anything stays (rmdir removes no file)."""
    for depth in range(len(folders), 0, -1):
        try:
            with descend(top, [*TRASH, *folders[: depth - 1]], create=False) as fds:
                os.rmdir(folders[depth - 1], dir_fd=fds[-1])
        except OSError:
            return  # not empty (another move's, or a trashed file), gone, or not a folder


def _keep_if_written(expected: LocalFile, trashed: tuple[int, str], home: tuple[int, str]) -> None:
    """WrittenMeanwhile, the file put back at `home`, if the file at `trashed` (folder fd,
    name) is not `expected` (`renames.check_aside`; its name taken again: kept in the trash)."""
    try:
        renames.check_aside(
            trashed,
            home,
            expected=lambda moved: same_stat(local_file(moved), expected),
            keep=lambda _name: None,  # in the trash it stays: kept, never lost
        )
    except renames.Mismatch:
        raise WrittenMeanwhile(trashed[1]) from None


def remote_trash_key(
    path: str, when: datetime, taken: Callable[[str], bool], max_len: int | None = None
) -> str:
    """A free remote trash key for `path`. Where it would pass `max_len` bytes (a bucket's key
    limit less the pair's prefix: the trash folder adds ~30 bytes to a path that may already
    be near it), the path's folders give way to a digest of them and the file's name stays,
    for a person looking for it: a copy the service refuses would hold its deletion up."""

    def free(rel: str) -> str:
        return f"{REMOTE_TRASH}/" + trash_key(rel, when, lambda c: taken(f"{REMOTE_TRASH}/{c}"))

    key = free(path)
    if max_len is None or len(key.encode("utf-8", "surrogateescape")) <= max_len:
        return key
    folders, _, name = path.rpartition("/")
    digest = hashlib.sha256(folders.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return free(f"{digest}/{name}")


def prune_local_trash(
    root: Path, days: float, on_skip: Callable[[str, str], None], now: float | None = None
) -> int:
    """Remove trash folders older than `days` (0: none, ever); returns how many went.

    Nothing is reached through a symlink: a `.syncd` or trash that is one is left alone (the
    skip reported through `on_skip` with its root-relative path), and a link inside the trash
    is removed as a link, what it points to untouched.
    """
    if days <= 0:
        # Kept for good, as `log_retention_days: 0` keeps every record and Syncthing's trash
        # can keeps versions with `cleanoutDays: 0`: a 0 that emptied the trash at every pass
        # would destroy the only copy of every conflict loser and deletion.
        return 0
    cutoff = (now if now is not None else time.time()) - days * 86400
    removed = 0
    try:
        top = open_root(str(root))
        try:
            with descend(top, TRASH, create=False) as fds:
                trash = fds[-1]
                for name in os.listdir(trash):
                    if _made(trash, name) < cutoff and _remove(trash, name, on_skip):
                        removed += 1
        finally:
            os.close(top)
    except FileNotFoundError:
        pass  # no trash yet
    except NotAFolder as exc:
        on_skip(exc.filename, f"{_what(root, exc.filename)}: not followed, nothing pruned")
    return removed


def _exists(top: int, parts: Sequence[str]) -> bool:
    """Something (a file, a folder, a link) is at the root-relative `parts`, or a file stands
    where one of its folders would go (`x` trashed as a file this second, now `x/y`): either
    way that trash folder cannot take it. A symlink on the way stays NotAFolder (see
    move_to_local_trash)."""
    *folders, name = "/".join(parts).split("/")
    try:
        with descend(top, folders, create=False) as fds:
            os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
    except FileNotFoundError:
        return False
    except NotAFolder as exc:
        inside = str(exc.filename).count("/") >= len(TRASH)  # below .syncd/trash itself
        if not (inside and _is_file(top, str(exc.filename))):
            raise  # a link, or .syncd / its trash not a folder: never gone around silently
    return True


def _is_file(top: int, rel: str) -> bool:
    try:
        return stat_mod.S_ISREG(os.stat(rel, dir_fd=top, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _what(root: Path, rel: str) -> str:
    """How the root-relative `rel` failed to be a folder (O_NOFOLLOW says ENOTDIR for both)."""
    try:
        linked = stat_mod.S_ISLNK(os.lstat(root / rel).st_mode)
    except OSError:
        return "is not a folder"
    return "is a symlink" if linked else "is not a folder"


def _made(trash: int, name: str) -> float:
    """When the trash folder `name` was made: the time in its name, or its modification
    time where that is older (a folder aged by hand, or put back from a backup with its
    times, shows its age there and was never pruned); +inf for a name that is not ours."""
    stamped = _stamped(name)
    if stamped == math.inf:
        return stamped
    try:
        return min(stamped, os.stat(name, dir_fd=trash, follow_symlinks=False).st_mtime)
    except OSError:
        return stamped


def _stamped(name: str) -> float:
    """When the trash folder `name` was made; +inf for a name that is not ours."""
    try:
        return datetime.strptime(name[:15], _STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return math.inf


def _remove(trash: int, name: str, on_skip: Callable[[str, str], None]) -> bool:
    """Remove the trash folder `name` and everything in it; True when it went. `shutil.rmtree`
    with a dir_fd walks by descriptor and unlinks (never follows) the links it meets; a
    folder swapped for a link under it makes it stop, not follow."""
    where = f"{TRASH_DIR}/{name}"
    try:
        st = os.stat(name, dir_fd=trash, follow_symlinks=False)
        if stat_mod.S_ISLNK(st.st_mode):
            on_skip(where, "is a symlink: removed the link, not followed")
            os.unlink(name, dir_fd=trash)
            return True
        if not stat_mod.S_ISDIR(st.st_mode):
            return False  # not ours: syncd only makes folders here
    except OSError:
        return False
    try:
        shutil.rmtree(name, dir_fd=trash, ignore_errors=True)
    except RecursionError:  # rmtree recurses once per level: a tree ~1000 folders deep
        on_skip(where, "nested too deeply to remove: remove it by hand")
        return False
    return not _exists(trash, [name])

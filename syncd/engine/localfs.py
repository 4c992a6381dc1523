"""Everything that touches the local root: stat, walk, hashing, and atomic writes.

The one promise kept here: a file appears under its real name only complete and fsynced
(written under a TEMP_PREFIX name the watcher ignores, then renamed into place), and
nothing is ever written outside the root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat as statmod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from syncd.engine.filters import PathFilter
from syncd.engine.model import LocalFile
from syncd.engine.paths import (
    STATE_DIR,
    TEMP_PREFIX,
    is_own_temp,
    is_plain_key,
    key_refusal,
)
from syncd.providers.base import ObjectInfo
from syncd.providers.errors import Cancelled, ProviderError, SourceChanged
from syncd.providers.local import NotAFolder, descend, open_root

CHUNK = 1024 * 1024


class LocalPathError(Exception):
    """A local path that cannot be synced (a symlink, a folder where a file should be, …)."""


class FileInTheWay(LocalPathError):
    """A regular file stands where a folder on the way to a download should be; `path` is its
    root-relative path (`a.txt` for `a.txt/inner.txt`)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: a file where a folder should be")
        self.path = path


def root_unreadable(root: Path) -> str | None:
    """Why syncd may not read the folder `root` (a pair's local root), said as such, or None.
    A folder that is gone or replaced meanwhile is not this check's to report: the pass that
    follows finds out."""
    try:
        os.close(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
    except PermissionError as exc:
        return f"cannot read local root {root}: {exc.strerror}"
    except OSError:
        pass
    return None


def looks_empty(root: Path) -> bool:
    """Does the folder `root` hold nothing but syncd's own folder (a bare mount point)?"""
    try:
        with os.scandir(root) as entries:
            return all(entry.name == STATE_DIR for entry in entries)
    except OSError:
        return False


def to_local(root: Path, path: str) -> Path:
    """The filesystem path of a key inside `root`. Keys are checked before they get here;
    this is the last line of defence against leaving the root."""
    parts = path.split("/")
    target = root.joinpath(*parts)
    if ".." in parts or not str(target).startswith(f"{root}{os.sep}"):
        raise LocalPathError(f"{path!r} would leave the local root")
    return target


def local_file(st: os.stat_result) -> LocalFile:
    return LocalFile(
        size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, ctime_ns=st.st_ctime_ns
    )


#: How a folder that cannot be listed is reported (the scan's callers look for it).
UNLISTABLE = "cannot list folder"
#: A folder gone (moved, deleted, replaced by a file) between its parent's listing and its own.
VANISHED = "folder vanished while listed"
#: How a name no remote key may hold is reported (the scan's callers look for it).
NOT_A_KEY = "it cannot be a remote key (not synced)"


def not_a_key(refusal: str) -> str:
    """Why a local name is refused, from `key_refusal`'s reason ("contains a backslash")."""
    return f"name {refusal}: {NOT_A_KEY}"


def stat_local(root: Path, path: str) -> LocalFile | None:
    """The regular file at `path`, or None when there is none (missing, or a folder).

    A symlink, or a path through a symlinked folder, is refused: we never follow links out of
    the root. So is a named pipe, socket or device: the scan skips it, and nothing may
    replace it.
    """
    target = to_local(root, path)
    try:
        st = target.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None  # no file can have this name here (writing it will fail, per file)
        raise
    if statmod.S_ISLNK(st.st_mode):
        raise LocalPathError(f"{path}: is a symlink (not followed)")
    if statmod.S_ISDIR(st.st_mode):
        return None
    if not statmod.S_ISREG(st.st_mode):
        # A named pipe, socket or device: skipped like a symlink, never written over (a
        # download would unlink a live program's socket).
        raise LocalPathError(f"{path}: {_not_regular(st.st_mode)}")
    _refuse_symlinked_parents(root, path)
    return local_file(st)


def _refuse_symlinked_parents(root: Path, path: str) -> None:
    current = str(root)
    for part in path.split("/")[:-1]:
        current = f"{current}{os.sep}{part}"
        try:
            linked = statmod.S_ISLNK(os.lstat(current).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone meanwhile: no link to follow
        if linked:
            raise LocalPathError(f"{path}: a parent folder is a symlink (not followed)")


def walk(
    root: Path,
    path_filter: PathFilter,
    on_skip: Callable[[str, str], None],
    *,
    start: str = "",
    clean_temp: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, LocalFile]]:
    """Every regular file under `root` (or its sub-folder `start`) that the filter admits, as
    (key, LocalFile).

    Symlinks, named pipes, sockets and devices are skipped and reported through `on_skip`, as
    are names no remote key may hold (a file sent up under one would come back from the
    listing as a refused key, read as a remote deletion; the reason ends in NOT_A_KEY) and
    what is under them.
    `clean_temp` is handed the key of each temp file an earlier run left (an interrupted
    download; a resumable one's too, which it keeps where a record names it): only safe
    before any transfer of this process started.
    """
    top = to_local(root, start) if start else root
    # (folder, its key prefix, inside a folder the filters exclude): a `!` rule may let a
    # file back in below one, so the walk goes in (`PathFilter.prunes`), but says nothing of
    # what it meets there that the filters leave out (a symlink, a temp name: no report, no
    # clean-up), as when it skipped the folder whole. A folder it cannot list is still said
    # (`on_skip`), so that nothing below it reads as deleted.
    stack: list[tuple[Path, str, bool]] = [(top, start + "/" if start else "", False)]
    while stack:
        folder, prefix, hidden = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            on_skip(prefix.rstrip("/") or ".", VANISHED)  # moved or deleted meanwhile
            continue
        except OSError as exc:
            # Said of an excluded folder too: a file let back in below it is unknown now,
            # not deleted (the caller weighs whether it is a failure).
            on_skip(prefix.rstrip("/") or ".", f"{UNLISTABLE}: {exc.strerror}")
            continue
        for entry in entries:
            name = entry.name
            key = prefix + name
            if hidden and path_filter.excluded(key) and path_filter.excluded(key, is_dir=True):
                # Left out whatever it is; only a folder is walked, for what `!` lets back.
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False) and not path_filter.prunes(key):
                        stack.append((Path(entry.path), key + "/", True))
                continue
            if is_own_temp(name):
                if clean_temp is not None:
                    clean_temp(key)
                continue
            refusal = None if is_plain_key(name) else key_refusal(name)
            if refusal is not None:
                on_skip(key, not_a_key(refusal))
                continue
            try:
                if entry.is_symlink():
                    on_skip(key, "symlink (not followed)")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if not path_filter.prunes(key):
                        excluded = hidden or path_filter.excluded(key, is_dir=True)
                        stack.append((Path(entry.path), key + "/", excluded))
                    continue
                if path_filter.excluded(key):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    on_skip(key, _not_regular(entry.stat(follow_symlinks=False).st_mode))
                    continue
                yield key, local_file(entry.stat(follow_symlinks=False))
            except OSError as exc:
                on_skip(key, exc.strerror or str(exc))


def _not_regular(mode: int) -> str:
    """Why a path that is neither a file, a folder nor a symlink is skipped (rsync says
    "skipping non-regular file"): it has no bytes to sync."""
    for test, kind in (
        (statmod.S_ISFIFO, "a named pipe"),
        (statmod.S_ISSOCK, "a socket"),
        (statmod.S_ISCHR, "a character device"),
        (statmod.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"not a regular file ({kind})"
    return "not a regular file"


def open_to_read(path: Path) -> BinaryIO:
    """Open the file at `path` for reading, unbuffered, never through a symlink standing
    there (swapped in after it was looked at): that is OSError ELOOP, not a file outside the
    root read and sent. Unbuffered: callers read whole or in large chunks; a buffer would
    only add its own syscalls."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return open(fd, "rb", buffering=0)


def hash_file(path: Path, with_md5: bool = False) -> tuple[LocalFile, str, str | None]:
    """Hash a file in one pass; returns the stat taken when it was opened, sha256 and md5."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    with open_to_read(path) as fh:
        st = os.fstat(fh.fileno())
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return local_file(st), sha.hexdigest(), md5.hexdigest() if md5 is not None else None


def sha256_of_fd(fd: int) -> str:
    """The SHA-256 of the whole file open at `fd`, read by offset (its position is left as
    it is): the very file that is then sent, or was just written."""
    return hashes_of_fd(fd)[0]


def hashes_of_fd(fd: int, *, md5: bool = False) -> tuple[str, str | None]:
    """The SHA-256 of the whole file open at `fd` and, when asked, its MD5 (else None), in
    one read by offset (its position is left as it is)."""
    sha = hashlib.sha256()
    md5_hash = hashlib.md5(usedforsecurity=False) if md5 else None
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        sha.update(chunk)
        if md5_hash is not None:
            md5_hash.update(chunk)
        offset += len(chunk)
    return sha.hexdigest(), md5_hash.hexdigest() if md5_hash is not None else None


def check_downloaded(info: ObjectInfo, sha256: str, md5: str | None) -> None:
    """ProviderError unless the bytes written (their `sha256`, and `md5` when taken) are the
    object's: its `sha256` metadata when it has one (syncd wrote it), else the MD5 the
    service states (an object another tool wrote: S3's single-part ETag, GCS's md5Hash,
    Azure's Content-MD5). Issue 5: a mismatch is an error and a retry, never a success."""
    if info.sha256 is not None:
        if info.sha256 != sha256:
            raise ProviderError(
                f"checksum mismatch (expected {info.sha256[:12]}…, got {sha256[:12]}…)"
            )
    elif info.md5 is not None and md5 is not None and info.md5.lower() != md5:
        raise ProviderError(f"checksum mismatch (expected MD5 {info.md5[:12]}…, got {md5[:12]}…)")


class HashingReader:
    """A read-only file wrapper that hashes what passes through and honours cancellation.

    Providers read the upload body through it, so the hash is of exactly the bytes sent.
    """

    def __init__(
        self,
        raw: BinaryIO,
        is_cancelled: Callable[[], bool],
        meter: Callable[[int], None] | None = None,
        size: int | None = None,
        still: Callable[[], bool] | None = None,
    ) -> None:
        self._raw = raw
        #: The size the file had when it was opened: an end met before it means it shrank.
        self._size = size
        #: Asked before the last bytes go: a file that changed while it was read is not
        #: completed (the request fails short of its length, and nothing is published).
        self._still = still
        self._sha = hashlib.sha256()
        self._is_cancelled = is_cancelled
        self._meter = meter
        self._valid = True
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        if self._is_cancelled():
            raise Cancelled("upload cancelled: syncd is stopping")
        data = self._raw.read(size)
        if not data and size != 0 and self._size is not None and self.bytes_read < self._size:
            raise SourceChanged("the file got shorter while it was being sent")
        last = self._size is not None and self.bytes_read + len(data) >= self._size
        if data and last and self._still is not None and not self._still():
            raise SourceChanged("the file changed while it was being sent")
        self._sha.update(data)
        self.bytes_read += len(data)
        if self._meter is not None and data:
            self._meter(len(data))  # throttling (may wait) and progress
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Rewinding (an SDK retrying the request) starts the hash over; after any other seek
        the digest no longer describes what was sent, until the next rewind."""
        position = self._raw.seek(offset, whence)
        if position == 0:
            self._sha = hashlib.sha256()
            self.bytes_read = 0
            self._valid = True
        elif position != self.bytes_read:
            self._valid = False
        return position

    def hexdigest(self) -> str | None:
        """The SHA-256 of the bytes read since the last rewind, or None if seeks broke it."""
        return self._sha.hexdigest() if self._valid else None


class HashingWriter:
    """A write-only wrapper that hashes what a provider writes, and honours cancellation."""

    def __init__(
        self,
        raw: BinaryIO,
        is_cancelled: Callable[[], bool],
        meter: Callable[[int], None] | None = None,
        *,
        md5: bool = False,
    ) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._is_cancelled = is_cancelled
        self._meter = meter
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        if self._is_cancelled():
            raise Cancelled("download cancelled: syncd is stopping")
        if self._meter is not None and data:
            self._meter(len(data))  # throttling (may wait) and progress
        self._sha.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        self.bytes_written += len(data)
        return self._raw.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def md5_hexdigest(self) -> str | None:
        """The MD5 of what was written, when asked for at construction (else None)."""
        return self._md5.hexdigest() if self._md5 is not None else None


def make_parents(root: Path, target: Path) -> None:
    """Create the folders between root and target, refusing to go through a symlink; a regular
    file where a folder belongs is FileInTheWay (one lstat per folder)."""
    current = root
    for part in target.parent.relative_to(root).parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            current.mkdir(exist_ok=True)
            continue
        if statmod.S_ISLNK(mode):
            raise LocalPathError(f"{current}: is a symlink (not followed)")
        if statmod.S_ISREG(mode):
            raise FileInTheWay(current.relative_to(root).as_posix())


@dataclass(frozen=True)
class Spot:
    """Where a file goes: its folder, held open, and its name in that folder."""

    fd: int
    name: str


@contextlib.contextmanager
def spot_of(root: Path, target: Path) -> Iterator[Spot]:
    """Hold `target`'s folder open, reached from the root one `openat` at a time (no symlink
    followed), for writes made relative to it: a folder swapped for a symlink after a caller
    looked can no longer lead a write, a rename or an unlink out of the root.

    A symlink or a file met on the way is LocalPathError; a folder gone meanwhile is
    FileNotFoundError (the caller decides the path again)."""
    names = target.relative_to(root).parts
    with contextlib.ExitStack() as held:
        top = open_root(str(root))
        held.callback(os.close, top)
        try:
            fds = held.enter_context(descend(top, names[:-1], create=False))
        except NotAFolder as exc:
            raise LocalPathError(f"{exc.filename}: a symlink or a file (not followed)") from None
        yield Spot(fds[-1], names[-1])


def still_placed(root: Path, target: Path, spot: Spot) -> bool:
    """Is the folder `spot` holds still `target`'s folder, reached from the root as
    `spot_of` reaches it? A folder moved or renamed meanwhile (out of the root, or to
    another name in it) is not: a write through the held folder would land where the user
    put that folder, over whatever they keep there."""
    try:
        with spot_of(root, target) as now:
            here, held = os.fstat(now.fd), os.fstat(spot.fd)
    except (OSError, LocalPathError):
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def remove_at(spot: Spot, name: str | None = None) -> None:
    """Unlink `name` (default: the spot's own name) in the spot's folder; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spot.name if name is None else name, dir_fd=spot.fd)


def stands(path: Path) -> bool:
    """Something (a file, a folder, a link, followed or not) stands at `path`. A name too
    long for the filesystem stands nowhere (`Path.exists` raises for it)."""
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise
    return True


def is_folder(path: Path) -> bool:
    """A real folder (not a link to one) stands at `path`."""
    try:
        return statmod.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def prune_empty_parents(root: Path, removed: Path) -> None:
    """After a file left, remove folders it leaves empty, up to (never including) the root.

    The folders are reached from the root one `openat` at a time, never through a joined
    path: one swapped for a symlink meanwhile stops the climb instead of removing an empty
    folder outside the root."""
    try:
        names = removed.parent.relative_to(root).parts
    except ValueError:
        return
    if not names:
        return
    try:
        top = open_root(str(root))
    except OSError:
        return
    try:
        with descend(top, names[:-1], create=False) as fds:
            for depth in range(len(names), 0, -1):
                try:
                    os.rmdir(names[depth - 1], dir_fd=fds[depth - 1])
                except OSError:
                    return  # not empty (or not ours to remove): stop climbing
    except OSError:
        return  # a folder on the way is gone, or is a symlink now
    finally:
        os.close(top)


def check_name_fits(target: Path) -> None:
    """Raise ENAMETOOLONG (as the rename into place would) if `target`'s name is longer than
    its folder's filesystem takes, before a byte is fetched: the download of an object under
    such a name ran in full at every retry only for its rename to fail (a 5 GB object, 24
    times a day). Names of up to 63 characters fit any filesystem: no syscall for them."""
    name = target.name
    if len(name) <= 63:
        return
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(name)) > limit:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)


def temp_name() -> str:
    """A temporary sibling's name, in the target's folder so the rename is atomic."""
    return f"{TEMP_PREFIX}{secrets.token_hex(6)}"

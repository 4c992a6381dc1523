"""`file:///ABS/PATH` remotes: a plain folder plays the bucket, each file is an object.

It exists so syncd works with no cloud account (the default config), and so the conformance
suite has a backend that needs no emulator. Keys are '/'-separated paths under the root.

Every path is resolved one component at a time with `O_NOFOLLOW` relative to an open directory
descriptor, never as a joined string: a key can name nothing outside the root, and a symlink
planted anywhere under the root (by a user, or by a hostile remote key on another pair) is never
followed. Symlinks are simply not objects here: `list` skips them (saying so once for each)
and `stat` does not see them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import BinaryIO

import structlog

from syncd.providers import renames
from syncd.providers.base import (
    Capabilities,
    NotWatchable,
    ObjectInfo,
    UploadRequest,
    holds_copy_of,
)
from syncd.providers.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ProviderError,
    Transient,
)
from syncd.providers.mounts import local_filesystem_reason
from syncd.providers.options import FileOptions
from syncd.providers.url import RemoteURL

log = structlog.get_logger("syncd.providers.local")

#: Temporary upload names; the same prefix as `syncd.engine.paths.TEMP_PREFIX` (kept here so the
#: providers never import the engine). Listings skip them, so a half-written upload is invisible.
TEMP_PREFIX = ".syncd-tmp-"
#: The whole name of one: the prefix and 16 random hex digits (`paths.OWN_TEMP` admits these).
#: Anything else under the prefix is a user's file, listed like any other.
_OWN_TEMP = re.compile(r"\.syncd-tmp-[0-9a-f]{16}")
CHUNK = 1024 * 1024
#: Files moved at once to one folder remote. A copy to a local disk is this process's CPU
#: (bookkeeping under the interpreter lock) more than waiting: on 2 cores, 20,000 small files
#: took 7.8 s with one at a time and 14.4 s with sixteen; two at a time made ~10 futex calls
#: per file (threads handing the lock back and forth at every syscall) against one per 6
#: files with one. A big file does not hold the small ones up: the engine lets a streamed
#: transfer step out of the cap (`WorkQueue.long_running`).
MAX_TRANSFERS = 1

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a key must not hang a worker; no effect on files.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
_PASSING = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR}
_BAD_NAME = {
    errno.ENAMETOOLONG,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ELOOP,
    errno.EINVAL,
    errno.EILSEQ,
}
# A missing or non-folder parent, or a symlink where a folder should be: "no such object".
_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


def etag_of(st: os.stat_result) -> str:
    """A version token that changes whenever the file is replaced (new inode) or rewritten
    in place: its size or mtime, or its ctime, which every write moves, even one that
    restores the size and puts the old mtime back (that edit would otherwise go unseen, and
    a later local edit would overwrite it with no copy kept). A chmod or a new hard link
    moves the ctime too: the content hash then tells it is the same version. Uploads always
    replace, so each upload gets a new token; its own is taken once nothing of the upload
    changes the file any more (see `_upload_into`)."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"


def _kept_its_bytes(before: os.stat_result, after: os.stat_result) -> bool:
    """Did an open file keep its bytes between two fstats? Its version token says so, but for
    a change of its link count (the name replaced or removed meanwhile, which leaves the bytes
    as they were), which moves the ctime too."""
    if after.st_nlink != before.st_nlink:
        return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return etag_of(after) == etag_of(before)


def split_key(key: str) -> list[str]:
    """The key's path components, or InvalidRequest for a key that could leave the root."""
    reason = None
    if not key:
        reason = "empty key"
    elif "\x00" in key:
        reason = "contains NUL"
    elif "\\" in key:
        reason = "contains a backslash"
    elif key.startswith("/"):
        reason = "absolute key"
    parts = key.split("/")
    if reason is None and any(part in ("", ".", "..") for part in parts):
        reason = "empty, '.' or '..' path segment"
    if reason is not None:
        raise InvalidRequest(f"refused key {key!r}: {reason}")
    return parts


def _translate(exc: OSError, where: str) -> ProviderError:
    """Map an OSError onto the sentinel errors (ENOENT is left to the caller, which knows
    whether it means 'no such object' or 'the root is gone')."""
    code = exc.errno
    reason = exc.strerror or type(exc).__name__
    if code in _PERMISSION:
        return PermissionDenied(f"{where}: permission denied")
    if code in _PASSING:
        return Transient(f"{where}: {reason}")
    if code in _BAD_NAME:
        return InvalidRequest(f"{where}: {reason}")
    return ProviderError(f"{where}: {reason}")


class FileProvider:
    """A folder on a local (or mounted) filesystem as a remote. Thread-safe."""

    def __init__(self, url: RemoteURL, options: FileOptions | None = None) -> None:
        self.root = url.path
        self.url = str(url)
        self.options = options or FileOptions()
        self.capabilities = Capabilities(
            conditional_writes=True,
            server_side_copy=False,
            listing_has_metadata=True,
            max_transfers=MAX_TRANSFERS,
        )
        # Makes "compare etag, then replace/unlink" atomic among this process's workers; the
        # folder's flock (`_swapping`) does the same between processes (two syncd instances
        # on one shared folder), where a plain folder has no conditional rename.
        self._swap_lock = threading.Lock()
        #: Uploads leave flushing to the barrier (see `batch`).
        self._batched = False
        #: With a barrier per file (see `batch`): the keys uploaded since it last ran.
        self._unflushed: list[str] | None = None
        self._unflushed_lock = threading.Lock()
        #: The symlinks and special files a listing skipped and said so (once each, not at
        #: every poll).
        self._skips_said: set[str] = set()

    # -- helpers --------------------------------------------------------------------------
    def _where(self, key: str) -> str:
        return f"file://{self.root.rstrip('/')}/{key}"

    def _root_missing(self) -> NotFound:
        return NotFound(f"remote folder {self.root} does not exist")

    @contextmanager
    def _dirs(self, parents: list[str], *, create: bool) -> Iterator[list[int]]:
        """Open the root and each parent folder in turn, never following a symlink; yields the
        descriptors, root first. `create` makes missing folders. Raises OSError."""
        try:
            root = open_root(self.root)
        except FileNotFoundError:
            raise self._root_missing() from None
        except NotADirectoryError:
            raise NotFound(f"remote folder {self.root} is not a folder") from None
        try:
            with descend(root, parents, create=create) as fds:
                yield fds
        finally:
            os.close(root)

    @contextmanager
    def _open_file(self, key: str) -> Iterator[tuple[int, os.stat_result]]:
        """An open descriptor on the regular file at `key` and its fstat; NotFound otherwise."""
        parts = split_key(key)
        where = self._where(key)
        try:
            with self._dirs(parts[:-1], create=False) as fds:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=fds[-1])
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise _NoSuchFile(f"{where}: not found") from None
            raise _translate(exc, where) from exc
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise _NoSuchFile(f"{where}: not found (not a regular file)")
            os.set_blocking(fd, True)
            yield fd, st
        finally:
            os.close(fd)

    @staticmethod
    def _info(
        key: str, st: os.stat_result, sha256: str | None = None, has_metadata: bool = False
    ) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=etag_of(st),
            modified=st.st_mtime,
            mtime_ns=st.st_mtime_ns,
            sha256=sha256,
            has_metadata=has_metadata,
        )

    # -- Provider -------------------------------------------------------------------------
    def list(self) -> Iterator[ObjectInfo]:
        """Every regular file under the root. An unreadable folder is an error, never a gap:
        a listing with holes would read as remote deletions. Walked with a stack, not by
        recursion: a folder ~1000 levels deep must not fail every listing of the pair."""
        self._check_root()
        stack: list[tuple[str, str]] = [(self.root, "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    found = list(entries)
            except FileNotFoundError:
                continue  # removed while we listed: its files are gone
            except OSError as exc:
                raise _translate(exc, self._where(prefix) if prefix else self.url) from exc
            temps = [e.name for e in found if _OWN_TEMP.fullmatch(e.name)]
            if temps:
                _clear_abandoned(folder, temps, by_lock=self._locks_reach_every_writer())
            for entry in found:
                try:
                    if entry.is_symlink():
                        self._skip(prefix + entry.name, "symlink (not followed)")
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{prefix}{entry.name}/"))
                    elif _OWN_TEMP.fullmatch(entry.name):
                        continue  # an upload's temp file, removed above if abandoned
                    elif entry.is_file(follow_symlinks=False):
                        yield self._info(prefix + entry.name, entry.stat(follow_symlinks=False))
                    else:
                        self._skip(
                            prefix + entry.name, "not a regular file (a pipe, socket or device)"
                        )
                except FileNotFoundError:
                    continue  # deleted between the folder read and the stat
                except OSError as exc:
                    raise _translate(exc, self._where(prefix + entry.name)) from exc

    def _skip(self, key: str, reason: str) -> None:
        """A symlink, named pipe, socket or device in the folder is no object (never
        followed, never read): said once, as the local side says its own (`"event":
        "skipped"`), so it does not vanish without a word."""
        if key not in self._skips_said:
            self._skips_said.add(key)
            log.warning("skipped", remote=self.url, key=key, reason=reason)

    def stat(self, key: str) -> ObjectInfo:
        """Size, version and mtime from the file, plus a freshly computed SHA-256 (a folder
        keeps no checksum of its own)."""
        where = self._where(key)
        with self._open_file(key) as (fd, st):
            try:
                with os.fdopen(os.dup(fd), "rb") as fh:
                    sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
                after = os.fstat(fd)
            except OSError as exc:
                raise _translate(exc, where) from exc
        if not _kept_its_bytes(st, after):
            raise Transient(f"{where}: changed while being hashed")
        return self._info(key, st, sha256=sha256, has_metadata=True)

    def download(self, key: str, sink: BinaryIO, if_match: str | None = None) -> ObjectInfo:
        where = self._where(key)
        with self._open_file(key) as (fd, st):
            if if_match is not None and etag_of(st) != if_match:
                raise PreconditionFailed(f"{where}: changed since it was listed")
            with os.fdopen(os.dup(fd), "rb") as fh:
                # Errors of the sink (a full local disk, a cancellation) pass through untouched.
                shutil.copyfileobj(fh, sink, CHUNK)
        return self._info(key, st)

    def upload(self, request: UploadRequest) -> ObjectInfo:
        """Write to a temp file beside the target, fsync, set the mtime, then link (create-only)
        or rename (replace) it into place, so readers only ever see whole files; then fsync
        the folder. In a batch (see `batch`) the two fsyncs are left to the barrier."""
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        parts = split_key(request.key)
        where = self._where(request.key)
        try:
            with self._dirs(parts[:-1], create=True) as fds:
                return self._upload_into(fds[-1], parts[-1], request, where)
        except _SourceFailed as failed:
            raise failed.error from None  # the caller's stream failed, not the remote
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                # A parent folder vanished under us (a concurrent delete pruned it): try again.
                raise Transient(f"{where}: parent folder removed concurrently") from exc
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise InvalidRequest(f"{where}: a parent is a symlink or a file") from exc
            raise _translate(exc, where) from exc

    def _upload_into(
        self, dir_fd: int, name: str, request: UploadRequest, where: str
    ) -> ObjectInfo:
        tmp, fd = _create_temp(dir_fd, where)
        placed = False
        batched = self._batched
        ours = None
        try:
            ours = os.fstat(fd).st_ino
            written = _copy_to_fd(request.body.read, fd)
            if written != request.size:
                raise InvalidRequest(f"{where}: body had {written} bytes, expected {request.size}")
            if not batched:
                os.fsync(fd)
            os.utime(fd, ns=(request.mtime_ns, request.mtime_ns))
            with self._swapping(dir_fd, request.if_match is not None):
                leftover = self._place(dir_fd, tmp, name, request, where, ours=ours)
                placed = True
            if leftover:
                # The replaced version, or our own second name (before the fstat below:
                # dropping it changes the link count, and so the ctime the version holds).
                # A listing may have removed the replaced version first: unlocked, it is
                # abandoned to any listing (`_clear_abandoned`).
                with suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
            if not batched or not self._left_to_barrier(request.key):
                if batched:
                    os.fsync(fd)  # the batch ended while this upload ran: no barrier will
                os.fsync(dir_fd)  # make the new name durable, not only the bytes
            # fstat of our own descriptor: exactly the version we placed, even if someone
            # replaced it again a microsecond later. Taken last: the rename and the link
            # (and unlink) above move the ctime, fsync does not.
            st = os.fstat(fd)
        finally:
            try:
                if not placed:  # before the close: our lock keeps listings off it till then
                    _drop_temp(dir_fd, tmp, ours, name)
            finally:
                os.close(fd)
        return self._info(
            request.key,
            st,
            sha256=request.sha256,
            has_metadata=request.sha256 is not None,
        )

    def _place(
        self, dir_fd: int, tmp: str, name: str, request: UploadRequest, where: str, *, ours: int
    ) -> bool:
        """Put the finished temp file (inode `ours`) at `name`: create-only, on condition of
        the version there, or in any case. True when `tmp` still names a file to drop (our
        second link, or the version replaced)."""
        if request.if_absent:
            _link_new(tmp, name, dir_fd, where)
            return True
        if request.if_match is None:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return False
        checked = self._check_version(dir_fd, name, request.if_match, where)
        return _replace_checked(dir_fd, tmp, name, checked, where, ours=ours)

    @contextmanager
    def _swapping(self, dir_fd: int, conditional: bool) -> Iterator[None]:
        """The lock around "check the version, then replace or unlink" in one folder: this
        process's lock, and for a conditional change also an flock on the folder, which
        every syncd writing this folder takes too (a create-only link needs none: it is
        atomic by itself)."""
        with self._swap_lock:
            if not conditional:
                yield
                return
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(dir_fd, fcntl.LOCK_UN)

    def _check_version(self, dir_fd: int, name: str, if_match: str, where: str) -> os.stat_result:
        """PreconditionFailed unless `name` is a regular file whose version is `if_match`;
        its lstat otherwise."""
        try:
            current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise PreconditionFailed(f"{where}: no longer exists") from None
        if not stat_mod.S_ISREG(current.st_mode) or etag_of(current) != if_match:
            raise PreconditionFailed(f"{where}: changed since it was listed")
        return current

    def delete(self, key: str, if_match: str | None = None) -> None:
        """Remove the file, then the folders it leaves empty (never the root itself)."""
        parts = split_key(key)
        where = self._where(key)
        try:
            with self._dirs(parts[:-1], create=False) as fds:
                with self._swapping(fds[-1], if_match is not None):
                    try:
                        current = os.stat(parts[-1], dir_fd=fds[-1], follow_symlinks=False)
                    except FileNotFoundError:
                        return
                    if not stat_mod.S_ISREG(current.st_mode):
                        return  # a folder or a symlink is not an object: nothing to delete
                    if if_match is None:
                        os.unlink(parts[-1], dir_fd=fds[-1])
                    elif etag_of(current) != if_match:
                        raise PreconditionFailed(f"{where}: changed since it was listed")
                    else:
                        _remove_checked(fds[-1], parts[-1], current, where)
                _prune_empty(fds, parts[:-1])
        except OSError as exc:
            if exc.errno in _ABSENT:
                return  # a parent is missing (or not a real folder): the object is not there
            raise _translate(exc, where) from exc

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        """A plain folder has no server: the copy streams through us, create-only. A
        destination that holds the source's very version is an earlier attempt's copy (its
        answer lost to an error after the file was in place): that copy, as the Provider
        protocol says."""
        where = self._where(src_key)
        with self._open_file(src_key) as (fd, st):
            if if_match is not None and etag_of(st) != if_match:
                raise PreconditionFailed(f"{where}: changed since it was listed")
            with os.fdopen(os.dup(fd), "rb") as fh:
                request = UploadRequest(
                    key=dst_key, body=fh, size=st.st_size, mtime_ns=st.st_mtime_ns, if_absent=True
                )
                try:
                    return self.upload(request)
                except PreconditionFailed:
                    found = self._earlier_copy(src_key, dst_key, etag_of(st))
                    if found is None:
                        raise
                    return found

    def _earlier_copy(self, src_key: str, dst_key: str, version: str) -> ObjectInfo | None:
        """The file at `dst_key`, if it is a copy of version `version` of `src_key` (the same
        size, mtime and SHA-256, both hashed here), else None."""
        try:
            source, found = self.stat(src_key), self.stat(dst_key)
        except NotFound:
            return None
        if source.etag != version or holds_copy_of(source, found) is not True:
            return None
        return found

    def set_mtime(self, key: str, mtime_ns: int, if_match: str) -> ObjectInfo:
        """The file's own mtime, set on the file checked to be version `if_match` (opened, no
        symlink followed), under the same lock as a conditional replace. Its version token
        moves with it (see `etag_of`). Not flushed: a crash that loses it leaves the older
        mtime, which the next pass sets again.

        The lock keeps syncd instances apart, not other programs: one may write the file
        between the check and the restamp, and the restamp then hides that write behind a
        version recorded as synced. The token cannot tell (the restamp moves the mtime and the
        ctime, as the write did), so the content does: it is hashed before and after, and a
        difference is PreconditionFailed (the write stays, its mtime the one asked for)."""
        where = self._where(key)
        try:
            with self._open_file(key) as (fd, st):
                if etag_of(st) != if_match:
                    raise PreconditionFailed(f"{where}: changed since it was listed")
                before = _hash_unchanged(fd, st, where)
                stamped = self._restamp(key, fd, st, mtime_ns, where)
                after = _hash_unchanged(fd, stamped, where)
        except _NoSuchFile:
            raise PreconditionFailed(f"{where}: no longer exists") from None
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise PreconditionFailed(f"{where}: no longer exists") from None
            raise _translate(exc, where) from exc
        if after != before:
            raise PreconditionFailed(f"{where}: written while its mtime was set")
        return self._info(key, stamped)

    def _restamp(
        self, key: str, fd: int, st: os.stat_result, mtime_ns: int, where: str
    ) -> os.stat_result:
        """Set the mtime of the open file `fd` (stat'ed as `st`), if `key` still names it in
        that version, under the lock; its fstat afterwards, if `key` names it still."""
        parts = split_key(key)
        with self._dirs(parts[:-1], create=False) as fds, self._swapping(fds[-1], True):
            # By name: the file still stands there (the same inode, as `etag_of` says), unchanged.
            self._check_version(fds[-1], parts[-1], etag_of(st), where)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            stamped = os.fstat(fd)
            # A save over the name meanwhile: the version handed back would be of no listing.
            if os.stat(parts[-1], dir_fd=fds[-1], follow_symlinks=False).st_ino != st.st_ino:
                raise PreconditionFailed(f"{where}: replaced while its mtime was set")
            return stamped

    def check(self) -> None:
        """The root must be an existing, writable folder."""
        self._check_root()
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionDenied(f"remote folder {self.root} is not writable")

    def probe(self) -> None:
        """The root still an existing folder; never made here, even with `create_bucket`."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise self._root_missing() from None
        except OSError as exc:
            raise _translate(exc, self.url) from exc
        if not stat_mod.S_ISDIR(st.st_mode):
            raise NotFound(f"remote folder {self.root} is not a folder")

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own descriptors."""

    # -- WatchableRemote -------------------------------------------------------------------
    def _locks_reach_every_writer(self) -> bool:
        """Is the root (and all below it) on local filesystems, where a flock is seen by every
        process that can write there? Looked up at each listing that finds an upload temp:
        a mount made under the root meanwhile counts."""
        return local_filesystem_reason(self.root) is None

    def watch_root(self) -> str:
        """The root, when it and every filesystem mounted below it are local."""
        reason = local_filesystem_reason(self.root)
        if reason is not None:
            raise NotWatchable(f"remote folder {self.root}: {reason}")
        return self.root

    # -- BatchedDurability ------------------------------------------------------------------
    def batch(self, *, each: bool = False) -> Callable[[], None]:
        """Uploads stop fsyncing the file and its folder each. The barrier flushes the whole
        filesystem of the root at once (one journal commit instead of two per file), or with
        `each` the files uploaded since it last ran and their folders: a daemon's barrier,
        which must not force out what other programs write to that filesystem."""
        with self._unflushed_lock:
            self._batched = True
            if not each:
                return self._flush_all
            if self._unflushed is None:
                self._unflushed = []
        return self._flush_uploaded

    def unbatch(self) -> None:
        """Uploads flush themselves again, those still running included; what was left to the
        barrier stays listed for its last run."""
        with self._unflushed_lock:
            self._batched = False

    def _left_to_barrier(self, key: str) -> bool:
        """A batched upload, placed: leave its flush to the barrier, if the batch still runs
        (noting the key for a barrier per file); False when the batch ended meanwhile."""
        with self._unflushed_lock:
            if not self._batched:
                return False
            if self._unflushed is not None:
                self._unflushed.append(key)
            return True

    def _flush_uploaded(self) -> None:
        """fsync each file uploaded since the last barrier, then each of their folders. A file
        deleted since is skipped; one replaced since is flushed as it now stands (the name's
        current content is what a record can describe)."""
        with self._unflushed_lock:
            keys = self._unflushed or []
            self._unflushed = [] if self._batched else None
        by_folder: dict[tuple[str, ...], set[str]] = {}
        for key in keys:
            parts = split_key(key)
            by_folder.setdefault(tuple(parts[:-1]), set()).add(parts[-1])
        for folder, names in by_folder.items():
            try:
                with self._dirs(list(folder), create=False) as fds:
                    for name in names:
                        try:
                            fd = os.open(name, _READ_FLAGS, dir_fd=fds[-1])
                        except OSError as exc:
                            if exc.errno in _ABSENT:
                                continue  # deleted, or a link or folder now stands there
                            raise
                        try:
                            os.fsync(fd)
                        except OSError as exc:
                            if exc.errno != errno.EINVAL:
                                raise  # EINVAL: a pipe or socket now stands there, not ours
                        finally:
                            os.close(fd)
                    os.fsync(fds[-1])
            except OSError as exc:
                if exc.errno in _ABSENT:
                    continue  # the folder went away: nothing of ours left to flush there
                raise _translate(exc, self.url) from exc

    def _flush_all(self) -> None:
        try:
            fd = open_root(self.root)
        except FileNotFoundError:
            raise self._root_missing() from None
        except OSError as exc:
            raise _translate(exc, self.url) from exc
        try:
            syncfs(fd)
        except OSError as exc:
            raise _translate(exc, self.url) from exc
        finally:
            os.close(fd)

    def _check_root(self) -> None:
        try:
            self.probe()
        except NotFound:
            if not self.options.create_bucket or os.path.exists(self.root):
                raise
            self._create_root()
            self.probe()

    def _create_root(self) -> None:
        """`create_bucket: true`: the missing folder is made, parents included (a folder that
        appeared meanwhile is fine)."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, f"cannot create remote folder {self.root}") from exc


class _NoSuchFile(NotFound):
    """No regular file at the key (the root itself is there)."""


class _SourceFailed(Exception):
    """Carries an OSError of the body stream past the remote-side error translation."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


#: Where a filesystem has no flock (so a temp file's writer cannot be told alive): an upload
#: temp file untouched this long was left by a writer that died (kill -9, power loss). Its
#: ctime moves with every write and with the final utime, so a live upload never looks old.
ABANDONED_AFTER_S = 3600.0
#: Fresh temp names tried when listings keep removing the one just created (see `_create_temp`).
_TEMP_TRIES = 3


class NotAFolder(OSError):
    """`descend` met a symlink or a file where a folder belongs (errno ENOTDIR or ELOOP);
    `filename` says which, relative to where the walk began."""


def open_root(path: str) -> int:
    """A descriptor on the folder `path`, the one place a symlink is followed: a configured
    root may be a link. Everything below it is reached through `descend`. Raises OSError."""
    return os.open(path, _DIR_FLAGS & ~os.O_NOFOLLOW)


@contextmanager
def descend(top: int, names: Sequence[str], *, create: bool) -> Iterator[list[int]]:
    """Open each folder of `names` in turn below the open folder `top`; yields the
    descriptors, `top` first (the caller's, left open). `create` makes missing folders.

    Each step is an `openat` with O_NOFOLLOW relative to the one before, never a joined path,
    so a symlink (or a file) standing anywhere in `names` fails the walk with NotAFolder
    instead of being followed, even one swapped in after a caller looked. Any OSError names
    the failing folder, relative to `top`.
    """
    fds = [top]
    try:
        for index, name in enumerate(names):
            try:
                fds.append(_open_dir(fds[-1], name, create=create))
            except OSError as exc:
                where = "/".join(names[: index + 1])
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise NotAFolder(exc.errno, exc.strerror, where) from None
                exc.filename = where
                raise
        yield fds
    finally:
        for fd in reversed(fds[1:]):
            os.close(fd)


def _open_dir(dir_fd: int, name: str, *, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    with suppress(FileExistsError):  # made meanwhile by another writer
        os.mkdir(name, dir_fd=dir_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def syncfs(fd: int) -> None:
    """Flush the filesystem holding `fd` (Linux syncfs(2), which unlike sync(2) reports write
    errors); where libc has no syncfs, every filesystem (sync(2))."""
    import ctypes  # only a pass that batches its flushes needs it

    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "syncfs", None)
    if call is None:
        os.sync()
        return
    if call(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _create_temp(dir_fd: int, where: str) -> tuple[str, int]:
    """A new upload temp file in the folder, open for writing and flock'ed for as long as it
    is open: the proof of a live writer that every listing asks before removing one
    (`_clear_abandoned`), of this process as of another syncd sharing the folder. A listing
    that took the file between its creation and our lock has removed it: then a new name."""
    for _ in range(_TEMP_TRIES):
        tmp = _temp_name()
        fd = os.open(tmp, _TEMP_FLAGS, 0o666, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return tmp, fd  # no locks on this filesystem: listings go by age alone
        try:
            if _names(dir_fd, tmp, os.fstat(fd)):
                return tmp, fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise Transient(f"{where}: its temp files were removed as soon as created")


def _names(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """Does `name` in the folder still stand for the file `st` was taken of?"""
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _clear_abandoned(folder: str, temps: list[str], *, by_lock: bool) -> None:
    """Remove the upload temp files in `folder` that no live writer holds: a syncd killed
    mid-upload (kill -9, power loss) left them, and nothing else ever would. A partial upload
    is only a copy of bytes still on the other side. Under the folder's flock, which every
    syncd takes to swap names in it (`_swapping`), so a file a conditional change has moved
    aside under a temp name for an instant is never taken for one. Never fails a listing.
    `by_lock`: an unheld flock proves the writer gone (a local filesystem); elsewhere (NFS
    mounted with local locks, FUSE, SMB without byte-range locks) another machine's writer
    holds no lock this one sees, and only an hour-old ctime does."""
    if not temps:
        return
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except OSError:
        return
    try:
        with suppress(OSError):
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        for name in temps:
            with suppress(OSError):
                _remove_if_abandoned(dir_fd, name, by_lock=by_lock)
    finally:
        os.close(dir_fd)  # and with it the folder's flock


def _remove_if_abandoned(dir_fd: int, name: str, *, by_lock: bool) -> None:
    """Remove the temp file `name` if its writer is gone: no one holds its flock (a writer
    holds it until it closes the file, the kernel drops it when the writer dies), or, where
    the filesystem has no flock, its ctime is `ABANDONED_AFTER_S` old. Opened for reading (a
    watched remote ignores that, where a close after writing is a change to list again), for
    writing only where an exclusive lock needs it (NFS)."""
    for flags in (os.O_RDONLY, os.O_WRONLY):
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                return
            if not by_lock:
                if time.time() - st.st_ctime > ABANDONED_AFTER_S and _names(dir_fd, name, st):
                    os.unlink(name, dir_fd=dir_fd)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a live upload, ours or another syncd's
            except OSError as exc:
                if exc.errno == errno.EBADF and flags == os.O_RDONLY:
                    continue
                if time.time() - st.st_ctime <= ABANDONED_AFTER_S:
                    return
            if _names(dir_fd, name, st):  # locked, so no writer can take this name back now
                os.unlink(name, dir_fd=dir_fd)
            return
        finally:
            os.close(fd)


def _link_new(tmp: str, name: str, dir_fd: int, where: str) -> None:
    """Place `tmp` under `name` only if nothing is there (a link is atomic and create-only).
    An empty folder of that name makes way: a bucket has no empty folders, and nothing is
    lost (rmdir removes only an empty one); anything else there is PreconditionFailed."""
    for _ in range(2):
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            return
        except FileExistsError:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError:
                break  # a file, a link, or a folder with something in it
    with suppress(OSError):
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        # No object stands there (the listing skips these): no version of it can ever match,
        # so say what is in the way rather than "changed meanwhile" at every attempt.
        if stat_mod.S_ISLNK(mode):
            raise InvalidRequest(f"{where}: a symlink is in the way (not followed)")
        if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode)):
            raise InvalidRequest(f"{where}: a named pipe, socket or device is in the way")
    raise PreconditionFailed(f"{where}: already exists")


def _hash_unchanged(fd: int, st: os.stat_result, where: str) -> str:
    """The SHA-256 of the open file `fd`, stat'ed as `st` right before; PreconditionFailed if
    it was written meanwhile (its version moved: the hash is of no one version)."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if etag_of(os.fstat(fd)) != etag_of(st):
        raise PreconditionFailed(f"{where}: written while its mtime was set")
    return digest


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def _same_file(now: os.stat_result, checked: os.stat_result) -> bool:
    """Is `now` (a file just renamed) the regular file `checked` was taken of? By inode, size
    and mtime: what a rename keeps of a file; not the ctime, which the rename moves."""
    return stat_mod.S_ISREG(now.st_mode) and (now.st_ino, now.st_size, now.st_mtime_ns) == (
        checked.st_ino,
        checked.st_size,
        checked.st_mtime_ns,
    )


def _replace_checked(
    dir_fd: int, tmp: str, name: str, checked: os.stat_result, where: str, *, ours: int
) -> bool:
    """Rename `tmp` (our upload, inode `ours`) over the version at `name` that was checked,
    and only over it.

    The check ran under syncd's lock, which other programs do not take: one may save the file
    after it. So the two are swapped at once (RENAME_EXCHANGE) and what came out is looked
    at: a file written since goes back, PreconditionFailed, nothing replaced; whatever else
    `tmp` then holds is kept beside (`renames.swap_in_checked`). True: `tmp` now names the
    version replaced. Without the swap (the filesystem or libc lacks it), a plain replace,
    the check before it the only one: False."""
    try:
        swapped = renames.swap_in_checked(
            dir_fd,
            tmp,
            name,
            ours=ours,
            expected=lambda out: _same_file(out, checked),
            keep=lambda held: _keep_beside(dir_fd, held, name),
        )
    except renames.Missing:
        raise PreconditionFailed(f"{where}: no longer exists") from None
    except renames.Mismatch:
        raise PreconditionFailed(f"{where}: changed since it was listed") from None
    if not swapped:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return swapped


def _remove_checked(dir_fd: int, name: str, checked: os.stat_result, where: str) -> None:
    """Remove the version at `name` that was checked, and only it.

    As for a replace (`_replace_checked`), another program may save the file after the
    check: the file is moved aside to a fresh temp name first, at once, and looked at. A file
    written since goes back (an edit beats a deletion), PreconditionFailed; never is it left
    under the temp name, which listings remove once it looks abandoned (`renames.check_aside`:
    beside the name if that was taken again)."""
    aside = _temp_name()
    try:
        renames.move_to_fresh(dir_fd, name, dir_fd, aside)
    except FileNotFoundError:
        return  # removed meanwhile: the object is gone all the same
    try:
        renames.check_aside(
            (dir_fd, aside),
            (dir_fd, name),
            expected=lambda moved: _same_file(moved, checked),
            keep=lambda held: _keep_beside(dir_fd, held, name),
        )
    except renames.Mismatch:
        raise PreconditionFailed(f"{where}: changed since it was listed") from None
    os.unlink(aside, dir_fd=dir_fd)


def _keep_beside(dir_fd: int, aside: str, name: str) -> None:
    """Give another program's file, found under our temp name `aside`, a name a listing shows
    (`NAME.syncd-kept-HEX`, next to `name`): a temp name would see it removed as abandoned."""
    stem = os.fsencode(name)[:200].decode("utf-8", "ignore") or "file"
    for _ in range(8):
        kept = f"{stem}.syncd-kept-{secrets.token_hex(4)}"
        try:
            renames.move_free(dir_fd, aside, dir_fd, kept)
        except FileExistsError:
            continue
        log.warning("kept", name=name, kept=kept, reason="written during a conditional change")
        return
    raise FileExistsError(errno.EEXIST, "no free name to keep a file under", name)


def _drop_temp(dir_fd: int, tmp: str, ours: int | None, name: str) -> None:
    """Remove an upload's temp file that was not placed: if it is ours (inode `ours`, None
    when not even known: nothing was swapped yet). What else a failed swap may have left
    there is another program's file, kept beside `name`."""
    try:
        st = os.lstat(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if ours is None or st.st_ino == ours:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
    else:
        _keep_beside(dir_fd, tmp, name)


def _copy_to_fd(read: Callable[[int], bytes], fd: int) -> int:
    """Copy a stream into `fd`; an OSError of the stream itself comes out as _SourceFailed."""
    total = 0
    while True:
        try:
            chunk = read(CHUNK)
        except OSError as exc:
            raise _SourceFailed(exc) from exc
        if not chunk:
            return total
        view = memoryview(chunk)
        while view:
            done = os.write(fd, view)
            view = view[done:]
        total += len(chunk)


def _prune_empty(fds: list[int], parents: list[str]) -> None:
    """rmdir each parent, deepest first, until one is not empty; `fds[i]` holds `parents[i]`."""
    for index in range(len(parents) - 1, -1, -1):
        try:
            os.rmdir(parents[index], dir_fd=fds[index])
        except OSError:
            return  # not empty (or already gone, or in use): stop climbing

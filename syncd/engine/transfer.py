"""Moving bytes between the local root and the remote: conditional uploads, atomic downloads.

These functions know nothing about decisions or strategies; they promise only this: an upload
is made against the remote version we decided on (or not at all), and a download appears under
its real name complete, fsynced, checked and stamped with its mtime, or not at all.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import io
import os
import stat as statmod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO, cast

from syncd.engine import localfs
from syncd.engine.conflicts import conflict_name, host_name
from syncd.engine.model import LocalFile
from syncd.engine.multipart import LargeTransfers, Meter
from syncd.engine.origin import is_this_write, origin_metadata
from syncd.engine.progress import InFlight, Transfer
from syncd.engine.remote_index import RemoteIndex
from syncd.engine.retry import RetryPolicy
from syncd.providers import renames
from syncd.providers.base import ObjectInfo, Provider, UploadRequest, seconds_to_ns
from syncd.providers.errors import (
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ProviderError,
    SourceChanged,
)

#: Files up to this size are read into memory once: the bytes hashed are the bytes sent.
SMALL_FILE = 8 * 1024 * 1024
#: A file read whole is still paced and counted in slices of this size.
METER_SLICE = 256 * 1024
#: How many remote versions' hashes `hash_remote` remembers (a few hundred bytes each).
HASHED_VERSIONS = 4096


class Result(enum.Enum):
    OK = "ok"
    MOVED = "moved"  # the local file changed while we read it, or vanished: look again
    RACED = "raced"  # the remote was not what we decided on (someone else wrote): look again
    TORN = "torn"  # the object holds a mix of versions; it is ours, but not in sync


@dataclass(frozen=True, slots=True)
class Uploaded:
    result: Result
    local: LocalFile | None = None  # the stat the sent bytes belong to
    sha256: str | None = None
    info: ObjectInfo | None = None
    seconds: float = 0.0
    #: The bytes the service held already (the parts of a resumed upload): not sent again.
    held: int = 0

    @property
    def moved(self) -> int:
        """The bytes this upload sent: the file's, less those held."""
        return (self.local.size if self.local is not None else 0) - self.held


@dataclass(frozen=True, slots=True)
class Downloaded:
    result: Result
    local: LocalFile | None = None  # the stat of the file now in place
    sha256: str | None = None
    info: ObjectInfo | None = None
    seconds: float = 0.0
    #: The bytes on disk already (the chunks of a resumed download): not fetched again.
    held: int = 0

    @property
    def moved(self) -> int:
        """The bytes this download fetched: the file's, less those held."""
        return (self.local.size if self.local is not None else 0) - self.held


class Transfers:
    def __init__(
        self,
        provider: Provider,
        index: RemoteIndex,
        retry: RetryPolicy,
        is_cancelled: Callable[[], bool],
        *,
        pair: str = "",
        large: LargeTransfers | None = None,
        inflight: InFlight | None = None,
        pace_up: Meter | None = None,
        pace_down: Meter | None = None,
        on_long: Callable[[str], None] | None = None,
        writer: str | None = None,
    ) -> None:
        self.provider = provider
        self.index = index
        self.retry = retry
        self.is_cancelled = is_cancelled
        self.pair = pair
        #: The multipart path, for providers that have one (None: every file goes whole).
        self.large = large
        self.inflight = inflight if inflight is not None else InFlight()
        self.pace_up = pace_up
        self.pace_down = pace_down
        #: Told of a path whose transfer is streamed (beyond SMALL_FILE), so a cap on the
        #: pair's transfers stops counting it (see `WorkQueue.long_running`).
        self.on_long = on_long
        #: The pair's writer id, which every upload states in its origin (None: none stated).
        self.writer = writer
        #: Told (path, size, mtime) of a download just before it is renamed into place: the
        #: daemon's watcher then knows that event as the download's (engine/landed.py).
        self.landing: Callable[[str, int, int], None] | None = None
        #: (key, etag) -> SHA-256 of the versions `hash_remote` read, newest last.
        self._hashed: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._hashed_lock = threading.Lock()

    def _meter(self, progress: Transfer, pace: Meter | None) -> Meter:
        if pace is None:
            return progress.add

        def meter(n: int) -> None:
            pace(n)
            progress.add(n)

        return meter

    def stat_remote(self, path: str, key: str | None = None) -> ObjectInfo | None:
        """The remote object now (None if gone), remembered in the index."""
        try:
            info: ObjectInfo | None = self.retry.call(lambda: self.provider.stat(key or path))
        except NotFound:
            info = None
        self.index.put(path, info)
        return info

    def hash_remote(self, path: str, remote: ObjectInfo) -> ObjectInfo | None:
        """`remote` with the SHA-256 of its content, streamed through a hash and written
        nowhere: for an object that states no checksum, when only its bytes can tell whether
        it equals the local file. The object as it is now (unhashed) when it changed
        meanwhile, None when it is gone. Paced and shown like a download, not counted as one:
        nothing is transferred. A version read once is not read again: its ETag names it (a
        `resolve` of the conflict it opened read a big object a second time before its
        download)."""
        known = self._known_hash(remote)
        if known is not None:
            return replace(remote, sha256=known)
        if remote.size > SMALL_FILE and self.on_long is not None:
            self.on_long(path)
        with self.inflight.track(self.pair, path, "download", remote.size) as progress:
            meter = self._meter(progress, self.pace_down)

            def attempt() -> tuple[ObjectInfo, str]:
                sink = localfs.HashingWriter(cast(BinaryIO, _Discard()), self.is_cancelled, meter)
                info = self.provider.download(
                    remote.key, cast(BinaryIO, sink), if_match=remote.etag
                )
                if sink.bytes_written != info.size:
                    raise ProviderError(f"short read ({sink.bytes_written} of {info.size} bytes)")
                return info, sink.hexdigest()

            try:
                info, sha256 = self.retry.call(attempt)
            except PreconditionFailed:
                return self.stat_remote(path, remote.key)
            except NotFound:
                self.index.put(path, None)
                return None
        self._remember_hash(remote, sha256)
        return replace(info, sha256=sha256)

    def _known_hash(self, remote: ObjectInfo) -> str | None:
        if not remote.etag:
            return None
        with self._hashed_lock:
            return self._hashed.get((remote.key, remote.etag))

    def _remember_hash(self, remote: ObjectInfo, sha256: str) -> None:
        """Keep the hash of the version read (the read was made on condition of its ETag)."""
        if not remote.etag:
            return
        with self._hashed_lock:
            self._hashed[(remote.key, remote.etag)] = sha256
            self._hashed.move_to_end((remote.key, remote.etag))
            while len(self._hashed) > HASHED_VERSIONS:
                self._hashed.popitem(last=False)

    def upload(
        self, path: str, source: Path, expected: ObjectInfo | None, over: str | None = None
    ) -> Uploaded:
        """Send the file at `source` to `path`, on condition that the remote still is `expected`
        (absent when None). `over` is the remote version the path's recorded base names, which
        the upload's origin states (see syncd/engine/origin.py)."""
        metadata = origin_metadata(self.writer, over, path) if self.writer is not None else {}
        started = time.monotonic()
        try:
            fh = localfs.open_to_read(source)
        except FileNotFoundError:
            return Uploaded(Result.MOVED)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return Uploaded(Result.MOVED)  # a symlink now: the path is looked at again
        try:
            return self._upload_open(
                path, source, fh, expected=expected, metadata=metadata, started=started
            )
        except SourceChanged:
            # It shrank while it was read: nothing torn is recorded, the path is looked at
            # again once it settles (a multipart upload of it is aborted by that next go).
            return Uploaded(Result.MOVED)

    def _upload_open(
        self,
        path: str,
        source: Path,
        fh: IO[bytes],
        *,
        expected: ObjectInfo | None,
        metadata: dict[str, str],
        started: float,
    ) -> Uploaded:
        with fh, self.inflight.track(self.pair, path, "upload", 0) as progress:
            before = localfs.local_file(os.fstat(fh.fileno()))
            progress.total = before.size
            if before.size > SMALL_FILE and self.on_long is not None:
                self.on_long(path)
            meter = self._meter(progress, self.pace_up)
            if self.large is not None and self.large.wants(before.size):
                return self._upload_large(
                    path,
                    source,
                    fh,
                    before=before,
                    expected=expected,
                    metadata=metadata,
                    progress=progress,
                    started=started,
                )
            if before.size <= SMALL_FILE:
                data = _read_whole(fh.fileno(), before.size)
                if data is None or not same_stat(before, localfs.local_file(os.fstat(fh.fileno()))):
                    return Uploaded(Result.MOVED)
                sha256 = hashlib.sha256(data).hexdigest()
                for offset in range(0, len(data), METER_SLICE):  # paced (and shown) in slices
                    meter(min(METER_SLICE, len(data) - offset))
                request = _request(path, before, sha256, expected, metadata)
                info = self._send(path, request, lambda: io.BytesIO(data))
                torn = False
            else:
                # Too big for memory: hash first (the metadata header needs it), then stream
                # while hashing again; if the two disagree the file changed under us.
                sha256 = localfs.sha256_of_fd(fh.fileno())
                readers: list[localfs.HashingReader] = []

                def body() -> BinaryIO:
                    fh.seek(0)
                    readers.append(
                        localfs.HashingReader(
                            cast(BinaryIO, fh),
                            self.is_cancelled,
                            meter,
                            size=before.size,
                            still=lambda: _still(source, before),
                        )
                    )
                    return cast(BinaryIO, readers[-1])

                info = self._send(path, _request(path, before, sha256, expected, metadata), body)
                try:
                    after: LocalFile | None = localfs.local_file(os.stat(source))
                except FileNotFoundError:
                    after = None
                torn = (
                    readers[-1].hexdigest() != sha256
                    or after is None
                    or not same_stat(before, after)
                )
        if info is None:
            return Uploaded(Result.RACED)
        seconds = time.monotonic() - started
        return Uploaded(Result.TORN if torn else Result.OK, before, sha256, info, seconds)

    def _upload_large(
        self,
        path: str,
        source: Path,
        fh: IO[bytes],
        *,
        before: LocalFile,
        expected: ObjectInfo | None,
        metadata: dict[str, str],
        progress: Transfer,
        started: float,
    ) -> Uploaded:
        """Send in parts (resuming a recorded upload of this very file). The whole-file hash
        goes in the metadata before the first part; the file must not change meanwhile: if
        its stat moved by the end, the object is torn and the next pass sends it again."""
        assert self.large is not None
        digests = self.large.digest(fh.fileno(), before.size)
        sha256 = digests.sha256
        request = replace(
            _request(path, before, sha256, expected, metadata),
            md5=digests.md5,
            crc32c=digests.crc32c,
        )
        try:
            info = self.large.upload(
                path,
                fh.fileno(),
                before,
                request,
                progress,
                digests=digests,
                still=lambda: _still(source, before),
            )
        except PreconditionFailed:
            found = self._written_anyway(path, request)
            if found is None:
                return Uploaded(Result.RACED)
            info = found
        except InvalidRequest:
            # The parts were hashed before the upload: a file that changed since has parts
            # the service refuses (their bytes no longer match). Look again; the next go
            # finds the recorded upload no longer fits the file and aborts it.
            if _still(source, before):
                raise
            return Uploaded(Result.MOVED)
        self.index.put(path, info)
        torn = not _still(source, before)
        seconds = time.monotonic() - started
        result = Result.TORN if torn else Result.OK
        return Uploaded(result, before, sha256, info, seconds, held=progress.held)

    def _send(
        self, path: str, request: UploadRequest, body: Callable[[], BinaryIO]
    ) -> ObjectInfo | None:
        """One conditional upload (retried on transient faults), each attempt with a fresh
        `body()`; None when the remote moved."""

        def attempt() -> ObjectInfo:
            return self.provider.upload(replace(request, body=body()))

        try:
            info = self.retry.call(attempt)
        except PreconditionFailed:
            return self._written_anyway(path, request)
        self.index.put(path, info)
        return info

    def _written_anyway(self, path: str, request: UploadRequest) -> ObjectInfo | None:
        """After an upload's condition failed: the object under the key if it is this very
        write (an attempt whose answer was lost landed; the retry then found its own result
        in the way), else None (another writer moved the remote: look again). Either way the
        index learns what is there now."""
        found = self.stat_remote(path, request.key)
        if found is not None and is_this_write(found, request):
            return found
        return None

    def download(
        self,
        path: str,
        root: Path,
        target: Path,
        remote: ObjectInfo,
        still_local: Callable[[], bool],
        *,
        replacing: LocalFile | None = None,
    ) -> Downloaded:
        """Fetch `remote` into `target` (inside `root`) atomically. `still_local()` is asked
        just before the rename: if the local file is no longer what we decided on, nothing is
        replaced. `replacing` is the file the download may replace, as decided on; None, and
        it goes only where no file is. Every write, rename and unlink is made relative to the
        target's folder, held open from the root (`localfs.spot_of`): never through a joined
        path."""
        try:
            with localfs.spot_of(root, target) as spot:

                def in_place() -> bool:
                    # Its folder still where it was, then the file as decided on.
                    return localfs.still_placed(root, target, spot) and still_local()

                return self._download_at(path, spot, remote, in_place, replacing=replacing)
        except FileNotFoundError:
            return Downloaded(Result.MOVED)  # the target's folder went meanwhile

    def _download_at(
        self,
        path: str,
        spot: localfs.Spot,
        remote: ObjectInfo,
        still_local: Callable[[], bool],
        *,
        replacing: LocalFile | None,
    ) -> Downloaded:
        started = time.monotonic()
        large = self.large if self.large is not None and self.large.wants(remote.size) else None
        if remote.size > SMALL_FILE and self.on_long is not None:
            self.on_long(path)
        tmp = localfs.temp_name()
        keep_temp = False
        try:
            try:
                with self.inflight.track(self.pair, path, "download", remote.size) as progress:
                    if large is not None:
                        info, sha256, tmp = large.download(path, spot, remote, progress)
                        written = remote.size
                    else:
                        meter = self._meter(progress, self.pace_down)
                        info, sha256, md5, written = self.retry.call(
                            lambda: self._fetch(remote, spot.fd, tmp, meter)
                        )
                        localfs.check_downloaded(info, sha256, md5)
            except PreconditionFailed:
                self.stat_remote(path, remote.key)
                return Downloaded(Result.RACED)
            except NotFound:
                self.index.put(path, None)
                return Downloaded(Result.RACED)
            if written != info.size:
                raise ProviderError(f"short download ({written} of {info.size} bytes)")
            mtime_ns = info.mtime_ns if info.mtime_ns is not None else seconds_to_ns(info.modified)
            os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=spot.fd, follow_symlinks=False)
            if not still_local():
                return Downloaded(Result.MOVED)
            if self.landing is not None:
                self.landing(path, info.size, mtime_ns)
            placed = _put_in_place(spot, tmp, replacing)
        except (FileExistsError, IsADirectoryError, WrittenMeanwhile):
            # A file, or a folder, appeared at the target meanwhile (a folder: a path under
            # it came down first, from a bucket holding both a file and a folder of one
            # name), or the file was written after the last check: nothing is replaced, the
            # path is decided again.
            return Downloaded(Result.MOVED)
        except BaseException as exc:
            # A large download keeps its temp file and record: the next attempt (or the next
            # run, after a crash) resumes from the chunks already on disk.
            keep_temp = large is not None or isinstance(exc, KeptInTemp)
            raise
        finally:
            if not keep_temp:
                localfs.remove_at(spot, tmp)
                if large is not None:
                    large.finish_download(path)
        self.index.put(path, info)
        seconds = time.monotonic() - started
        return Downloaded(Result.OK, placed, sha256, info, seconds, held=progress.held)

    def _fetch(
        self, remote: ObjectInfo, folder: int, tmp: str, meter: Meter
    ) -> tuple[ObjectInfo, str, str | None, int]:
        """One download attempt into `tmp` in `folder` (truncated first), fsynced before it
        returns: the object's info, the SHA-256 of the bytes written, their MD5 (taken only
        for an object without syncd's sha256, to check against the service's) and their
        count."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(tmp, flags, 0o666, dir_fd=folder), "wb") as fh:
            sink = localfs.HashingWriter(
                cast(BinaryIO, fh),
                self.is_cancelled,
                meter,
                md5=remote.sha256 is None and remote.md5 is not None,
            )
            info = self.provider.download(remote.key, cast(BinaryIO, sink), if_match=remote.etag)
            fh.flush()
            os.fsync(fh.fileno())
        return info, sink.hexdigest(), sink.md5_hexdigest(), sink.bytes_written


def _lstat_at(spot: localfs.Spot) -> os.stat_result | None:
    """What stands under the spot's name (a file, a symlink, a folder), if anything."""
    return _lstat_name(spot.fd, spot.name)


def _request(
    path: str,
    local: LocalFile,
    sha256: str,
    expected: ObjectInfo | None,
    metadata: dict[str, str],
) -> UploadRequest:
    """The upload of `local` (its body given per attempt) over `expected` (None: create-only)."""
    return UploadRequest(
        key=expected.key if expected is not None else path,
        body=io.BytesIO(b""),
        size=local.size,
        mtime_ns=local.mtime_ns,
        sha256=sha256,
        if_absent=expected is None,
        if_match=expected.etag if expected is not None else None,
        metadata=metadata,
    )


class _Discard:
    """A sink that keeps nothing (a remote's bytes hashed, not stored)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _read_whole(fd: int, size: int) -> bytes | None:
    """The `size` bytes of the file at `fd`, or None if it holds more or fewer (it changed)."""
    chunks = []
    total = 0
    while total <= size:
        wanted = size + 1 - total
        chunk = os.read(fd, wanted)
        chunks.append(chunk)
        total += len(chunk)
        if len(chunk) < wanted:  # a short read of a regular file is its end: no read to confirm
            break
    return b"".join(chunks) if total == size else None


class KeptInTemp(OSError):
    """A file written meanwhile could be put neither back nor beside: it stays under its temp
    name (not unlinked; the next start-up moves stale temps to the trash)."""


class WrittenMeanwhile(Exception):
    """The file a download was to replace was written in the instant after the last check
    (caught by what the swap took out): it is back in place, nothing replaced."""


def _put_in_place(spot: localfs.Spot, tmp: str, replacing: LocalFile | None) -> LocalFile:
    """Put the finished temp file `tmp` at the target: over `replacing`, the file decided on,
    or linked where there is none (create-only: a file that appeared meanwhile is never
    clobbered, FileExistsError). Returns the stat to record for it."""
    written = localfs.local_file(os.lstat(tmp, dir_fd=spot.fd))
    replaced = _lstat_at(spot) if replacing is not None else None
    if replaced is not None:
        if statmod.S_ISREG(replaced.st_mode):
            # The new version keeps the mode of the one it replaces (an executable script
            # stays executable, a private file private), as rsync and Syncthing do; a new
            # file gets the usual 0o666 less the umask.
            os.chmod(tmp, statmod.S_IMODE(replaced.st_mode), dir_fd=spot.fd)
        assert replacing is not None
        _swap_in(spot, tmp, replacing, written)
    else:
        os.link(tmp, spot.name, src_dir_fd=spot.fd, dst_dir_fd=spot.fd)
        # Before the stat: dropping a link moves the file's ctime.
        localfs.remove_at(spot, tmp)
    placed = localfs.local_file(os.lstat(spot.name, dir_fd=spot.fd))
    # The rename durable before the record that says it happened: after a power cut, a
    # record of a download the disk lost reads the older file left in place as a local
    # edit, sent up over the newer version.
    os.fsync(spot.fd)
    if not same_stat(placed, written):
        # Rewritten (or replaced) in the instant after the rename, by a program that reacts
        # to the file appearing: this stat is not of the downloaded bytes, and recorded with
        # their hash it would hide the edit. A stat no file has makes the next look compare
        # the content.
        return replace(placed, mtime_ns=-1)
    return placed


def _swap_in(spot: localfs.Spot, tmp: str, replacing: LocalFile, written: LocalFile) -> None:
    """Rename `tmp` (the download, `written`) over the file decided on, and only over it.
    Swapped in at once (RENAME_EXCHANGE), what came out is looked at: a file written after
    the last check goes back, WrittenMeanwhile; whatever `tmp` then holds that is not the
    download (the caller unlinks it) is kept beside the name as a conflict copy first
    (`renames.swap_in_checked`). A filesystem without the swap gets a plain replace, the
    check before it the only one."""

    def decided_on(out: os.stat_result) -> bool:
        return same_stat(localfs.local_file(out), replacing)

    def keep(held: str) -> None:
        try:
            keep_beside(spot.fd, held, spot.name)
        except OSError as exc:
            raise KeptInTemp(exc.errno, f"{exc.strerror}: a local write kept as {held}") from exc

    try:
        swapped = renames.swap_in_checked(
            spot.fd, tmp, spot.name, ours=written.inode, expected=decided_on, keep=keep
        )
    except renames.Mismatch:
        raise WrittenMeanwhile(spot.name) from None
    if not swapped:
        os.replace(tmp, spot.name, src_dir_fd=spot.fd, dst_dir_fd=spot.fd)
        return
    localfs.remove_at(spot, tmp)


def keep_beside(folder: int, held: str, name: str) -> None:
    """Rename `held` (in the open `folder`: a user's write found under syncd's temp name) to
    a free conflict-copy name beside `name`: a new local file, sent up by the next look at
    the folder (a temp name would see it removed as abandoned)."""

    def taken(candidate: str) -> bool:
        return _lstat_name(folder, candidate) is not None

    while True:
        copy = conflict_name(name, datetime.now(UTC), host_name(), taken)
        try:
            renames.move_free(folder, held, folder, copy)
        except FileExistsError:
            continue  # taken in the instant since: another name
        return


def _lstat_name(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return None


def _still(source: Path, before: LocalFile) -> bool:
    """Is the file at `source` still the one stat'ed as `before`?"""
    try:
        now = localfs.local_file(os.stat(source))
    except FileNotFoundError:
        return False
    return untouched(before, now)


def same_stat(a: LocalFile, b: LocalFile) -> bool:
    """The same file by size, mtime and inode: what a rename or a link keeps of a file."""
    return a.size == b.size and a.mtime_ns == b.mtime_ns and a.inode == b.inode


def untouched(before: LocalFile, now: LocalFile) -> bool:
    """Not written since `before` was stat'ed: the ctime too, which moves with every write,
    even one that puts the size and mtime back (a tagger that keeps the file's time). The
    check before syncd replaces, trashes or restamps a file it decided on."""
    return same_stat(before, now) and now.ctime_ns == before.ctime_ns

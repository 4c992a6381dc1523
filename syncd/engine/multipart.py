"""Large files in parts: parallel, resumable after a crash, bounded in memory, verified.

From `multipart_threshold` up an upload goes through the provider's MultipartProvider half:
parts of `part_size` (grown to stay within the service's part count), `part_concurrency` in
flight (one at a time where the service wants them in order), each read straight from the file
by `pread` — never the whole part in memory unless the SDK insists — and sent with the digest
the service checks it by (MD5, or CRC32C for S3). One read of the file before the upload
computes the whole file's SHA-256 (the object's metadata needs it up front) and every part's
digest, on two cores; for Azure, whose block list carries no MD5 unless the commit states it,
the whole file's MD5 too.
Every finished part is recorded in the state DB; after a crash, the upload resumes with the
parts the service still holds, provided the local file is unchanged (size, mtime, inode) and
the upload is younger than STALE_AFTER. Anything else is aborted.

Large downloads are parallel ranged reads into a preallocated temp file; every chunk is
fdatasync'ed before it is recorded, so a restart resumes with the chunks already on disk. The
whole file is hashed against the object's `sha256` before the caller renames it into place.
Chunks are `part_size` grown up to 64 MiB (`download_chunk`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import google_crc32c
import structlog

from syncd.engine.localfs import (
    LocalPathError,
    Spot,
    check_downloaded,
    hashes_of_fd,
    remove_at,
    spot_of,
    to_local,
)
from syncd.engine.model import LocalFile
from syncd.engine.paths import RESUME_PREFIX
from syncd.engine.progress import Transfer
from syncd.engine.retry import RetryPolicy
from syncd.providers.base import (
    KeepsOrphanUploads,
    MultipartProvider,
    ObjectInfo,
    PartDigest,
    PartInfo,
    PartLimits,
    UploadRequest,
)
from syncd.providers.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ProviderError,
    SourceChanged,
)
from syncd.state.partials import PartialDownload, Partials, PartialUpload, RecordedPart

log = structlog.get_logger("syncd.multipart")

#: An unfinished transfer older than this is abandoned (and its upload aborted).
STALE_AFTER = 7 * 24 * 3600.0
#: The upload id of a record made before its upload (`_begin`): none came yet.
PENDING = ""
#: Reads and hashes go in slices of this size.
SLICE = 1024 * 1024

#: The largest range a download asks for at once: rclone's `--multi-thread-chunk-size`. Each
#: range is a request (and on some servers, moto's among them, a pass over the whole object),
#: so a 1 GiB file in 16 MiB ranges made 64 requests where 16 do; a restart still keeps every
#: finished range.
MAX_DOWNLOAD_CHUNK = 64 * 1024 * 1024
#: Ranges a download keeps per concurrent stream at least (while `part_size` allows), so the
#: streams stay busy to the end instead of one finishing a big last range alone.
RANGES_PER_STREAM = 4

#: Called with a byte count as bytes pass: throttling (may block) and progress.
Meter = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class FileDigests:
    """What one read of a file before its upload yields: the whole file's SHA-256 and, for
    parts of `part_size`, each part's digest (hex, of the kind the provider checks parts by);
    the whole file's MD5 and CRC32C where they were asked for (`PartLimits.whole_md5`,
    `.whole_crc32c`)."""

    sha256: str
    part_size: int
    parts: tuple[str, ...]  # part number n is parts[n - 1]
    md5: str | None = None
    crc32c: str | None = None


@dataclass(frozen=True, slots=True)
class PartSettings:
    threshold: int
    part_size: int
    concurrency: int


def choose_part_size(size: int, wanted: int, limits: PartLimits) -> int:
    """`wanted`, grown so that `size` fits in the service's part count, aligned, capped."""
    part = max(wanted, limits.min_part, -(-size // limits.max_parts))
    part = -(-part // limits.alignment) * limits.alignment
    if part > limits.max_part:
        raise InvalidRequest(
            f"{size} bytes do not fit in {limits.max_parts} parts of at most {limits.max_part}"
        )
    return part


def download_chunk(size: int, settings: PartSettings) -> int:
    """The range size of a download of `size` bytes: `part_size`, grown towards
    MAX_DOWNLOAD_CHUNK while the file still makes RANGES_PER_STREAM ranges per stream."""
    spread = size // (settings.concurrency * RANGES_PER_STREAM)
    return max(settings.part_size, min(MAX_DOWNLOAD_CHUNK, spread))


def plan_parts(size: int, part_size: int) -> list[PartInfo]:
    return [
        PartInfo(number=i + 1, offset=offset, size=min(part_size, size - offset))
        for i, offset in enumerate(range(0, size, part_size))
    ]


class FileWindow(io.RawIOBase):
    """Bytes [offset, offset + size) of an open file, read with pread: many threads can read
    their own part of one file without sharing a file position. Seekable within the window
    (an SDK rewinds a body to retry or to checksum it)."""

    def __init__(
        self,
        fd: int,
        offset: int,
        size: int,
        meter: Meter | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._fd, self._start, self._size = fd, offset, size
        self._pos = 0
        self._meter = meter
        self._is_cancelled = is_cancelled

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._is_cancelled is not None and self._is_cancelled():
            raise Cancelled("transfer cancelled: syncd is stopping")
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._start + self._pos)
        if not data:
            raise SourceChanged("the file got shorter while it was being sent")
        buffer[: len(data)] = data
        self._pos += len(data)
        if self._meter is not None:
            self._meter(len(data))
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """One read of up to `size` bytes (the whole rest when -1), without the 8 KiB slicing
        of RawIOBase.readall."""
        left = self._size - self._pos
        want = left if size is None or size < 0 else min(size, left)
        buffer = bytearray(want)
        got = 0
        while got < want:
            n = self.readinto(memoryview(buffer)[got:])
            if n == 0:
                break
            got += n
        return bytes(buffer[:got])


class RangeWriter:
    """Writes a chunk of the temp file with pwrite, from the chunk's offset on."""

    def __init__(
        self,
        fd: int,
        offset: int,
        length: int,
        meter: Meter | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._fd, self._pos, self._end = fd, offset, offset + length
        self._meter = meter
        self._is_cancelled = is_cancelled
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        # Asked at every write, as a whole download's sink does: a range runs to 64 MiB.
        if self._is_cancelled is not None and self._is_cancelled():
            raise Cancelled("download cancelled: the transfer was stopped")
        view = memoryview(data)
        if self._pos + len(view) > self._end:
            raise ProviderError("the service sent more bytes than the range asked for")
        while view:
            n = os.pwrite(self._fd, view, self._pos)
            self._pos += n
            self.written += n
            view = view[n:]
        if self._meter is not None:
            self._meter(len(data))
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


class _Crc32c:
    """CRC32C with hashlib's update / hexdigest (big-endian hex, as S3's checksum carries it).

    google-crc32c's C extension does ~20 GB/s here where SHA-256 does ~1.7: a part's check
    costs the client next to nothing, and the service computes it as cheaply."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = google_crc32c.extend(self._crc, data)

    def hexdigest(self) -> str:
        return f"{self._crc:08x}"


def _part_hash(kind: PartDigest) -> _Crc32c | hashlib._Hash:
    if kind == "crc32c":
        return _Crc32c()
    return hashlib.sha256() if kind == "sha256" else hashlib.md5(usedforsecurity=False)


def _digest_of(fd: int, offset: int, size: int, kind: PartDigest) -> str:
    digest = _part_hash(kind)
    done = 0
    while done < size:
        data = os.pread(fd, min(SLICE, size - done), offset + done)
        if not data:
            raise SourceChanged("the file got shorter while it was being sent")
        digest.update(data)
        done += len(data)
    return digest.hexdigest()


def digest_file(
    fd: int,
    size: int,
    part_size: int,
    kind: PartDigest,
    is_cancelled: Callable[[], bool] = lambda: False,
    *,
    whole_md5: bool = False,
    whole_crc32c: bool = False,
) -> FileDigests:
    """The first `size` bytes of the file open at `fd`, read once: their SHA-256, the digest
    of each part of `part_size`, with `whole_md5` their MD5 and with `whole_crc32c` their
    CRC32C (each only for the provider that checks by it).

    The part digests (and the MD5, on a second helper) are computed on helper threads while
    this one computes the SHA-256 of the same slice (hashlib lets go of the GIL on large
    buffers): the service has nothing to do yet, so the other cores are free, and the file is
    not read a second time to hash the parts as they go. Only the provider that needs the
    MD5 pays for it (~0.55 GB/s: on two cores it is the slowest of the three). At most two
    slices are in memory."""
    whole = hashlib.sha256()
    whole_crc = _Crc32c() if whole_crc32c else None
    md5 = hashlib.md5(usedforsecurity=False) if whole_md5 else None
    digests: list[str] = []
    helpers = 2 if md5 is not None else 1
    with ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="syncd-hash") as helper:
        for part in plan_parts(size, part_size):
            if is_cancelled():
                raise Cancelled("transfer cancelled: syncd is stopping")
            digest = _part_hash(kind)
            pending: list[Future[None]] = []
            done = 0
            while done < part.size:
                data = os.pread(fd, min(SLICE, part.size - done), part.offset + done)
                if not data:
                    raise SourceChanged("the file got shorter while it was being hashed")
                for future in pending:  # each hash takes its slices in order, one at a time
                    future.result()
                pending = [helper.submit(digest.update, data)]
                if md5 is not None:
                    pending.append(helper.submit(md5.update, data))
                whole.update(data)
                if whole_crc is not None:
                    whole_crc.update(data)
                done += len(data)
            for future in pending:
                future.result()
            digests.append(digest.hexdigest())
    return FileDigests(
        whole.hexdigest(),
        part_size,
        tuple(digests),
        md5.hexdigest() if md5 is not None else None,
        whole_crc.hexdigest() if whole_crc is not None else None,
    )


def _condition(request: UploadRequest) -> str:
    return "absent" if request.if_absent else f"match:{request.if_match}"


def _run_all(
    jobs: list[Callable[[], None]], concurrency: int, is_cancelled: Callable[[], bool]
) -> None:
    """Run `jobs` with at most `concurrency` at once; the first failure stops the rest (those
    not started are cancelled) and is raised."""
    if concurrency <= 1 or len(jobs) <= 1:
        for job in jobs:
            if is_cancelled():
                raise Cancelled("transfer cancelled: syncd is stopping")
            job()
        return
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="syncd-part") as pool:
        futures: list[Future[None]] = [pool.submit(job) for job in jobs]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise cast(BaseException, future.exception())


class LargeTransfers:
    """The multipart side of one pair's transfers."""

    def __init__(
        self,
        pair: str,
        provider: MultipartProvider,
        *,
        partials: Partials,
        settings: PartSettings,
        retry: RetryPolicy,
        is_cancelled: Callable[[], bool],
        pace_up: Meter | None = None,
        pace_down: Meter | None = None,
        root: Path | None = None,
        set_aside: Callable[[str], None] | None = None,
    ) -> None:
        self.pair = pair
        self.provider = provider
        self.partials = partials
        self.settings = settings
        self.retry = retry
        self.is_cancelled = is_cancelled
        self.pace_up = pace_up
        self.pace_down = pace_down
        self._limits: PartLimits | None = None
        #: The paths with a recorded upload (read from the state once, then kept up to date
        #: here), so asking after every synced path costs no query.
        self._recorded: set[str] | None = None
        #: The paths this instance set out to send: their records are its own work, which
        #: the first plan's sweep (`abandon_all_but`) leaves alone.
        self._sending: set[str] = set()
        #: The same for downloads: the paths with a recorded one, and this instance's own.
        self._downloads: set[str] | None = None
        self._fetching: set[str] = set()
        self._recorded_lock = threading.Lock()
        #: The pair's local root, where the temp file of a download abandoned is removed
        #: (None: downloads are left to `cleanup_stale`), and what moves a temp file that
        #: may not be ours to the local trash (`_drop_temp`).
        self.root = root
        self.set_aside = set_aside

    def limits(self) -> PartLimits:
        if self._limits is None:
            self._limits = self.provider.part_limits()
        return self._limits

    def wants(self, size: int) -> bool:
        """Does a file of `size` bytes go in parts? From the threshold up, as the AWS CLI's
        `multipart_threshold` and rclone's upload cutoff (a file of exactly 64 MiB too)."""
        return size >= self.settings.threshold

    def part_size(self, size: int) -> int:
        """The part size an upload of `size` bytes goes in."""
        return choose_part_size(size, self.settings.part_size, self.limits())

    def digest(self, fd: int, size: int) -> FileDigests:
        """Hash the file open at `fd` for `upload`: its SHA-256 (for the request), the
        digest of each of its parts and, where the service wants it, its MD5, in one read."""
        limits = self.limits()
        return digest_file(
            fd,
            size,
            self.part_size(size),
            limits.digest,
            self.is_cancelled,
            whole_md5=limits.whole_md5,
            whole_crc32c=limits.whole_crc32c,
        )

    # -- uploads ---------------------------------------------------------------------------
    def upload(
        self,
        path: str,
        fd: int,
        local: LocalFile,
        request: UploadRequest,
        progress: Transfer,
        *,
        digests: FileDigests | None = None,
        still: Callable[[], bool] = lambda: True,
    ) -> ObjectInfo:
        """Send the file open at `fd` as `request` describes; resumes a recorded upload of
        the same file. `digests` (from `digest`, of these very bytes) spares hashing each part
        as it goes. PreconditionFailed (after aborting) when the condition no longer holds.
        `still()` is asked before the commit: a file that changed (or went) while its parts
        were sent is not committed (SourceChanged, after aborting): a mix of versions is
        never published under the real key."""
        with self._recorded_lock:
            self._sending.add(path)
        for _ in range(2):  # a second go only when the service forgot or refused an upload
            try:
                return self._upload_once(
                    path, fd, local, request, progress, digests=digests, still=still
                )
            except _UploadGone:
                self._drop_upload(path)
                log.info("multipart upload gone on the service; starting over", path=path)
            except _ResumeRefused as exc:
                self._abort(request, exc.upload_id)
                self._drop_upload(path)
                log.info(
                    "the service refuses parts of the recorded upload; starting over",
                    path=path,
                    error=str(exc.__cause__),
                )
        raise ProviderError("the service keeps forgetting the multipart upload")

    def _upload_once(
        self,
        path: str,
        fd: int,
        local: LocalFile,
        request: UploadRequest,
        progress: Transfer,
        *,
        digests: FileDigests | None,
        still: Callable[[], bool],
    ) -> ObjectInfo:
        limits = self.limits()
        part_size = self.part_size(request.size)
        if digests is not None and (
            digests.part_size != part_size or digests.sha256 != request.sha256
        ):
            digests = None  # not of these parts: hash each as it goes
        upload_id, done, resumed = self._begin(path, local, request, part_size)
        progress.resumed(sum(p.size for p in done.values()))
        parts = plan_parts(request.size, part_size)
        sent: dict[int, PartInfo] = dict(done)
        lock = threading.Lock()

        def meter(n: int) -> None:
            if self.pace_up is not None:
                self.pace_up(n)
            progress.add(n)

        def send(part: PartInfo) -> None:
            if limits.sequential and part.offset + part.size == request.size and not still():
                # The last chunk of a resumable session publishes the object (there is no
                # commit to hold back): a file that changed or went meanwhile stops here.
                self._abort(request, upload_id)
                self._drop_upload(path)
                raise SourceChanged("the file changed while it was being sent")
            if digests is not None:
                digest = digests.parts[part.number - 1]
            else:
                digest = _digest_of(fd, part.offset, part.size, limits.digest)

            def attempt() -> PartInfo:
                body = FileWindow(fd, part.offset, part.size, meter, self.is_cancelled)
                return self.provider.upload_part(
                    request, upload_id, part, cast(BinaryIO, body), digest
                )

            try:
                result = self.retry.call(attempt)
            except NotFound as exc:
                raise _UploadGone(str(exc)) from exc
            except InvalidRequest as exc:
                # A recorded upload the service takes no more parts for (one an older syncd
                # began with another part checksum, say): abort it and start over, once.
                if resumed:
                    raise _ResumeRefused(upload_id) from exc
                raise
            with lock:
                sent[part.number] = result
            log.debug("part sent", pair=self.pair, path=path, part=part.number, bytes=part.size)
            self.partials.add_part(
                self.pair,
                path,
                upload_id,
                # The MD5 the service states for the part (S3's ETag), which a resume
                # compares with what it lists then.
                RecordedPart(result.number, result.offset, result.size, result.token, result.md5),
            )

        todo = [p for p in parts if p.number not in done]
        concurrency = 1 if limits.sequential else self.settings.concurrency
        with self._said_if_stopped("upload", path, lambda: len(sent), len(parts)):
            _run_all([lambda p=p: send(p) for p in todo], concurrency, self.is_cancelled)  # type: ignore[misc]
        return self._complete(path, request, upload_id, [sent[p.number] for p in parts], still)

    def _complete(
        self,
        path: str,
        request: UploadRequest,
        upload_id: str,
        ordered: list[PartInfo],
        still: Callable[[], bool],
    ) -> ObjectInfo:
        """Commit the parts, unless the file changed (or went) while they were sent: then
        the upload is aborted (SourceChanged), and no mix of versions is published."""
        if not still():
            self._abort(request, upload_id)
            self._drop_upload(path)
            raise SourceChanged("the file changed while it was being sent")
        try:
            info = self.retry.call(
                lambda: self.provider.complete_multipart(request, upload_id, ordered)
            )
        except PreconditionFailed:
            self._abort(request, upload_id)
            self._drop_upload(path)
            raise
        except NotFound as exc:
            raise _UploadGone(str(exc)) from exc
        self._drop_upload(path)
        return info

    def _begin(
        self, path: str, local: LocalFile, request: UploadRequest, part_size: int
    ) -> tuple[str, dict[int, PartInfo], bool]:
        """The upload id, the parts the service holds already, and whether it is a recorded
        upload resumed (else one just started and recorded)."""
        assert request.sha256 is not None
        upload_id, done = self._resume(path, local, request, part_size)
        if upload_id is not None:
            log.info(
                "resuming multipart upload",
                pair=self.pair,
                path=path,
                parts_held=len(done),
                bytes_held=sum(p.size for p in done.values()),
            )
            return upload_id, done, True
        record = PartialUpload(
            path=path,
            key=request.key,
            upload_id=PENDING,
            size=request.size,
            mtime_ns=local.mtime_ns,
            inode=local.inode,
            sha256=request.sha256,
            part_size=part_size,
            condition=_condition(request),
        )
        # Recorded before it is made: a kill between the service making the upload and its
        # id recorded left one that no run knew of, on S3 for good (issue 5: none is left).
        self._record_upload(record)
        upload_id = self.retry.call(lambda: self.provider.start_multipart(request))
        self._record_upload(dataclasses.replace(record, upload_id=upload_id))
        return upload_id, {}, False

    def _resume(
        self, path: str, local: LocalFile, request: UploadRequest, part_size: int
    ) -> tuple[str | None, dict[int, PartInfo]]:
        """The recorded upload of this very file and the parts the service still holds, or
        (None, {}) after aborting a record that no longer fits."""
        record = self.partials.upload(self.pair, path)
        if record is None:
            return None, {}
        if record.upload_id == PENDING:
            self._abort_record(record)
            return None, {}
        fits = (
            record.key == request.key
            and record.size == request.size
            and record.mtime_ns == local.mtime_ns
            and record.inode == local.inode
            and record.sha256 == request.sha256
            and record.part_size == part_size
            and record.condition == _condition(request)
            and time.time() - record.started_at < STALE_AFTER
        )
        if fits:
            held = self._held_parts(record, request)
            if held is not None:
                return record.upload_id, held
        self._abort(request, record.upload_id)
        self._drop_upload(path)
        return None, {}

    def _held_parts(
        self, record: PartialUpload, request: UploadRequest
    ) -> dict[int, PartInfo] | None:
        """Recorded parts the service confirms (or, where it cannot be asked, the recorded
        prefix of an in-order upload); None when the service no longer knows the upload."""
        plan = {p.number: p for p in plan_parts(record.size, record.part_size)}
        recorded = {
            p.number: PartInfo(p.number, p.offset, p.size, p.token, p.md5)
            for p in record.parts
            if p.number in plan
            and (plan[p.number].offset, plan[p.number].size) == (p.offset, p.size)
        }
        if self.limits().sequential:
            prefix: dict[int, PartInfo] = {}
            for number in range(1, len(plan) + 1):
                if number not in recorded:
                    break
                prefix[number] = recorded[number]
            return prefix
        try:
            listed = self.retry.call(lambda: self.provider.list_parts(request, record.upload_id))
        except NotFound:
            return None
        except InvalidRequest as exc:  # an upload this syncd cannot finish (another checksum)
            log.info("the recorded upload cannot be resumed", path=record.path, error=str(exc))
            return None
        held: dict[int, PartInfo] = {}
        for part in listed:
            want = plan.get(part.number)
            if want is None or (want.offset, want.size) != (part.offset, part.size):
                continue
            mine = recorded.get(part.number)
            if mine is not None and mine.md5 and part.md5 and mine.md5 != part.md5:
                continue  # not the bytes we sent: send it again
            held[part.number] = PartInfo(
                part.number, part.offset, part.size, part.token or (mine.token if mine else "")
            )
        return held

    def _abort(self, request: UploadRequest, upload_id: str) -> None:
        try:
            self.retry.call(lambda: self.provider.abort_multipart(request, upload_id))
        except ProviderError as exc:
            log.warning("could not abort a multipart upload", key=request.key, error=str(exc))

    def cleanup_stale(self, stat_local: Callable[[str], LocalFile | None], root: Path) -> int:
        """Abort recorded uploads whose file changed or went, or that are too old; drop
        download records (and their temp files) that are too old. Returns how many went."""
        dropped = 0
        now = time.time()
        for record in self.partials.uploads(self.pair):
            local = stat_local(record.path)
            if (
                local is not None
                and local.size == record.size
                and local.mtime_ns == record.mtime_ns
                and local.inode == record.inode
                and now - record.started_at < STALE_AFTER
            ):
                continue
            self._abort_record(record)
            log.info("stale multipart upload aborted", pair=self.pair, path=record.path)
            dropped += 1
        for download in self.partials.downloads(self.pair):
            try:
                with spot_of(root, to_local(root, download.path)) as spot:
                    fresh = now - download.started_at < STALE_AFTER
                    if fresh and _size_of(spot.fd, download.temp) is not None:
                        continue
            except (OSError, LocalPathError):
                pass  # its folder is gone, or is no folder now: nothing of ours is left there
            self._drop_temp(root, download)
            self._drop_download(download.path)
            dropped += 1
        return dropped

    def owns_temp(self, key: str) -> bool:
        """Is the resumable download temp at `key` the one a recorded download writes into
        (its name, beside the record's path)?"""
        folder, _, name = key.rpartition("/")
        return any(
            record.temp == name and record.path.rpartition("/")[0] == folder
            for record in self.partials.downloads(self.pair)
        )

    def abandon(self, path: str) -> bool:
        """`path` was settled without its recorded transfer (or sent whole, small): an upload
        will not be resumed, so abort it now, not at the next pass's clean-up (issue 5: after
        a successful sync no multipart upload is left behind); a download's record and temp
        file (the object's full size, preallocated) go too, not 7 days later. True if there
        was one."""
        dropped = self._abandon_download(path)
        return self._abandon_upload(path) or dropped

    def _abandon_upload(self, path: str) -> bool:
        if not self._is_recorded(path):
            return False
        record = self.partials.upload(self.pair, path)
        if record is None:
            self._forget_recorded(path)
            return False
        self._abort_record(record)
        log.info("multipart upload aborted: not resumed", pair=self.pair, path=path)
        return True

    def abandon_all_but(self, planned: set[str]) -> int:
        """The first plan of a run settled every path it left out (nothing to do there, or
        filtered out): abort the recorded uploads of those that an earlier run left, not one
        a worker of this run may be sending already (a daemon's watcher starts at once).
        Returns how many went."""
        with self._recorded_lock:
            sending = set(self._sending)
            fetching = set(self._fetching)
        uploads = self._recorded_paths() - planned - sending
        downloads = self._download_paths() - planned - fetching
        return sum(self.abandon(path) for path in uploads | downloads)

    def _abort_record(self, record: PartialUpload) -> None:
        if record.upload_id == PENDING:
            self._drop_orphans(record)
        else:
            request = UploadRequest(
                key=record.key, body=io.BytesIO(b""), size=record.size, mtime_ns=record.mtime_ns
            )
            self._abort(request, record.upload_id)
        self._drop_upload(record.path)

    def _drop_orphans(self, record: PartialUpload) -> None:
        """A record whose upload's id never came (a kill, or a create that failed): the
        upload the service may have made for it goes, where the service would keep it."""
        provider = self.provider
        if not isinstance(provider, KeepsOrphanUploads):
            return
        try:
            self.retry.call(lambda: provider.drop_orphan_uploads(record.key, record.started_at))
        except ProviderError as exc:
            log.warning(
                "could not look for an upload left unrecorded", key=record.key, error=str(exc)
            )

    def _recorded_paths(self) -> set[str]:
        with self._recorded_lock:
            return set(self._load_recorded())

    def _is_recorded(self, path: str) -> bool:
        with self._recorded_lock:
            return path in self._load_recorded()

    def _load_recorded(self) -> set[str]:
        """The paths with a recorded upload (the caller holds `_recorded_lock`)."""
        if self._recorded is None:
            self._recorded = {record.path for record in self.partials.uploads(self.pair)}
        return self._recorded

    def _record_upload(self, record: PartialUpload) -> None:
        self.partials.start_upload(self.pair, record)
        with self._recorded_lock:
            if self._recorded is not None:
                self._recorded.add(record.path)

    def _drop_upload(self, path: str) -> None:
        self.partials.drop_upload(self.pair, path)
        self._forget_recorded(path)

    def _forget_recorded(self, path: str) -> None:
        with self._recorded_lock:
            if self._recorded is not None:
                self._recorded.discard(path)

    def _abandon_download(self, path: str) -> bool:
        if self.root is None:
            return False
        with self._recorded_lock:
            if path not in self._load_downloads():
                return False
        record = self.partials.download(self.pair, path)
        if record is not None:
            self._drop_temp(self.root, record)
        self._drop_download(path)
        if record is not None:
            log.info("unfinished download dropped: not resumed", pair=self.pair, path=path)
        return record is not None

    def _drop_temp(self, root: Path, record: PartialDownload) -> None:
        """Remove the temp file of the recorded download if it is still the file that
        download wrote: a regular file of the object's size at its very name, of one link,
        its chunks not all written. A finished one may have been swapped into place
        (RENAME_EXCHANGE) over the file it replaced, and a crash have come before that file
        was unlinked: the name then holds the user's earlier version, which goes to the local
        trash, as any other regular file found there (never deleted). A folder or a symlink
        of that name is not ours: left alone."""
        folder = posixpath.dirname(record.path)
        try:
            with spot_of(root, to_local(root, record.path)) as spot:
                if _still_ours(spot.fd, record):
                    remove_at(spot, record.temp)
                    return
                if _size_of(spot.fd, record.temp) is None:
                    return
        except (OSError, LocalPathError):
            return  # its folder is gone, or is no folder now: nothing of ours is left there
        if self.set_aside is not None:
            self.set_aside(posixpath.join(folder, record.temp))

    def _download_paths(self) -> set[str]:
        with self._recorded_lock:
            return set(self._load_downloads())

    def _load_downloads(self) -> set[str]:
        """The paths with a recorded download (the caller holds `_recorded_lock`)."""
        if self._downloads is None:
            self._downloads = {record.path for record in self.partials.downloads(self.pair)}
        return self._downloads

    def _drop_download(self, path: str) -> None:
        self.partials.drop_download(self.pair, path)
        with self._recorded_lock:
            if self._downloads is not None:
                self._downloads.discard(path)

    # -- downloads -------------------------------------------------------------------------
    def download(
        self, path: str, spot: Spot, remote: ObjectInfo, progress: Transfer
    ) -> tuple[ObjectInfo, str, str]:
        """Fetch `remote` into a temp file in the target's folder (held open as `spot`;
        resuming a recorded one); returns the object's info, the temp file's SHA-256 (checked
        against the object's) and the temp file's name. The caller stamps and renames it,
        then calls `finish_download`."""
        chunk = download_chunk(remote.size, self.settings)
        with self._recorded_lock:
            self._fetching.add(path)
        record = self.partials.download(self.pair, path)
        temp: str | None = None
        done: frozenset[int] = frozenset()
        if record is not None:
            if (
                record.key == remote.key
                and record.etag == remote.etag
                and record.size == remote.size
                and record.chunk_size == chunk
                and _size_of(spot.fd, record.temp) == remote.size
            ):
                temp, done = record.temp, record.chunks
                log.info("resuming download", pair=self.pair, path=path, chunks_held=len(done))
            else:
                self._forget_download(path, spot, record.temp)
        if temp is None:
            temp = f"{RESUME_PREFIX}{secrets.token_hex(6)}"
            self.partials.start_download(
                self.pair,
                PartialDownload(
                    path=path,
                    key=remote.key,
                    etag=remote.etag,
                    size=remote.size,
                    temp=temp,
                    chunk_size=chunk,
                ),
            )
            with self._recorded_lock:
                if self._downloads is not None:
                    self._downloads.add(path)
            # 0o666 less the umask, as any new file (and a small download) gets: the temp
            # file is renamed into place as it is.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o666, dir_fd=spot.fd)
            try:
                # Reserve the space now: a full disk fails here, before any byte moves.
                if remote.size:
                    os.posix_fallocate(fd, 0, remote.size)
            except OSError:
                os.close(fd)
                self._forget_download(path, spot, temp)
                raise
        else:
            fd = os.open(temp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=spot.fd)
        try:
            info = self._fetch_chunks(
                path, fd, temp=temp, remote=remote, chunk=chunk, done=done, progress=progress
            )
            os.fsync(fd)
            sha256, md5 = hashes_of_fd(fd, md5=info.sha256 is None and info.md5 is not None)
        except PreconditionFailed:
            self._forget_download(path, spot, temp)
            raise
        finally:
            os.close(fd)
        try:
            check_downloaded(info, sha256, md5)
        except ProviderError:
            self._forget_download(path, spot, temp)
            raise
        return info, sha256, temp

    def _fetch_chunks(
        self,
        path: str,
        fd: int,
        *,
        temp: str,
        remote: ObjectInfo,
        chunk: int,
        done: frozenset[int],
        progress: Transfer,
    ) -> ObjectInfo:
        infos: list[ObjectInfo] = []
        progress.resumed(sum(min(chunk, remote.size - i * chunk) for i in done))

        def meter(n: int) -> None:
            if self.pace_down is not None:
                self.pace_down(n)
            progress.add(n)

        def fetch(index: int) -> None:
            offset = index * chunk
            length = min(chunk, remote.size - offset)

            def attempt() -> ObjectInfo:
                sink = RangeWriter(fd, offset, length, meter, self.is_cancelled)
                got = self.provider.download_range(
                    remote.key, cast(BinaryIO, sink), offset, length, if_match=remote.etag
                )
                if sink.written != length:
                    raise ProviderError(f"short range ({sink.written} of {length} bytes)")
                return got

            infos.append(self.retry.call(attempt))
            os.fdatasync(fd)  # on disk before it is recorded as there
            self.partials.add_chunk(self.pair, path, temp, index)

        count = -(-remote.size // chunk)
        todo = [i for i in range(count) if i not in done]
        with self._said_if_stopped("download", path, lambda: len(done) + len(infos), count):
            _run_all(
                [lambda i=i: fetch(i) for i in todo],  # type: ignore[misc]
                self.settings.concurrency,
                self.is_cancelled,
            )
        if infos:
            return infos[-1]
        return self.retry.call(lambda: _stat_info(self.provider, remote))

    @contextmanager
    def _said_if_stopped(
        self, kind: str, path: str, held: Callable[[], int], parts: int
    ) -> Iterator[None]:
        """Say where a stop of syncd left a large transfer. Its finished parts stay recorded
        and the next pass resumes from them; unsaid, a stop in the middle of a long transfer
        looked the same in the log as one that never began."""
        try:
            yield
        except Cancelled:
            log.info(
                f"large {kind} stopped part-way; the next pass resumes it",
                pair=self.pair,
                path=path,
                parts_done=held(),
                parts=parts,
            )
            raise

    def _forget_download(self, path: str, spot: Spot, temp: str) -> None:
        remove_at(spot, temp)
        self._drop_download(path)

    def finish_download(self, path: str) -> None:
        """The temp file was renamed into place (or dropped): forget the record."""
        self._drop_download(path)


def _stat_info(provider: MultipartProvider, remote: ObjectInfo) -> ObjectInfo:
    """Every chunk was already on disk (a resume after the last chunk): read the object's
    info (sha256 metadata) with one ranged read of its first byte."""
    sink = io.BytesIO()
    return provider.download_range(remote.key, sink, 0, 1, if_match=remote.etag)


def _span(part: PartInfo | None) -> tuple[int, int] | None:
    return (part.offset, part.size) if part is not None else None


def _still_ours(folder: int, record: PartialDownload) -> bool:
    """Is the file at the record's temp name the one its download wrote, never placed? (See
    `LargeTransfers._drop_temp`.)"""
    try:
        st = os.lstat(record.temp, dir_fd=folder)
    except FileNotFoundError:
        return False
    chunks = -(-record.size // record.chunk_size) if record.chunk_size else 0
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == record.size
        and st.st_nlink == 1
        and len(record.chunks) < chunks
    )


def _size_of(folder: int, name: str) -> int | None:
    """The size of a regular file `name` in `folder` (never through a symlink), else None."""
    try:
        st = os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _UploadGone(Exception):
    """The service no longer knows a recorded upload id."""


class _ResumeRefused(Exception):
    """The service refused a part of a resumed upload: it is aborted and begun anew."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id

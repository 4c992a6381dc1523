"""The small interface every storage backend implements, in the spirit of rclone's `Fs`.

A provider sees *keys*: '/'-separated paths relative to the pair's remote root (bucket + prefix,
or folder). It knows nothing about local files, state or conflicts; the engine does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Literal, Protocol, runtime_checkable

#: Object metadata key that carries the local modification time, as "SECONDS.NANOSECONDS".
#: The same spelling rclone uses, so files uploaded by either tool keep their mtime.
MTIME_META = "mtime"
#: Object metadata key that carries the hex SHA-256 of the whole content.
SHA256_META = "sha256"
#: Object metadata key that says which pair wrote the object, over which version: "WRITER/ETAG"
#: (see syncd/engine/origin.py). One word: Azure takes only C# identifiers as metadata names.
ORIGIN_META = "syncdorigin"

#: The file times syncd holds: nanoseconds since the epoch in a signed 64-bit integer, what the
#: state's BIGINT columns store (1677-09-21T00:12:43.145224192 to 2262-04-11T23:47:16.854775807).
MTIME_NS_MIN = -(2**63)
MTIME_NS_MAX = 2**63 - 1


def clamp_mtime_ns(mtime_ns: int) -> int:
    """A file time as syncd holds it: one that 64-bit nanoseconds cannot hold (a file stamped
    2300-01-01, which filesystems allow) becomes the nearest one they can. Every mtime syncd
    takes from a stat or a service passes here (ObjectInfo, LocalFile, `seconds_to_ns`), so
    what the state records is what the next look compares it with, and what an upload states."""
    return MTIME_NS_MIN if mtime_ns < MTIME_NS_MIN else min(mtime_ns, MTIME_NS_MAX)


def seconds_to_ns(seconds: float) -> int:
    """A service's LastModified (seconds since the epoch) as a file time syncd can hold."""
    return clamp_mtime_ns(int(seconds * 1_000_000_000))


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing, a stat or a finished transfer tells about one remote object.

    `etag` is an opaque version token: it changes whenever the content may have changed, and it
    is what conditional writes are made against. `md5`/`sha256` are filled only when the service
    states them (a listing of S3 carries no user metadata, so `sha256` is often None there).

    `meta_version` moves where only the metadata changed and `etag` stays: an mtime restamp
    (S3 copies the object onto itself, its ETag unchanged; a GCS metadata patch keeps the
    generation), or the same bytes written again with a newer `mtime` (S3's ETag is their
    MD5). The engine compares it with the base to see such a timestamp-only change, which
    it carries over (issue 3). None where `etag` moves with the metadata too (Azure, a
    folder) or where the answer does not state it (an S3 upload's).
    """

    key: str
    size: int
    etag: str
    modified: float = 0.0
    mtime_ns: int | None = None
    sha256: str | None = None
    md5: str | None = None
    #: True when the object's own metadata was read (stat, download, upload result), so a
    #: missing `sha256` really is missing rather than merely not listed.
    has_metadata: bool = False
    #: True when the object sits in an archive tier (S3 GLACIER / DEEP_ARCHIVE, GCS ARCHIVE is
    #: readable so never; Azure Archive) and cannot be read without a restore.
    archived: bool = False
    #: The `syncdorigin` metadata, where read (None: not stated, or not listed).
    origin: str | None = None
    meta_version: str | None = None

    def __post_init__(self) -> None:
        if self.mtime_ns is not None and not MTIME_NS_MIN <= self.mtime_ns <= MTIME_NS_MAX:
            object.__setattr__(self, "mtime_ns", clamp_mtime_ns(self.mtime_ns))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do natively, so the engine can pick the cheapest correct path."""

    conditional_writes: bool = True
    server_side_copy: bool = False
    listing_has_metadata: bool = False
    #: The provider implements MultipartProvider (parts, resume, ranged reads).
    multipart: bool = False
    #: Transfers of one pair at once beyond which more only cost (None: as many as the
    #: `workers`). A network service hides its latency behind many; a local folder's
    #: transfers are this process's own CPU work, and extra threads fight over the GIL.
    max_transfers: int | None = None
    #: The service takes a write over an archived object, on condition of its version (S3:
    #: a PUT or a multipart completion replaces a GLACIER object). False where it refuses any
    #: write to one until it is restored (Azure: Put Blob and Put Block answer BlobArchived):
    #: the object is deleted first, on the same condition, and the new version created.
    replaces_archived: bool = True


#: The hashes a service can check a part against (see PartLimits.digest).
PartDigest = Literal["md5", "sha256", "crc32c"]


@dataclass(frozen=True, slots=True)
class PartLimits:
    """What a service accepts for a multipart upload, so the engine can size the parts.

    `sequential` is True where parts must go one after the other, in order (a GCS resumable
    session, whose last part also publishes the object): the engine then sends them one at a
    time instead of `part_concurrency` at once, and checks the file before the last.
    `alignment` is a size every part but the last must be a multiple of (GCS: 256 KiB).
    `digest` names the hash of each part's bytes that `upload_part` is given: the one the
    service checks a part against ("md5": Content-MD5; "crc32c": S3's x-amz-checksum-crc32c;
    "sha256": x-amz-checksum-sha256), as hex. `whole_md5` is True where the object keeps the
    whole content's MD5 only if the commit states it (Azure computes Content-MD5 for a single
    put, never for a block list): the read before the upload then computes it too, and the
    request carries it (`UploadRequest.md5`). `whole_crc32c` is True where the finished
    object is checked against the whole content's CRC32C (GCS states one for every object,
    and checks no chunk): the read before the upload computes it too (`UploadRequest.crc32c`).
    """

    min_part: int
    max_part: int
    max_parts: int
    sequential: bool = False
    alignment: int = 1
    digest: PartDigest = "md5"
    whole_md5: bool = False
    whole_crc32c: bool = False


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One part the service holds for a multipart upload.

    `number` counts from 1; `offset` is where the part starts in the file. `token` is what the
    service needs to name the part when the upload is completed (S3: the part's ETag and its
    checksum; Azure: the block id; GCS: empty). `md5` is the hex MD5 of the part's bytes when
    the service reports it (S3 ListParts' ETag of a plain part, Azure's block list does not),
    else None.
    """

    number: int
    offset: int
    size: int
    token: str = ""
    md5: str | None = None


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """One upload: the bytes to send and what must be true of the remote for it to go ahead.

    `body` is read exactly once, to its end. `if_absent` asks for create-only semantics;
    `if_match` for replace-only-if-unchanged (an `ObjectInfo.etag`). At most one is set.
    `md5` is the hex MD5 of the whole body when the caller knows it (see
    `PartLimits.whole_md5`); a multipart commit that cannot compute it stores it.
    `crc32c` is the hex CRC32C of the whole body when the caller knows it: a provider whose
    service states the stored object's CRC32C (GCS) checks a multipart upload's result
    against it.
    """

    key: str
    body: BinaryIO
    size: int
    mtime_ns: int
    sha256: str | None = None
    if_absent: bool = False
    if_match: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    md5: str | None = None
    crc32c: str | None = None


@runtime_checkable
class Provider(Protocol):
    """A remote root. Implementations must be safe to call from many worker threads at once."""

    url: str
    capabilities: Capabilities

    def list(self) -> Iterator[ObjectInfo]:
        """Every object under the root, following pagination; folder markers are included
        (keys ending in '/') and left to the engine to skip."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """The object's current info with `has_metadata=True`; raises NotFound. Backends that
        keep no checksum of their own (a plain folder) compute `sha256` here."""
        ...

    def upload(self, request: UploadRequest) -> ObjectInfo:
        """Store `request.body` under `request.key`; returns the new object's info.

        Raises PreconditionFailed when `if_absent` / `if_match` does not hold."""
        ...

    def download(self, key: str, sink: BinaryIO, if_match: str | None = None) -> ObjectInfo:
        """Write the object's bytes to `sink` and return the info of the version written.

        Raises NotFound, or PreconditionFailed when `if_match` no longer holds."""
        ...

    def delete(self, key: str, if_match: str | None = None) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        """Copy an object inside the remote (server-side where the service can), keeping its
        metadata; returns the copy's info. `if_match` guards the source's version. Used for
        the remote trash, conflict copies and moves.

        Create-only: an object already at `dst_key` is never overwritten. One that is a copy
        of the source's very version (`holds_copy_of`: the same size, mtime and stated
        content digest) counts as this copy made, and its info is returned: the engine retries
        a copy as a whole, and when the answer to one that landed is lost, the retry finds its
        own result in the way (it made a second conflict copy, or a second full copy in the
        remote trash). Anything else there is PreconditionFailed, as is a destination the
        service states no digest for that could tell."""
        ...

    def set_mtime(self, key: str, mtime_ns: int, if_match: str) -> ObjectInfo:
        """Restamp the object's stored mtime (the `mtime` metadata, a folder's file time)
        without rewriting its content, if it still is version `if_match`; returns its info
        afterwards, whose `etag` is the version now stored (some services give a metadata
        change a new one).

        It exists because a timestamp-only change is not a content change (issue 3): a local
        `touch` costs no upload, yet the newer mtime must reach the remote, or a later download
        would restore the older one (rclone's SetModTime). Everything else the object carries
        stays: its bytes, the `sha256` metadata and any other, content type, storage class.
        Raises PreconditionFailed when the version moved (or NotFound when the object is gone),
        so a concurrent change is never overwritten. Where the service cannot restamp an
        object in one request (S3 above 5 GiB), it is left as it is and its info returned."""
        ...

    def check(self) -> None:
        """A cheap authenticated call that proves the root is reachable; raises on failure.
        With `create_bucket`, a root missing at the first call is made."""
        ...

    def probe(self) -> None:
        """`check` without making anything: raises NotFound when the bucket, container or
        folder is gone, as a listing would. The engine asks it before deleting local files
        for objects found missing outside a listing (a download, `syncd retry`): with the
        whole root gone since the last listing, each one's NotFound is no deletion."""
        ...

    def close(self) -> None:
        """Release connections and pools."""
        ...


def holds_copy_of(source: ObjectInfo, found: ObjectInfo) -> bool | None:
    """Is `found` (a head of the copy's destination) a copy of the version `source` states?

    A server-side copy keeps the size, the metadata (`mtime`, `sha256`) and, where the service
    states one for the whole object, the content's MD5 (S3 for an object stored whole, GCS,
    Azure). True when the size and mtime agree and so does the SHA-256 both state, else the
    MD5 both state; False when any of those differ; None when they agree but neither digest
    is stated on both sides (an S3 object sent in parts by another tool), which cannot tell
    (a provider may compare what else its service states, GCS its CRC32C)."""
    if source.size != found.size or source.mtime_ns != found.mtime_ns:
        return False
    return same_digest(source, found)


class Digests(Protocol):
    """What states a content's digests: an ObjectInfo, the engine's LocalFile."""

    @property
    def sha256(self) -> str | None: ...

    @property
    def md5(self) -> str | None: ...


def same_digest(a: Digests, b: Digests) -> bool | None:
    """Do `a` and `b` state the same content? By the SHA-256 both state, else the MD5 both
    state; None when no digest is stated on both sides, which cannot tell."""
    if a.sha256 is not None and b.sha256 is not None:
        return a.sha256 == b.sha256
    if a.md5 is not None and b.md5 is not None:
        return a.md5 == b.md5
    return None


def format_mtime(mtime_ns: int) -> str:
    """Render nanoseconds since the epoch the way the `mtime` metadata carries them: a decimal
    number of seconds, signed as a whole before 1970 ("-1.500000000" is 1.5 seconds before the
    epoch), as rclone writes and reads it."""
    sign = "-" if mtime_ns < 0 else ""
    seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
    return f"{sign}{seconds}.{nanos:09d}"


_MTIME_VALUE = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
#: More digits of whole seconds than any time 64-bit nanoseconds hold (9223372036) has.
_MAX_SECONDS_DIGITS = 10


def parse_mtime(value: str | None) -> int | None:
    """Read an `mtime` metadata value ("[-]SECONDS[.FRACTION]") back to nanoseconds, or None.

    A time before 1970 is negative as a whole (`format_mtime`); digits past the ninth decimal
    are dropped. Anything else is None, and the object's LastModified stands in: no digits,
    an exponent, nan or inf, and a time that 64-bit nanoseconds cannot hold (before 1677 or
    after 2262, which no file time syncd holds is: `clamp_mtime_ns`), as rclone refuses one."""
    if not value:
        return None
    match = _MTIME_VALUE.fullmatch(value.strip())
    if match is None:
        return None
    sign, whole, frac = match.groups()
    whole, frac = whole.lstrip("0"), frac or ""
    if not (match.group(2) or frac) or len(whole) > _MAX_SECONDS_DIGITS:
        return None
    mtime_ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9])
    if sign == "-":
        mtime_ns = -mtime_ns
    return mtime_ns if MTIME_NS_MIN <= mtime_ns <= MTIME_NS_MAX else None


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_rfc3339_mtime(value: str | None) -> int | None:
    """Read an RFC 3339 time ("2006-01-02T15:04:05.000000000Z07:00") to nanoseconds, or None.

    rclone writes the `mtime` metadata in this form on Azure and GCS (its S3 backend writes
    "SECONDS.FRACTION", which `parse_mtime` reads), so a file it uploaded keeps its time.
    A fraction of more than nine digits, a time 64-bit nanoseconds cannot hold and anything
    else not of that form are None, as in `parse_mtime`."""
    match = _RFC3339.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    whole, frac, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    seconds = int(moment.timestamp())  # whole: the fraction is apart, and counts forward
    mtime_ns = seconds * 1_000_000_000 + int(((frac or "") + "000000000")[:9])
    return mtime_ns if MTIME_NS_MIN <= mtime_ns <= MTIME_NS_MAX else None


def parse_stated_mtime(value: str | None) -> int | None:
    """An `mtime` metadata value as syncd writes it, else as rclone writes it on Azure and
    GCS: the one reader for a key both tools share."""
    parsed = parse_mtime(value)
    return parsed if parsed is not None else parse_rfc3339_mtime(value)


@runtime_checkable
class BatchedDurability(Protocol):
    """A remote whose writes are durable only once flushed to disk (a local folder).

    Flushing every upload (the file, then its folder) is most of what a small file to a local
    folder costs. A one-shot pass calls `batch()` instead, and the daemon `batch(each=True)`:
    until `unbatch()`, uploads skip their own flushes, and the barrier it returns makes
    everything written so far durable at once. The engine runs the barrier before it commits
    the records of those uploads, so the state never describes a file that a power cut could
    still take back.
    """

    def batch(self, *, each: bool = False) -> Callable[[], None]:
        """Stop flushing each upload; returns the barrier that flushes them all (with `each`,
        by flushing each of them rather than the whole filesystem)."""
        ...

    def unbatch(self) -> None:
        """Flush each upload again, those still running included; what was left to the
        barrier waits for the caller to run it once more."""
        ...


@runtime_checkable
class WatchableRemote(Protocol):
    """A remote whose every change shows as an inotify event under a local folder (a folder
    remote on a local filesystem): the daemon watches that folder and lists the remote only
    after an event, instead of at every poll (a listing of 100,000 files costs ~1 s of CPU)."""

    def watch_root(self) -> str:
        """The folder to watch. Raises NotWatchable, saying why, where events would miss
        changes (a network or FUSE filesystem: other machines write without an event here)."""
        ...


@runtime_checkable
class KeepsOrphanUploads(Protocol):
    """A service that keeps an unfinished multipart upload until it is aborted (S3; GCS
    sessions and Azure's uncommitted blocks expire by themselves within a week)."""

    def drop_orphan_uploads(self, key: str, since: float) -> int:
        """Abort the unfinished uploads of exactly `key` that a run killed between creating
        them and recording their id may have left: no part, begun at or after `since` (epoch
        seconds; or the service states no usable start). Returns how many went."""
        ...


class NotWatchable(Exception):
    """The remote's changes cannot all be seen by a watch; it is listed at every poll."""


@runtime_checkable
class MultipartProvider(Protocol):
    """Large objects in parts: sent in parallel, resumable after a crash, read by ranges.

    An *upload id* is the service's handle on an unfinished upload (S3 UploadId, a GCS
    resumable session URL, an Azure block-id run chosen by the adapter); the engine records it
    in the state DB with every finished part, and after a restart asks `list_parts` which
    parts the service really holds. Nothing is visible under the key before
    `complete_multipart`; the conditions of the request (`if_absent` / `if_match`) hold at
    that moment (or, for GCS, from the session's start), and a failing one raises
    PreconditionFailed. The `body` of the requests passed here is never read.
    """

    def part_limits(self) -> PartLimits:
        """The service's limits on part sizes and counts."""
        ...

    def start_multipart(self, request: UploadRequest) -> str:
        """Begin an upload of `request.size` bytes to `request.key`, with its metadata (mtime,
        sha256) and conditions; returns the upload id."""
        ...

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        """Send `part.size` bytes read from `body` (positioned at the part's start) as part
        `part.number`; `digest` (hex, of the kind `part_limits().digest` names) is sent for the
        service to verify where it can. Returns the part with its `token`. Raises NotFound when
        the upload id is no longer known to the service (aborted, expired, completed)."""
        ...

    def list_parts(self, request: UploadRequest, upload_id: str) -> list[PartInfo]:
        """The parts the service holds for `upload_id`, by number; NotFound when the upload
        is gone. Where the service cannot tell (a broken status query), it may return []."""
        ...

    def complete_multipart(
        self, request: UploadRequest, upload_id: str, parts: list[PartInfo]
    ) -> ObjectInfo:
        """Assemble `parts` (all of them, in order) into the object; returns its info."""
        ...

    def abort_multipart(self, request: UploadRequest, upload_id: str) -> None:
        """Drop an unfinished upload and the parts it holds; an unknown id is not an error."""
        ...

    def download_range(
        self, key: str, sink: BinaryIO, offset: int, length: int, if_match: str
    ) -> ObjectInfo:
        """Write bytes [offset, offset + length) of the object's version `if_match` to `sink`;
        returns the object's info (size, sha256 metadata, ...). PreconditionFailed when that
        version is gone."""
        ...

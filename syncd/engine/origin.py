"""Telling this pair's own writes from another writer's, at no cost per upload.

Every upload a pair makes carries `syncdorigin: WRITER/ETAG/KEY` in the object's metadata:
WRITER is a random id of the pair, kept in its state (`StateStore.writer_id`), ETAG the remote
version the pair's recorded base names for the path when it wrote (empty: none), and KEY a
short hash of the path it wrote to. Nothing is written to the state before an upload; the
record comes after it, as always.

Two things need it (issue 6):

- A kill -9 (or a power cut) between an upload and its record leaves an object the base does
not know. Once the local file changes again, both sides look changed: a conflict for a file
only one side ever edited, where `cloud_wins` would replace the user's newest edit with the
pair's own older upload. An object whose origin names this pair *and* the version the base
still records is that cut-off upload: it becomes the base, and the local file decides as
usual (changed: upload; the same bytes: record only; deleted: delete).
- An upload whose answer was lost (the write landed, the connection dropped) is retried, and
  the retry's condition (create-only, or the old version) fails on the write's own result. The
  object under the key, carrying this very request's origin and checksum, is that write: it
  counts as the upload it is.

Why this cannot hide a real conflict: another machine's pair, and each pair of one daemon, has
an id of its own (random, never derived from a name), so its writes never name this writer.
Naming the base's version as well means an object this pair wrote earlier and someone copied
back (a version restored from the bucket's history) is still another writer's change: it was
written over an older version than the base records. The one accepted limit: a copy of the
state database used on another machine writes under the same id, so that machine's uploads
would read as this one's; `syncd state rebuild` gives a pair a new id.

Server-side copies keep the origin: syncd's own (a conflict copy, the remote trash, a move,
S3's copy of an object onto itself to restamp its mtime) and anyone's (another machine's move,
`aws s3 mv`, a restore from the trash). It names the key the original upload went to, so a
copy at another key is never taken for an upload of this pair to that key. Without the key, a
teammate's rename of a file this pair once uploaded new (origin `WRITER/`) met this machine's
own new file of the new name, no base there either, and was adopted as "our cut-off upload":
the local file went up over it, no conflict, and the renamed version was lost. (The restamped
object is recorded under its new version at once.) An origin of an older syncd, without the
key, is taken only where a base is recorded: with none it stays a conflict, which loses
nothing.

A folder remote (file://) stores no metadata: there the cut-off upload stays a conflict (see
the README's "After a crash").
"""

from __future__ import annotations

import hashlib
import time

from syncd.providers.base import ORIGIN_META, ObjectInfo, UploadRequest
from syncd.state import BaseEntry


def origin_metadata(writer: str, over: str | None, path: str) -> dict[str, str]:
    """The metadata an upload by pair `writer` to `path` carries, made while the base
    recorded the remote version `over` (None: no version recorded)."""
    return {ORIGIN_META: f"{writer}/{over or ''}/{_key_mark(path)}"}


def _key_mark(path: str) -> str:
    """A short hash of the path (metadata values must be ASCII, and short)."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def is_cut_off_upload(path: str, base: BaseEntry | None, remote: ObjectInfo, writer: str) -> bool:
    """Is `remote`, found at `path`, an upload of this pair to that path that never got its
    record (see the module doc)?

    Only an object whose metadata was read can tell (`has_metadata`), and only one with our
    checksum: every upload of ours states it."""
    if not remote.has_metadata or remote.sha256 is None or remote.origin is None:
        return False
    over = base.remote_etag if base is not None else None
    if base is not None and remote.etag == base.remote_etag:
        return False  # the base's own version: nothing cut off
    if remote.origin == f"{writer}/{over or ''}/{_key_mark(path)}":
        return True
    # An older syncd's origin names no key: bound to the base's version, it still tells.
    return base is not None and remote.origin == f"{writer}/{over}"


def adopted_base(path: str, remote: ObjectInfo) -> BaseEntry:
    """The base a cut-off upload stands for: its bytes and version. The local stat it was
    sent from is unknown, so the mtime is one no file has (-1): the content decides whether
    the local file changed since."""
    return BaseEntry(
        path=path,
        size=remote.size,
        mtime_ns=-1,
        inode=0,
        sha256=remote.sha256,
        remote_etag=remote.etag,
        synced_at=time.time(),
    )


def is_this_write(found: ObjectInfo, request: UploadRequest) -> bool:
    """Is `found` (the object under the key after an upload's condition failed) the object
    `request` itself wrote, on an attempt whose answer was lost? Its origin and its content
    (size, sha256) must be the request's."""
    origin = request.metadata.get(ORIGIN_META)
    return (
        origin is not None
        and found.origin == origin
        and request.sha256 is not None
        and found.sha256 == request.sha256
        and found.size == request.size
    )

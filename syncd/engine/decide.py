"""What to do with one path: a pure function of (base, local now, remote now).

No I/O happens here. When the answer depends on a content hash that the caller has not computed
yet, the function says so (HASH_LOCAL / FETCH_REMOTE) and the caller asks again with more facts;
that keeps hashing lazy without hiding any I/O in the decision.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, Protocol

from syncd.engine.model import Action, Decision, LocalFile
from syncd.providers.base import ObjectInfo, same_digest
from syncd.state import BaseEntry

Direction = Literal["both", "upload", "download"]


def local_state(
    base: BaseEntry | None, local: LocalFile | None
) -> Literal["same", "changed", "unknown"]:
    """Has the local side's *content* changed since the base?

    Size first; equal size, mtime, inode and ctime means unchanged; otherwise the hash
    decides, so a touch-only change is not a content change, and an edit that restored size
    and mtime (which still moves the ctime) is caught.
    """
    if base is None or local is None:
        return "changed" if (base is None) != (local is None) else "same"
    if local.size != base.size:
        return "changed"
    if (
        local.mtime_ns == base.mtime_ns
        and (not base.inode or local.inode == base.inode)
        and (not base.ctime_ns or local.ctime_ns == base.ctime_ns)
    ):
        return "same"
    if local.sha256 is None or base.sha256 is None:
        return "unknown" if base.sha256 is not None else "changed"
    return "same" if local.sha256 == base.sha256 else "changed"


def _stat_moved(base: BaseEntry, local: LocalFile) -> bool:
    return (
        local.mtime_ns != base.mtime_ns
        or (bool(base.inode) and local.inode != base.inode)
        or (bool(base.ctime_ns) and local.ctime_ns != base.ctime_ns)
    )


class SeenRemote(Protocol):
    """What the base remembers of the remote: a BaseEntry, or the slimmer row a poll reads."""

    @property
    def remote_etag(self) -> str | None: ...

    @property
    def remote_version(self) -> str | None: ...

    @property
    def mtime_ns(self) -> int: ...

    @property
    def synced_at(self) -> float: ...


def remote_state(
    base: SeenRemote | None, remote: ObjectInfo | None
) -> Literal["same", "changed", "restamped"]:
    """Has the remote changed since the base? The etag is the service's version token.

    "restamped": the same version with new metadata (its `meta_version` moved: an mtime
    restamp on S3 or GCS, which keeps the etag), so the same content with, perhaps, a newer
    mtime to carry over (issue 3).
    """
    if base is None or remote is None:
        return "changed" if (base is None) != (remote is None) else "same"
    if remote.etag != base.remote_etag:
        return "changed"
    return "restamped" if _restamped(base, remote) else "same"


def _restamped(base: SeenRemote, remote: ObjectInfo) -> bool:
    if remote.meta_version is None or remote.meta_version == base.remote_version:
        return False
    if base.remote_version is not None:
        return True
    # Not known when the base was recorded (S3's answer to an upload does not state its
    # LastModified; a state from before it was kept): a restamp since shows as a stated
    # mtime other than the synced one, or as a modification after the record. That compares
    # the service's clock with this one: a restamp closer to the record than the clocks are
    # apart is missed, one the other way costs a look at the metadata, which records it.
    if remote.mtime_ns is not None and remote.mtime_ns != base.mtime_ns:
        return True
    return remote.modified > base.synced_at


def same_content(local: LocalFile, remote: ObjectInfo) -> bool | None:
    """Do both sides hold the same bytes? None when the hashes at hand cannot tell."""
    if local.size != remote.size:
        return False
    return same_digest(local, remote)


def decide(
    base: BaseEntry | None,
    local: LocalFile | None,
    remote: ObjectInfo | None,
    direction: Direction = "both",
    *,
    copy: bool = False,
) -> Decision:
    """The three-way decision for one path.

    `copy` (a one-way `syncd upload` / `download`, like `rclone copy`): the destination is to
    hold the source's files, so a file the destination lost since the last run is sent again,
    and one the destination changed is compared with the source, a real difference being a
    conflict (the copy's strategy has the source win; the replaced version goes to the trash).
    A pair with a `direction` alone leaves the other side's changes be.
    """
    if remote is not None and remote.archived:
        return _archived(base, local, remote, direction, copy=copy)
    if local is None and remote is None:
        if base is None:
            return Decision(Action.NOTHING, "absent on both sides")
        return Decision(Action.FORGET, "deleted on both sides")

    lstate = local_state(base, local)
    if lstate == "unknown":
        return Decision(Action.HASH_LOCAL, "same size, new timestamps: compare content")
    rstate = remote_state(base, remote)
    retagged = False
    if rstate == "restamped":
        # Same version, new metadata: a timestamp-only change (issue 3), never a content one.
        rstate, retagged = "same", True
    if rstate == "changed" and base is not None and remote is not None and base.sha256:
        # A new version token with the same size may be a touch or a re-upload of the same
        # bytes: the checksum decides (a changed size needs no proof).
        if remote.size == base.size and remote.sha256 is None and not remote.has_metadata:
            return Decision(Action.FETCH_REMOTE, "new remote version: compare content")
        if remote.sha256 == base.sha256:
            rstate, retagged = "same", True
        elif (
            remote.size == base.size
            and remote.sha256 is None
            and remote.md5 is not None
            and lstate == "same"
            and local is not None
        ):
            # Written by another tool (no sha256), but the service keeps an MD5 (GCS, Azure,
            # a single-part S3 ETag): an unchanged local file's MD5 tells a rewrite of the
            # same bytes (a touch) from an edit.
            if local.md5 is None:
                return Decision(Action.HASH_LOCAL, "new remote version: compare content")
            if local.md5 == remote.md5:
                rstate, retagged = "same", True

    if lstate == "same" and rstate == "same":
        if base is not None and local is not None and (retagged or _stat_moved(base, local)):
            # Same bytes, new stat (touch, chmod, a copy over itself): remember the new stat,
            # or every later pass would hash the file again.
            return Decision(Action.RECORD, "timestamp-only change")
        return Decision(Action.NOTHING, "in sync")

    destination_changed = copy and (
        (direction == "upload" and lstate == "same" and rstate == "changed" and local is not None)
        or (
            direction == "download"
            and lstate == "changed"
            and rstate == "same"
            and remote is not None
        )
    )
    if destination_changed:
        if remote is None:
            return Decision(Action.UPLOAD, "deleted remotely since the last copy: sent again")
        if local is None:
            return Decision(Action.DOWNLOAD, "deleted locally since the last copy: fetched again")
        # Edited on the destination: compared with the source below, like both sides changed.
        # The source is as it was at the last copy, so its content hash is the base's.
        if base is not None and base.sha256:
            if direction == "upload" and local.sha256 is None:
                local = replace(local, sha256=base.sha256)
            elif direction == "download" and remote.sha256 is None:
                remote = replace(remote, sha256=base.sha256)
    elif lstate == "changed" and rstate == "same":
        if local is None:
            return _one_way(direction, "upload", Action.DELETE_REMOTE, "deleted locally")
        return _one_way(
            direction, "upload", Action.UPLOAD, "new locally" if base is None else "changed locally"
        )
    elif lstate == "same" and rstate == "changed":
        if remote is None:
            return _one_way(direction, "download", Action.DELETE_LOCAL, "deleted remotely")
        return _one_way(
            direction,
            "download",
            Action.DOWNLOAD,
            "new remotely" if base is None else "changed remotely",
        )

    # Both sides changed since the base (or there is no base and both exist, or a copy's
    # destination changed).
    if local is None or remote is None:
        # One side deleted, the other edited: an edit always beats a delete.
        if local is None:
            return _one_way(
                direction, "download", Action.DOWNLOAD, "edited remotely, deleted locally"
            )
        return _one_way(direction, "upload", Action.UPLOAD, "edited locally, deleted remotely")

    if local.sha256 is None and local.md5 is None:
        return Decision(Action.HASH_LOCAL, "both sides changed: compare content")
    equal = same_content(local, remote)
    if equal is None and not remote.has_metadata:
        return Decision(Action.FETCH_REMOTE, "both sides changed: need the remote checksum")
    if equal is None:
        # The same size, and the object states no checksum (another tool's multipart upload):
        # only its bytes can tell. Reading them costs what settling a conflict would move
        # anyway, and equal content is no conflict.
        return Decision(Action.HASH_REMOTE, "same size, no remote checksum: hash its content")
    if equal:
        return Decision(Action.RECORD, "same content on both sides")
    # Different: never overwrite, keep both.
    if destination_changed:
        side = "remotely" if direction == "upload" else "locally"
        return Decision(Action.CONFLICT, f"changed {side} since the last copy")
    return Decision(
        Action.CONFLICT, "changed on both sides" if base is not None else "differs, no base"
    )


#: Why an archived remote object is left as it is (the engine reports it as skipped).
ARCHIVED = "remote object is in an archive tier; restore it to sync"

#: What may be done to a path whose remote object is archived: nothing that reads its bytes
#: (a download, a content comparison, a trash copy before a delete or a conflict). A stat and
#: a record read only its metadata; an upload replaces it without reading it.
_BLIND = frozenset(
    {Action.NOTHING, Action.HASH_LOCAL, Action.FETCH_REMOTE, Action.RECORD, Action.UPLOAD}
)


def _archived(
    base: BaseEntry | None,
    local: LocalFile | None,
    remote: ObjectInfo,
    direction: Direction,
    *,
    copy: bool,
) -> Decision:
    """The decision for an object unreadable until restored (S3 GLACIER / DEEP_ARCHIVE, Azure
    Archive): the usual one where it needs no read of the object, else leave it alone.

    It is never a deletion, and never replaced by a stale local copy; but a local edit made
    since the last sync, on top of the very version archived then, is not stale: it goes up,
    or a pair whose own storage class is an archive tier would never back up an edit. (An
    UPLOAD with the object present is only decided when the remote is unchanged since the
    base; the engine replaces it on condition of that version: see
    `Capabilities.replaces_archived`.)
    """
    decision = decide(base, local, replace(remote, archived=False), direction, copy=copy)
    if decision.action in _BLIND:
        return decision
    return Decision(Action.NOTHING, ARCHIVED)


def _one_way(direction: Direction, needs: str, action: Action, reason: str) -> Decision:
    """Honour a pair's `direction`: an action toward the other side only where it is allowed."""
    if direction not in ("both", needs):
        return Decision(Action.NOTHING, f"{reason} ({direction}-only pair)")
    return Decision(action, reason)

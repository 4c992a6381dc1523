"""The three-way decision, from a table: (base, local now, remote now) -> action."""

from __future__ import annotations

from dataclasses import replace

import pytest

from syncd.engine.decide import ARCHIVED, decide, remote_state
from syncd.engine.model import Action, LocalFile
from syncd.providers.base import ObjectInfo
from syncd.state import BaseEntry, RemoteSeen

SHA_A, SHA_B = "a" * 64, "b" * 64
MD5_A, MD5_B = "1" * 32, "2" * 32

BASE = BaseEntry("f", size=3, mtime_ns=100, inode=7, sha256=SHA_A, remote_etag="e1", synced_at=0.0)
L_SAME = LocalFile(size=3, mtime_ns=100, inode=7)
L_EDIT = LocalFile(size=5, mtime_ns=200, inode=7)
L_TOUCH = LocalFile(size=3, mtime_ns=300, inode=7)
L_TOUCH_HASHED = LocalFile(size=3, mtime_ns=300, inode=7, sha256=SHA_A, md5=MD5_A)
L_SAMESIZE_EDIT_HASHED = LocalFile(size=3, mtime_ns=300, inode=7, sha256=SHA_B, md5=MD5_B)
L_NEW_HASHED = LocalFile(size=3, mtime_ns=300, inode=9, sha256=SHA_A, md5=MD5_A)
L_NEW_OTHER = LocalFile(size=3, mtime_ns=300, inode=9, sha256=SHA_B, md5=MD5_B)
R_SAME = ObjectInfo("f", size=3, etag="e1")
R_EDIT = ObjectInfo("f", size=4, etag="e2")
R_LISTED = ObjectInfo("f", size=3, etag="e3")  # from a listing: no metadata
R_MD5_A = ObjectInfo("f", size=3, etag=MD5_A, md5=MD5_A)
R_META_A = ObjectInfo("f", size=3, etag="e4", sha256=SHA_A, has_metadata=True)
R_META_NONE = ObjectInfo("f", size=3, etag="e4", has_metadata=True)
R_META_B = ObjectInfo("f", size=3, etag="e5", sha256=SHA_B, has_metadata=True)
# Rewritten by another tool: metadata without sha256, but the service's MD5 (GCS, Azure).
R_MD5ONLY_A = ObjectInfo("f", size=3, etag="e6", md5=MD5_A, has_metadata=True)
R_MD5ONLY_B = ObjectInfo("f", size=3, etag="e7", md5=MD5_B, has_metadata=True)
L_SAME_HASHED = LocalFile(size=3, mtime_ns=100, inode=7, sha256=SHA_A, md5=MD5_A)
# The same version restamped (S3's copy onto itself keeps the ETag, and moves LastModified;
# a GCS metadata patch keeps the generation): `meta_version` moved, the etag did not.
BASE_STAMPED = BASE._replace(remote_version="1700000000", synced_at=1_700_000_000.5)
R_STAMPED = ObjectInfo("f", size=3, etag="e1", modified=1_700_000_009.0, meta_version="1700000009")
R_UNSTAMPED = ObjectInfo(
    "f", size=3, etag="e1", modified=1_700_000_000.0, meta_version="1700000000"
)
R_NONE = R_META_NONE  # its metadata read: no sha256, and no MD5 either
R_HASHED_A = replace(R_NONE, sha256=SHA_A)  # its content hashed by the engine
L_EDIT_HASHED = LocalFile(size=5, mtime_ns=200, inode=7, sha256=SHA_B, md5=MD5_B)

CASES = [
    # id, base, local, remote, direction, expected action
    ("nothing anywhere", None, None, None, "both", Action.NOTHING),
    ("in sync", BASE, L_SAME, R_SAME, "both", Action.NOTHING),
    ("new local file", None, L_EDIT, None, "both", Action.UPLOAD),
    ("new remote file", None, None, R_EDIT, "both", Action.DOWNLOAD),
    ("edited locally", BASE, L_EDIT, R_SAME, "both", Action.UPLOAD),
    ("edited remotely", BASE, L_SAME, R_EDIT, "both", Action.DOWNLOAD),
    ("touched: needs a hash", BASE, L_TOUCH, R_SAME, "both", Action.HASH_LOCAL),
    ("touched only: record mtime", BASE, L_TOUCH_HASHED, R_SAME, "both", Action.RECORD),
    ("same size, new content", BASE, L_SAMESIZE_EDIT_HASHED, R_SAME, "both", Action.UPLOAD),
    ("deleted on both sides", BASE, None, None, "both", Action.FORGET),
    ("remote retagged, same size: fetch", BASE, L_SAME, R_LISTED, "both", Action.FETCH_REMOTE),
    ("remote retagged, same content", BASE, L_SAME, R_META_A, "both", Action.RECORD),
    ("remote same size, new content", BASE, L_SAME, R_META_B, "both", Action.DOWNLOAD),
    ("remote rewritten, md5 only: hash", BASE, L_SAME, R_MD5ONLY_A, "both", Action.HASH_LOCAL),
    ("remote rewritten, same md5", BASE, L_SAME_HASHED, R_MD5ONLY_A, "both", Action.RECORD),
    ("remote rewritten, new md5", BASE, L_SAME_HASHED, R_MD5ONLY_B, "both", Action.DOWNLOAD),
    ("deleted locally", BASE, None, R_SAME, "both", Action.DELETE_REMOTE),
    ("deleted remotely", BASE, L_SAME, None, "both", Action.DELETE_LOCAL),
    ("edit beats remote delete", BASE, L_EDIT, None, "both", Action.UPLOAD),
    ("edit beats local delete", BASE, None, R_EDIT, "both", Action.DOWNLOAD),
    ("both edited, not hashed", BASE, L_EDIT, R_EDIT, "both", Action.HASH_LOCAL),
    ("first sync, both present: hash", None, L_SAME, R_LISTED, "both", Action.HASH_LOCAL),
    ("first sync, listing only: fetch", None, L_NEW_HASHED, R_LISTED, "both", Action.FETCH_REMOTE),
    ("first sync, md5 equal", None, L_NEW_HASHED, R_MD5_A, "both", Action.RECORD),
    ("first sync, sha256 equal", None, L_NEW_HASHED, R_META_A, "both", Action.RECORD),
    ("first sync, differs", None, L_NEW_OTHER, R_META_A, "both", Action.CONFLICT),
    ("remote restamped: record, no hash", BASE_STAMPED, L_SAME, R_STAMPED, "both", Action.RECORD),
    ("remote not restamped", BASE_STAMPED, L_SAME, R_UNSTAMPED, "both", Action.NOTHING),
    ("remote restamped, local edit", BASE_STAMPED, L_EDIT, R_STAMPED, "both", Action.UPLOAD),
    ("remote restamped, local gone", BASE_STAMPED, None, R_STAMPED, "both", Action.DELETE_REMOTE),
    # No checksum stated (another tool's multipart upload): the remote's bytes are hashed.
    ("first sync, no checksum: hash", None, L_NEW_HASHED, R_NONE, "both", Action.HASH_REMOTE),
    ("first sync, hashed, equal", None, L_NEW_HASHED, R_HASHED_A, "both", Action.RECORD),
    ("first sync, hashed, differs", None, L_NEW_OTHER, R_HASHED_A, "both", Action.CONFLICT),
    ("first sync, no checksum, sizes", None, L_EDIT_HASHED, R_NONE, "both", Action.CONFLICT),
    ("both edited, no checksum: hash", BASE, L_NEW_OTHER, R_NONE, "both", Action.HASH_REMOTE),
    ("upload-only ignores remote edit", BASE, L_SAME, R_EDIT, "upload", Action.NOTHING),
    ("upload-only uploads", BASE, L_EDIT, R_SAME, "upload", Action.UPLOAD),
    ("download-only ignores local edit", BASE, L_EDIT, R_SAME, "download", Action.NOTHING),
    ("download-only downloads", None, None, R_EDIT, "download", Action.DOWNLOAD),
]


#: One-way copies (`syncd upload` / `download`): the destination's changes since the last copy.
COPY_CASES = [
    # id, base, local, remote, direction, expected action
    ("copy up: object deleted, sent again", BASE, L_SAME, None, "upload", Action.UPLOAD),
    ("copy up: object edited, differs", BASE, L_SAME, R_EDIT, "upload", Action.CONFLICT),
    ("copy up: object rewritten, fetch", BASE, L_SAME, R_LISTED, "upload", Action.FETCH_REMOTE),
    ("copy up: rewritten, same md5", BASE, L_SAME_HASHED, R_MD5ONLY_A, "upload", Action.RECORD),
    ("copy up: rewritten, other bytes", BASE, L_SAME, R_META_B, "upload", Action.CONFLICT),
    ("copy up: object retagged, same bytes", BASE, L_SAME, R_META_A, "upload", Action.RECORD),
    # A copy's deletions are decided, then dropped (PairSyncer.propagate_deletes is off).
    ("copy up: source deleted", BASE, None, R_SAME, "upload", Action.DELETE_REMOTE),
    ("copy up: source edited", BASE, L_EDIT, R_SAME, "upload", Action.UPLOAD),
    ("copy down: file deleted, fetched", BASE, None, R_SAME, "download", Action.DOWNLOAD),
    ("copy down: file edited, hash it", BASE, L_EDIT, R_SAME, "download", Action.HASH_LOCAL),
    ("copy down: edited, other", BASE, L_SAMESIZE_EDIT_HASHED, R_SAME, "download", Action.CONFLICT),
    ("copy down: object deleted", BASE, L_SAME, None, "download", Action.DELETE_LOCAL),
    ("copy down: object edited", BASE, L_SAME, R_EDIT, "download", Action.DOWNLOAD),
    ("copy: in sync", BASE, L_SAME, R_SAME, "upload", Action.NOTHING),
]

#: Objects in an archive tier (unreadable until restored): what needs no read of them is done,
#: the rest left alone (and reported).
R_COLD = replace(R_SAME, archived=True)  # the version synced last, archived since
R_COLD_EDIT = replace(R_EDIT, archived=True)  # a new version, written straight to the archive
R_COLD_META_A = replace(R_META_A, archived=True)
R_COLD_NONE = replace(R_META_NONE, archived=True)
ARCHIVED_CASES = [
    # id, base, local, remote, direction, expected action
    ("archived, in sync", BASE, L_SAME, R_COLD, "both", Action.NOTHING),
    ("archived, local edit goes up", BASE, L_EDIT, R_COLD, "both", Action.UPLOAD),
    ("archived, upload-only edit goes up", BASE, L_EDIT, R_COLD, "upload", Action.UPLOAD),
    ("archived, same-size edit: hash", BASE, L_TOUCH, R_COLD, "both", Action.HASH_LOCAL),
    ("archived, new bytes go up", BASE, L_SAMESIZE_EDIT_HASHED, R_COLD, "both", Action.UPLOAD),
    ("archived, touched only: record", BASE, L_TOUCH_HASHED, R_COLD, "both", Action.RECORD),
    ("archived, deleted locally: kept", BASE, None, R_COLD, "both", Action.NOTHING),
    ("archived, new version: not read", BASE, L_SAME, R_COLD_EDIT, "both", Action.NOTHING),
    ("archived, both edited: not read", BASE, L_EDIT_HASHED, R_COLD_EDIT, "both", Action.NOTHING),
    ("archived, new remotely: not read", None, None, R_COLD_EDIT, "both", Action.NOTHING),
    ("archived, no base, differs", None, L_NEW_OTHER, R_COLD_META_A, "both", Action.NOTHING),
    ("archived, no base, sha256 equal", None, L_NEW_HASHED, R_COLD_META_A, "both", Action.RECORD),
    ("archived, no checksum: not read", None, L_NEW_HASHED, R_COLD_NONE, "both", Action.NOTHING),
]


@pytest.mark.parametrize(
    ("base", "local", "remote", "direction", "expected"),
    [case[1:] for case in ARCHIVED_CASES],
    ids=[case[0] for case in ARCHIVED_CASES],
)
def test_archived_objects_are_replaced_by_a_newer_edit_and_never_read(
    *,
    base: BaseEntry | None,
    local: LocalFile | None,
    remote: ObjectInfo,
    direction: str,
    expected: Action,
) -> None:
    decision = decide(base, local, remote, direction)  # type: ignore[arg-type]
    assert decision.action is expected, decision.reason
    if expected is Action.NOTHING and direction == "both" and decision.reason != "in sync":
        assert decision.reason == ARCHIVED


@pytest.mark.parametrize(
    ("base", "local", "remote", "direction", "expected", "copy"),
    [(*case[1:], False) for case in CASES] + [(*case[1:], True) for case in COPY_CASES],
    ids=[case[0] for case in CASES + COPY_CASES],
)
def test_decision_table(
    *,
    base: BaseEntry | None,
    local: LocalFile | None,
    remote: ObjectInfo | None,
    direction: str,
    expected: Action,
    copy: bool,
) -> None:
    decision = decide(base, local, remote, direction, copy=copy)  # type: ignore[arg-type]
    assert decision.action is expected, decision.reason
    assert decision.reason  # every decision says why


#: A remote with the base's etag, stated by a listing (S3: LastModified in whole seconds).
def _listed(
    meta_version: str | None, modified: float = 0.0, mtime_ns: int | None = None
) -> ObjectInfo:
    return ObjectInfo(
        "f", size=3, etag="e1", modified=modified, mtime_ns=mtime_ns, meta_version=meta_version
    )


RECORDED_AT = 1_700_000_000.5
REMOTE_STATES = [
    # id, base remote_version, listed remote, expected
    ("etag moved", "1700000000", ObjectInfo("f", size=3, etag="e2"), "changed"),
    ("nothing moved", "1700000000", _listed("1700000000"), "same"),
    ("metadata version moved", "1700000000", _listed("1700000009"), "restamped"),
    ("a service without one (Azure, file)", None, _listed(None), "same"),
    # The base does not know it (an S3 upload's answer; a state from before it was kept).
    ("unknown, written before the record", None, _listed("1700000000", 1_700_000_000.0), "same"),
    (
        "unknown, written after the record",
        None,
        _listed("1700000001", 1_700_000_001.0),
        "restamped",
    ),
    ("unknown, same stated mtime", None, _listed("100", 1_700_000_000.0, mtime_ns=100), "same"),
    (
        "unknown, other stated mtime",
        None,
        _listed("900", 1_700_000_000.0, mtime_ns=900),
        "restamped",
    ),
]


@pytest.mark.parametrize(
    ("version", "remote", "expected"),
    [case[1:] for case in REMOTE_STATES],
    ids=[case[0] for case in REMOTE_STATES],
)
def test_remote_state_sees_a_restamp_that_keeps_the_etag(
    version: str | None, remote: ObjectInfo, expected: str
) -> None:
    """What both the decision and a daemon's poll (on the slimmer rows it reads) go by."""
    base = BASE._replace(remote_version=version, synced_at=RECORDED_AT)
    seen = RemoteSeen(base.remote_etag, version, base.mtime_ns, RECORDED_AT)
    assert remote_state(base, remote) == remote_state(seen, remote) == expected

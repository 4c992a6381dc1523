"""Which objects are this pair's own writes (syncd/engine/origin.py): a table of cases."""

from __future__ import annotations

import hashlib
import io

import pytest

from syncd.engine.origin import adopted_base, is_cut_off_upload, is_this_write, origin_metadata
from syncd.providers.base import ORIGIN_META, ObjectInfo, UploadRequest
from syncd.state import BaseEntry

ME = "0123456789abcdef"
OTHER = "fedcba9876543210"
SHA_V0 = "0" * 64
SHA_V1 = "1" * 64
BASE = BaseEntry("doc.txt", 3, 1, 2, SHA_V0, "etag-v0", 0.0, 3)


def remote(origin: str | None, *, etag: str = "etag-v1", has_metadata: bool = True) -> ObjectInfo:
    return ObjectInfo("doc.txt", 14, etag, sha256=SHA_V1, has_metadata=has_metadata, origin=origin)


KEY = "/" + hashlib.sha256(b"doc.txt").hexdigest()[:16]  # the path's mark in the origin


@pytest.mark.parametrize(
    ("base", "info", "ours"),
    [
        # Written by this pair over the version its state records: the cut-off upload.
        (BASE, remote(f"{ME}/etag-v0{KEY}"), True),
        # A first upload (no base) that never got its record.
        (None, remote(f"{ME}/{KEY}"), True),
        # Another machine's pair (or another pair of this daemon) over the same version.
        (BASE, remote(f"{OTHER}/etag-v0{KEY}"), False),
        # This pair's object, but written over an older version: a copy restored from the
        # bucket's history is someone else's change.
        (BASE, remote(f"{ME}/etag-older{KEY}"), False),
        (None, remote(f"{ME}/etag-v0{KEY}"), False),
        (BASE, remote(f"{ME}/{KEY}"), False),
        # This pair's upload to another path, copied here (a teammate's rename, `aws s3 mv`):
        # someone else's change, with no base as much as with one.
        (None, remote(f"{ME}//" + "0" * 16), False),
        (BASE, remote(f"{ME}/etag-v0/" + "0" * 16), False),
        # An older syncd's origin names no path: bound to the base's version it still tells;
        # with no base it might be a copy from anywhere.
        (BASE, remote(f"{ME}/etag-v0"), True),
        (None, remote(f"{ME}/"), False),
        # Written by another tool, or metadata not read (an S3 listing): cannot tell.
        (BASE, remote(None), False),
        (BASE, remote(f"{ME}/etag-v0{KEY}", has_metadata=False), False),
        # The base's own version is nothing cut off.
        (BASE, remote(f"{ME}/etag-v0{KEY}", etag="etag-v0"), False),
    ],
)
def test_a_cut_off_upload_is_ours_to_this_path_over_the_recorded_version(
    base: BaseEntry | None, info: ObjectInfo, ours: bool
) -> None:
    assert is_cut_off_upload("doc.txt", base, info, ME) is ours


def test_an_object_without_our_checksum_is_never_taken_for_ours() -> None:
    info = ObjectInfo("doc.txt", 14, "etag-v1", has_metadata=True, origin=f"{ME}/etag-v0{KEY}")
    assert not is_cut_off_upload("doc.txt", BASE, info, ME)


def test_the_adopted_base_lets_the_content_decide() -> None:
    base = adopted_base("doc.txt", remote(f"{ME}/etag-v0"))
    assert (base.size, base.sha256, base.remote_etag) == (14, SHA_V1, "etag-v1")
    assert base.mtime_ns == -1  # no file has it: the local side is compared by content


def test_an_upload_recognises_its_own_write_by_origin_and_content() -> None:
    request = UploadRequest(
        "doc.txt",
        io.BytesIO(b""),
        14,
        5,
        sha256=SHA_V1,
        if_match="etag-v0",
        metadata=origin_metadata(ME, "etag-v0", "doc.txt"),
    )
    assert request.metadata == {ORIGIN_META: f"{ME}/etag-v0{KEY}"}
    assert is_this_write(remote(f"{ME}/etag-v0{KEY}"), request)
    assert not is_this_write(remote(f"{OTHER}/etag-v0{KEY}"), request)
    assert not is_this_write(remote(None), request)
    other_bytes = ObjectInfo("doc.txt", 14, "e", sha256=SHA_V0, origin=f"{ME}/etag-v0{KEY}")
    assert not is_this_write(other_bytes, request)

"""S3 copies of objects larger than CopyObject takes (5 GiB) go in parts, against moto.

Such a copy failed on every pass (the trash copy of a deleted big file, a rename, a conflict
copy), so those pairs never settled. moto copies any size in one request: here the limit is
lowered (`MAX_COPY_SIZE`, and `COPY_PART_SIZE` where the ranges matter) and moto's CopyObject is
made to refuse a source above it with S3's own error.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Bucket
from test_providers import MTIME_NS, PREFIX, get, listing, put

from syncd.providers import PreconditionFailed, open_provider
from syncd.providers import s3 as s3_module
from syncd.providers.base import format_mtime
from syncd.providers.s3 import PART_LIMITS, S3Provider

MiB = 1024 * 1024
#: The lowered CopyObject limit; S3's own is 5 GiB.
LIMIT = 8 * MiB
#: The smallest part S3 (and moto) take but for the last one.
PART = 5 * MiB


@pytest.fixture
def big() -> bytes:
    """An object above LIMIT: two whole parts of PART and a short last one."""
    return os.urandom(2 * PART + 3)


@pytest.fixture
def s3(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Provider]:
    """A provider whose CopyObject takes at most LIMIT bytes, as S3's takes 5 GiB."""
    monkeypatch.setattr(s3_module, "MAX_COPY_SIZE", LIMIT)
    provider = open_provider(
        s3_bucket.url(PREFIX), {"endpoint_url": s3_bucket.endpoint_url}, workers=4
    )
    assert isinstance(provider, S3Provider)
    real = provider._client.copy_object

    def copy_object(**params: Any) -> Any:
        source = params["CopySource"]
        head = s3_bucket.client.head_object(Bucket=source["Bucket"], Key=source["Key"])
        if head["ContentLength"] > LIMIT:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidRequest",
                        "Message": "The specified copy source is larger than the maximum"
                        f" allowable size for a copy source: {LIMIT}",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "CopyObject",
            )
        return real(**params)

    monkeypatch.setattr(provider._client, "copy_object", copy_object)
    yield provider
    provider.close()


def bucket_uploads(bucket: Bucket) -> list[str]:
    """Every unfinished upload in the bucket, seen by a plain client."""
    answer = bucket.client.list_multipart_uploads(Bucket=bucket.bucket)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def spy(
    monkeypatch: pytest.MonkeyPatch,
    provider: S3Provider,
    operation: str,
    before: Callable[[dict[str, Any]], None] = lambda params: None,
) -> list[dict[str, Any]]:
    """Record the parameters of every `operation` call the provider makes (running `before`
    ahead of each), and pass it on to moto."""
    calls: list[dict[str, Any]] = []
    real = getattr(provider._client, operation)

    def call(**params: Any) -> Any:
        calls.append(params)
        before(params)
        return real(**params)

    monkeypatch.setattr(provider._client, operation, call)
    return calls


def test_a_copy_above_the_limit_is_the_same_object_made_in_parts(
    s3: S3Provider, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, big: bytes
) -> None:
    """The copy in parts carries what CopyObject would: the bytes, all the metadata, the
    content headers and the storage class (another tool's object, as a trash copy meets it)."""
    s3_bucket.client.put_object(
        Bucket=s3_bucket.bucket,
        Key=PREFIX + "big.bin",
        Body=big,
        Metadata={
            "mtime": format_mtime(MTIME_NS),
            "sha256": hashlib.sha256(big).hexdigest(),
            "by": "ann",
        },
        ContentType="application/x-disk-image",
        CacheControl="no-cache",
        ContentDisposition='attachment; filename="big.bin"',
        StorageClass="STANDARD_IA",
    )
    source = s3.stat("big.bin")
    whole = spy(monkeypatch, s3, "copy_object")

    copied = s3.copy("big.bin", ".syncd-trash/big.bin", if_match=source.etag)

    assert whole == []
    data, info = get(s3, ".syncd-trash/big.bin")
    assert data == big
    assert (copied.size, copied.sha256, copied.mtime_ns) == (len(big), source.sha256, MTIME_NS)
    assert (info.sha256, info.mtime_ns) == (source.sha256, MTIME_NS)
    heads = [
        s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=PREFIX + key)
        for key in ("big.bin", ".syncd-trash/big.bin")
    ]
    kept = ("Metadata", "ContentType", "CacheControl", "ContentDisposition", "StorageClass")
    assert [{name: head.get(name) for name in kept} for head in heads] == [
        {
            "Metadata": {
                "mtime": format_mtime(MTIME_NS),
                "sha256": hashlib.sha256(big).hexdigest(),
                "by": "ann",
            },
            "ContentType": "application/x-disk-image",
            "CacheControl": "no-cache",
            "ContentDisposition": 'attachment; filename="big.bin"',
            "StorageClass": "STANDARD_IA",
        }
    ] * 2
    assert get(s3, "big.bin")[0] == big  # the source is untouched
    assert bucket_uploads(s3_bucket) == []


def test_every_range_is_copied_from_the_version_looked_at(
    s3: S3Provider, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, big: bytes
) -> None:
    monkeypatch.setattr(s3_module, "COPY_PART_SIZE", PART)
    original = put(s3, "big.bin", big)
    parts = spy(monkeypatch, s3, "upload_part_copy")

    s3.copy("big.bin", "moved.bin", if_match=original.etag)

    assert [(p["PartNumber"], p["CopySourceRange"]) for p in parts] == [
        (1, f"bytes=0-{PART - 1}"),
        (2, f"bytes={PART}-{2 * PART - 1}"),
        (3, f"bytes={2 * PART}-{2 * PART + 2}"),
    ]
    assert {p["CopySourceIfMatch"] for p in parts} == {f'"{original.etag}"'}
    assert get(s3, "moved.bin")[0] == big
    assert bucket_uploads(s3_bucket) == []


def test_parts_grow_where_the_object_would_need_too_many() -> None:
    size = 10_000 * s3_module.COPY_PART_SIZE + 1
    parts = s3_module._copy_parts(size)
    assert len(parts) <= PART_LIMITS.max_parts
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert parts[0].offset == 0 and parts[-1].offset + parts[-1].size == size
    assert all(a.offset + a.size == b.offset for a, b in itertools.pairwise(parts))
    assert max(p.size for p in parts) <= PART_LIMITS.max_part


@pytest.mark.parametrize("way", ["whole", "in parts"])
def test_a_source_written_meanwhile_is_refused_either_way(
    s3: S3Provider,
    s3_bucket: Bucket,
    monkeypatch: pytest.MonkeyPatch,
    big: bytes,
    way: str,
) -> None:
    """moto ignores CopySourceIfMatch: a write that lands between the look at the source and
    the copy was copied (a rename racing another machine's edit). Either way the copy is
    refused and nothing of it stays; their edit stays at the source."""
    data = big if way == "in parts" else b"mine"
    original = put(s3, "x.bin", data)

    def their_edit(params: dict[str, Any]) -> None:
        if params.get("PartNumber", 1) == 1:
            put(s3, "x.bin", b"their edit", if_match=original.etag)

    operation = "upload_part_copy" if way == "in parts" else "copy_object"
    calls = spy(monkeypatch, s3, operation, before=their_edit)

    with pytest.raises(PreconditionFailed, match="changed while it was copied"):
        s3.copy("x.bin", "y.bin", if_match=original.etag)

    assert calls
    assert "y.bin" not in listing(s3)
    assert get(s3, "x.bin")[0] == b"their edit"
    assert bucket_uploads(s3_bucket) == []


@pytest.mark.parametrize("way", ["whole", "in parts"])
def test_a_stale_source_or_a_taken_destination_is_refused_before_copying(
    s3: S3Provider, monkeypatch: pytest.MonkeyPatch, big: bytes, way: str
) -> None:
    data = big if way == "in parts" else b"mine"
    original = put(s3, "x.bin", data)
    put(s3, "taken.bin", b"someone's")
    newer = put(s3, "x.bin", data[::-1], if_match=original.etag)
    started = spy(monkeypatch, s3, "create_multipart_upload")
    whole = spy(monkeypatch, s3, "copy_object")

    with pytest.raises(PreconditionFailed, match="changed since it was listed"):
        s3.copy("x.bin", "y.bin", if_match=original.etag)
    with pytest.raises(PreconditionFailed, match="already exists"):
        s3.copy("x.bin", "taken.bin", if_match=newer.etag)

    assert (started, whole) == ([], [])
    assert sorted(listing(s3)) == ["taken.bin", "x.bin"]
    assert get(s3, "taken.bin")[0] == b"someone's"


def test_a_destination_written_meanwhile_is_kept_and_the_parts_dropped(
    s3: S3Provider, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, big: bytes
) -> None:
    """The commit is create-only, as CopyObject is (If-None-Match: *)."""
    original = put(s3, "x.bin", big)

    def their_write(params: dict[str, Any]) -> None:
        s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=PREFIX + "y.bin", Body=b"theirs")

    commits = spy(monkeypatch, s3, "complete_multipart_upload", before=their_write)

    with pytest.raises(PreconditionFailed):
        s3.copy("x.bin", "y.bin", if_match=original.etag)

    assert [commit["IfNoneMatch"] for commit in commits] == ["*"]
    assert get(s3, "y.bin")[0] == b"theirs"
    assert get(s3, "x.bin")[0] == big
    assert bucket_uploads(s3_bucket) == []


# -- a copy's content, where the ETag is no MD5 -------------------------------------------------


def test_a_copy_of_an_sse_kms_object_another_tool_wrote_is_kept(
    s3: S3Provider, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under SSE-KMS an ETag is no MD5 and differs on every write, a copy's too (moto gives
    the MD5: the copy's head is made to answer as S3 does). Without a sha256 of ours nothing
    can compare the copy with its source, so it is kept, not undone as a changed source."""
    s3_bucket.client.put_object(
        Bucket=s3_bucket.bucket,
        Key=PREFIX + "kms.txt",
        Body=b"by aws s3 cp",
        ServerSideEncryption="aws:kms",
    )
    source = s3.stat("kms.txt")
    assert (source.sha256, source.md5) == (None, None)
    real = s3._client.head_object
    fresh = "f" * 32

    def head_object(**params: Any) -> Any:
        answer = real(**params)
        if params["Key"] == PREFIX + ".syncd-trash/kms.txt":
            answer = {**answer, "ETag": f'"{fresh}"', "ServerSideEncryption": "aws:kms"}
        return answer

    monkeypatch.setattr(s3._client, "head_object", head_object)

    copied = s3.copy("kms.txt", ".syncd-trash/kms.txt", if_match=source.etag)

    assert copied.etag == fresh
    assert get(s3, ".syncd-trash/kms.txt")[0] == b"by aws s3 cp"
    assert get(s3, "kms.txt")[0] == b"by aws s3 cp"


def test_a_plain_object_another_tool_wrote_is_still_compared_by_its_md5(
    s3: S3Provider, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a sha256, an object stored whole still tells a changed source by its MD5."""

    def write(body: bytes) -> None:
        s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=PREFIX + "x.txt", Body=body)

    write(b"theirs")
    source = s3.stat("x.txt")
    spy(monkeypatch, s3, "copy_object", before=lambda params: write(b"an edit"))

    with pytest.raises(PreconditionFailed, match="changed while it was copied"):
        s3.copy("x.txt", "y.txt", if_match=source.etag)

    assert "y.txt" not in listing(s3)
    assert get(s3, "x.txt")[0] == b"an edit"

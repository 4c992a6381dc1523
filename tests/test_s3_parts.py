"""S3-only promises of the multipart half (test_parts.py holds the shared ones), against moto:
stale uploads can be found, a lost condition leaves no parts behind, each part's SHA-256 goes
out."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import os
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import google_crc32c
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from conftest import Bucket
from faultproxy import FaultProxy, drop_before_response
from test_providers import MTIME_NS, PREFIX, OneWayStream, get, put

from syncd.providers import (
    InvalidRequest,
    NotFound,
    PartInfo,
    PreconditionFailed,
    Transient,
    UploadRequest,
    open_provider,
)
from syncd.providers.s3 import S3Provider, _PartBody, _translate

MiB = 1024 * 1024


def make_provider(bucket: Bucket, **options: Any) -> S3Provider:
    provider = open_provider(
        bucket.url(PREFIX), {"endpoint_url": bucket.endpoint_url, **options}, workers=4
    )
    assert isinstance(provider, S3Provider)
    return provider


@pytest.fixture
def s3(s3_bucket: Bucket) -> Iterator[S3Provider]:
    provider = make_provider(s3_bucket)
    yield provider
    provider.close()


def request_for(key: str, data: bytes, **conditions: Any) -> UploadRequest:
    return UploadRequest(
        key=key,
        body=io.BytesIO(b""),
        size=len(data),
        mtime_ns=MTIME_NS,
        sha256=hashlib.sha256(data).hexdigest(),
        **conditions,
    )


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def crc32c_of(data: bytes) -> str:
    """A part's digest as S3's upload_part takes it (PART_LIMITS.digest): hex CRC32C."""
    return f"{google_crc32c.value(data):08x}"


def b64_crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode("ascii")


def send(
    s3: S3Provider, req: UploadRequest, upload_id: str, part: PartInfo, data: bytes
) -> PartInfo:
    chunk = data[part.offset : part.offset + part.size]
    body = cast(BinaryIO, OneWayStream(chunk))
    return s3.upload_part(req, upload_id, part, body, crc32c_of(chunk))


def one_part(s3: S3Provider, req: UploadRequest, data: bytes) -> tuple[str, PartInfo]:
    upload_id = s3.start_multipart(req)
    return upload_id, send(s3, req, upload_id, PartInfo(1, 0, len(data)), data)


def s3_get(s3: S3Provider, key: str) -> bytes:
    return get(s3, key)[0]


def bucket_uploads(bucket: Bucket) -> list[str]:
    """Every unfinished upload in the bucket, seen by a plain client (not the code under test)."""
    answer = bucket.client.list_multipart_uploads(Bucket=bucket.bucket)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


# -- list_multipart_uploads -------------------------------------------------------------------


def test_unfinished_uploads_are_listed_until_completed(s3: S3Provider, s3_bucket: Bucket) -> None:
    data = b"some bytes"
    req = request_for("dir/pending.bin", data)
    upload_id, part = one_part(s3, req, data)
    s3_bucket.client.create_multipart_upload(Bucket=s3_bucket.bucket, Key="team/ab/x")  # sibling

    assert s3.list_multipart_uploads() == [("dir/pending.bin", upload_id)]

    s3.complete_multipart(req, upload_id, [part])
    assert s3.list_multipart_uploads() == []
    assert bucket_uploads(s3_bucket) == ["team/ab/x"]


def test_aborted_uploads_are_not_listed(s3: S3Provider) -> None:
    data = b"x" * 100
    req = request_for("a.bin", data)
    first, _ = one_part(s3, req, data)
    second = s3.start_multipart(request_for("b.bin", data))
    assert sorted(s3.list_multipart_uploads()) == sorted([("a.bin", first), ("b.bin", second)])

    s3.abort_multipart(req, first)

    assert s3.list_multipart_uploads() == [("b.bin", second)]


# -- conditions on complete -------------------------------------------------------------------


def test_create_only_refused_leaves_no_upload(s3: S3Provider, s3_bucket: Bucket) -> None:
    put(s3, "taken.bin", b"first")
    data = b"second"
    req = request_for("taken.bin", data, if_absent=True)
    upload_id, part = one_part(s3, req, data)

    with pytest.raises(PreconditionFailed):
        s3.complete_multipart(req, upload_id, [part])

    assert s3.list_multipart_uploads() == []
    assert bucket_uploads(s3_bucket) == []
    with pytest.raises(NotFound):
        s3.list_parts(req, upload_id)


@pytest.mark.parametrize("target", ["replaced", "deleted"])
def test_replace_refused_leaves_no_upload(s3: S3Provider, s3_bucket: Bucket, target: str) -> None:
    """moto ignores If-Match on CompleteMultipartUpload: the provider's own look must hold."""
    v1 = put(s3, "f.bin", b"one")
    if target == "replaced":
        put(s3, "f.bin", b"two", if_match=v1.etag)
    else:
        s3.delete("f.bin")
    data = b"three"
    req = request_for("f.bin", data, if_match=v1.etag)
    upload_id, part = one_part(s3, req, data)

    with pytest.raises(PreconditionFailed):
        s3.complete_multipart(req, upload_id, [part])

    assert bucket_uploads(s3_bucket) == []
    if target == "replaced":
        assert s3.stat("f.bin").size == 3


class _Raw:
    """Just enough of a urllib3 response for botocore to parse a canned answer."""

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield b""


def fail_first_attempt(s3: S3Provider) -> list[int]:
    """Make the first UploadPart attempt consume its body and then meet a 500, as if the
    server failed after the bytes went out."""
    attempts: list[int] = []

    def hook(request: Any, **_: Any) -> Any:  # a response short-cuts the send
        attempts.append(1)
        if len(attempts) > 1:
            return None  # later attempts are sent for real
        while request.body.read(64 * 1024):
            pass
        return AWSResponse(request.url, 500, cast(Any, {}), _Raw())

    s3._client.meta.events.register("before-send.s3.UploadPart", hook)
    return attempts


def test_a_failed_part_is_transient_and_sent_again_whole(s3: S3Provider) -> None:
    """botocore does not retry on its own (the engine does, with its backoff): the 500 comes
    out as Transient, and the engine's next attempt sends the part from its start."""
    data = os.urandom(10_000)
    req = request_for("retried.bin", data)
    upload_id = s3.start_multipart(req)
    attempts = fail_first_attempt(s3)

    with pytest.raises(Transient):
        s3.upload_part(req, upload_id, PartInfo(1, 0, len(data)), io.BytesIO(data), crc32c_of(data))
    part = s3.upload_part(
        req, upload_id, PartInfo(1, 0, len(data)), io.BytesIO(data), crc32c_of(data)
    )

    assert len(attempts) == 2
    s3.complete_multipart(req, upload_id, [part])
    assert s3_get(s3, "retried.bin") == data


def test_a_one_way_part_that_fails_is_transient(s3: S3Provider) -> None:
    """A pipe cannot be rewound: the failed attempt is Transient, and the engine sends the part
    again from the file."""
    data = b"abc"
    req = request_for("pipe.bin", data)
    upload_id = s3.start_multipart(req)
    fail_first_attempt(s3)

    with pytest.raises(Transient):
        send(s3, req, upload_id, PartInfo(1, 0, len(data)), data)
    s3.abort_multipart(req, upload_id)


@pytest.mark.parametrize("conditional", [False, True])
def test_no_such_upload_is_not_found_even_under_a_condition(conditional: bool) -> None:
    """S3 answers a commit of a gone upload with NoSuchUpload (moto with a 500, so this is
    checked on the translation): the upload is gone, no condition was decided."""
    answer: Any = {
        "Error": {"Code": "NoSuchUpload", "Message": "gone"},
        "ResponseMetadata": {"HTTPStatusCode": 404},
    }
    exc = ClientError(answer, "CompleteMultipartUpload")
    error = _translate(exc, "s3://b/k", bucket="b", on_object=True, conditional=conditional)
    assert type(error) is NotFound


def test_multipart_object_carries_metadata_and_storage_class(s3_bucket: Bucket) -> None:
    s3 = make_provider(s3_bucket, storage_class="STANDARD_IA")
    try:
        data = b"payload"
        req = UploadRequest(
            key="meta.bin",
            body=io.BytesIO(b""),
            size=len(data),
            mtime_ns=MTIME_NS,
            sha256=hashlib.sha256(data).hexdigest(),
            metadata={"extra": "kept"},
        )
        upload_id, part = one_part(s3, req, data)
        info = s3.complete_multipart(req, upload_id, [part])
    finally:
        s3.close()

    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=PREFIX + "meta.bin")
    assert head["Metadata"] == {
        "mtime": "1700000000.123456789",
        "sha256": hashlib.sha256(data).hexdigest(),
        "extra": "kept",
    }
    assert head["StorageClass"] == "STANDARD_IA"
    assert info.etag == head["ETag"].strip('"')
    assert info.md5 is None  # a multipart ETag ("…-1") is no MD5 of the content


# -- parts ------------------------------------------------------------------------------------


def headers_sent(s3: S3Provider, operation: str, *names: str) -> list[dict[str, str | None]]:
    """The values of `names` in every `operation` request the client sends from now on."""
    seen: list[dict[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        values = {name: request.headers.get(name) for name in names}  # bytes once prepared
        seen.append(
            {k: v.decode("ascii") if isinstance(v, bytes) else v for k, v in values.items()}
        )

    s3._client.meta.events.register(f"before-send.s3.{operation}", record)
    return seen


def s3_reports_the_part_checksum(s3: S3Provider) -> None:
    """Make moto's ListParts name the upload's checksum algorithm, as S3's does."""
    algorithms: dict[str, str] = {}

    def created(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if parsed.get("UploadId") and parsed.get("ChecksumAlgorithm"):
            algorithms[parsed["UploadId"]] = parsed["ChecksumAlgorithm"]

    def listed(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("UploadId") in algorithms:
            parsed["ChecksumAlgorithm"] = algorithms[parsed["UploadId"]]

    s3._client.meta.events.register("after-call.s3.CreateMultipartUpload", created)
    s3._client.meta.events.register("after-call.s3.ListParts", listed)


def test_every_part_carries_its_crc32c_for_s3_to_check(s3: S3Provider) -> None:
    """The upload is created with ChecksumAlgorithm CRC32C, so S3 requires and checks the
    x-amz-checksum-crc32c of every part (BadDigest when the bytes arrived damaged), and the
    commit names every part by ETag and checksum, which ListParts reports back."""
    created = headers_sent(s3, "CreateMultipartUpload", "x-amz-checksum-algorithm")
    parts_seen = headers_sent(s3, "UploadPart", "x-amz-checksum-crc32c", "Content-MD5")
    committed: list[bytes] = []
    s3._client.meta.events.register(
        "before-send.s3.CompleteMultipartUpload",
        lambda request, **_: committed.append(request.body),
    )
    data = os.urandom(1000)
    req = request_for("crc.bin", data)
    upload_id, part = one_part(s3, req, data)

    assert created == [{"x-amz-checksum-algorithm": "CRC32C"}]
    assert parts_seen == [{"x-amz-checksum-crc32c": b64_crc32c(data), "Content-MD5": None}]
    assert part.md5 == md5_of(data)  # S3's ETag of a part: recorded, compared on a resume
    assert part.token == f"{md5_of(data)} {b64_crc32c(data)}"
    s3.complete_multipart(req, upload_id, [part])
    assert f"<ChecksumCRC32C>{b64_crc32c(data)}</ChecksumCRC32C>".encode() in committed[0]
    assert s3_get(s3, "crc.bin") == data


def test_an_upload_begun_with_another_part_checksum_is_not_listed_as_resumable(
    s3: S3Provider,
) -> None:
    """An older syncd created uploads with SHA-256 part checksums: their parts cannot be named
    with CRC32C at the commit, so listing them says so (the engine then starts over). S3's
    ListParts names the upload's ChecksumAlgorithm; moto's leaves it out, so the test puts
    back what S3 would say."""
    s3_reports_the_part_checksum(s3)
    data = os.urandom(1000)
    req = request_for("old.bin", data)
    answer = s3._client.create_multipart_upload(
        Bucket=s3.bucket, Key=s3.prefix + "old.bin", ChecksumAlgorithm="SHA256"
    )
    with pytest.raises(InvalidRequest, match="SHA256 part checksums"):
        s3.list_parts(req, answer["UploadId"])
    s3.abort_multipart(req, answer["UploadId"])


def test_a_garbled_digest_is_refused_before_sending(s3: S3Provider) -> None:
    sent: list[object] = []
    s3._client.meta.events.register("before-send.s3.UploadPart", lambda **kw: sent.append(kw))
    req = request_for("bad.bin", b"abc")
    upload_id = s3.start_multipart(req)

    with pytest.raises(InvalidRequest, match="crc32c"):
        s3.upload_part(req, upload_id, PartInfo(1, 0, 3), io.BytesIO(b"abc"), "not hex")
    assert sent == []
    s3.abort_multipart(req, upload_id)


def test_a_body_shorter_than_the_part_is_refused(s3: S3Provider) -> None:
    req = request_for("short.bin", b"0123456789")
    upload_id = s3.start_multipart(req)
    body = cast(BinaryIO, OneWayStream(b"01234"))

    with pytest.raises(InvalidRequest, match="ended 5 bytes before"):
        s3.upload_part(req, upload_id, PartInfo(1, 0, 10), body, crc32c_of(b"0123456789"))
    s3.abort_multipart(req, upload_id)


def test_parts_of_one_open_file_each_read_their_own_bytes(s3: S3Provider) -> None:
    """One seekable file for every part, positioned by the caller: each part reads its span."""
    size = 5 * MiB
    data = os.urandom(2 * size + 10)
    req = request_for("shared.bin", data)
    upload_id = s3.start_multipart(req)
    source = io.BytesIO(data)
    parts = []
    for number, offset in enumerate(range(0, len(data), size), start=1):
        part = PartInfo(number, offset, min(size, len(data) - offset))
        source.seek(offset)
        chunk = data[offset : offset + part.size]
        parts.append(s3.upload_part(req, upload_id, part, source, crc32c_of(chunk)))
        assert source.tell() == offset + part.size

    s3.complete_multipart(req, upload_id, parts)
    assert s3_get(s3, "shared.bin") == data


def test_listed_offsets_skip_over_a_missing_part(s3: S3Provider) -> None:
    """Parts go up in parallel, so a crash can leave holes: offsets after one stay right."""
    size = 5 * MiB
    data = os.urandom(3 * size + 7)
    req = request_for("holes.bin", data)
    upload_id = s3.start_multipart(req)
    plan = [PartInfo(n + 1, n * size, min(size, len(data) - n * size)) for n in range(4)]
    for part in (plan[0], plan[2], plan[3]):
        send(s3, req, upload_id, part, data)

    held = s3.list_parts(req, upload_id)

    assert [(p.number, p.offset, p.size) for p in held] == [
        (p.number, p.offset, p.size) for p in (plan[0], plan[2], plan[3])
    ]
    assert held[1].md5 == md5_of(data[2 * size : 3 * size]) == held[1].token.split()[0]
    s3.abort_multipart(req, upload_id)


def test_part_body_rewinds_only_to_its_own_start() -> None:
    inner = io.BytesIO(b"0123456789")
    inner.seek(3)
    body = _PartBody(cast(BinaryIO, inner), 4, "x")
    assert body.read() == b"3456"
    assert body.read() == b""
    assert body.seek(0) == 0  # what botocore does before a retry
    assert body.read(2) == b"34" and body.tell() == 2
    assert body.seek(0, io.SEEK_END) == 4 and body.read() == b""

    one_way = _PartBody(cast(BinaryIO, OneWayStream(b"abcdef")), 3, "x")
    assert not one_way.seekable()
    assert one_way.read() == b"abc"
    with pytest.raises(io.UnsupportedOperation):
        one_way.seek(0)


# -- ranged reads -----------------------------------------------------------------------------


def test_range_at_the_end_reports_the_whole_size(s3: S3Provider) -> None:
    blob = os.urandom(100_000)
    info = put(s3, "tail.bin", blob)
    sink = io.BytesIO()

    got = s3.download_range("tail.bin", sink, len(blob) - 10, 10, if_match=info.etag)

    assert sink.getvalue() == blob[-10:]
    assert got.size == len(blob)
    assert (got.etag, got.sha256, got.mtime_ns) == (info.etag, info.sha256, MTIME_NS)


def test_range_past_the_end_is_refused_and_writes_nothing(s3: S3Provider) -> None:
    info = put(s3, "small.bin", b"0123456789")
    sink = io.BytesIO()
    with pytest.raises(InvalidRequest):
        s3.download_range("small.bin", sink, 5, 10, if_match=info.etag)  # S3 would answer 5-9
    with pytest.raises(InvalidRequest):
        s3.download_range("small.bin", sink, 10, 1, if_match=info.etag)  # 416
    assert sink.getvalue() == b""


def test_empty_range_only_checks_the_version(s3: S3Provider) -> None:
    info = put(s3, "e.bin", b"abc")
    sink = io.BytesIO()
    assert s3.download_range("e.bin", sink, 0, 0, if_match=info.etag).size == 3
    put(s3, "e.bin", b"new", if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        s3.download_range("e.bin", sink, 0, 0, if_match=info.etag)
    assert sink.getvalue() == b""


def test_a_server_that_ignores_the_range_still_yields_the_range(s3: S3Provider) -> None:
    """Some S3 look-alikes answer a Range with the whole object (200, no Content-Range)."""
    blob = os.urandom(3 * MiB + 5)
    info = put(s3, "whole.bin", blob)

    dropped: list[str] = []

    def drop_range(params: dict[str, Any], **_: Any) -> None:
        dropped.append(params.pop("Range"))

    s3._client.meta.events.register("before-parameter-build.s3.GetObject", drop_range)
    sink = io.BytesIO()

    got = s3.download_range("whole.bin", sink, MiB + 3, MiB + 1, if_match=info.etag)

    assert dropped == [f"bytes={MiB + 3}-{2 * MiB + 3}"]
    assert sink.getvalue() == blob[MiB + 3 : 2 * MiB + 4]
    assert got.size == len(blob)


@pytest.mark.parametrize(
    ("encryption", "md5_stated"),
    [
        ({}, True),
        ({"ServerSideEncryption": "AES256"}, True),  # SSE-S3: the ETag is still the MD5
        ({"ServerSideEncryption": "aws:kms"}, False),
        ({"ServerSideEncryption": "aws:kms:dsse"}, False),
        ({"SSECustomerAlgorithm": "AES256"}, False),
    ],
)
def test_an_encrypted_objects_etag_is_not_taken_for_its_md5(
    encryption: dict[str, str], md5_stated: bool
) -> None:
    """Downloads are checked against the MD5 an object states when it has no sha256 of
    ours: the ETag of an SSE-KMS or SSE-C object is no MD5, and must not fail them."""
    etag = hashlib.md5(b"data", usedforsecurity=False).hexdigest()
    answer = {
        "ETag": f'"{etag}"',
        "ContentLength": 4,
        "LastModified": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "Metadata": {},
        **encryption,
    }
    info = S3Provider._info("k", answer)
    assert info.md5 == (etag if md5_stated else None)


# -- a CreateMultipartUpload whose answer is lost --------------------------------------------


def uploads_by_id(bucket: Bucket) -> dict[str, str]:
    """Upload id -> key of every unfinished upload in the bucket (a plain client)."""
    answer = bucket.client.list_multipart_uploads(Bucket=bucket.bucket)
    return {upload["UploadId"]: upload["Key"] for upload in answer.get("Uploads", [])}


@pytest.fixture
def behind_proxy(s3_bucket: Bucket) -> Iterator[tuple[S3Provider, FaultProxy]]:
    """A provider that reaches moto through a FaultProxy."""
    with FaultProxy(s3_bucket.endpoint_url) as proxy:
        provider = make_provider(s3_bucket, endpoint_url=proxy.url)
        yield provider, proxy
        provider.close()


def unanswered_create(provider: S3Provider, proxy: FaultProxy, req: UploadRequest) -> None:
    """A CreateMultipartUpload that reaches S3 and whose answer is lost."""
    lost = proxy.add_rule(
        drop_before_response(forwarded=True), method="POST", path=r"\?uploads", limit=1
    )
    with pytest.raises(Transient):
        provider.start_multipart(req)
    assert lost.fired == 1


def test_an_upload_made_by_an_unanswered_create_is_dropped_by_the_next(
    s3_bucket: Bucket, behind_proxy: tuple[S3Provider, FaultProxy]
) -> None:
    """The answer to CreateMultipartUpload lost (the upload made, its id never heard), the
    retry's upload completed and the first stayed listed forever. The next answered create of
    the key aborts it; another writer's uploads stay: one of another key, and one of the key
    that holds a part."""
    provider, proxy = behind_proxy
    client, name, full = s3_bucket.client, s3_bucket.bucket, PREFIX + "big.bin"
    data = os.urandom(1024)
    req = request_for("big.bin", data)
    unanswered_create(provider, proxy, req)
    assert len(uploads_by_id(s3_bucket)) == 1  # the unanswered create made one
    other_key = client.create_multipart_upload(Bucket=name, Key=full + ".other")["UploadId"]
    busy = client.create_multipart_upload(Bucket=name, Key=full)["UploadId"]
    client.upload_part(Bucket=name, Key=full, UploadId=busy, PartNumber=1, Body=b"x")

    upload_id = provider.start_multipart(req)

    assert set(uploads_by_id(s3_bucket)) == {other_key, busy, upload_id}
    part = send(provider, req, upload_id, PartInfo(1, 0, len(data)), data)
    provider.complete_multipart(req, upload_id, [part])
    assert s3_get(provider, "big.bin") == data
    assert set(uploads_by_id(s3_bucket)) == {other_key, busy}


def test_an_upload_begun_before_the_unanswered_create_is_kept(
    s3_bucket: Bucket,
    behind_proxy: tuple[S3Provider, FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only an upload S3 says was initiated while our attempts ran can be one of them. moto
    states one fixed Initiated for every upload: here the listing states when each began, as
    S3 does, another writer's empty upload of the key a minute before our first attempt."""
    provider, proxy = behind_proxy
    full = PREFIX + "big.bin"
    theirs = s3_bucket.client.create_multipart_upload(Bucket=s3_bucket.bucket, Key=full)
    began = {theirs["UploadId"]: time.time() - 60}
    req = request_for("big.bin", b"data")
    attempted = time.time()
    unanswered_create(provider, proxy, req)
    (orphan,) = set(uploads_by_id(s3_bucket)) - set(began)
    began[orphan] = attempted
    listed = provider._uploads_of

    def as_s3_states_it(key: str) -> dict[str, datetime.datetime]:
        now = time.time()  # ours, just answered
        return {
            upload_id: datetime.datetime.fromtimestamp(began.get(upload_id, now), datetime.UTC)
            for upload_id in listed(key)
        }

    monkeypatch.setattr(provider, "_uploads_of", as_s3_states_it)
    upload_id = provider.start_multipart(req)

    assert set(uploads_by_id(s3_bucket)) == {*began, upload_id} - {orphan}


def test_a_create_long_after_the_unanswered_one_aborts_nothing(
    s3_bucket: Bucket, behind_proxy: tuple[S3Provider, FaultProxy]
) -> None:
    """The clean-up's window runs from the unanswered create to the next answered one: with
    the key uploaded again only hours later, it took in every upload of the key begun in
    between, another writer's empty one included. Past a retry's span it looks no more."""
    provider, proxy = behind_proxy
    req = request_for("big.bin", b"data")
    unanswered_create(provider, proxy, req)
    orphans = set(uploads_by_id(s3_bucket))
    with provider._unanswered_lock:  # as if noted three hours ago
        provider._unanswered = {key: time.monotonic() - 3 * 3600 for key in provider._unanswered}
    upload_id = provider.start_multipart(req)
    assert set(uploads_by_id(s3_bucket)) == orphans | {upload_id}

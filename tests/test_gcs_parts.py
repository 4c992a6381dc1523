"""GCS-only multipart tests: what test_parts.py cannot say for every backend.

The parts of a GCS upload are the chunks of one resumable session, whose URL is the upload id.
Run against the session's fake-gcs-server (fixtures_gcs.py); what went over the wire is read
from the emulator's request log, as test_gcs.py does.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import google_crc32c
import pytest
from emulators import Emulator
from fixtures_gcs import GCSBucket
from test_parts import plan, request_for, send
from test_providers import MTIME_NS, get, listing, put

from syncd.providers import (
    InvalidRequest,
    MultipartProvider,
    NotFound,
    PartInfo,
    PreconditionFailed,
    UploadRequest,
    open_provider,
)
from syncd.providers.gcs import GCSProvider

KiB = 1024
QUANTUM = 256 * KiB


@pytest.fixture
def gcs(gcs_bucket: GCSBucket) -> Iterator[GCSProvider]:
    provider = open_provider(gcs_bucket.url("p"), {}, workers=4)
    assert isinstance(provider, GCSProvider)
    yield provider
    provider.close()


@pytest.fixture
def data() -> bytes:
    return os.urandom(4 * QUANTUM + 1000)


def log_lines(server: Emulator, needle: str) -> list[str]:
    return [
        line for line in server.log_path.read_text(errors="replace").splitlines() if needle in line
    ]


def test_gcs_is_a_sequential_multipart_provider(gcs: GCSProvider) -> None:
    assert isinstance(gcs, MultipartProvider)
    assert gcs.capabilities.multipart
    limits = gcs.part_limits()
    assert limits.sequential
    assert limits.alignment == QUANTUM
    assert limits.min_part == QUANTUM


@pytest.mark.parametrize("condition", ["if_absent", "if_match", None])
def test_the_precondition_is_on_the_session_start(
    gcs: GCSProvider,
    gcs_bucket: GCSBucket,
    gcs_server: Emulator,
    data: bytes,
    condition: str | None,
) -> None:
    """fake-gcs-server ignores ifGenerationMatch on resumable sessions (the adapter looks
    first, which is what refuses there), so check the real GCS guard on the wire."""
    conditions: dict[str, Any] = {}
    expected = None
    if condition == "if_absent":
        conditions["if_absent"] = True
        expected = "ifGenerationMatch=0"
    elif condition == "if_match":
        conditions["if_match"] = put(gcs, "c.bin", b"before").etag
        expected = f"ifGenerationMatch={conditions['if_match']}"

    gcs.start_multipart(request_for("c.bin", data, **conditions))

    starts = log_lines(gcs_server, f"POST /upload/storage/v1/b/{gcs_bucket.bucket}/o?")
    starts = [line for line in starts if "uploadType=resumable" in line]
    assert len(starts) == 1
    if expected is None:
        assert "ifGenerationMatch" not in starts[0]
    else:
        assert expected in starts[0]


def test_the_object_carries_checksums_and_metadata(
    gcs_bucket: GCSBucket, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    provider = open_provider(gcs_bucket.url("p"), {"storage_class": "NEARLINE"})
    assert isinstance(provider, GCSProvider)
    starts: list[tuple[dict[str, Any], dict[str, str]]] = []
    original = provider._client._http.request

    def request(method: str, url: str, data: Any = None, headers: Any = None, **kw: Any) -> Any:
        if method == "POST" and "uploadType=resumable" in url:
            starts.append((json.loads(data), {k.lower(): v for k, v in headers.items()}))
        return original(method, url, data=data, headers=headers, **kw)

    monkeypatch.setattr(provider._client._http, "request", request)
    try:
        req = UploadRequest(
            key="meta.bin",
            body=io.BytesIO(b""),
            size=len(data),
            mtime_ns=MTIME_NS,
            sha256=hashlib.sha256(data).hexdigest(),
            metadata={"origin": "laptop"},
        )
        upload_id = provider.start_multipart(req)
        parts = [send(provider, req, upload_id, p, data) for p in plan(len(data), QUANTUM)]
        assert all(p.token == "" for p in parts)
        info = provider.complete_multipart(req, upload_id, parts)
    finally:
        provider.close()

    blob = gcs_bucket.get("p/meta.bin")
    assert blob.metadata == {
        "mtime": "1700000000.123456789",
        "goog-reserved-file-mtime": "1700000000",
        "sha256": hashlib.sha256(data).hexdigest(),
        "origin": "laptop",
    }
    # fake-gcs-server drops the storage class of a resumable upload: look at what was asked
    [(resource, headers)] = starts
    assert resource["storageClass"] == "NEARLINE"
    assert headers["x-upload-content-length"] == str(len(data))
    assert base64.b64decode(blob.md5_hash) == hashlib.md5(data, usedforsecurity=False).digest()
    assert base64.b64decode(blob.crc32c) == google_crc32c.value(data).to_bytes(4, "big")
    assert info.etag == str(blob.generation)
    assert info.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert (info.size, info.mtime_ns, info.sha256) == (len(data), MTIME_NS, req.sha256)


def test_resume_in_a_new_process_from_the_recorded_parts(
    gcs_bucket: GCSBucket, gcs_server: Emulator, data: bytes
) -> None:
    """A crash loses the adapter's memory; the engine keeps the session URL and the parts it
    recorded, and a fresh provider sends the rest on the same session, from the next offset."""
    req = request_for("resumed.bin", data)
    parts = plan(len(data), QUANTUM)
    first = open_provider(gcs_bucket.url("p"), {})
    assert isinstance(first, GCSProvider)
    upload_id = first.start_multipart(req)
    recorded = [send(first, req, upload_id, p, data) for p in parts[:2]]
    first.close()

    second = open_provider(gcs_bucket.url("p"), {})
    assert isinstance(second, GCSProvider)
    try:
        rest = [send(second, req, upload_id, p, data) for p in parts[2:]]
        info = second.complete_multipart(req, upload_id, [*recorded, *rest])
        body, got = get(second, "resumed.bin", if_match=info.etag)
    finally:
        second.close()

    assert body == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    # one PUT per part, every one on the session the first process started
    chunks = log_lines(gcs_server, f"PUT /upload/storage/v1/b/{gcs_bucket.bucket}/o?")
    assert len(chunks) == len(parts)
    assert all(upload_id.split("?", 1)[1] in line for line in chunks)


def test_complete_in_a_new_process_reads_the_object_back(
    gcs_bucket: GCSBucket, data: bytes
) -> None:
    req = request_for("done.bin", data)
    first = open_provider(gcs_bucket.url("p"), {})
    assert isinstance(first, GCSProvider)
    upload_id = first.start_multipart(req)
    parts = [send(first, req, upload_id, p, data) for p in plan(len(data), QUANTUM)]
    first.close()

    second = open_provider(gcs_bucket.url("p"), {})
    assert isinstance(second, GCSProvider)
    try:
        info = second.complete_multipart(req, upload_id, parts)
        assert info == second.stat("done.bin")
        put(second, "done.bin", b"someone else", if_match=info.etag)
        with pytest.raises(PreconditionFailed):
            second.complete_multipart(req, upload_id, parts)
    finally:
        second.close()


def test_a_write_before_the_last_part_wins(gcs: GCSProvider, data: bytes) -> None:
    """GCS would refuse the last chunk (412); the emulator would not, so the adapter looks."""
    req = request_for("raced.bin", data, if_absent=True)
    upload_id = gcs.start_multipart(req)
    parts = plan(len(data), QUANTUM)
    for part in parts[:-1]:
        send(gcs, req, upload_id, part, data)
    put(gcs, "raced.bin", b"the other writer")
    with pytest.raises(PreconditionFailed):
        send(gcs, req, upload_id, parts[-1], data)
    assert get(gcs, "raced.bin")[0] == b"the other writer"
    gcs.abort_multipart(req, upload_id)


def test_a_part_the_service_took_only_in_part_is_sent_on(
    gcs: GCSProvider, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    """GCS may persist a prefix of a chunk (308 with a shorter Range): the rest goes again
    from there. Simulated by passing on only the first 256 KiB of the first chunk."""
    http = gcs._client._http
    original = http.request
    seen: list[str] = []

    def request(method: str, url: str, data: Any = None, headers: Any = None, **kw: Any) -> Any:
        headers = dict(headers or {})
        if method == "PUT" and "upload_id=" in url:
            seen.append(headers["Content-Range"])
            if len(seen) == 1:
                total = headers["Content-Range"].rsplit("/", 1)[1]
                headers["Content-Range"] = f"bytes 0-{QUANTUM - 1}/{total}"
                data = data[:QUANTUM]
        return original(method, url, data=data, headers=headers, **kw)

    monkeypatch.setattr(http, "request", request)
    req = request_for("halves.bin", data)
    upload_id = gcs.start_multipart(req)
    parts = [send(gcs, req, upload_id, p, data) for p in plan(len(data), 2 * QUANTUM)]
    gcs.complete_multipart(req, upload_id, parts)

    total = len(data)
    assert seen[:2] == [
        f"bytes 0-{2 * QUANTUM - 1}/{total}",
        f"bytes {QUANTUM}-{2 * QUANTUM - 1}/{total}",
    ]
    assert get(gcs, "halves.bin")[0] == data


def test_parts_are_checked_before_they_go(gcs: GCSProvider, data: bytes) -> None:
    req = request_for("checked.bin", data)
    upload_id = gcs.start_multipart(req)
    first = PartInfo(1, 0, QUANTUM)
    with pytest.raises(InvalidRequest, match="CRC32C"):  # the file changed since it was read
        gcs.upload_part(req, upload_id, first, io.BytesIO(data[:QUANTUM]), "0" * 8)
    with pytest.raises(InvalidRequest, match="256 KiB"):
        send(gcs, req, upload_id, PartInfo(1, 0, QUANTUM + 1), data)
    with pytest.raises(InvalidRequest, match="body ended"):
        crc = f"{google_crc32c.value(data[:QUANTUM]):08x}"
        gcs.upload_part(req, upload_id, first, io.BytesIO(data[:100]), crc)
    with pytest.raises(InvalidRequest, match="outside"):
        send(gcs, req, upload_id, PartInfo(9, len(data) - 10, 20), data)
    # nothing went to the session: the upload goes on from the start
    parts = [send(gcs, req, upload_id, p, data) for p in plan(len(data), QUANTUM)]
    with pytest.raises(InvalidRequest, match="not sent"):
        gcs.complete_multipart(req, upload_id, parts[:-1])
    assert gcs.complete_multipart(req, upload_id, parts).size == len(data)
    assert get(gcs, "checked.bin")[0] == data


def test_a_gone_session_is_not_found(gcs: GCSProvider, data: bytes) -> None:
    req = request_for("gone.bin", data, if_absent=True)
    upload_id = gcs.start_multipart(req)
    parts = [send(gcs, req, upload_id, p, data) for p in plan(len(data), QUANTUM)]
    with pytest.raises(NotFound):  # finished: the emulator forgets the session
        send(gcs, req, upload_id, parts[0], data)
    # The last chunk again (its answer lost, say): the object there is this upload's own, so
    # no conflict; GCS would answer with the object, the emulator has forgotten the session.
    with pytest.raises(NotFound):
        send(gcs, req, upload_id, parts[-1], data)
    unknown = upload_id.split("upload_id=", 1)[0] + "upload_id=0123456789abcdef"
    with pytest.raises(NotFound):
        send(gcs, req, unknown, parts[0], data)
    with pytest.raises(NotFound):
        send(gcs, req, "not-a-session", parts[0], data)


def test_abort_does_not_raise(gcs: GCSProvider, data: bytes) -> None:
    req = request_for("abort.bin", data)
    fresh = gcs.start_multipart(req)
    gcs.abort_multipart(req, fresh)
    gcs.abort_multipart(req, fresh)

    started = gcs.start_multipart(req)
    send(gcs, req, started, plan(len(data), QUANTUM)[0], data)
    gcs.abort_multipart(req, started)
    assert listing(gcs) == {}

    finished = gcs.start_multipart(req)
    parts = [send(gcs, req, finished, p, data) for p in plan(len(data), QUANTUM)]
    gcs.abort_multipart(req, finished)  # too late to drop: the object stays
    gcs.abort_multipart(req, "not-a-session")
    assert get(gcs, "abort.bin")[0] == data
    assert len(parts) == 5


def test_start_in_a_missing_bucket_is_not_found(gcs_server: Emulator, data: bytes) -> None:
    provider = open_provider("gs://no-such-bucket-here/p/", {})
    assert isinstance(provider, GCSProvider)
    try:
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            provider.start_multipart(request_for("k.bin", data))
    finally:
        provider.close()


def test_download_range_pins_the_generation(
    gcs: GCSProvider, gcs_bucket: GCSBucket, gcs_server: Emulator
) -> None:
    blob = os.urandom(5000)
    info = put(gcs, "r.bin", blob)
    sink = io.BytesIO()
    got = gcs.download_range("r.bin", sink, 4000, 1000, if_match=info.etag)
    assert sink.getvalue() == blob[4000:]
    assert got == gcs.stat("r.bin")

    reads = log_lines(gcs_server, f"GET /download/storage/v1/b/{gcs_bucket.bucket}/o/p%2Fr.bin?")
    assert len(reads) == 1
    assert f"generation={info.etag}" in reads[0]
    assert f"ifGenerationMatch={info.etag}" in reads[0]

    with pytest.raises(InvalidRequest):
        gcs.download_range("r.bin", io.BytesIO(), 4000, 1001, if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        gcs.download_range("r.bin", io.BytesIO(), 0, 1, if_match="not-a-generation")
    with pytest.raises(PreconditionFailed):
        gcs.download_range("absent.bin", io.BytesIO(), 0, 1, if_match=info.etag)
    empty = io.BytesIO()
    assert gcs.download_range("r.bin", empty, 10, 0, if_match=info.etag).size == 5000
    assert empty.getvalue() == b""


def test_a_session_that_finishes_wrong_leaves_no_object(gcs: GCSProvider, data: bytes) -> None:
    """A chunk sent twice (a crash after the service took it, before it was recorded) is
    appended by fake-gcs-server instead of placed at its offset: the session finishes with
    the wrong size. That object is the session's own: it is removed (else it would read as
    another writer's version, a conflict whose copy fails every download), and a new upload
    then goes through."""
    req = request_for("twice.bin", data, if_absent=True)
    parts = plan(len(data), QUANTUM)
    upload_id = gcs.start_multipart(req)
    sent = [send(gcs, req, upload_id, p, data) for p in parts[:2]]
    send(gcs, req, upload_id, parts[1], data)  # again, as a resumed process might
    with pytest.raises(InvalidRequest, match="finished with"):
        for part in parts[2:]:
            sent.append(send(gcs, req, upload_id, part, data))
    with pytest.raises(NotFound):
        gcs.stat("twice.bin")

    again = gcs.start_multipart(req)
    info = gcs.complete_multipart(req, again, [send(gcs, req, again, p, data) for p in parts])
    assert get(gcs, "twice.bin", if_match=info.etag)[0] == data


def test_a_finished_object_whose_crc32c_is_not_the_files_is_refused(
    gcs: GCSProvider, data: bytes
) -> None:
    """GCS checks no chunk; the CRC32C the service states for the finished object is checked
    against the file's (UploadRequest.crc32c, from the read before the upload). Bytes that
    went wrong on the way (here: the request describes other bytes) leave no object, and a
    request whose CRC32C matches goes through."""
    wrong = dataclasses.replace(
        request_for("crc.bin", data, if_absent=True),
        crc32c=f"{google_crc32c.value(data + b'!'):08x}",
    )
    parts = plan(len(data), QUANTUM)
    upload_id = gcs.start_multipart(wrong)
    with pytest.raises(InvalidRequest, match="CRC32C"):
        for part in parts:
            send(gcs, wrong, upload_id, part, data)
    with pytest.raises(NotFound):
        gcs.stat("crc.bin")

    right = dataclasses.replace(wrong, crc32c=f"{google_crc32c.value(data):08x}")
    again = gcs.start_multipart(right)
    info = gcs.complete_multipart(right, again, [send(gcs, right, again, p, data) for p in parts])
    assert get(gcs, "crc.bin", if_match=info.etag)[0] == data

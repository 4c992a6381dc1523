"""Azure-only promises of the az:// adapter's multipart half, against Azurite (test_parts.py
covers what every multipart provider shares).

Azure has no upload id: a run id names the blocks (`base64("{run}-{N:06d}")`), parts are
uncommitted blocks, and completing is one Put Block List.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient
from emulators import Azurite
from fixtures_azure import AzureContainer
from test_providers import MTIME_NS, PREFIX, OneWayStream, Root, get, listing, put

from syncd.providers import (
    InvalidRequest,
    NotFound,
    ObjectInfo,
    PartInfo,
    PreconditionFailed,
    UploadRequest,
    open_provider,
)
from syncd.providers.azure import AzureProvider

PART = 64 * 1024


@pytest.fixture
def mp(azure_root: Root) -> AzureProvider:
    assert isinstance(azure_root.provider, AzureProvider)
    return azure_root.provider


def backstage(azure_container: AzureContainer, key: str) -> BlobClient:
    """The blob behind the provider's back (the SDK's own client)."""
    return azure_container.client.get_blob_client(PREFIX + key)


def request_for(key: str, data: bytes, **kwargs: Any) -> UploadRequest:
    return UploadRequest(
        key=key,
        body=io.BytesIO(b""),
        size=len(data),
        mtime_ns=MTIME_NS,
        sha256=hashlib.sha256(data).hexdigest(),
        **kwargs,
    )


def plan(size: int, each: int = PART) -> list[PartInfo]:
    return [
        PartInfo(number=i + 1, offset=offset, size=min(each, size - offset))
        for i, offset in enumerate(range(0, size, each))
    ]


def send(
    mp: AzureProvider,
    req: UploadRequest,
    run: str,
    part: PartInfo,
    data: bytes,
    *,
    md5: str | None = None,
) -> PartInfo:
    chunk = data[part.offset : part.offset + part.size]
    body = OneWayStream(chunk + b"NEXT PART")
    digest = md5 or hashlib.md5(chunk, usedforsecurity=False).hexdigest()
    sent = mp.upload_part(req, run, part, cast(BinaryIO, body), digest)
    assert body.bytes_read == part.size
    return sent


def upload_all(mp: AzureProvider, req: UploadRequest, data: bytes) -> ObjectInfo:
    run = mp.start_multipart(req)
    parts = [send(mp, req, run, p, data) for p in plan(len(data))]
    return mp.complete_multipart(req, run, parts)


@pytest.fixture
def data() -> bytes:
    return os.urandom(3 * PART + 1234)


@pytest.fixture
def sent_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every HTTP request the SDK sends (method, URL, headers), recorded at the transport."""
    seen: list[Any] = []
    original = RequestsTransport.send

    def recording(self: RequestsTransport, request: Any, **kwargs: Any) -> Any:
        seen.append(request)
        return original(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", recording)
    yield seen


# -- parts are blocks of one run ------------------------------------------------------------


def test_limits(mp: AzureProvider) -> None:
    limits = mp.part_limits()
    assert (limits.min_part, limits.max_part, limits.max_parts) == (1, 4000 * 1024 * 1024, 50_000)
    assert not limits.sequential
    assert limits.alignment == 1


def test_block_ids_name_the_run_and_the_part(
    mp: AzureProvider, azure_container: AzureContainer, data: bytes
) -> None:
    req = request_for("ids.bin", data)
    run = mp.start_multipart(req)
    sent = [send(mp, req, run, p, data) for p in plan(len(data))[:2]]

    names = [f"{run}-{n:06d}" for n in (1, 2)]
    assert [p.token for p in sent] == [base64.b64encode(n.encode()).decode() for n in names]
    assert len({len(p.token) for p in sent}) == 1
    # The SDK decodes the wire ids: they are base64 of the names, encoded once.
    _, uncommitted = backstage(azure_container, "ids.bin").get_block_list("uncommitted")
    assert sorted(b.id for b in uncommitted) == names
    assert [b.size for b in sorted(uncommitted, key=lambda b: b.id)] == [PART, PART]


def test_start_sends_nothing(mp: AzureProvider, sent_requests: list[Any], data: bytes) -> None:
    first = mp.start_multipart(request_for("a.bin", data))
    second = mp.start_multipart(request_for("a.bin", data))
    assert first != second
    assert len(first) == 32
    assert sent_requests == []


def test_parts_are_listed_for_their_run_only(
    mp: AzureProvider, azure_container: AzureContainer, data: bytes
) -> None:
    other_data = os.urandom(2 * PART)
    req = request_for("shared.bin", data)
    other = request_for("shared.bin", other_data)
    run = mp.start_multipart(req)
    other_run = mp.start_multipart(other)
    mine = [send(mp, req, run, p, data) for p in plan(len(data))[:2]]
    theirs = [send(mp, other, other_run, p, other_data) for p in plan(len(other_data))]

    assert mp.list_parts(req, run) == [
        PartInfo(p.number, p.offset, p.size, token=p.token) for p in mine
    ]
    assert [(p.number, p.size, p.token) for p in mp.list_parts(other, other_run)] == [
        (p.number, p.size, p.token) for p in theirs
    ]
    _, uncommitted = backstage(azure_container, "shared.bin").get_block_list("uncommitted")
    assert len(uncommitted) == 4

    # The other run commits first: the service discards every other uncommitted block.
    mp.complete_multipart(other, other_run, theirs)
    assert get(mp, "shared.bin")[0] == other_data
    assert mp.list_parts(req, run) == []
    rest = [send(mp, req, run, p, data) for p in plan(len(data))[2:]]
    with pytest.raises(NotFound, match=r"parts of upload \w+ are gone"):
        mp.complete_multipart(req, run, [*mine, *rest])
    assert get(mp, "shared.bin")[0] == other_data


def test_parts_after_a_gap_are_not_listed(mp: AzureProvider, data: bytes) -> None:
    """Their offsets are unknown (a block list has sizes only): a resume sends them again."""
    req = request_for("gap.bin", data)
    run = mp.start_multipart(req)
    parts = plan(len(data))
    send(mp, req, run, parts[0], data)
    send(mp, req, run, parts[2], data)
    send(mp, req, run, parts[3], data)

    assert [p.number for p in mp.list_parts(req, run)] == [1]
    resent = [send(mp, req, run, p, data) for p in parts[1:]]  # a block staged again replaces
    held = mp.list_parts(req, run)
    assert [(p.number, p.offset, p.size) for p in held] == [
        (p.number, p.offset, p.size) for p in parts
    ]
    mp.complete_multipart(req, run, [held[0], *resent])
    assert get(mp, "gap.bin")[0] == data


def test_list_parts_of_a_missing_blob_or_container(
    mp: AzureProvider, azurite: Azurite, data: bytes
) -> None:
    req = request_for("never.bin", data)
    assert mp.list_parts(req, mp.start_multipart(req)) == []

    provider = open_provider(
        "az://no-such-container/p/", {"connection_string": azurite.connection_string}
    )
    try:
        assert isinstance(provider, AzureProvider)
        run = provider.start_multipart(req)
        with pytest.raises(NotFound, match="container 'no-such-container' does not exist"):
            provider.list_parts(req, run)
        with pytest.raises(NotFound, match="container 'no-such-container' does not exist"):
            send(provider, req, run, plan(len(data))[0], data)
    finally:
        provider.close()


def test_list_parts_after_complete_is_empty(mp: AzureProvider, data: bytes) -> None:
    req = request_for("done.bin", data)
    run = mp.start_multipart(req)
    mp.complete_multipart(req, run, [send(mp, req, run, p, data) for p in plan(len(data))])
    assert mp.list_parts(req, run) == []


def test_abort_cannot_drop_the_blocks(
    mp: AzureProvider, azure_container: AzureContainer, data: bytes
) -> None:
    """Azure has no call to drop uncommitted blocks: abort is a no-op, nothing is visible,
    and the run's blocks stay (listable) until the service drops them."""
    req = request_for("aborted.bin", data)
    run = mp.start_multipart(req)
    first = send(mp, req, run, plan(len(data))[0], data)

    mp.abort_multipart(req, run)
    mp.abort_multipart(req, run)

    assert listing(mp) == {}
    with pytest.raises(NotFound):
        mp.stat("aborted.bin")
    assert [p.token for p in mp.list_parts(req, run)] == [first.token]


# -- per-block MD5 and streaming ------------------------------------------------------------


def test_part_md5_is_sent_and_checked(
    mp: AzureProvider, azure_container: AzureContainer, sent_requests: list[Any], data: bytes
) -> None:
    req = request_for("md5.bin", data)
    run = mp.start_multipart(req)
    part = plan(len(data))[0]
    chunk = data[: part.size]
    digest = hashlib.md5(chunk, usedforsecurity=False)

    sent = send(mp, req, run, part, data)

    assert sent.md5 == digest.hexdigest()
    (put_block,) = sent_requests
    assert put_block.method == "PUT"
    assert "comp=block" in put_block.url
    assert put_block.headers["Content-MD5"] == base64.b64encode(digest.digest()).decode()
    assert put_block.headers["Content-Length"] == str(part.size)
    assert "Transfer-Encoding" not in put_block.headers

    wrong = hashlib.md5(b"something else", usedforsecurity=False).hexdigest()
    # Azure answers 400 Md5Mismatch; Azurite 400 InvalidOperation ("Provided contentMD5
    # doesn't match."): the service does check it, and the part is not staged.
    with pytest.raises(InvalidRequest, match=r"Md5Mismatch|InvalidOperation"):
        send(mp, req, run, plan(len(data))[1], data, md5=wrong)
    assert [p.number for p in mp.list_parts(req, run)] == [1]


@pytest.mark.parametrize("md5", ["nope", "0" * 31, ""])
def test_malformed_md5_is_refused_before_sending(
    mp: AzureProvider, sent_requests: list[Any], data: bytes, md5: str
) -> None:
    req = request_for("m.bin", data)
    run = mp.start_multipart(req)
    with pytest.raises(InvalidRequest, match="md5"):
        mp.upload_part(req, run, plan(len(data))[0], cast(BinaryIO, io.BytesIO(data)), md5)
    assert sent_requests == []


def test_body_shorter_than_the_part_is_refused(mp: AzureProvider, data: bytes) -> None:
    req = request_for("short.bin", data)
    run = mp.start_multipart(req)
    part = plan(len(data))[0]
    body = OneWayStream(data[: part.size - 10])
    md5 = hashlib.md5(data[: part.size], usedforsecurity=False).hexdigest()

    with pytest.raises(InvalidRequest, match="body ended 10 bytes before the part's end"):
        mp.upload_part(req, run, part, cast(BinaryIO, body), md5)
    assert mp.list_parts(req, run) == []


class FailingDisk(OneWayStream):
    """A body whose reads fail part-way, as a dying disk's would."""

    def read(self, size: int = -1) -> bytes:
        if self.bytes_read >= 1000:
            raise OSError(5, "Input/output error")
        return super().read(min(size, 500) if size >= 0 else 500)


def test_body_errors_pass_through_untouched(mp: AzureProvider, data: bytes) -> None:
    """The HTTP stack would wrap them as connection errors (Transient): they are the body's."""
    req = request_for("disk.bin", data)
    run = mp.start_multipart(req)
    part = plan(len(data))[0]
    md5 = hashlib.md5(data[: part.size], usedforsecurity=False).hexdigest()

    with pytest.raises(OSError, match="Input/output error") as caught:
        mp.upload_part(req, run, part, cast(BinaryIO, FailingDisk(data)), md5)
    assert type(caught.value) is OSError
    assert mp.list_parts(req, run) == []


@pytest.mark.parametrize(
    "part",
    [
        PartInfo(number=0, offset=0, size=10),
        PartInfo(number=50_001, offset=0, size=10),
        PartInfo(number=1, offset=0, size=0),
        PartInfo(number=2, offset=len(b"x" * 100) - 5, size=10),  # past the object's end
    ],
)
def test_parts_outside_the_limits_are_refused(mp: AzureProvider, part: PartInfo) -> None:
    req = request_for("limits.bin", b"x" * 100)
    run = mp.start_multipart(req)
    with pytest.raises(InvalidRequest):
        mp.upload_part(req, run, part, cast(BinaryIO, io.BytesIO(b"x" * 100)), "0" * 32)


@pytest.mark.parametrize(
    "upload_id", ["", "not-a-run", "0" * 31, "A" * 32, "../" + "0" * 29, "0" * 32 + "\n"]
)
def test_foreign_upload_ids_are_refused(
    mp: AzureProvider, sent_requests: list[Any], data: bytes, upload_id: str
) -> None:
    req = request_for("x.bin", data)
    part = plan(len(data))[0]
    for call in (
        lambda: mp.upload_part(req, upload_id, part, cast(BinaryIO, io.BytesIO(data)), "0" * 32),
        lambda: mp.list_parts(req, upload_id),
        lambda: mp.complete_multipart(req, upload_id, [part]),
        lambda: mp.abort_multipart(req, upload_id),
    ):
        with pytest.raises(InvalidRequest, match="not an Azure multipart upload id"):
            call()
    assert sent_requests == []


# -- the commit -----------------------------------------------------------------------------


def test_committed_blob_carries_metadata_and_tier(
    azure_container: AzureContainer, data: bytes
) -> None:
    options = {"connection_string": azure_container.connection_string, "storage_class": "Cool"}
    provider = open_provider(azure_container.url("tiered"), options)
    try:
        assert isinstance(provider, AzureProvider)
        req = request_for("big.bin", data, metadata={"origin": "laptop"})
        info = upload_all(provider, req, data)

        props = azure_container.client.get_blob_client("tiered/big.bin").get_blob_properties()
        assert props.metadata == {
            "mtime": "1700000000.123456789",
            "sha256": hashlib.sha256(data).hexdigest(),
            "origin": "laptop",
        }
        assert props.blob_tier == "Cool"
        assert props.size == len(data)
        assert props.content_settings.content_md5 is None  # unknown: sha256 is the check
        assert info.md5 is None
        assert info.etag == props.etag.strip('"')
        assert not info.archived
        _, uncommitted = azure_container.client.get_blob_client("tiered/big.bin").get_block_list(
            "uncommitted"
        )
        assert uncommitted == []
    finally:
        provider.close()


def test_failed_create_only_commit_leaves_the_blob_untouched(
    mp: AzureProvider, data: bytes
) -> None:
    before = put(mp, "taken.bin", b"first")
    req = request_for("taken.bin", data, if_absent=True)
    run = mp.start_multipart(req)
    parts = [send(mp, req, run, p, data) for p in plan(len(data))]

    with pytest.raises(PreconditionFailed):
        mp.complete_multipart(req, run, parts)

    body, after = get(mp, "taken.bin")
    assert body == b"first"
    assert (after.etag, after.sha256) == (before.etag, before.sha256)


def test_failed_replace_commit_leaves_the_blob_untouched(mp: AzureProvider, data: bytes) -> None:
    v1 = put(mp, "f.bin", b"one")
    v2 = put(mp, "f.bin", b"two", if_match=v1.etag)
    req = request_for("f.bin", data, if_match=v1.etag)
    run = mp.start_multipart(req)
    parts = [send(mp, req, run, p, data) for p in plan(len(data))]

    with pytest.raises(PreconditionFailed):
        mp.complete_multipart(req, run, parts)

    body, after = get(mp, "f.bin")
    assert body == b"two"
    assert after.etag == v2.etag
    # The current version still wins with the same parts.
    fresh = request_for("f.bin", data, if_match=v2.etag)
    assert mp.complete_multipart(fresh, run, parts).etag != v2.etag
    assert get(mp, "f.bin")[0] == data


def test_replace_of_a_deleted_blob_is_refused(mp: AzureProvider, data: bytes) -> None:
    gone = put(mp, "gone.bin", b"here a moment")
    mp.delete("gone.bin")
    req = request_for("gone.bin", data, if_match=gone.etag)
    with pytest.raises(PreconditionFailed):
        upload_all(mp, req, data)
    assert listing(mp) == {}


@pytest.mark.parametrize(
    "pick",
    [
        lambda parts: parts[:-1],  # short of the object's size
        lambda parts: [parts[1], parts[0], *parts[2:]],  # out of order
        lambda parts: [parts[0], parts[0], *parts[1:]],  # twice
        lambda parts: [],
    ],
)
def test_complete_needs_every_part_in_order(mp: AzureProvider, data: bytes, pick: Any) -> None:
    req = request_for("order.bin", data)
    run = mp.start_multipart(req)
    parts = [send(mp, req, run, p, data) for p in plan(len(data))]
    with pytest.raises(InvalidRequest):
        mp.complete_multipart(req, run, pick(parts))
    assert listing(mp) == {}
    mp.complete_multipart(req, run, parts)
    assert get(mp, "order.bin")[0] == data


def test_complete_with_parts_never_sent_is_not_found(mp: AzureProvider, data: bytes) -> None:
    req = request_for("lost.bin", data)
    run = mp.start_multipart(req)
    with pytest.raises(NotFound, match="are gone"):
        mp.complete_multipart(req, run, plan(len(data)))
    assert listing(mp) == {}


def test_conflicting_conditions_are_refused_at_the_start(mp: AzureProvider, data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="mutually exclusive"):
        mp.start_multipart(request_for("c.bin", data, if_absent=True, if_match="0x8D0"))


# -- ranged reads ---------------------------------------------------------------------------


def test_download_range_reports_the_whole_blob(mp: AzureProvider) -> None:
    blob = os.urandom(5 * 1024 * 1024 + 3)  # more than one GET chunk
    stored = put(mp, "r.bin", blob)
    for offset, length in [(10, 20), (0, len(blob)), (len(blob) - 1, 1), (1, 4 * 1024 * 1024 + 9)]:
        sink = io.BytesIO()
        got = mp.download_range("r.bin", sink, offset, length, if_match=stored.etag)
        assert sink.getvalue() == blob[offset : offset + length]
        assert got.size == len(blob)
        assert (got.etag, got.sha256, got.mtime_ns) == (stored.etag, stored.sha256, MTIME_NS)
        assert got.md5 == stored.md5  # the whole blob's, not the range's


def test_download_range_past_the_end_is_refused(mp: AzureProvider) -> None:
    stored = put(mp, "r.bin", b"0123456789")
    for offset, length in [(5, 10), (10, 1), (0, 11)]:
        sink = io.BytesIO()
        with pytest.raises(InvalidRequest):
            mp.download_range("r.bin", sink, offset, length, if_match=stored.etag)
        assert sink.getvalue() == b""  # refused before anything is written


def test_empty_range_still_checks_the_version(mp: AzureProvider) -> None:
    v1 = put(mp, "r.bin", b"0123456789")
    got = mp.download_range("r.bin", io.BytesIO(), 3, 0, if_match=v1.etag)
    assert (got.size, got.etag) == (10, v1.etag)
    put(mp, "r.bin", b"changed", if_match=v1.etag)
    with pytest.raises(PreconditionFailed):
        mp.download_range("r.bin", io.BytesIO(), 3, 0, if_match=v1.etag)

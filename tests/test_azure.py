"""Azure-only promises of the az:// adapter, against Azurite (the conformance suite in
test_providers.py covers what every provider shares)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, cast

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerSasPermissions, ContentSettings, generate_container_sas
from emulators import AZURITE_ACCOUNT, AZURITE_KEY, Azurite
from emulators import azurite_connection_string as connection_string
from fixtures_azure import AzureContainer
from harness import Setup, syncd
from test_providers import MTIME_NS, OneWayStream, get, listing, put

from syncd.providers import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Provider,
    Throttled,
    Transient,
    UploadRequest,
    azure_listing,
    open_provider,
)
from syncd.providers import azure as azure_module
from syncd.providers.azure import AzureProvider, _translate, should_retry
from syncd.providers.base import ObjectInfo, parse_mtime
from syncd.providers.options import AzureOptions
from syncd.providers.url import parse_remote_url


@pytest.fixture
def provider(azure_container: AzureContainer) -> Iterator[Provider]:
    found = open_provider(
        azure_container.url("p"), {"connection_string": azure_container.connection_string}
    )
    yield found
    found.close()


def test_provider_type(provider: Provider) -> None:
    assert isinstance(provider, AzureProvider)
    assert isinstance(provider, Provider)
    assert provider.capabilities.listing_has_metadata
    assert provider.capabilities.server_side_copy


def test_metadata_is_written_where_other_tools_read_it(
    provider: Provider, azure_container: AzureContainer
) -> None:
    data = b"stamped"
    put(provider, "m.txt", data)

    props = azure_container.client.get_blob_client("p/m.txt").get_blob_properties()
    assert props.metadata["mtime"] == "1700000000.123456789"
    assert props.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert (
        bytes(props.content_settings.content_md5 or b"")
        == hashlib.md5(data, usedforsecurity=False).digest()
    )


@pytest.mark.parametrize(
    "name", ["plain.txt", "a b/c#d?e%f~g&h+i.txt", "\u00e9t\u00e9/\u65e5\u672c.txt"]
)
def test_small_upload_makes_the_blob_the_sdk_would(
    provider: Provider, azure_container: AzureContainer, name: str
) -> None:
    """Small bodies skip BlobClient.upload_blob and go through the container's pipeline
    (`_put_blob`): the blob must be the one upload_blob makes from the same input, under the
    same name."""
    data = b"the same bytes either way"
    md5 = hashlib.md5(data, usedforsecurity=False).digest()
    written = put(provider, name, data)
    reference = azure_container.client.get_blob_client(f"ref/{name}")
    reference.upload_blob(
        data,
        metadata={"mtime": "1700000000.123456789", "sha256": hashlib.sha256(data).hexdigest()},
        content_settings=ContentSettings(content_md5=bytearray(md5)),
        validate_content=True,
    )

    ours = azure_container.client.get_blob_client(f"p/{name}").get_blob_properties()
    theirs = reference.get_blob_properties()
    assert ours.etag.strip('"') == written.etag
    assert ours.last_modified.timestamp() == pytest.approx(written.modified, abs=1)
    for props in (ours, theirs):
        assert props.blob_type == "BlockBlob"
        assert props.size == len(data)
    assert ours.metadata == theirs.metadata
    assert ours.content_settings.content_type == theirs.content_settings.content_type
    assert bytes(ours.content_settings.content_md5 or b"") == md5
    assert bytes(theirs.content_settings.content_md5 or b"") == md5
    assert [blob.name for blob in azure_container.client.list_blobs(name_starts_with="p/")] == [
        f"p/{name}"
    ]
    assert get(provider, name)[0] == data


def test_small_upload_with_a_wrong_md5_is_refused_by_the_service(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct Put Blob carries Content-MD5, so bytes damaged on the way are refused and
    nothing is written (Azure answers Md5Mismatch, Azurite InvalidOperation; both HTTP 400)."""
    real_md5 = hashlib.md5

    def wrong_md5(data: bytes, **kwargs: Any) -> Any:
        return real_md5(data + b"!", **kwargs)

    monkeypatch.setattr(azure_module.hashlib, "md5", wrong_md5)
    with pytest.raises(InvalidRequest, match=r"Md5Mismatch|InvalidOperation \(HTTP 400\)"):
        put(provider, "damaged.txt", b"bytes the service checks")
    monkeypatch.undo()
    assert "damaged.txt" not in listing(provider)


# -- archive tier ---------------------------------------------------------------------------


def test_archived_blob_is_reported_and_never_read(
    provider: Provider, azure_container: AzureContainer
) -> None:
    put(provider, "cold/old.txt", b"frozen")
    azure_container.client.get_blob_client("p/cold/old.txt").set_standard_blob_tier("Archive")

    assert listing(provider)["cold/old.txt"].archived
    assert provider.stat("cold/old.txt").archived
    sink = io.BytesIO()
    with pytest.raises(InvalidRequest, match="Archive tier; rehydrate it first"):
        provider.download("cold/old.txt", sink)
    assert sink.getvalue() == b""


def test_storage_class_option_sets_the_tier(azure_container: AzureContainer) -> None:
    options = {"connection_string": azure_container.connection_string, "storage_class": "Cool"}
    provider = open_provider(azure_container.url("tiered"), options)
    try:
        uploaded = put(provider, "a.txt", b"cool data")
        assert not uploaded.archived
        props = azure_container.client.get_blob_client("tiered/a.txt").get_blob_properties()
        assert props.blob_tier == "Cool"
    finally:
        provider.close()


def test_archive_storage_class_uploads_archived(azure_container: AzureContainer) -> None:
    options = {"connection_string": azure_container.connection_string, "storage_class": "Archive"}
    provider = open_provider(azure_container.url("deep"), options)
    try:
        assert put(provider, "a.txt", b"straight to the archive").archived
        assert provider.stat("a.txt").archived
    finally:
        provider.close()


# -- large bodies: block list ---------------------------------------------------------------

BIG = azure_module.SINGLE_PUT_SIZE + 3 * 1024 * 1024 + 5


def test_large_one_way_body_is_streamed_in_blocks_with_its_md5(
    provider: Provider, azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_module, "BLOCK_SIZE", 4 * 1024 * 1024)
    blob = os.urandom(BIG)
    body = OneWayStream(blob)

    uploaded = provider.upload(
        UploadRequest(
            "big.bin",
            cast(BinaryIO, body),
            len(blob),
            MTIME_NS,
            sha256=hashlib.sha256(blob).hexdigest(),
        )
    )

    assert body.bytes_read == len(blob)
    blocks = azure_container.client.get_blob_client("p/big.bin").get_block_list("committed")[0]
    assert len(blocks) == 3
    md5 = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    assert uploaded.md5 == md5
    stat = provider.stat("big.bin")
    assert stat.md5 == md5
    assert stat.mtime_ns == MTIME_NS
    assert stat.etag == uploaded.etag
    data, info = get(provider, "big.bin", if_match=uploaded.etag)
    assert data == blob
    assert info.etag == uploaded.etag
    assert info.size == len(blob)  # of the whole blob, though it came in several ranges
    assert info.md5 == md5
    assert info.mtime_ns == MTIME_NS


def test_large_conditional_writes_hold_on_the_block_list(provider: Provider) -> None:
    first = os.urandom(BIG)
    v1 = put(provider, "big.bin", first, if_absent=True)

    with pytest.raises(PreconditionFailed):
        put(provider, "big.bin", os.urandom(BIG), if_absent=True)
    with pytest.raises(PreconditionFailed):
        put(provider, "big.bin", os.urandom(BIG), if_match="0x8D000000000000")

    assert get(provider, "big.bin")[0] == first
    second = os.urandom(BIG)
    v2 = put(provider, "big.bin", second, if_match=v1.etag)
    assert get(provider, "big.bin")[0] == second
    assert provider.stat("big.bin").etag == v2.etag != v1.etag


def test_a_create_only_upload_goes_through_blocks_an_abandoned_run_left(
    provider: Provider, azure_container: AzureContainer
) -> None:
    """A block upload cut off (a crash, a file that shrank mid-send) leaves uncommitted blocks
    that no API removes; Azurite then refused a create-only Put Blob of the key as
    BlobAlreadyExists though no blob exists, and the small file never went up. It goes up
    as one committed block, which drops the leftovers; a real blob still refuses it."""
    left = azure_container.client.get_blob_client("p/left.bin")
    left.stage_block(azure_module._block_name(uuid.uuid4().hex, 1), b"old")
    placed = put(provider, "left.bin", b"the file as it is now", if_absent=True)
    assert get(provider, "left.bin")[0] == b"the file as it is now"
    assert provider.stat("left.bin").etag == placed.etag
    _, uncommitted = left.get_block_list("all")
    assert uncommitted == []
    with pytest.raises(PreconditionFailed):
        put(provider, "left.bin", b"a second creator", if_absent=True)


@pytest.mark.parametrize("size", [10, BIG])
def test_body_shorter_than_its_size_is_refused(provider: Provider, size: int) -> None:
    with pytest.raises(InvalidRequest, match="body ended"):
        provider.upload(UploadRequest("short.bin", io.BytesIO(b"x" * (size - 1)), size, MTIME_NS))
    assert listing(provider) == {}


def test_block_size_grows_for_huge_files() -> None:
    assert azure_module._block_size(1) == azure_module.BLOCK_SIZE
    huge = 1024**4  # 1 TiB
    size = azure_module._block_size(huge)
    assert size % (1024 * 1024) == 0
    assert -(-huge // size) <= azure_module.MAX_BLOCKS


# -- copy, delete, missing container --------------------------------------------------------


def test_copy_of_a_missing_source(provider: Provider) -> None:
    with pytest.raises(NotFound):
        provider.copy("no/such.txt", "dst.txt")
    with pytest.raises(PreconditionFailed):
        provider.copy("no/such.txt", "dst.txt", if_match="0x8D000000000000")
    assert listing(provider) == {}


def test_copy_keeps_sha256(provider: Provider) -> None:
    original = put(provider, "a.txt", b"hashed")

    copied = provider.copy("a.txt", ".syncd-trash/a.txt", if_match=original.etag)

    assert copied.sha256 == original.sha256 == hashlib.sha256(b"hashed").hexdigest()
    assert copied.mtime_ns == MTIME_NS


def test_missing_container_is_not_found(azurite: Azurite) -> None:
    provider = open_provider(
        "az://no-such-container/p/", {"connection_string": azurite.connection_string}
    )
    try:
        for call in (
            provider.check,
            lambda: list(provider.list()),
            lambda: provider.stat("k"),
            lambda: provider.delete("k"),  # a missing container is not a deleted blob
            lambda: provider.delete("k", if_match="0x8D000000000000"),
            lambda: put(provider, "k", b"x"),
        ):
            with pytest.raises(NotFound, match="container 'no-such-container' does not exist"):
                call()
    finally:
        provider.close()


def test_blobs_named_like_the_prefix_are_not_listed(
    provider: Provider, azure_container: AzureContainer
) -> None:
    azure_container.write("p", b"a blob named like the prefix")
    azure_container.write("p/", b"")  # the prefix's own folder marker
    azure_container.write("pq/x", b"a sibling")
    put(provider, "mine", b"inside")
    put(provider, "sub/", b"")  # a folder marker below the root is listed, for the engine

    assert set(listing(provider)) == {"mine", "sub/"}


def test_hierarchical_namespace_directories_are_not_listed(
    provider: Provider, azure_container: AzureContainer
) -> None:
    azure_container.write("p/dir", b"", metadata={"hdi_isfolder": "true"})
    azure_container.write("p/dir/file.txt", b"in a directory")

    assert set(listing(provider)) == {"dir/file.txt"}


def test_an_empty_sha256_value_reads_as_none(
    provider: Provider, azure_container: AzureContainer
) -> None:
    """Metadata with an empty value (another tool's, or a hand edit) lists as None: an empty
    sha256 failed the whole listing with an AttributeError."""
    azure_container.write("p/blank.txt", b"blank", metadata={"sha256": "", "mtime": ""})

    listed = listing(provider)["blank.txt"]
    assert (listed.sha256, listed.mtime_ns, listed.size) == (None, None, 5)
    assert provider.stat("blank.txt").sha256 is None


def test_the_mtime_rclone_writes_is_read(
    provider: Provider, azure_container: AzureContainer
) -> None:
    """rclone's azureblob backend writes `mtime` as RFC 3339 (GCS reads it the same way)."""
    azure_container.write("p/utc.txt", b"u", {"mtime": "2023-11-14T22:13:20.123456789Z"})
    azure_container.write("p/zoned.txt", b"z", {"mtime": "2023-11-15T00:13:20.123456789+02:00"})
    azure_container.write("p/coarse.txt", b"c", {"mtime": "1969-12-31T23:59:59.5Z"})
    azure_container.write("p/junk.txt", b"j", {"mtime": "2023-11-14 22:13:20"})

    found = listing(provider)
    assert {key: info.mtime_ns for key, info in found.items()} == {
        "utc.txt": MTIME_NS,
        "zoned.txt": MTIME_NS,
        "coarse.txt": -500_000_000,
        "junk.txt": None,
    }
    assert provider.stat("zoned.txt").mtime_ns == MTIME_NS


def test_a_blob_rclone_wrote_comes_down_with_its_mtime(
    tmp_path: Path, azure_container: AzureContainer
) -> None:
    """Its time, not its upload time, stamps the file, and no pass rewrites the blob."""
    azure_container.write(
        "p/docs/f.txt", b"from rclone", {"mtime": "2020-01-02T03:04:05.123456789Z"}
    )
    blob = azure_container.client.get_blob_client("p/docs/f.txt")
    etag = blob.get_blob_properties().etag
    setup = Setup(
        tmp_path,
        azure_container.url("p"),
        options={"connection_string": azure_container.connection_string},
    )
    setup.write()

    first = syncd("once", "-c", setup.config)
    second = syncd("once", "-c", setup.config)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    local = setup.local / "docs" / "f.txt"
    assert local.read_bytes() == b"from rclone"
    moment = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert local.stat().st_mtime_ns == int(moment.timestamp()) * 1_000_000_000 + 123_456_789
    assert blob.get_blob_properties().etag == etag


# -- listing: List Blobs read with ElementTree (azure_listing), the SDK's listing as fallback --

#: Keys that are awkward in a URL, in XML or in Unicode (Azurite cannot list a name with a
#: character XML 1.0 cannot carry, such as U+0001 or U+FFFE: it answers 500 to the SDK as well;
#: the percent-encoded form Azure sends for those is read in test_parse_page_reads_as_the_sdk).
AWKWARD_KEYS = [
    "plain.txt",
    "caf\u00e9.txt",  # NFC
    "cafe\u0301.txt",  # NFD: another blob
    "with space/and  two spaces.txt",
    "amp&lt<gt>quote\"apos'.txt",
    "100%.txt",
    "%41%2F.txt",  # looks percent-encoded, and is not
    "a+b=c;d,e.txt",
    "hash#frag.txt",
    "what?q=1.txt",
    "tab\tin name.txt",
    "deep/a/b/c/d/e/f/g/h/i.txt",
    "\u65e5\u672c/\U0001f600 emoji.txt",
    "empty.txt",
]


def _reference_info(key: str, props: Any) -> ObjectInfo:
    """What AzureProvider._info built from the SDK's BlobProperties before azure_listing, field
    for field (an empty sha256 metadata value reads as none, rather than failing)."""
    metadata = dict(props.metadata or {})
    status = str(props.archive_status or "")
    sha256 = (metadata.get("sha256") or "").strip().lower()
    md5 = props.content_settings.content_md5
    return ObjectInfo(
        key=key,
        size=int(props.size or 0),
        etag=str(props.etag or "").strip('"'),
        modified=props.last_modified.timestamp() if props.last_modified is not None else 0.0,
        mtime_ns=parse_mtime(metadata.get("mtime")),
        sha256=sha256
        if len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)
        else None,
        md5=bytes(md5).hex() if md5 else None,
        has_metadata=True,
        archived=str(props.blob_tier or "") == "Archive" or status.startswith("rehydrate-pending"),
        origin=metadata.get("syncdorigin"),
    )


def _no_fallback(*args: Any) -> Iterator[Any]:
    """Stands in for azure_listing._sdk_listing where the SDK's listing must not be needed."""
    raise AssertionError("the SDK's listing was used")


def _listing_by_the_sdk(provider: AzureProvider) -> list[ObjectInfo]:
    """The listing as the SDK's list_blobs gives it (the previous AzureProvider.list)."""
    found = []
    prefix = provider.prefix
    for props in provider._container.list_blobs(
        name_starts_with=prefix or None, include=["metadata"]
    ):
        key = props.name[len(prefix) :]
        if key and (props.metadata or {}).get("hdi_isfolder") != "true":
            found.append(_reference_info(key, props))
    return found


def _fill_awkward(provider: Provider, container: AzureContainer, prefix: str) -> None:
    """Blobs of every kind under `prefix`: through the provider (syncd's metadata), raw through
    the SDK (none, or odd metadata), without a Content-MD5, Cool, Archive, and the neighbours a
    listing must leave out."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: put(provider, key, key.encode()), AWKWARD_KEYS[:8]))
    for key in AWKWARD_KEYS[8:]:
        data = b"" if key == "empty.txt" else key.encode()
        container.write(f"{prefix}raw/{key}", data)
    container.write(
        f"{prefix}raw/odd-metadata.txt",
        b"odd",
        metadata={
            "Mtime": "1700000000.5",  # the service keeps the case: not syncd's `mtime`
            "sha256": hashlib.sha256(b"odd").hexdigest().upper(),  # normalised to lower case
            "syncdorigin": "elsewhere",
            "empty": "",
        },
    )
    container.write(f"{prefix}raw/empty-sha256.txt", b"e", metadata={"sha256": "", "mtime": ""})
    container.write(f"{prefix}raw/bad-mtime.txt", b"b", metadata={"mtime": "yesterday"})
    unhashed = container.client.get_blob_client(f"{prefix}raw/no-md5.txt")
    unhashed.stage_block("YmxvY2s=", b"no Content-MD5: a block list states none")
    unhashed.commit_block_list(["YmxvY2s="])
    put(provider, "tiers/cool.txt", b"cool")
    container.client.get_blob_client(f"{prefix}tiers/cool.txt").set_standard_blob_tier("Cool")
    put(provider, "tiers/archive.txt", b"frozen")
    container.client.get_blob_client(f"{prefix}tiers/archive.txt").set_standard_blob_tier("Archive")
    container.write(f"{prefix}dir", b"", metadata={"hdi_isfolder": "true"})
    if prefix:
        container.write(prefix, b"")  # the prefix's own folder marker
        container.write(prefix.rstrip("/"), b"a blob named like the prefix")
        container.write(prefix.rstrip("/") + "q/x", b"a sibling")


@pytest.mark.parametrize("prefix", ["", "p/", "p\u00e9 &+%/deeper/"])
def test_listing_reads_what_the_sdk_reads(
    azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """Item for item what the SDK's list_blobs and _info gave, over several pages (the markers
    followed), with the prefix quoted in the request; all of it read by azure_listing."""
    provider = open_provider(
        azure_container.url(prefix), {"connection_string": azure_container.connection_string}
    )
    assert isinstance(provider, AzureProvider)
    assert provider.prefix == prefix
    try:
        _fill_awkward(provider, azure_container, prefix)
        pages = 0
        parse_page = azure_listing.parse_page

        def counted(body: bytes) -> Any:
            nonlocal pages
            pages += 1
            return parse_page(body)

        monkeypatch.setattr(azure_listing, "parse_page", counted)
        monkeypatch.setattr(azure_listing, "_sdk_listing", _no_fallback)
        monkeypatch.setattr(azure_module, "PAGE_SIZE", 4)

        fast = list(provider.list())
        expected = _listing_by_the_sdk(provider)
        assert fast == expected
        assert len(fast) == len(AWKWARD_KEYS) + 6
        assert pages >= len(fast) // 4 >= 5
        assert len({info.key for info in fast}) == len(fast)
        keys = {info.key for info in fast}
        assert {"caf\u00e9.txt", "cafe\u0301.txt", "%41%2F.txt", "raw/empty.txt"} <= keys
        assert "" not in keys
        assert "dir" not in keys

        by_key = {info.key: info for info in fast}
        assert by_key["caf\u00e9.txt"].mtime_ns == MTIME_NS
        assert by_key["caf\u00e9.txt"].sha256 == hashlib.sha256(b"caf\xc3\xa9.txt").hexdigest()
        assert (
            by_key["caf\u00e9.txt"].md5
            == hashlib.md5("caf\u00e9.txt".encode(), usedforsecurity=False).hexdigest()
        )
        assert by_key["raw/no-md5.txt"].md5 is None
        assert by_key["raw/empty.txt"].size == 0
        odd = by_key["raw/odd-metadata.txt"]
        assert (odd.mtime_ns, odd.origin) == (None, "elsewhere")
        assert odd.sha256 == hashlib.sha256(b"odd").hexdigest()
        assert by_key["raw/empty-sha256.txt"].sha256 is None
        assert by_key["tiers/archive.txt"].archived
        assert not by_key["tiers/cool.txt"].archived
    finally:
        provider.close()


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        (1, ET.ParseError("not the XML expected")),  # the first page
        (2, azure_listing.NotUnderstood("a shape not known")),
        (3, AttributeError("another SDK version")),
        (4, ImportError("another SDK version")),  # the last page
        (2, ValueError("a field that does not read")),
    ],
)
def test_a_page_not_understood_is_listed_by_the_sdk_from_its_marker(
    provider: Provider, monkeypatch: pytest.MonkeyPatch, failing: int, error: Exception
) -> None:
    """The fallback takes over at the page the reader failed on, from that page's marker:
    every blob once, none twice, in order, as the SDK lists them."""
    assert isinstance(provider, AzureProvider)
    keys = [f"k{i:02d}" for i in range(11)]
    for key in keys:
        put(provider, key, key.encode())
    monkeypatch.setattr(azure_module, "PAGE_SIZE", 3)  # 4 pages
    parse_page = azure_listing.parse_page
    sdk_listing = azure_listing._sdk_listing
    calls = 0
    markers: list[str | None] = []

    def failing_parse(body: bytes) -> Any:
        nonlocal calls
        calls += 1
        if calls == failing:
            raise error
        return parse_page(body)

    def spied(container: Any, prefix: str, marker: str | None, size: int) -> Any:
        markers.append(marker)
        return sdk_listing(container, prefix, marker, size)

    monkeypatch.setattr(azure_listing, "parse_page", failing_parse)
    monkeypatch.setattr(azure_listing, "_sdk_listing", spied)
    found = list(provider.list())
    assert [info.key for info in found] == keys
    assert found == _listing_by_the_sdk(provider)
    assert calls == failing  # no page is read by both
    assert len(markers) == 1
    assert (markers[0] is None) == (failing == 1)


def test_an_answer_other_than_200_is_left_to_the_sdk(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled page (503) in the middle of a listing: the SDK's listing asks again from
    that page's marker (and would raise its own, mapped error if it failed as well)."""
    assert isinstance(provider, AzureProvider)
    for key in ("a", "b", "c", "d", "e"):
        put(provider, key, key.encode())
    monkeypatch.setattr(azure_module, "PAGE_SIZE", 2)
    real = provider._pipeline
    runs = 0

    class Throttled503:
        status_code = 503
        headers: ClassVar = {"Content-Type": "application/xml", "x-ms-error-code": "ServerBusy"}

    class Answer:
        http_response = Throttled503()

    class Flaky:
        def run(self, request: Any, **kwargs: Any) -> Any:
            nonlocal runs
            runs += 1
            return Answer() if runs == 2 else real.run(request, **kwargs)

    monkeypatch.setattr(provider, "_pipeline", Flaky())
    assert [info.key for info in provider.list()] == ["a", "b", "c", "d", "e"]
    assert runs == 2  # the rest went through the SDK's own client


def test_a_transport_error_is_not_a_reason_to_fall_back(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection is the SDK's own error (its listing would meet the same): it is
    translated as before, without a second attempt through the SDK."""
    from emulators import free_port

    monkeypatch.setattr(azure_listing, "_sdk_listing", _no_fallback)
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    provider = open_provider(
        "az://some-container/", {"connection_string": connection_string(endpoint)}
    )
    try:
        with pytest.raises(Transient):
            list(provider.list())
    finally:
        provider.close()


@pytest.mark.parametrize("prefix", ["", "p/", "p\u00e9 &+%#?/"])
@pytest.mark.parametrize(
    "marker",
    [None, "2!96!MDAwMDE5IXAvY2Fmw6kudHh0ITAwMDAyOCE5OTk5LTEyLTMxVDIzOjU5OjU5Ljk5OTk5OTlaIQ--"],
)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:10000/devstoreaccount1/c",
        "https://acct.blob.core.windows.net/c?sv=2024-08-04&sr=c&sig=a%2Bb%3D&sp=rl",
    ],
)
def test_list_request_is_the_sdks(url: str, prefix: str, marker: str | None) -> None:
    """The request the SDK's generated client builds for list_blobs, query and headers."""
    from azure.storage.blob._generated.operations._container_operations import (
        build_list_blob_flat_segment_request,
    )

    theirs = build_list_blob_flat_segment_request(
        url=url,
        version="2025-11-05",
        prefix=prefix or None,
        marker=marker,
        maxresults=1000,
        include=["metadata"],
        timeout=None,
    )
    ours = azure_listing.list_request(url, "2025-11-05", prefix, marker, 1000)
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert dict(ours.headers) == dict(theirs.headers)


#: One List Blobs answer as Azure writes it, with what Azurite never sends: names XML cannot
#: carry (percent-encoded, Encoded="true"), a name that only looks encoded, empty elements,
#: a metadata entry named like the Metadata element's attribute, an invalid metadata name,
#: a pending rehydration, a date with an offset, no Last-Modified at all.
AZURE_PAGE = b"""\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://a.blob.core.windows.net/" ContainerName="c">
<Prefix>p/</Prefix><Marker /><MaxResults>5000</MaxResults><Blobs>
<Blob><Name Encoded="true">p/ctl%01%EF%BF%BE%25.txt</Name><Properties>
<Creation-Time>Tue, 24 Nov 2026 10:00:00 GMT</Creation-Time>
<Last-Modified>Tue, 24 Nov 2026 10:00:01 GMT</Last-Modified><Etag>0x8DE0000000000A1</Etag>
<Content-Length>12</Content-Length><Content-Type>application/octet-stream</Content-Type>
<Content-Encoding /><Content-Language /><Content-CRC64 />
<Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5><Cache-Control /><Content-Disposition />
<BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>
<LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>
<ServerEncrypted>true</ServerEncrypted></Properties>
<Metadata><mtime>1700000000.123456789</mtime>
<sha256>E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855</sha256>
<syncdorigin>host-1</syncdorigin></Metadata><OrMetadata /></Blob>
<Blob><Name Encoded="false">p/%41 plain</Name><Properties>
<Last-Modified>Tue, 24 Nov 2026 11:00:01 +0100</Last-Modified><Etag>"0x8DE0000000000A2"</Etag>
<Content-Length>0</Content-Length><Content-MD5 /><BlobType>BlockBlob</BlobType>
<AccessTier>Archive</AccessTier><ArchiveStatus>rehydrate-pending-to-hot</ArchiveStatus>
</Properties><Metadata Encrypted="false"><Encrypted>x</Encrypted><sha256 />
<x-ms-invalid-name>bad-name</x-ms-invalid-name></Metadata></Blob>
<Blob><Name>p/rehydrating</Name><Properties><Etag /><Content-Length>7</Content-Length>
<BlobType>PageBlob</BlobType>
<AccessTier /><ArchiveStatus>rehydrate-pending-to-cool</ArchiveStatus></Properties></Blob>
<Blob><Name>p/archived</Name><Properties>
<Last-Modified>Tue, 24 Nov 2026 10:00:03 GMT</Last-Modified><Etag>0x8DE0000000000A4</Etag>
<Content-Length>3</Content-Length><AccessTier>Archive</AccessTier>
<BlobType>AppendBlob</BlobType></Properties><Metadata /></Blob>
</Blobs><NextMarker>2!96!bWFya2Vy</NextMarker></EnumerationResults>"""


def test_parse_page_reads_as_the_sdk() -> None:
    """azure_listing.parse_page against the SDK's deserializer on the same answer."""
    from azure.storage.blob._deserialize import get_blob_properties_from_generated_code
    from azure.storage.blob._generated import models
    from azure.storage.blob._generated._utils.serialization import Deserializer

    deserialize = Deserializer({k: v for k, v in vars(models).items() if isinstance(v, type)})
    answer = deserialize(
        "ListBlobsFlatSegmentResponse",
        ET.fromstring(AZURE_PAGE.decode("utf-8-sig")),  # noqa: S314
    )
    theirs = [get_blob_properties_from_generated_code(item) for item in answer.segment.blob_items]

    blobs, next_marker = azure_listing.parse_page(AZURE_PAGE)
    assert next_marker == answer.next_marker == "2!96!bWFya2Vy"
    assert [blob.name for blob in blobs] == [props.name for props in theirs]
    assert blobs[0].name == "p/ctl\x01\ufffe%.txt"
    assert blobs[1].name == "p/%41 plain"
    ours = [AzureProvider._listed_info(blob.name[2:], blob) for blob in blobs]
    assert ours == [_reference_info(props.name[2:], props) for props in theirs]
    assert [info.archived for info in ours] == [False, True, True, True]
    assert ours[0].md5 == hashlib.md5(b"", usedforsecurity=False).hexdigest()
    assert (ours[0].mtime_ns, ours[0].origin) == (MTIME_NS, "host-1")
    assert ours[0].sha256 == hashlib.sha256(b"").hexdigest()
    assert ours[1].modified == ours[0].modified  # 11:00:01 +0100 is 10:00:01 GMT
    assert (ours[2].modified, ours[2].etag, ours[2].md5) == (0.0, "", None)
    assert (
        blobs[1].metadata == theirs[1].metadata == {"sha256": None, "x-ms-invalid-name": "bad-name"}
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<Error><Code>ServerBusy</Code></Error>",
        b"<EnumerationResults><NextMarker /></EnumerationResults>",  # no Blobs
        b"<EnumerationResults><Blobs><BlobPrefix><Name>p/</Name></BlobPrefix></Blobs></EnumerationResults>",
        b"<EnumerationResults><Blobs><Blob><Properties /></Blob></Blobs></EnumerationResults>",
        b"<EnumerationResults><Blobs><Blob><Name>k</Name></Blob></Blobs></EnumerationResults>",
        b'<EnumerationResults><Blobs><Blob><Name Encoded="maybe">k</Name><Properties />'
        b"</Blob></Blobs></EnumerationResults>",
        b"<EnumerationResults><Blobs><Blob><Name>k</Name><Properties><Content-Length>ten"
        b"</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
        b"<EnumerationResults><Blobs><Blob><Name>k</Name><Properties><Last-Modified>soon"
        b"</Last-Modified></Properties></Blob></Blobs></EnumerationResults>",
        b"<EnumerationResults><Blobs><Blob><Name>k</Name><Properties><Content-MD5>abc"
        b"</Content-MD5></Properties></Blob></Blobs></EnumerationResults>",
    ],
)
def test_parse_page_refuses_what_it_does_not_know(body: bytes) -> None:
    """Each of these sends the listing to the SDK (azure_listing.list_blobs catches them)."""
    with pytest.raises((azure_listing.NotUnderstood, *azure_listing._NOT_UNDERSTOOD)):
        azure_listing.parse_page(body)


# -- credentials ----------------------------------------------------------------------------


def test_connection_string_variable_is_honoured(azure_container: AzureContainer) -> None:
    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azure_container.connection_string
    provider = open_provider(azure_container.url("via-env"), {})
    try:
        provider.check()
        put(provider, "k.txt", b"through the variable")
    finally:
        provider.close()
    props = azure_container.client.get_blob_client("via-env/k.txt").get_blob_properties()
    assert props.size == len(b"through the variable")


def test_options_beat_the_variable(
    azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=elsewhere;AccountKey=eA==")
    provider = open_provider(
        azure_container.url("p"), {"connection_string": azure_container.connection_string}
    )
    try:
        provider.check()
    finally:
        provider.close()


def test_account_url_with_account_key(azure_container: AzureContainer) -> None:
    provider = open_provider(
        azure_container.url("p"),
        {
            "account_url": azure_container.blob_endpoint,
            "account_name": AZURITE_ACCOUNT,
            "account_key": AZURITE_KEY,
        },
    )
    try:
        provider.check()
        v1 = put(provider, "k.txt", b"keyed")
        assert provider.stat("k.txt").etag == v1.etag
    finally:
        provider.close()


def _container_sas(azure_container: AzureContainer) -> str:
    """A SAS for everything syncd does in the container, valid for an hour."""
    return generate_container_sas(
        AZURITE_ACCOUNT,
        azure_container.container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def test_account_url_with_a_container_sas(
    azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sas = _container_sas(azure_container)
    provider = open_provider(
        azure_container.url("p"), {"account_url": azure_container.blob_endpoint, "sas_token": sas}
    )
    try:
        provider.check()
        original = put(provider, "s.txt", b"shared access")
        copied = provider.copy("s.txt", "copy.txt", if_match=original.etag)  # source URL + SAS
        assert copied.mtime_ns == MTIME_NS
        assert get(provider, "copy.txt")[0] == b"shared access"
        provider.delete("s.txt", if_match=original.etag)
        # Listed by azure_listing, the SAS merged into its request's query, with no fallback.
        monkeypatch.setattr(azure_listing, "_sdk_listing", _no_fallback)
        assert set(listing(provider)) == {"copy.txt"}
    finally:
        provider.close()


def test_an_account_url_that_carries_its_sas(
    azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SAS URL form (`account_url: https://ACCOUNT.blob.core.windows.net/?sv=…&sig=…`, as
    the portal hands it out): a token credential was set on top, which the SDK refuses over
    http ("an http:// account URL needs options.account_key…", exit 2) and which needs an
    Azure identity over https. The URL's own SAS signs every request."""
    sas = _container_sas(azure_container)
    provider = open_provider(
        azure_container.url("p"), {"account_url": f"{azure_container.blob_endpoint}?{sas}"}
    )
    try:
        provider.check()
        written = put(provider, "s.txt", b"signed by the URL")
        assert get(provider, "s.txt")[0] == b"signed by the URL"
        monkeypatch.setattr(azure_listing, "_sdk_listing", _no_fallback)
        assert set(listing(provider)) == {"s.txt"}
        provider.delete("s.txt", if_match=written.etag)
        assert set(listing(provider)) == set()
    finally:
        provider.close()


def test_a_key_that_is_not_base64_is_refused_where_the_client_is_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK decodes the key to sign each request: one it cannot decode was found at the
    first request (PermissionDenied, exit 1, naming no option), where a malformed connection
    string is refused when the client is set up, naming it. So is the key now. A SAS given
    beside it is used instead (the key signs nothing): no refusal then."""
    endpoint = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"
    with pytest.raises(InvalidRequest) as caught:
        open_provider("az://c-c-c/", {"account_url": endpoint, "account_key": "not base64!!"})
    assert (
        str(caught.value) == "options.account_key: the account key is not valid (base64 expected)"
    )
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", "not base64!!")
    with pytest.raises(InvalidRequest) as caught:
        open_provider("az://c-c-c/")
    assert str(caught.value) == (
        "the AZURE_STORAGE_KEY variable: the account key is not valid (base64 expected)"
    )
    options = {"account_url": endpoint, "account_key": "not base64!!", "sas_token": "sv=x"}
    open_provider("az://c-c-c/", options).close()
    open_provider("az://c-c-c/", {"account_url": endpoint, "account_key": AZURITE_KEY}).close()


@pytest.mark.parametrize("command", ["check", "once"])
def test_a_key_that_is_not_base64_names_the_pair_and_key(tmp_path: Path, command: str) -> None:
    """A config error (exit 2) naming `pairs[N].options.account_key`, as a malformed
    connection string is, and never the key itself."""
    (tmp_path / "files").mkdir()
    (tmp_path / "boxes").mkdir()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"state: sqlite:///{tmp_path / 'state.db'}\nsocket: {tmp_path / 's.sock'}\npairs:\n"
        f"  - {{name: files, local: {tmp_path / 'files'}, remote: 'file://{tmp_path / 'r'}'}}\n"
        f"  - {{name: boxes, local: {tmp_path / 'boxes'}, remote: 'az://box/',\n"
        "      options: {account_url: 'http://127.0.0.1:9/devstoreaccount1',\n"
        "                account_key: 'SECRETX not b64!'}}\n"
    )
    done = syncd(command, "-c", config, timeout=60)
    assert done.returncode == 2 and "SECRETX" not in done.stdout + done.stderr
    problem = "pairs[1].options.account_key: the account key is not valid (base64 expected)"
    if command == "check":
        assert f"FAIL\tboxes\taz://box/\t{problem}" in done.stdout.splitlines(), done.stdout
    else:
        assert done.stderr == f"syncd: pair 'boxes': {problem}\n"


def test_a_key_that_is_not_base64_is_a_config_error_in_the_api(tmp_path: Path) -> None:
    from syncd import ConfigError, Engine

    (tmp_path / "boxes").mkdir()
    data = {
        "state": f"sqlite:///{tmp_path / 'state.db'}",
        "socket": str(tmp_path / "s.sock"),
        "pairs": [
            {
                "name": "boxes",
                "local": str(tmp_path / "boxes"),
                "remote": "az://box/",
                "options": {
                    "account_url": "http://127.0.0.1:9/devstoreaccount1",
                    "account_key": "SECRETX not b64!",
                },
            }
        ],
    }
    with pytest.raises(ConfigError) as caught:
        Engine.from_config_dict(data)
    assert str(caught.value) == (
        "pair 'boxes': pairs[0].options.account_key: the account key is not valid (base64 expected)"
    )


def test_wrong_key_is_permission_denied_and_never_printed(azurite: Azurite) -> None:
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    provider = open_provider(
        "az://some-container/p/",
        {"connection_string": connection_string(azurite.blob_endpoint, wrong_key)},
    )
    try:
        for call in (
            provider.check,
            lambda: list(provider.list()),
            lambda: provider.stat("k"),
            lambda: put(provider, "k", b"x"),
        ):
            with pytest.raises(PermissionDenied) as caught:
                call()
            assert wrong_key not in str(caught.value)
            assert "V3Jvbm" not in str(caught.value)
    finally:
        provider.close()


def test_unreachable_endpoint_is_transient(azurite: Azurite) -> None:
    from emulators import free_port

    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    provider = open_provider(
        "az://some-container/", {"connection_string": connection_string(endpoint)}
    )
    try:
        with pytest.raises(Transient) as caught:
            provider.check()
        assert should_retry(caught.value)
        assert AZURITE_KEY[:12] not in str(caught.value)
    finally:
        provider.close()


def test_malformed_connection_string_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequest) as caught:
        open_provider("az://c-c-c/", {"connection_string": "not a connection string SECRETX"})
    assert str(caught.value) == (
        "options.connection_string: the Azure connection string is malformed "
        "(cannot set up the Azure client)"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "junk SECRETX")
    with pytest.raises(InvalidRequest) as caught:
        open_provider("az://c-c-c/")
    assert str(caught.value).startswith(
        "the AZURE_STORAGE_CONNECTION_STRING variable: the Azure connection string is malformed"
    )
    assert "SECRETX" not in str(caught.value)


def test_a_plain_http_account_url_without_a_key_says_what_it_lacks(azurite: Azurite) -> None:
    """`account_url: http://…` (Azurite) without a key or SAS: the SDK refuses to send the
    token of DefaultAzureCredential over http, and syncd called the URL "malformed", though
    it was right and reachable. It now says what is missing; with the key it works."""
    url = azurite.blob_endpoint
    assert url.startswith("http://")
    with pytest.raises(InvalidRequest) as caught:
        open_provider("az://c-c-c/", {"account_url": url})
    assert str(caught.value) == (
        "options.account_url: an http:// account URL needs options.account_key or "
        "options.sas_token (a token credential is sent over https only)"
    )
    provider = open_provider("az://c-c-c/", {"account_url": url, "account_key": AZURITE_KEY})
    provider.close()


@pytest.mark.parametrize("command", ["once", "run", "check"])
def test_a_malformed_connection_string_names_the_pair_and_key(tmp_path: Path, command: str) -> None:
    """In a config of several pairs, the one line says which pair and which key."""
    (tmp_path / "files").mkdir()
    (tmp_path / "boxes").mkdir()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"state: sqlite:///{tmp_path / 'state.db'}\nsocket: {tmp_path / 's.sock'}\npairs:\n"
        f"  - {{name: files, local: {tmp_path / 'files'}, remote: 'file://{tmp_path / 'r'}'}}\n"
        f"  - {{name: boxes, local: {tmp_path / 'boxes'}, remote: 'az://box/',\n"
        "      options: {connection_string: 'not a connection string SECRETX'}}\n"
    )
    done = syncd(command, "-c", config, timeout=60)
    assert done.returncode == 2 and "SECRETX" not in done.stdout + done.stderr
    problem = "the Azure connection string is malformed (cannot set up the Azure client)"
    if command == "check":  # a line per pair, the pair in its own column
        line = f"FAIL\tboxes\taz://box/\tpairs[1].options.connection_string: {problem}"
        assert line in done.stdout.splitlines(), done.stdout
    else:
        assert done.stderr == (
            f"syncd: pair 'boxes': pairs[1].options.connection_string: {problem}\n"
        )


def test_no_account_at_all_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    with pytest.raises(InvalidRequest, match="no Azure account configured"):
        AzureProvider(parse_remote_url("az://c-c-c/"), AzureOptions())


def test_unknown_option_names_the_key() -> None:
    with pytest.raises(InvalidRequest, match=r"options\.endpoint_url"):
        open_provider("az://c-c-c/", {"endpoint_url": "http://x"})


# -- error translation (answers the emulator cannot produce on demand) ----------------------


class _Response:
    """Just enough of an azure-core HTTP response for HttpResponseError."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.content_type = "application/xml"

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


def _http_error(
    status: int,
    code: str,
    headers: dict[str, str] | None = None,
    cls: type[HttpResponseError] = HttpResponseError,
) -> HttpResponseError:
    response: Any = _Response(status, headers)
    error = cls(message="m", response=response)
    error.error_code = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("exc", "conditional", "expected"),
    [
        (_http_error(503, "ServerBusy"), False, Throttled),
        (_http_error(429, ""), False, Throttled),
        (_http_error(500, "InternalError"), False, Transient),
        (_http_error(500, "OperationTimedOut"), False, Transient),
        (_http_error(504, ""), False, Transient),
        (_http_error(412, "ConditionNotMet", cls=ResourceModifiedError), True, PreconditionFailed),
        (_http_error(412, "SourceConditionNotMet"), True, PreconditionFailed),
        (_http_error(409, "BlobAlreadyExists", cls=ResourceExistsError), True, PreconditionFailed),
        (_http_error(409, "PendingCopyOperation"), True, PreconditionFailed),
        (_http_error(409, "LeaseIdMissing"), False, InvalidRequest),
        (_http_error(404, "BlobNotFound", cls=ResourceNotFoundError), True, PreconditionFailed),
        (_http_error(404, "BlobNotFound", cls=ResourceNotFoundError), False, NotFound),
        (_http_error(404, "ContainerNotFound", cls=ResourceNotFoundError), False, NotFound),
        (_http_error(409, "BlobArchived", cls=ResourceExistsError), False, InvalidRequest),
        (_http_error(403, "AuthorizationFailure"), False, PermissionDenied),
        (
            _http_error(403, "AuthenticationFailed", cls=ClientAuthenticationError),
            False,
            PermissionDenied,
        ),
        (ClientAuthenticationError("DefaultAzureCredential failed"), False, PermissionDenied),
        (_http_error(400, "InvalidHeaderValue"), False, InvalidRequest),
        (ServiceRequestError("connection refused"), False, Transient),
        (ServiceResponseError("connection reset"), False, Transient),
        (IncompleteReadError("cut short"), False, Transient),
        (HttpResponseError(message="no answer"), False, Transient),  # no status, no code
    ],
)
def test_translate(exc: Exception, conditional: bool, expected: type[Exception]) -> None:
    error = _translate(exc, "az://c/k", container="c", conditional=conditional)
    assert isinstance(error, expected)
    assert should_retry(error) == (expected in (Throttled, Transient))


def test_throttling_carries_retry_after() -> None:
    error = _translate(_http_error(503, "ServerBusy", {"Retry-After": "7"}), "w", container="c")
    assert isinstance(error, Throttled)
    assert error.retry_after == 7.0


def test_transport_messages_are_redacted() -> None:
    exc: Any = ServiceRequestError(
        "Max retries exceeded with url: /c/k?sv=2021&sig=SECRETSIG (AccountKey=SECRETKEY;x)"
    )
    message = str(_translate(exc, "az://c/k", container="c"))
    assert "SECRETSIG" not in message
    assert "SECRETKEY" not in message
    assert message.startswith("az://c/k: ")


def test_check_without_azure_credentials_is_one_line(tmp_path: Path) -> None:
    """No key, SAS or connection string: DefaultAzureCredential tries each credential it
    knows and warned about every one (a screenful of SDK advice on stderr) before syncd's
    own one-line verdict. Only the verdict is shown."""
    (tmp_path / "local").mkdir()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"state: sqlite:///{tmp_path}/state.db\n"
        f"socket: {tmp_path}/syncd.sock\n"
        "pairs:\n"
        f"  - {{name: a, local: {tmp_path}/local, remote: 'az://cont/p',\n"
        "     options: {account_url: 'https://127.0.0.1:9/devstoreaccount1'}}\n"
    )
    env = {name: "" for name in os.environ if name.startswith("AZURE_")}
    done = syncd("check", "-c", config, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.splitlines() == [
        "FAIL\ta\taz://cont/p\taz://cont/p/: no usable Azure credentials found"
    ]

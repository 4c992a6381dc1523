"""Azure-only promises of the az:// adapter, against Azurite (the conformance suite in
test_providers.py covers what every provider shares)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

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
from harness import syncd
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
    open_provider,
)
from syncd.providers import azure as azure_module
from syncd.providers.azure import AzureProvider, _translate, should_retry
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


def test_account_url_with_a_container_sas(azure_container: AzureContainer) -> None:
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        azure_container.container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
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
        assert set(listing(provider)) == {"copy.txt"}
    finally:
        provider.close()


def test_key_that_is_not_base64_is_permission_denied(azure_container: AzureContainer) -> None:
    provider = open_provider(
        azure_container.url("p"),
        {"account_url": azure_container.blob_endpoint, "account_key": "not base64!!"},
    )
    try:
        with pytest.raises(PermissionDenied, match="account key is not valid") as caught:
            provider.check()
        assert "base64!!" not in str(caught.value)
    finally:
        provider.close()


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

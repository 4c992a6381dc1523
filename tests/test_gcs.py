"""GCS-only tests: what the conformance suite (test_providers.py) cannot say for every backend.

Run against the session's fake-gcs-server (fixtures_gcs.py); the error translation is tested on
constructed exceptions, since the emulator cannot produce throttling or server faults on demand.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import google.auth
import google.auth.exceptions
import pytest
import requests
from emulators import Emulator, free_port
from fixtures_gcs import GCSBucket
from google.api_core import exceptions as api_exceptions
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.exceptions import InvalidResponse as MediaInvalidResponse
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
from syncd.providers.gcs import CHUNK_SIZE, BucketMissing, GCSProvider, _translate, should_retry


@pytest.fixture
def gcs(gcs_bucket: GCSBucket) -> Iterator[Any]:
    provider = open_provider(gcs_bucket.url("p"), {}, workers=16)
    yield provider
    provider.close()


def test_gcs_provider_type(gcs: Provider) -> None:
    assert isinstance(gcs, GCSProvider)
    assert isinstance(gcs, Provider)
    assert gcs.capabilities.listing_has_metadata
    assert gcs.capabilities.server_side_copy


def test_connection_pool_is_sized_for_the_workers(gcs: GCSProvider) -> None:
    adapter = gcs._client._http.get_adapter("http://127.0.0.1/")
    assert adapter._pool_maxsize == 32


def test_conditional_delete_sends_the_generation(
    gcs: Provider, gcs_bucket: GCSBucket, gcs_server: Emulator
) -> None:
    """fake-gcs-server ignores ifGenerationMatch on DELETE (test_delete_if_match is a strict
    xfail for gcs), so check what went over the wire, in the emulator's request log."""
    v1 = put(gcs, "x/del.txt", b"one")
    gcs.delete("x/del.txt", if_match=v1.etag)

    lines = [
        line
        for line in gcs_server.log_path.read_text(errors="replace").splitlines()
        if f"DELETE /storage/v1/b/{gcs_bucket.bucket}/o/p%2Fx%2Fdel.txt?" in line
    ]
    assert len(lines) == 1
    assert f"ifGenerationMatch={v1.etag}" in lines[0]
    with pytest.raises(NotFound):
        gcs.stat("x/del.txt")


def test_delete_with_a_foreign_token_refuses_an_existing_object(gcs: Provider) -> None:
    put(gcs, "k", b"data")
    with pytest.raises(PreconditionFailed):
        gcs.delete("k", if_match="0123456789abcdef0123456789abcdef")  # an S3 ETag, say
    assert get(gcs, "k")[0] == b"data"
    with pytest.raises(PreconditionFailed):
        put(gcs, "k", b"other", if_match="not-a-generation")


def test_object_carries_the_metadata(gcs: Provider, gcs_bucket: GCSBucket) -> None:
    data = b"payload"
    info = put(gcs, "m.txt", data)

    blob = gcs_bucket.get("p/m.txt")
    assert blob.metadata == {
        "mtime": "1700000000.123456789",
        "goog-reserved-file-mtime": "1700000000",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert info.etag == str(blob.generation)
    assert info.md5 == hashlib.md5(data).hexdigest()  # noqa: S324 - GCS states MD5
    assert listing(gcs)["m.txt"].has_metadata


def test_mtime_of_other_tools_is_read(gcs: Provider, gcs_bucket: GCSBucket) -> None:
    gcs_bucket.write("p/rclone.txt", b"r", {"mtime": "2023-11-14T22:13:20.123456789Z"})
    gcs_bucket.write("p/gsutil.txt", b"g", {"goog-reserved-file-mtime": "1700000000"})
    gcs_bucket.write("p/junk.txt", b"j", {"mtime": "yesterday"})

    found = listing(gcs)
    assert found["rclone.txt"].mtime_ns == MTIME_NS
    assert found["gsutil.txt"].mtime_ns == 1_700_000_000_000_000_000
    assert found["junk.txt"].mtime_ns is None
    assert gcs.stat("rclone.txt").mtime_ns == MTIME_NS


def test_large_one_way_body_goes_resumable(gcs: Provider) -> None:
    """Above 8 MiB the SDK uploads in chunks and asks the body for tell(); a pipe has none."""
    blob = os.urandom(CHUNK_SIZE + 4 * 1024 * 1024 + 3)
    body = OneWayStream(blob)
    uploaded = gcs.upload(
        UploadRequest(
            "big.bin",
            cast(BinaryIO, body),
            len(blob),
            MTIME_NS,
            sha256=hashlib.sha256(blob).hexdigest(),
        )
    )

    assert body.bytes_read == len(blob)
    data, info = get(gcs, "big.bin")
    assert data == blob
    assert info.etag == uploaded.etag
    assert info.md5 == hashlib.md5(blob).hexdigest()  # noqa: S324
    assert info.mtime_ns == MTIME_NS


def test_a_chunk_that_cannot_be_sent_never_quotes_the_session_url(
    gcs: GCSProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above 8 MiB the SDK opens a resumable session; its chunks go to the session's URL,
    whose `upload_id` is a credential of its own. When the network fails under a chunk, the
    error (logs, status, the audit trail) must not carry it. Here the chunks are sent to a
    port nobody listens on, so requests raises its own error, naming the URL."""
    http = gcs._client._http
    original = http.request
    port = free_port()
    sessions: list[str] = []

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "PUT" and "upload_id=" in url:
            sessions.append(url)
            url = urllib.parse.urlsplit(url)._replace(netloc=f"127.0.0.1:{port}").geturl()
        return original(method, url, *args, **kwargs)

    monkeypatch.setattr(http, "request", request)
    blob = os.urandom(8 * 1024 * 1024 + 3)

    with pytest.raises(Transient) as caught:
        gcs.upload(UploadRequest("big.bin", io.BytesIO(blob), len(blob), MTIME_NS))

    assert sessions, "the upload never reached its session"
    upload_id = urllib.parse.parse_qs(urllib.parse.urlsplit(sessions[0]).query)["upload_id"][0]
    message = str(caught.value)
    assert upload_id not in message
    assert "upload_id" not in message
    assert "ConnectionError" in message
    assert f"port={port}" in message  # the host stays: it says where the network failed


def test_short_body_is_invalid(gcs: Provider) -> None:
    with pytest.raises(InvalidRequest):
        gcs.upload(UploadRequest("short", io.BytesIO(b"abc"), 10, MTIME_NS))
    with pytest.raises(NotFound):
        gcs.stat("short")


def test_storage_class_option(gcs_bucket: GCSBucket) -> None:
    """Uploads take the pair's class; so do server-side copies (a local rename is one), which
    GCS gives the bucket's default class (a file renamed in a NEARLINE pair went STANDARD):
    the copy is rewritten in place to the pair's class, its metadata whole. fake-gcs-server
    ignores a class on rewrites (and copies), so here the request is what is checked."""
    provider = open_provider(gcs_bucket.url("p"), {"storage_class": "NEARLINE"})
    assert isinstance(provider, GCSProvider)
    session = provider._client._http
    real = session.request
    rewrites: list[Any] = []

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if "/rewriteTo/" in url:
            target = url.partition("/rewriteTo/")[2].partition("?")[0]
            rewrites.append((target, kwargs.get("data")))
        return real(method, url, *args, **kwargs)

    session.request = request
    try:
        sent = put(provider, "cold.txt", b"rarely read")
        moved = provider.copy("cold.txt", "renamed.txt", if_match=sent.etag)
    finally:
        provider.close()
    assert gcs_bucket.get("p/cold.txt").storage_class == "NEARLINE"
    ((target, body),) = rewrites
    assert target == f"b/{gcs_bucket.bucket}/o/p%2Frenamed.txt"
    assert json.loads(body)["storageClass"] == "NEARLINE"
    copied = gcs_bucket.get("p/renamed.txt")
    assert copied.metadata == gcs_bucket.get("p/cold.txt").metadata
    assert (moved.sha256, moved.mtime_ns) == (sent.sha256, sent.mtime_ns)
    assert moved.etag == str(copied.generation)


def test_copy_refuses_a_missing_source(gcs: Provider) -> None:
    with pytest.raises(NotFound):
        gcs.copy("absent.txt", "trash/absent.txt")


def test_missing_bucket_is_not_found(gcs_server: Emulator) -> None:
    provider = open_provider("gs://no-such-bucket-here/p/", {})
    try:
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            provider.check()
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            list(provider.list())
        with pytest.raises(BucketMissing):
            provider.delete("k")  # a missing bucket is not a deleted key
        with pytest.raises(BucketMissing):
            provider.delete("k", if_match="not-a-generation")
        with pytest.raises(NotFound):
            provider.stat("k")
    finally:
        provider.close()


def test_unreachable_endpoint_is_transient(gcs_server: Emulator) -> None:
    provider = open_provider(
        "gs://some-bucket/", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    try:
        with pytest.raises(Transient) as caught:
            provider.check()
        assert should_retry(caught.value)
    finally:
        provider.close()


@pytest.fixture
def no_google_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No emulator variable and no Application Default Credentials (without asking GCE)."""

    def no_adc(*args: Any, **kwargs: Any) -> Any:
        raise google.auth.exceptions.DefaultCredentialsError("no ADC here")

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setattr(google.auth, "default", no_adc)


@pytest.mark.usefixtures("no_google_credentials")
def test_endpoint_option_without_credentials_is_anonymous(gcs_bucket: GCSBucket) -> None:
    provider = open_provider(gcs_bucket.url("opt"), {"endpoint_url": gcs_bucket.endpoint_url})
    try:
        provider.check()
        put(provider, "k.txt", b"through the option")
    finally:
        provider.close()
    assert gcs_bucket.get("opt/k.txt").size == len(b"through the option")


@pytest.mark.usefixtures("no_google_credentials")
def test_missing_credentials_are_permission_denied_on_use() -> None:
    provider = open_provider("gs://some-bucket/p/", {})  # a daemon still starts
    try:
        for call in (
            provider.check,
            lambda: list(provider.list()),
            lambda: provider.stat("k"),
            lambda: put(provider, "k", b"x"),
        ):
            with pytest.raises(PermissionDenied, match="no usable Google credentials"):
                call()
    finally:
        provider.close()


def test_unusable_credentials_file_names_the_option_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"options\.credentials_file"):
        open_provider("gs://some-bucket/", {"credentials_file": str(tmp_path / "absent.json")})
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": "TOP-SECRET"}))
    with pytest.raises(InvalidRequest, match=r"options\.credentials_file") as caught:
        open_provider("gs://some-bucket/", {"credentials_file": str(key_file)})
    assert "TOP-SECRET" not in str(caught.value)


def _service_account_file(path: Path) -> Path:
    """A service-account key file as the console gives it, with a fresh RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "syncd-test",
                "private_key_id": "0123456789abcdef",
                "private_key": pem,
                "client_email": "syncd@syncd-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("endpoint_url", "variable", "emulated"),
    [
        ("http://127.0.0.1:4443", "", True),
        ("https://localhost:4443", "", True),  # fake-gcs-server's default scheme
        ("https://storage.googleapis.com", "http://127.0.0.1:4443", False),  # the option wins
        ("https://storage-abc.p.googleapis.com", "", False),  # a private endpoint
        (None, "http://127.0.0.1:4443", True),
        (None, "", False),
    ],
)
def test_what_counts_as_an_emulator_for_credentials(
    endpoint_url: str | None, variable: str, emulated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.providers.gcs import _emulated
    from syncd.providers.options import GCSOptions

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", variable)
    assert _emulated(GCSOptions(endpoint_url=endpoint_url)) is emulated


@pytest.mark.parametrize(
    "where", ["STORAGE_EMULATOR_HOST", "endpoint_url", "GOOGLE_APPLICATION_CREDENTIALS"]
)
def test_a_credentials_file_works_against_an_emulator(
    gcs_bucket: GCSBucket, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service-account key with an emulator signs its own token: it used to be traded at
    Google's token endpoint first, which failed every request where Google is not reachable
    (a test network, an air-gapped emulator)."""
    key_file = str(_service_account_file(tmp_path / "sa.json"))
    options = {"credentials_file": key_file}
    if where == "GOOGLE_APPLICATION_CREDENTIALS":  # the key found by ADC, not the option
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key_file)
        options = {"endpoint_url": gcs_bucket.endpoint_url}
    elif where == "endpoint_url":
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        options["endpoint_url"] = gcs_bucket.endpoint_url
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_bucket.endpoint_url)
    provider = open_provider(gcs_bucket.url("sa/"), options)
    try:
        put(provider, "signed.txt", b"sent with the key's own token")
        assert get(provider, "signed.txt")[0] == b"sent with the key's own token"
        assert set(listing(provider)) == {"signed.txt"}
    finally:
        provider.close()


@pytest.mark.parametrize("command", ["once", "run", "check"])
def test_an_unusable_credentials_file_names_its_pair(tmp_path: Path, command: str) -> None:
    """As every config error: one line naming the pair and pairs[N].options.credentials_file,
    exit 2 (`check`: on the pair's line)."""
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": "TOP-SECRET"}))
    (tmp_path / "remote").mkdir()
    pairs = [
        {"name": "plain", "local": str(tmp_path / "a"), "remote": f"file://{tmp_path}/remote"},
        {"name": "gcs", "local": str(tmp_path / "b"), "remote": "gs://some-bucket/",
         "options": {"credentials_file": str(key_file)}},
    ]  # fmt: skip
    for pair in pairs:
        Path(pair["local"]).mkdir()
    config = tmp_path / "syncd.yaml"
    config.write_text(json.dumps({"state": f"sqlite:///{tmp_path}/state.db",
                                  "socket": str(tmp_path / "s.sock"), "pairs": pairs}))  # fmt: skip

    done = syncd(command, "-c", config, env={"STORAGE_EMULATOR_HOST": ""}, timeout=60)

    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    problem = (
        f"pairs[1].options.credentials_file: {str(key_file)!r} is not a service account key file"
    )
    if command == "check":  # one line per pair, this one failing
        assert f"FAIL\tgcs\tgs://some-bucket/\t{problem}" in output.splitlines(), output
    else:
        assert output.splitlines() == [f"syncd: pair 'gcs': {problem}"], output


# -- error translation (inputs the emulator cannot produce on demand) -----------------------


def _response(status: int, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = b'{"error": {"code": %d, "message": "from the service"}}' % status
    return response


def _http(status: int, **kwargs: Any) -> api_exceptions.GoogleAPICallError:
    return api_exceptions.from_http_status(status, "m", response=_response(status), **kwargs)


@pytest.mark.parametrize(
    ("exc", "conditional", "expected"),
    [
        (_http(429), False, Throttled),
        (_http(403, errors=[{"reason": "rateLimitExceeded", "message": "slow"}]), False, Throttled),
        (_http(403), False, PermissionDenied),
        (_http(401), False, PermissionDenied),
        (_http(412), False, PreconditionFailed),
        (_http(412), True, PreconditionFailed),
        (_http(409), True, PreconditionFailed),
        (_http(409), False, InvalidRequest),
        (_http(404), False, NotFound),
        (_http(404), True, PreconditionFailed),
        (_http(400), False, InvalidRequest),
        (_http(408), False, Transient),
        (_http(500), False, Transient),
        (_http(502), False, Transient),
        (_http(503), False, Transient),
        (requests.ConnectionError("refused"), False, Transient),
        (requests.Timeout("slow"), False, Transient),
        (DataCorruption(_response(200), "checksum mismatch"), False, Transient),
        (MediaInvalidResponse(_response(503), "unexpected"), False, Transient),
        (google.auth.exceptions.TransportError("dns"), False, Transient),
        (google.auth.exceptions.RefreshError("invalid_grant"), False, PermissionDenied),
        (google.auth.exceptions.RefreshError("later", retryable=True), False, Transient),
    ],
)
def test_translate(exc: Exception, conditional: bool, expected: type[Exception]) -> None:
    error = _translate(exc, "gs://b/k", bucket="b", on_object=True, conditional=conditional)
    assert type(error) is expected
    assert should_retry(error) == (expected in (Throttled, Transient))


def test_missing_bucket_translation() -> None:
    error = _translate(_http(404), "gs://b/", bucket="b", on_object=False)
    assert isinstance(error, BucketMissing)
    assert str(error) == "bucket 'b' does not exist"


def test_translation_keeps_the_service_message_not_the_url() -> None:
    exc = api_exceptions.from_http_status(
        400, "POST http://host/upload?x=1: raw", response=_response(400)
    )
    error = _translate(exc, "gs://b/k", bucket="b", on_object=True)
    assert str(error) == "gs://b/k: 400 from the service"


#: What requests says when it cannot reach a resumable session's URL: the URL, query and all.
_SESSION_URL = "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=SECRETSESSION"
_UNREACHED = (
    "HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded"
    f" with url: {_SESSION_URL} (Caused by NewConnectionError('refused'))"
)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.ConnectionError(_UNREACHED), Transient),
        (requests.exceptions.ProxyError(_UNREACHED), Transient),
        (requests.Timeout(f"timed out on {_SESSION_URL}"), Transient),
        (requests.exceptions.InvalidHeader(f"bad header for {_SESSION_URL}"), InvalidRequest),
    ],
)
def test_an_exceptions_text_is_quoted_without_the_session_url(
    exc: Exception, expected: type[Exception]
) -> None:
    """A resumable session's URL is a credential of its own: no message may carry it."""
    error = _translate(exc, "gs://b/k", bucket="b", on_object=True)
    assert type(error) is expected
    assert "SECRETSESSION" not in str(error)
    assert "upload_id" not in str(error)
    assert str(error).startswith(f"gs://b/k: {type(exc).__name__}: ")
    assert "/upload/storage/v1/b/b/o?<redacted>" in str(error)


def test_throttling_carries_retry_after() -> None:
    exc = api_exceptions.from_http_status(429, "m", response=_response(429, {"Retry-After": "7"}))
    error = _translate(exc, "w", bucket="b", on_object=True)
    assert isinstance(error, Throttled)
    assert error.retry_after == 7.0

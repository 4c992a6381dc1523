"""The Azure and GCS adapters read the proxy and CA settings of the environment once, when they
build their HTTP session, instead of at every request; Azure's session sends the plain request
straight to the adapter (syncd.providers.http)."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import google.auth.credentials
import pytest
import requests
from fixtures_azure import AzureContainer
from fixtures_gcs import GCSBucket

from syncd.providers import UploadRequest, open_provider
from syncd.providers import gcs as gcs_module
from syncd.providers.azure import make_client as azure_client
from syncd.providers.http import SdkSession, pin_environment
from syncd.providers.options import AzureOptions, GCSOptions

#: Nothing listens here: a request sent through this "proxy" fails at once.
DEAD_PROXY = "http://127.0.0.1:9"


def _proxied(monkeypatch: pytest.MonkeyPatch, no_proxy: str | None) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", DEAD_PROXY)
    monkeypatch.setenv("HTTPS_PROXY", DEAD_PROXY)
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)


def test_pinning_keeps_the_proxies_and_bundle_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _proxied(monkeypatch, no_proxy="internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    session = requests.Session()
    pin_environment(session, "https://acct.blob.core.windows.net")
    assert session.trust_env is False
    assert session.proxies["https"] == DEAD_PROXY
    assert session.verify == "/etc/ssl/corp.pem"

    bypassed = requests.Session()
    pin_environment(bypassed, "https://internal.example:8443")  # NO_PROXY names this host
    assert bypassed.proxies == {}

    explicit = requests.Session()
    explicit.verify = False  # a setting made in code is not overridden by the environment
    pin_environment(explicit, "https://acct.blob.core.windows.net")
    assert explicit.verify is False


def test_azure_session_is_pinned_and_its_transport_carries_the_bundle(
    azure_container: AzureContainer,
    monkeypatch: pytest.MonkeyPatch,  # after the container: its teardown needs no proxy
) -> None:
    _proxied(monkeypatch, no_proxy=None)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    options = AzureOptions(connection_string=azure_container.connection_string)
    client, _ = azure_client(options, workers=4)
    try:
        transport: Any = client._pipeline._transport
        assert transport.session.trust_env is False
        assert transport.session.proxies["http"] == DEAD_PROXY
        assert transport.connection_config.verify == "/etc/ssl/corp.pem"
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["azure", "gcs"])
def test_with_no_proxy_for_the_endpoint_requests_go_straight_to_it(
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A dead proxy in the environment and the emulator's host in NO_PROXY: every request
    still reaches the emulator (the bypass was resolved once, for the endpoint)."""
    _proxied(monkeypatch, no_proxy="127.0.0.1,localhost")
    if kind == "azure":
        container: AzureContainer = request.getfixturevalue("azure_container")
        provider = open_provider(
            container.url(), {"connection_string": container.connection_string}, workers=4
        )
    else:
        bucket: GCSBucket = request.getfixturevalue("gcs_bucket")
        provider = open_provider(bucket.url(), {}, workers=4)
    try:
        provider.upload(UploadRequest(key="a.txt", body=io.BytesIO(b"alpha"), size=5, mtime_ns=0))
        assert [info.key for info in provider.list()] == ["a.txt"]
    finally:
        provider.close()


# -- SdkSession: the plain request goes straight to the adapter --------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request, recording what arrived and on which connection; /moved answers
    a redirect to /here."""

    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
    seen: ClassVar[list[tuple[int, str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.seen.append((self.client_address[1], self.command, self.path, headers, body))
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/here")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = f"{self.command} {self.path} {len(body)}".encode()
        self.send_response(201)
        self.send_header("ETag", '"0x1"')
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_PUT = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _put(session: requests.Session, url: str, **kwargs: Any) -> requests.Response:
    return session.request(
        "PUT",
        url,
        data=b"4 KiB or so",
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"},
        timeout=(5, 30),
        verify=True,
        **kwargs,
    )


def _no_merging(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the plain request went through Session.prepare_request")


@pytest.mark.parametrize("userinfo", ["", "user:secret@"])
def test_sdk_session_sends_what_requests_sends(recorder: str, userinfo: str) -> None:
    full, lean = requests.Session(), SdkSession()
    for session in (full, lean):
        session.trust_env = False  # as pin_environment leaves it
    url = recorder.replace("http://", f"http://{userinfo}") + "/c/blob%20name"
    theirs = _put(full, url, allow_redirects=False)
    ours = _put(lean, url, allow_redirects=False)

    assert (ours.status_code, ours.content, ours.headers["ETag"]) == (
        theirs.status_code,
        theirs.content,
        theirs.headers["ETag"],
    )
    assert ours.elapsed.total_seconds() > 0
    (_, *sent_by_requests), (_, *sent_by_us) = _Recorder.seen
    assert sent_by_us == sent_by_requests  # method, path, every header, body
    assert sent_by_us[0:2] == ["PUT", "/c/blob%20name"]
    assert ("authorization" in sent_by_us[2]) == bool(userinfo)  # basic auth from the URL


def test_sdk_session_skips_the_session_merging_and_reuses_its_connection(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean = SdkSession()
    lean.trust_env = False

    monkeypatch.setattr(requests.Session, "prepare_request", _no_merging)
    first = _put(lean, f"{recorder}/one", allow_redirects=False)
    second = _put(lean, f"{recorder}/two", allow_redirects=False)

    assert (first.status_code, first.content) == (201, b"PUT /one 11")
    assert (second.status_code, second.content) == (201, b"PUT /two 11")
    ports = {port for port, *_ in _Recorder.seen}
    assert len(ports) == 1  # the first answer was read whole, so its connection came back


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_sdk_session_follows_a_redirect_as_requests_does(
    recorder: str, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    full = requests.Session()
    full.trust_env = False
    theirs = _put(full, f"{recorder}/moved") if method == "PUT" else full.get(f"{recorder}/moved")
    monkeypatch.setattr(requests.Session, "prepare_request", _no_merging)
    lean = SdkSession()
    lean.trust_env = False
    ours = _put(lean, f"{recorder}/moved") if method == "PUT" else lean.get(f"{recorder}/moved")

    length = 11 if method == "PUT" else 0  # a 307 keeps the method and the body
    for response in (theirs, ours):
        assert (response.status_code, response.content) == (
            201,
            f"{method} /here {length}".encode(),
        )
        assert [hop.status_code for hop in response.history] == [307]
    not_followed = lean.request(method, f"{recorder}/moved", allow_redirects=False)
    assert (not_followed.status_code, not_followed.headers["Location"]) == (307, "/here")


def test_sdk_session_takes_requests_full_path_for_anything_else(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged: list[str] = []
    real = requests.Session.prepare_request

    def recorded(self: requests.Session, request: requests.Request) -> requests.PreparedRequest:
        merged.append(request.url)
        return real(self, request)

    monkeypatch.setattr(requests.Session, "prepare_request", recorded)
    lean = SdkSession()
    lean.trust_env = False
    with_params = lean.request("GET", f"{recorder}/q", params={"a": "1"})
    assert with_params.content == b"GET /q?a=1 0"
    lean.trust_env = True  # a session that reads the environment per request keeps doing so
    assert _put(lean, f"{recorder}/env").status_code == 201
    assert merged == [f"{recorder}/q", f"{recorder}/env"]


class _FixedToken(google.auth.credentials.Credentials):
    """Credentials whose token never expires (google-auth adds it as a bearer header)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "t0k3n"
        self.expiry = None

    def refresh(self, request: Any) -> None:
        pass


def test_gcs_session_adds_the_credentials_and_takes_the_short_path(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requests.Session, "prepare_request", _no_merging)
    session = gcs_module._Session(_FixedToken())
    session.trust_env = False
    answer = session.request("PUT", f"{recorder}/o", data=b"payload", timeout=(5, 30))
    assert (answer.status_code, answer.content) == (201, b"PUT /o 7")
    (_, _, _, headers, _) = _Recorder.seen[0]
    assert headers["authorization"] == "Bearer t0k3n"


def test_gcs_client_talks_through_that_session(gcs_bucket: GCSBucket) -> None:
    client = gcs_module.make_client(GCSOptions(), workers=4)
    try:
        session = client._http
        assert isinstance(session, gcs_module._Session)
        assert session.credentials is client._credentials
        assert session.trust_env is False
        assert client.bucket(gcs_bucket.bucket).exists()
    finally:
        client.close()

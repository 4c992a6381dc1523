"""The Azure and GCS adapters read the proxy and CA settings of the environment once, when they
build their HTTP session, instead of at every request (syncd.providers.http)."""

from __future__ import annotations

import io
from typing import Any

import pytest
import requests
from fixtures_azure import AzureContainer
from fixtures_gcs import GCSBucket

from syncd.providers import UploadRequest, open_provider
from syncd.providers.azure import make_client as azure_client
from syncd.providers.http import pin_environment
from syncd.providers.options import AzureOptions

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

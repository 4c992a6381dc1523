"""Azure Blob fixtures: one Azurite per session, a fresh container per test.

Azurite (the official emulator) comes from npm into the project's own node_modules (`make
test` installs it). It runs as a real subprocess on a free loopback port, over plain http, with
its data in a temporary folder, and is stopped by pid at the end of the session. While it runs,
AZURE_STORAGE_CONNECTION_STRING points at it, so the SDK in this process and in every syncd
subprocess a test starts reaches the emulator (with its well-known development account) and
never a real account.

A missing Azurite is an error, never a skip (see emulators.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from emulators import Emulator, _start, free_port

from syncd.providers import open_provider

if TYPE_CHECKING:
    from test_providers import Root

#: Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

#: Variables of the machine that would change which account the SDK reaches.
AZURE_REMOVED_ENV = ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")


@dataclass
class Azurite:
    """The running emulator: `blob_endpoint` is the development account's URL."""

    emulator: Emulator
    location: Path

    @property
    def blob_endpoint(self) -> str:
        return f"{self.emulator.endpoint_url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_endpoint)

    def stop(self) -> None:
        self.emulator.stop()
        shutil.rmtree(self.location, ignore_errors=True)


def connection_string(blob_endpoint: str, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={blob_endpoint};"
    )


def start_azurite() -> Azurite:
    """Start azurite-blob on a free loopback port, its data in a fresh temporary folder."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"Azurite not found at {AZURITE_BLOB}; run `make test` (it installs Azurite from "
            "npm into the project's node_modules)"
        )
    location = Path(tempfile.mkdtemp(prefix="syncd-azurite-"))
    port = free_port()
    argv = [
        str(AZURITE_BLOB),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--skipApiVersionCheck",  # the SDK may be newer than the emulator
        "--loose",  # ignore headers the emulator does not implement
        "--disableTelemetry",
    ]
    try:
        emulator = _start("azurite", argv, f"http://127.0.0.1:{port}", None)
    except BaseException:
        shutil.rmtree(location, ignore_errors=True)
        raise
    return Azurite(emulator, location)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite for the session; AZURE_STORAGE_CONNECTION_STRING points at it meanwhile."""
    server = start_azurite()
    names = ("AZURE_STORAGE_CONNECTION_STRING", *AZURE_REMOVED_ENV)
    saved = {name: os.environ.get(name) for name in names}
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
    for name in AZURE_REMOVED_ENV:
        os.environ.pop(name, None)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@dataclass
class AzureContainer:
    connection_string: str
    blob_endpoint: str
    container: str
    client: ContainerClient  # for a test's own setup and assertions

    def url(self, prefix: str = "") -> str:
        """The remote URL of `prefix` in this container: "az://container/prefix/"."""
        prefix = prefix.strip("/")
        return f"az://{self.container}/{prefix}/" if prefix else f"az://{self.container}/"

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Any:
        """Write a blob by its full key, behind the provider's back."""
        return self.client.upload_blob(key, data, overwrite=True, metadata=metadata)


@pytest.fixture
def azure_container(azurite: Azurite) -> Iterator[AzureContainer]:
    """A fresh, uniquely named, empty container on the session's Azurite."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_container(name)
    try:
        yield AzureContainer(azurite.connection_string, azurite.blob_endpoint, name, client)
    finally:
        client.delete_container()  # keeps the emulator's store small over the session
        service.close()


@pytest.fixture
def azure_root(azure_container: AzureContainer) -> Iterator[Root]:
    from test_providers import PREFIX, Root

    def write_blob(key: str, data: bytes) -> None:
        azure_container.write(key, data)

    provider = open_provider(
        azure_container.url(PREFIX),
        {"connection_string": azure_container.connection_string},
        workers=16,
    )
    yield Root("azure", provider, write_blob)
    provider.close()

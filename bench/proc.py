"""Running a command and measuring it: wall time, its own CPU time, its peak RSS.

Every tool runs as a subprocess in its own session and is reaped with `os.wait4`, whose
resource usage covers the command and every descendant it waited for: the CPU seconds and the
peak RSS are the tool's own (ru_maxrss is the largest single process of the tree, in KiB).
A command that runs longer than the time limit has its whole process group killed and is
reported as timed out, never waited on forever.

CPU seconds of a long-running process (an emulator, the daemon) come from /proc/PID/stat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measured:
    """One command's run."""

    wall_s: float
    cpu_s: float  # user + system, the command and its waited-for descendants
    sys_s: float  # the system (kernel) part of cpu_s: file creation, sockets, lock hand-offs
    peak_rss_mb: float
    returncode: int
    timed_out: bool
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    log_path: Path,
    cwd: Path | None = None,
) -> Measured:
    """Run `argv` to the end (or the time limit); stdout and stderr go to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group: a timeout kills the whole tree
        )
    expired = threading.Event()

    def _expire() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, _expire)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # Ctrl-C: take the tool down with the bench, then reap it
        _expire()
        os.wait4(process.pid, 0)
        raise
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        sys_s=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        returncode=process.returncode,
        timed_out=expired.is_set(),
        log_tail=_tail(log_path),
    )


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After "(comm)": state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a running process, in MB, from /proc/PID/status."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def stop(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace_s`; always reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

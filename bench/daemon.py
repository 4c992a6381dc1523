"""Scenario 7: the daemon (`syncd run`).

- Latency: a file is written and closed in the watched folder; the time until its object
  exists in the bucket (a HEAD every 10 ms from the bench) is one sample. Drops are sequential,
  one at a time, with `settle: 0.5`, on moto.
- Idle: with N files under watch and everything in sync, the daemon's CPU over a quiet window
  (from /proc/PID/stat) and its RSS (VmRSS, and VmHWM for the peak since start).
- Startup reconciliation: from starting `syncd run` on N unchanged, already-synced files until
  the daemon reports the pair in sync, against `find DIR -printf '%s %T@\\n'` over the tree.

The daemon is asked for its status straight on its control socket (one JSON line each way)
rather than through `syncd status`, whose own start-up would compete for the two cores.
The idle and startup part use a local-folder remote (file://): with 100,000 files, moto's
listing would be measured rather than syncd.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import proc, trees
from bench.runner import Bench, say, syncd_config
from bench.scenarios import s3_keys

S7_LATENCY = "7 close->object latency (S3)"
S7_IDLE = "7 idle, files under watch"
S7_START = "7 startup reconciliation"
S7_INITIAL = "7 initial sync (file://)"


def ask(socket_path: Path, cmd: str = "status", timeout: float = 10.0) -> Any:
    """One request on the daemon's control socket; None if it does not answer (yet)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            buffer = b""
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
    except OSError:
        return None
    try:
        reply = json.loads(buffer.split(b"\n", 1)[0])
    except ValueError:
        return None
    return reply.get("result") if reply.get("ok") else None


def in_sync(status: Any) -> bool:
    """Every pair idle, nothing queued or in flight, and in sync at least once since start."""
    if not isinstance(status, dict) or not status.get("pairs"):
        return False
    return all(
        pair.get("state") == "idle"
        and not pair.get("queued")
        and not pair.get("in_flight")
        and pair.get("last_sync") is not None
        for pair in status["pairs"]
    )


class Daemon:
    """`syncd run -c CONFIG` as a subprocess, its JSON log in a file."""

    def __init__(self, bench: Bench, config: Path, log_path: Path) -> None:
        self.socket = Path(json.loads(config.read_text())["socket"])
        self.log_path = log_path
        self.started_wall = time.time()
        self.started = time.perf_counter()
        log_path.parent.mkdir(parents=True, exist_ok=True)  # BENCH_ONLY=7 runs nothing before
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [bench.peers.syncd.exe, "run", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=bench.env,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_in_sync(self, timeout_s: float) -> float | None:
        """Seconds from start until the pair is in sync (polled every 20 ms), or None."""
        deadline = self.started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                return None
            if in_sync(ask(self.socket)):
                return time.perf_counter() - self.started
            time.sleep(0.02)
        return None

    def logged_at(self, event: str) -> float | None:
        """Wall-clock time of the first log line with this event, from the daemon's log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in lines:
            if f'"{event}"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event and "timestamp" in record:
                stamp = str(record["timestamp"]).replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp()
        return None

    def stop(self) -> None:
        proc.stop(self.process)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def latency(bench: Bench) -> None:
    assert bench.moto is not None
    s = bench.settings
    say(f"scenario 7: close->object latency over {s.drops} drops (settle {s.settle_s} s)")
    row = bench.row(S7_LATENCY, "syncd run", compare=False)
    bucket = bench.moto.fresh_bucket()
    base = bench.fresh_dir("s7", "latency")
    local = base / "local"
    local.mkdir()
    config = syncd_config(
        base / "syncd.yaml",
        local=local,
        remote=f"s3://{bucket}/",
        state_dir=base / "state",
        workers=s.syncd_workers,
        options={"endpoint_url": bench.moto.endpoint_url},
        settle=s.settle_s,
    )
    row.command = bench.shown([bench.peers.syncd.exe, "run", "-c", str(config)])
    bench.commands.setdefault("syncd", []).append(row.command + "   # settle, S3 pair")
    daemon = Daemon(bench, config, bench.work / "logs" / "s7-latency-daemon.log")
    try:
        if daemon.wait_in_sync(60) is None:
            row.failures.append("the daemon did not reach 'in sync' within 60 s")
            return
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            endpoint_url=bench.moto.endpoint_url,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        samples: list[float] = []
        for index in range(s.drops):
            name = f"drop-{index:04d}.bin"
            with (local / name).open("wb") as handle:
                handle.write(os.urandom(4096))
            closed = time.perf_counter()
            deadline = closed + 30
            while True:
                try:
                    client.head_object(Bucket=bucket, Key=name)
                    samples.append(time.perf_counter() - closed)
                    break
                except ClientError:
                    if time.perf_counter() > deadline:
                        row.failures.append(f"{name} not in the bucket after 30 s")
                        break
                    time.sleep(0.01)
            time.sleep(0.05)
        missing = s.drops - len(s3_keys(bench, bucket))
        if missing > 0:
            row.failures.append(f"{missing} drops never arrived")
        if samples:
            row.samples = samples
            p50, p95, p99 = (percentile(samples, q) for q in (50, 95, 99))
            row.extra = {"p50 s": [p50], "p95 s": [p95], "p99 s": [p99]}
            row.value = f"p50 {p50:.3f} / p95 {p95:.3f} / p99 {p99:.3f}"
            say(f"  latency: {row.value} s over {len(samples)} drops")
    finally:
        daemon.stop()


def watch_tree(bench: Bench) -> None:
    """Idle CPU and RSS, and startup reconciliation, with N files under watch (file://)."""
    s = bench.settings
    peers = bench.peers
    n = s.watch_files
    say(f"scenario 7: {n} files under watch (file:// remote): initial sync, startup, idle")
    base = bench.fresh_dir("s7", "watch")
    local, remote = base / "local", base / "remote"
    total = trees.varied_files(local, n)
    remote.mkdir()
    config = syncd_config(
        base / "syncd.yaml",
        local=local,
        remote=f"file://{remote}",
        state_dir=base / "state",
        workers=s.syncd_workers,
        settle=s.settle_s,
    )
    initial = bench.row(
        S7_INITIAL,
        "syncd once",
        amount=("files", float(n)),
        compare=False,
        note=f"{n} files, {total / 1e6:.0f} MB, of varied sizes",
    )
    if not bench.measure(
        initial,
        [peers.syncd.exe, "once", "-c", str(config)],
        check=lambda: None if trees.count_files(remote) >= n else "not every file arrived",
    ):
        for scenario in (S7_START, S7_IDLE):
            bench.row(scenario, "syncd", note="skipped: the initial sync did not finish")
        return
    _startup_and_idle(bench, config, n)
    once_row = bench.row(S7_START, "syncd once (no-op)", compare=False)
    find_row = bench.row(S7_START, "find -printf")
    for _ in range(s.runs):
        bench.measure(once_row, [peers.syncd.exe, "once", "-c", str(config)])
        bench.measure(
            find_row,
            ["sh", "-c", f"{peers.find.exe} '{local}' -printf '%s %T@\\n' > /dev/null"],
        )


def _startup_and_idle(bench: Bench, config: Path, n: int) -> None:
    """Start the daemon on the synced tree `runs` times: time to "in sync", then a quiet
    window for CPU and RSS."""
    s = bench.settings
    start = bench.row(S7_START, "syncd", amount=("files", float(n)))
    start.command = bench.shown([bench.peers.syncd.exe, "run", "-c", str(config)])
    scan = bench.row(
        S7_START, "syncd run, scan only", compare=False, note="from its 'syncd started' log line"
    )
    idle = bench.row(S7_IDLE, "syncd run", compare=False)
    cpu_percent: list[float] = []
    rss: list[float] = []
    peak: list[float] = []
    for run in range(s.runs):
        log_path = bench.work / "logs" / f"s7-watch-daemon-{run}.log"
        daemon = Daemon(bench, config, log_path)
        try:
            took = daemon.wait_in_sync(s.timeout_s)
            if took is None:
                start.failures.append("not in sync within the time limit")
                continue
            start.add(took)
            synced_at = time.time()
            began = daemon.logged_at("syncd started")
            if began is not None:
                scan.add(synced_at - began)
            say(f"  startup reconciliation: {took:.2f} s")
            time.sleep(2.0)  # let the end of the pass (last writes, checkpoints) settle
            cpu_before, t_before = proc.cpu_seconds(daemon.pid), time.perf_counter()
            time.sleep(s.idle_window_s)
            cpu_after, t_after = proc.cpu_seconds(daemon.pid), time.perf_counter()
            cpu_percent.append(100 * (cpu_after - cpu_before) / (t_after - t_before))
            now, high = proc.memory_mb(daemon.pid)
            rss.append(now)
            peak.append(high)
            say(f"  idle: CPU {cpu_percent[-1]:.2f} %, RSS {now:.0f} MB (peak {high:.0f} MB)")
        finally:
            daemon.stop()
    if cpu_percent:
        idle.extra = {"CPU %": cpu_percent, "RSS MB": rss, "peak RSS MB": peak}
        idle.samples = cpu_percent
        idle.value = (
            f"CPU {statistics.median(cpu_percent):.2f} % / RSS {statistics.median(rss):.0f} MB"
        )
        idle.note = f"{n} files, quiet window {s.idle_window_s:.0f} s, poll_interval 30 s"

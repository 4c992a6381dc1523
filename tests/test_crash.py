"""kill -9 of `syncd once` at random moments, repeated, against a folder remote and S3 (moto).

A few hundred local files (some of ~200 KB) and a hundred remote-only objects; each round starts
`syncd once`, kills it with SIGKILL after a random 0.05-1.0 s, checks that nothing half-written
appeared under a real name on either side, and changes a few files before the next round. Then a
clean `syncd once` must bring both sides to exactly what the test wrote, leave no temp file and
a sound state database, and a second clean run must transfer nothing.

Every round has its own fixed seed (SYNCD_CRASH_SEED + round), so a failing round is
reproducible; SYNCD_CRASH_ROUNDS sets the number of rounds (default 10).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import SYNCD, Setup, syncd
from remotes import Remote, remote_for

ROUNDS = int(os.environ.get("SYNCD_CRASH_ROUNDS", "10"))
SEED = int(os.environ.get("SYNCD_CRASH_SEED", "20261124"))
LOCAL_FILES = 300
REMOTE_FILES = 100
BIG = 200_000
TEMP_PREFIX = ".syncd-tmp-"


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path, prefix="crash/")


@dataclass
class World:
    """What the test wrote: the latest bytes of every path, and every version ever written."""

    setup: Setup
    remote: Remote
    latest: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, set[bytes]] = field(default_factory=dict)
    local_origin: list[str] = field(default_factory=list)
    counter: int = 0

    def _note(self, path: str, data: bytes) -> None:
        self.latest[path] = data
        self.versions.setdefault(path, set()).add(data)

    def write_local(self, path: str, data: bytes) -> None:
        target = self.setup.local / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        # Strictly increasing, distinct mtimes: an edit is always the newest version.
        self.counter += 1
        mtime = time.time_ns() + self.counter
        os.utime(target, ns=(mtime, mtime))
        if path not in self.versions:
            self.local_origin.append(path)
        self._note(path, data)

    def write_remote(self, path: str, data: bytes) -> None:
        self.remote.put(path, data)
        self._note(path, data)


def payload(rng: random.Random, big: bool = False) -> bytes:
    size = rng.randint(BIG - 20_000, BIG + 20_000) if big else rng.randint(0, 4_000)
    return rng.randbytes(size)


def populate(world: World, rng: random.Random) -> None:
    """Local-only and remote-only files side by side in the same folders, so that uploads and
    downloads are both under way at any moment of a pass (it takes paths in sorted order)."""
    for i in range(LOCAL_FILES):
        world.write_local(f"d{i % 7}/s{i % 3}/f{i:03d}.bin", payload(rng, big=i % 20 == 0))
    for i in range(REMOTE_FILES):
        world.write_remote(f"d{i % 7}/s{i % 3}/o{i:03d}.dat", payload(rng, big=i % 25 == 0))


def modify(world: World, rng: random.Random, round_no: int) -> None:
    """Between rounds: edit some local files (half of them to the same size), add new files
    on both sides. Never a delete, and never a remote edit of a path the local side also
    writes, so 'what the test wrote last' is the one right outcome."""
    for path in rng.sample(world.local_origin, 12):
        old = world.latest[path]
        data = rng.randbytes(len(old)) if rng.random() < 0.5 else payload(rng, rng.random() < 0.2)
        world.write_local(path, data)
    for i in range(6):
        world.write_local(f"d{i}/new-{round_no}-{i}.bin", payload(rng, big=i == 0))
        world.write_remote(f"d{i}/new-{round_no}-{i}.dat", payload(rng, big=i == 0))


def local_files(root: Path) -> dict[str, bytes]:
    """Every file under a real name locally (syncd's folder excluded, temp files included)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith(".syncd/")
    }


def integrity(db: Path, scratch: Path) -> str:
    """PRAGMA integrity_check of the state database (on a copy, WAL included, so the check
    does not recover the database in syncd's place)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db}{suffix}")
        target = scratch / f"copy.db{suffix}"
        target.unlink(missing_ok=True)
        if source.exists():
            shutil.copyfile(source, target)
    connection = sqlite3.connect(scratch / "copy.db")
    try:
        result: str = connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()
    return result


def kill_at_random(setup: Setup, rng: random.Random, log: Path) -> int | None:
    """Start `syncd once`, SIGKILL it after a random delay; its exit code if it ended first."""
    with open(log, "ab") as out:
        out.write(b"\n--- round ---\n")
        out.flush()
        proc = subprocess.Popen(
            [*SYNCD, "once", "-c", str(setup.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        time.sleep(rng.uniform(0.05, 1.0))
        finished = proc.poll()
        if finished is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return finished


def check_nothing_torn(world: World, when: str) -> None:
    """Each name on either side holds one whole version the test wrote for it (or nothing)."""
    for side, files in (
        ("local", local_files(world.setup.local)),
        ("remote", world.remote.objects()),
    ):
        for path, data in files.items():
            if path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX):
                continue  # a temp file of an interrupted download, cleaned by the next run
            assert data in world.versions.get(path, set()), (
                f"{when}: {side} {path} holds {len(data)} bytes that the test never wrote there"
            )


@pytest.mark.slow
@pytest.mark.timeout(120 + 40 * ROUNDS)
def test_kill_9_at_random_moments_loses_and_tears_nothing(tmp_path: Path, remote: Remote) -> None:
    # Info, not debug: botocore's debug logging would slow every run several times over.
    quiet = {"log": {"level": "info", "format": "json"}}
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=quiet)
    setup.write()
    world = World(setup, remote)
    populate(world, random.Random(SEED))
    log = tmp_path / "killed.log"

    outcomes: list[int | None] = []
    for round_no in range(ROUNDS):
        rng = random.Random(SEED + round_no + 1)
        outcomes.append(kill_at_random(setup, rng, log))
        when = f"round {round_no} (seed {SEED + round_no + 1})"
        check_nothing_torn(world, when)
        assert integrity(setup.state_db, tmp_path / "dbcheck") == "ok", when
        modify(world, rng, round_no)

    final = syncd("once", "-c", setup.config, timeout=300)
    assert final.returncode == 0, f"{final.stdout}\n{final.stderr[-3000:]}"
    local = local_files(setup.local)
    temps = [p for p in local if p.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    assert not temps, f"temp files left after a clean run: {temps}"
    assert local == world.latest, sorted(
        p for p in local.keys() | world.latest.keys() if local.get(p) != world.latest.get(p)
    )
    assert remote.objects() == world.latest
    assert integrity(setup.state_db, tmp_path / "dbcheck") == "ok"

    again = syncd("once", "-c", setup.config, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 uploaded, 0 downloaded" in again.stdout, again.stdout
    # The kills are meant to land mid-run: at least one round must not have finished.
    assert None in outcomes, f"every run finished before its kill: {outcomes}"

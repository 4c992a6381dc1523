"""kill -9 of `syncd once` at random moments, repeated, against a folder remote and S3 (moto).

A few hundred local files (some of ~200 KB) and a hundred remote-only objects; each round starts
`syncd once`, kills it with SIGKILL at a random moment of its pass (a few milliseconds after a
random number of its log events, or during start-up), checks that nothing half-written
appeared under a real name on either side and that the state database is sound, and then
changes the two sides before the next round, the way people do while a sync is interrupted:
local edits, new files on both sides, remote edits, local and remote deletions, local renames,
and conflicts (one path edited differently on both sides; the pair keeps both versions with
`conflict: version_preserve`). So the kills land in uploads, downloads, deletions, moves and
conflict handling alike. Then a clean `syncd once` must bring both sides to exactly what the
test wrote: every deletion and rename carried out on both sides (the deleted bytes kept in a
trash), every conflict settled as exactly one file at the path (the newer version) plus exactly
one conflict copy beside it (the older one): a kill between detecting a conflict and finishing
it must never make a second copy. No temp file may be left, the state database must be sound,
and a second clean run must transfer nothing.

A kill between a transfer and its record in the state database leaves a path that both sides
hold with no base for it (the next run only records it). Such a path has no single right
outcome for a later change: deleted on one side, syncd cannot tell it from a new file (and an
edit beats a delete); edited on one side, it is a conflict without a base, and
`version_preserve` rightly keeps the other side's (older) bytes as a conflict copy. So the test
asks `syncd once --dry-run` what each path needs: it deletes, renames and conflicts only paths
that need nothing, and edits no path waiting to be recorded. Conflicted paths and their copies
are never touched again.

Every round draws its choices from its own fixed seed (SYNCD_CRASH_SEED + round); where a kill
lands depends on timing, and what is in sync then steers the next changes, so a run is not
replayed exactly. SYNCD_CRASH_ROUNDS sets the number of rounds (default 20 on the folder
remote; 12 on S3, whose rounds cost three times as much and share the engine the folder
rounds cover). Each round's syncd log, its dry run and what the test changed are kept in
`<tmp>/rounds/round-NN.log`.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import SYNCD, Setup, syncd
from remotes import REMOTE_TRASH, ObjectReader, Remote, remote_for

CHOSEN_ROUNDS = os.environ.get("SYNCD_CRASH_ROUNDS")
ROUNDS = (
    {"file": 20, "s3": 12}
    if CHOSEN_ROUNDS is None
    else dict.fromkeys(("file", "s3"), int(CHOSEN_ROUNDS))
)
SEED = int(os.environ.get("SYNCD_CRASH_SEED", "20261124"))
LOCAL_FILES = 240
REMOTE_FILES = 80
BIG = 200_000
TEMP_PREFIX = ".syncd-tmp-"
LOCAL_TRASH = ".syncd/trash"
HOUR_NS = 3600 * 1_000_000_000
PAIR = "docs"

# Per round, at most (of the paths the dry run calls in sync):
LOCAL_DELETES = 2
REMOTE_DELETES = 2
RENAMES = 2
CONFLICTS = 2


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path, prefix="crash/")


@dataclass(frozen=True)
class Conflict:
    """One path written differently on both sides between two rounds."""

    path: str
    local: bytes
    remote: bytes
    older: str  # "local" | "remote": that version must end up as the conflict copy

    @property
    def kept(self) -> bytes:
        """What the path itself must hold in the end: the newer version."""
        return self.remote if self.older == "local" else self.local

    @property
    def copied(self) -> bytes:
        """What the one conflict copy must hold: the older version."""
        return self.local if self.older == "local" else self.remote

    def is_copy(self, name: str) -> bool:
        """Is `name` a conflict copy of this path (`NAME.conflict-YYYYMMDD-HHMMSS-HOST[-N].EXT`)?"""
        folder, _, base = self.path.rpartition("/")
        stem, dot, ext = base.rpartition(".")
        if not stem or not dot:
            stem, ext = base, ""
        prefix = f"{folder}/{stem}" if folder else stem
        suffix = f".{ext}" if ext else ""
        pattern = re.escape(prefix) + r"\.conflict-\d{8}-\d{6}-[A-Za-z0-9_-]+" + re.escape(suffix)
        return re.fullmatch(pattern, name) is not None


@dataclass
class World:
    """What the test wrote: the latest bytes of every live path, every version ever written
    under each name, and what it deleted, renamed and put in conflict."""

    setup: Setup
    remote: Remote
    latest: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, set[bytes]] = field(default_factory=dict)
    local_pool: list[str] = field(default_factory=list)  # paths the test edits locally only
    remote_pool: list[str] = field(default_factory=list)  # paths the test edits remotely only
    conflicts: dict[str, Conflict] = field(default_factory=dict)
    deleted: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # path -> (side, bytes)
    renamed: dict[str, str] = field(default_factory=dict)  # old path -> new path
    journal: list[str] = field(default_factory=list)  # what the test did, for the round log
    counter: int = 0
    reader: ObjectReader = field(init=False)  # the remote's bytes, fetched again when changed

    def __post_init__(self) -> None:
        self.reader = ObjectReader(self.remote)

    def _note(self, path: str, data: bytes) -> None:
        self.latest[path] = data
        self.versions.setdefault(path, set()).add(data)

    def _drop(self, path: str) -> None:
        self.latest.pop(path)
        for pool in (self.local_pool, self.remote_pool):
            if path in pool:
                pool.remove(path)

    def write_local(self, path: str, data: bytes, mtime_ns: int | None = None) -> None:
        target = self.setup.local / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        # Strictly increasing, distinct mtimes: an edit is always the newest version.
        self.counter += 1
        mtime = mtime_ns if mtime_ns is not None else time.time_ns() + self.counter
        os.utime(target, ns=(mtime, mtime))
        self._note(path, data)
        self.journal.append(f"local write {path} ({len(data)} bytes)")

    def write_remote(self, path: str, data: bytes, mtime_ns: int | None = None) -> None:
        self.remote.put(path, data, mtime_ns)
        self._note(path, data)
        self.journal.append(f"remote write {path} ({len(data)} bytes)")

    def delete_local(self, path: str) -> None:
        (self.setup.local / path).unlink()
        self.deleted[path] = ("local", self.latest[path])
        self._drop(path)
        self.journal.append(f"local delete {path}")

    def delete_remote(self, path: str) -> None:
        self.remote.delete(path)
        self.deleted[path] = ("remote", self.latest[path])
        self._drop(path)
        self.journal.append(f"remote delete {path}")

    def rename_local(self, old: str, new: str) -> None:
        target = self.setup.local / new
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.setup.local / old, target)
        data = self.latest[old]
        self._drop(old)
        self.renamed[old] = new
        self._note(new, data)
        self.local_pool.append(new)
        self.journal.append(f"local rename {old} -> {new}")

    def conflict(self, path: str, local: bytes, remote: bytes, older: str) -> None:
        """Write `path` differently on both sides, `older` with a clearly older mtime."""
        now = time.time_ns()
        self.counter += 1
        local_ns = now - HOUR_NS if older == "local" else now + self.counter
        remote_ns = now - HOUR_NS if older == "remote" else now + self.counter
        if path in self.latest:
            self._drop(path)
        self.write_local(path, local, local_ns)
        self.write_remote(path, remote, remote_ns)
        found = Conflict(path, local, remote, older)
        self.conflicts[path] = found
        self.latest[path] = found.kept
        self.journal.append(f"conflict {path}: {older} is older")

    def copy_of(self, name: str) -> Conflict | None:
        """The conflict whose copy `name` is, if any."""
        for found in self.conflicts.values():
            if found.is_copy(name):
                return found
        return None


def payload(rng: random.Random, big: bool = False) -> bytes:
    size = rng.randint(BIG - 20_000, BIG + 20_000) if big else rng.randint(0, 4_000)
    return rng.randbytes(size)


def populate(world: World, rng: random.Random) -> None:
    """Local-only and remote-only files side by side in the same folders, so that uploads and
    downloads are both under way at any moment of a pass (it takes paths in sorted order)."""
    for i in range(LOCAL_FILES):
        path = f"d{i % 7}/s{i % 3}/f{i:03d}.bin"
        world.write_local(path, payload(rng, big=i % 20 == 0))
        world.local_pool.append(path)
    for i in range(REMOTE_FILES):
        path = f"d{i % 7}/s{i % 3}/o{i:03d}.dat"
        world.write_remote(path, payload(rng, big=i % 25 == 0))
        world.remote_pool.append(path)


def planned_paths(setup: Setup, log: Path) -> dict[str, str]:
    """The paths `syncd once --dry-run` would act on, with the action: every other path is in
    sync (both sides hold what the base remembers). The dry run changes nothing."""
    result = syncd("once", "--dry-run", "-c", setup.config, timeout=120)
    with open(log, "a") as out:
        out.write(f"\n--- dry run (exit {result.returncode}) ---\n{result.stdout}{result.stderr}")
    assert result.returncode in (0, 1, 4), f"dry run failed:\n{result.stdout}\n{result.stderr}"
    planned = {}
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].startswith(f"{PAIR}/"):
            planned[fields[1].removeprefix(f"{PAIR}/")] = fields[0]
    return planned


def two_versions(rng: random.Random) -> tuple[bytes, bytes]:
    big = rng.random() < 0.3
    first = payload(rng, big)
    second = payload(rng, big)
    while second == first:
        second = payload(rng, big)
    return first, second


def modify(world: World, rng: random.Random, round_no: int, planned: dict[str, str]) -> None:
    """Between rounds: deletions (local and remote), local renames and conflicts of paths that
    are in sync; then local edits (half of them to the same size), remote edits, and new files
    on both sides, each on a path no other change of the round touches and none on a path
    waiting to be recorded. So 'what the test wrote last' (and, for a conflict, both versions)
    is the one right outcome."""
    live = sorted(set(world.latest) - set(world.conflicts))
    in_sync = [p for p in live if p not in planned]
    chosen = rng.sample(in_sync, min(len(in_sync), LOCAL_DELETES + REMOTE_DELETES + RENAMES))
    for path in chosen[:LOCAL_DELETES]:
        world.delete_local(path)
    for path in chosen[LOCAL_DELETES : LOCAL_DELETES + REMOTE_DELETES]:
        world.delete_remote(path)
    for i, source in enumerate(chosen[LOCAL_DELETES + REMOTE_DELETES :]):
        suffix = source.rsplit(".", 1)[-1]
        world.rename_local(source, f"d{rng.randrange(7)}/s{i}/moved-{round_no}-{i}.{suffix}")

    touched = set(chosen) | {p for p, action in planned.items() if action == "record"}
    candidates = [p for p in in_sync if p not in touched]
    for path in rng.sample(candidates, min(len(candidates), CONFLICTS)):
        local, remote = two_versions(rng)
        world.conflict(path, local, remote, rng.choice(["local", "remote"]))
        touched.add(path)
    if rng.random() < 0.5:  # a new path written on both sides: a conflict without a base
        local, remote = two_versions(rng)
        world.conflict(f"d{round_no % 7}/both-{round_no}.txt", local, remote, "remote")

    editable = [p for p in world.local_pool if p not in touched]
    for path in rng.sample(editable, min(len(editable), 10)):
        old = world.latest[path]
        data = rng.randbytes(len(old)) if rng.random() < 0.5 else payload(rng, rng.random() < 0.2)
        world.write_local(path, data)
    editable = [p for p in world.remote_pool if p not in touched]
    for path in rng.sample(editable, min(len(editable), 3)):
        world.write_remote(path, payload(rng, rng.random() < 0.2))
    for i in range(6):
        path = f"d{i}/new-{round_no}-{i}.bin"
        world.write_local(path, payload(rng, big=i == 0))
        world.local_pool.append(path)
        path = f"d{i}/new-{round_no}-{i}.dat"
        world.write_remote(path, payload(rng, big=i == 0))
        world.remote_pool.append(path)


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


def kill_at_random(setup: Setup, rng: random.Random, log: Path, work: int) -> int | None:
    """Start `syncd once` and SIGKILL it at a random moment of its work; its exit code if it
    ended first. `work` estimates how many log events (transfers, deletions, moves, conflicts)
    the run would write: the kill comes a few milliseconds after a random number of them, so
    it lands anywhere in the pass, the end-of-pass deletions included, however long start-up
    takes; with none, after a random 0.05-1.0 s (start-up, listing, the first transfers)."""
    events = rng.randint(0, work)
    delay = rng.uniform(0.05, 1.0) if events == 0 else rng.uniform(0.0, 0.03)
    reached = threading.Event()
    with open(log, "ab") as out:
        out.write(f"--- syncd once, SIGKILL {delay:.3f} s after event {events} ---\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [*SYNCD, "once", "-c", str(setup.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        assert proc.stdout is not None
        output = proc.stdout

        def pump() -> None:
            seen = 0
            for line in output:
                out.write(line)
                seen += line.startswith(b"{")
                if seen >= events:
                    reached.set()
            reached.set()  # the run ended

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        if events:
            reached.wait(120)
        time.sleep(delay)
        finished = proc.poll()
        if finished is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
        output.close()
        out.write(f"--- {'killed' if finished is None else f'exited {finished}'} ---\n".encode())
    return finished


def check_nothing_torn(world: World, when: str) -> None:
    """Each name on either side holds one whole version the test wrote for it (or nothing);
    a conflict copy holds one of its path's two conflicting versions."""
    for side, files in (
        ("local", local_files(world.setup.local)),
        ("remote", world.reader.objects()),
    ):
        for path, data in files.items():
            if path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX):
                continue  # a temp file of an interrupted download, cleaned by the next run
            found = world.copy_of(path)
            allowed = (
                world.versions.get(path, set())
                if found is None
                else {found.local, found.remote} | world.versions.get(path, set())
            )
            assert data in allowed, (
                f"{when}: {side} {path} holds {len(data)} bytes that the test never wrote there"
                + ("" if path in world.versions or found else " (an unexpected name)")
            )


def trash_holds(world: World, path: str, data: bytes, side: str) -> bool:
    """Does the trash of `side` keep `data` for `path` (`<trash>/<STAMP>[-N]/<path>`)?"""
    if side == "local":
        trash = world.setup.local / LOCAL_TRASH
        return any(p.read_bytes() == data for p in trash.glob(f"*/{path}") if p.is_file())
    return any(
        world.remote.get(key) == data
        for key in world.remote.listing()
        if key.startswith(REMOTE_TRASH) and key.split("/", 2)[-1] == path
    )


def convergence_problems(
    world: World, local: dict[str, bytes], remote: dict[str, bytes]
) -> list[str]:
    """After a clean run: how both sides differ from each other and from what the test expects
    (every problem, so one failing run tells the whole story)."""
    problems = []
    temps = [p for p in local if p.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    if temps:
        problems.append(f"temp files left after a clean run: {temps}")
    differ = sorted(p for p in local.keys() | remote.keys() if local.get(p) != remote.get(p))
    if differ:
        problems.append(f"local and remote differ: {differ}")

    copies: dict[str, list[str]] = {path: [] for path in world.conflicts}
    plain: dict[str, bytes] = {}
    for path, data in local.items():
        found = world.copy_of(path)
        if found is not None:
            copies[found.path].append(path)
        else:
            plain[path] = data
    for path, names in sorted(copies.items()):
        found = world.conflicts[path]
        if len(names) != 1:
            problems.append(
                f"conflict on {path} ({found.older} older) left {len(names)} conflict copies, "
                f"not one: {sorted(names)} (holding the older version: "
                f"{[local[n] == found.copied for n in sorted(names)]})"
            )
        elif local[names[0]] != found.copied:
            problems.append(
                f"conflict copy {names[0]} does not hold the older ({found.older}) version"
            )
        if local.get(path) != found.kept:
            problems.append(f"{path} does not hold the newer version of its conflict")

    gone = sorted(p for p in world.deleted.keys() | world.renamed.keys() if p in plain)
    if gone:
        problems.append(f"deleted or renamed-away paths still present: {gone}")
    missing = sorted(world.latest.keys() - plain.keys())
    if missing:
        problems.append(f"files lost: {missing}")
    extra = sorted(plain.keys() - world.latest.keys() - world.deleted.keys() - world.renamed.keys())
    if extra:
        problems.append(f"files the test never wrote there: {extra}")
    wrong = sorted(p for p in plain.keys() & world.latest.keys() if plain[p] != world.latest[p])
    if wrong:
        problems.append(f"files that do not hold the test's latest bytes: {wrong}")
    # A local deletion goes to the remote trash, a remote one to the local trash.
    for path, (side, data) in sorted(world.deleted.items()):
        other = "remote" if side == "local" else "local"
        if not trash_holds(world, path, data, other):
            problems.append(f"{path}, deleted on the {side} side, is not in the {other} trash")
    return problems


@pytest.mark.slow
@pytest.mark.timeout(120 + 40 * max(ROUNDS.values()))
def test_kill_9_at_random_moments_loses_and_tears_nothing(tmp_path: Path, remote: Remote) -> None:
    # Info, not debug: botocore's debug logging would slow every run several times over.
    quiet = {"log": {"level": "info", "format": "json"}}
    # Keep both versions of a conflict; a round's few deletions are no fault to hold back.
    both = {"conflict": "version_preserve", "max_delete": 100}
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=quiet, pair_extra=both)
    setup.write()
    world = World(setup, remote)
    populate(world, random.Random(SEED))
    logs = tmp_path / "rounds"
    logs.mkdir()

    outcomes: list[int | None] = []
    work = LOCAL_FILES + REMOTE_FILES
    rounds = ROUNDS[remote.kind]
    for round_no in range(rounds):
        rng = random.Random(SEED + round_no + 1)
        log = logs / f"round-{round_no:02d}.log"
        outcomes.append(kill_at_random(setup, rng, log, work))
        when = f"round {round_no} (seed {SEED + round_no + 1}, log {log})"
        check_nothing_torn(world, when)
        assert integrity(setup.state_db, tmp_path / "dbcheck") == "ok", when
        world.journal.clear()
        planned = planned_paths(setup, log)
        modify(world, rng, round_no, planned)
        with open(log, "a") as out:
            out.write("\n--- the test then changed ---\n" + "\n".join(world.journal) + "\n")
        work = len(planned) + len(world.journal)  # what the next run has to do, roughly

    final = syncd("once", "-c", setup.config, timeout=300)
    (logs / "final.log").write_text(f"exit {final.returncode}\n{final.stdout}{final.stderr}")
    assert final.returncode == 0, f"{final.stdout}\n{final.stderr[-3000:]}"
    check_nothing_torn(world, "after the clean run")
    problems = convergence_problems(world, local_files(setup.local), world.reader.objects())
    summary = "\n".join(problems)
    assert not problems, f"after {rounds} rounds (seed {SEED}, logs in {logs}):\n{summary}"
    assert integrity(setup.state_db, tmp_path / "dbcheck") == "ok"

    again = syncd("once", "-c", setup.config, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 uploaded, 0 downloaded" in again.stdout, again.stdout
    # The kills are meant to land mid-run: at least one round must not have finished.
    assert None in outcomes, f"every run finished before its kill: {outcomes}"


def test_a_download_is_on_disk_before_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut can take a rename the state's commit outlived: the record of a download
    the disk lost then reads the older file left in place as a local edit, sent up over the
    newer version (and from there down over every other machine's). The folder of each
    downloaded file is flushed after the rename and before the record is written."""
    from harness import folder_engine

    from syncd.state import BaseEntry, OpRecord
    from syncd.state.store import StateStore

    events: list[tuple[str, str]] = []
    local = tmp_path / "local"
    real_fsync, real_put = os.fsync, StateStore.put

    def fsync(fd: int) -> None:
        where = os.readlink(f"/proc/self/fd/{fd}")
        if where.startswith(str(local)):
            events.append(("flushed", os.path.relpath(where, local)))
        real_fsync(fd)

    def put(self: StateStore, pair: str, entry: BaseEntry, op: OpRecord | None = None) -> None:
        events.append(("recorded", entry.path))
        real_put(self, pair, entry, op)

    (tmp_path / "remote" / "sub").mkdir(parents=True)
    (tmp_path / "remote" / "sub" / "a.txt").write_bytes(b"from the remote")
    (tmp_path / "remote" / "top.txt").write_bytes(b"top")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(StateStore, "put", put)
    with folder_engine(tmp_path) as engine:
        assert engine.sync_once().exit_code == 0
    assert (local / "sub" / "a.txt").read_bytes() == b"from the remote"
    for path, folder in (("sub/a.txt", "sub"), ("top.txt", ".")):
        recorded = events.index(("recorded", path))
        assert ("flushed", folder) in events[:recorded], (path, events)

"""The state database: migrations from older schemas, refusal of newer ones, integrity."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Setup, folder_setup, syncd, tree, wait_for

from syncd.state import BaseEntry, OpRecord, RemoteSeen, StateError, StateStore, schema
from syncd.state.schema import SCHEMA_VERSION
from syncd.state.store import DEFER_ROWS


def _v1_database(path: Path) -> None:
    """The schema as the first release wrote it (no ctime_ns column)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE files (pair VARCHAR(64), path TEXT, size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL, inode BIGINT NOT NULL, sha256 VARCHAR(64),
            remote_etag TEXT, remote_version TEXT, synced_at FLOAT NOT NULL,
            PRIMARY KEY (pair, path));
        INSERT INTO files VALUES ('docs', 'a.txt', 3, 100, 7, 'h', 'e', NULL, 1.0);
        """
    )
    db.commit()
    db.close()


def test_an_older_schema_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _v1_database(path)
    store = StateStore(f"sqlite:///{path}")
    try:
        entry = store.get("docs", "a.txt")
        assert entry is not None and (entry.size, entry.ctime_ns) == (3, 0)
        store.put("docs", BaseEntry("b.txt", 1, 2, 3, None, "e2", 4.0, ctime_ns=99))
        fetched = store.get("docs", "b.txt")
        assert fetched is not None and fetched.ctime_ns == 99
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    db = sqlite3.connect(path)
    version = db.execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    # A move's source is found through the content index, not by scanning one size's files.
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM files WHERE pair = ? AND size = ? AND sha256 = ?",
        ("docs", 3, "h"),
    ).fetchall()
    assert any("files_content" in str(row) for row in plan), plan
    db.close()


def test_a_newer_schema_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StateError) as caught:
        StateStore(f"sqlite:///{path}")
    message = str(caught.value)
    assert "newer syncd" in message and "syncd state rebuild" in message
    assert "\n" not in message


def _synced_folder_pair(tmp_path: Path) -> tuple[Setup, Path]:
    """A folder pair synced once: `mine.txt` from the local side, `theirs.txt` from the
    remote, both now on both sides and in the state."""
    setup, remote = folder_setup(tmp_path)
    setup.write()
    (setup.local / "mine.txt").write_bytes(b"local")
    (remote / "theirs.txt").write_bytes(b"remote")
    assert syncd("once", "-c", setup.config).returncode == 0
    return setup, remote


@pytest.mark.parametrize(
    ("version", "kept_as", "says"),
    [
        (str(SCHEMA_VERSION + 1), "state.db.newer-*", "newer syncd"),
        ("four", "state.db.corrupt-*", "not a number"),
    ],
    ids=["newer schema", "damaged version"],
)
def test_a_state_syncd_cannot_use_is_refused_and_rebuild_does_what_the_refusal_says(
    tmp_path: Path, version: str, kept_as: str, says: str
) -> None:
    """The refusal points to `syncd state rebuild`: that command then works (it had refused
    a newer schema with the very same line, and a version that is not a number was a
    traceback everywhere); the file is kept beside, and the first sync deletes nothing."""
    setup, remote = _synced_folder_pair(tmp_path)
    db = sqlite3.connect(setup.state_db)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    db.commit()
    db.close()
    (remote / "mine.txt").unlink()  # a change the forgotten state cannot explain

    for command in ("once", "run"):
        refused = syncd(command, "-c", setup.config)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert says in refused.stderr and "syncd state rebuild" in refused.stderr

    rebuilt = syncd("state", "rebuild", "-c", setup.config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    kept = list(setup.state_db.parent.glob(kept_as))
    assert [p.name for p in kept if not p.name.endswith(("-wal", "-shm"))], kept

    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stderr
    assert tree(setup.local) == tree(remote) == {"mine.txt": b"local", "theirs.txt": b"remote"}


def test_open_conflicts_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    store.add_conflict("docs", "x.txt", "changed on both sides")
    store.close()
    again = StateStore(url)
    try:
        assert [(p, path) for p, path, _, _ in again.conflicts()] == [("docs", "x.txt")]
        assert again.clear_conflict("docs", "x.txt")
        assert again.conflicts() == []
    finally:
        again.close()


def _files_table_damaged(db: Path) -> bytes:
    """The database with the `files` table's root page overwritten: the open reads only the
    schema and the meta row, so only a check of the whole file sees it."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'files'").fetchone()
        (page,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page : root * page] = b"\xa5" * page
    return bytes(data)


@pytest.mark.parametrize(
    "damage",
    [
        lambda _: b"\x00\x13not sqlite at all" * 512,
        lambda _: b"SQLite format 3\x00" + b"garbage" * 600,
        _files_table_damaged,
    ],
    ids=["random bytes", "torn header", "a table's page"],
)
def test_a_corrupt_database_is_refused_then_rebuilt_without_losing_files(
    tmp_path: Path, damage: Callable[[Path], bytes]
) -> None:
    """Refused in one line that points to `syncd state rebuild`, which keeps the damaged file
    and starts over. Damage past the pages the open reads (a table's page) was found only by
    the first read of it, in the middle of a pass: a traceback out of `syncd once`."""
    setup, remote = _synced_folder_pair(tmp_path)
    garbage = damage(setup.state_db)
    setup.state_db.write_bytes(garbage)
    for leftover in ("-wal", "-shm"):
        Path(f"{setup.state_db}{leftover}").unlink(missing_ok=True)
    (remote / "mine.txt").unlink()  # a change the lost state cannot explain

    refused = syncd("once", "-c", setup.config)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "syncd state rebuild" in refused.stderr

    rebuilt = syncd("state", "rebuild", "-c", setup.config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    kept = [
        path
        for path in setup.state_db.parent.glob("state.db.corrupt-*")
        if not path.name.endswith(("-wal", "-shm"))  # SQLite's own, moved aside with it
    ]
    assert len(kept) == 1 and kept[0].read_bytes() == garbage  # kept for a post-mortem

    # A first sync: nothing is deleted, the file missing remotely goes up again.
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stderr
    assert tree(setup.local) == tree(remote) == {"mine.txt": b"local", "theirs.txt": b"remote"}


def test_records_from_many_threads_all_land_and_one_bad_record_fails_alone(
    tmp_path: Path,
) -> None:
    """Group commit: 16 threads record 50 files each; every record is there once, the counters
    add up, and a record that violates the schema fails its own writer only."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        for i in range(50):
            path = f"t{n}/f{i}"
            entry = BaseEntry(path, i, 1, 2, "h", "e", 3.0)
            try:
                store.put(
                    "docs",
                    entry,
                    OpRecord(ts=0, pair="docs", path=path, op="upload", result="ok", size=i),
                )
                if i == 25 and n == 3:
                    # NULL into a NOT NULL column: this write must fail, and only this one
                    store.put("docs", BaseEntry("bad", None, 1, 2, None, None, 3.0))  # type: ignore[arg-type]
            except Exception as exc:
                errors.append(exc)

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 1
        entries = store.entries("docs")
        assert len(entries) == 16 * 50 and "bad" not in entries
        assert store.counters("docs")["files_up"] == 16 * 50
        assert store.counters("docs")["bytes_up"] == 16 * sum(range(50))
        assert len(store.ops("docs")) == 16 * 50
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_held_move_indexes_follow_writes_after_their_first_use(tmp_path: Path) -> None:
    """The held copy builds its size and content indexes at the first lookup; writes after
    that keep them current (a replaced entry leaves its old size and content)."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.put("docs", BaseEntry("a", 10, 1, 1, "sha-a", "e1", 1.0))
        store.hold("docs")
        assert store.has_size("docs", 10)
        assert [e.path for e in store.with_content("docs", 10, "sha-a")] == ["a"]
        store.put("docs", BaseEntry("a", 30, 2, 1, "sha-c", "e3", 2.0))
        store.put("docs", BaseEntry("b", 10, 2, 2, "sha-b", "e4", 2.0))
        assert store.has_size("docs", 30) and store.has_size("docs", 10)
        assert store.with_content("docs", 10, "sha-a") == []
        assert [e.path for e in store.with_content("docs", 30, "sha-c")] == ["a"]
        store.forget("docs", ["b"])
        assert not store.has_size("docs", 10)
        store.release("docs")
        assert not store.has_size("docs", 10)
        assert [e.size for e in store.with_content("docs", 30, "sha-c")] == [30]
    finally:
        store.close()


def test_held_entries_answer_from_memory_and_stay_current(tmp_path: Path) -> None:
    """`hold` keeps a pair's entries in memory for a pass: lookups agree with the database
    after every kind of write, and a snapshot read while a write landed is not kept."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.put("docs", BaseEntry("a", 10, 1, 1, "sha-a", "e1", 1.0))
        store.put("docs", BaseEntry("b", 20, 1, 2, "sha-b", "e2", 1.0))
        assert set(store.hold("docs")) == {"a", "b"}

        def agree(path: str, size: int, sha256: str) -> None:
            held = (
                store.get("docs", path),
                store.has_size("docs", size),
                sorted(e.path for e in store.with_content("docs", size, sha256)),
            )
            store.release("docs")
            fresh = (
                store.get("docs", path),
                store.has_size("docs", size),
                sorted(e.path for e in store.with_content("docs", size, sha256)),
            )
            assert held == fresh
            store.hold("docs")

        agree("a", 10, "sha-a")
        store.put("docs", BaseEntry("a", 30, 2, 1, "sha-c", "e3", 2.0))  # new content
        agree("a", 10, "sha-a")
        agree("a", 30, "sha-c")
        store.put("docs", BaseEntry("c", 30, 3, 3, "sha-c", "e4", 2.0))
        agree("c", 30, "sha-c")
        store.forget("docs", ["a"])
        agree("a", 30, "sha-c")
        # Written behind, a bad record fails at its commit, alone: the held copy is dropped
        # (it no longer matches the database), the good record beside it lands.
        store.put("docs", BaseEntry("bad", None, 1, 2, None, None, 3.0))  # type: ignore[arg-type]
        store.put("docs", BaseEntry("e", 6, 1, 5, "sha-e", "e6", 3.0))
        store.flush()
        assert "docs" not in store._held
        assert store.get("docs", "bad") is None
        assert store.get("docs", "e") is not None
        store.release("docs")

        # A write that lands while the snapshot is being read: the snapshot is not kept.
        read = store.entries

        def racing_read(pair: str) -> dict[str, BaseEntry]:
            entries = read(pair)
            store.put("docs", BaseEntry("d", 5, 1, 4, "sha-d", "e5", 3.0))
            return entries

        store.entries = racing_read  # type: ignore[method-assign]
        store.hold("docs")
        store.entries = read  # type: ignore[method-assign]
        assert store.get("docs", "d") is not None  # from the database, not a stale snapshot
    finally:
        store.close()


def _committed(db: Path) -> set[str]:
    """The paths committed to the database, as another process would see them."""
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM files")}


def test_a_pass_writes_its_records_behind_and_commits_them_after_its_barrier(
    tmp_path: Path,
) -> None:
    """During a held pass `put` returns before its record is committed; the records land at
    `release`, only after the pair's barrier (which makes the transfers durable) has run;
    before any other write of the database; and at the latest when DEFER_ROWS wait."""
    db = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{db}")
    seen_at_barrier: list[set[str]] = []
    try:
        store.hold("docs", barrier=lambda: seen_at_barrier.append(_committed(db)))
        for name in ("a", "b"):
            store.put(
                "docs",
                BaseEntry(name, 1, 1, 1, "h", "e", 1.0),
                OpRecord(ts=0, pair="docs", path=name, op="upload", result="ok", size=1),
            )
        assert store.get("docs", "a") is not None  # the pass sees its own records
        assert _committed(db) == set()  # ...the database does not, yet
        store.release("docs")
        assert seen_at_barrier == [set()]  # the barrier ran before the commit
        assert _committed(db) == {"a", "b"}
        assert store.counters("docs")["files_up"] == 2

        # Another write commits what waits first: a forget lands after the put it follows.
        store.hold("docs")
        store.put("docs", BaseEntry("c", 1, 1, 1, "h", "e", 1.0))
        store.forget("docs", ["c"])
        assert _committed(db) == {"a", "b"}
        store.release("docs")
        assert _committed(db) == {"a", "b"}

        # A long pass does not keep everything in memory until its end.
        store.hold("docs")
        for i in range(DEFER_ROWS):
            store.put("docs", BaseEntry(f"many/{i}", 1, 1, 1, "h", "e", 1.0))
        assert len(_committed(db)) == 2 + DEFER_ROWS
        store.release("docs")
    finally:
        store.close()


def test_records_whose_barrier_fails_are_not_committed(tmp_path: Path) -> None:
    """A barrier that fails (the disk would not flush) keeps its pair's records out of the
    database: they would describe transfers a power cut could take back. The next pass
    compares those files afresh."""
    db = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{db}")

    def failing() -> None:
        raise OSError(5, "Input/output error")

    try:
        store.hold("docs", barrier=failing)
        store.put("docs", BaseEntry("a", 1, 1, 1, "h", "e", 1.0))
        store.put("other", BaseEntry("b", 1, 1, 1, "h", "e", 1.0))  # not this pair's barrier
        store.release("docs")
        assert _committed(db) == {"b"}
        assert store.get("docs", "a") is None
        # Outside a held pass the writer waits for its record, so it sees the failure.
        store.hold("docs", barrier=failing)
        store.release("docs")
        store._barriers["docs"] = failing
        with pytest.raises(OSError, match="Input/output"):
            store.put("docs", BaseEntry("c", 1, 1, 1, "h", "e", 1.0))
        assert _committed(db) == {"b"}
    finally:
        store.close()


def test_closing_the_store_commits_records_written_behind(tmp_path: Path) -> None:
    """A pass whose end was skipped (an exception past `release`) still has its records
    committed when the store closes."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    store.hold("docs")
    store.put("docs", BaseEntry("a", 1, 1, 1, "h", "e", 1.0))
    store.close()
    again = StateStore(url)
    try:
        assert again.get("docs", "a") is not None
    finally:
        again.close()


def test_a_deferring_pair_writes_behind_and_commits_after_its_barrier(tmp_path: Path) -> None:
    """A daemon's folder-remote pair (`defer`): `put` returns with its record queued; the
    background flush commits it within DEFER_AFTER_S, after the barrier; a read of a waiting
    path, or of the whole pair, commits first, so no decision sees an older base."""
    db = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{db}")
    seen_at_barrier: list[set[str]] = []
    try:
        store.defer("docs", barrier=lambda: seen_at_barrier.append(_committed(db)))
        store.put("docs", BaseEntry("old", 1, 1, 1, "h", "e0", 1.0))
        wait_for(lambda: _committed(db) == {"old"}, timeout=5)  # nobody read: the flusher
        assert seen_at_barrier[-1] == set()  # the barrier ran before that commit

        store.put("docs", BaseEntry("old", 2, 2, 2, "h2", "e1", 2.0))  # a newer version
        store.put("docs", BaseEntry("new", 1, 1, 1, "h", "e", 1.0))
        entry = store.get("docs", "old")
        assert entry is not None and entry.remote_etag == "e1"  # the newer, committed first
        assert store.get("docs", "new") is not None
        assert _committed(db) == {"old", "new"}

        store.put("docs", BaseEntry("third", 1, 1, 1, "h", "e", 1.0))
        assert store.count("docs") == 3
        store.put("docs", BaseEntry("fourth", 1, 1, 1, "h", "e", 1.0))
        assert set(store.entries("docs")) == {"old", "new", "third", "fourth"}
        assert not store._deferred["docs"]  # nothing waits any more

        store.put("docs", BaseEntry("last", 1, 1, 1, "h", "e", 1.0))
        store.undefer("docs")  # what waits is committed first
        assert "last" in _committed(db)
        barriers_run = len(seen_at_barrier)
        store.put("docs", BaseEntry("after", 1, 1, 1, "h", "e", 1.0))  # synchronous again
        assert "after" in _committed(db) and len(seen_at_barrier) == barriers_run
    finally:
        store.close()


def test_recorded_since_sees_records_held_and_written_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entries recorded at or after a time, in one read: from the database, from a
    pass's held copy, and with a deferring pair's waiting records committed first."""
    db = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{db}")
    try:
        store.put("docs", BaseEntry("old", 1, 1, 1, "h0", "e0", 1.0))
        store.put("docs", BaseEntry("new", 1, 1, 1, "h1", "e1", 5.0))
        store.put("other", BaseEntry("new", 1, 1, 1, "h2", "e2", 5.0))
        assert store.recorded_since("docs", 5.0) == {"new": store.get("docs", "new")}

        store.hold("docs")
        store.put("docs", BaseEntry("held", 1, 1, 1, "h3", "e3", 6.0))  # written behind
        assert set(store.recorded_since("docs", 5.0)) == {"new", "held"}
        store.release("docs")

        monkeypatch.setattr(StateStore, "_flush_deferred", lambda _store: None)  # no background
        store.defer("docs", barrier=lambda: None)
        store.put("docs", BaseEntry("deferred", 1, 1, 1, "h4", "e4", 7.0))
        assert "deferred" not in _committed(db)
        found = store.recorded_since("docs", 6.0)
        assert {path: entry.sha256 for path, entry in found.items()} == {
            "held": "h3",
            "deferred": "h4",
        }
    finally:
        store.close()


def test_a_deferring_pairs_lost_records_are_reported_by_path(tmp_path: Path) -> None:
    """When the barrier fails the records are not committed (they would describe uploads a
    power cut could take back) and the pair's listener hears which paths they were, so the
    daemon retries them; nothing is left waiting, and the next read is of the database."""
    db = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{db}")
    lost: list[tuple[str, list[str], str]] = []

    def failing() -> None:
        raise OSError(5, "Input/output error")

    try:
        store.defer(
            "docs", barrier=failing, on_lost=lambda p, paths, e: lost.append((p, paths, str(e)))
        )
        store.put("docs", BaseEntry("a", 1, 1, 1, "h", "e", 1.0))
        store.put("docs", BaseEntry("b", 1, 1, 1, "h", "e", 1.0))
        assert store.get("docs", "a") is None
        store.flush()  # "b" too, whichever commit it was in
        assert sorted(path for _, paths, _ in lost for path in paths) == ["a", "b"]
        assert {(pair, error) for pair, _, error in lost} == {
            ("docs", "[Errno 5] Input/output error")
        }
        assert _committed(db) == set() and not store._deferred["docs"]
    finally:
        store.undefer("docs")
        store.close()


def test_closing_the_store_commits_a_deferring_pairs_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    ran: list[bool] = []
    store.defer("docs", barrier=lambda: ran.append(True))
    store.put("docs", BaseEntry("a", 1, 1, 1, "h", "e", 1.0))
    store.close()
    assert ran
    again = StateStore(url)
    try:
        assert again.get("docs", "a") is not None
    finally:
        again.close()


def test_remote_etags_are_the_entries_version_tokens_of_one_pair(tmp_path: Path) -> None:
    """What a daemon's poll compares a listing with: `entries`, reduced to what
    `decide.remote_state` reads."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.put("docs", BaseEntry("a.txt", 1, 1, 1, "h1", "e1", 1.0))
        store.put("docs", BaseEntry("sub/b.txt", 2, 2, 2, "h2", None, 1.0))  # not yet uploaded
        store.put("other", BaseEntry("a.txt", 3, 3, 3, "h3", "e3", 1.0))
        store.put("docs", BaseEntry("a.txt", 4, 4, 4, "h4", "e4", 2.0, remote_version="9"))

        assert store.remote_etags("docs") == {
            "a.txt": RemoteSeen("e4", "9", 4, 2.0),
            "sub/b.txt": RemoteSeen(None, None, 2, 1.0),
        }
        assert store.remote_etags("docs") == {
            path: RemoteSeen(e.remote_etag, e.remote_version, e.mtime_ns, e.synced_at)
            for path, e in store.entries("docs").items()
        }
        assert store.get("docs", "a.txt") == store.entries("docs")["a.txt"]
        assert store.entries("docs")["a.txt"].remote_version == "9"
        assert store.remote_etags("nobody") == {}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("a", ["a/b", "a/b/c", "a/é"]),
        ("a/b", ["a/b/c"]),
        ("a/", ["a/b", "a/b/c", "a/é"]),
        ("ab", ["ab/x"]),
        ("a-b", []),
        ("é", ["é/x"]),
    ],
)
def test_paths_under_a_folder(tmp_path: Path, folder: str, expected: list[str]) -> None:
    """Exactly the entries inside the folder: not its namesakes ('a' vs 'a-b', 'a0', 'ab')."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        for path in ["a", "a-b", "a.txt", "a/b", "a/b/c", "a/é", "a0", "ab/x", "é/x"]:
            store.put("docs", BaseEntry(path, 1, 1, 1, None, "e", 1.0))
        store.put("other", BaseEntry("a/b", 1, 1, 1, None, "e", 1.0))
        assert sorted(store.paths_under("docs", folder)) == expected
    finally:
        store.close()


def test_each_pair_has_its_own_writer_id_until_its_state_is_forgotten(tmp_path: Path) -> None:
    """The id a pair's uploads carry (syncd/engine/origin.py): random per pair, kept across
    restarts, and new after `state rebuild` (which forgets the pair)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    docs, photos = store.writer_id("docs"), store.writer_id("photos")
    assert docs != photos
    assert store.writer_id("docs") == docs
    store.close()

    store = StateStore(url)
    assert store.writer_id("docs") == docs
    store.forget("docs", ["some/path"])  # forgetting paths keeps the id
    assert store.writer_id("docs") == docs
    store.forget("docs")
    assert store.writer_id("docs") != docs
    assert store.writer_id("photos") == photos
    store.close()
    other = StateStore(f"sqlite:///{tmp_path / 'other.db'}")
    assert other.writer_id("docs") != docs
    other.close()


def test_a_pair_moved_to_another_server_starts_over_with_a_first_sync(tmp_path: Path) -> None:
    """The same bucket and prefix on another server (`options.endpoint_url`, or boto3's
    variable) is another remote. The state was bound to the URL alone: the new server's
    bucket, lacking a few files, made them look deleted there, and they went to the local
    trash. Now the state is forgotten, as for another URL: nothing is deleted."""
    import boto3
    from emulators import start_moto

    servers = [start_moto(), start_moto()]
    try:
        for server in servers:
            boto3.client(
                "s3",
                endpoint_url=server.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket="team")
        setup = Setup(
            tmp_path, "s3://team/docs/", options={"endpoint_url": servers[0].endpoint_url}
        )
        setup.write()
        names = [f"f{i}.txt" for i in range(10)]
        for name in names:
            (setup.local / name).write_text(name)
        assert syncd("once", "-c", setup.config).returncode == 0
        # The second server holds a copy of half the files only: a mirror still filling.
        new = Setup(tmp_path, "s3://team/docs/", options={"endpoint_url": servers[1].endpoint_url})
        new.write()
        mirror = boto3.client(
            "s3",
            endpoint_url=servers[1].endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in names[:5]:
            mirror.put_object(Bucket="team", Key=f"docs/{name}", Body=name.encode())
        result = syncd("once", "-c", new.config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "5 uploaded, 0 downloaded" in result.stdout and "0 deleted" in result.stdout
        assert sorted(p.name for p in setup.local.glob("*.txt")) == names
        listed = mirror.list_objects_v2(Bucket="team", Prefix="docs/")["Contents"]
        assert sorted(o["Key"].removeprefix("docs/") for o in listed) == names
        assert not (setup.local / ".syncd" / "trash").exists()
    finally:
        for server in servers:
            server.stop()


def test_a_state_syncd_cannot_make_or_must_not_use_is_one_line(tmp_path: Path) -> None:
    """`state:` under a file, in a folder syncd may not write, naming a folder or a pipe (or
    `/dev/null`: run as root, syncd made `/dev/null.lock`), or naming another program's
    SQLite database: one line naming the key and the file, exit 1, no traceback. The other program's
    database was given syncd's tables (and its own `files` table read as syncd's)."""
    import subprocess

    import yaml
    from harness import SYNCD, require_without_dac

    setup, _ = folder_setup(tmp_path)
    setup.write()
    (setup.local / "a.txt").write_text("a")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    notes = tmp_path / "notes.db"
    with sqlite3.connect(notes) as db:
        db.execute("CREATE TABLE files (title TEXT, body TEXT)")
        db.execute("INSERT INTO files VALUES ('my note', 'precious')")
    db.close()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    folder, pipe = tmp_path / "a-folder", tmp_path / "a-pipe"
    folder.mkdir()
    os.mkfifo(pipe)
    cases = [
        ([], folder, f"state: {folder} is a folder, not a database file"),
        ([], pipe, f"state: {pipe} is not a regular file"),
        (
            [],
            blocker / "state.db",
            f"state: cannot create {blocker / 'state.db'}: {blocker}: Not a directory",
        ),
        ([], notes, "is not syncd's (it holds tables of another program: files)"),
        (
            require_without_dac(),
            locked / "state.db",
            f"state: cannot create {locked / 'state.db'}: {locked}: Permission denied",
        ),
    ]
    for prefix, state, said in cases:
        doc = yaml.safe_load(setup.config.read_text())
        doc["state"] = f"sqlite:///{state}"
        setup.config.write_text(yaml.safe_dump(doc))
        for command in (["once"], ["state", "rebuild"]):
            result = subprocess.run(
                [*prefix, *SYNCD, *command, "-c", str(setup.config)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 1, (command, result.stderr)
            assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr
    with sqlite3.connect(notes) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        rows = db.execute("SELECT * FROM files").fetchall()
    db.close()
    assert (tables, rows) == ([("files",)], [("my note", "precious")])
    assert list(locked.iterdir()) == []
    assert not (tmp_path / "a-folder.lock").exists() and not (tmp_path / "a-pipe.lock").exists()


def test_a_place_recorded_without_its_server_is_kept_over_an_upgrade(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A syncd from before places named the server recorded `local <-> url` alone: the
    upgrade took that for another remote, forgot the state, and the first sync brought
    back a file the user had deleted meanwhile. It is the same place."""
    from remotes import remote_for

    remote = remote_for("s3", request, tmp_path)
    setup = Setup(tmp_path, remote.url, options=remote.options)
    setup.write()
    for name in ("keep.txt", "gone.txt"):
        (setup.local / name).write_text(name)
    assert syncd("once", "-c", setup.config).returncode == 0
    with sqlite3.connect(setup.state_db) as db:
        (key, place) = db.execute("SELECT key, value FROM meta WHERE key LIKE 'place:%'").fetchone()
        assert place.endswith(f" at {remote.options['endpoint_url']}")
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (place.rsplit(" at ", 1)[0], key))
    db.close()
    (setup.local / "gone.txt").unlink()
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local or remote changed" not in result.stderr
    assert not (setup.local / "gone.txt").exists()
    assert remote.read("gone.txt") is None and remote.read("keep.txt") == b"keep.txt"


def test_root_is_refused_on_a_state_another_user_keeps(tmp_path: Path) -> None:
    """The system service keeps its state as the `syncd` user. A `resolve` (or `once`) run
    as root with the service stopped left root's trash folder in the pair root: every later
    deletion of the service failed there. Now root is told to run as that user, exit 2."""
    import os

    from harness import unavailable_here

    if os.geteuid() != 0:
        unavailable_here("only root can be refused a state another user keeps")
    setup, _ = folder_setup(tmp_path)
    setup.write()
    (setup.local / "a.txt").write_text("a")
    assert syncd("once", "-c", setup.config).returncode == 0
    os.chown(setup.state_db, 65534, 65534)
    for command in (["once"], ["state", "rebuild"]):
        result = syncd(*command, "-c", setup.config)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"syncd: state {setup.state_db} belongs to user ")
        assert "run this as that user (sudo -u " in result.stderr


def test_a_migration_cut_short_after_its_column_was_added_is_finished(tmp_path: Path) -> None:
    """Migration 1 adds `files.ctime_ns`, then bumps the version. Cut short in between (a
    full disk, a kill), the column was there and the version still 1: every later open,
    `syncd state rebuild`'s included, failed on "duplicate column name"."""
    path = tmp_path / "state.db"
    _v1_database(path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE files ADD COLUMN ctime_ns BIGINT NOT NULL DEFAULT 0")
    db.commit()
    db.close()
    store = StateStore(f"sqlite:///{path}")
    try:
        entry = store.get("docs", "a.txt")
        assert entry is not None and (entry.size, entry.ctime_ns) == (3, 0)
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()


def test_a_migration_that_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps of a migration and the version bump commit together: a step that fails
    (here a last one that cannot run) leaves the database as it was, and the next open with
    the real steps migrates it."""
    path = tmp_path / "state.db"
    _v1_database(path)
    failing = {**schema.MIGRATIONS, 3: [*schema.MIGRATIONS[3], "SELECT nosuch FROM files"]}
    monkeypatch.setattr(schema, "MIGRATIONS", failing)
    with pytest.raises(StateError, match="nosuch"):
        StateStore(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(files)")]
    indexes = [row[1] for row in db.execute("PRAGMA index_list(files)")]
    assert db.execute("SELECT value FROM meta").fetchone()[0] == "1"
    db.close()
    assert "ctime_ns" not in columns and "files_content" not in indexes
    monkeypatch.undo()
    StateStore(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()


@pytest.mark.parametrize(
    ("options", "recorded", "kept"),
    [
        # As an older syncd wrote the server, or the same server spelled another way now.
        ({"endpoint_url": "http://minio"}, "http://minio:80", True),
        ({"endpoint_url": "HTTPS://MinIO:443/"}, "https://minio", True),
        ({"endpoint_url": "http://minio:9000"}, "http://minio:9000", True),
        ({"endpoint_url": "http://minio:9000"}, "http://minio:9001", False),
    ],
)
def test_a_servers_spelling_does_not_forget_a_pairs_state(
    tmp_path: Path, options: dict[str, str], recorded: str, kept: bool
) -> None:
    """The state is bound to the server (`served_by`), which two pairs on it may not share a
    prefix of: a spelling that the overlap check takes for the same server keeps the state
    too, and so does the spelling an older syncd recorded (default ports kept)."""
    from syncd.config import load_config
    from syncd.engine.core import pair_place, stale_places

    setup = Setup(tmp_path, "s3://team/docs/", options=options)
    setup.write()
    config = load_config(setup.config)
    pair = config.pairs[0]
    store = StateStore(config.state)
    try:
        store.put(pair.name, BaseEntry("a.txt", 1, 1, 1, "h", "e", 1.0))
        store.set_place(pair.name, f"{pair_place(pair).partition(' at ')[0]} at {recorded}")
    finally:
        store.close()
    assert stale_places(config) is not kept


@pytest.mark.parametrize(
    ("options", "recorded", "kept"),
    [
        ({"account_name": "team"}, "team", True),
        ({"account_url": "https://team.blob.core.windows.net/", "sas_token": "sv=x"}, "team", True),
        ({"connection_string": "UseDevelopmentStorage=true"}, "devstoreaccount1", True),
        ({"account_name": "other"}, "team", False),
        (
            {"connection_string": "AccountName=team;AccountKey=a2V5;EndpointSuffix=x.cn"},
            "team",
            True,
        ),
    ],
)
def test_an_azure_account_recorded_by_name_keeps_its_state(
    tmp_path: Path, options: dict[str, str], recorded: str, kept: bool
) -> None:
    """An older syncd bound an Azure pair's state to the account's name (`team`); now to its
    blob endpoint, which the name, the URL or a connection string all give."""
    from syncd.config import load_config
    from syncd.engine.core import pair_place, stale_places

    setup = Setup(tmp_path, "az://team-box/docs/", options=options)
    setup.write()
    config = load_config(setup.config)
    pair = config.pairs[0]
    store = StateStore(config.state)
    try:
        store.put(pair.name, BaseEntry("a.txt", 1, 1, 1, "h", "e", 1.0))
        store.set_place(pair.name, f"{pair_place(pair).partition(' at ')[0]} at {recorded}")
    finally:
        store.close()
    assert stale_places(config) is not kept


@pytest.mark.parametrize(
    ("endpoint", "environ", "recorded_server"),
    [
        ("http://[::1]:9000", {}, "http://::1:9000"),  # an IPv6 host lost its brackets
        (None, {"AWS_ENDPOINT_URL": "http://minio:9000"}, "http://minio:9000"),
    ],
    ids=["ipv6", "ignored-variable"],
)
def test_a_place_spelled_by_an_older_syncd_is_this_pairs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None,
    environ: dict[str, str],
    recorded_server: str,
) -> None:
    """Servers are spelled one way since f7e62a1; a place recorded with the old spelling must
    still be the pair's, or its state is forgotten (a first sync). `same_server` cannot read
    an IPv6 host written without brackets back, and an endpoint variable recorded then may
    be one AWS_IGNORE_CONFIGURED_ENDPOINT_URLS now ignores."""
    from syncd.config import load_config_dict
    from syncd.engine.core import _folder_and_url, same_place

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    if environ:
        monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    pair_dict: dict[str, object] = {
        "name": "p",
        "local": str(tmp_path / "l"),
        "remote": "s3://bucket/p/",
    }
    if endpoint is not None:
        pair_dict["options"] = {"endpoint_url": endpoint}
    pair = load_config_dict({"pairs": [pair_dict]}, expand_env=False).pairs[0]
    assert same_place(f"{_folder_and_url(pair)} at {recorded_server}", pair)
    assert not same_place(f"{_folder_and_url(pair)} at http://elsewhere:9000", pair)

"""The state database: migrations from older schemas, refusal of newer ones, integrity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncd.state import BaseEntry, StateError, StateStore
from syncd.state.schema import SCHEMA_VERSION


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
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION)


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

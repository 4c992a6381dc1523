"""Bad days on the local disk: a full disk while downloading, a file or a folder that cannot
be read, a file that becomes a folder and back. Each is a per-file problem: reported, retried
later, and never a reason to delete anything on the other side.

The suite runs as root here, which reads through any permission bits; unreadable paths are
therefore injected (the open / scandir of one path raises EACCES). A full disk is a real small
tmpfs where this machine lets the test mount one, else an injected ENOSPC.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import (
    SYNCD,
    Setup,
    folder_setup,
    require_without_dac,
    small_disk,
    syncd,
    tree,
    unavailable_here,
)

from syncd.config import load_config_dict
from syncd.engine import localfs, transfer, trash
from syncd.engine.core import Engine, Report
from syncd.engine.syncer import Outcome
from syncd.providers.local import FileProvider
from syncd.state import BaseEntry, OpRecord, StateStore, StateWriteError

MiB = 1024 * 1024
_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _engine(local: Path, remote: Path, tmp_path: Path, **pair: str) -> Engine:
    config = load_config_dict(
        {
            "state": f"sqlite:///{tmp_path / 'state.db'}",
            "socket": str(tmp_path / "syncd.sock"),
            "workers": 2,
            "pairs": [{"name": "p", "local": str(local), "remote": f"file://{remote}", **pair}],
        },
        expand_env=False,
    )
    return Engine(config)


def _sync(local: Path, remote: Path, tmp_path: Path, **pair: str) -> Report:
    with _engine(local, remote, tmp_path, **pair) as engine:
        return engine.sync_once()


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".syncd-tmp-")]


# -- a full disk ----------------------------------------------------------------------------


def test_disk_full_while_downloading_keeps_the_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    with small_disk(tmp_path / "disk", "2m") as resize:
        local = tmp_path / "disk" / "local"
        local.mkdir()
        (local / "doc.txt").write_bytes(b"version one, small")
        (local / "other.txt").write_bytes(b"unrelated")
        assert _sync(local, remote, tmp_path).exit_code == 0

        big = os.urandom(3 * MiB)  # more than the disk holds
        (remote / "doc.txt").write_bytes(big)
        if resize is None:
            real_write = localfs.HashingWriter.write

            def full(self: localfs.HashingWriter, data: bytes) -> int:
                if self.bytes_written + len(data) > 1 * MiB:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(self, data)

            monkeypatch.setattr(localfs.HashingWriter, "write", full)

        report = _sync(local, remote, tmp_path)

        assert report.exit_code == 1
        (failure,) = report.pairs[0].failures.values()
        assert failure.path == "doc.txt" and failure.op == "download"
        assert "No space left on device" in failure.error
        assert (local / "doc.txt").read_bytes() == b"version one, small"  # untouched
        assert _temps(local) == []  # the temp file went
        assert (remote / "doc.txt").read_bytes() == big  # and nothing was sent back

        # Space comes back: the next pass brings the new version down.
        if resize is None:
            monkeypatch.undo()
        else:
            resize("16m")
        assert _sync(local, remote, tmp_path).exit_code == 0
        assert (local / "doc.txt").read_bytes() == big
        assert tree(local) == tree(remote)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking all of `folder`'s filesystem but `leave` bytes."""
    filler = folder / "filler"
    fs = os.statvfs(folder)
    with contextlib.suppress(OSError), open(filler, "wb") as out:  # ENOSPC: as full as it gets
        out.write(b"\0" * max(0, fs.f_bavail * fs.f_frsize - leave))
    return filler


def test_disk_full_under_the_state_database_fails_each_file_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's disk fills up during a pass: each file whose record cannot be written
    fails with the cause in words (it was `unexpected sqlalchemy.exc.OperationalError`), and
    recording that failure, which fails too, neither raises out of the worker (it was ~3,000
    tracebacks and "Exception in thread worker-N") nor stops the rest. With space back, the
    next pass records it all: nothing lost."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    for i in range(20):
        (local / f"f{i}.txt").write_text(f"f{i}")
    crashed: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    with small_disk(tmp_path / "disk", "600k") as resize:
        disk = tmp_path / "disk"
        assert _sync(local, remote, disk).exit_code == 0
        for i in range(1450):
            (local / f"g{i}.txt").write_text(f"g{i}")
        if resize is not None:
            filler = _fill(disk, 100 * 1024)  # room to open the state, not to record 1,450
        else:
            real_write = StateStore._write_rows

            def full(conn: Any, batch: Any) -> None:
                if any(queued.entries or queued.ops for queued in batch):
                    raise sqlite3.OperationalError("database or disk is full")
                real_write(conn, batch)

            monkeypatch.setattr(StateStore, "_write_rows", staticmethod(full))

        with structlog.testing.capture_logs() as logs:
            report = _sync(local, remote, disk)

        assert report.exit_code == 1
        failures = report.pairs[0].failures
        assert failures, report
        assert {f.error for f in failures.values()} == {
            "cannot record it in the state database: database or disk is full"
        }
        assert not crashed, crashed
        events = {entry["event"] for entry in logs}
        assert not events & {"worker crashed on an item", "unexpected error"}, events
        assert tree(remote) == tree(local)  # the files went; only their records did not

        if resize is not None:
            filler.unlink()
            resize("16m")
        else:
            monkeypatch.setattr(StateStore, "_write_rows", staticmethod(real_write))
        assert _sync(local, remote, disk).exit_code == 0
        again = _sync(local, remote, disk)
        assert (again.exit_code, again.pairs[0].uploaded, again.pairs[0].downloaded) == (0, 0, 0)
        store = StateStore(f"sqlite:///{disk / 'state.db'}")
        try:
            assert store.count("p") == 1470
            assert store.integrity_check() == "ok"
        finally:
            store.close()
    assert tree(local) == tree(remote)


def test_a_state_write_the_database_refuses_is_a_state_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own word for it, whichever write: a record, an audit line, a counter."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    entry = BaseEntry("a.txt", 1, 1, 1, None, None, 0.0)
    op = OpRecord(0.0, "p", "a.txt", "upload", "ok")

    def full(*_args: Any, **_kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    try:
        monkeypatch.setattr(StateStore, "_write_rows", staticmethod(full))
        monkeypatch.setattr("syncd.state.store._bump", full)
        writes: list[Callable[[], None]] = [
            lambda: store.put("p", entry, op),
            lambda: store.log(op),
            lambda: store.bump("p", {"failures": 1}),
        ]
        for write in writes:
            with pytest.raises(StateWriteError) as caught:
                write()
            assert caught.value.reason == "database or disk is full"
            assert (
                str(caught.value) == "cannot write to the state database: database or disk is full"
            )
        monkeypatch.undo()
        store.put("p", entry, op)  # the store works on once there is room
        assert store.get("p", "a.txt") == entry
    finally:
        store.close()


# -- what cannot be read ---------------------------------------------------------------------


def _refuse(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Opening any file called `name` fails with EACCES, as for a user without the right."""
    real_open = builtins.open

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).name == name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def guarded_os_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).name == name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_os_open(file, *args, **kwargs)

    for module in (transfer, localfs):
        monkeypatch.setattr(module, "open", guarded, raising=False)
    monkeypatch.setattr(os, "open", guarded_os_open)


def test_an_unreadable_file_is_a_per_file_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (local / "secret.txt").write_bytes(b"synced once")
    assert _sync(local, remote, tmp_path).exit_code == 0

    (local / "secret.txt").write_bytes(b"edited, then locked away")
    (local / "new-secret.txt").write_bytes(b"never readable")
    (local / "fine.txt").write_bytes(b"fine")
    _refuse(monkeypatch, "secret.txt")
    report = _sync(local, remote, tmp_path)

    assert report.exit_code == 1
    failures = report.pairs[0].failures
    assert set(failures) == {"secret.txt"}
    assert "Permission denied" in failures["secret.txt"].error
    assert (remote / "secret.txt").read_bytes() == b"synced once"  # neither replaced nor deleted
    assert (remote / "fine.txt").read_bytes() == b"fine"  # the rest went on
    assert (remote / "new-secret.txt").read_bytes() == b"never readable"

    monkeypatch.undo()
    assert _sync(local, remote, tmp_path).exit_code == 0
    assert (remote / "secret.txt").read_bytes() == b"edited, then locked away"


def test_an_unreadable_folder_deletes_nothing_on_the_other_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "locked").mkdir(parents=True)
    remote.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (local / "locked" / name).write_bytes(name.encode())
    (local / "open.txt").write_bytes(b"open")
    assert _sync(local, remote, tmp_path).exit_code == 0

    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == local / "locked":  # the local folder only, not the remote's
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(localfs.os, "scandir", scandir)
    (local / "new.txt").write_bytes(b"new")
    with _engine(local, remote, tmp_path) as engine:
        report = engine.sync_once()

    assert report.exit_code == 1  # a per-path failure, named
    assert set(report.pairs[0].failures) == {"locked"}
    assert "cannot list folder: Permission denied" in report.pairs[0].failures["locked"].error
    assert report.pairs[0].held == {}
    assert tree(remote) == {
        "locked/a.txt": b"a.txt",
        "locked/b.txt": b"b.txt",
        "locked/c.txt": b"c.txt",
        "open.txt": b"open",
        "new.txt": b"new",
    }
    monkeypatch.undo()
    assert tree(local / "locked") == {"a.txt": b"a.txt", "b.txt": b"b.txt", "c.txt": b"c.txt"}
    (local / "locked" / "d.txt").write_bytes(b"written while it was locked")
    report = _sync(local, remote, tmp_path)
    assert report.exit_code == 0, report
    assert report.pairs[0].failures == {}
    assert (remote / "locked" / "d.txt").read_bytes() == b"written while it was locked"


def test_a_daemon_lists_an_unreadable_folder_again_when_its_retry_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder's failure is retried like a file's: still unreadable, it fails again (with a
    longer backoff); readable, what it holds is queued and the failure is gone."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "locked").mkdir(parents=True)
    remote.mkdir()
    (local / "locked" / "a.txt").write_bytes(b"a")
    real_scandir = os.scandir
    locked = True

    def scandir(path: Any = ".") -> Any:
        if locked and Path(path) == local / "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(localfs.os, "scandir", scandir)
    queued: list[str] = []
    with _engine(local, remote, tmp_path) as engine:
        syncer = engine.syncers["p"]
        syncer.enqueue = lambda _pair, path: queued.append(path)
        syncer.scan_local()
        assert syncer.stats.failures["locked"].attempts == 1

        assert syncer.sync_path("locked") is Outcome.FAILED
        assert syncer.stats.failures["locked"].attempts == 2
        assert queued == []

        locked = False
        assert syncer.sync_path("locked") is Outcome.DONE
        assert syncer.stats.failures == {}
        assert queued == ["locked/a.txt"]


# -- names no remote key may hold ----------------------------------------------------------


def test_names_no_key_may_hold_are_per_file_errors_not_sent_then_lost(tmp_path: Path) -> None:
    """A control character or a backslash in a name: the remote side refuses such keys when
    they come down (contract), so they are not sent up either; sent, the next listing would
    refuse the key, which reads as a remote deletion, and the local file would go to the
    trash. Each is a failure of that name (exit 1, named), kept as it is, at every pass; never
    retried (only a rename fixes it), said and counted once while it stands."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (local / "back\\slash.txt").write_bytes(b"backslash")
    (local / "a\tb.txt").write_bytes(b"tab")
    (local / "line\nbreak").write_bytes(b"newline")
    (local / "bell\x07dir").mkdir()
    (local / "bell\x07dir" / "inside.txt").write_bytes(b"under it")
    (local / "fine.txt").write_bytes(b"fine")
    # Excluded, such a name is left out like any other: not a failure.
    (local / ".syncignore").write_bytes(b"*.tmp\ncache*/\n")
    (local / "back\\slash.tmp").write_bytes(b"excluded")
    (local / "cache\x07").mkdir()
    (local / "cache\x07" / "x.txt").write_bytes(b"under an excluded folder")
    synced = {"fine.txt": b"fine", ".syncignore": b"*.tmp\ncache*/\n"}
    before = tree(local)
    refused = "it cannot be a remote key (not synced)"
    expected = {
        "back\\slash.txt": f"name contains a backslash: {refused}",
        "a\tb.txt": f"name contains a control character: {refused}",
        "line\nbreak": f"name contains a control character: {refused}",
        "bell\x07dir": f"name contains a control character: {refused}",
    }

    with _engine(local, remote, tmp_path) as engine:
        syncer = engine.syncers["p"]
        for attempt in range(2):
            with structlog.testing.capture_logs() as logs:
                report = engine.sync_once()
            assert report.exit_code == 1, report
            failures = report.pairs[0].failures
            assert {path: f.error for path, f in failures.items()} == expected
            assert {f.op for f in failures.values()} == {"refused_local_name"}
            assert all(f.next_try == float("inf") for f in failures.values())  # never due
            assert tree(remote) == synced
            assert tree(local) == before  # nothing moved to the trash, nothing renamed
            said = {e["path"]: e["reason"] for e in logs if e["event"] == "refused"}
            assert said == (expected if attempt == 0 else {})  # said once, not at every pass
            # With the keys every failure's line has (sweep X: `reason` only, no `op`).
            lines = [e for e in logs if e["event"] == "refused"]
            assert all(e["error"] == e["reason"] for e in lines)
            assert all(e["op"] == "refused_local_name" for e in lines)
            assert syncer.stats.totals()["failures"] == 4  # counted once, not at every pass
            assert syncer.stats.due_failures(now=float("1e18")) == []
            assert engine.store.counters("p")["failures"] == 4

        # `syncd retry` tries nothing of them, and does not call them settled.
        assert engine.retry_failed().exit_code == 1
        assert set(syncer.stats.failures) == set(expected)

        # A watcher event for such a name (the daemon's path) is refused the same way; one
        # for a refused name that is gone (renamed) clears its failure.
        assert syncer.sync_path("a\tb.txt") is Outcome.DONE
        assert syncer.stats.failures["a\tb.txt"].op == "refused_local_name"
        (local / "a\tb.txt").rename(local / "a-tab.txt")
        assert syncer.sync_path("a\tb.txt") is Outcome.DONE
        assert "a\tb.txt" not in syncer.stats.failures

        # Renamed or removed, the names are gone: so are their failures.
        (local / "back\\slash.txt").unlink()
        (local / "line\nbreak").rename(local / "line-break")
        (local / "bell\x07dir").rename(local / "bell-dir")
        report = engine.sync_once()
        assert report.exit_code == 0, report
        assert syncer.stats.failures == {}
        assert syncer.stats.totals()["failures"] == 4
    assert tree(remote) == {
        **synced,
        "a-tab.txt": b"tab",
        "line-break": b"newline",
        "bell-dir/inside.txt": b"under it",
    }


# -- what is not a regular file -------------------------------------------------------------


def test_links_pipes_and_sockets_are_skipped_and_reported(tmp_path: Path) -> None:
    """Symlinks are never followed (out of the root, or into a loop); a named pipe, a socket
    or a device has no bytes to sync (opening a pipe would even block the pass). Each is
    reported once as skipped, like rsync's "skipping non-regular file"; nothing fails."""
    local, remote, outside = tmp_path / "local", tmp_path / "remote", tmp_path / "outside"
    for folder in (local, remote, outside):
        folder.mkdir()
    (outside / "secret.txt").write_bytes(b"not ours")
    (local / "file.txt").write_bytes(b"a real file")
    (local / "link.txt").symlink_to(outside / "secret.txt")
    (local / "linked-folder").symlink_to(outside, target_is_directory=True)
    os.mkfifo(local / "pipe")
    # A socket file as bind() leaves one, without bind's limit on the path's length.
    os.mknod(local / "app.sock", 0o600 | stat.S_IFSOCK)
    with structlog.testing.capture_logs() as logs:
        report = _sync(local, remote, tmp_path)

    assert report.exit_code == 0, report
    assert tree(remote) == {"file.txt": b"a real file"}
    assert tree(outside) == {"secret.txt": b"not ours"}
    skipped = {entry["path"]: entry["reason"] for entry in logs if entry["event"] == "skipped"}
    assert skipped == {
        "link.txt": "symlink (not followed)",
        "linked-folder": "symlink (not followed)",
        "pipe": "not a regular file (a named pipe)",
        "app.sock": "not a regular file (a socket)",
    }


def test_a_remote_object_never_replaces_a_pipe_or_socket_it_skipped(tmp_path: Path) -> None:
    """Skipped means left as it is: an object of the same name on the remote does not come
    down over a named pipe or a live program's socket, as it does not over a symlink."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    os.mkfifo(local / "pipe")
    os.mknod(local / "app.sock", 0o600 | stat.S_IFSOCK)
    (local / "link").symlink_to("/dev/null")
    for name in ("pipe", "app.sock", "link", "plain.txt"):
        (remote / name).write_bytes(b"remote " + name.encode())
    with structlog.testing.capture_logs() as logs:
        report = _sync(local, remote, tmp_path)

    assert report.exit_code == 0, report
    assert stat.S_ISFIFO((local / "pipe").lstat().st_mode)
    assert stat.S_ISSOCK((local / "app.sock").lstat().st_mode)
    assert (local / "link").is_symlink()
    assert tree(local) == {"plain.txt": b"remote plain.txt"}  # tree() lists regular files
    assert tree(remote)["pipe"] == b"remote pipe"  # and the remote keeps its own
    skipped = {entry["path"] for entry in logs if entry["event"] == "skipped"}
    assert skipped == {"pipe", "app.sock", "link"}


# -- a file becomes a folder, and back -------------------------------------------------------


def test_a_file_replaced_by_a_folder_and_back(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (local / "thing").write_bytes(b"a file first")
    (local / "keep.txt").write_bytes(b"keep")
    assert _sync(local, remote, tmp_path).exit_code == 0

    (local / "thing").unlink()
    (local / "thing").mkdir()
    (local / "thing" / "inside.txt").write_bytes(b"now a folder")
    for _ in range(2):  # the old file goes at the end of the first pass, the folder follows
        report = _sync(local, remote, tmp_path)
    assert report.exit_code == 0, report
    assert tree(remote) == tree(local) == {"keep.txt": b"keep", "thing/inside.txt": b"now a folder"}

    (local / "thing" / "inside.txt").unlink()
    (local / "thing").rmdir()
    (local / "thing").write_bytes(b"a file again")
    for _ in range(2):
        report = _sync(local, remote, tmp_path)
    assert report.exit_code == 0, report
    assert tree(remote) == tree(local) == {"keep.txt": b"keep", "thing": b"a file again"}


def test_empty_folders_are_pruned_inside_the_root_only(tmp_path: Path) -> None:
    """After a local deletion the folders it left empty go, up to the root; a folder on the
    way that is a symlink (swapped in meanwhile) stops the climb: nothing outside is removed."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (outside / "b" / "c").mkdir(parents=True)
    localfs.prune_empty_parents(root, root / "a" / "b" / "c" / "gone.txt")
    assert list(root.iterdir()) == []  # a/b/c, then a/b, then a; never the root

    (root / "keep").mkdir()
    (root / "keep" / "file.txt").write_bytes(b"stays")
    (root / "keep" / "empty").mkdir()
    localfs.prune_empty_parents(root, root / "keep" / "empty" / "gone.txt")
    assert tree(root) == {"keep/file.txt": b"stays"} and not (root / "keep" / "empty").exists()

    (root / "a").symlink_to(outside, target_is_directory=True)
    localfs.prune_empty_parents(root, root / "a" / "b" / "c" / "gone.txt")
    assert (outside / "b" / "c").is_dir()  # the empty folders outside the root are still there
    assert (root / "a").is_symlink()


def test_a_folder_moved_or_deleted_while_listed_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon lists a folder when it appears or moves; one gone by then (renamed again,
    deleted) is nothing to list, not a failure; an unreadable folder that is then deleted
    stops failing."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "e1").mkdir(parents=True)
    remote.mkdir()
    (local / "e1" / "one.txt").write_bytes(b"1")
    with _engine(local, remote, tmp_path) as engine:
        syncer = engine.syncers["p"]
        (local / "e1").rename(local / "e2")
        assert syncer.scan_local(start="e1") == {}
        (local / "e2" / "one.txt").unlink()
        (local / "e2").rmdir()
        assert syncer.scan_local(start="e2") == {}
        assert syncer.stats.failures == {}

        (local / "locked").mkdir()
        real_scandir = os.scandir

        def scandir(path: Any = ".") -> Any:
            if Path(path) == local / "locked":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_scandir(path)

        monkeypatch.setattr(localfs.os, "scandir", scandir)
        syncer.scan_local()
        assert set(syncer.stats.failures) == {"locked"}
        monkeypatch.undo()
        (local / "locked").rmdir()
        assert syncer.sync_path("locked") is Outcome.DONE  # its retry: gone, so settled
        assert syncer.stats.failures == {}


# -- a folder swapped for a symlink while syncd works in it ---------------------------------


def _swap_once_checked(monkeypatch: pytest.MonkeyPatch, folder: Path, outside: Path) -> None:
    """What a racing user (or process) does right after syncd checked the folders on the way
    to a file it writes (`make_parents`): the folder moves aside, a symlink out of the root
    takes its name."""
    real_make_parents = localfs.make_parents

    def make_parents(root: Path, target: Path) -> None:
        real_make_parents(root, target)
        if not folder.is_symlink():
            folder.rename(folder.with_name(f"{folder.name}.real"))
            folder.symlink_to(outside, target_is_directory=True)

    monkeypatch.setattr(localfs, "make_parents", make_parents)


def test_a_download_never_follows_a_folder_swapped_for_a_symlink_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download's folder is held open from the root for every write: one swapped for a
    symlink after the check writes nothing outside the root (no temp file there either)."""
    local, remote, outside = tmp_path / "local", tmp_path / "remote", tmp_path / "outside"
    (local / "sub").mkdir(parents=True)
    (remote / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "new.txt").write_bytes(b"the user's own file outside the root")
    (remote / "sub" / "new.txt").write_bytes(b"from the remote")
    real_download = FileProvider.download
    written_outside: list[Path] = []

    def download(self: FileProvider, key: str, sink: Any, if_match: str | None = None) -> Any:
        got = real_download(self, key, sink, if_match)
        written_outside.extend(_temps(outside))  # where the bytes went
        return got

    monkeypatch.setattr(FileProvider, "download", download)
    _swap_once_checked(monkeypatch, local / "sub", outside)
    report = _sync(local, remote, tmp_path)

    assert written_outside == []
    assert tree(outside) == {"new.txt": b"the user's own file outside the root"}
    assert _temps(outside) == [] and _temps(local) == []
    # The path through a symlink now is skipped, as any such path is (looked at again next
    # pass); nothing is placed.
    assert report.exit_code == 0 and report.pairs[0].downloaded == 0, report
    assert (local / "sub").is_symlink() and tree(local / "sub.real") == {}
    assert tree(remote) == {"sub/new.txt": b"from the remote"}


def test_a_conflict_copy_never_follows_a_folder_swapped_for_a_symlink_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local version of a conflict (version_preserve) steps aside (link, then unlink) in
    folders held open from the root: one swapped for a symlink after the check skips the
    path (looked at again next pass), and the file of the same name outside the root is
    neither linked nor removed."""
    local, remote, outside = tmp_path / "local", tmp_path / "remote", tmp_path / "outside"
    (local / "sub").mkdir(parents=True)
    remote.mkdir()
    outside.mkdir()
    (local / "sub" / "doc.txt").write_bytes(b"v1")
    assert _sync(local, remote, tmp_path).exit_code == 0
    (local / "sub" / "doc.txt").write_bytes(b"local edit, older")
    os.utime(local / "sub" / "doc.txt", (1_000_000_000, 1_000_000_000))
    (remote / "sub" / "doc.txt").write_bytes(b"remote edit, newer")
    (outside / "doc.txt").write_bytes(b"outside, same name")

    _swap_once_checked(monkeypatch, local / "sub", outside)
    report = _sync(local, remote, tmp_path, conflict="version_preserve")

    assert report.exit_code == 0 and report.pairs[0].downloaded == 0, report  # skipped
    assert tree(outside) == {"doc.txt": b"outside, same name"}
    assert tree(local / "sub.real") == {"doc.txt": b"local edit, older"}
    assert tree(remote) == {"sub/doc.txt": b"remote edit, newer"}


@pytest.mark.parametrize("size", [100, 20 * MiB])  # read whole; streamed after a hash
def test_an_upload_never_reads_through_a_file_swapped_for_a_symlink_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The file to send is opened without following a symlink: one swapped in after the
    scan looked (pointing outside the root) is skipped, and nothing from outside the root
    reaches the remote."""
    local, remote, outside = tmp_path / "local", tmp_path / "remote", tmp_path / "outside"
    local.mkdir()
    remote.mkdir()
    outside.mkdir()
    (local / "doc.txt").write_bytes(b"d" * size)
    (outside / "secret.txt").write_bytes(b"not for the remote")
    real_metadata = transfer.origin_metadata

    def origin_metadata(writer: str, over: str | None, path: str) -> dict[str, str]:
        (local / "doc.txt").unlink()
        (local / "doc.txt").symlink_to(outside / "secret.txt")
        return real_metadata(writer, over, path)

    monkeypatch.setattr(transfer, "origin_metadata", origin_metadata)
    report = _sync(local, remote, tmp_path)

    assert report.pairs[0].uploaded == 0, report
    assert tree(remote) == {}
    assert (outside / "secret.txt").read_bytes() == b"not for the remote"


def test_a_users_file_named_like_a_temp_file_is_synced_and_never_removed(
    tmp_path: Path,
) -> None:
    """Only the names syncd gives its temp files (the prefix and random hex digits) are
    ignored and cleaned up at start: a user's `.syncd-tmp-notes` was deleted for good by the
    first scan (no trash, no log line), from an upload's source folder too."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "sub").mkdir(parents=True)
    remote.mkdir()
    (local / ".syncd-tmp-notes").write_bytes(b"my notes")
    (local / "sub" / ".syncd-tmp-draft.txt").write_bytes(b"old draft")
    (local / "sub" / ".syncd-tmp-0123456789ab").write_bytes(b"half a download, abandoned")
    (local / ".syncd-tmp-resume-0123456789ab").write_bytes(b"a resumable download's chunks")

    assert _sync(local, remote, tmp_path).exit_code == 0

    assert (local / ".syncd-tmp-notes").read_bytes() == b"my notes"
    assert (local / "sub" / ".syncd-tmp-draft.txt").read_bytes() == b"old draft"
    assert (remote / ".syncd-tmp-notes").read_bytes() == b"my notes"
    assert (remote / "sub" / ".syncd-tmp-draft.txt").read_bytes() == b"old draft"
    assert not (local / "sub" / ".syncd-tmp-0123456789ab").exists()  # syncd's own: cleaned
    # into the trash, not away: after a crash at the wrong instant it may hold a user's write
    trashed = (local / ".syncd" / "trash").rglob(".syncd-tmp-0123456789ab")
    assert [p.read_bytes() for p in trashed] == [b"half a download, abandoned"]
    # A resumable download's temp with no record naming it is as stale as the other.
    assert not (local / ".syncd-tmp-resume-0123456789ab").exists()
    assert not (remote / "sub" / ".syncd-tmp-0123456789ab").exists()

    (remote / "sub" / ".syncd-tmp-from-afar").write_bytes(b"theirs")
    assert _sync(local, remote, tmp_path).exit_code == 0
    assert (local / "sub" / ".syncd-tmp-from-afar").read_bytes() == b"theirs"


def test_a_clean_run_removes_the_upload_temp_files_a_killed_syncd_left_in_a_folder_remote(
    tmp_path: Path,
) -> None:
    """A kill -9 mid-upload left `.syncd-tmp-<16 hex>` in the remote folder, and no clean run
    removed it (it had to look an hour old): issue 3 wants no stray temp files. One a live
    writer holds (another syncd on the shared folder) stays; a user's file of the prefix is
    synced, never removed."""
    setup, remote = folder_setup(tmp_path)
    setup.write()
    (setup.local / "a.txt").write_bytes(b"a")
    (remote / "sub").mkdir()
    (remote / ".syncd-tmp-9f613db414f2474d").write_bytes(b"half an upload")
    (remote / "sub" / ".syncd-tmp-0123456789abcdef").write_bytes(b"a whole one, never placed")
    (remote / "sub" / ".syncd-tmp-notes").write_bytes(b"my notes")
    live = remote / "sub" / ".syncd-tmp-00000000feedface"
    with live.open("wb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # another syncd uploading right now
        writer.write(b"being written")
        writer.flush()
        result = syncd("once", "-c", setup.config)
        assert result.returncode == 0, result.stderr
        assert live.read_bytes() == b"being written"
    assert sorted(p.name for p in remote.rglob("*") if p.is_file()) == [
        ".syncd-tmp-00000000feedface",
        ".syncd-tmp-notes",
        "a.txt",
    ]
    assert (setup.local / "sub" / ".syncd-tmp-notes").read_bytes() == b"my notes"
    assert syncd("once", "-c", setup.config).returncode == 0
    assert not live.exists()  # its writer is gone now


def test_a_download_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    """A teammate's edit coming down replaced an executable script by a 0644 file and a
    private 0600 one by a world-readable file: the new version takes the old one's mode. A
    new file gets 0o666 less the umask, as any new file."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (local / "build.sh").write_bytes(b"#!/bin/sh\necho v1\n")
    (local / "build.sh").chmod(0o755)
    (local / "secrets.env").write_bytes(b"TOKEN=v1\n")
    (local / "secrets.env").chmod(0o600)
    assert _sync(local, remote, tmp_path).exit_code == 0
    (remote / "build.sh").write_bytes(b"#!/bin/sh\necho v2\n")
    (remote / "secrets.env").write_bytes(b"TOKEN=v2\n")
    (remote / "new.txt").write_bytes(b"new")
    os.chmod(remote / "new.txt", 0o600)  # a remote has no modes to carry

    report = _sync(local, remote, tmp_path)

    assert report.pairs[0].downloaded == 3, report
    assert (local / "build.sh").read_bytes() == b"#!/bin/sh\necho v2\n"
    assert stat.S_IMODE((local / "build.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((local / "secrets.env").stat().st_mode) == 0o600
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((local / "new.txt").stat().st_mode) == 0o666 & ~umask


# -- a .syncignore that cannot be read ------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: path.write_bytes(b"\xff\xfe*.secret\n"), "cannot read PATH: not UTF-8 text"),
        (lambda path: path.mkdir(), "cannot read PATH: Is a directory"),
        # A pipe blocked every pass that read it; a link to /dev/zero filled memory.
        (lambda path: os.mkfifo(path), "cannot read PATH: not a regular file"),
        (lambda path: path.symlink_to("/dev/zero"), "cannot read PATH: not a regular file"),
        (
            lambda path: path.write_text("*.tmp\n[z-a]\n"),
            "PATH: line 2: not a valid pattern (bad character range z-a)",
        ),
    ],
    ids=["not UTF-8", "a folder", "a pipe", "a link to a device", "a line that is no pattern"],
)
def test_a_syncignore_that_cannot_be_read_stops_the_pair_not_syncd(
    tmp_path: Path, make: Callable[[Path], Any], reason: str
) -> None:
    """Its rules are unknown, so nothing of the pair moves (a file it may keep private is not
    sent): the pair fails with the reason, exit 1. It was a traceback (so was an unreadable
    local root, where the same read fails first, and a line pathspec cannot compile, which
    in the daemon killed the watcher thread of every pair)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / "notes.txt").write_bytes(b"synced")
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "key.secret").write_bytes(b"private")
    (remote / "theirs.txt").write_bytes(b"new remotely")
    make(setup.local / ".syncignore")

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    said = reason.replace("PATH", str(setup.local / ".syncignore"))
    assert f"docs: error: {said}" in result.stdout, result.stdout
    assert tree(remote) == {"notes.txt": b"synced", "theirs.txt": b"new remotely"}
    assert not (setup.local / "theirs.txt").exists()

    target = setup.local / ".syncignore"
    if target.is_symlink() or not (target.is_file() or target.is_dir()):
        target.unlink()  # a link, or a pipe (writing to it would block)
    elif target.is_dir():
        target.rmdir()
    target.write_text("*.secret\n")
    healed = syncd("once", "-c", setup.config)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "key.secret" not in tree(remote)
    assert (setup.local / "theirs.txt").read_bytes() == b"new remotely"


def test_an_unreadable_local_root_is_a_fault_of_its_pair_named_as_such(tmp_path: Path) -> None:
    """A real unreadable root (the suite runs as root: syncd runs here without the
    capabilities that read through permission bits): the pair fails, naming the root, exit 1,
    and nothing is deleted on the other side; it was a traceback (its .syncignore unread)."""
    without_dac = require_without_dac()
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / "a.txt").write_bytes(b"a")
    assert syncd("once", "-c", setup.config).returncode == 0
    setup.local.chmod(0)
    try:
        once, check = (
            subprocess.run(
                [*without_dac, *SYNCD, command, "-c", str(setup.config)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            for command in ("once", "check")
        )
    finally:
        setup.local.chmod(0o755)
    assert once.returncode == 1, once.stdout + once.stderr
    assert "Traceback" not in once.stderr
    assert f"docs: error: cannot read local root {setup.local}: Permission denied" in once.stdout
    assert tree(remote) == {"a.txt": b"a"}
    # `check` says the same of the pair (it said ok: it looked only at the remote).
    assert (check.returncode, check.stderr) == (1, ""), check.stdout + check.stderr
    assert check.stdout == (
        f"FAIL\tdocs\tfile://{remote}\tcannot read local root {setup.local}: Permission denied\n"
    )


@pytest.mark.parametrize("max_delete", [50, 100])
def test_a_root_replaced_by_an_empty_folder_is_a_fault_not_a_mass_deletion(
    tmp_path: Path, max_delete: int
) -> None:
    """A disk not mounted leaves its mount point, an empty folder of the same path (here: the
    root renamed away and made anew). Taken for the synced folder, it read as every file
    deleted: the bucket wiped at `max_delete: 100`, and a remote edit downloaded onto the
    wrong disk, to go up over the other machine's edit once the disk was back. The root now
    is recorded (its filesystem's id and inode): another folder is a fault, nothing written or
    deleted, until the right one is back."""
    setup, remote = folder_setup(tmp_path, max_delete=max_delete)
    setup.write()
    for i in range(6):
        (setup.local / f"f{i}.txt").write_text(f"v1 {i}")
    assert syncd("once", "-c", setup.config).returncode == 0
    assert not (setup.local / ".syncd").exists()  # nothing of syncd's in the root for that

    disk = tmp_path / "disk"
    setup.local.rename(disk)  # unmounted: the mount point is left, empty
    setup.local.mkdir()
    (remote / "f3.txt").write_text("edited on the other machine")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not the folder this pair synced" in result.stdout + result.stderr
    assert sorted(p.name for p in remote.glob("*.txt")) == [f"f{i}.txt" for i in range(6)]
    assert list(setup.local.iterdir()) == []
    (setup.local / "new.txt").write_text("written on the bare mount point")
    other = syncd("once", "-c", setup.config)
    assert other.returncode == 1, other.stdout + other.stderr
    assert "is not the folder this pair synced" in other.stdout + other.stderr
    assert not (remote / "new.txt").exists()

    shutil.rmtree(setup.local)
    disk.rename(setup.local)  # mounted again
    back = syncd("once", "-c", setup.config)
    assert back.returncode == 0, back.stdout + back.stderr
    assert (setup.local / "f3.txt").read_text() == "edited on the other machine"
    assert sorted(p.name for p in remote.glob("*.txt")) == [f"f{i}.txt" for i in range(6)]


def test_an_empty_root_a_state_without_its_folder_remembers_files_for_is_a_fault(
    tmp_path: Path,
) -> None:
    """A state from before roots were recorded and an empty root while the base remembers
    files: a disk not mounted as likely as a folder emptied by hand, and that root is not
    recorded; a fault that says what to do, nothing deleted."""
    setup, remote = folder_setup(tmp_path, max_delete=100)
    setup.write()
    for i in range(3):
        (setup.local / f"f{i}.txt").write_text(f"v1 {i}")
    assert syncd("once", "-c", setup.config).returncode == 0
    with contextlib.closing(sqlite3.connect(setup.state_db)) as db, db:
        db.execute("DELETE FROM meta WHERE key LIKE 'root:%'")  # as an older syncd left it
    shutil.rmtree(setup.local)
    setup.local.mkdir()
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is empty while the state remembers 3 synced files" in result.stdout
    assert "syncd state rebuild --pair docs" in result.stdout
    assert len(list(remote.glob("*.txt"))) == 3 and list(setup.local.iterdir()) == []


# -- another filesystem inside the root ----------------------------------------------------


def _stamp_folders(local: Path) -> list[str]:
    trash_dir = local / ".syncd" / "trash"
    return sorted(p.name for p in trash_dir.iterdir()) if trash_dir.exists() else []


def test_a_deletion_and_a_losing_version_on_a_mount_inside_the_root_go_to_the_trash(
    tmp_path: Path,
) -> None:
    """A folder of the root that is another filesystem (a disk, a bind mount): the trash is on
    the root's, and the rename into it failed with EXDEV. A remote deletion and a cloud_wins
    loser there never went through, `Invalid cross-device link` at every run, and each try
    left an empty stamp folder in the trash. Now each is copied into the trash with its
    bytes and mtime, then removed: both settle at the first run."""
    setup, remote = folder_setup(tmp_path, conflict="cloud_wins")
    setup.write()
    with small_disk(setup.local / "sub", "5m") as mounted:
        if mounted is None:
            unavailable_here("cannot mount a tmpfs here")
        sub = setup.local / "sub"
        (sub / "x.txt").write_bytes(b"x, deleted remotely")
        os.utime(sub / "x.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
        (sub / "y.txt").write_bytes(b"y")
        assert syncd("once", "-c", setup.config).returncode == 0
        (remote / "sub" / "x.txt").unlink()
        (sub / "y.txt").write_bytes(b"y local edit, the loser")
        (remote / "sub" / "y.txt").write_bytes(b"y remote edit")

        result = syncd("once", "-c", setup.config)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "cross-device" not in result.stdout + result.stderr
        assert sorted(p.name for p in sub.iterdir()) == ["y.txt"]
        assert (sub / "y.txt").read_bytes() == b"y remote edit"
        trashed = {p.name: p for p in (setup.local / ".syncd" / "trash").rglob("*.txt")}
        assert trashed["x.txt"].read_bytes() == b"x, deleted remotely"
        assert trashed["x.txt"].stat().st_mtime_ns == 1_600_000_000_123_456_789
        assert trashed["y.txt"].read_bytes() == b"y local edit, the loser"
        assert len(_stamp_folders(setup.local)) == 1  # no empty ones beside it
        again = syncd("once", "-c", setup.config)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 uploaded, 0 downloaded, 0 failed" in again.stdout
        assert sorted(p.name for p in (remote / "sub").iterdir()) == ["y.txt"]


def _mounted_file(setup: Setup, mounted: Callable[[str], None] | None) -> Path:
    if mounted is None:
        unavailable_here("cannot mount a tmpfs here")
    source = setup.local / "sub" / "x.txt"
    source.write_bytes(b"decided on")
    return source


def test_a_file_on_a_mount_written_after_the_decision_stays_and_no_copy_is_left(
    tmp_path: Path,
) -> None:
    """The copy into the trash takes the place of the rename's look afterwards: a file that
    is not the one decided on stays where it is, WrittenMeanwhile, and neither a copy nor
    an empty stamp folder is left in the trash."""
    setup, _remote = folder_setup(tmp_path)
    setup.write()
    with small_disk(setup.local / "sub", "5m") as mounted:
        source = _mounted_file(setup, mounted)
        decided = localfs.local_file(source.stat())
        source.write_bytes(b"saved again after the decision")
        with pytest.raises(trash.WrittenMeanwhile):
            trash.move_to_local_trash(setup.local, source, "sub/x.txt", _NOW, decided)
        assert source.read_bytes() == b"saved again after the decision"
        assert _stamp_folders(setup.local) == []


def test_a_file_on_a_mount_written_while_it_is_copied_to_the_trash_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that lands while the bytes are copied (here: right after the copy, before the
    original is removed) keeps the file: the original is removed only if it is still the
    very file copied (inode, size, mtime and ctime)."""
    setup, _remote = folder_setup(tmp_path)
    setup.write()
    real_copy = trash._copy_file

    def copy_then_written(src: int, out: int, st: os.stat_result) -> None:
        real_copy(src, out, st)
        with (setup.local / "sub" / "x.txt").open("ab") as writer:
            writer.write(b" and more")

    with small_disk(setup.local / "sub", "5m") as mounted:
        source = _mounted_file(setup, mounted)
        decided = localfs.local_file(source.stat())
        monkeypatch.setattr(trash, "_copy_file", copy_then_written)
        with pytest.raises(trash.WrittenMeanwhile):
            trash.move_to_local_trash(setup.local, source, "sub/x.txt", _NOW, decided)
        assert source.read_bytes() == b"decided on and more"
        assert _stamp_folders(setup.local) == []


def test_a_move_to_the_trash_that_fails_leaves_no_empty_stamp_folder(tmp_path: Path) -> None:
    """Each failed try made `.syncd/trash/<stamp>/<folders>/` and left it, empty."""
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / ".syncd" / "trash" / "20200101-000000").mkdir(parents=True)  # another run's
    with pytest.raises(FileNotFoundError):
        trash.move_to_local_trash(local, local / "sub" / "gone.txt", "sub/gone.txt", _NOW)
    assert _stamp_folders(local) == ["20200101-000000"]


def test_a_save_over_a_file_on_a_mount_in_the_last_instant_is_never_the_one_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor's save (a new file renamed over the name) after the copy was checked and
    before the original is removed: the original is moved aside at once and looked at, so
    the saved file goes back to its name, never unlinked, and the copy leaves the trash."""
    setup, _remote = folder_setup(tmp_path)
    setup.write()
    real_temp_name = localfs.temp_name

    def saved_over() -> str:  # called just before the original is moved aside
        fresh = setup.local / "sub" / "x.txt.new"
        fresh.write_bytes(b"the editor's save")
        fresh.replace(setup.local / "sub" / "x.txt")
        return real_temp_name()

    with small_disk(setup.local / "sub", "5m") as mounted:
        source = _mounted_file(setup, mounted)
        decided = localfs.local_file(source.stat())
        monkeypatch.setattr(localfs, "temp_name", saved_over)
        with pytest.raises(trash.WrittenMeanwhile):
            trash.move_to_local_trash(setup.local, source, "sub/x.txt", _NOW, decided)
        assert sorted(p.name for p in source.parent.iterdir()) == ["x.txt"]
        assert source.read_bytes() == b"the editor's save"
        assert _stamp_folders(setup.local) == []


def test_a_one_way_copy_leaves_resumable_temps_alone(tmp_path: Path) -> None:
    """A resumable download's temp in the folder a one-way copy reads from may be the live
    one of the folder's own pair (a daemon downloading into it now, its record in another
    state): `syncd upload` has no record of it, and moved it to the trash (review of the
    change that cleans up resumable temps no record names). Its copy sends nothing of it."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    (local / "a.txt").write_bytes(b"a")
    temp = local / ".syncd-tmp-resume-0123456789ab"
    temp.write_bytes(b"chunks of a download the daemon makes now")

    result = subprocess.run(
        [*SYNCD, "upload", str(local), f"file://{remote}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert temp.read_bytes() == b"chunks of a download the daemon makes now"
    assert tree(remote) == {"a.txt": b"a"}
    assert not (local / ".syncd").exists()


def test_an_object_whose_name_is_too_long_here_is_never_fetched(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An object whose name no local file can have (over 255 bytes) was downloaded in full
    at every try (every hour at most, for as long as it exists), only for the rename into
    place to fail (sweep S). It fails as before, naming the cause, but no byte is fetched."""
    from test_faults import backend_for

    long_name = "L" * 300 + ".bin"
    for backend in backend_for("s3", request):
        setup = backend.setup(tmp_path)
        backend.remote.put(long_name, os.urandom(64 * 1024))
        backend.remote.put("fits.txt", b"fits")

        result = backend.run(setup)

        assert result.returncode == 1, result.stdout + result.stderr
        assert "File name too long" in result.stdout
        assert tree(setup.local) == {"fits.txt": b"fits"}
        assert not [ex for ex in backend.proxy.matching("GET", long_name)], "fetched"
        assert not list(setup.local.rglob(".syncd-tmp-*"))

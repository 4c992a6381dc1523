"""A folder remote on a local filesystem is watched instead of listed at every poll.

With 100,000 files a listing costs ~1.2 s of CPU; the daemon skips it while inotify shows no
change under the remote folder, and lists again after any event, after its folder was swapped,
after a failed listing, after an hour, and after the kernel dropped events. Everything here uses
real inotify on real folders; only the mount table is a file of our own where a test needs a
network filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import watchdog.observers.inotify_c
from harness import Setup, running_daemon, unavailable_here, wait_for

from syncd.daemon import remote_changes as remote_changes_module
from syncd.daemon.remote_changes import RemoteChanges
from syncd.daemon.watcher import (
    OVERFLOW_LOGGER,
    OVERFLOW_MESSAGE,
    STOPPING_LOGGER,
    STOPPING_MESSAGE,
    Watcher,
)
from syncd.providers import mounts, open_provider
from syncd.providers.base import NotWatchable, Provider

# -- the mount table ---------------------------------------------------------------------------

TABLE = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
server:/export /mnt/share nfs4 rw,vers=4.2 0 0
tmpfs /mnt/share/cache tmpfs rw 0 0
/dev/vdb /data xfs rw 0 0
sshfs#me@host: /data/remote fuse.sshfs rw 0 0
/dev/vdc /srv/My\\040Files btrfs rw 0 0
server:/other /srv/stacked ext4 rw 0 0
server:/other /srv/stacked nfs rw 0 0
"""


def test_mount_table_paths_are_unescaped() -> None:
    parsed = mounts.parse_mounts(TABLE)
    assert ("/srv/My Files", "btrfs") in parsed
    assert parsed[0] == ("/", "ext4")


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("/home/me/remote", None),
        ("/data/backup", None),
        ("/srv/My Files/x", None),
        ("/mnt/share/docs", "/mnt/share is nfs4"),
        # Local itself, but inside a network share: writes from elsewhere land in nfs4 folders.
        ("/mnt/share/cache/x", None),
        # A network filesystem mounted below the folder: changes there make no event.
        ("/data", "/data/remote is fuse.sshfs"),
        ("/data/remote/x", "/data/remote is fuse.sshfs"),
        # Of two mounts on one point, the last one hides the other.
        ("/srv/stacked/x", "/srv/stacked is nfs"),
    ],
)
def test_which_folders_are_on_local_filesystems(folder: str, reason: str | None) -> None:
    assert mounts.unwatchable_reason(folder, mounts.parse_mounts(TABLE)) == reason


@pytest.fixture
def nfs_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mount table in which tmp_path/nfs is an NFS share."""
    table = tmp_path / "mounts"
    table.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/x {tmp_path / 'nfs'} nfs4 rw 0 0\n")
    monkeypatch.setattr(mounts, "MOUNTS_FILE", str(table))
    return tmp_path / "nfs"


def test_folder_remote_on_local_disk_is_watchable(tmp_path: Path) -> None:
    provider = open_provider(f"file://{tmp_path}")
    assert provider.watch_root() == str(tmp_path)  # type: ignore[attr-defined]


def test_folder_remote_on_nfs_is_not_watchable(nfs_table: Path) -> None:
    nfs_table.mkdir()
    provider = open_provider(f"file://{nfs_table}")
    with pytest.raises(NotWatchable, match="nfs4"):
        provider.watch_root()  # type: ignore[attr-defined]


# -- RemoteChanges over real inotify -----------------------------------------------------------


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    watching = Watcher(lambda change: None)
    watching.start()
    yield watching
    watching.stop()


def _folder(tmp_path: Path, name: str = "remote") -> tuple[Path, Provider]:
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_bytes(b"a")
    return folder, open_provider(f"file://{folder}")


def _settled_needs_listing(changes: RemoteChanges, pair: str = "p") -> bool:
    """needs_listing once watchdog had time to deliver whatever events there were."""
    time.sleep(0.3)
    return changes.needs_listing(pair)


def test_listing_skipped_until_an_event(tmp_path: Path, watcher: Watcher) -> None:
    folder, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("p", provider)
    assert changes.needs_listing("p")  # never listed
    changes.listing("p")
    assert changes.watched("p")
    # The listing itself, and reading a file (a download), are not changes.
    assert [info.key for info in provider.list()] == ["sub/a.txt"]
    assert (folder / "sub" / "a.txt").read_bytes() == b"a"
    assert not _settled_needs_listing(changes)

    # A write by anyone (another program, another syncd on this disk) is.
    (folder / "sub" / "b.txt").write_bytes(b"b")
    wait_for(lambda: changes.needs_listing("p"), timeout=5)
    time.sleep(0.3)  # the write's later events (modify, close) land on this watch too

    # The main loop drops the fired watch; the next listing sets it again.
    changes.drop_fired()
    assert not changes.watched("p")
    assert changes.needs_listing("p")
    changes.listing("p")
    assert changes.watched("p")
    assert not _settled_needs_listing(changes)

    # Events in a folder made after the watch was set count too.
    (folder / "new" / "deep").mkdir(parents=True)
    wait_for(lambda: changes.needs_listing("p"), timeout=5)
    time.sleep(0.3)  # the second folder's event too
    changes.drop_fired()
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    (folder / "new" / "deep" / "c.txt").write_bytes(b"c")
    wait_for(lambda: changes.needs_listing("p"), timeout=5)


@pytest.mark.parametrize("how", ["deleted", "moved away and replaced"])
def test_a_swapped_or_deleted_folder_is_listed(tmp_path: Path, watcher: Watcher, how: str) -> None:
    folder, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("p", provider)
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    if how == "deleted":
        shutil.rmtree(folder)
    else:
        folder.rename(tmp_path / "elsewhere")
        folder.mkdir()
        (folder / "other.txt").write_bytes(b"a different folder")
    wait_for(lambda: changes.needs_listing("p"), timeout=5)
    if how == "deleted":
        # A failed listing drops the watch: the next one sets a fresh one.
        changes.listing_failed("p")
        assert not changes.watched("p")
        assert changes.needs_listing("p")
        return
    # The next listing watches the folder now at the path, and hears its changes.
    changes.listing("p")
    assert changes.watched("p")
    assert not _settled_needs_listing(changes)
    (folder / "new.txt").write_bytes(b"in the new folder")
    wait_for(lambda: changes.needs_listing("p"), timeout=5)
    # And the old one, wherever it went, is not watched any more.
    changes.drop_fired()
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    (tmp_path / "elsewhere" / "late.txt").write_bytes(b"not ours")
    assert not _settled_needs_listing(changes)


def test_a_network_share_mounted_over_the_folder_ends_its_watch(
    tmp_path: Path, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NAS mounted on the folder after the watch was set (no event at all): the next
    listing checks the filesystem afresh and the remote is listed at every poll from then."""
    folder, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("p", provider)
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    folder.rename(tmp_path / "under-the-mount")  # the mount hides what was there...
    folder.mkdir()
    table = tmp_path / "mounts"  # ...and the table says NFS
    table.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/x {folder} nfs4 rw 0 0\n")
    monkeypatch.setattr(mounts, "MOUNTS_FILE", str(table))
    assert changes.needs_listing("p")
    changes.listing("p")
    assert not changes.watched("p")
    assert _settled_needs_listing(changes)


def test_listed_again_after_an_hour_anyway(
    tmp_path: Path, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder_path, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("p", provider)
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    monkeypatch.setattr(remote_changes_module, "RELIST_EVERY_S", 0.0)
    assert changes.needs_listing("p")


def test_dropped_events_mean_listing(tmp_path: Path, watcher: Watcher) -> None:
    _folder_path, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("p", provider)
    changes.listing("p")
    assert not _settled_needs_listing(changes)
    changes.overflowed()
    assert changes.needs_listing("p")


def test_unwatchable_remotes_are_listed_every_time(
    tmp_path: Path, watcher: Watcher, nfs_table: Path
) -> None:
    nfs_table.mkdir()
    changes = RemoteChanges(watcher)
    changes.add("nfs", open_provider(f"file://{nfs_table}"))
    for _ in range(3):
        changes.listing("nfs")
        assert not changes.watched("nfs")
        assert changes.needs_listing("nfs")

    # A bucket remote has no folder to watch at all.
    class Bucket:
        """Stands in for any provider without watch_root (S3, GCS, Azure)."""

    changes.add("bucket", Bucket())  # type: ignore[arg-type]
    changes.listing("bucket")
    assert changes.needs_listing("bucket")


def test_two_pairs_on_one_remote_folder(tmp_path: Path, watcher: Watcher) -> None:
    """watchdog would merge two watches of one folder; the second pair is listed instead."""
    folder, provider = _folder(tmp_path)
    changes = RemoteChanges(watcher)
    changes.add("one", provider)
    changes.add("two", provider)
    changes.listing("one")
    changes.listing("two")
    assert changes.watched("one")
    assert not changes.watched("two")
    assert changes.needs_listing("two")
    # Removing the second pair leaves the first one's watch alone: it still hears changes.
    changes.remove("two")
    assert not _settled_needs_listing(changes, "one")
    (folder / "new.txt").write_bytes(b"new")
    wait_for(lambda: changes.needs_listing("one"), timeout=5)


def test_overflow_warning_reaches_the_daemon() -> None:
    """watchdog only logs a queue overflow; the Watcher hears that log line."""
    source = Path(watchdog.observers.inotify_c.__file__).read_text()
    assert watchdog.observers.inotify_c.__name__ == OVERFLOW_LOGGER
    assert f'logger.warning("{OVERFLOW_MESSAGE};' in source
    heard: list[bool] = []
    watching = Watcher(lambda change: None, lambda: heard.append(True))
    overflow_log = logging.getLogger(OVERFLOW_LOGGER)
    overflow_log.setLevel(logging.ERROR)  # even where warnings are silenced
    watching.start()
    try:
        logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; events were lost")
        logging.getLogger(OVERFLOW_LOGGER).warning("something else")
    finally:
        watching.stop()
    logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; after stop")
    assert heard == [True]
    overflow_log.setLevel(logging.NOTSET)


def test_watchdogs_inactive_emitter_line_at_a_stop_is_not_shown(tmp_path: Path) -> None:
    """At a stop, watchdog may hand one of its winding-down emitter threads an event and log
    an error for it (a race of its own, harmless): a clean stop of syncd showed an error
    line now and then. After a Watcher's stop that line is dropped; any other is kept."""
    import watchdog.observers.inotify

    source = Path(watchdog.observers.inotify.__file__).read_text()
    assert watchdog.observers.inotify.__name__ == STOPPING_LOGGER
    assert f'logger.error("{STOPPING_MESSAGE}")' in source
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    emitter_log = logging.getLogger(STOPPING_LOGGER)
    handler = Keep()
    emitter_log.addHandler(handler)
    try:
        watching = Watcher(lambda change: None)
        watching.watch("p", tmp_path)
        watching.start()
        watching.stop()
        emitter_log.error(STOPPING_MESSAGE)
        emitter_log.error("another error")
    finally:
        emitter_log.removeHandler(handler)
    assert seen == ["another error"]


# -- the daemon --------------------------------------------------------------------------------


def _messages(setup: Setup, event: str) -> int:
    count = 0
    for line in (setup.tmp / "daemon.log").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += record.get("event") == event
    return count


LISTED = "remote listed"
SKIPPED = "remote unchanged since its last listing; not listed"


def test_daemon_lists_a_watched_folder_remote_only_after_changes(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")  # poll_interval: 1
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "mine.txt").write_bytes(b"mine")
    with running_daemon(setup) as daemon:
        wait_for(lambda: (remote / "mine.txt").exists())
        daemon.wait_idle()
        # Quiet: polls go by without listing.
        wait_for(lambda: _messages(setup, SKIPPED) >= 1, timeout=10)
        listed = _messages(setup, LISTED)
        wait_for(lambda: _messages(setup, SKIPPED) >= 3, timeout=10)
        assert _messages(setup, LISTED) == listed

        # Another program writes into the remote folder: listed, and it comes down.
        (remote / "sub").mkdir()
        (remote / "sub" / "theirs.txt").write_bytes(b"theirs")
        target = setup.local / "sub" / "theirs.txt"
        wait_for(lambda: target.exists() and target.read_bytes() == b"theirs", timeout=10)
        assert _messages(setup, LISTED) > listed

        # Quiet again: skipped again.
        daemon.wait_idle()
        skipped = _messages(setup, SKIPPED)
        wait_for(lambda: _messages(setup, SKIPPED) >= skipped + 2, timeout=10)

        # The remote folder is swapped for another one (no event at its old path): the next
        # poll lists the new folder and its files come down; nothing local is lost.
        remote.rename(tmp_path / "old-remote")
        remote.mkdir()
        (remote / "mine.txt").write_bytes(b"mine")
        (remote / "new.txt").write_bytes(b"in the new folder")
        wait_for(lambda: (setup.local / "new.txt").exists(), timeout=10)
        assert (setup.local / "new.txt").read_bytes() == b"in the new folder"
        assert (setup.local / "mine.txt").read_bytes() == b"mine"
        daemon.wait_idle()
        assert daemon.terminate() == 0


def test_a_remote_folder_that_appears_later_is_watched_from_then_on(tmp_path: Path) -> None:
    """The remote folder is missing when the daemon starts (a NAS not mounted yet): the pair
    is in error and listed at every poll; once the folder is there, its files come down and
    quiet polls skip the listing again."""
    remote = tmp_path / "remote"
    setup = Setup(tmp_path, f"file://{remote}")
    with running_daemon(setup) as daemon:
        wait_for(lambda: daemon.pair_status()["state"] == "error", timeout=10)
        assert "remote folder not watched; listed at every poll" in daemon.logs()
        remote.mkdir()
        (remote / "arrived.txt").write_bytes(b"mounted at last")
        target = setup.local / "arrived.txt"
        wait_for(lambda: target.exists() and target.read_bytes() == b"mounted at last")
        daemon.wait_idle()
        skipped = _messages(setup, SKIPPED)
        wait_for(lambda: _messages(setup, SKIPPED) >= skipped + 2, timeout=10)
        (remote / "later.txt").write_bytes(b"seen through the watch")
        wait_for(lambda: (setup.local / "later.txt").exists(), timeout=10)
        assert daemon.terminate() == 0


QUEUE_KNOB = Path("/proc/sys/fs/inotify/max_queued_events")


def test_daemon_rescans_after_the_kernel_drops_events(tmp_path: Path) -> None:
    """A real overflow: the daemon starts while inotify queues hold 8 events, then 300 files
    arrive at once on both sides. Events are dropped; the daemon says so, rescans, and every
    file is synced."""
    if not os.access(QUEUE_KNOB, os.W_OK):
        unavailable_here(f"needs root to shrink the inotify queue ({QUEUE_KNOB})")
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"poll_interval": 3600})
    saved = QUEUE_KNOB.read_text()
    QUEUE_KNOB.write_text("8\n")
    try:
        with running_daemon(setup) as daemon:
            # Both watches (local, then the remote's at the first listing) are set.
            wait_for(lambda: _messages(setup, "full scan queued") >= 1, timeout=30)
            QUEUE_KNOB.write_text(saved)
            for i in range(150):
                (setup.local / f"local-{i}.txt").write_bytes(b"L%d" % i)
                (remote / f"remote-{i}.txt").write_bytes(b"R%d" % i)

            def synced() -> bool:
                names = {p.name for p in remote.iterdir()} | {p.name for p in setup.local.iterdir()}
                everywhere = all(
                    (setup.local / n).exists() and (remote / n).exists()
                    for n in names
                    if n.endswith(".txt")
                )
                return everywhere and len([n for n in names if n.endswith(".txt")]) == 300

            wait_for(synced, timeout=60)
            assert "file events were lost" in daemon.logs()
            for i in range(150):
                assert (remote / f"local-{i}.txt").read_bytes() == b"L%d" % i
                assert (setup.local / f"remote-{i}.txt").read_bytes() == b"R%d" % i
            assert daemon.terminate() == 0
    finally:
        QUEUE_KNOB.write_text(saved)

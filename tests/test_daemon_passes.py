"""The daemon's passes, driven by hand (no `run`, no workers): full scans asked for while one
runs, and when a pass ends."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from hand_driven import first_pass, hand_driven_pair, work_off
from harness import tree, wait_for
from sqlalchemy.exc import OperationalError

from syncd.daemon import daemon as daemon_module
from syncd.daemon.daemon import Daemon
from syncd.engine.core import Engine
from syncd.engine.syncer import Outcome, PairSyncer


def _delete_three_of_four(daemon: Daemon, engine: Engine, local: Path) -> None:
    """Delete a, b and c of the four synced files, as the watcher says it, and let the pass
    end: more than max_delete's 50 %, so the pair is held."""
    for name in "abc":
        (local / f"{name}.txt").unlink()
        engine.queue.put("docs", f"{name}.txt")  # as the watcher says it
    work_off(engine)
    daemon._end_quiet_passes()


def _poller_runs(daemon: Daemon) -> dict[str, int]:
    """The poller's jobs running now, by id, with how many runs of each."""
    executor = daemon.poller._scheduler._executors["default"]
    with executor._lock:
        return {job: runs for job, runs in executor._instances.items() if runs}


@contextmanager
def _poller_through(daemon: Daemon) -> Iterator[None]:
    """Wait, after the block, until what the poller was asked to run in it has run (or was
    dropped): scans asked for ran there once, and the test must not go on before."""
    before = _poller_runs(daemon)
    yield
    wait_for(lambda: not daemon.poller._scheduler.get_jobs() and _poller_runs(daemon) == before)


def _scans_ended(daemon: Daemon) -> None:
    for _, thread in list(daemon._startups.values()):
        thread.join(10)
        assert not thread.is_alive()


@contextmanager
def _next_plan_waits(
    monkeypatch: pytest.MonkeyPatch, syncer: PairSyncer
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The syncer's next scan walks the local tree and lists the remote, then waits until
    `go` is set (a big remote whose listing takes minutes): `walked` says it got there."""
    walked, go = threading.Event(), threading.Event()
    plan = syncer.plan

    def waiting(*args: Any, **kwargs: Any) -> Any:
        planned = plan(*args, **kwargs)
        if not walked.is_set():
            walked.set()
            assert go.wait(30)
        return planned

    monkeypatch.setattr(syncer, "plan", waiting)
    try:
        yield walked, go
    finally:
        go.set()


@pytest.mark.parametrize("running", ["start-up pass", "syncd sync"])
def test_a_full_scan_asked_for_while_one_runs_runs_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: str
) -> None:
    """Events lost (an inotify overflow) while a full scan was listing a big remote, its
    local walk done: the scan asked for then was dropped (APScheduler skips a job whose
    last run is still running; a start-up pass took no other scan at all), and a file made
    after the walk waited for the hourly rescan, the pair meanwhile `idle`. The scan under
    way now runs once more when it ends."""
    setup, remote, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        daemon.poller.start()  # as `run` does
        try:
            if running == "syncd sync":
                first_pass(daemon, engine)
            with _next_plan_waits(monkeypatch, engine.syncers["docs"]) as (walked, go):
                if running == "syncd sync":
                    assert daemon.dispatch("sync", {})["queued"]
                else:
                    daemon._start_pass("docs")
                assert walked.wait(10)
                (local / "x.txt").write_text("made after the walk")
                with _poller_through(daemon):
                    daemon._on_overflow()  # its event, and others, were lost
                go.set()
                wait_for(lambda: engine.queue.holds("docs", "x.txt"), timeout=10)
            _scans_ended(daemon)
        finally:
            daemon.poller.stop()
        work_off(engine)
    assert tree(remote) == {"a.txt": b"a", "x.txt": b"made after the walk"}


def test_sync_force_sent_during_a_start_up_pass_lets_the_held_deletions_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held pair, restarted (or made anew by a reload that raised max_delete): its held
    deletions are known from the state only until its start-up pass decides them again.
    `syncd sync --force` sent meanwhile was spent at the next tick of the main loop on no
    pending deletion (the pair stayed held, said "sync requested"), and stamped last_sync
    before the pass was through. The force now waits for a pass that can use it."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcd"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        _delete_three_of_four(daemon, engine, local)
        assert engine.syncers["docs"].stats.held_reason is not None
    assert tree(remote) == {f"{n}.txt": n.encode() for n in "abcd"}

    with Engine(config) as engine:  # the daemon restarted
        daemon = Daemon(config, engine)
        syncer = engine.syncers["docs"]
        synced = syncer.stats.last_sync
        assert synced is not None
        engine.queue.close_gate("docs")  # as `run` does
        with _next_plan_waits(monkeypatch, syncer) as (walked, go):
            daemon._start_pass("docs")
            assert walked.wait(10)
            assert daemon.dispatch("sync", {"force": True})["queued"]
            daemon._end_quiet_passes()  # the main loop's tick, the start-up pass under way
            assert syncer.stats.last_sync == synced
            go.set()
            _scans_ended(daemon)
        for _ in range(2):  # the deletions decided, then let through and carried out
            work_off(engine)
            daemon._end_quiet_passes()
        assert syncer.stats.held_reason is None
        assert daemon.status()["pairs"][0]["state"] == "idle"
    assert tree(remote) == {"d.txt": b"d"}


def _paths_under_fails(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    """The state's next read of the paths under a folder fails (a disk I/O error)."""
    paths_under = engine.store.paths_under
    calls: list[str] = []

    def failing(pair: str, path: str) -> Any:
        calls.append(path)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, sqlite3.OperationalError("disk I/O error"))
        return paths_under(pair, path)

    monkeypatch.setattr(engine.store, "paths_under", failing)


def _settle_a_folder_and_files(daemon: Daemon, local: Path) -> None:
    """A folder and a file settled in one batch (the folder first), a file a moment later."""
    (local / "dir").mkdir()
    for name in ("dir/in.txt", "b.txt", "c.txt"):
        (local / name).write_text(name)
    daemon.settler.touch(("docs", "dir"), 0, walk=True)
    daemon.settler.touch(("docs", "b.txt"), 0)
    daemon.settler.touch(("docs", "c.txt"), 0.3)


def test_a_settled_change_that_fails_is_said_and_the_pair_compared_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder's walk that failed (the state's read of the paths under it raised) ended
    the settle thread: the rest of its batch was never queued, nor what settled later.
    It is said now, the pair is compared in full, and the thread goes on."""
    setup, _, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        scans: list[str] = []
        monkeypatch.setattr(daemon, "rescan", scans.append, raising=False)
        _paths_under_fails(monkeypatch, engine)
        with structlog.testing.capture_logs() as logs:
            _settle_a_folder_and_files(daemon, local)
            daemon.settler.start()
            try:
                wait_for(lambda: all(engine.queue.holds("docs", p) for p in ("b.txt", "c.txt")))
                assert daemon.settler.is_alive()
            finally:
                daemon.settler.stop()
    assert scans == ["docs"]
    said = [(e["log_level"], e["path"], e["error"]) for e in logs if "compar" in e["event"]]
    assert [(level, path) for level, path, _ in said] == [("error", "dir")]
    assert said[0][2].startswith("OperationalError: (sqlite3.OperationalError) disk I/O error")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_restarted_settle_thread_carries_over_what_was_settling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the settle thread died all the same, the main loop started a new, empty one:
    the changes still settling (the rest of the batch, those due later, those touched
    meanwhile) were never queued, until the hourly rescan. The new one takes them over."""
    setup, _, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)

        def broken(name: str) -> None:
            raise RuntimeError("no thread can be started")

        monkeypatch.setattr(daemon, "rescan", broken, raising=False)
        _paths_under_fails(monkeypatch, engine)
        _settle_a_folder_and_files(daemon, local)
        daemon.settler.start()
        wait_for(lambda: not daemon.settler.is_alive())
        (local / "d.txt").write_text("d")
        daemon.settler.touch(("docs", "d.txt"), 0)  # the watcher, before the main loop's tick
        daemon._supervise()  # the main loop's tick
        try:
            wanted = ("b.txt", "c.txt", "d.txt")
            wait_for(lambda: all(engine.queue.holds("docs", p) for p in wanted))
        finally:
            daemon.settler.stop()


def test_held_deletions_are_weighed_again_at_a_poll_not_at_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held deletion stays pending, and every tick of the main loop (twice a second)
    weighed all of a held pair's deletions again: one state query per held file, for as
    long as the hold stood. They are weighed again once its poll has decided them again
    (the README's "decided again at every poll"), or at `sync --force`."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcd"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        syncer = engine.syncers["docs"]
        first_pass(daemon, engine)
        _delete_three_of_four(daemon, engine, local)
        assert daemon.status()["pairs"][0]["state"] == "held"

        weighed: list[bool] = []
        flush_deletions = syncer.flush_deletions

        def weigh(force: bool = False) -> list[str]:
            weighed.append(force)
            return flush_deletions(force=force)

        monkeypatch.setattr(syncer, "flush_deletions", weigh)
        for _ in range(5):  # ticks of the main loop
            daemon._end_quiet_passes()
        assert weighed == []

        daemon._requeue_due(
            engine.syncers["docs"], []
        )  # a quiet poll: the held paths are decided again
        work_off(engine)
        for _ in range(5):
            daemon._end_quiet_passes()
        assert weighed == [False]
        assert daemon.status()["pairs"][0]["state"] == "held"

        engine.force.add("docs")  # as `syncd sync --force` does
        daemon._end_quiet_passes()
        work_off(engine)
        daemon._end_quiet_passes()
        assert weighed == [False, True, False]
        assert daemon.status()["pairs"][0]["state"] == "idle"
    assert tree(remote) == {"d.txt": b"d"}


def test_a_pair_is_not_idle_while_a_folder_event_is_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the settle thread walked a folder that appeared (seconds, for a big one), the
    folder and the changes due with it were neither settling nor queued: the pair showed
    `idle` with 0 queued, and a poll (or the end of a pass) stamped last_sync. A client
    waiting for idle, or for last_sync past its change, went on before it was queued."""
    setup, _, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    local = setup.local
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        syncer = engine.syncers["docs"]
        first_pass(daemon, engine)
        synced = syncer.stats.last_sync
        walking, go = threading.Event(), threading.Event()
        scan_local = syncer.scan_local

        def slow_walk(*args: Any, **kwargs: Any) -> Any:
            walking.set()
            assert go.wait(30)
            return scan_local(*args, **kwargs)

        monkeypatch.setattr(syncer, "scan_local", slow_walk)
        (local / "dir").mkdir()
        (local / "dir" / "in.txt").write_text("in")
        (local / "b.txt").write_text("b")
        daemon.settler.touch(("docs", "dir"), 0, walk=True)
        daemon.settler.touch(("docs", "b.txt"), 0)
        daemon.settler.start()
        try:
            assert walking.wait(10)
            pair = daemon.status()["pairs"][0]
            assert (pair["state"], pair["queued"]) == ("syncing", 2)
            daemon._requeue_due(engine.syncers["docs"], [])  # a quiet poll
            engine.touched.add("docs")
            daemon._end_quiet_passes()  # the main loop's tick
            assert syncer.stats.last_sync == synced
            go.set()
            wait_for(lambda: all(engine.queue.holds("docs", p) for p in ("dir/in.txt", "b.txt")))
        finally:
            go.set()
            daemon.settler.stop()


def test_a_pair_is_syncing_while_a_scan_asked_for_by_sync_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syncd sync` starts a full comparison; while it listed the remote (minutes, on a big
    bucket) the pair showed `idle`, so a script that sends `syncd sync` and waits for idle
    went on before the comparison it asked for had found anything. It is `syncing` until
    the scan has queued what it found, and its pass does not end under it."""
    setup, _remote, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        assert daemon.status()["pairs"][0]["state"] == "idle"
        (setup.local / "b.txt").write_text("b")  # unseen: no watcher runs here
        with _next_plan_waits(monkeypatch, engine.syncers["docs"]) as (walked, go):
            assert daemon.dispatch("sync", {})["queued"]
            assert walked.wait(10)
            pair = daemon.status()["pairs"][0]
            assert (pair["state"], pair["queued"], pair["in_flight"]) == ("syncing", 0, 0)
            assert daemon.status_line() == "scanning docs"
            engine.touched.add("docs")  # as a worker marks it
            daemon._end_quiet_passes()  # the main loop's tick: no end of pass mid-scan
            assert "docs" in engine.touched
            go.set()
            _scans_ended(daemon)
        assert engine.queue.holds("docs", "b.txt")
        assert daemon.status()["pairs"][0]["state"] == "syncing"
        work_off(engine)
        daemon._end_quiet_passes()
        assert daemon.status()["pairs"][0]["state"] == "idle"


@pytest.mark.parametrize("forced", [False, True], ids=["retry", "sync --force"])
def test_a_path_looked_at_while_the_remote_is_gone_is_not_deleted_locally(
    tmp_path: Path, forced: bool
) -> None:
    """The remote folder gone (a NAS not mounted; a bucket deleted): the pair is in `error`.
    A path looked at on its own then (`syncd retry` of a failed path, a file event) found no
    object, read that as a remote deletion, and moved the local file to the trash: with a
    bucket deleted for good, the trash held the only copy left. Its deletion is held while
    the remote cannot be listed, even with --force."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcde"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        assert tree(remote) == {f"{n}.txt": n.encode() for n in "abcde"}
        (remote / "a.txt").write_text("A, edited on the remote")
        daemon.full_scan("docs")  # a poll sees it: a.txt is queued, to come down
        remote.rename(tmp_path / "unmounted")
        daemon.full_scan("docs")  # the next poll: the listing fails
        assert daemon.status()["pairs"][0]["state"] == "error"
        if forced:
            engine.force.add("docs")
        # The download finds no object (nor would `syncd retry` of a failed one, or a file
        # event): the path is decided again, with no remote file.
        for _ in range(3):
            work_off(engine)
            daemon._end_quiet_passes()
        assert (setup.local / "a.txt").read_text() == "a"
        assert not (setup.local / ".syncd" / "trash").exists()
        assert daemon.status()["pairs"][0]["state"] == "error"


def test_a_deletion_held_only_for_an_outage_goes_through_once_the_remote_is_back(
    tmp_path: Path,
) -> None:
    """One file deleted here while the remote folder was away: held, as every deletion then.
    It was remembered as "held earlier", and once the remote was back it still waited for
    --force, run after run. Held for the outage alone, it is weighed afresh after it."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcde"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        away = tmp_path / "unmounted"
        remote.rename(away)
        daemon.full_scan("docs")  # the poll: the listing fails
        (setup.local / "a.txt").unlink()
        engine.queue.put("docs", "a.txt")  # as the watcher says it
        work_off(engine)
        daemon._end_quiet_passes()
        assert (away / "a.txt").exists()
        away.rename(remote)
        daemon.full_scan("docs")  # the next poll lists it again
        for _ in range(3):
            work_off(engine)
            daemon._end_quiet_passes()
        pair = daemon.status()["pairs"][0]
        assert (pair["state"], pair["last_error"]) == ("idle", None)
    assert sorted(p.name for p in remote.iterdir() if p.is_file()) == [f"{n}.txt" for n in "bcde"]


def test_a_remote_gone_since_the_last_poll_deletes_nothing_locally(tmp_path: Path) -> None:
    """The remote folder went away after a poll and before the next: no listing has failed,
    so the pair was not in `error`. A download queued by that poll found no object, read it
    as a remote deletion, and the guard let one file in five through to the trash. The
    remote root is looked at first: gone, nothing is deleted, and the pair is in error."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcde"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        (remote / "a.txt").write_text("A, edited on the remote")
        daemon.full_scan("docs")  # a poll sees it: a.txt is queued, to come down
        remote.rename(tmp_path / "unmounted")
        for _ in range(3):
            work_off(engine)
            daemon._end_quiet_passes()
        assert (setup.local / "a.txt").read_text() == "a"
        assert not (setup.local / ".syncd" / "trash").exists()
        pair = daemon.status()["pairs"][0]
        assert pair["state"] == "error"
        assert f"remote folder {remote} does not exist" in pair["last_error"]
        (tmp_path / "unmounted").rename(remote)
        daemon.full_scan("docs")  # the next poll lists it again: the edit comes down
        for _ in range(3):
            work_off(engine)
            daemon._end_quiet_passes()
        pair = daemon.status()["pairs"][0]
        assert (pair["state"], pair["last_error"]) == ("idle", None)
    assert (setup.local / "a.txt").read_text() == "A, edited on the remote"


def test_failures_of_a_pair_in_error_wait_for_the_remote_not_a_time_long_past(
    tmp_path: Path,
) -> None:
    """A pair in error tries its failed paths again at the poll that finds the remote back,
    not when their backoff runs out; status showed a `next_try` minutes in the past."""
    setup, remote, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        remote.rename(tmp_path / "unmounted")
        (setup.local / "a.txt").write_text("a, edited")
        engine.queue.put("docs", "a.txt")  # as the watcher says it
        work_off(engine)  # the upload fails: no remote folder
        pair = daemon.status()["pairs"][0]
        [failure] = pair["failures"]
        assert failure["next_try"] is not None and "waits_for" not in failure
        daemon.full_scan("docs")  # the poll: the listing fails, the pair is in error
        pair = daemon.status()["pairs"][0]
        assert pair["state"] == "error"
        [failure] = pair["failures"]
        assert (failure["path"], failure["next_try"], failure["waits_for"]) == (
            "a.txt",
            None,
            "the remote",
        )
        (tmp_path / "unmounted").rename(remote)
        daemon.full_scan("docs")
        work_off(engine)
        daemon._end_quiet_passes()
        pair = daemon.status()["pairs"][0]
        assert (pair["state"], pair["failures"]) == ("idle", [])
    assert (remote / "a.txt").read_text() == "a, edited"


def test_a_transfer_stopped_by_pause_again_and_again_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syncd pause` stops a transfer in flight and its path waits in the paused queue. It
    came back through the requeue count of a path that keeps changing: the ninth pause of
    one big transfer failed it ("kept changing while being synced")."""
    _setup, _remote, config = hand_driven_pair(tmp_path, {"a.txt": "a"})
    with Engine(config) as engine:
        syncer = engine.syncers["docs"]
        engine.queue.pause("docs")
        syncer.pause()
        monkeypatch.setattr(syncer, "sync_path", lambda *_args, **_kw: Outcome.REQUEUE)
        for _ in range(12):
            engine.handle(("docs", "a.txt"))
        assert "a.txt" not in syncer.stats.failures
        assert engine.queue.holds("docs", "a.txt")


def test_a_probe_that_does_not_answer_holds_the_deletion_for_a_pass_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote root's probe runs before local deletions go through, at the end of a pass:
    in the daemon's main loop. On a hung remote it held that loop for minutes (no watchdog
    ping, a SIGTERM not heard). It is waited for a few seconds at most; unanswered, the
    deletion waits for the next pass, the pair not at fault."""
    setup, remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcde"})
    monkeypatch.setattr(daemon_module, "PROBE_WAIT_S", 0.2)
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        provider = engine.syncers["docs"].provider
        answered = provider.probe
        hung = threading.Event()

        def probe() -> None:  # hangs as the end of a pass asks it (a listing asks it too)
            if threading.current_thread().name == "syncd-probe":
                hung.wait(30)
            answered()

        monkeypatch.setattr(provider, "probe", probe)
        (remote / "a.txt").unlink()
        daemon.full_scan("docs")
        work_off(engine)
        daemon._end_quiet_passes()
        pair = daemon.status()["pairs"][0]
        assert pair["state"] == "held"  # not in error: a hung request is no gone bucket
        assert "its root could not be checked: no answer in 0.2 s" in pair["held_reason"]
        assert (setup.local / "a.txt").exists()
        hung.set()
        monkeypatch.setattr(provider, "probe", answered)
        daemon.full_scan("docs")  # the next poll decides it again
        for _ in range(3):
            work_off(engine)
            daemon._end_quiet_passes()
        pair = daemon.status()["pairs"][0]
        assert (pair["state"], pair["held"]) == ("idle", 0)
    assert not (setup.local / "a.txt").exists()


def test_a_pair_deciding_its_held_deletions_again_stays_held(tmp_path: Path) -> None:
    """At each poll the held deletions are decided again, each by a worker: while one was in
    flight the pair read `syncing`, so `held` flickered (a script that waits for it, or reads
    it twice, missed it; seen under load in CI)."""
    setup, _remote, config = hand_driven_pair(tmp_path, {f"{n}.txt": n for n in "abcd"})
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        first_pass(daemon, engine)
        for n in "abc":
            (setup.local / f"{n}.txt").unlink()
        daemon.full_scan("docs")
        work_off(engine)
        daemon._end_quiet_passes()
        assert daemon.status()["pairs"][0]["state"] == "held"
        engine.queue.put("docs", "a.txt")  # the next poll decides it again
        key = engine.queue.get(timeout=1)
        assert key == ("docs", "a.txt")  # in flight, as a worker takes it
        assert daemon.status()["pairs"][0]["state"] == "held"
        engine.queue.done(key)
        (setup.local / "new.txt").write_text("new")
        engine.queue.put("docs", "new.txt")
        key = engine.queue.get(timeout=1)
        assert daemon.status()["pairs"][0]["state"] == "syncing"  # real work in flight
        engine.queue.done(key)

"""What still fails after the retries: recorded per path (operation, error, attempts, next
try), retried with a growing backoff, requeued at once by `syncd retry`, shown in status; one
broken file never blocks the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import Setup, running_daemon, syncd, tree, wait_for
from remotes import S3Remote

from syncd.engine.stats import FAILURE_BACKOFF_MAX, PairStats, failure_backoff

TOO_LONG = "n" * 300 + ".txt"  # a remote key no local filesystem can hold as a name


def test_backoff_grows_and_is_capped() -> None:
    assert [failure_backoff(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert failure_backoff(40) == FAILURE_BACKOFF_MAX


def test_failures_are_counted_and_fall_due() -> None:
    stats = PairStats()
    first = stats.failed("a.txt", "boom", op="upload", now=1000.0)
    assert (first.attempts, first.op, first.next_try) == (1, "upload", 1005.0)
    again = stats.failed("a.txt", "boom again", op="upload", now=1006.0)
    assert (again.attempts, again.first_failed, again.next_try) == (2, 1000.0, 1016.0)
    assert stats.due_failures(now=1010.0) == []
    assert stats.due_failures(now=1016.0) == ["a.txt"]
    assert stats.last_error == "a.txt: boom again"
    stats.succeeded("a.txt")
    assert stats.failures == {}


def test_a_refused_name_is_a_failure_never_due_counted_once_and_cleared_when_gone() -> None:
    """A name that cannot be synced: a failure of that path, with no next try (no retry can
    fix a name), counted once while it stands, untouched by a success of the path, and gone
    when a full listing of its side no longer holds it. Its JSON stays valid (no Infinity)."""
    stats = PairStats()
    assert stats.refused("../x", "remote key refused: '..' segment", "remote", now=1000.0)
    assert not stats.refused("../x", "remote key refused: '..' segment", "remote", now=2000.0)
    assert stats.refused("a\\b", "name contains a backslash", "local")
    assert stats.refused("a\\b", "remote key refused: contains a backslash", "remote")
    assert stats.totals()["failures"] == 3  # each (side, name) once
    assert stats.due_failures(now=float("1e18")) == []
    assert stats.retryable() == []
    failure = stats.failures["../x"]
    assert (failure.op, failure.attempts, failure.first_failed) == ("refused_remote_key", 1, 1000.0)
    assert stats.failures["a\\b"].op == "refused_local_name_and_remote_key"
    shown = json.dumps([f.as_json() for f in stats.failures.values()], allow_nan=False)
    assert json.loads(shown)[0]["next_try"] is None

    stats.succeeded("../x")  # `syncd retry` and friends cannot settle a refused name
    stats.failed("../x", "boom", op="download")
    assert stats.failures["../x"].op == "refused_remote_key"

    assert stats.clear_refused("remote", {"a\\b"}) == ["../x"]
    assert set(stats.failures) == {"a\\b"}
    assert stats.clear_refused("local", set()) == ["a\\b"]
    assert stats.failures["a\\b"].op == "refused_remote_key"  # still refused there
    assert stats.clear_refused("remote", set()) == ["a\\b"]
    assert stats.failures == {}
    assert stats.last_error is None
    assert stats.totals()["failures"] == 3


def test_a_failing_file_is_reported_retried_and_requeued(tmp_path: Path, s3_bucket: Any) -> None:
    remote = S3Remote(s3_bucket, "docs/")
    remote.put(TOO_LONG, b"cannot land locally")
    remote.put("fine.txt", b"fine")
    setup = Setup(tmp_path, remote.url, options=remote.options)
    with running_daemon(setup) as daemon:
        # The broken file does not hold up the others.
        wait_for(lambda: (setup.local / "fine.txt").exists())
        (setup.local / "up.txt").write_bytes(b"goes up meanwhile")
        wait_for(lambda: remote.read("up.txt") == b"goes up meanwhile")

        def failed() -> dict[str, Any] | None:
            pair = daemon.pair_status()
            return pair if pair["failed"] == 1 and pair["failures"] else None

        pair = wait_for(failed)
        (failure,) = pair["failures"]
        assert failure["path"] == TOO_LONG
        assert failure["op"] == failure["operation"] == "download"
        assert "too long" in failure["error"].lower()
        assert failure["attempts"] >= 1
        assert failure["next_try"].endswith("Z")
        assert pair["last_error"].startswith(TOO_LONG)
        human = syncd("status", "-c", setup.config)
        flat = human.stdout.replace("\n", "")  # rich wraps the long name
        assert f"failed {TOO_LONG} (download)" in flat and "attempt" in flat

        # The poller tries it again once its backoff (5 s, then 10 s) is over.
        wait_for(lambda: daemon.pair_status()["failures"][0]["attempts"] >= 2, timeout=20)

        # Someone removes the bad key; `syncd retry` requeues at once and the failure clears.
        remote.delete(TOO_LONG)
        result = syncd("retry", "-c", setup.config)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: daemon.pair_status()["failed"] == 0, timeout=10)
        assert daemon.pair_status()["failures"] == []
        assert tree(setup.local) == {"fine.txt": b"fine", "up.txt": b"goes up meanwhile"}
        assert daemon.terminate() == 0


def test_a_path_that_keeps_changing_is_a_failure_like_any_other(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A path looked at again MAX_REQUEUES times ("kept changing while being synced") was a
    failure of the pass only: the totals and the audit trail (`syncd log`) never heard of
    it. Now it is recorded where every failure is."""
    from harness import folder_engine

    from syncd.engine import core
    from syncd.engine.syncer import Outcome, PairSyncer

    monkeypatch.setattr(core, "REQUEUE_BASE_DELAY", 0.001)
    monkeypatch.setattr(PairSyncer, "sync_path", lambda self, path, keep=None: Outcome.REQUEUE)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "restless.txt").write_text("changes all the time")
    with folder_engine(tmp_path) as engine:
        report = engine.sync_once()
        assert [f.path for f in report.failures] == ["restless.txt"]
        assert "kept changing" in report.failures[0].error
        assert report.exit_code == 1
        assert engine.store.counters("p").get("failures") == 1
        ops = [(op.path, op.op, op.result) for op in engine.store.ops("p")]
        assert ("restless.txt", "sync", "failed") in ops


def test_last_error_names_a_problem_that_still_stands() -> None:
    """An outage ended while a refused name stood: `last_error` kept saying the remote could
    not be listed until every failure was gone. Once the problem it names is over, it names
    one that is left (the remote's fault, held deletions, the path that failed last)."""
    stats = PairStats()
    stats.refused("bad\\name", "remote key refused: contains a backslash", "remote", now=1000.0)
    stats.failed("a.txt", "permission denied", op="upload", now=1001.0)
    stats.set_fault("cannot list file:///r2: remote folder does not exist")
    stats.set_held("3 of 4 files (75 %) would be deleted", {"x": "delete_remote"})
    assert stats.last_error == "deletions held: 3 of 4 files (75 %) would be deleted"

    stats.set_fault(None)  # the remote answers again
    assert stats.last_error == "deletions held: 3 of 4 files (75 %) would be deleted"
    stats.set_held(None, {})
    assert stats.last_error == "a.txt: permission denied"
    stats.succeeded("a.txt")
    assert stats.last_error == "bad\\name: remote key refused: contains a backslash"
    stats.clear_refused("remote", set())
    assert stats.last_error is None

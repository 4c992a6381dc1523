"""The audit trail: every operation in the state's operation log, printed by `syncd log`, and
pruned after `log_retention_days`."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from harness import Setup, running_daemon, syncd, wait_for

from syncd.audit import parse_since


def _records(result_stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in result_stdout.splitlines() if line.strip()]


def test_every_operation_is_in_the_log(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"conflict": "version_preserve"})
    setup.write()
    (setup.local / "up.txt").write_bytes(b"goes up")
    (setup.local / "gone.txt").write_bytes(b"will be deleted")
    (setup.local / "old-name.txt").write_bytes(b"will be moved")
    (remote / "down.txt").write_bytes(b"comes down")
    assert syncd("once", "-c", setup.config).returncode == 0

    (setup.local / "gone.txt").unlink()
    (setup.local / "old-name.txt").rename(setup.local / "new-name.txt")
    (setup.local / "up.txt").write_bytes(b"local edit")
    (remote / "up.txt").write_bytes(b"remote edit, longer")
    assert syncd("once", "-c", setup.config).returncode == 0

    result = syncd("log", "--json", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    seen = {(r["op"], r["path"], r["result"]) for r in records}
    assert ("upload", "up.txt", "ok") in seen
    assert ("download", "down.txt", "ok") in seen
    assert ("delete_remote", "gone.txt", "ok") in seen
    assert ("move", "new-name.txt", "ok") in seen
    assert ("conflict", "up.txt", "ok") in seen
    upload = next(r for r in records if r["op"] == "upload" and r["path"] == "up.txt")
    assert upload["size"] == len(b"goes up")
    assert upload["sha256"] == hashlib.sha256(b"goes up").hexdigest()
    assert isinstance(upload["duration_ms"], float)
    assert str(upload["time"]).endswith("Z")
    done = [r for r in records if r["result"] == "ok"]
    assert all(isinstance(r["duration_ms"], float) for r in done)  # moves, deletions too
    assert all(isinstance(r["size"], int) for r in done)
    moved = next(r for r in records if r["op"] == "move")
    assert moved["sha256"] == hashlib.sha256(b"will be moved").hexdigest()
    # The conflict's line names the version the path holds since: the newer, remote one (a
    # folder remote's listing states no SHA-256; its download's line does).
    settled = next(r for r in records if r["op"] == "conflict")
    assert settled["size"] == len(b"remote edit, longer")
    times = [str(r["time"]) for r in records]
    assert times == sorted(times)  # oldest first

    human = syncd("log", "-c", setup.config)
    assert human.returncode == 0
    assert "\tdocs\tupload\tok\tup.txt\t7\t" in human.stdout
    # The whole SHA-256 (it showed 16 digits, which no `sha256sum` output can be checked by).
    uploaded = next(r for r in records if r["op"] == "upload" and r["path"] == "up.txt")
    assert f"\tup.txt\t7\t{uploaded['sha256']}\t" in human.stdout
    assert len(uploaded["sha256"]) == 64

    assert syncd("log", "--since", "1h", "--json", "-c", setup.config).stdout == result.stdout
    assert syncd("log", "--since", "2999-01-01", "-c", setup.config).stdout == ""
    assert syncd("log", "--pair", "nope", "-c", setup.config).returncode == 2
    bad = syncd("log", "--since", "yesterday-ish", "-c", setup.config)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_held_deletions_are_in_the_log(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"max_delete": 10})
    setup.write()
    for i in range(4):
        (setup.local / f"f{i}.txt").write_bytes(b"x")
    assert syncd("once", "-c", setup.config).returncode == 0
    for i in range(3):
        (setup.local / f"f{i}.txt").unlink()
    before = syncd("log", "--json", "-c", setup.config).stdout
    assert syncd("once", "--dry-run", "-c", setup.config).returncode == 4  # it would hold
    assert syncd("log", "--json", "-c", setup.config).stdout == before  # a dry run logs nothing
    assert syncd("once", "-c", setup.config).returncode == 4  # held
    records = _records(syncd("log", "--json", "-c", setup.config).stdout)
    held = sorted(str(r["path"]) for r in records if r["result"] == "held")
    assert held == ["f0.txt", "f1.txt", "f2.txt"]
    assert all(r["op"] == "delete_remote" for r in records if r["result"] == "held")
    held_line = next(r for r in records if r["result"] == "held")
    assert (held_line["size"], held_line["sha256"]) == (1, hashlib.sha256(b"x").hexdigest())
    assert held_line["duration_ms"] is None  # nothing was done yet
    # Held again by the next run (a restart, for a daemon): logged once, not at every start.
    assert syncd("once", "-c", setup.config).returncode == 4
    again = _records(syncd("log", "--json", "-c", setup.config).stdout)
    assert [r for r in again if r["result"] == "held"] == [
        r for r in records if r["result"] == "held"
    ]


def test_old_records_are_pruned(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", extra={"log_retention_days": 30})
    setup.write()
    (setup.local / "a.txt").write_bytes(b"a")
    assert syncd("once", "-c", setup.config).returncode == 0
    with sqlite3.connect(setup.state_db) as db:  # age every record by 31 days
        db.execute("UPDATE oplog SET ts = ts - 31 * 86400")
    (setup.local / "b.txt").write_bytes(b"b")
    assert syncd("once", "-c", setup.config).returncode == 0
    paths = [r["path"] for r in _records(syncd("log", "--json", "-c", setup.config).stdout)]
    assert paths == ["b.txt"]


def test_the_daemon_prunes_old_records_when_it_starts(tmp_path: Path) -> None:
    """Issue 9: the poller prunes records older than `log_retention_days`. The daemon did it
    at a pair's first poll only, a `poll_interval` after its start (never while every pair
    was paused): records long past their retention stayed in `syncd log` meanwhile. It now
    prunes at the start, then once an hour, whatever the pairs do."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(
        tmp_path,
        f"file://{remote}",
        extra={"log_retention_days": 30},
        pair_extra={"poll_interval": 3600},
    )
    setup.write()
    (setup.local / "old.txt").write_bytes(b"old")
    assert syncd("once", "-c", setup.config).returncode == 0
    with sqlite3.connect(setup.state_db) as db:  # age every record by 31 days
        db.execute("UPDATE oplog SET ts = ts - 31 * 86400")
    (setup.local / "new.txt").write_bytes(b"new")

    def logged() -> list[object]:
        return [r["path"] for r in _records(syncd("log", "--json", "-c", setup.config).stdout)]

    with running_daemon(setup) as daemon:
        wait_for(lambda: logged() == ["new.txt"], timeout=20)
        assert '"event": "operation log pruned"' in daemon.logs()
        assert daemon.terminate() == 0


def test_a_reload_that_shortens_the_retention_prunes_at_once(tmp_path: Path) -> None:
    """README: a reload applies `log_retention_days` at once; the records it let go of stayed
    until the hourly prune (sweep X)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(
        tmp_path,
        f"file://{remote}",
        extra={"log_retention_days": 90},
        pair_extra={"poll_interval": 3600},
    )
    setup.write()
    (setup.local / "old.txt").write_bytes(b"old")
    assert syncd("once", "-c", setup.config).returncode == 0
    with sqlite3.connect(setup.state_db) as db:  # every record 40 days old
        db.execute("UPDATE oplog SET ts = ts - 40 * 86400")

    def logged() -> list[object]:
        return [r["path"] for r in _records(syncd("log", "--json", "-c", setup.config).stdout)]

    with running_daemon(setup) as daemon:
        daemon.wait_idle()
        assert logged() == ["old.txt"]
        setup.extra["log_retention_days"] = 30
        setup.write()
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: logged() == [], timeout=20)
        assert daemon.terminate() == 0


@pytest.mark.parametrize(
    ("text", "back"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1w", 604800)]
)
def test_since_spans(text: str, back: float) -> None:
    assert parse_since(text, now=1_000_000.0) == 1_000_000.0 - back


def test_since_times() -> None:
    assert parse_since("2026-11-24T10:00:00Z") == parse_since("2026-11-24T10:00:00+00:00")
    assert parse_since("2026-11-24") < time.time()
    with pytest.raises(ValueError, match="--since"):
        parse_since("soon")


def test_reading_commands_make_no_state_before_the_first_pass(tmp_path: Path) -> None:
    """`syncd conflicts`, `syncd log` and `syncd resolve` before any pass ran: nothing to show
    (exit 0; resolve: no such conflict, exit 2), and no empty state database left behind
    (they made one, inside a pair's folder too when `state:` pointed there)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    conflicts = syncd("conflicts", "-c", setup.config)
    assert (conflicts.returncode, conflicts.stdout) == (0, "no conflicts\n"), conflicts
    as_json = syncd("conflicts", "--json", "-c", setup.config)
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])
    log = syncd("log", "-c", setup.config)
    assert (log.returncode, log.stdout, log.stderr) == (0, "", "")
    resolve = syncd("resolve", "report.csv", "--keep", "local", "-c", setup.config)
    assert resolve.returncode == 2 and "no open conflict for 'report.csv'" in resolve.stderr
    assert not setup.state_db.exists() and not setup.state_db.parent.exists()


def test_a_move_and_a_deletion_name_the_content_they_moved_or_deleted(tmp_path: Path) -> None:
    """Issue 9: every operation is logged with its checksum. A move had none, and neither had
    a deletion on a folder remote (whose listing states no SHA-256): `syncd log` showed `-`.
    Both now carry the content's SHA-256 (also under the issue's word, `checksum`)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    for name in ("a.txt", "b.txt", "c.txt"):
        (setup.local / name).write_bytes(f"content of {name}".encode())
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "a.txt").rename(setup.local / "moved.txt")
    (setup.local / "b.txt").unlink()
    assert syncd("once", "-c", setup.config).returncode == 0

    records = _records(syncd("log", "--json", "-c", setup.config).stdout)
    move = next(r for r in records if r["op"] == "move")
    delete = next(r for r in records if r["op"] == "delete_remote")
    assert (move["path"], delete["path"]) == ("moved.txt", "b.txt")
    assert move["sha256"] == move["checksum"] == hashlib.sha256(b"content of a.txt").hexdigest()
    assert delete["sha256"] == delete["checksum"] == hashlib.sha256(b"content of b.txt").hexdigest()
    for record in records:
        assert {"time", "pair", "path", "size", "checksum", "duration_ms", "result"} <= set(record)

"""The Python API beyond one pass at a time: threads, close(), a state that cannot record,
the script's own logging, and what `status()` says. Found by a sweep of the API (P)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import small_disk, tree, unavailable_here

import syncd as api
from syncd import ConfigError, Engine, Report


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    return local, remote


def _config(tmp_path: Path, local: Path, remote: Path, state: str | None = None) -> dict[str, Any]:
    return {
        "state": state or f"sqlite:///{tmp_path / 'state.db'}",
        "socket": str(tmp_path / "syncd.sock"),
        "workers": 4,
        "pairs": [{"name": "docs", "local": str(local), "remote": f"file://{remote}"}],
    }


def _files(local: Path, count: int, size: int = 300) -> None:
    for i in range(count):
        folder = local / f"d{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(os.urandom(size))


def test_two_threads_passes_take_turns_each_reporting_its_own_work(tmp_path: Path) -> None:
    """Two threads' `sync_once` shared one queue and one set of counters: both said all 200
    files were theirs. A dry run beside a real pass turned the real one into a plan (exit 0,
    nothing sent) and itself uploaded a file. They take turns now."""
    local, remote = _folders(tmp_path)
    _files(local, 200)
    reports: dict[str, Report] = {}
    with Engine.from_config_dict(_config(tmp_path, local, remote)) as engine:

        def run(name: str, dry_run: bool) -> None:
            reports[name] = engine.sync_once(dry_run=dry_run)

        threads = [
            threading.Thread(target=run, args=("real", False)),
            threading.Thread(target=run, args=("dry", True)),
            threading.Thread(target=run, args=("again", False)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert tree(remote) == tree(local)
    real, again, dry = reports["real"], reports["again"], reports["dry"]
    assert dry.files_up == 0  # a dry run never transfers
    # Whichever real pass came first sent everything; the other found nothing to do.
    assert sorted([real.files_up, again.files_up]) == [0, 200]
    assert real.exit_code == again.exit_code == dry.exit_code == 0
    assert len(dry.pairs[0].planned) in (0, 200)  # its own plan, no duplicates


def test_close_from_another_thread_cuts_the_pass_short_with_a_fault(tmp_path: Path) -> None:
    """`close()` while a pass ran in another thread: the pass stopped, returned exit 0 with
    ~1000 of 1500 files not synced and no failure; and close() let go of the state's lock
    while that pass still wrote it. The pass now says it was cut short (exit 1), and close()
    returns after it."""
    local, remote = _folders(tmp_path)
    _files(local, 3000, size=64)
    engine = Engine.from_config_dict(_config(tmp_path, local, remote))
    reports: list[Report] = []
    passing = threading.Thread(target=lambda: reports.append(engine.sync_once()))
    passing.start()
    deadline = time.monotonic() + 60
    while not any(remote.rglob("*.bin")) and time.monotonic() < deadline:
        time.sleep(0.005)

    engine.close()

    assert not passing.is_alive()  # close() waited for the pass
    (report,) = reports
    assert report.files_up < 3000
    assert report.exit_code == 1
    assert report.pairs[0].fault == "pass cut short: the engine was closed; the next pass goes on"
    with Engine.from_config_dict(_config(tmp_path, local, remote)) as again:  # lock is free
        assert again.sync_once().exit_code == 0
    assert tree(remote) == tree(local)


def test_a_read_only_state_serves_dry_runs_and_refuses_a_pass(tmp_path: Path) -> None:
    """`mode=ro`: the CLI's commands that write refuse it (exit 2); an engine's pass went
    through (the file uploaded) with exit 0 and nothing recorded."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    with Engine.from_config_dict(_config(tmp_path, local, remote)) as engine:
        assert engine.sync_once().files_up == 1
    (local / "b.txt").write_text("b")
    read_only = f"sqlite:///file:{tmp_path / 'state.db'}?mode=ro&uri=true"

    with Engine.from_config_dict(_config(tmp_path, local, remote, read_only)) as engine:
        planned = engine.sync_once(dry_run=True)
        with pytest.raises(ConfigError) as refused:
            engine.sync_once()
        with pytest.raises(ConfigError):
            engine.retry_failed()

    assert [item.path for item in planned.pairs[0].planned] == ["b.txt"]
    assert refused.value.key == "state"
    assert "mode=ro opens the state read-only, and this call writes it" in str(refused.value)
    assert not (remote / "b.txt").exists()


def test_records_the_state_could_not_save_are_failures_of_the_pass(tmp_path: Path) -> None:
    """A pass records its files behind and commits them at its end. With the state's disk
    full that commit failed: a log line said so, the report said exit 0 and no failure.
    Each file whose record was lost is a failure now, and the next pass records it without
    sending it again."""
    local, remote = _folders(tmp_path)
    (local / "first.txt").write_text("first")
    disk = tmp_path / "disk"
    with small_disk(disk, "1m") as mounted:
        if mounted is None:
            unavailable_here("cannot mount a tmpfs here")
        config = _config(tmp_path, local, remote, f"sqlite:///{disk / 'state.db'}")
        with Engine.from_config_dict(config) as engine:
            assert engine.sync_once().exit_code == 0
            _files(local, 20)
            filler = disk / "filler"
            with filler.open("wb", buffering=0) as out:
                try:
                    while True:
                        out.write(b"\0" * 4096)
                except OSError:
                    pass

            report = engine.sync_once()

            assert report.exit_code == 1
            lost = {f.path for f in report.failures}
            assert {f"d{i % 10}/f{i}.bin" for i in range(20)} <= lost
            assert all("cannot record it in the state database" in f.error for f in report.failures)
            assert tree(remote) == tree(local)  # the files went across

            filler.unlink()
            again = engine.sync_once()

        assert (again.exit_code, again.files_up, again.failures) == (0, 0, [])
        with Engine.from_config_dict(config) as engine:
            assert engine.status()["pairs"][0]["synced_files"] == 21


_SCRIPT = """
import json, logging, sys, warnings
logging.basicConfig(level=logging.INFO, filename=sys.argv[2], format="APP %(message)s")
app = logging.getLogger("app")
app.info("before")
from syncd import Engine
with Engine.from_config_dict(json.loads(sys.argv[1])) as engine:
    engine.sync_once()
app.info("after")
warnings.warn("the script's own warning")
root = logging.getLogger()
print(json.dumps({"level": root.level, "handlers": len(root.handlers)}))
"""


def test_an_engine_leaves_the_scripts_own_logging_alone(tmp_path: Path) -> None:
    """An engine replaced the root logger's handlers, reset its level to WARNING and
    captured Python's warnings: a script's `basicConfig` log file lost its lines, and its
    warnings came out as syncd's JSON. Its own lines still follow its `log:`."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    data = _config(tmp_path, local, remote)
    data["log"] = {"level": "info", "format": "json"}
    app_log = tmp_path / "app.log"

    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(data), str(app_log)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"level": 20, "handlers": 1}
    assert app_log.read_text().splitlines() == ["APP before", "APP after"]
    syncd_lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert "uploaded" in [line["event"] for line in syncd_lines]
    assert "UserWarning: the script's own warning" in done.stderr  # Python's own format
    assert not any("own warning" in line.get("event", "") for line in syncd_lines)


def test_status_has_the_contracts_keys(tmp_path: Path) -> None:
    """`engine.status()` lacked the keys a script reads from `syncd status --json`: the
    top-level `state` and `uptime_s`, and each pair's `state`, `queued`, `in_flight`."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    config = _config(tmp_path, local, remote)
    (tmp_path / "other").mkdir()
    config["pairs"].append(
        {"name": "gone", "local": str(tmp_path / "other"), "remote": f"file://{tmp_path / 'no'}"}
    )
    engine = Engine.from_config_dict(config)
    with engine:
        engine.sync_once()
        status = engine.status()
    after = engine.status()

    assert status["state"] == "running" and after["state"] == "closed"
    assert status["version"] == api.__version__ and status["transfers"] == []
    assert status["uptime_s"] >= 0
    docs, gone = status["pairs"]
    assert list(docs)[:7] == [
        "name",
        "state",
        "local",
        "remote",
        "queued",
        "in_flight",
        "synced_files",
    ]
    assert (docs["state"], docs["queued"], docs["in_flight"], docs["synced_files"]) == (
        "idle",
        0,
        0,
        1,
    )
    assert gone["state"] == "error" and gone["last_error"]


def test_a_second_engine_of_the_same_process_is_said_as_such(tmp_path: Path) -> None:
    """An engine a notebook dropped without close() holds the state's lock: the next one was
    told "another syncd (pid N)", N being the notebook's own pid."""
    local, remote = _folders(tmp_path)
    config = _config(tmp_path, local, remote)
    with Engine.from_config_dict(config), pytest.raises(api.AlreadyRunning) as refused:
        Engine.from_config_dict(config)
    assert str(refused.value).startswith(f"this process (pid {os.getpid()}) is already using")
    assert "close() that one first" in str(refused.value)


def test_the_states_errors_are_exported() -> None:
    from syncd.daemon.lock import LockFileUnusable
    from syncd.state import StateError

    assert api.StateError is StateError
    assert issubclass(LockFileUnusable, api.LockUnavailable)
    assert issubclass(api.AlreadyRunning, api.LockUnavailable)


_TWO_ENGINES = """
import json, sys
from syncd import Engine
data = json.loads(sys.argv[1])
for level in ("error", "info"):
    data["log"] = {"level": level, "format": "json"}
    with Engine.from_config_dict(data) as engine:
        open(sys.argv[2] + "/" + level + ".txt", "w").write(level)
        engine.sync_once()
"""


def test_a_scripts_later_engine_logs_as_its_own_config_says(tmp_path: Path) -> None:
    """Only the first engine of a process applied its `log:`: a second one at `info`
    after one at `error` said nothing."""
    local, remote = _folders(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _TWO_ENGINES,
            json.dumps(_config(tmp_path, local, remote)),
            str(local),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    said = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["event"], line["path"]) for line in said if line["event"] == "uploaded"] == [
        ("uploaded", "info.txt")
    ]


def test_a_test_that_captures_logs_after_an_engine_gets_them(tmp_path: Path) -> None:
    """structlog's `capture_logs` swaps the processors inside the very list an earlier
    engine set up: a later engine took that for its own set-up, replaced it, and the capture
    got nothing (a test order that failed in CI)."""
    local, remote = _folders(tmp_path)
    with Engine.from_config_dict(_config(tmp_path, local, remote)):
        pass
    (local / "a.txt").write_text("a")
    with (
        structlog.testing.capture_logs() as logs,
        Engine.from_config_dict(_config(tmp_path, local, remote)) as engine,
    ):
        engine.sync_once()
    assert [entry["path"] for entry in logs if entry["event"] == "uploaded"] == ["a.txt"]

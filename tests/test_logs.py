"""Log lines: every line on stderr is one JSON object with the stable keys, third-party
libraries' warnings included (journald readers parse each line); `-v` / `-q` move the level."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import syncd

PROGRAM = """
import logging, structlog
from syncd import logs
logs.configure("info", "json")
logs.configure("info", "json")  # a reload: still one handler
logging.getLogger("botocore.retries").warning("retry %s of %s", 2, 8)
logging.getLogger("botocore.retries").info("not shown: below warning")
logging.getLogger("apscheduler.scheduler").warning("skipped: max instances reached")
inotify = logging.getLogger("watchdog.observers.inotify")  # a watch removed mid-read
inotify.error("InotifyEmitter.queue_events() called when the thread is inactive")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("urllib3").exception("connection broke")
structlog.get_logger("syncd").info("uploaded", pair="docs", path="a.txt", bytes=3)
import warnings
warnings.warn("a library's own warning", RuntimeWarning)
# watchdog's when folder churn adds a watch twice (harmless: the callback is overwritten),
# with the repr of every watched folder: kilobytes per line, growing with the tree.
warnings.warn("Callback with id 'x' already exists for watch <Watch(...)>. It will be Overwritten.",
              RuntimeWarning)
"""


def test_every_line_is_json_with_the_stable_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("retry 2 of 8", "warning"),
        ("connection broke", "error"),
        ("uploaded", "info"),
        (lines[3]["event"], "warning"),
    ]
    assert lines[3]["logger"] == "py.warnings"
    assert "RuntimeWarning: a library's own warning" in lines[3]["event"]
    assert lines[0]["logger"] == "botocore.retries"
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert (lines[2]["pair"], lines[2]["path"], lines[2]["bytes"]) == ("docs", "a.txt", 3)
    assert all(line["timestamp"].endswith("Z") for line in lines)


def _uploaded_logged(tmp_path: Path, *argv: str) -> bool:
    """Whether `syncd ARGV` (a `once` at `log.level: warning`) logs its upload, an info line."""
    (tmp_path / "local").mkdir(exist_ok=True)
    (tmp_path / "remote").mkdir(exist_ok=True)
    (tmp_path / "local" / f"{len(list((tmp_path / 'local').iterdir()))}.txt").write_text("new")
    config = tmp_path / "syncd.yaml"
    pair = f"{{name: p, local: {tmp_path / 'local'}, remote: 'file://{tmp_path / 'remote'}'}}"
    config.write_text(
        f"state: sqlite:///{tmp_path / 'state.db'}\nsocket: {tmp_path / 's.sock'}\n"
        f"log: {{level: warning, format: json}}\npairs: [{pair}]\n"
    )
    done = syncd(*[str(config) if arg == "CONFIG" else arg for arg in argv])
    assert done.returncode == 0, done.stderr
    return '"event": "uploaded"' in done.stderr


def test_v_and_q_move_the_level_before_or_after_the_command(tmp_path: Path) -> None:
    assert not _uploaded_logged(tmp_path, "once", "-c", "CONFIG")
    assert _uploaded_logged(tmp_path, "-v", "once", "-c", "CONFIG")
    assert _uploaded_logged(tmp_path, "once", "-c", "CONFIG", "-v")
    assert _uploaded_logged(tmp_path, "once", "--verbose", "-c", "CONFIG")
    # Both places count together: one step up, one down.
    assert not _uploaded_logged(tmp_path, "-v", "once", "-q", "-c", "CONFIG")
    assert _uploaded_logged(tmp_path, "-q", "once", "-vv", "-c", "CONFIG")
    for command in (["run"], ["once"], ["upload"], ["download"], ["check"], ["state", "rebuild"]):
        shown = syncd(*command, "--help")
        assert shown.returncode == 0 and "-v, --verbose" in shown.stdout, command
        assert "-q, --quiet" in shown.stdout, command
    assert syncd("state", "rebuild", "-q", "-c", tmp_path / "syncd.yaml").returncode == 0

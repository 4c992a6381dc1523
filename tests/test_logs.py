"""Log lines: every line on stderr is one JSON object with the stable keys, third-party
libraries' warnings included (journald readers parse each line)."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import logging, structlog
from syncd import logs
logs.configure("info", "json")
logs.configure("info", "json")  # a reload: still one handler
logging.getLogger("botocore.retries").warning("retry %s of %s", 2, 8)
logging.getLogger("botocore.retries").info("not shown: below warning")
logging.getLogger("apscheduler.scheduler").warning("skipped: max instances reached")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("urllib3").exception("connection broke")
structlog.get_logger("syncd").info("uploaded", pair="docs", path="a.txt", bytes=3)
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
    ]
    assert lines[0]["logger"] == "botocore.retries"
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert (lines[2]["pair"], lines[2]["path"], lines[2]["bytes"]) == ("docs", "a.txt", 3)
    assert all(line["timestamp"].endswith("Z") for line in lines)

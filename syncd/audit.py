"""The audit trail as `syncd log` shows it: when, which pair and path, what was done, how big,
which content (SHA-256), how long it took and how it went."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from syncd.engine.paths import printable
from syncd.state import OpRecord

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: a span back from now (`90s`, `15m`, `1h`, `2d`, `1w`) or an ISO 8601 time
    (`2026-11-24`, `2026-11-24T10:00:00Z`); returns epoch seconds. ValueError says why."""
    now = time.time() if now is None else now
    match = _SPAN.match(text)
    if match:
        return now - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since: {text!r} is neither a span (90s, 15m, 1h, 2d, 1w) nor an ISO time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_json(op: OpRecord) -> dict[str, Any]:
    return {
        "time": _iso(op.ts),
        "pair": op.pair,
        "path": op.path,
        "op": op.op,
        "result": op.result,
        "size": op.size,
        "sha256": op.sha256,
        "checksum": op.sha256,  # the word for it (issue 9); the same SHA-256
        "duration_ms": op.duration_ms,
        "note": op.error,
    }


def as_line(op: OpRecord) -> str:
    """One tab-separated line: easy to read, easy to cut / awk."""
    fields = [
        _iso(op.ts),
        op.pair,
        op.op,
        op.result,
        printable(op.path),
        "-" if op.size is None else str(op.size),
        op.sha256 or "-",  # whole: checked against sha256sum
        "-" if op.duration_ms is None else f"{op.duration_ms:.0f}ms",
    ]
    if op.error:
        fields.append(op.error)
    return "\t".join(fields)

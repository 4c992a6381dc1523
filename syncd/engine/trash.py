"""Where replaced and deleted versions wait: nothing a strategy throws away is destroyed.

Local: `<root>/.syncd/trash/<YYYYMMDD-HHMMSS>/<path>` (never synced, pruned after trash_days).
Remote: `.syncd-trash/<YYYYMMDD-HHMMSS>/<path>` under the pair's prefix, a server-side copy.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from syncd.engine.paths import REMOTE_TRASH, STATE_DIR

TRASH_DIR = f"{STATE_DIR}/trash"
_STAMP = "%Y%m%d-%H%M%S"


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_STAMP)


def trash_key(path: str, when: datetime, taken: Callable[[str], bool]) -> str:
    """A free trash location for `path`, relative to the root (local or remote)."""
    base = stamp(when)
    counter = 0
    while True:
        folder = base + (f"-{counter}" if counter else "")
        candidate = f"{folder}/{path}"
        if not taken(candidate):
            return candidate
        counter += 1


def move_to_local_trash(root: Path, source: Path, path: str, when: datetime) -> Path:
    """Move the local file at `source` (the on-disk name of `path`) into the pair's trash."""
    trash = root / STATE_DIR / "trash"
    rel = trash_key(path, when, lambda candidate: (trash / candidate).exists())
    target = trash / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return target


def remote_trash_key(path: str, when: datetime, taken: Callable[[str], bool]) -> str:
    return f"{REMOTE_TRASH}/" + trash_key(path, when, lambda c: taken(f"{REMOTE_TRASH}/{c}"))


def prune_local_trash(root: Path, days: float, now: float | None = None) -> int:
    """Remove trash folders older than `days`; returns how many went."""
    trash = root / STATE_DIR / "trash"
    if not trash.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - days * 86400
    removed = 0
    for entry in trash.iterdir():
        try:
            created = datetime.strptime(entry.name[:15], _STAMP).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue  # not ours
        if created < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed

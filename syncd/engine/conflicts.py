"""How a conflict (both sides changed, different content) is settled: pure rules, no I/O.

`resolve` turns a strategy and the two versions into a `Resolution`; `conflict_name` builds the
contract's conflict-copy name. Both are table-tested; the syncer carries them out.
"""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

STRATEGIES = ("timestamp_wins", "local_wins", "cloud_wins", "manual", "version_preserve")


class Winner(enum.Enum):
    LOCAL = "local"  # the local version goes to both sides; the remote one is kept in its trash
    REMOTE = "remote"  # the remote version goes to both sides; the local one is kept in the trash
    BOTH = "both"  # keep both: the older becomes a conflict copy on both sides
    NONE = "none"  # manual: touch neither side, record the conflict


@dataclass(frozen=True, slots=True)
class Resolution:
    winner: Winner
    #: With Winner.BOTH: which side holds the older version (the one renamed to a copy).
    older: str | None
    reason: str


def resolve(strategy: str, local_mtime_ns: int, remote_mtime_ns: int | None) -> Resolution:
    """Settle a conflict by the pair's strategy. `remote_mtime_ns` is None when the remote's
    modification time is unknown; it then counts as older than any local time."""
    remote_ns = remote_mtime_ns if remote_mtime_ns is not None else -1
    older = "local" if local_mtime_ns < remote_ns else "remote"
    if strategy == "local_wins":
        return Resolution(Winner.LOCAL, None, "local_wins")
    if strategy == "cloud_wins":
        return Resolution(Winner.REMOTE, None, "cloud_wins")
    if strategy == "manual":
        return Resolution(Winner.NONE, None, "manual: waiting for a decision")
    if strategy == "timestamp_wins":
        if local_mtime_ns == remote_ns:
            return Resolution(Winner.BOTH, "remote", "timestamp_wins: exact tie, kept both")
        if local_mtime_ns > remote_ns:
            return Resolution(Winner.LOCAL, None, "timestamp_wins: local is newer")
        return Resolution(Winner.REMOTE, None, "timestamp_wins: remote is newer")
    if strategy == "version_preserve":
        return Resolution(Winner.BOTH, older, f"version_preserve: {older} is older")
    raise ValueError(f"unknown conflict strategy {strategy!r}")


def host_name() -> str:
    """This machine's short host name, made safe for a file name."""
    name = socket.gethostname().split(".", 1)[0] or "host"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def conflict_name(path: str, when: datetime, host: str, taken: Callable[[str], bool]) -> str:
    """`report.csv` -> `report.conflict-20261124-101500-laptop.csv`, never a name that is taken
    (`-1`, `-2`, … are added before the extension). Files without an extension, and dotfiles,
    get the marker at the end."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:  # no extension ("Makefile") or a dotfile (".bashrc")
        stem, ext = name, ""
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{stem}.conflict-{stamp}-{host}"
    suffix = f".{ext}" if ext else ""
    counter = 0
    while True:
        candidate = base + (f"-{counter}" if counter else "") + suffix
        full = f"{folder}/{candidate}" if folder else candidate
        if not taken(full):
            return full
        counter += 1


def is_conflict_copy_of(candidate: str, path: str, host: str) -> bool:
    """Is `candidate` a conflict copy of `path` made on `host` (any time stamp, any counter)?

    Used to find the copy an interrupted run already made, so that a restart finishes that
    conflict instead of making a second copy of the same version.
    """
    folder, _, name = path.rpartition("/")
    cand_folder, _, cand_name = candidate.rpartition("/")
    if folder != cand_folder:
        return False
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    pattern = (
        rf"{re.escape(stem)}\.conflict-\d{{8}}-\d{{6}}-{re.escape(host)}(-\d+)?{re.escape(suffix)}"
    )
    return re.fullmatch(pattern, cand_name) is not None

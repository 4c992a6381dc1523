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


#: The longest file name (one path component) a filesystem takes, in bytes (NAME_MAX).
NAME_MAX = 255
_STAMP = r"\d{8}-\d{6}"


def _size(text: str) -> int:
    """`text`'s length in bytes, as the filesystem counts it (a name that is no valid UTF-8
    keeps its undecodable bytes as surrogates)."""
    return len(text.encode("utf-8", "surrogateescape"))


def _cut(text: str, budget: int) -> str:
    """The longest start of `text` that fits in `budget` bytes, cut between two characters."""
    used = 0
    for i, char in enumerate(text):
        used += _size(char)
        if used > budget:
            return text[:i]
    return text


def _split(name: str) -> tuple[str, str]:
    """`report.csv` -> (`report`, `.csv`); no extension ("Makefile") or a dotfile (".bashrc"):
    (name, "")."""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:
        return name, ""
    return stem, f".{ext}"


def _copy_path(
    path: str, stamp: str, host: str, counter: int, *, max_name: int, max_path: int | None
) -> str:
    """The conflict copy of `path` for this time stamp, host and counter. Where the name would
    be longer than `max_name` bytes, or the whole path longer than `max_path`, NAME is
    shortened (on a character boundary; the `.conflict-…` part and the extension are kept
    whole); where even that cannot fit, the extension is treated as part of NAME."""
    folder, _, name = path.rpartition("/")
    lead = f"{folder}/" if folder else ""
    marker = f".conflict-{stamp}-{host}" + (f"-{counter}" if counter else "")
    for stem, suffix in (_split(name), (name, "")):
        budget = max_name - _size(marker + suffix)
        if max_path is not None:
            budget = min(budget, max_path - _size(lead + marker + suffix))
        kept = _cut(stem, budget)
        if kept:
            return f"{lead}{kept}{marker}{suffix}"
    return f"{lead}{name[:1]}{marker}"  # nothing fits: the marker wins over the limits


def conflict_name(
    path: str,
    when: datetime,
    host: str,
    taken: Callable[[str], bool],
    *,
    max_name: int = NAME_MAX,
    max_path: int | None = None,
) -> str:
    """`report.csv` -> `report.conflict-20261124-101500-laptop.csv`, never a name that is taken
    (`-1`, `-2`, … are added before the extension). Files without an extension, and dotfiles,
    get the marker at the end. The copy's name fits in `max_name` bytes (the filesystem's
    NAME_MAX) and the whole path in `max_path` bytes (a bucket's key limit, less the prefix):
    a name too long for that is shortened, never the marker or the extension."""
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    counter = 0
    while True:
        full = _copy_path(path, stamp, host, counter, max_name=max_name, max_path=max_path)
        if not taken(full):
            return full
        counter += 1


def is_conflict_copy_of(
    candidate: str,
    path: str,
    host: str,
    *,
    max_name: int = NAME_MAX,
    max_path: int | None = None,
) -> bool:
    """Is `candidate` a conflict copy of `path` made on `host` (any time stamp, any counter)?
    `max_name` and `max_path` are the limits `conflict_name` made it with: a shortened name
    is recognised as the copy of the long one it was made for (and of any other long name
    that starts with the part kept: the callers then tell by inode or content).

    Used to find the copy an interrupted run already made, so that a restart finishes that
    conflict instead of making a second copy of the same version.
    """
    if candidate.rpartition("/")[0] != path.rpartition("/")[0]:
        return False
    cand_name = candidate.rpartition("/")[2]
    for suffix in {_split(path.rpartition("/")[2])[1], ""}:
        pattern = (
            rf".+\.conflict-(?P<stamp>{_STAMP})-{re.escape(host)}(?:-(?P<n>\d+))?"
            rf"{re.escape(suffix)}"
        )
        found = re.fullmatch(pattern, cand_name, flags=re.DOTALL)
        if found is None:
            continue
        counter = int(found["n"]) if found["n"] else 0
        if counter and str(counter) != found["n"]:
            continue  # "-01", "-0": never made
        made = _copy_path(path, found["stamp"], host, counter, max_name=max_name, max_path=max_path)
        if made == candidate:
            return True
    return False

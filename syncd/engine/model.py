"""The small values the engine passes around: what changed, what a side holds, what to do."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from syncd.providers.base import MTIME_NS_MAX, MTIME_NS_MIN, clamp_mtime_ns


class Side(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"


class Origin(enum.Enum):
    """Who noticed the change; only used for logs and for settle rules (local events settle)."""

    WATCHER = "watcher"
    SCAN = "scan"
    POLL = "poll"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Change:
    """Something may have happened to `path` of `pair` on `side`.

    The watcher, the startup scan and the remote poller all speak this one value, so everything
    downstream (coalescing, the queue, the decision) is written once. It carries no payload: the
    worker looks at both sides fresh when it gets to the path. `is_dir` asks for a walk of the
    folder (a folder moved in brings files that have no events of their own).
    """

    pair: str
    path: str
    side: Side
    origin: Origin
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file in the local root as seen by stat (plus hashes once computed)."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int = 0  # changes with every write, even one that restores size and mtime
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        # A file stamped past 2262 (or before 1677) is held at the nearest time the state can
        # record, so that the record and the next stat agree (see clamp_mtime_ns).
        if not MTIME_NS_MIN <= self.mtime_ns <= MTIME_NS_MAX:
            object.__setattr__(self, "mtime_ns", clamp_mtime_ns(self.mtime_ns))


class Action(enum.Enum):
    NOTHING = "nothing"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    RECORD = "record"  # both sides hold the same content: remember it as the new base
    FORGET = "forget"  # gone on both sides: drop the base
    DELETE_LOCAL = "delete_local"
    DELETE_REMOTE = "delete_remote"
    CONFLICT = "conflict"
    #: Only in a dry run's plan: a new local file that is a synced file moved (a server-side
    #: copy and a delete of the old key, not an upload); `decide` never says it.
    MOVE = "move"
    HASH_LOCAL = "hash_local"  # the decision needs the local content hash; compute and ask again
    FETCH_REMOTE = (
        "fetch_remote"  # the decision needs the remote's metadata (sha256); stat and ask again
    )
    #: The decision needs the remote content's hash, which the object does not state: stream
    #: it through a hash (written nowhere) and ask again.
    HASH_REMOTE = "hash_remote"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str

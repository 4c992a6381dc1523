"""Deletions wait for the end of a pass, where one check sees all of them at once.

A pass that would delete more than `max_delete` percent of a pair's synced files on either side,
or that deletes local files because the remote listing came back empty, or whose local root is
gone, or whose remote cannot be listed, is far more likely a fault than a person's intent:
every deletion of the pass is held.
`hold_reason` is the pure rule (table-tested); `DeletionBatch` keeps the pending and approved
paths between worker threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PassFacts:
    """What the guard looks at, gathered at the end of a pass."""

    local_deletions: int
    remote_deletions: int
    synced_files: int
    max_delete: float
    root_present: bool = True
    remote_emptied: bool = False
    #: Of the deletions, those an earlier look held and nothing let through since.
    held_before: int = 0
    #: Why the remote cannot be listed now (the pair is in `error`), if it cannot.
    remote_fault: str | None = None


def hold_reason(facts: PassFacts) -> str | None:
    """Why this pass's deletions must be held, or None when they may go through."""
    if not facts.local_deletions and not facts.remote_deletions:
        return None
    if not facts.root_present:
        return "the local root is missing"
    if facts.remote_fault is not None:
        # A path looked at on its own (`syncd retry`, a file event) finds no object where
        # the bucket, or the remote folder, is gone: that is no deletion. Not even --force
        # lets these through; the remote's next listing decides them again.
        return f"the remote cannot be listed ({facts.remote_fault})"
    if facts.remote_emptied and facts.local_deletions:
        return (
            "the remote listing came back without any of the files the base remembers "
            "(emptied, or another bucket?); use --force to allow"
        )
    total = max(1, facts.synced_files)
    for side, count in (("remote", facts.remote_deletions), ("local", facts.local_deletions)):
        if count * 100 > facts.max_delete * total:
            return (
                f"{count} of {total} synced files would be deleted on the {side} side "
                f"(more than max_delete {facts.max_delete:g}%); use --force to allow"
            )
    if facts.held_before:
        # The share that tripped the guard can drop as the pair grows (new files on either
        # side) or as other deletions come and go; what it held stays held until --force,
        # or until those files come back.
        return (
            f"{facts.held_before} deletions held earlier still wait (nothing let them "
            "through); use --force to allow"
        )
    return None


class DeletionBatch:
    """Deletions decided in the current pass (path -> side 'local' | 'remote'), and those the
    guard approved, which the next look at the path carries out. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}
        self._approved: set[str] = set()

    def hold(self, path: str, side: str) -> None:
        with self._lock:
            self._pending[path] = side

    def forget(self, path: str) -> None:
        """The path was looked at again (or moved): whatever it decided before is void."""
        with self._lock:
            self._pending.pop(path, None)

    def take_approval(self, path: str) -> bool:
        """True (once) if the guard approved deleting this path."""
        with self._lock:
            approved = path in self._approved
            self._approved.discard(path)
            return approved

    def pending(self) -> dict[str, str]:
        with self._lock:
            return dict(self._pending)

    def approve(self, paths: list[str]) -> None:
        with self._lock:
            for path in paths:
                self._pending.pop(path, None)
            self._approved.update(paths)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._approved.clear()

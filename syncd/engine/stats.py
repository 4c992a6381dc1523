"""Per-pair counters and facts that status reports: failures, conflicts, last sync, last error."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class PairStats:
    """Mutable, thread-safe record of how a pair is doing. Times are wall-clock epoch seconds."""

    failures: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # open, waiting for a person
    settled: dict[str, str] = field(default_factory=dict)  # path -> how a strategy settled it
    held: dict[str, str] = field(default_factory=dict)  # deletions the max_delete guard holds
    held_reason: str | None = None
    last_sync: float | None = None
    last_error: str | None = None
    fault: str | None = None  # a pair-level problem (root missing, remote unreachable)
    uploaded: int = 0
    downloaded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, path: str, error: str) -> None:
        with self._lock:
            self.failures[path] = error
            self.last_error = f"{path}: {error}"

    def succeeded(self, path: str) -> None:
        with self._lock:
            self.failures.pop(path, None)
            self.conflicts.pop(path, None)

    def conflict(self, path: str, reason: str) -> None:
        with self._lock:
            self.conflicts[path] = reason

    def settle(self, path: str, outcome: str) -> None:
        with self._lock:
            self.settled[path] = outcome

    def set_held(self, reason: str | None, paths: dict[str, str]) -> None:
        with self._lock:
            self.held_reason = reason
            self.held = dict(paths)
            if reason is not None:
                self.last_error = f"deletions held: {reason}"

    def transferred(self, direction: str, size: int) -> None:
        with self._lock:
            if direction == "upload":
                self.uploaded += 1
                self.bytes_up += size
            else:
                self.downloaded += 1
                self.bytes_down += size

    def set_fault(self, fault: str | None) -> None:
        with self._lock:
            self.fault = fault
            if fault is not None:
                self.last_error = fault

    def mark_synced(self) -> None:
        with self._lock:
            self.last_sync = time.time()

"""Per-pair counters and facts that status reports: failures, conflicts, last sync, last error."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the transfer-duration histogram buckets; +Inf is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


#: A failed path is retried after FAILURE_BACKOFF seconds, doubling with every further failure
#: up to FAILURE_BACKOFF_MAX: a broken file costs little, yet is tried again within the hour.
FAILURE_BACKOFF = 5.0
FAILURE_BACKOFF_MAX = 3600.0

#: The `op` of a name that cannot be synced (see PairStats.refused), by the side it is on.
REFUSED_OPS = {"local": "refused_local_name", "remote": "refused_remote_key"}
REFUSED_BOTH = "refused_local_name_and_remote_key"


@dataclass(frozen=True, slots=True)
class Failure:
    """A path that could not be synced: what was tried, why it failed, and when to try again."""

    path: str
    op: str
    error: str
    attempts: int
    first_failed: float
    next_try: float

    @property
    def retried(self) -> bool:
        """False for a refused name: no retry can fix it, it waits for a rename."""
        return not math.isinf(self.next_try)

    def as_json(self, waits_for: str | None = None) -> dict[str, object]:
        """`waits_for`: what the retry waits for instead of its time (the remote of a pair in
        error is tried at its next poll, not when the backoff ran out): `next_try` is null
        then, as for a refused name, and never a time long past."""
        shown: dict[str, object] = {
            "path": self.path,
            "op": self.op,
            "operation": self.op,  # the word for it (issue 6); `op` came first
            "error": self.error,
            "attempts": self.attempts,
            "next_try": _iso(self.next_try) if self.retried and waits_for is None else None,
        }
        if self.retried and waits_for is not None:
            shown["waits_for"] = waits_for
        return shown


def failure_backoff(attempts: int) -> float:
    return float(min(FAILURE_BACKOFF * 2.0 ** max(attempts - 1, 0), FAILURE_BACKOFF_MAX))


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


@dataclass
class PairStats:
    """Mutable, thread-safe record of how a pair is doing. Times are wall-clock epoch seconds."""

    failures: dict[str, Failure] = field(default_factory=dict)
    #: Names that cannot be synced, per side ('local', 'remote'): path -> why. Each is one of
    #: the failures too, never due, until its name is gone from that side.
    refusals: dict[str, dict[str, str]] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # open, waiting for a person
    settled: dict[str, str] = field(default_factory=dict)  # path -> how a strategy settled it
    held: dict[str, str] = field(default_factory=dict)  # deletions the max_delete guard holds
    held_reason: str | None = None
    #: Paths that wait for a held deletion to make room (a file/folder swap): path -> blocker.
    waiting: dict[str, str] = field(default_factory=dict)
    last_sync: float | None = None
    last_error: str | None = None
    fault: str | None = None  # a pair-level problem (root missing, remote unreachable)
    uploaded: int = 0
    downloaded: int = 0
    deleted: int = 0  # files deleted on either side (each kept in its side's trash)
    moved: int = 0  # local renames carried out as server-side moves
    failures_total: int = 0  # every failure since start (the dict above holds the open ones)
    resolved: dict[str, int] = field(default_factory=dict)  # conflicts settled, per strategy
    bytes_up: int = 0
    bytes_down: int = 0
    #: Transfer durations per direction: counts per DURATION_BUCKETS slot (+Inf last), and sum.
    durations: dict[str, list[int]] = field(default_factory=dict)
    duration_sums: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, path: str, error: str, op: str = "sync", now: float | None = None) -> Failure:
        """Record a failure; the next try is due after a backoff that grows with each one."""
        now = time.time() if now is None else now
        with self._lock:
            before = self.failures.get(path)
            if before is not None and not before.retried:
                return before  # a refused name: nothing done with it can fail
            attempts = before.attempts + 1 if before is not None else 1
            failure = Failure(
                path=path,
                op=op,
                error=error,
                attempts=attempts,
                first_failed=before.first_failed if before is not None else now,
                next_try=now + failure_backoff(attempts),
            )
            self.failures[path] = failure
            self.failures_total += 1
            self.last_error = f"{path}: {error}"
            return failure

    def refused(self, path: str, reason: str, side: str, now: float | None = None) -> bool:
        """Record a name that cannot be synced on `side` ('local' or 'remote'): a remote key
        no local path may hold, a local name no remote key may hold. A failure like any other
        (named, counted, exit 1), but never retried: no retry can fix a name. Counted once
        while it stands; True when it is new."""
        now = time.time() if now is None else now
        with self._lock:
            names = self.refusals.setdefault(side, {})
            new = path not in names
            names[path] = reason
            self._show_refusal(path, now)
            if new:
                self.failures_total += 1
                self.last_error = f"{path}: {reason}"
            return new

    def clear_refused(
        self, side: str, still_present: Collection[str], among: Collection[str] | None = None
    ) -> list[str]:
        """A full listing (or full scan) of `side` found these refused names: the others (of
        `among`, default all) are gone (renamed, deleted), and so are their failures. Returns
        the ones cleared."""
        with self._lock:
            names = self.refusals.get(side, {})
            candidates = names if among is None else [p for p in among if p in names]
            gone = [path for path in candidates if path not in still_present]
            for path in gone:
                del names[path]
                self._show_refusal(path, time.time())
            if gone:
                self._clear_error_if_healthy()
            return gone

    def _show_refusal(self, path: str, now: float) -> None:
        """The failure of a refused path, from what each side refuses of it."""
        reasons = {side: names[path] for side, names in self.refusals.items() if path in names}
        before = self.failures.get(path)
        if not reasons:
            if before is not None and not before.retried:
                del self.failures[path]
            return
        op = REFUSED_OPS[next(iter(reasons))] if len(reasons) == 1 else REFUSED_BOTH
        self.failures[path] = Failure(
            path=path,
            op=op,
            error="; ".join(reasons[side] for side in sorted(reasons)),
            attempts=1,
            first_failed=before.first_failed if before is not None else now,
            next_try=math.inf,
        )

    def refused_names(self, side: str) -> list[str]:
        with self._lock:
            return list(self.refusals.get(side, {}))

    def is_refused(self, path: str) -> bool:
        with self._lock:
            return any(path in names for names in self.refusals.values())

    def due_failures(self, now: float | None = None) -> list[str]:
        """Failed paths whose next try has come."""
        now = time.time() if now is None else now
        with self._lock:
            return [p for p, f in self.failures.items() if f.next_try <= now]

    def waiting_failures(self, now: float | None = None) -> set[str]:
        """Failed paths a retry may fix whose next try has not come yet."""
        now = time.time() if now is None else now
        with self._lock:
            return {p for p, f in self.failures.items() if f.retried and f.next_try > now}

    def retryable(self) -> list[str]:
        """Failed paths a retry may fix (all but refused names), due or not."""
        with self._lock:
            return [p for p, f in self.failures.items() if f.retried]

    def succeeded(self, path: str) -> None:
        with self._lock:
            failure = self.failures.get(path)
            if failure is not None and failure.retried:  # a refused name stays refused
                self.failures.pop(path, None)
            self.conflicts.pop(path, None)
            self._clear_error_if_healthy()

    def _clear_error_if_healthy(self) -> None:
        """`last_error` describes a problem that still stands: once the one it named is gone,
        it names one of those left (the remote not answering, deletions held, the path that
        began failing last), and None once nothing fails, nothing is held and the remote
        answers. (It kept an outage that had ended while a refused name stood.)"""
        if self.fault is not None:
            self.last_error = self.fault
        elif self.held_reason is not None:
            self.last_error = f"deletions held: {self.held_reason}"
        elif self.failures:
            latest = max(self.failures.values(), key=lambda failure: failure.first_failed)
            self.last_error = f"{latest.path}: {latest.error}"
        else:
            self.last_error = None

    def conflict(self, path: str, reason: str) -> None:
        with self._lock:
            self.conflicts[path] = reason

    def settle(self, path: str, outcome: str, strategy: str = "") -> None:
        with self._lock:
            self.settled[path] = outcome
            if strategy:
                self.resolved[strategy] = self.resolved.get(strategy, 0) + 1

    def totals(self) -> dict[str, object]:
        """Since this process started: what `status` and the API report as `since_start`."""
        with self._lock:
            return {
                "files_up": self.uploaded,
                "bytes_up": self.bytes_up,
                "files_down": self.downloaded,
                "bytes_down": self.bytes_down,
                "failures": self.failures_total,
                "conflicts_resolved": dict(self.resolved),
            }

    def carry_totals(self, earlier: PairStats) -> None:
        """Take over the since-start counts of the pair's earlier stats (a reload that changed
        the pair made it anew): `since_start` and the Prometheus counters never go back
        within one process."""
        with earlier._lock:
            counts = (
                earlier.uploaded,
                earlier.downloaded,
                earlier.deleted,
                earlier.moved,
                earlier.failures_total,
                earlier.bytes_up,
                earlier.bytes_down,
            )
            resolved = dict(earlier.resolved)
            durations = {k: list(v) for k, v in earlier.durations.items()}
            sums = dict(earlier.duration_sums)
        with self._lock:
            (
                self.uploaded,
                self.downloaded,
                self.deleted,
                self.moved,
                self.failures_total,
                self.bytes_up,
                self.bytes_down,
            ) = counts
            self.resolved, self.durations, self.duration_sums = resolved, durations, sums

    def set_held(
        self, reason: str | None, paths: dict[str, str], waiting: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self.held_reason = reason
            self.held = dict(paths)
            self.waiting = dict(waiting or {})
            if reason is not None:
                self.last_error = f"deletions held: {reason}"
            else:
                self._clear_error_if_healthy()

    def transferred(self, direction: str, size: int, seconds: float = 0.0) -> None:
        with self._lock:
            slots = self.durations.setdefault(direction, [0] * (len(DURATION_BUCKETS) + 1))
            slots[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.duration_sums[direction] = self.duration_sums.get(direction, 0.0) + seconds
            if direction == "upload":
                self.uploaded += 1
                self.bytes_up += size
            else:
                self.downloaded += 1
                self.bytes_down += size

    def note_deleted(self) -> None:
        with self._lock:
            self.deleted += 1

    def note_moved(self) -> None:
        with self._lock:
            self.moved += 1

    def set_fault(self, fault: str | None) -> None:
        with self._lock:
            self.fault = fault
            if fault is not None:
                self.last_error = fault
            else:
                self._clear_error_if_healthy()

    def mark_synced(self) -> float:
        with self._lock:
            self.last_sync = time.time()
            return self.last_sync

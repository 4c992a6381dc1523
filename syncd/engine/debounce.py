"""Coalescing bursts of changes, and running things later.

A save is create + modify + close + rename; only the settled result matters. `merge` is the pure
rule (table-tested); `Debouncer` is the thread that applies it with an injectable clock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: However busy a file is, it gets looked at after this long (a log file that never stops
#: growing still gets synced; the upload itself detects changes while reading).
MAX_DELAY_FACTOR = 20.0
MIN_MAX_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class Pending:
    """A key waiting to settle: first noticed at `first_seen`, due at `due`; `walk` asks for a
    whole folder to be looked at rather than one file."""

    first_seen: float
    due: float
    walk: bool = False


def merge(pending: Pending | None, now: float, settle: float, walk: bool = False) -> Pending:
    """Fold one more event for a key into what is pending for it.

    Each event pushes the deadline to `now + settle` (the file must stay quiet that long), but
    never past `first_seen + max(MIN_MAX_DELAY, settle * MAX_DELAY_FACTOR)`.
    """
    if pending is None:
        return Pending(first_seen=now, due=now + settle, walk=walk)
    cap = pending.first_seen + max(MIN_MAX_DELAY, settle * MAX_DELAY_FACTOR)
    return Pending(
        first_seen=pending.first_seen,
        due=min(now + settle, max(cap, pending.due)),
        walk=pending.walk or walk,
    )


def _left_over(emitting: Mapping[K, Pending], pending: Mapping[K, Pending]) -> dict[K, Pending]:
    """What a dead debouncer leaves: the rest of its batch, due now, and the keys still
    waiting. A key touched again while its batch was under way waits for its new deadline,
    and keeps the walk it was due for."""
    left = dict(emitting)
    for key, later in pending.items():
        earlier = left.get(key)
        left[key] = (
            later
            if earlier is None
            else Pending(earlier.first_seen, later.due, earlier.walk or later.walk)
        )
    return left


class Debouncer(Generic[K]):
    """Calls `emit(key, pending)` once a key has been quiet for its settle time."""

    def __init__(
        self,
        emit: Callable[[K, Pending], None],
        clock: Callable[[], float] = time.monotonic,
        name: str = "debouncer",
        carried: Mapping[K, Pending] | None = None,
    ) -> None:
        """`carried`: keys already waiting (those a dead debouncer left, see `successor`)."""
        self._emit = emit
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[K, Pending] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        #: Due keys taken off `_pending`, not yet emitted (the rest of the batch under way).
        self._emitting: dict[K, Pending] = {}
        self._stopped = False
        #: The debouncer that took over from this one (whose thread died): see `successor`.
        self._successor: Debouncer[K] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        with self._cond:
            for key, pending in (carried or {}).items():
                self._add(key, pending)

    def start(self) -> None:
        self._thread.start()

    def touch(self, key: K, settle: float, walk: bool = False) -> None:
        with self._cond:
            successor = self._successor
            if successor is None:
                self._add(key, merge(self._pending.get(key), self._clock(), settle, walk))
                return
        successor.touch(key, settle, walk)  # a thread that still holds the dead one

    def _add(self, key: K, pending: Pending) -> None:
        """Let `key` wait until `pending.due` (called with the lock held, or before start)."""
        self._pending[key] = pending
        self._seq += 1
        heapq.heappush(self._heap, (pending.due, self._seq, key))
        self._cond.notify()

    def pending_keys(self) -> list[K]:
        """Keys waiting to settle, and those of the batch being emitted: a folder's walk
        takes seconds, and neither it nor what waits behind it is queued meanwhile."""
        with self._cond:
            return list(self._emitting | self._pending)

    def __len__(self) -> int:
        """Keys pending, including those being emitted right now."""
        return len(self.pending_keys())

    def successor(self) -> Debouncer[K]:
        """A debouncer (not started) to replace this one, whose thread died: it takes over
        every key left here, the rest of the batch that was being emitted included, and any
        key touched here from now on. A new, empty one dropped them: nothing looked at those
        changes again until a full scan."""
        with self._cond:
            if self._successor is None:
                left = _left_over(self._emitting, self._pending)
                self._successor = Debouncer(self._emit, self._clock, self._thread.name, left)
                self._pending.clear()
                self._emitting.clear()
                self._heap.clear()
            return self._successor

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self._clock()
                    while self._heap and self._heap[0][0] <= now:
                        _due, _, key = heapq.heappop(self._heap)
                        pending = self._pending.get(key)
                        if pending is not None and pending.due <= now:
                            del self._pending[key]
                            self._emitting[key] = pending
                    if self._emitting:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                due_items = list(self._emitting.items())
            for key, pending in due_items:
                try:
                    self._emit(key, pending)
                finally:
                    with self._cond:
                        self._emitting.pop(key, None)

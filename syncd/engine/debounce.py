"""Coalescing bursts of changes, and running things later.

A save is create + modify + close + rename; only the settled result matters. `merge` is the pure
rule (table-tested); `Debouncer` is the thread that applies it with an injectable clock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
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


class Debouncer(Generic[K]):
    """Calls `emit(key, pending)` once a key has been quiet for its settle time."""

    def __init__(
        self,
        emit: Callable[[K, Pending], None],
        clock: Callable[[], float] = time.monotonic,
        name: str = "debouncer",
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[K, Pending] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        self._emitting = 0  # due items taken off `_pending` but not yet handed to `emit`
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def touch(self, key: K, settle: float, walk: bool = False) -> None:
        with self._cond:
            pending = merge(self._pending.get(key), self._clock(), settle, walk)
            self._pending[key] = pending
            self._seq += 1
            heapq.heappush(self._heap, (pending.due, self._seq, key))
            self._cond.notify()

    def pending_keys(self) -> list[K]:
        with self._cond:
            return list(self._pending)

    def __len__(self) -> int:
        """Keys pending, including those being emitted right now."""
        with self._cond:
            return len(self._pending) + self._emitting

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
                due_items: list[tuple[K, Pending]] = []
                while not self._stopped:
                    now = self._clock()
                    while self._heap and self._heap[0][0] <= now:
                        _due, _, key = heapq.heappop(self._heap)
                        pending = self._pending.get(key)
                        if pending is not None and pending.due <= now:
                            del self._pending[key]
                            due_items.append((key, pending))
                    if due_items:
                        self._emitting = len(due_items)
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
            for key, pending in due_items:
                try:
                    self._emit(key, pending)
                finally:
                    with self._cond:
                        self._emitting -= 1

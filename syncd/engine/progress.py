"""Transfers in flight: bytes done, total and speed, for `status` and progress bars.

Workers register a transfer when it starts and count bytes as they pass (from any thread: a
multipart upload moves several parts at once); `status` takes a snapshot. Counting is a locked
integer add per chunk of at least 64 KiB, so it costs nothing next to the I/O it measures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

Direction = Literal["upload", "download"]


@dataclass(frozen=True, slots=True)
class TransferView:
    """One in-flight transfer as `status --json` shows it."""

    pair: str
    path: str
    direction: Direction
    bytes_done: int
    bytes_total: int
    speed_bps: float


class Transfer:
    """A transfer's live counters (thread-safe)."""

    def __init__(
        self,
        pair: str,
        path: str,
        direction: Direction,
        total: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pair, self.path, self.direction, self.total = pair, path, direction, total
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._resumed = 0
        self._started = clock()

    def add(self, n: int) -> None:
        with self._lock:
            self._done += n

    def resumed(self, n: int) -> None:
        """Bytes already there from an earlier attempt: done, but not part of the speed."""
        with self._lock:
            self._done += n
            self._resumed += n

    @property
    def held(self) -> int:
        """The bytes an earlier attempt left in place (`resumed`): not moved by this one."""
        with self._lock:
            return self._resumed

    def view(self) -> TransferView:
        with self._lock:
            done = self._done
            moved = done - self._resumed
        elapsed = max(self._clock() - self._started, 1e-6)
        return TransferView(
            self.pair,
            self.path,
            self.direction,
            min(done, self.total),
            self.total,
            round(moved / elapsed, 1),
        )


class InFlight:
    """Every transfer in progress in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: dict[int, Transfer] = {}

    @contextmanager
    def track(self, pair: str, path: str, direction: Direction, total: int) -> Iterator[Transfer]:
        transfer = Transfer(pair, path, direction, total)
        with self._lock:
            self._transfers[id(transfer)] = transfer
        try:
            yield transfer
        finally:
            with self._lock:
                self._transfers.pop(id(transfer), None)

    def snapshot(self) -> list[TransferView]:
        with self._lock:
            transfers = list(self._transfers.values())
        return sorted((t.view() for t in transfers), key=lambda v: (v.pair, v.path))

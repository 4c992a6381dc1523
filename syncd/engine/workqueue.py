"""The work queue between change sources and workers.

Items are (pair, path). A path is never queued twice, and never processed by two workers at
once: a change that arrives while its path is in flight is remembered and re-queued when the
worker finishes, so the last change always gets a look.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, defaultdict

Key = tuple[str, str]


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queued: OrderedDict[Key, None] = OrderedDict()
        self._in_flight: set[Key] = set()
        self._again: set[Key] = set()
        self._paused: set[str] = set()
        self._closed = False

    def put(self, pair: str, path: str) -> None:
        key = (pair, path)
        with self._cond:
            if key in self._in_flight:
                self._again.add(key)
            elif key not in self._queued:
                self._queued[key] = None
                self._cond.notify()

    def get(self, timeout: float | None = None) -> Key | None:
        """The next item whose pair is not paused, marked in flight; None on timeout/close."""
        with self._cond:
            while not self._closed:
                for key in self._queued:
                    if key[0] not in self._paused:
                        del self._queued[key]
                        self._in_flight.add(key)
                        return key
                if not self._cond.wait(timeout):
                    return None
            return None

    def done(self, key: Key) -> None:
        with self._cond:
            self._in_flight.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._queued[key] = None
            self._cond.notify_all()

    def pause(self, pair: str) -> None:
        with self._cond:
            self._paused.add(pair)

    def resume(self, pair: str) -> None:
        with self._cond:
            self._paused.discard(pair)
            self._cond.notify_all()

    def is_paused(self, pair: str) -> bool:
        with self._cond:
            return pair in self._paused

    def drop_pair(self, pair: str) -> None:
        """Forget everything queued for a pair (it was removed from the config)."""
        with self._cond:
            for key in [k for k in self._queued if k[0] == pair]:
                del self._queued[key]
            self._again = {k for k in self._again if k[0] != pair}
            self._cond.notify_all()

    def counts(self) -> dict[str, tuple[int, int]]:
        """(queued, in_flight) per pair."""
        result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        with self._cond:
            for pair, _ in self._queued:
                result[pair][0] += 1
            for pair, _ in self._again:
                result[pair][0] += 1
            for pair, _ in self._in_flight:
                result[pair][1] += 1
        return {pair: (q, f) for pair, (q, f) in result.items()}

    def idle(self, pair: str | None = None) -> bool:
        with self._cond:
            return self._idle_locked(pair)

    def _idle_locked(self, pair: str | None) -> bool:
        keys = itertools.chain(self._queued, self._in_flight, self._again)
        return not any(pair is None or key[0] == pair for key in keys)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or in flight (paused pairs excluded from 'queued')."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    self._closed
                    or (not self._in_flight and all(k[0] in self._paused for k in self._queued))
                ),
                timeout,
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

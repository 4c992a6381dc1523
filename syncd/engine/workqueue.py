"""The work queue between change sources and workers.

Items are (pair, path). A path is never queued twice, and never processed by two workers at
once: a change that arrives while its path is in flight is remembered and re-queued when the
worker finishes, so the last change always gets a look. Each pair has its own FIFO and workers
take from the pairs in turn, so one pair with 100,000 queued files cannot starve another, and
a paused pair's items simply wait, and so do a gated pair's (a daemon's pair before its
start-up pass has cleaned up what an earlier run left). A pair may be capped to a number of
items in flight (a local-folder remote: see `Capabilities.max_transfers`); the other workers
serve other pairs.
An item that turns out to be long (a big file) can step out of its pair's cap, so the pair's
small files go on beside it instead of waiting behind it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[str, str]


class WorkQueue:
    """Two conditions over one lock: workers wait on `_ready` and are woken one per new item;
    `wait_idle` waits on `_quiet`, woken only when the queue settles. (One shared condition
    woke every thread at every finished item: a thundering herd that cost ~10 % of the CPU
    of a first upload.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._quiet = threading.Condition(self._lock)
        self._queues: dict[str, OrderedDict[str, None]] = {}
        self._in_flight: dict[str, set[str]] = {}
        self._again: dict[str, set[str]] = {}
        self._paused: set[str] = set()
        #: Pairs whose items wait for `open_gate` (see `close_gate`).
        self._gated: set[str] = set()
        self._caps: dict[str, int] = {}
        #: In-flight items that stepped out of their pair's cap (`long_running`).
        self._long: dict[str, set[str]] = {}
        self._turn = 0
        #: Told the pair whose last queued or in-flight item just finished (called under the
        #: queue's lock: it must be quick, an Event's `set`). The daemon ends that pair's
        #: pass at once instead of at its next tick.
        self.on_drained: Callable[[str], None] | None = None

    def limit(self, pair: str, most: int | None) -> None:
        """At most `most` items of `pair` in flight at once (None: no cap)."""
        with self._lock:
            if most is None:
                self._caps.pop(pair, None)
            else:
                self._caps[pair] = max(1, most)
            self._ready.notify_all()

    def long_running(self, pair: str, path: str) -> None:
        """`path`, in flight, will take a while (a big file): it stops counting against its
        pair's cap, and a worker is woken for the pair's next item if that freed a slot."""
        with self._lock:
            if path not in self._in_flight.get(pair, ()):
                return
            was_capped = self._capped(pair)
            self._long.setdefault(pair, set()).add(path)
            if was_capped and not self._capped(pair) and self._ready_pairs():
                self._ready.notify()

    def put(self, pair: str, path: str) -> None:
        with self._lock:
            if path in self._in_flight.get(pair, ()):
                self._again.setdefault(pair, set()).add(path)
                return
            queue = self._queues.setdefault(pair, OrderedDict())
            if path not in queue:
                queue[path] = None
                if not self._capped(pair):  # else no waiter could take it
                    self._ready.notify()

    def get(self, timeout: float | None = None) -> Key | None:
        """The next item of a pair that is not paused, marked in flight; None on timeout."""
        with self._lock:
            key = self._take()
            if key is None and self._ready.wait(timeout):
                key = self._take()
            if key is not None and self._caps and self._ready_pairs():
                # A notify is one item for one waiter; under caps, a waiter may have taken a
                # different pair's item than the one it was woken for: pass the wake on.
                self._ready.notify()
            return key

    def _ready_pairs(self) -> list[str]:
        return [
            p
            for p, q in self._queues.items()
            if q and p not in self._paused and p not in self._gated and not self._capped(p)
        ]

    def _capped(self, pair: str) -> bool:
        cap = self._caps.get(pair)
        if cap is None:
            return False
        return len(self._in_flight.get(pair, ())) - len(self._long.get(pair, ())) >= cap

    def _take(self) -> Key | None:
        ready = self._ready_pairs()
        if not ready:
            return None
        self._turn = (self._turn + 1) % len(ready)
        pair = ready[self._turn]
        path, _ = self._queues[pair].popitem(last=False)
        self._in_flight.setdefault(pair, set()).add(path)
        return pair, path

    def done(self, key: Key, *, taking_next: bool = False) -> None:
        """`key` is finished. `taking_next`: the caller asks for the next item right away, so
        a slot it frees under a cap needs no other worker woken (a wake per file would have
        the idle workers fight the busy ones for the interpreter lock)."""
        pair, path = key
        with self._lock:
            flight = self._in_flight.get(pair, set())
            was_capped = self._capped(pair)
            flight.discard(path)
            self._long.get(pair, set()).discard(path)
            freed_a_slot = was_capped and not self._capped(pair)
            again = self._again.get(pair)
            if again and path in again:
                again.discard(path)
                self._queues.setdefault(pair, OrderedDict())[path] = None
                self._ready.notify()
            elif freed_a_slot and not taking_next and self._queues.get(pair):
                self._ready.notify()
            elif self._settled() or not flight:
                self._quiet.notify_all()  # also for `wait_landed`
            if self.on_drained is not None and not (
                flight or self._queues.get(pair) or self._again.get(pair)
            ):
                self.on_drained(pair)

    def wake_all(self) -> None:
        """Wake every waiting thread (they are stopping and should notice at once)."""
        with self._lock:
            self._ready.notify_all()
            self._quiet.notify_all()

    def pause(self, pair: str) -> None:
        with self._lock:
            self._paused.add(pair)
            if self._settled():
                self._quiet.notify_all()  # its queued items no longer count

    def resume(self, pair: str) -> None:
        with self._lock:
            self._paused.discard(pair)
            self._ready.notify_all()

    def close_gate(self, pair: str) -> None:
        """Hold `pair`'s items back, as a pause does but unseen by `is_paused`: the daemon
        keeps a pair's transfers from starting before its start-up pass has cleaned up what
        an earlier run left (temp files, unfinished multipart uploads)."""
        with self._lock:
            self._gated.add(pair)
            if self._settled():
                self._quiet.notify_all()

    def open_gate(self, pair: str) -> None:
        with self._lock:
            self._gated.discard(pair)
            self._ready.notify_all()

    def is_gated(self, pair: str) -> bool:
        with self._lock:
            return pair in self._gated

    def is_paused(self, pair: str) -> bool:
        with self._lock:
            return pair in self._paused

    def drop_pair(self, pair: str) -> None:
        """Forget everything queued for a pair, and its cap (it was removed from the config)."""
        with self._lock:
            self._queues.pop(pair, None)
            self._again.pop(pair, None)
            self._caps.pop(pair, None)
            self._long.pop(pair, None)
            self._gated.discard(pair)
            if self._settled():
                self._quiet.notify_all()

    def in_flight(self, pair: str) -> set[str]:
        """The paths of `pair` being worked on now."""
        with self._lock:
            return set(self._in_flight.get(pair, ()))

    def wait_landed(self, pair: str, timeout: float) -> bool:
        """Block until nothing of `pair` is in flight (False if `timeout` passed first)."""
        with self._lock:
            return self._quiet.wait_for(lambda: not self._in_flight.get(pair), timeout)

    def counts(self) -> dict[str, tuple[int, int]]:
        """(queued, in_flight) per pair; a change waiting behind its in-flight path is queued."""
        with self._lock:
            pairs = self._queues.keys() | self._in_flight.keys() | self._again.keys()
            return {
                pair: (
                    len(self._queues.get(pair, ())) + len(self._again.get(pair, ())),
                    len(self._in_flight.get(pair, ())),
                )
                for pair in pairs
            }

    def holds(self, pair: str, path: str) -> bool:
        """Is `path` of `pair` queued, in flight, or to be looked at again once it is done?"""
        with self._lock:
            return any(
                path in each.get(pair, ()) for each in (self._queues, self._in_flight, self._again)
            )

    def idle(self, pair: str | None = None) -> bool:
        """Nothing queued or in flight (for one pair, or at all)."""
        with self._lock:
            pairs = [pair] if pair is not None else list(self._queues | self._in_flight)
            return not any(
                self._queues.get(p) or self._in_flight.get(p) or self._again.get(p) for p in pairs
            )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is in flight and only paused pairs have queued items."""
        with self._lock:
            return self._quiet.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        if any(self._in_flight.values()):
            return False
        return all(not q or p in self._paused or p in self._gated for p, q in self._queues.items())

"""What the remote held at the last listing, plus what we wrote since: "remote now" for a
local change, without a request per file.

A listing that started before one of our own writes finished must not roll that write back
(the object would look deleted, or stale); entries written after the listing began win.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from syncd.providers.base import ObjectInfo


class RemoteIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, ObjectInfo] = {}
        self._touched: dict[str, float] = {}  # path -> monotonic time of our last write/observation
        self.listed = False
        #: The paths written or looked at since the listing before the last one began (as
        #: the last `replace` found them): a listing holding only these holds nothing the
        #: remote had of its own.
        self.recent: frozenset[str] = frozenset()

    def get(self, path: str) -> ObjectInfo | None:
        with self._lock:
            return self._objects.get(path)

    def snapshot(self) -> dict[str, ObjectInfo]:
        with self._lock:
            return dict(self._objects)

    def put(self, path: str, info: ObjectInfo | None) -> None:
        """Record what we just wrote or observed for one path (None: it is gone)."""
        with self._lock:
            if info is None:
                self._objects.pop(path, None)
            else:
                self._objects[path] = info
            self._touched[path] = time.monotonic()

    def replace(
        self, listing: Iterable[tuple[str, ObjectInfo]], started: float
    ) -> dict[str, ObjectInfo]:
        """Adopt a full listing that began at monotonic time `started`; return the merged view."""
        fresh = dict(listing)
        with self._lock:
            for path, when in self._touched.items():
                if when >= started:
                    mine = self._objects.get(path)
                    if mine is None:
                        fresh.pop(path, None)
                    else:
                        fresh[path] = mine
            self._objects = fresh
            self.recent = frozenset(self._touched)
            self._touched = {p: t for p, t in self._touched.items() if t >= started}
            self.listed = True
            return dict(fresh)

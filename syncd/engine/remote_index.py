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
        #: How many objects each folder holds (all depths), built at the first `holds_folder`
        #: after a listing and kept current by `put`: None until asked (a pass that sends no
        #: new file never pays for it).
        self._folders: dict[str, int] | None = None
        #: While `_folders` is built (outside the lock: ~1 s per 500,000 keys, every worker's
        #: lookup waited), the changes `put` makes meanwhile; None when no build runs. A
        #: listing adopted meanwhile voids the build (`_listings` moved).
        self._changes: list[tuple[str, int]] | None = None
        self._listings = 0

    def get(self, path: str) -> ObjectInfo | None:
        with self._lock:
            return self._objects.get(path)

    def snapshot(self) -> dict[str, ObjectInfo]:
        with self._lock:
            return dict(self._objects)

    def holds_folder(self, path: str) -> bool:
        """Does the remote hold objects in a folder named `path` (`path/...`)? A bucket holds
        a file `d` beside `d/x`: a new file whose name is such a folder is a clash."""
        with self._lock:
            if self._folders is not None:
                return self._folders.get(path, 0) > 0
            keys = list(self._objects)
            listings = self._listings
            installs = self._changes is None  # else another caller's build runs: answer only
            if installs:
                self._changes = []
        built: dict[str, int] = {}
        try:
            for key in keys:
                _count(built, key, 1)
        except BaseException:
            with self._lock:  # no build runs now: `put` stops noting its changes
                if installs and self._listings == listings:
                    self._changes = None
            raise
        with self._lock:
            if installs and self._listings == listings and self._changes is not None:
                for key, step in self._changes:
                    _count(built, key, step)
                self._folders = built
                self._changes = None
            # Else a listing came meanwhile: this one answers as of its keys.
            return (self._folders if self._folders is not None else built).get(path, 0) > 0

    def put(self, path: str, info: ObjectInfo | None) -> None:
        """Record what we just wrote or observed for one path (None: it is gone)."""
        with self._lock:
            if info is None:
                if self._objects.pop(path, None) is not None:
                    self._counted(path, -1)
            else:
                if path not in self._objects:
                    self._counted(path, 1)
                self._objects[path] = info
            self._touched[path] = time.monotonic()

    def _counted(self, path: str, step: int) -> None:
        """An object added (1) or gone (-1): the folder counts follow, or the build running
        does once it is through. The caller holds the lock."""
        if self._folders is not None:
            _count(self._folders, path, step)
        elif self._changes is not None:
            self._changes.append((path, step))

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
            self._folders = None
            self._changes = None
            self._listings += 1
            self.recent = frozenset(self._touched)
            self._touched = {p: t for p, t in self._touched.items() if t >= started}
            self.listed = True
            return dict(fresh)


def _count(folders: dict[str, int], key: str, step: int) -> None:
    """Add `step` to the count of every folder `key` is in."""
    end = key.rfind("/")
    while end > 0:
        folder = key[:end]
        folders[folder] = folders.get(folder, 0) + step
        end = key.rfind("/", 0, end)

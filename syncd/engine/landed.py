"""The files a daemon's downloads are putting in place, so that the watcher's event for that
very write is not taken for a local change.

Every download is renamed into place under the pair's root, and inotify reports it like any
write: the path was counted as settling (`queued` in `syncd status` read the pair's whole size
while its last files came down), queued again and decided once more by a worker, and a
download-heavy pair stayed `syncing` long after it was in sync. The note is made just before
the temp file is renamed into place (its event comes at once, before the worker has looked at
what landed), of what the file is: its size and mtime. An event is the download's when the
file is that: any other write changes the mtime (or the size), and is looked at as before; so
is a second event for the path. Nothing is lost either way: a worker deciding the path finds
both sides equal.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from syncd.engine.model import LocalFile

#: Notes kept at most (oldest dropped first): an event that never came (a watch that missed
#: it, a download that failed) must not keep its note for the daemon's life.
MAX_NOTES = 20_000


class Landed:
    def __init__(self, limit: int = MAX_NOTES) -> None:
        self._lock = threading.Lock()
        self._notes: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._limit = limit

    def expect(self, path: str, size: int, mtime_ns: int) -> None:
        """A download is putting a file of `size` and `mtime_ns` in place at `path`."""
        with self._lock:
            self._notes[path] = (size, mtime_ns)
            self._notes.move_to_end(path)
            while len(self._notes) > self._limit:
                self._notes.popitem(last=False)

    def drop(self, path: str) -> None:
        """The download at `path` did not land."""
        with self._lock:
            self._notes.pop(path, None)

    def clear(self) -> None:
        """Events were lost (an inotify overflow): the notes they would have spent go."""
        with self._lock:
            self._notes.clear()

    def holds(self, path: str) -> bool:
        """Is a download expected at `path` (a cheap look before the file's stat)?"""
        with self._lock:
            return path in self._notes

    def is_ours(self, path: str, now: LocalFile | None) -> bool:
        """Is `now` (the file at `path` as it is) what the expected download puts there? The
        note is spent either way."""
        with self._lock:
            noted = self._notes.pop(path, None)
        return noted is not None and now is not None and (now.size, now.mtime_ns) == noted

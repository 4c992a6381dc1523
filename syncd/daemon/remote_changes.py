"""Whether a pair's remote may have changed since its last listing.

The poll lists the remote to find what changed there; with 100,000 files a listing of a folder
remote costs ~1.2 s of CPU, 4 % of a core at the default 30 s poll. A folder remote on a local
filesystem shows every change as an inotify event, so for it the poll lists only after an event
(or after `RELIST_EVERY_S`, as Syncthing rescans behind its watcher), and skips the listing
when nothing happened. Every other remote is listed at every poll.

The watch is dropped at its first event and set again just before the next listing: a burst of
uploads then costs one event, not half a dozen per file in watchdog's threads. A change made
while no watch is set is seen by that listing, which starts after the watch is back.
"""

from __future__ import annotations

import os
import threading
import time

import structlog

from syncd.daemon.watcher import Watcher
from syncd.providers.base import NotWatchable, Provider, WatchableRemote

log = structlog.get_logger("syncd.remote_changes")

#: A watched remote is listed at least this often anyway: a safety net for anything a watch
#: could miss (Syncthing's rescanIntervalS behind its watcher is the same hour).
RELIST_EVERY_S = 3600.0


class RemoteChanges:
    """Per pair: is the remote watched, did an event come since the last listing."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher
        self._lock = threading.Lock()
        #: Pairs whose remote is of a kind that can be watched.
        self._providers: dict[str, WatchableRemote] = {}
        #: Pairs whose watch is set (since before their last listing began): the folder, and
        #: its (device, inode) then, to notice it was moved away or mounted over (no event).
        self._armed: dict[str, tuple[str, tuple[int, int]]] = {}
        #: Pairs with an event since their last listing began.
        self._dirty: set[str] = set()
        self._listed_at: dict[str, float] = {}
        #: Pairs whose failure to set a watch was logged (once, until a watch is set).
        self._told: set[str] = set()

    def add(self, pair: str, provider: Provider) -> None:
        """Note `pair`'s remote if it is a kind that can be watched; the watch itself is set
        at the pair's first listing (where the filesystem is checked)."""
        if isinstance(provider, WatchableRemote):
            with self._lock:
                self._providers[pair] = provider

    def remove(self, pair: str) -> None:
        with self._lock:
            self._providers.pop(pair, None)
            self._armed.pop(pair, None)
            self._dirty.discard(pair)
            self._listed_at.pop(pair, None)
            self._told.discard(pair)
        self._watcher.unwatch_remote(pair)

    def watched(self, pair: str) -> bool:
        with self._lock:
            return pair in self._armed

    # -- event side (watchdog's thread) ---------------------------------------------------------
    def changed(self, pair: str) -> None:
        with self._lock:
            self._dirty.add(pair)

    def overflowed(self) -> None:
        """The kernel dropped events: any remote may have changed unseen."""
        with self._lock:
            self._dirty.update(self._providers)

    def drop_fired(self) -> None:
        """Drop the watches that have had an event: the next listing sets them again. Called
        by the daemon's main loop, not in watchdog's thread (stopping a watch joins its
        thread)."""
        with self._lock:
            fired = self._armed.keys() & self._dirty
            for pair in fired:
                del self._armed[pair]
        for pair in fired:
            self._watcher.unwatch_remote(pair)

    # -- poll side ------------------------------------------------------------------------------
    def needs_listing(self, pair: str) -> bool:
        """False only when the remote is watched, no event came since its last listing began,
        that listing is less than RELIST_EVERY_S old, and the watched folder is still the
        one at the remote's path."""
        with self._lock:
            watched = self._armed.get(pair)
            if watched is None or pair in self._dirty:
                return True
            if time.monotonic() - self._listed_at.get(pair, float("-inf")) >= RELIST_EVERY_S:
                return True
        return not _still_there(*watched)

    def listing(self, pair: str) -> None:
        """A listing of the remote is about to begin: set the watch first, so any change from
        here on either is in the listing or makes an event."""
        with self._lock:
            provider = self._providers.get(pair)
            watched = self._armed.get(pair)
        if watched is not None and not _still_there(*watched):
            # Another folder stands at the path now (moved, replaced, mounted over): watch
            # that one, after checking its filesystem afresh.
            with self._lock:
                self._armed.pop(pair, None)
            self._watcher.unwatch_remote(pair)
            watched = None
        if provider is not None and watched is None:
            try:
                root = provider.watch_root()
                # Taken before the watch is set: a folder swapped in after this point is
                # told apart by it (needs_listing), as no event would tell.
                identity = _identity(root)
                self._watcher.watch_remote(pair, root, self.changed)
            except (NotWatchable, OSError) as exc:
                if pair not in self._told:
                    self._told.add(pair)
                    log.info(
                        "remote folder not watched; listed at every poll", pair=pair, why=str(exc)
                    )
            else:
                with self._lock:
                    self._armed[pair] = (root, identity)
                    self._told.discard(pair)
        with self._lock:
            self._dirty.discard(pair)
            self._listed_at[pair] = time.monotonic()

    def listing_failed(self, pair: str) -> None:
        """The listing failed (the folder may be gone, and its watch with it): list again at
        the next poll, with a fresh watch."""
        with self._lock:
            was_armed = self._armed.pop(pair, None) is not None
            self._dirty.add(pair)
        if was_armed:
            self._watcher.unwatch_remote(pair)


def _still_there(folder: str, identity: tuple[int, int]) -> bool:
    """Is the folder at this path still the one that was watched?"""
    try:
        return _identity(folder) == identity
    except OSError:
        return False


def _identity(folder: str) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino

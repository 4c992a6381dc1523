"""watchdog events → `Change` values. No decisions here: just which paths may have changed."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from syncd.engine.model import Change, Origin, Side
from syncd.engine.paths import is_internal, normalize

log = structlog.get_logger("syncd.watcher")

# Events that cannot mean new content: opening a file, or closing one that was only read.
_IGNORED = {"opened", "closed_no_write"}


class PairEventHandler(FileSystemEventHandler):
    """Maps events under one pair's root onto Changes for that pair."""

    def __init__(self, pair: str, root: Path, emit: Callable[[Change], None]) -> None:
        self.pair = pair
        self.root = str(root)
        self.emit = emit

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        paths = [event.src_path]
        if event.event_type == "moved":
            paths.append(event.dest_path)
        for raw in paths:
            path = self._relative(os.fsdecode(raw))
            if path is None or is_internal(path):
                continue
            if event.is_directory:
                if event.event_type == "modified":
                    continue  # a folder's own mtime; its files have events of their own
                self.emit(Change(self.pair, path, Side.LOCAL, Origin.WATCHER, is_dir=True))
            else:
                self.emit(Change(self.pair, path, Side.LOCAL, Origin.WATCHER))

    def _relative(self, path: str) -> str | None:
        """The root-relative path of an event, as the engine names every path: NFC (an
        NFD-named file is the same file as its NFC spelling; the engine finds it on disk)."""
        if not path.startswith(self.root + os.sep):
            return None
        relative = path[len(self.root) + 1 :].replace(os.sep, "/")
        return relative if relative.isascii() else normalize(relative)


class RemoteEventHandler(FileSystemEventHandler):
    """Any event under a folder remote's root: the remote may have changed (which path does
    not matter: the listing that follows finds it)."""

    def __init__(self, pair: str, changed: Callable[[str], None]) -> None:
        self.pair = pair
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED:
            self.changed(self.pair)


#: The warning watchdog logs when the kernel's event queue overflowed: events were dropped,
#: and watchdog tells its handlers nothing else about it.
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
OVERFLOW_MESSAGE = "Inotify queue overflowed"


class _OverflowFilter(logging.Filter):
    def __init__(self, overflowed: Callable[[], None]) -> None:
        super().__init__()
        self.overflowed = overflowed

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(OVERFLOW_MESSAGE):
            self.overflowed()
        return True


#: What watchdog logs, at error level, when one of its emitter threads is handed an event as
#: the observer stops (a race inside watchdog at every stop, harmless: nothing is watched
#: any more). A clean stop of syncd printed it now and then.
STOPPING_LOGGER = "watchdog.observers.inotify"
STOPPING_MESSAGE = "InotifyEmitter.queue_events() called when the thread is inactive"


class _StoppingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != STOPPING_MESSAGE


_STOPPING_FILTER = _StoppingFilter()  # one instance: adding it again is a no-op


#: What inotify answers when a per-user limit is exhausted: ENOSPC for max_user_watches,
#: EMFILE for max_user_instances (ENFILE: the system's open files).
INOTIFY_LIMITS = (errno.ENOSPC, errno.EMFILE, errno.ENFILE)


class WatchLimitReached(OSError):
    """No more inotify watches: the pair falls back to periodic scanning."""


class Watcher:
    """One watchdog observer for every pair's root and folder remote (one dispatch thread).

    `overflowed` is called when the kernel dropped events (its queue overflowed): whatever
    was watched may have changed unseen."""

    def __init__(
        self,
        emit: Callable[[Change], None],
        overflowed: Callable[[], None] | None = None,
        limit_reached: Callable[[str, str], None] | None = None,
    ) -> None:
        self._emit = emit
        self._watches: dict[str, ObservedWatch] = {}
        self._remote_watches: dict[str, ObservedWatch] = {}
        self._remote_changed: dict[str, Callable[[str], None]] = {}
        self._overflow_filter = _OverflowFilter(overflowed) if overflowed is not None else None
        #: Told `(pair, why)` when a folder made under a watched root later cannot be watched
        #: for a limit: that pair's watch no longer sees everything.
        self._limit_reached = limit_reached
        #: One list per watch being set (threads may set two at once): the folders the
        #: kernel refused a watch meanwhile, with why (None: not for a limit).
        self._refusals: list[list[tuple[str, str | None]]] = []
        self._refused_lock = threading.Lock()
        #: Per pair: folders under its root left unwatched for another reason than a limit
        #: (one it may not read): see `readable_again`.
        self._unwatched: dict[str, set[str]] = {}
        #: Why there is no inotify at all (the instance limit), or None.
        self.unavailable: str | None = None
        self._observer: BaseObserver | None = None
        try:
            self._observer = Observer()
        except OSError as exc:
            if exc.errno not in INOTIFY_LIMITS:
                raise
            self.unavailable = _limit_message(exc)
        else:
            self._hear_refusals(self._observer)

    def watch(self, pair: str, root: Path) -> None:
        """Watch `root` recursively. Raises WatchLimitReached when the kernel's inotify limits
        (watches or instances) are exhausted, and OSError for anything else.

        A root that is a symlink (`local: ~/Documents` linking elsewhere) is watched where it
        leads: inotify does not follow a link, so a watch on the link itself saw no event."""
        real = Path(os.path.realpath(root))
        unwatched: set[str] = set()
        self._watches[pair] = self._schedule(
            PairEventHandler(pair, real, self._emit), real, unwatched
        )
        with self._refused_lock:
            self._unwatched[pair] = unwatched

    def readable_again(self, pair: str) -> bool:
        """Can a folder the pair's watch had to leave out (unreadable then) be read now? Its
        files were synced when the folder's failure was retried, but without a watch no later
        change in it would be seen: the caller watches the pair again."""
        with self._refused_lock:
            folders = set(self._unwatched.get(pair, ()))
        for folder in folders:
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except FileNotFoundError:
                with self._refused_lock:
                    self._unwatched.get(pair, set()).discard(folder)  # gone: nothing to watch
            except OSError:
                continue  # still unreadable (or not a folder now)
            else:
                os.close(fd)
                return True
        return False

    def watch_remote(self, pair: str, root: str, changed: Callable[[str], None]) -> None:
        """Call `changed(pair)` at every event under a folder remote's `root`. Raises like
        `watch`, and with EEXIST when another watch has the same root (watchdog would merge
        the two, and unwatching one would silence the other). A symlink is watched where it
        leads, as in `watch`."""
        self.unwatch_remote(pair)
        real = os.path.realpath(root)
        taken = {watch.path for watch in [*self._watches.values(), *self._remote_watches.values()]}
        if real in taken:
            raise OSError(errno.EEXIST, f"{root} is already watched for another pair")
        self._remote_watches[pair] = self._schedule(RemoteEventHandler(pair, changed), real)
        self._remote_changed[pair] = changed

    def _schedule(
        self,
        handler: FileSystemEventHandler,
        root: Path | str,
        unwatched: set[str] | None = None,
    ) -> ObservedWatch:
        """Schedule a recursive watch; the folders under `root` left unwatched for another
        reason than a limit are added to `unwatched`."""
        if self._observer is None:
            raise WatchLimitReached(self.unavailable or "no inotify")
        noted: list[tuple[str, str | None]] = []
        with self._refused_lock:
            self._refusals.append(noted)
        try:
            watch = self._observer.schedule(handler, str(root), recursive=True)
        except OSError as exc:
            if exc.errno in INOTIFY_LIMITS:
                raise WatchLimitReached(_limit_message(exc)) from exc
            raise
        except RecursionError:
            # watchdog adds a tree's watches by recursion, one level a call: a folder ~1000
            # levels deep under the root. Scanned instead (the scan walks without recursion).
            raise WatchLimitReached("a folder under it is nested too deeply to watch") from None
        finally:
            with self._refused_lock:
                self._refusals = [other for other in self._refusals if other is not noted]
        mine = [(path, why) for path, why in noted if _under(path, str(root))]
        refused = [why for _, why in mine if why is not None]
        if unwatched is not None:
            unwatched.update(path for path, why in mine if why is None)
        if refused:
            # Some folder below the root got no watch (watchdog 7 skips it and goes on):
            # changes there would go unseen, so the root counts as not watched at all.
            self._unschedule(watch)
            raise WatchLimitReached(refused[0])
        return watch

    def _hear_refusals(self, observer: BaseObserver) -> None:
        """Note every folder the kernel refuses a watch for a limit. watchdog (7.x) swallows
        the error of a folder below a watched root, at the start and for a folder made later
        alike, and watches the rest: without this, a tree past max_user_watches was watched
        in part, silently, and changes in the other folders were never seen."""
        inotify_fd: Any = getattr(observer, "_inotify_fd", None)
        add_callback = getattr(inotify_fd, "add_callback", None)
        if add_callback is None:  # another watchdog: its errors reach schedule() as they are
            return

        def noting_refusals(path: bytes, *args: Any, **kwargs: Any) -> Any:
            try:
                wd = add_callback(path, *args, **kwargs)
            except OSError as exc:
                limit = exc.errno in INOTIFY_LIMITS
                self._refused(os.fsdecode(path), _limit_message(exc) if limit else None)
                raise
            if wd == -1:  # EACCES: watchdog says nothing and keeps a watch that never fires
                self._refused(os.fsdecode(path), None)
            return wd

        inotify_fd.add_callback = noting_refusals

    def _refused(self, path: str, why: str | None) -> None:
        """The kernel refused a watch on `path`: for a limit (`why`), or not (None)."""
        with self._refused_lock:
            for noted in self._refusals:
                noted.append((path, why))
        # A folder made under a root watched already (watchdog's thread): tell whose it is.
        for pair, watch in list(self._watches.items()):
            if not _under(path, watch.path):
                continue
            if why is None:
                with self._refused_lock:
                    self._unwatched.setdefault(pair, set()).add(path)
            elif self._limit_reached is not None:
                self._limit_reached(pair, why)
        if why is None:
            return
        for pair, watch in list(self._remote_watches.items()):
            changed = self._remote_changed.get(pair)
            if _under(path, watch.path) and changed is not None:
                changed(pair)  # listed again, and watched anew (which fails: listed every poll)

    def unwatch(self, pair: str) -> None:
        with self._refused_lock:
            self._unwatched.pop(pair, None)
        self._unschedule(self._watches.pop(pair, None))

    def unwatch_remote(self, pair: str) -> None:
        self._remote_changed.pop(pair, None)
        self._unschedule(self._remote_watches.pop(pair, None))

    def _unschedule(self, watch: ObservedWatch | None) -> None:
        if watch is not None and self._observer is not None:
            # Once the observer has stopped, it has unscheduled every watch itself.
            with contextlib.suppress(KeyError):
                self._observer.unschedule(watch)

    def start(self) -> None:
        if self._overflow_filter is not None:
            overflow_log = logging.getLogger(OVERFLOW_LOGGER)
            if not overflow_log.isEnabledFor(logging.WARNING):
                overflow_log.setLevel(logging.WARNING)  # a filter only sees what is logged
            overflow_log.addFilter(self._overflow_filter)
        if self._observer is not None:
            self._observer.start()

    def is_alive(self) -> bool:
        """Healthy: the observer thread runs (or there is none to run: pairs are scanned)."""
        return self._observer is None or bool(self._observer.is_alive())

    def stop(self) -> None:
        if self._overflow_filter is not None:
            logging.getLogger(OVERFLOW_LOGGER).removeFilter(self._overflow_filter)
        if self._observer is None:
            return
        # Kept after the stop: an emitter thread may still be winding down.
        logging.getLogger(STOPPING_LOGGER).addFilter(_STOPPING_FILTER)
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _limit_message(exc: OSError) -> str:
    return (
        f"inotify limit reached ({exc.strerror or os.strerror(exc.errno or 0)}); raise "
        "fs.inotify.max_user_watches / max_user_instances"
    )

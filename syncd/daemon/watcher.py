"""watchdog events → `Change` values. No decisions here: just which paths may have changed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from syncd.engine.model import Change, Origin, Side
from syncd.engine.paths import is_internal

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
        if not path.startswith(self.root + os.sep):
            return None
        return path[len(self.root) + 1 :].replace(os.sep, "/")


class Watcher:
    """One watchdog observer for every pair's root (one inotify instance, one thread)."""

    def __init__(self, emit: Callable[[Change], None]) -> None:
        self._emit = emit
        self._observer = Observer()
        self._watches: dict[str, ObservedWatch] = {}

    def watch(self, pair: str, root: Path) -> None:
        handler = PairEventHandler(pair, root, self._emit)
        self._watches[pair] = self._observer.schedule(handler, str(root), recursive=True)

    def unwatch(self, pair: str) -> None:
        watch = self._watches.pop(pair, None)
        if watch is not None:
            self._observer.unschedule(watch)

    def start(self) -> None:
        self._observer.start()

    def is_alive(self) -> bool:
        return bool(self._observer.is_alive())

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)

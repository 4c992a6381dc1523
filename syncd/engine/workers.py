"""Worker threads that drain the work queue, and a supervisor hook that restarts dead ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from syncd.engine.workqueue import Key, WorkQueue

log = structlog.get_logger("syncd.workers")


class WorkerPool:
    """`size` threads, each taking one (pair, path) at a time and handing it to `handle`.

    A worker never dies of a per-file error (the handler records those); anything that escapes
    the handler is logged loudly and the worker is replaced by `supervise()`.
    """

    def __init__(self, queue: WorkQueue, handle: Callable[[Key], None], size: int) -> None:
        self._queue = queue
        self._handle = handle
        self._size = size
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._size):
            self._threads.append(self._spawn(index))

    def _spawn(self, index: int) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"worker-{index}", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            key = self._queue.get(timeout=0.5)
            if key is None:
                continue
            handled = False
            try:
                self._handle(key)
                handled = True
            except Exception:
                log.exception("worker crashed on an item", pair=key[0], path=key[1])
                raise
            finally:
                self._queue.done(key, taking_next=handled)

    def supervise(self) -> int:
        """Replace dead worker threads; returns how many were restarted."""
        restarted = 0
        for index, thread in enumerate(self._threads):
            if not thread.is_alive() and not self._stop.is_set():
                log.error("worker thread died; restarting it", worker=thread.name)
                self._threads[index] = self._spawn(index)
                restarted += 1
        return restarted

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask workers to finish their current item; True if all stopped within `timeout`."""
        self._stop.set()
        self._queue.wake_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

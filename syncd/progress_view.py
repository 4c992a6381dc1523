"""Progress bars for `syncd upload` / `download` on a terminal (rich), fed by the engine's
in-flight transfers: a bar per file while it moves, gone when it is done."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from syncd.engine.progress import InFlight

REFRESH_SECONDS = 0.2


@contextmanager
def progress_bars(inflight: InFlight, *, enabled: bool) -> Iterator[None]:
    """Show the transfers of `inflight` while the block runs (nothing when not enabled)."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bars:
        tasks: dict[tuple[str, str], TaskID] = {}

        def refresh() -> None:
            while not stop.wait(REFRESH_SECONDS):
                seen: set[tuple[str, str]] = set()
                for view in inflight.snapshot():
                    key: tuple[str, str] = (view.direction, view.path)
                    seen.add(key)
                    if key not in tasks:
                        arrow = "↑" if view.direction == "upload" else "↓"
                        tasks[key] = bars.add_task(f"{arrow} {view.path}", total=view.bytes_total)
                    bars.update(tasks[key], completed=view.bytes_done, total=view.bytes_total)
                for key in [k for k in tasks if k not in seen]:
                    bars.remove_task(tasks.pop(key))

        thread = threading.Thread(target=refresh, name="syncd-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

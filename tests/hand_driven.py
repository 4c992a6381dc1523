"""Driving a daemon by hand: an Engine and a Daemon on one folder-remote pair, with no
`run` and no worker threads, so a test decides when each step happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import Setup, folder_setup

from syncd.config import Config, load_config
from syncd.daemon.daemon import Daemon
from syncd.engine.core import Engine


def hand_driven_pair(
    tmp_path: Path, files: dict[str, str], **pair_extra: Any
) -> tuple[Setup, Path, Config]:
    """A one-pair set-up on a folder remote with `files` in its local root, and its config:
    for an Engine and a Daemon the test drives by hand (no `run`, no workers)."""
    setup, remote = folder_setup(tmp_path, **pair_extra)
    setup.local.mkdir()
    for name, text in files.items():
        (setup.local / name).write_text(text)
    setup.write()
    return setup, remote, load_config(setup.config)


def first_pass(daemon: Daemon, engine: Engine) -> None:
    """The start-up pass of pair `docs`, through to its end (last_sync stamped)."""
    daemon.full_scan("docs", first_pass=True)
    work_off(engine)
    daemon._end_quiet_passes()


def work_off(engine: Engine) -> None:
    """Be the daemon's workers until its queue is empty."""
    while (key := engine.queue.get(timeout=1)) is not None:
        engine.handle(key)
        engine.queue.done(key)

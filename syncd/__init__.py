"""syncd: keep local folders in sync with object storage (S3, GCS, Azure Blob, local folders).

The Python API, for scripts and notebooks (the CLI is built on the same engine):

    from syncd import Engine

    with Engine.from_config_file("syncd.yaml") as engine:   # or from_config_dict / from_env
        report = engine.sync_once()                          # pair=None, dry_run=False
        print(report.files_up, report.bytes_down, report.speed_bps, report.failures)
        engine.upload("./out", "s3://bucket/results/")      # one-way copies, like rclone copy
        engine.retry_failed()
        engine.status()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from syncd.config import Config, ConfigError
    from syncd.daemon.lock import AlreadyRunning, LockUnavailable
    from syncd.engine.core import ConflictOutcome, Engine, PairReport, Report
    from syncd.engine.stats import Failure
    from syncd.state import StateError

__all__ = [
    "AlreadyRunning",
    "Config",
    "ConfigError",
    "ConflictOutcome",
    "Engine",
    "Failure",
    "LockUnavailable",
    "PairReport",
    "Report",
    "StateError",
    "__version__",
]

_LAZY = {
    "AlreadyRunning": "syncd.daemon.lock",
    "Config": "syncd.config",
    "ConfigError": "syncd.config",
    "ConflictOutcome": "syncd.engine.core",
    "Engine": "syncd.engine.core",
    "Failure": "syncd.engine.stats",
    "LockUnavailable": "syncd.daemon.lock",
    "PairReport": "syncd.engine.core",
    "Report": "syncd.engine.core",
    "StateError": "syncd.state",
}


def __getattr__(name: str) -> Any:
    """Import the API on first use, so `import syncd` (and the CLI's start) stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'syncd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

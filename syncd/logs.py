"""structlog set-up: JSON lines when stderr is not a terminal (journald, files), colour on a TTY.

Stable keys across the code base: event, pair, path, op, bytes, duration_ms, error.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Literal

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Stderr:
    """Whatever `sys.stderr` is when a line is written (not when logging was set up): a
    script, a notebook or a test runner may replace it later."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configured() -> bool:
    """Has `configure` run in this process (the CLI, or an earlier engine)?"""
    return structlog.is_configured()


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info
            if as_json
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging: only their warnings are ours to show
    # (botocore's debug output alone would bury syncd's own lines), rendered like syncd's own
    # (one JSON object per line, `event` the message, `logger` its name), so a reader of the
    # journal parses every line.
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                stamp,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]  # again on a reload: one handler, this format
    root.setLevel(logging.WARNING)
    # Python's warnings too: printed as they are, they were two lines of plain text amid the
    # JSON.
    logging.captureWarnings(True)
    # Except watchdog's when folder churn (a folder made and removed at once, moved out and
    # back in) adds a watch twice: harmless, its callback is replaced, and the line held the
    # repr of every watched folder, kilobytes growing with the tree, many times a minute.
    warnings.filterwarnings(
        "ignore", message=r"Callback with id .* already exists for watch", category=RuntimeWarning
    )
    # watchdog says this at error level when a watch is removed while its thread reads an
    # event (the folder remote's watch is dropped at its first event): a race inside
    # watchdog over an event no one waits for, not a fault; a reader alerting on errors saw one.
    inotify = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(each, _StoppedEmitter) for each in inotify.filters):
        inotify.addFilter(_StoppedEmitter())
    # APScheduler warns at every poll a slow one makes it skip; `syncd status` says as much.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # DefaultAzureCredential warns once for every credential it tries (a screenful, with
    # advice about Azure CLI logins) before the failure syncd states itself, in one line.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)


class _StoppedEmitter(logging.Filter):
    """Drops watchdog's "queue_events() called when the thread is inactive" (see configure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()

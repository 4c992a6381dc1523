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


#: The processors of the set-up a script's Engine made (`take_root=False`), the list and
#: what it held: while it is structlog's, as made, a later engine may replace it with its own
#: `log:`. Nothing else is replaced: the CLI's (with -v / -q), the script's own, or a test's
#: `capture_logs` (which swaps the contents of that very list for its own processor).
_ENGINES: list[tuple[list[structlog.typing.Processor], tuple[structlog.typing.Processor, ...]]] = []


def configured() -> bool:
    """Has structlog been set up in this process (the CLI, an engine, or the script)?"""
    return structlog.is_configured()


def engine_may_configure() -> bool:
    """May an Engine set logging up from its config's `log:`? Not under the CLI (which did,
    with -v / -q), nor where the script set structlog up itself; yes where nothing did, or
    an earlier engine of the script (whose `log:` the later one's replaces)."""
    if not structlog.is_configured():
        return True
    current = structlog.get_config()["processors"]
    return any(current is made and tuple(current) == held for made, held in _ENGINES)


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    take_root: bool = True,
) -> None:
    """syncd's own log lines (structlog) at `level`, as `fmt` says, on stderr. With
    `take_root` (the CLI, the daemon: syncd is the program) the stdlib root logger and
    Python's warnings are rendered the same way; a script's Engine passes False, as its
    root handlers, level and warnings belong to the script (`basicConfig` to a file lost
    its lines to stderr)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamp,
        structlog.processors.format_exc_info
        if as_json
        else structlog.processors.StackInfoRenderer(),
        renderer,
    ]
    _ENGINES[:] = [] if take_root else [(processors, tuple(processors))]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    if take_root:
        _take_root(renderer, stamp)
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


def _take_root(renderer: structlog.typing.Processor, stamp: structlog.typing.Processor) -> None:
    """Third-party libraries log through stdlib logging: only their warnings are ours to show
    (botocore's debug output alone would bury syncd's own lines), rendered like syncd's own
    (one JSON object per line, `event` the message, `logger` its name), so a reader of the
    journal parses every line."""
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


class _StoppedEmitter(logging.Filter):
    """Drops watchdog's "queue_events() called when the thread is inactive" (see configure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()

"""The `syncd` command line. Thin: it loads the config, then either drives the engine
(`once`, `run`) or talks to the running daemon over the control socket."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from syncd import __version__
from syncd.config import (
    Config,
    ConfigError,
    PairConfig,
    PairPlace,
    PairsPart,
    SocketPart,
    StatePart,
    default_socket_path,
    load_config,
    load_config_part,
    resolve_config_path,
)
from syncd.config.model import state_file, state_read_only
from syncd.daemon.lock import InstanceLock, LockUnavailable, instance_lock
from syncd.daemon.protocol import DaemonError, DaemonNoAnswer, DaemonUnreachable, request
from syncd.engine.paths import normalize, printable
from syncd.exitcodes import EXIT_ATTENTION, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from syncd.providers.errors import ProviderError
from syncd.providers.url import RemoteURLError

if TYPE_CHECKING:
    # The engine, the state (SQLAlchemy) and the log set-up (structlog) are imported by the
    # commands that use them: `syncd status` and the other control commands start without.
    from syncd.engine.core import Engine, Report
    from syncd.engine.oneway import Direction
    from syncd.state import StateStore

PartT = TypeVar("PartT", SocketPart, StatePart, PairsPart)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr and the contract's exit code; never a traceback."""
    click.echo(f"syncd: {message}", err=True)
    sys.exit(code)


def _load(config_path: str | None) -> Config:
    """The config: a file (-c, $SYNCD_CONFIG, the XDG default), else one pair from the
    SYNCD_* variables (handy in containers)."""
    from syncd.config.environment import config_from_env, has_env_config

    path = resolve_config_path(config_path)
    try:
        if path is not None:
            return load_config(path)
        if has_env_config(os.environ):
            return config_from_env(os.environ)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    half = [name for name in ("SYNCD_LOCAL", "SYNCD_REMOTE") if os.environ.get(name)]
    if len(half) == 1:  # one of the two: say which one is missing
        missing = "SYNCD_REMOTE" if half == ["SYNCD_LOCAL"] else "SYNCD_LOCAL"
        fail(f"{half[0]} is set but {missing} is not: set both, or pass -c CONFIG", EXIT_USAGE)
    fail(
        "no config file: pass -c CONFIG, set SYNCD_CONFIG, create "
        "$XDG_CONFIG_HOME/syncd/syncd.yaml, or set SYNCD_LOCAL and SYNCD_REMOTE",
        EXIT_USAGE,
    )


def _require_local_roots(config: Config, config_path: str | None, only: str | None) -> None:
    """A pair whose local root is missing or not a folder is a config error for a one-shot
    pass (issue 6: exit 2, naming the key); nothing is looked at, nothing deleted. The daemon
    instead shows such a pair in `error` and takes the root up again when it is back."""
    for index, pair in enumerate(config.pairs):
        if only is not None and pair.name != only:
            continue
        problem = _local_root_problem(Path(pair.local))
        if problem is not None:
            source, key = _local_key(config_path, index)
            fail(str(ConfigError(source, f"{pair.local} {problem}", key=key)), EXIT_USAGE)


def _local_key(config_path: str | None, index: int) -> tuple[str, str]:
    """Where a pair's `local` came from, as a config error names it: the file and
    `pairs[N].local`, or the environment and SYNCD_LOCAL (a config from variables alone)."""
    path = resolve_config_path(config_path)
    return (str(path), f"pairs[{index}].local") if path else ("environment", "SYNCD_LOCAL")


def _require_places(
    config: Config,
    config_path: str | None,
    code: int,
    *,
    socket: bool = False,
    metrics: bool = False,
    writes: bool = True,
) -> None:
    """The state database (and for the daemon its control socket and metrics endpoint) can
    be used, else one line naming the key, before anything is made: a refused `run` left
    `state.db.lock` behind. `code` is the exit of a state or socket that cannot be: 2 for
    `check` (a value of the config no command can use), 1 for the commands that use them,
    as README documents for a state that cannot be opened. A `metrics.listen` no endpoint
    can have is 2 for every command, as `run` said it before. A state the URL opens
    read-only (`mode=ro`) is a config error (2) for a command that `writes` it: `once` ran
    with exit 0 while no record of its pass was saved."""
    from syncd import preflight

    read_only = state_read_only(config.state) if writes else None
    if read_only is not None:
        why = f"{read_only} opens the state read-only, and this command writes it"
        fail(_config_words(config_path, "state", why), EXIT_USAGE)
    problems = [("state", preflight.state_problem(config.state), code)]
    if socket:
        problems.append(("socket", preflight.socket_problem(Path(config.socket)), code))
    if metrics and config.metrics is not None:
        listen = preflight.listen_problem(config.metrics.host, config.metrics.port)
        problems.append(("metrics.listen", listen, EXIT_USAGE))
    for key, problem, exit_code in problems:
        if problem is not None:
            fail(_config_words(config_path, key, problem), exit_code)


def _no_state_yet(config: Config) -> bool:
    """No SQLite state file yet: a dry run plans on a scratch state (`dry_run_state`) and
    needs no state folder it may write (a read-only checkout, CI, another user's preview)."""
    db = state_file(config.state)
    return db is not None and not os.path.lexists(db)


def _config_words(config_path: str | None, key: str, problem: str) -> str:
    """A problem of a config value found after loading, said as loading says one: the file
    (or the environment, naming its variable) and the key."""
    path = resolve_config_path(config_path)
    if path is None and key == "state" and os.environ.get("SYNCD_STATE"):
        key = "SYNCD_STATE"
    return str(ConfigError(str(path or "environment"), problem, key=key))


def _local_root_problem(root: Path) -> str | None:
    """Why `root` cannot be a pair's local root (missing, not a folder), or None."""
    if root.is_dir():
        return None
    return "is not a folder" if os.path.lexists(root) else "does not exist"


def _load_part(config_path: str | None, part: type[PartT]) -> PartT:
    """Only `part` of the config (`load_config_part`), for commands that need no more: an
    unset `${VAR}` elsewhere in the file (the service's secrets) does not stop them. Without
    a file, the SYNCD_* variables' config."""
    path = resolve_config_path(config_path)
    if path is None:
        return part.model_validate(_load(None), from_attributes=True)
    try:
        return load_config_part(path, part)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def _socket(config_path: str | None) -> Path:
    """The daemon's socket: from the config when there is one, else the default location."""
    if resolve_config_path(config_path) is None:
        return default_socket_path()
    return _load_part(config_path, SocketPart).socket


def _lock(config: Config) -> InstanceLock:
    """The instance lock of the config's state, for a command that syncs or writes it."""
    _refuse_foreign_state(config)
    return instance_lock(config.state, Path(config.socket))


def _refuse_foreign_state(config: Config) -> None:
    """root working on a state another user keeps (the system service's, as `syncd`) would
    leave root's files in that user's pair roots (its trash, downloads), which the service
    then may not move or delete: every later deletion failed there. Exit 2, saying how."""
    from syncd.state import sqlite_path

    db = sqlite_path(config.state)
    if os.geteuid() != 0 or db is None:
        return
    try:
        owner = db.stat().st_uid
    except OSError:
        return
    if owner != 0:
        import pwd

        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        fail(
            f"state {db} belongs to user {name}: run this as that user (sudo -u {name} "
            "syncd …), or the files syncd writes in its pair roots would be root's",
            EXIT_USAGE,
        )


def _setup_logging(ctx: click.Context, config: Config) -> None:
    from syncd import logs

    level = config.log.level
    verbosity = ctx.obj.get("verbosity", 0) if ctx.obj else 0
    order = ["debug", "info", "warning", "error"]
    index = max(0, min(len(order) - 1, order.index(level) - verbosity))
    logs.configure(order[index], config.log.format)


def _open_engine(config: Config) -> Engine:
    from syncd.engine.core import Engine
    from syncd.state import StateError

    try:
        return Engine(config)
    except StateError as exc:
        fail(str(exc), EXIT_FAILED)
    except (ProviderError, RemoteURLError) as exc:
        fail(str(exc), EXIT_USAGE)


def _ask(config_path: str | None, cmd: str, **args: Any) -> Any:
    try:
        return request(_socket(config_path), cmd, **args)
    except DaemonNoAnswer as exc:
        # Taken, not answered: not "unreachable" (exit 3 says nothing was done), unless
        # the command only asks (status).
        fail(str(exc), EXIT_UNREACHABLE if cmd in READ_ONLY_COMMANDS else EXIT_FAILED)
    except DaemonUnreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except DaemonError as exc:
        fail(str(exc), EXIT_USAGE)


#: Control commands that change nothing: one the daemon took but did not answer is still
#: "not reachable" (exit 3).
READ_ONLY_COMMANDS = frozenset({"status"})

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    metavar="CONFIG",
    help="Config file (default: $SYNCD_CONFIG, then $XDG_CONFIG_HOME/syncd/syncd.yaml).",
)
pair_option = click.option("--pair", metavar="NAME", help="Only this pair.")


class OneLineUsageError(click.UsageError):
    """A usage error the way the contract wants every error: one line on stderr, exit 2.

    click's own is a block of three or four lines (usage, hint, a blank line, the error),
    which a script's log cuts apart; its message is kept word for word, and so is the
    pointer to the help.
    """

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(self.format_message().split()).rstrip(".")
        message = message[:1].lower() + message[1:]
        command = self.ctx.command_path if self.ctx is not None else "syncd"
        click.echo(f"syncd: {message} (see '{command} --help')", file=file, err=True)


@contextlib.contextmanager
def _one_line_usage(ctx: click.Context) -> Iterator[None]:
    """Turn click's usage errors into OneLineUsageError (naming `ctx`'s command when the
    error names none); `syncd` with no command still shows the help (NoArgsIsHelpError), as
    `--help` does."""
    try:
        yield
    except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):
        raise
    except click.UsageError as exc:
        raise OneLineUsageError(exc.format_message(), exc.ctx or ctx) from None


def _verbosity_step(step: int) -> Callable[[click.Context, click.Parameter, int], None]:
    """The callback of a subcommand's -v / -q: move the verbosity the top-level ones set, so
    `syncd -v once -v` is two steps, like `syncd -vv once`."""

    def count(ctx: click.Context, param: click.Parameter, value: int) -> None:
        if value:
            settings = ctx.ensure_object(dict)
            settings["verbosity"] = settings.get("verbosity", 0) + step * value

    return count


def _verbosity_options() -> list[click.Parameter]:
    return [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_verbosity_step(1),
            help="More log output (repeatable).",
        ),
        click.Option(
            ["-q", "--quiet"],
            count=True,
            expose_value=False,
            callback=_verbosity_step(-1),
            help="Less log output (repeatable).",
        ),
    ]


class SyncdCommand(click.Command):
    """A syncd subcommand: its usage errors are one line, and it takes -v / -q after its name
    as well as before (`syncd run -v` is what people type after `syncd run`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_verbosity_options())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_usage(ctx):
            return super().parse_args(ctx, args)


class SyncdGroup(click.Group):
    """syncd's command groups: their usage errors are one line, and so are their commands'
    (a missing or unknown command is found in `invoke`)."""

    command_class = SyncdCommand
    group_class = type  # `state` is a SyncdGroup too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not (self.no_args_is_help or self.invoke_without_command):
            # `syncd state`: one line naming what may follow, not the group's help.
            names = ", ".join(self.list_commands(ctx))
            raise OneLineUsageError(f"Missing command ({names}).", ctx)
        with _one_line_usage(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage(ctx):
            return super().invoke(ctx)


@click.group(cls=SyncdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncd")
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output (repeatable).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Keep local folders in sync with S3, Google Cloud Storage, Azure Blob and local-folder
    remotes."""
    settings = ctx.ensure_object(dict)
    settings["verbosity"] = settings.get("verbosity", 0) + verbose - quiet


@cli.command()
@config_option
@click.pass_context
def run(ctx: click.Context, config_path: str | None) -> None:
    """Run the daemon in the foreground (SIGTERM / Ctrl-C stop it cleanly)."""
    from syncd.daemon.control import ControlServer, ControlSocketError
    from syncd.daemon.daemon import Daemon
    from syncd.daemon.metrics import MetricsUnavailable

    config = _load(config_path)
    _require_places(config, config_path, EXIT_FAILED, socket=True, metrics=True)
    _setup_logging(ctx, config)
    control = ControlServer(Path(config.socket))
    try:
        with _lock(config):
            # Claimed before the state is opened: a daemon refused here touches nothing, and
            # the stop removes only a socket this process bound.
            control.bind()
            try:
                engine = _open_engine(config)
                code = Daemon(config, engine, resolve_config_path(config_path), control).run()
            finally:
                control.stop()
    except (LockUnavailable, ControlSocketError) as exc:
        fail(str(exc), EXIT_FAILED)
    except MetricsUnavailable as exc:
        source = resolve_config_path(config_path) or "environment"
        fail(f"{source}: metrics.listen: {exc}", EXIT_USAGE)
    sys.exit(code)


@cli.command()
@config_option
@pair_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Let deletions through that a safety guard held back.")
@click.pass_context
def once(
    ctx: click.Context, config_path: str | None, pair: str | None, dry_run: bool, force: bool
) -> None:
    """One full reconciliation of every pair (or one), then exit."""
    from syncd.engine.core import dry_run_state

    config = _load(config_path)
    _setup_logging(ctx, config)
    if pair is not None and pair not in {p.name for p in config.pairs}:
        fail(f"no pair named {pair!r} in the config", EXIT_USAGE)
    _require_local_roots(config, config_path, pair)
    if not (dry_run and _no_state_yet(config)):
        _require_places(config, config_path, EXIT_FAILED, writes=not dry_run)
    try:
        with ExitStack() as stack:
            if dry_run:
                config = stack.enter_context(dry_run_state(config))
            stack.enter_context(_lock(config))
            engine = stack.enter_context(_open_engine(config))
            report = engine.sync_once(pair=pair, dry_run=dry_run, force=force)
    except LockUnavailable as exc:
        fail(str(exc), EXIT_FAILED)
    _print_report(report, dry_run)
    sys.exit(report.exit_code)


def _print_report(report: Report, dry_run: bool) -> None:
    """One line per fact. Paths (and the errors that may quote them) are shown with bytes
    that are not UTF-8 and control characters escaped (`bad\\xff.txt`): the output stays
    valid UTF-8, one line per path."""
    for pair in report.pairs:
        if pair.fault:
            click.echo(f"{pair.name}: error: {printable(pair.fault)}")
            continue
        if dry_run:
            for item in pair.planned:
                action, reason = item.decision.action.value, item.decision.reason
                click.echo(f"{action}\t{pair.name}/{printable(item.path)}\t{reason}")
        else:
            click.echo(
                f"{pair.name}: {pair.uploaded} uploaded, {pair.downloaded} downloaded, "
                f"{len(pair.failures)} failed, {len(pair.conflicts)} conflicts, "
                f"{pair.deleted} deleted, {pair.moved} moved"
            )
        for path, failure in sorted(pair.failures.items()):
            click.echo(f"  failed: {printable(path)}: {printable(failure.error)}")
        for path, reason in sorted(pair.conflicts.items()):
            click.echo(
                f"  conflict: {printable(path)}: {reason} "
                "(syncd resolve PATH --keep local|remote|both)"
            )
        for path, outcome in sorted(pair.settled.items()):
            click.echo(f"  conflict settled: {printable(path)}: {printable(outcome)}")
        if pair.held_reason:
            click.echo(f"  held: {len(pair.held)} deletions: {pair.held_reason}")
            for path in sorted(pair.held):
                click.echo(f"  held: {printable(path)}")
            for path, blocker in sorted(pair.waiting.items()):
                click.echo(
                    f"  waiting: {printable(path)}: for the held deletion of {printable(blocker)}"
                )


#: The config keys `upload` / `download` take from the command line (rclone's spellings).
TUNING = {"bwlimit": "bandwidth_limit", "transfers": "workers", "part_size": "part_size"}


def transfer_options(command: Any) -> Any:
    for option in (
        click.option("--bwlimit", metavar="RATE", help="Bandwidth limit, e.g. 20MB/s."),
        click.option("--transfers", type=int, metavar="N", help="Files moved at once."),
        click.option("--part-size", metavar="SIZE", help="Multipart part size, e.g. 16MiB."),
    ):
        command = option(command)
    return command


@cli.command()
@click.argument("local_dir")
@click.argument("remote_url")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching paths (repeatable).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only matching paths (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@transfer_options
@click.pass_context
def upload(ctx: click.Context, /, local_dir: str, remote_url: str, **options: Any) -> None:
    """One-way push of LOCAL_DIR to REMOTE_URL (new and changed files; nothing deleted)."""
    _one_way(ctx, "upload", local_dir, remote_url, options)


@cli.command()
@click.argument("remote_url")
@click.argument("local_dir")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching paths (repeatable).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only matching paths (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@transfer_options
@click.pass_context
def download(ctx: click.Context, /, remote_url: str, local_dir: str, **options: Any) -> None:
    """One-way pull of REMOTE_URL into LOCAL_DIR (new and changed files; nothing deleted)."""
    _one_way(ctx, "download", local_dir, remote_url, options)


#: The one-way copy's config keys, as its command line names them.
ARGUMENTS = {"pairs[0].local": "LOCAL_DIR", "pairs[0].remote": "REMOTE_URL"}


def _command_line_words(exc: ConfigError, patterns: dict[str, tuple[str, ...]]) -> str:
    """A config error of `upload` / `download` in the words of their command line: the user
    typed LOCAL_DIR, REMOTE_URL, --bwlimit, --exclude '[z-a]', never `pairs[0].remote`."""
    key, problem = exc.key or "", exc.problem
    for config_key, argument in ARGUMENTS.items():
        problem = problem.replace(config_key, argument)
    named = ARGUMENTS.get(key)
    named = named or next((f"--{f.replace('_', '-')}" for f, k in TUNING.items() if k == key), None)
    for flag, given in patterns.items():
        pattern = re.fullmatch(rf"pairs\[0\]\.{flag}\[(\d+)\]", key)
        if pattern is not None:  # a pattern: named as typed
            named = f"--{flag} {given[int(pattern[1])]!r}"
    if named is None and key in ("", "pairs"):  # the problem names what it is about
        return problem
    return f"{named or key.removeprefix('pairs[0].')}: {problem}"


def _one_way(
    ctx: click.Context,
    direction: Direction,
    local_dir: str,
    remote_url: str,
    options: dict[str, Any],
) -> None:
    """`upload` / `download`: one-way copies through the same engine scripts use."""
    from functools import partial

    from syncd.engine.core import DestinationUnusable, run_one_way
    from syncd.engine.oneway import one_way_config
    from syncd.progress_view import progress_bars
    from syncd.state import StateError

    exclude, include = options.pop("exclude"), options.pop("include")
    dry_run: bool = options.pop("dry_run")
    tuning = {TUNING[k]: v for k, v in options.items()}  # --bwlimit, --transfers, --part-size
    try:
        config = one_way_config(
            direction,
            Path(local_dir),
            remote_url,
            exclude=exclude,
            include=include,
            settings=tuning,
        )
    except ConfigError as exc:
        fail(_command_line_words(exc, {"exclude": exclude, "include": include}), EXIT_USAGE)
    _setup_logging(ctx, config)
    show = partial(progress_bars, enabled=sys.stderr.isatty() and not dry_run)
    stopper = _OneWayStop()
    try:
        report = stopper.run(partial(run_one_way, config, dry_run=dry_run, show=show))
    except _StoppedEarly as exc:
        fail(f"stopped by {exc.name} before anything was copied", exc.code)
    except LockUnavailable as exc:
        fail(str(exc), EXIT_FAILED)
    except FileNotFoundError as exc:
        fail(str(exc).replace(str(config.pairs[0].local), str(local_dir), 1), EXIT_USAGE)
    except DestinationUnusable as exc:
        fail(str(exc), EXIT_USAGE)
    except StateError as exc:
        fail(str(exc), EXIT_FAILED)
    except (ProviderError, RemoteURLError) as exc:
        fail(str(exc), EXIT_USAGE)
    if stopper.cut_short(report):
        _print_stopped(report, dry_run, stopper)
    _print_report(report, dry_run)
    sys.exit(report.exit_code)


#: What the engine's report says of a pass `Engine.close()` stopped (`Engine._cut_short`).
CUT_SHORT = "pass cut short"


class _Signalled(Exception):
    """A one-way copy stopped by a signal: its name, and the exit code the shell gives it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.name, self.code = _signal_name(signum), 128 + signum


class _StoppedEarly(_Signalled):
    """The signal came before the copy's pass began: nothing was copied."""


class _StopNow(_Signalled):
    """A second signal while the first one's stop is under way: leave at once."""


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


class _OneWayStop:
    """SIGINT (Ctrl-C) and SIGTERM during `upload` / `download`, stopped as the daemon stops:
    the handler only sets a flag (see `Daemon._on_signal`), and the main thread, which waits
    for the copy running in a thread of its own, closes the copy's engine (`Engine.close()`):
    the transfers in flight stop at their next chunk (a small download's temp file is removed,
    a large transfer keeps its parts for the next run), the pass reports what it did, and the
    engine lets go of its state. (A KeyboardInterrupt in the pass waited up to 10 s for the
    transfers, then printed click's `Aborted!`, exit 1 even for a copy that was through, and
    left a download's temp file behind; SIGTERM killed the copy with no clean-up.) The exit
    code is the shell's for the signal, as rclone's: 130 for SIGINT, 143 for SIGTERM. A
    second signal leaves at once."""

    def __init__(self) -> None:
        self.signum: int | None = None  # set by the handler
        self._lock = threading.Lock()
        self._engine: Engine | None = None  # the engine whose pass runs now
        self._asked = False  # the main thread has acted on the signal
        self._closed_running = False  # and closed an engine in the middle of its pass

    def run(self, copy: Callable[..., Report]) -> Report:
        """`copy(watch=...)` in a thread, the signals heard meanwhile; its result or error."""
        import signal

        outcome: list[Report] = []
        error: list[BaseException] = []

        def work() -> None:
            try:
                outcome.append(copy(watch=self.watch))
            except BaseException as exc:  # raised again in the main thread
                error.append(exc)

        # A daemon thread: a second signal leaves without waiting for it (see `_leave`).
        thread = threading.Thread(target=work, name="syncd-copy", daemon=True)
        # A signal ignored from the start stays ignored: a script's background job (`syncd
        # download … &`) does not hear the Ctrl-C meant for the script.
        stop_signals = [signal.Signals[name] for name in STOP_SIGNALS]
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in stop_signals
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
        try:
            thread.start()
            while thread.is_alive():
                thread.join(timeout=0.2)
                if self.signum is not None and not self._asked:
                    self.stop()
        except _StopNow as now:
            fail(f"stopped at once by a second {now.name}", now.code)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if error:
            raise error[0]
        return outcome[0]

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise _StopNow(signum)
        self.signum = signum

    @contextlib.contextmanager
    def watch(self, engine: Engine) -> Iterator[None]:
        """Around the copy's pass (in the copy's thread): the engine the stop closes."""
        with self._lock:
            if self._asked:
                assert self.signum is not None
                raise _StoppedEarly(self.signum)
            self._engine = engine
        try:
            yield
        finally:
            with self._lock:  # after a close() under way: it has waited for the pass
                self._engine = None

    def stop(self) -> None:
        """Stop the copy (in the main thread): close the engine of a pass under way, which
        returns once the pass has ended; a pass not begun yet is refused by `watch`."""
        with self._lock:
            self._asked = True
            if self._engine is not None:
                self._closed_running = True
                self._engine.close()

    def cut_short(self, report: Report) -> bool:
        """Did the stop cut the pass short? One that was through when it came is not (its
        report and exit code are those of a copy nobody stopped)."""
        return self._closed_running and any(p.fault is not None for p in report.pairs)


#: The signals that stop a one-way copy, as they stop the daemon.
STOP_SIGNALS = ("SIGINT", "SIGTERM")


def _print_stopped(report: Report, dry_run: bool, stopper: _OneWayStop) -> NoReturn:
    """The end of a copy a signal cut short: the summary of what it did so far (a dry run's
    plan is incomplete: none), then one line on stderr, and the signal's exit code."""
    from dataclasses import replace

    from syncd.engine.core import Report

    assert stopper.signum is not None
    if not dry_run:
        done = [replace(pair, fault=None) for pair in report.pairs]
        _print_report(Report(done, report.elapsed_s), dry_run)
        for pair in report.pairs:
            if pair.fault is not None and not pair.fault.startswith(CUT_SHORT):
                click.echo(f"  error: {printable(pair.fault)}")
    fail(
        f"stopped by {_signal_name(stopper.signum)} before the copy was through; "
        "run it again to copy the rest",
        128 + stopper.signum,
    )


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str | None, as_json: bool) -> None:
    """What the running daemon is doing."""
    result = _ask(config_path, "status")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from syncd.status_view import render_status

    render_status(result)


@cli.command()
@config_option
@pair_option
@click.option("--force", is_flag=True, help="Let deletions through that a safety guard held back.")
def sync(config_path: str | None, pair: str | None, force: bool) -> None:
    """Ask the running daemon to reconcile now."""
    result = _ask(config_path, "sync", pair=pair, force=force)
    click.echo("sync requested")
    for name in result.get("paused", []) if isinstance(result, dict) else []:
        click.echo(f"  {name} is paused: nothing moves until `syncd resume --pair {name}`")


@cli.command()
@config_option
@pair_option
def pause(config_path: str | None, pair: str | None) -> None:
    """Pause transfers (changes keep being recorded)."""
    _ask(config_path, "pause", pair=pair)
    click.echo(f"paused {pair or 'all pairs'}")


@cli.command()
@config_option
@pair_option
def resume(config_path: str | None, pair: str | None) -> None:
    """Resume paused transfers."""
    _ask(config_path, "resume", pair=pair)
    click.echo(f"resumed {pair or 'all pairs'}")


@cli.command()
@config_option
def retry(config_path: str | None) -> None:
    """Re-queue failed operations now; pairs in error are compared again."""
    result = _ask(config_path, "retry")
    click.echo(f"requeued {result['requeued']} failed operations")
    for name in result.get("compared_again", []):
        click.echo(f"comparing pair {name} again (it was in error)")


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def conflicts(config_path: str | None, as_json: bool) -> None:
    """Conflicts waiting for a decision (read from the state, daemon or not)."""
    from syncd.daemon.daemon import conflict_list

    places = _load_part(config_path, PairsPart)
    result: list[dict[str, Any]] = []
    if _state_is_there(places.state):  # reading must not make an empty state database
        store = _open_state(places.state)
        try:
            result = conflict_list(store, {pair.name for pair in places.pairs})
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not result:
        click.echo("no conflicts")
    for item in [] if as_json else result:
        click.echo(f"{item['pair']}\t{printable(item['path'])}\t{item['reason']}")
    sys.exit(EXIT_ATTENTION if result else 0)


@cli.command(name="log")
@config_option
@pair_option
@click.option("--since", metavar="WHEN", help="Only newer records: 1h, 2d, or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def log_command(
    config_path: str | None, pair: str | None, since: str | None, as_json: bool
) -> None:
    """The audit trail: every upload, download, delete, move, conflict outcome and held
    deletion, oldest first (read from the state, daemon or not)."""
    from syncd import audit

    config = _load_part(config_path, PairsPart)
    if pair is not None and pair not in {p.name for p in config.pairs}:
        fail(f"no pair named {pair!r} in the config", EXIT_USAGE)
    try:
        cutoff = audit.parse_since(since) if since is not None else None
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    records = []
    if _state_is_there(config.state):  # reading must not make an empty state database
        store = _open_state(config.state)
        try:
            records = store.ops(pair, cutoff)
        finally:
            store.close()
    for op in records:
        click.echo(json.dumps(audit.as_json(op)) if as_json else audit.as_line(op))


@cli.command()
@config_option
@click.argument("path")
@click.option("--keep", type=click.Choice(["local", "remote", "both"]), required=True)
@click.pass_context
def resolve(ctx: click.Context, config_path: str | None, path: str, keep: str) -> None:
    """Settle one conflict: keep the local version, the remote one, or both."""
    places = _load_part(config_path, PairsPart)
    recorded: list[tuple[str, str, str, float]] = []
    if _state_is_there(places.state):  # reading must not make an empty state database
        store = _open_state(places.state)
        try:
            recorded = store.conflicts()
        finally:
            store.close()
    found = _find_conflict(places.pairs, recorded, path)
    if found is None:
        if not _daemon_listens(places.socket):
            # Settled here it would need the whole config: a mistake in it is the news
            # (`workers: abc` said "no open conflict" of every path not in the list).
            _load(config_path)
        fail(f"no open conflict for {path!r} (see `syncd conflicts`)", EXIT_USAGE)
    pair, rel = found
    outcome: str | None = None
    try:
        result = request(places.socket, "resolve", pair=pair, path=rel, keep=keep)
        settled, outcome = bool(result["resolved"]), result.get("outcome")
        if result.get("pending"):
            # A big transfer, or retries: the daemon holds the decision until it is done.
            click.echo(f"{pair}/{rel}: keeping {keep}, under way; `syncd status` shows it")
            return
    except DaemonError as exc:
        fail(str(exc), EXIT_USAGE)
    except DaemonNoAnswer as exc:
        fail(str(exc), EXIT_FAILED)  # it has the decision: not settled here as well
    except DaemonUnreachable:
        config = _load(config_path)  # settled here: the engine needs the whole config
        _require_places(config, config_path, EXIT_FAILED)
        _setup_logging(ctx, config)
        try:
            with _lock(config), _open_engine(config) as engine:
                settled = engine.resolve(pair, rel, keep)
                outcome = engine.syncers[pair].resolutions.pop(rel, None)
        except LockUnavailable as exc:
            fail(str(exc), EXIT_FAILED)
    if not settled:
        fail(f"{rel}: {outcome or 'could not be settled yet; see the log'}", EXIT_FAILED)
    click.echo(f"{pair}/{rel}: {outcome or f'kept {keep}'}")


def _find_conflict(
    pairs: list[PairPlace], open_conflicts: list[tuple[str, str, str, float]], given: str
) -> tuple[str, str] | None:
    """Which open conflict PATH names: a path inside a pair's root, or relative to one, or
    PAIR/PATH as `resolve` and `once` print it; None when it names none.

    Compared as NFC, as every path is (conflicts are recorded so): the name as it is on disk,
    which tab completion gives, may be NFD."""
    roots = {p.name: Path(normalize(str(p.local))) for p in pairs}
    absolute = Path(normalize(str(Path(given).absolute())))
    relative = normalize(given).strip("/")
    named_pair, _, in_pair = relative.partition("/")
    matches = [
        (pair, path)
        for pair, path, _, _ in open_conflicts
        # Not one of a pair renamed or removed since (`syncd conflicts` lists none of them).
        if pair in roots
        and (
            path == relative
            or absolute == roots[pair] / path
            or (pair, path) == (named_pair, in_pair)
        )
    ]
    if not matches:
        return None
    here = [(pair, path) for pair, path in matches if absolute == roots[pair] / path]
    if len(matches) > 1 and len(here) == 1:
        return here[0]  # `f.txt` in several pairs, but said from inside one pair's folder
    if len(matches) > 1:
        fail(
            f"{given!r} names several conflicts ("
            + ", ".join(f"{pair}/{path}" for pair, path in matches)
            + "); give the full local path",
            EXIT_USAGE,
        )
    return matches[0]


def _daemon_listens(path: Path) -> bool:
    """Does something accept connections on the control socket? Only a connection is tried,
    nothing asked: a busy daemon may answer slowly."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _state_is_there(url: str) -> bool:
    """Is there a state to read? A SQLite file that does not exist yet is none (no pass ran):
    the commands that only read it say so without creating it."""
    path = state_file(url)
    return path is None or path.exists()


def _open_state(url: str) -> StateStore:
    from syncd.state import StateError, StateStore

    try:
        return StateStore(url)
    except StateError as exc:
        fail(str(exc), EXIT_FAILED)


@cli.command()
@config_option
def check(config_path: str | None) -> None:
    """Validate the config and reach every remote, one line per pair."""
    from syncd import logs

    config = _load(config_path)
    _require_places(config, config_path, EXIT_USAGE, socket=True, metrics=True, writes=False)
    _require_usable_state(config, config_path)
    logs.configure("error", "auto")
    failed = misconfigured = False
    for index, pair in enumerate(config.pairs):
        problem, wrong_config, note = _check_pair(config_path, index, pair)
        failed |= problem is not None
        misconfigured |= wrong_config
        click.echo(
            f"{'FAIL' if problem else 'ok'}\t{pair.name}\t{pair.remote}"
            + (f"\t{problem}" if problem else f"\t{note}" if note else "")
        )
    sys.exit(EXIT_USAGE if misconfigured else EXIT_FAILED if failed else 0)


def _require_usable_state(config: Config, config_path: str | None) -> None:
    """`check`: a state that is there is opened, as `once` and `run` open it: a damaged one
    (`file is not a database`), or one a newer syncd wrote, said `ok` (exit 0), and the
    daemon then would not start (under systemd, a restart loop). Exit 2 naming `state`."""
    from syncd.state import StateError, StateStore

    if not _state_is_there(config.state):
        return  # made at the first pass (its folder was checked)
    try:
        StateStore(config.state).close()
    except StateError as exc:
        fail(_config_words(config_path, "state", str(exc)), EXIT_USAGE)


def _check_pair(
    config_path: str | None, index: int, pair: PairConfig
) -> tuple[str | None, bool, str | None]:
    """What `check` finds of one pair: its problem (None when fine), whether that is a
    config error (exit 2), and a note for a pair that is fine (a bucket it just made)."""
    from syncd.engine.filters import PathFilter
    from syncd.engine.localfs import root_unreadable

    problem = _local_root_problem(Path(pair.local))
    if problem is not None:  # a config error (issue 6), as `once` says it
        key = _local_key(config_path, index)[1]
        return f"{key}: {pair.local} {problem}", True, None
    problem = root_unreadable(Path(pair.local))  # `once`: the pair fails
    if problem is None:
        # A `.syncignore` that cannot be read, or a line of it that is no pattern, fails
        # every pass of the pair: said here, not first by the run.
        problem = PathFilter(pair.exclude, Path(pair.local), include=pair.include).problem
    if problem is not None:
        return problem, False, None
    return _check_remote(index, pair)


def _check_remote(index: int, pair: PairConfig) -> tuple[str | None, bool, str | None]:
    """Reach the pair's remote, as `check` does (see `_check_pair`). With `create_bucket`
    a missing bucket, container or folder is made, as the first run would, and said: a
    typo'd name validated with `check` was made without a word."""
    from syncd.providers import NotFound, open_provider

    try:
        provider = open_provider(pair.remote, pair.options, workers=1)
    except (ProviderError, RemoteURLError) as exc:
        # The remote cannot even be set up (an unknown profile, a credentials file that is
        # no key): a config error, exit 2 as `once` says it.
        problem = str(exc)
        if problem.startswith("options."):  # named as config errors name it
            problem = f"pairs[{index}].{problem}"
        return problem, True, None
    missing = False
    try:
        if getattr(pair.options, "create_bucket", False):
            try:
                provider.probe()
            except NotFound:
                missing = True
        provider.check()
    except ProviderError as exc:
        return str(exc), False, None
    finally:
        provider.close()
    return None, False, "created: it was missing (create_bucket)" if missing else None


@cli.group(no_args_is_help=False)  # a bare `syncd state` is a one-line usage error
def state() -> None:
    """Inspect or reset the sync state."""


@state.command("rebuild")
@config_option
@pair_option
def state_rebuild(config_path: str | None, pair: str | None) -> None:
    """Forget the state: the next pass is a first sync (which deletes nothing)."""
    from syncd.state import StateError, StateStore, move_aside, sqlite_path

    config = _load(config_path)
    names = [p.name for p in config.pairs]
    if pair is not None and pair not in names:
        fail(f"no pair named {pair!r} in the config", EXIT_USAGE)
    _require_places(config, config_path, EXIT_FAILED)
    try:
        with _lock(config):
            try:
                store = StateStore(config.state)
            except StateError as exc:
                db_file = sqlite_path(config.state)
                if not (exc.corrupt or exc.newer) or db_file is None:
                    raise
                if exc.newer:
                    kept = move_aside(db_file, "newer")
                    click.echo(f"the state database was written by a newer syncd; kept as {kept}")
                else:
                    kept = move_aside(db_file)
                    click.echo(f"the state database was unreadable; kept as {kept}")
                pair = None  # a new database knows no pair
                store = StateStore(config.state)
            try:
                # All pairs: those renamed or removed since too (their conflicts, say).
                for name in [pair] if pair else sorted(set(names) | store.known_pairs()):
                    store.forget(name)
            finally:
                store.close()
    except LockUnavailable as exc:
        fail(str(exc), EXIT_FAILED)
    except StateError as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(f"state forgotten for {pair or 'all pairs'}; the next pass is a first sync")


def main() -> None:
    """The console script: the command, then a quick exit (`_leave`)."""
    try:
        cli(prog_name="syncd")  # click's standalone mode always ends in SystemExit
    except SystemExit as done:
        _leave(done.code)
    _leave(0)


def _leave(code: str | int | None) -> NoReturn:
    """Exit without tearing the interpreter down.

    Freeing the modules of the SDKs, SQLAlchemy and pydantic one by one took ~0.1 s at every
    exit, a tenth of a no-op `syncd once`, and served nothing: the state is committed and
    closed by then. What a normal exit does that matters still happens, in its order: it waits
    for any other non-daemon thread (here: exits normally instead), runs the atexit handlers
    (logging's flush among them), and flushes stdout and stderr. Under a profiler or a tracer
    (`python -m cProfile`, pyinstrument, a debugger), which report after the program returns,
    the exit is the normal one.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if (
        not isinstance(code, int | None)
        or any(t.is_alive() and not t.daemon for t in others)
        or sys.getprofile() is not None
        or sys.gettrace() is not None
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code or 0)

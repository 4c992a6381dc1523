"""The typed config: what `syncd.yaml` may say, its defaults, and every rule a value must obey.

Every model forbids unknown keys (a typo must not silently fall back to a default) and is frozen
(the daemon shares one config between threads). Paths are made absolute here, once, so nothing
downstream depends on the directory the daemon happens to run in later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from syncd.config.units import parse_rate, parse_size
from syncd.engine.filters import as_rule, pattern_problem
from syncd.providers.options import OPTIONS_BY_SCHEME, ConfigBool, FileOptions, served_by
from syncd.providers.url import RemoteURL, RemoteURLError, parse_remote_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
MIN_PART_SIZE = 5 * MiB  # S3 refuses a multipart part smaller than this (except the last)
MAX_PART_SIZE = 5 * GiB  # and a part larger than this (GCS alike; Azure caps its blocks lower)
MAX_THRESHOLD = 5 * TiB  # the largest object S3 and GCS store: above it "never multipart"
MAX_RATE = 10**12  # 1 TB/s: no link is faster, and the token bucket's arithmetic stays finite
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MAX_DAYS = 3650  # ten years, for the day counts (trash, operation log)
MAX_ATTEMPTS = 1000
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of which is the terminating NUL

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
Direction = Literal["both", "upload", "download"]
ConflictStrategy = Literal[
    "timestamp_wins", "local_wins", "cloud_wins", "manual", "version_preserve"
]

_PAIR_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _invalid(kind: str, reason: str) -> PydanticCustomError:
    """A validation error whose message is exactly `reason` (one line, no pydantic prefix)."""
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


def _invalid_at(key: str, kind: str, reason: str) -> PydanticCustomError:
    """`_invalid`, for a rule across keys (checked on the whole model) that is one key's fault:
    the loader reports it at `key` (`at_key`), not at the top of the file."""
    return PydanticCustomError(kind, "{reason}", {"reason": reason, "at_key": key})


# -- defaults --------------------------------------------------------------------------------


def _xdg_dir(variable: str, fallback: str) -> Path:
    """An XDG base directory; the spec says a relative value must be ignored."""
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path(os.path.expanduser(fallback))


def default_state_url() -> str:
    """`sqlite:///$XDG_STATE_HOME/syncd/state.db`, read from the environment at call time."""
    return f"sqlite:///{_xdg_dir('XDG_STATE_HOME', '~/.local/state') / 'syncd' / 'state.db'}"


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/syncd/syncd.sock`, or `/tmp/syncd-<uid>/syncd.sock` without one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "syncd" / "syncd.sock"
    # A fixed short path rather than tempfile.gettempdir(): $TMPDIR can be long enough to break
    # the AF_UNIX limit, and the per-user folder keeps users apart (the daemon makes it 0700).
    return Path(f"/tmp/syncd-{os.getuid()}") / "syncd.sock"  # noqa: S108


# -- reusable field types --------------------------------------------------------------------


def _no_bool(value: object) -> object:
    """YAML reads `yes`/`on` as true; as a number that is a typo, not 1."""
    if isinstance(value, bool):
        raise _invalid("number_type", "must be a number, not true/false")
    return value


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise _invalid("size", str(exc)) from None


def _rate(value: object) -> int | None:
    if value is None:
        return None
    try:
        rate = parse_rate(value)
    except ValueError as exc:
        raise _invalid("rate", str(exc)) from None
    if rate == 0:
        return None  # no limit, as rclone's --bwlimit 0 and Syncthing's maxSendKbps 0 say
    if rate > MAX_RATE:
        raise _invalid("too_large", "must be at most 1TB/s (leave the key out for no limit)")
    return rate


def _at_most(limit: float, shown: str) -> AfterValidator:
    """An upper bound, said in words (`604800 seconds (a week)`). Every number in the config
    has one: `.inf` or `1e308` would pass a lower bound only to overflow a timer, a timedelta or
    a float conversion later, in a running daemon; no sensible setting comes near it."""

    def check(value: float) -> float:
        if value > limit:  # NaN is not greater: its lower bound refuses it
            got = repr(value)
            got = got if len(got) <= 24 else got[:21] + "..."
            raise _invalid("too_large", f"must be at most {shown} (got {got})")
        return value

    return AfterValidator(check)


def _absolute_path(value: object) -> object:
    """Expand `~` and anchor a relative path at the current directory; other types pass through
    so that pydantic reports them as the wrong type."""
    if not isinstance(value, str | os.PathLike):
        return value
    text = os.fsdecode(os.fspath(value))
    if not text.strip():
        raise _invalid("path", "must not be empty")
    if "\0" in text:
        raise _invalid("path", "must not contain a NUL character")
    return Path(os.path.abspath(os.path.expanduser(text)))


def _pair_name(value: str) -> str:
    if not _PAIR_NAME.fullmatch(value):
        raise _invalid(
            "pair_name", f"must be 1-64 letters, digits, '.', '_' or '-' (got {value[:80]!r})"
        )
    return value


def _absolute_state(value: str) -> str:
    """Anchor a relative SQLite file at the current directory, so `sqlite:///./x.db` means
    the same file whatever directory the daemon later runs in. (SQLAlchemy is imported
    here, not with the module: `syncd status` and the other control commands read the
    config's socket only, and start faster without it.)"""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        # Not echoed: a database URL may carry a password.
        raise _invalid(
            "state_url", "not a database URL (e.g. sqlite:////var/lib/syncd/state.db)"
        ) from None
    _require_driver(url)
    _check_sqlite_query(url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database:
        return value
    if database == ":memory:" or database.startswith("file:"):
        return value  # in-memory, or SQLite's own URI syntax: leave it alone
    expanded = os.path.expanduser(database)
    if os.path.isabs(expanded) and expanded == database:
        return value
    absolute = url.set(database=os.path.abspath(expanded))
    return absolute.render_as_string(hide_password=False)


def _short_socket(value: Path) -> Path:
    size = len(os.fsencode(str(value)))
    if size > SOCKET_PATH_MAX:
        raise _invalid(
            "socket_too_long",
            f"{value} is {size} bytes long; a Unix socket path may have at most "
            f"{SOCKET_PATH_MAX}: choose a shorter path",
        )
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
Seconds = Annotated[Float, _at_most(WEEK, f"{WEEK} seconds (a week)")]
Days = Annotated[Int, _at_most(MAX_DAYS, f"{MAX_DAYS} days (ten years)")]
Size = Annotated[int, BeforeValidator(_size)]
Rate = Annotated[int | None, BeforeValidator(_rate)]
AbsolutePath = Annotated[Path, BeforeValidator(_absolute_path)]


def _pattern(value: str) -> str:
    problem = pattern_problem(as_rule(value))
    if problem is not None:
        raise _invalid("pattern", problem)
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]
# Types, not validators of Config: the parts read alone (end of this module) obey them too.
PairName = Annotated[str, AfterValidator(_pair_name)]
StateURL = Annotated[str, AfterValidator(_absolute_state)]
SocketPath = Annotated[Path, BeforeValidator(_absolute_path), AfterValidator(_short_socket)]


class _Model(BaseModel):
    # hide_input_in_errors: pydantic's own text would otherwise echo values, secrets included.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# -- sections --------------------------------------------------------------------------------


class LogConfig(_Model):
    """`log:` — verbosity and output format (`auto`: console on a terminal, JSON otherwise)."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


class RetryConfig(_Model):
    """`retry:` — how often and for how long a failing operation is retried before it is
    reported as failed."""

    attempts: Annotated[Int, _at_most(MAX_ATTEMPTS, str(MAX_ATTEMPTS))] = Field(default=8, ge=1)
    max_seconds: Annotated[Float, _at_most(DAY, f"{DAY} seconds (a day)")] = Field(
        default=300.0, gt=0
    )


class MetricsConfig(_Model):
    """`metrics:` — where the optional Prometheus endpoint listens, as `HOST:PORT`
    (`[::1]:9464` for IPv6)."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host:
        raise _invalid("listen", f"must be HOST:PORT, e.g. 127.0.0.1:9464 (got {value!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _invalid("listen", f"an IPv6 address needs brackets, e.g. [::1]:9464 (got {value!r})")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _invalid("listen", f"must be HOST:PORT with a port 1-65535 (got {value!r})")
    return host, int(port)


# -- pairs -----------------------------------------------------------------------------------


class PairConfig(_Model):
    """One local folder kept in sync with one remote.

    `remote` keeps the string as written (it is what status shows); `remote_url` is the parsed
    form. `options` is the model of the remote's scheme (`S3Options` for `s3://`, …), so an
    option the scheme does not know is an error naming it.
    """

    # Field order matters: `options` is validated after `remote` and reads its scheme.
    name: PairName
    local: AbsolutePath
    remote: str
    options: SerializeAsAny[BaseModel] = Field(default=None, validate_default=True)
    direction: Direction = "both"
    conflict: ConflictStrategy = "timestamp_wins"
    poll_interval: Seconds = Field(default=30.0, gt=0)
    settle: Annotated[Float, _at_most(HOUR, f"{HOUR} seconds (an hour)")] = Field(default=0.5, ge=0)
    max_delete: Float = Field(default=50.0, ge=0, le=100)
    exclude: list[Pattern] = Field(default_factory=list)
    #: When given, only paths matching one of these sync (exclude still wins).
    include: list[Pattern] = Field(default_factory=list)
    trash_days: Days = Field(default=30, ge=0)
    #: Strict: pydantic's lax mode took `1` and the string "true" as true; only YAML's own
    #: true/false are.
    remote_trash: ConfigBool = True

    @property
    def remote_url(self) -> RemoteURL:
        """The parsed remote (validated at load time, so this cannot fail)."""
        return parse_remote_url(self.remote)

    @field_validator("remote")
    @classmethod
    def _check_remote(cls, value: str) -> str:
        try:
            parse_remote_url(value)
        except RemoteURLError as exc:
            raise _invalid("remote_url", str(exc)) from None
        return value

    @field_validator("options", mode="plain")
    @classmethod
    def _scheme_options(cls, value: object, info: ValidationInfo) -> BaseModel:
        remote = info.data.get("remote")
        if not isinstance(remote, str):
            # The remote is missing or invalid and that error is the one to read; whatever is
            # returned here is discarded because validation fails anyway.
            return FileOptions()
        scheme = parse_remote_url(remote).scheme
        model = OPTIONS_BY_SCHEME.get(scheme)
        if model is None:
            raise _invalid("options_scheme", f"{scheme}:// remotes take no options yet")
        if value is None:
            value = {}
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            raise _invalid(
                "options_type", f"{type(value).__name__} does not apply to {scheme}:// remotes"
            )
        if not isinstance(value, Mapping):
            raise _invalid("options_type", "must be a mapping (key: value)")
        try:
            return model.model_validate(dict(value))
        except ValidationError as exc:
            raise _option_error(exc) from None


def _option_error(exc: ValidationError) -> PydanticCustomError:
    """Lift the first error inside `options` (an unknown key before any other) into the pair's
    error, keeping where it happened (`inner_loc`) and what kind it is, but never the value:
    options hold credentials."""
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    # A typo'd key first: `secret_acess_key` is also why `secret_access_key` is "missing".
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    inner_loc = tuple(first["loc"])
    key = ".".join(str(part) for part in inner_loc)
    context = {name: str(item) for name, item in first.get("ctx", {}).items()}
    return PydanticCustomError(
        "option_invalid",
        "{key}: {reason}",
        {
            "key": key,
            "reason": first["msg"],
            "inner_type": first["type"],
            "inner_loc": inner_loc,
            "inner_ctx": context,
        },
    )


#: Query parameters SQLAlchemy's SQLite driver takes itself; any other one it drops, unless
#: `uri=true` hands the rest to SQLite (which then reads them only from a `file:` name).
_SQLITE_DRIVER_PARAMETERS = frozenset(
    ("uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements")
)


def _check_sqlite_query(url: URL) -> None:
    """A SQLite state URL's query parameters must all take effect. `?mode=ro` was dropped
    silently (the database opened read-write) but for SQLAlchemy's warning, which reached stderr
    as a raw Python warning with a source line. With `uri=true` on a plain path, SQLite made a
    file literally named `state.db?mode=ro`. Only parameter names are shown, never the URL."""
    if url.get_backend_name() != "sqlite" or not url.query:
        return
    _check_driver_values(url)  # first: `uri=maybe` is said as not valid, not as ignored
    extra = sorted(set(url.query) - _SQLITE_DRIVER_PARAMETERS)
    # With SQLite's own URI (`file:` name, uri on) the other parameters are SQLite's.
    if extra and not (sqlite_uri(url) and (url.database or "").startswith("file:")):
        names = ", ".join(repr(name) for name in extra)
        raise _invalid(
            "state_query",
            f"query parameter {names} would be ignored; SQLite's own parameters need its URI "
            "form, e.g. sqlite:///file:/var/lib/syncd/state.db?mode=rwc&uri=true",
        )


def sqlite_uri(url: URL) -> bool:
    """Does SQLAlchemy hand this SQLite URL to SQLite as a URI? It reads `uri=` as it reads
    any boolean (`asbool`: true, yes, on, y, t, 1, any case): only `true` and `1` counted
    here, and `?mode=rwc&uri=yes`, honoured by the driver, was refused."""
    from sqlalchemy.util import asbool

    value = url.query.get("uri")
    try:
        return value is not None and asbool(value)
    except ValueError:  # not a boolean: `_check_driver_values` says so
        return False


def _check_driver_values(url: URL) -> None:
    """`?timeout=abc` is a ValueError when the state is opened: found here, not as a traceback.
    (The dialect only builds its connect arguments; nothing connects.)"""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            url.get_dialect()().create_connect_args(url)
    except (TypeError, ValueError) as exc:
        raise _invalid("state_query", f"a query parameter is not valid ({exc})") from None


def _require_driver(url: URL) -> None:
    """A state URL SQLAlchemy has no dialect for, or whose database driver (DBAPI module) is
    not installed, is a config error found here, not a traceback when the state is opened.
    Only imports (the driver would be imported to open the state anyway); nothing connects,
    so a database server that is down is not a config error. The messages name the dialect,
    never the URL: it may carry a password."""
    from sqlalchemy.exc import NoSuchModuleError

    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        what = "driver" if "+" in url.drivername else "dialect"
        raise _invalid("state_dialect", f"unknown database {what} {url.drivername!r}") from None
    except ImportError as exc:
        raise _invalid(
            "state_dialect", f"the SQLAlchemy dialect {url.drivername!r} cannot be loaded ({exc})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise _invalid(
            "state_driver",
            f"the SQLAlchemy driver for {url.get_backend_name()} is not installed ({exc})",
        ) from None


# -- the whole file --------------------------------------------------------------------------


class Config(_Model):
    """A whole `syncd.yaml`. Only `pairs` (with each pair's name, local and remote) is
    required; everything else has a default that works on a single machine."""

    state: StateURL = Field(default_factory=default_state_url, validate_default=True)
    socket: SocketPath = Field(default_factory=default_socket_path, validate_default=True)
    workers: Int = Field(default=8, ge=1, le=256)
    log: LogConfig = Field(default_factory=LogConfig)
    bandwidth_limit: Rate = None
    upload_limit: Rate = None
    download_limit: Rate = None
    multipart_threshold: Annotated[Size, _at_most(MAX_THRESHOLD, "5TiB")] = Field(
        default=64 * MiB, gt=0
    )
    part_size: Size = 16 * MiB
    part_concurrency: Int = Field(default=4, ge=1, le=64)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    metrics: MetricsConfig | None = None
    #: Operation-log records older than this many days are pruned (0: keep for ever).
    log_retention_days: Days = Field(default=90, ge=0)
    pairs: list[PairConfig] = Field(default_factory=list, validate_default=True)

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: int) -> int:
        if value < MIN_PART_SIZE:
            raise _invalid(
                "part_size", f"must be at least 5MiB, the smallest multipart part (got {value})"
            )
        if value > MAX_PART_SIZE:
            raise _invalid(
                "part_size", f"must be at most 5GiB, the largest multipart part (got {value})"
            )
        return value

    @field_validator("pairs")
    @classmethod
    def _check_pairs(cls, pairs: list[PairConfig]) -> list[PairConfig]:
        if not pairs:
            raise _invalid("no_pairs", "at least one pair is required")
        _check_unique_names(pairs)
        _check_disjoint_folders(pairs)
        return pairs

    @model_validator(mode="after")
    def _check_state_outside_pairs(self) -> Config:
        _check_state_outside(self.state, self.pairs)
        return self


def _check_unique_names(pairs: list[PairConfig]) -> None:
    first_index: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        if pair.name in first_index:
            raise _invalid(
                "duplicate_pair",
                f"pairs[{first_index[pair.name]}] and pairs[{index}] are both named {pair.name!r}",
            )
        first_index[pair.name] = index


def _check_disjoint_folders(pairs: list[PairConfig]) -> None:
    """Two pairs sharing files would sync each other's changes back and forth, and so would a
    file:// remote inside a local root (or around it)."""
    roots = [(f"pairs[{i}].local", Path(os.path.realpath(p.local))) for i, p in enumerate(pairs)]
    for i, (label, root) in enumerate(roots):
        for other_label, other in roots[i + 1 :]:
            _refuse_overlap(label, root, other_label, other)
    for i, pair in enumerate(pairs):
        url = pair.remote_url
        if url.scheme != "file":
            continue
        remote = Path(os.path.realpath(url.path))
        for label, root in roots:
            _refuse_overlap(f"pairs[{i}].remote", remote, label, root)
    _check_disjoint_remotes(pairs)


def _check_disjoint_remotes(pairs: list[PairConfig]) -> None:
    """Two pairs on one remote folder, or one inside the other's (a prefix under another's on
    the same bucket and service), would each sync the other's files, its trash included."""
    for i, pair in enumerate(pairs):
        url = pair.remote_url
        for j in range(i + 1, len(pairs)):
            other = pairs[j].remote_url
            if url.scheme != other.scheme:
                continue
            if url.scheme == "file":
                _refuse_overlap(
                    f"pairs[{i}].remote",
                    Path(os.path.realpath(url.path)),
                    f"pairs[{j}].remote",
                    Path(os.path.realpath(other.path)),
                )
                continue
            if url.bucket != other.bucket or _server(pair) != _server(pairs[j]):
                continue  # another bucket, or the same name on another server
            if url.prefix == other.prefix:
                reason = f"pairs[{i}].remote and pairs[{j}].remote are the same remote ({url})"
            elif other.prefix.startswith(url.prefix):
                reason = f"pairs[{j}].remote ({other}) is inside pairs[{i}].remote ({url})"
            elif url.prefix.startswith(other.prefix):
                reason = f"pairs[{i}].remote ({url}) is inside pairs[{j}].remote ({other})"
            else:
                continue
            raise _invalid("overlapping_remotes", reason)


def _server(pair: PairConfig) -> tuple[str | None, str | None]:
    """The server a bucket pair is on, as its SDK resolves it (option, else environment) and
    spelled one way (`served_by`): `http://H:9000/` and `HTTP://h:9000`, or an option and
    AWS_ENDPOINT_URL naming it, are one server. Without an endpoint, an S3 pair's `profile`
    may name one in the AWS config files: another profile is taken for another server."""
    server = served_by(pair.options)
    profile = getattr(pair.options, "profile", None) if server is None else None
    return server, profile


def _refuse_overlap(label: str, path: Path, other_label: str, other: Path) -> None:
    if path == other:
        reason = f"{label} and {other_label} are the same folder ({path})"
    elif path.is_relative_to(other):
        reason = f"{label} ({path}) is inside {other_label} ({other})"
    elif other.is_relative_to(path):
        reason = f"{other_label} ({other}) is inside {label} ({path})"
    else:
        return
    raise _invalid("overlapping_folders", reason)


def state_file(url: str) -> Path | None:
    """The file a SQLite state URL names (its `-wal`, `-shm`, `-journal` and the instance
    `.lock` lie beside it), or None: in memory, or not SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # SQLite's URI form: file:/path/x.db?mode=...
        # %-decoded, as SQLite decodes it: `file:/my%20dir/x.db` is in `/my dir`.
        database = unquote(urlsplit(database).path)
        if not database.startswith("/"):
            return None  # file::memory:, or relative to wherever SQLite is opened
    return Path(database)


def state_read_only(url: str) -> str | None:
    """The query parameter that has SQLite open this state read-only (`mode=ro`, or
    `immutable=1`), or None. Such a state serves the commands that only read it (`check`,
    `conflicts`, `log`, a dry run); those that write it refuse it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.util import asbool

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database.startswith("file:"):
        return None
    if not sqlite_uri(parsed):
        return None  # not SQLite's URI: its parameters are refused when the config loads
    if parsed.query.get("mode") == "ro":
        return "mode=ro"
    immutable = parsed.query.get("immutable")
    try:
        on = isinstance(immutable, str) and asbool(immutable)
    except ValueError:  # SQLite reads it as off
        on = False
    return f"immutable={immutable}" if on else None


def _check_state_outside(state: str, pairs: list[PairConfig]) -> None:
    """The state database inside a pair's local root, or a file:// remote's folder, would be
    synced: uploaded at every pass (it changes at every pass), and replaced under the running
    daemon by a download of another machine's. Its WAL, shared memory and lock files too."""
    db = state_file(state)
    if db is None:
        return
    real = Path(os.path.realpath(db))
    for i, pair in enumerate(pairs):
        roots = [(f"pairs[{i}].local", pair.local)]
        if pair.remote_url.scheme == "file":
            roots.append((f"pairs[{i}].remote", Path(pair.remote_url.path)))
        for label, root in roots:
            resolved = Path(os.path.realpath(root))
            if real.is_relative_to(resolved):
                raise _invalid_at(
                    "state",
                    "state_inside_pair",
                    f"the state database {real} is inside {label} ({resolved}): it would be "
                    "synced; keep it outside every pair's folders",
                )


# -- parts of the file, read alone ------------------------------------------------------------


class _Part(BaseModel):
    """The few keys a command reads when it needs no more (`loader.load_config_part`): the
    rest of the file, and the `${VAR}`s in it, stay unread. The keys obey the same rules as in
    `Config`; other keys are the full load's business."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)


class SocketPart(_Part):
    """What a command that only asks the running daemon needs: where it listens. Operators'
    shells lack the service's secret variables, and the daemon has them already."""

    socket: SocketPath = Field(default_factory=default_socket_path, validate_default=True)


class StatePart(_Part):
    """What reading the state database needs (`syncd conflicts`)."""

    state: StateURL = Field(default_factory=default_state_url, validate_default=True)


class PairPlace(_Part):
    """A pair's name and local root: enough to tell which pair a path belongs to."""

    name: PairName
    local: AbsolutePath


class PairsPart(SocketPart, StatePart):
    """The state, the socket, and each pair's name and root: what `syncd resolve` needs to
    settle a conflict through the daemon, and `syncd log` to read the audit trail."""

    pairs: list[PairPlace] = Field(default_factory=list)

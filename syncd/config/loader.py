"""Reading `syncd.yaml`: find it, parse it, substitute `${VAR}`, validate it, and turn every
failure into one line that names the file and the key.

The CLI prints `str(ConfigError)` and exits 2, so this module is where a user learns what is
wrong with their config; nothing here may leak a traceback, pydantic's multi-line report, or the
value of an option (options hold credentials).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from syncd.config.model import Config
from syncd.providers.options import OPTIONS_BY_SCHEME
from syncd.providers.url import RemoteURLError, parse_remote_url

Loc = tuple[str | int, ...]
PartT = TypeVar("PartT", bound=BaseModel)


class ConfigError(Exception):
    """The config cannot be used. `str()` is one line: `SOURCE: [line N: ][KEY: ]PROBLEM`."""

    def __init__(
        self, source: str, problem: str, key: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(source, problem, key, line)
        self.source = source
        self.problem = " ".join(problem.split())  # one line, whatever the cause said
        # A key is the user's own text: a newline or tab in it is shown escaped, not obeyed.
        self.key = "".join(c if c.isprintable() else repr(c)[1:-1] for c in key) if key else key
        self.line = line

    def __str__(self) -> str:
        parts = [self.source]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.key:
            parts.append(self.key)
        parts.append(self.problem)
        return ": ".join(parts)


# -- finding the file ------------------------------------------------------------------------


def resolve_config_path(explicit: str | None) -> Path | None:
    """The config to use: `-c` if given, else `$SYNCD_CONFIG`, else
    `$XDG_CONFIG_HOME/syncd/syncd.yaml` when it is a file; None when there is none (the
    SYNCD_* variables' config, or none at all).

    An explicit or `$SYNCD_CONFIG` path is returned even if missing, so that loading it reports
    "no such file" instead of silently falling back to another config. Anything else at the
    default path (a folder, a dangling link) is no config file, and so does not shadow the
    environment's config (README): Docker makes that folder when it bind-mounts a host file
    that is not there. With no SYNCD_LOCAL nor SYNCD_REMOTE set, it is returned, so loading it
    says what is wrong, where skipping it told the user to create what was already there.
    """
    if explicit:
        return Path(os.path.expanduser(explicit))
    from_env = os.environ.get("SYNCD_CONFIG", "")
    if from_env:
        return Path(os.path.expanduser(from_env))
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    if not config_home or not os.path.isabs(config_home):  # XDG: ignore relative values
        config_home = os.path.expanduser("~/.config")
    candidate = Path(config_home) / "syncd" / "syncd.yaml"
    if os.path.isfile(candidate):
        return candidate
    if os.environ.get("SYNCD_LOCAL") or os.environ.get("SYNCD_REMOTE"):
        return None  # the environment's config (or the one line saying which half is missing)
    return candidate if os.path.lexists(candidate) else None


# -- loading ---------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read, substitute and validate the YAML config at `path`."""
    return load_config_dict(_read_document(path), str(path))


def load_config_part(path: Path, part: type[PartT]) -> PartT:
    """Only the keys `part` models (`SocketPart`, …) of the YAML config at `path`, read,
    substituted and validated as `load_config` would; every other key is left unread, so an
    unset `${VAR}` there is no error. Commands that only ask the running daemon read just its
    socket: the service's secret variables are rarely in an operator's shell."""
    source = str(path)
    document = _pick(_read_document(path), part, (), os.environ, source)
    try:
        return part.model_validate(document)
    except ValidationError as exc:
        raise _translate(exc, source, document) from None


def _read_document(path: Path) -> Mapping[str, Any]:
    """The YAML mapping at `path`, not yet substituted nor validated."""
    source = str(path)
    raw = _read_config_bytes(path, source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, f"is not UTF-8 text (byte {exc.start})") from None
    data = _parse_yaml(text, source)
    _check_shape(data, source)
    if data is None:
        raise ConfigError(source, "file is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(source, f"must be a mapping of keys (got {_kind(data)})")
    return data


#: A real config is a few kilobytes; the largest sensible one is far below this. Without a cap,
#: `-c /dev/zero` filled memory, and a 50 MB file of comments took seconds to parse at every
#: command.
MAX_BYTES = 1024 * 1024


def _read_config_bytes(path: Path, source: str) -> bytes:
    """The bytes of the regular file (or pipe) at `path`, at most `MAX_BYTES` of them.

    Anything else is refused before it is read: `/dev/zero` streamed without end. The file is
    looked at first (nothing is opened that is not a file or a pipe, since opening a device
    can act on it), then opened without blocking and looked at again, in case it was swapped
    in between. A pipe (`-c <(envsubst < tpl)`, `-c /dev/stdin`) is read to its end; one with
    no writer reads as empty at once (a blocking open() of a FIFO waited for ever)."""
    try:
        _refuse_irregular(os.stat(path).st_mode, source)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(source, "no such file") from None
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        try:
            info = os.fstat(fd)
            _refuse_irregular(info.st_mode, source)
            if stat.S_ISFIFO(info.st_mode):
                os.set_blocking(fd, True)  # a writer's bytes may still be on their way
            raw = file.read(MAX_BYTES + 1) if info.st_size <= MAX_BYTES else b""
        except OSError as exc:
            raise ConfigError(source, f"cannot read: {exc.strerror or exc}") from None
    if info.st_size > MAX_BYTES or len(raw) > MAX_BYTES:
        raise ConfigError(
            source, f"is larger than {MAX_BYTES // 1024 // 1024} MiB, too large for a config file"
        )
    return raw


def _refuse_irregular(mode: int, source: str) -> None:
    if stat.S_ISDIR(mode):
        raise ConfigError(source, "is a directory, not a config file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise ConfigError(source, f"is not a regular file (it is {_file_kind(mode)})")


def _file_kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def load_config_dict(
    data: Mapping[str, Any], source: str = "<dict>", *, expand_env: bool = True
) -> Config:
    """Validate an already-parsed config, with the same `${VAR}` substitution and error
    messages as a file, so the Python API and the YAML file cannot drift apart."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, f"must be a mapping of keys (got {_kind(data)})")
    _check_shape(data, source)
    document = _substitute(data, (), os.environ, source) if expand_env else data
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        raise _translate(exc, source, document) from None


# -- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML would keep the last one
    silently, and the user would edit the first one wondering why nothing changes."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` may legitimately be overridden
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; the constructor reports it properly below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    yield from loader.construct_yaml_map(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(source, f"invalid YAML: nested deeper than {MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "cannot be parsed"
        line = mark.line + 1 if mark is not None else None
        hint = _quoting_hint(text, exc)
        raise ConfigError(source, f"invalid YAML: {reason}{hint}", line=line) from None
    except yaml.YAMLError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot be parsed"
        raise ConfigError(source, f"invalid YAML: {first_line}") from None


def _quoting_hint(text: str, exc: yaml.MarkedYAMLError) -> str:
    """A hint when a `${VAR}` is on a line the parser complains about: in a flow collection
    (`options: {k: ${V}}`, the contract's own style) `{` and `}` are YAML syntax, and the
    error alone (`expected ',' or '}', but got '{'`) does not say that quotes fix it."""
    if isinstance(exc, yaml.constructor.ConstructorError):  # parsed fine: not about syntax
        return ""
    lines = text.splitlines()
    for mark in (exc.problem_mark, exc.context_mark):
        if mark is not None and mark.line < len(lines) and "${" in lines[mark.line]:
            return ' (a ${...} inside {...} or [...] needs quotes: "${VAR}")'
    return ""


MAX_DEPTH = 32
MAX_VALUES = 100_000


def _check_shape(data: object, source: str) -> None:
    """Refuse a document that is not a finite, modest tree before anything walks it, and a
    NUL character in any of its strings.

    YAML aliases share one object: `x: &a [*a]` is a list that holds itself, and ten levels of
    ten aliases each (a "billion laughs") are a few hundred bytes that expand to 10^10 values.
    Every later step (substitution, validation, a reload in the running daemon) walks the
    document as a tree, so either would hang or die with a RecursionError traceback. A real
    config is a few levels deep and a few hundred values long; the collection that goes past
    the count is named, as is a string holding a NUL (Python's own "embedded null byte" named
    neither the key nor the problem).
    """
    budget = MAX_VALUES
    seen: set[int] = set()
    shared = False  # a collection reached twice: aliases at work
    stack: list[tuple[object, Loc, frozenset[int]]] = [(data, (), frozenset())]
    while stack:
        node, loc, parents = stack.pop()
        if isinstance(node, str) and "\0" in node:
            raise ConfigError(
                source, "must not contain a NUL character", key=format_loc(loc) or None
            )
        if not isinstance(node, Mapping | list | tuple):
            continue
        if id(node) in parents:
            raise ConfigError(source, "invalid YAML: an alias refers to a collection holding it")
        if len(loc) >= MAX_DEPTH:
            raise ConfigError(source, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        shared = shared or id(node) in seen
        seen.add(id(node))
        items: list[tuple[str | int, object]] = (
            [(str(key), value) for key, value in node.items()]
            if isinstance(node, Mapping)
            else list(enumerate(node))
        )
        budget -= len(items)
        if budget < 0:
            _refuse_too_many(source, loc, shared=shared)
        inner = parents | {id(node)}
        stack.extend((child, (*loc, key), inner) for key, child in items)


def _refuse_too_many(source: str, loc: Loc, *, shared: bool) -> NoReturn:
    """Too many values; a count that aliases multiplied is no one key's fault."""
    if shared:
        raise ConfigError(
            source, f"invalid YAML: expands to more than {MAX_VALUES} values through aliases"
        )
    raise ConfigError(
        source,
        f"too many values: a config file holds at most {MAX_VALUES} in all",
        key=format_loc(loc) or None,
    )


# -- ${VAR} substitution ---------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<close>\}?)")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _SubstitutionError(Exception):
    pass


def _substitute(node: object, loc: Loc, env: Mapping[str, str], source: str) -> Any:
    """Substitute `${VAR}` / `${VAR:default}` in every string scalar (never in keys).

    Done after parsing, not on the raw text, so a value containing `:`, `#` or quotes cannot
    change the structure of the document.
    """
    if isinstance(node, str):
        try:
            return _expand(node, env)
        except _SubstitutionError as exc:
            raise ConfigError(source, str(exc), key=format_loc(loc) or None) from None
    if isinstance(node, Mapping):
        return {
            str(key): _substitute(value, (*loc, str(key)), env, source)
            for key, value in node.items()
        }
    if isinstance(node, list | tuple):
        return [_substitute(item, (*loc, index), env, source) for index, item in enumerate(node)]
    return node


def _pick(
    node: object, model: type[BaseModel], loc: Loc, env: Mapping[str, str], source: str
) -> Any:
    """The keys of `node` that `model` reads, substituted; the others are dropped unread."""
    if not isinstance(node, Mapping):
        return node  # validation names what is wrong with it
    picked: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        if key not in node:
            continue
        value, where, inner = node[key], (*loc, key), _model_in(field.annotation)
        if inner is None:
            picked[key] = _substitute(value, where, env, source)
        elif isinstance(value, list):
            picked[key] = [
                _pick(item, inner, (*where, index), env, source) for index, item in enumerate(value)
            ]
        else:
            picked[key] = _pick(value, inner, where, env, source)
    return picked


def _expand(value: str, env: Mapping[str, str]) -> str:
    """One pass: a substituted value is not expanded again, and `$${` yields a literal `${`.
    A default is used only when the variable is unset (an empty value is a value). The
    shell's `${VAR:-default}` is understood too, as the shell means it (unset or empty): it
    gave the value `-default` where a user's habit put it. A reference in a default
    (`${A:${B:x}}`) is refused: the first `}` ends the outer one, and the value was the
    literal rest of the text."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match["body"]
        if not match["close"]:
            raise _SubstitutionError("unterminated ${ (write $${ for a literal ${)")
        name, has_default, default = body.partition(":")
        if not _VARIABLE.fullmatch(name):
            raise _SubstitutionError(
                f"${{{body}}} is not a variable reference (write $${{ for a literal ${{)"
            )
        if "${" in default:  # `${A:${B}}`: the inner `}` closed the outer one
            raise _SubstitutionError(
                f"${{{name}:...}}: nested ${{...}} is not supported (a default is plain text)"
            )
        if default.startswith("-"):  # ${VAR:-default}
            return env.get(name) or default[1:]
        if name in env:
            return env[name]
        if has_default:
            return default
        raise _SubstitutionError(f"${{{name}}} is not set and has no default")

    return _REFERENCE.sub(replace, value)


# -- pydantic errors -> one line -------------------------------------------------------------

_TYPE_REASONS = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "path_type": "must be a path",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}
# Where "(got VALUE)" helps and cannot leak: type, choice and range errors outside secrets.
_SHOW_INPUT = {"literal_error", *_TYPE_REASONS, *_BOUNDS}


def format_loc(loc: Loc) -> str:
    """`('pairs', 0, 'conflict')` -> `pairs[0].conflict`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _translate(exc: ValidationError, source: str, document: Mapping[str, Any]) -> ConfigError:
    """The first error, in words. A typo'd key is reported before anything else: it usually
    explains the rest (`nmae` is also why `name` is missing)."""
    errors = [_lift_option_error(error) for error in exc.errors(include_url=False)]
    errors.sort(key=lambda error: error["type"] != "extra_forbidden")  # stable
    error = errors[0]
    loc: Loc = tuple(error["loc"])
    return ConfigError(source, _reason(error, loc, document), key=format_loc(loc) or None)


def _lift_option_error(error: Any) -> dict[str, Any]:
    """Unwrap the error the pair raised for its `options` into one located at the option, and
    place a rule across keys at the key it names (`at_key`)."""
    if "at_key" in (error.get("ctx") or {}):
        return {**error, "loc": (error["ctx"]["at_key"],)}
    if error["type"] != "option_invalid":
        return dict(error)
    ctx = error["ctx"]
    return {
        "type": ctx["inner_type"],
        "loc": (*error["loc"], *ctx["inner_loc"]),
        "msg": ctx["reason"],
        "ctx": ctx["inner_ctx"],
    }


def _reason(error: Mapping[str, Any], loc: Loc, document: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(loc, document)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        reason = f"must be one of {', '.join(choices)}"
    elif kind in _TYPE_REASONS:
        reason = _TYPE_REASONS[kind]
    elif kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        reason = f"{words} {_number(ctx.get(bound))}"
    elif kind in ("value_error", "assertion_error") and "error" in ctx:
        reason = str(ctx["error"])
    else:
        reason = str(error["msg"])
    if kind in _SHOW_INPUT and "input" in error and _may_show(loc):
        shown = _short(error["input"])
        if shown is not None:
            reason += f" (got {shown})"
    return reason


def _may_show(loc: Loc) -> bool:
    """Option values may be credentials and a database URL may carry a password."""
    return "options" not in loc and loc[:1] != ("state",)


def _short(value: object) -> str | None:
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return None


def _suggestion(loc: Loc, document: Mapping[str, Any]) -> str:
    """` (did you mean 'name'?)` when the unknown key is close to a known one."""
    keys = _known_keys(loc[:-1], document)
    if not keys or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], keys, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(parent: Loc, document: Mapping[str, Any]) -> list[str]:
    """The keys allowed at `parent`, found by walking the models alongside the document."""
    model: type[BaseModel] | None = Config
    node: Any = document
    for part in parent:
        if model is None:
            return []
        if isinstance(part, int):  # a list index: the item has the same model as the list
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        if part == "options" and model.__name__ == "PairConfig":
            model = _options_model(node)
        else:
            model = _model_in(field.annotation)
        node = node.get(part) if isinstance(node, Mapping) else None
    return list(model.model_fields) if model is not None else []


def _options_model(pair: object) -> type[BaseModel] | None:
    remote = pair.get("remote") if isinstance(pair, Mapping) else None
    if not isinstance(remote, str):
        return None
    try:
        return OPTIONS_BY_SCHEME.get(parse_remote_url(remote).scheme)
    except RemoteURLError:
        return None


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model inside `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _number(value: object) -> str:
    """`0.0` reads as `0`: the bound of a float field need not look like one."""
    try:
        number = float(str(value))
    except ValueError:
        return str(value)
    return str(int(number)) if number.is_integer() else str(value)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"

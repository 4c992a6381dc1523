"""One-way copies (`syncd upload` / `download`, `Engine.upload` / `download`), like
`rclone copy`: the source wins a difference (the replaced version goes to the trash), nothing is
ever deleted, and a small state of their own per (direction, folder, remote) makes a repeated
run transfer only what changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from syncd.config import Config, ConfigError, default_state_url, load_config_dict
from syncd.providers.url import RemoteURLError, parse_remote_url
from syncd.state import sqlite_path

Direction = Literal["upload", "download"]
#: Settings of a full config that a one-way copy takes over (limits, concurrency, parts).
INHERITED = (
    "workers",
    "bandwidth_limit",
    "upload_limit",
    "download_limit",
    "multipart_threshold",
    "part_size",
    "part_concurrency",
    "retry",
)
SOURCE = "command line"
#: The one-way copy's config keys, as `Engine.upload` / `download` name their arguments.
API_ARGUMENTS = {"pairs[0].local": "local_dir", "pairs[0].remote": "remote_url"}
#: What a list of patterns may be given as (click's `multiple=True` gives a tuple).
Patterns = list[str] | tuple[str, ...]


def one_way_config(
    direction: Direction,
    local: Path,
    remote_url: str,
    *,
    exclude: Patterns = (),
    include: Patterns = (),
    settings: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Config:
    """The config of one copy: one pair in `direction`, state under
    `$XDG_STATE_HOME/syncd/transfers/`. Raises ConfigError (source "command line"), also when
    that state would lie inside the folder (or the file:// remote) copied: it would be copied
    along, at every run. `options` is the pair's `options:` block (endpoint, credentials)."""
    local = local.expanduser().absolute()
    identity = hashlib.sha256(f"{direction}\0{local}\0{remote_url}".encode()).hexdigest()[:16]
    default_db = sqlite_path(default_state_url())
    assert default_db is not None  # the default is always a SQLite file
    state_file = default_db.parent / "transfers" / f"{identity}.db"
    document = {
        "state": f"sqlite:///{state_file}",
        "log": {"format": "auto"},
        **{k: v for k, v in (settings or {}).items() if v is not None},
        "pairs": [
            {
                "name": f"{direction}-{identity[:8]}",
                "local": str(local),
                "remote": remote_url,
                "direction": direction,
                "conflict": "local_wins" if direction == "upload" else "cloud_wins",
                "exclude": _patterns("exclude", exclude),
                "include": _patterns("include", include),
                **({"options": dict(options)} if options else {}),
            }
        ],
    }
    try:
        return load_config_dict(document, source=SOURCE, expand_env=False)
    except ConfigError as exc:
        if exc.key != "state":
            raise
        where, what = (
            ("remote", remote_url) if "pairs[0].remote" in exc.problem else ("local", str(local))
        )
        raise ConfigError(
            SOURCE,
            f"{what} holds syncd's state ({state_file.parent}): it would be copied along; set "
            "XDG_STATE_HOME to a folder outside it",
            key=f"pairs[0].{where}",
        ) from None


def _patterns(name: str, given: object) -> list[str]:
    """`exclude=` / `include=` as a list. A script that wrote `exclude="*.tmp"` gave one
    string, which `list()` made the patterns `*`, `.`, `t`, … : every file left out, exit 0.
    Refused, as the config refuses `exclude: "*.tmp"` (the items are checked there)."""
    if isinstance(given, str):
        raise ConfigError(
            SOURCE,
            f"must be a list of patterns, not one string: write [{given!r}]",
            key=f"pairs[0].{name}",
        )
    if not isinstance(given, list | tuple):
        raise ConfigError(
            SOURCE,
            f"must be a list of patterns (got {type(given).__name__})",
            key=f"pairs[0].{name}",
        )
    return list(given)


def in_script_words(exc: ConfigError, direction: Direction) -> ConfigError:
    """A config error of `Engine.upload` / `download` in the words of the call: the script
    wrote `remote_url`, `exclude=[…]`, `options={…}`, never a `command line` nor
    `pairs[0].remote`. Of the same class (a PairRemoteError stays an InvalidRequest)."""

    def words(text: str) -> str:
        for config_key, argument in API_ARGUMENTS.items():
            text = text.replace(config_key, argument)
        return text.replace("pairs[0].", "")

    key = words(exc.key) if exc.key and exc.key != "pairs" else None
    return type(exc)(f"Engine.{direction}", words(exc.problem), key=key, line=exc.line)


def inherited_options(config: Config, remote_url: str) -> dict[str, Any]:
    """The `options:` a one-way copy started from an engine takes for `remote_url`: those of
    the engine's pair on the same bucket, else of its first pair on the same service (an
    endpoint, a profile, keys: the user's S3 / GCS / Azure as the config describes it).
    `create_bucket` comes along only for that pair's own bucket."""
    try:
        url = parse_remote_url(remote_url)
    except RemoteURLError:
        return {}  # one_way_config says what is wrong with it
    alike = [p for p in config.pairs if p.remote_url.scheme == url.scheme != "file"]
    same = [p for p in alike if p.remote_url.bucket == url.bucket]
    if not alike:
        return {}
    options: dict[str, Any] = (same or alike)[0].options.model_dump(exclude_unset=True)
    if not same:
        options.pop("create_bucket", None)
    return options


def inherited_settings(config: Config) -> dict[str, Any]:
    """The settings of `config` a one-way copy started from an engine keeps."""
    dumped = config.model_dump(include=set(INHERITED))
    return {k: v for k, v in dumped.items() if k in config.model_fields_set}

"""One pair from the environment alone (containers, CI jobs): `SYNCD_LOCAL`, `SYNCD_REMOTE`
and friends, validated exactly like a config file, with errors naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.config.loader import ConfigError, load_config_dict
from syncd.config.model import Config

#: Variable -> where it lands in the config (top-level key, or "pairs[0].KEY").
VARIABLES = {
    "SYNCD_LOCAL": "pairs[0].local",
    "SYNCD_REMOTE": "pairs[0].remote",
    "SYNCD_STATE": "state",
    "SYNCD_CONFLICT": "pairs[0].conflict",
    "SYNCD_DIRECTION": "pairs[0].direction",
    "SYNCD_WORKERS": "workers",
    "SYNCD_POLL_INTERVAL": "pairs[0].poll_interval",
    "SYNCD_EXCLUDE": "pairs[0].exclude",
    "SYNCD_INCLUDE": "pairs[0].include",
}
#: Variables holding a comma-separated list.
LISTS = ("SYNCD_EXCLUDE", "SYNCD_INCLUDE")
#: What a config from the environment calls its one pair.
PAIR_NAME = "default"
SOURCE = "environment"


def has_env_config(environ: Mapping[str, str]) -> bool:
    """True when the environment defines a pair (both ends named)."""
    return bool(environ.get("SYNCD_LOCAL")) and bool(environ.get("SYNCD_REMOTE"))


def config_from_env(environ: Mapping[str, str]) -> Config:
    """The config the SYNCD_* variables describe. ConfigError names the variable at fault."""
    missing = [name for name in ("SYNCD_LOCAL", "SYNCD_REMOTE") if not environ.get(name)]
    if missing:
        raise ConfigError(SOURCE, "must be set to define a pair", key=missing[0])
    pair: dict[str, Any] = {"name": PAIR_NAME}
    document: dict[str, Any] = {"pairs": [pair]}
    for name, target in VARIABLES.items():
        value = environ.get(name)
        if value is None or value == "":
            continue
        key = target.removeprefix("pairs[0].")
        parsed: Any = [p.strip() for p in value.split(",") if p.strip()]
        if name not in LISTS:
            parsed = value
        (pair if target.startswith("pairs[0].") else document)[key] = parsed
    try:
        # No ${VAR} expansion: the values come from the environment already.
        return load_config_dict(document, SOURCE, expand_env=False)
    except ConfigError as exc:
        problem = _with_variables(exc.problem)  # may name another key: `state` in `pairs[0].local`
        variable = _variable_of(exc.key)
        if variable is None:
            if exc.key == "pairs" and problem != exc.problem:
                # A rule across the pair's keys (its remote inside its local): the problem
                # names the variables; `pairs` is a key of a file there is none of.
                raise ConfigError(SOURCE, problem) from None
            raise
        if variable in LISTS and exc.key != VARIABLES[variable]:  # one item of the list
            item = _item(pair.get(VARIABLES[variable].removeprefix("pairs[0].")), exc.key or "")
            problem = f"{item!r}: {problem}" if item is not None else problem
        raise ConfigError(SOURCE, problem, key=variable) from None


def _with_variables(problem: str) -> str:
    """`problem` with the pair's keys it names (`pairs[0].remote`) said as their variables."""
    for name, target in VARIABLES.items():
        if target.startswith("pairs["):
            problem = problem.replace(target, name)
    return problem


def _variable_of(key: str | None) -> str | None:
    """The variable a config key came from: `pairs[0].exclude[1]` is SYNCD_EXCLUDE's."""
    for name, target in VARIABLES.items():
        if key == target or (name in LISTS and key and key.startswith(target + "[")):
            return name
    return None


def _item(values: object, key: str) -> str | None:
    """The list item `key` (`pairs[0].exclude[1]`) names: the user wrote a list, not indexes."""
    index = key.rpartition("[")[2].rstrip("]")
    if isinstance(values, list) and index.isdigit() and int(index) < len(values):
        return str(values[int(index)])
    return None

"""The config: the typed model of `syncd.yaml` and the loader that turns any mistake in it into
one line naming the key (see CONTRACT.md, "Config file")."""

from syncd.config.loader import (
    ConfigError,
    load_config,
    load_config_dict,
    load_config_part,
    resolve_config_path,
)
from syncd.config.model import (
    Config,
    LogConfig,
    MetricsConfig,
    PairConfig,
    PairPlace,
    PairsPart,
    RetryConfig,
    SocketPart,
    StatePart,
    default_socket_path,
    default_state_url,
)

__all__ = [
    "Config",
    "ConfigError",
    "LogConfig",
    "MetricsConfig",
    "PairConfig",
    "PairPlace",
    "PairsPart",
    "RetryConfig",
    "SocketPart",
    "StatePart",
    "default_socket_path",
    "default_state_url",
    "load_config",
    "load_config_dict",
    "load_config_part",
    "resolve_config_path",
]

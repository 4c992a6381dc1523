"""Every YAML under config/ (the `make run` default and the commented examples) loads as the
config it claims to be.

The files are globbed, so a new example cannot go untested: each is loaded with the variables
it requires set (to dummies) and those with a default unset, from a scratch working directory
and home, and must validate; each must also have a check of its typed values below. No remote
is reached: `syncd check` / `once` would need real accounts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from harness import syncd

from syncd.config import load_config
from syncd.config.loader import ConfigError
from syncd.config.model import Config
from syncd.providers.options import AzureOptions, FileOptions, GCSOptions, S3Options

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
FILES = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("*.yml")])
#: `${NAME}` (required) and `${NAME:default}`, as the loader reads them.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}")
#: Option keys that hold a secret: in an example (also a commented-out line) their value must
#: be a `${VAR}` reference, never a literal.
SECRET_KEYS = (
    "access_key_id",
    "secret_access_key",
    "session_token",
    "account_key",
    "sas_token",
    "connection_string",
)
_SECRET_LINE = re.compile(rf"^\s*#?\s*({'|'.join(SECRET_KEYS)}):\s*(.*?)\s*(#.*)?$")


def dummy(name: str) -> str:
    return f"dummy-{name.lower()}"


def _strings(node: object) -> Iterator[str]:
    """Every string value of a parsed document (substitution happens in values only)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def variables(path: Path) -> tuple[set[str], set[str]]:
    """(required, defaulted) variable names the file's values refer to (comments left out)."""
    required: set[str] = set()
    defaulted: set[str] = set()
    for value in _strings(yaml.safe_load(path.read_text())):
        for match in _REFERENCE.finditer(value):
            (defaulted if match[2] else required).add(match[1])
    return required, defaulted - required


class Env:
    """A scratch working directory and home for loading an example."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cwd = tmp_path / "cwd"
        self.home = tmp_path / "home"
        self.runtime = tmp_path / "run"
        for folder in (self.cwd, self.home, self.runtime):
            folder.mkdir()
        self.monkeypatch = monkeypatch
        monkeypatch.chdir(self.cwd)
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(self.runtime))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        monkeypatch.delenv("SYNCD_CONFIG", raising=False)

    def prepare(self, path: Path) -> None:
        """Required variables set (PWD to the working directory, the rest to dummies), those
        with a default unset so that the default is what loads."""
        required, defaulted = variables(path)
        for name in required:
            self.monkeypatch.setenv(name, str(self.cwd) if name == "PWD" else dummy(name))
        for name in defaulted:
            self.monkeypatch.delenv(name, raising=False)

    def load(self, name: str) -> Config:
        path = CONFIG_DIR / name
        self.prepare(path)
        return load_config(path)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, monkeypatch)


# -- every file --------------------------------------------------------------------------------


def test_every_file_has_its_typed_check() -> None:
    """The four providers' examples, the multi-pair one and the `make run` default are there,
    and a new file under config/ gets a check_* of its own below."""
    assert {path.name for path in FILES} == set(CHECKS)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_loads(path: Path, env: Env) -> None:
    config = env.load(path.name)
    assert config.pairs
    for pair in config.pairs:
        assert pair.local.is_absolute()


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_the_cli_reads_it_too(path: Path, env: Env) -> None:
    """`syncd status` loads the whole config before it looks for the daemon: exit 3 (not
    reachable), never 2 (config error). No remote is contacted."""
    env.prepare(path)
    result = syncd("status", "-c", path, timeout=60)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_secrets_only_through_variables(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = _SECRET_LINE.match(line)
        if found is None:
            continue
        value = found[2].strip("'\"")
        assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value), (
            f"{path.name}:{number}: {found[1]} must be a ${{VAR}} reference without a default"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_a_missing_required_variable_is_an_error_naming_it(path: Path, env: Env) -> None:
    required, _ = variables(path)
    for name in sorted(required):
        env.prepare(path)
        env.monkeypatch.delenv(name)
        with pytest.raises(ConfigError, match=re.escape(f"${{{name}}} is not set")):
            load_config(path)


# -- what each one says ------------------------------------------------------------------------


def check_default(config: Config, env: Env) -> None:
    """`make run`: ./sync/local <-> the folder ./sync/remote, from the starting directory."""
    assert config.state == f"sqlite:///{env.cwd}/sync/state.db"
    assert config.socket == env.cwd / "sync" / "syncd.sock"
    (pair,) = config.pairs
    assert pair.name == "default"
    assert pair.local == env.cwd / "sync" / "local"
    assert pair.remote == f"file://{env.cwd}/sync/remote"
    assert isinstance(pair.options, FileOptions)
    assert pair.poll_interval == 5.0


def check_s3(config: Config, env: Env) -> None:
    assert config.workers == 8
    assert config.multipart_threshold == 64 * 1024**2
    assert config.retry.attempts == 8
    (pair,) = config.pairs
    assert pair.local == env.home / "Documents"
    assert pair.remote_url.scheme == "s3"
    assert pair.remote_url.bucket == "team-bucket"
    assert pair.remote_url.prefix == "docs/"
    options = pair.options
    assert isinstance(options, S3Options)
    assert options.region == "eu-west-1"  # the default, AWS_REGION being unset
    assert options.access_key_id == dummy("DOCS_AWS_ACCESS_KEY_ID")
    assert options.secret_access_key == dummy("DOCS_AWS_SECRET_ACCESS_KEY")
    assert options.session_token is None
    assert options.storage_class == "STANDARD_IA"
    assert options.create_bucket is True
    assert options.endpoint_url is None
    assert pair.conflict == "timestamp_wins"
    assert pair.exclude == ["*.tmp", "~$*", ".DS_Store", ".cache/"]
    assert pair.include == []
    assert pair.max_delete == 50.0


def check_gcs(config: Config, env: Env) -> None:
    assert config.upload_limit == 10_000_000
    assert config.bandwidth_limit is None
    (pair,) = config.pairs
    assert pair.local == env.home / "Pictures"
    assert pair.remote_url.scheme == "gs"
    assert pair.remote_url.bucket == "family-photos"
    options = pair.options
    assert isinstance(options, GCSOptions)
    assert options.project == "family-archive"
    assert options.credentials_file == "/etc/syncd/gcs-key.json"
    assert options.storage_class == "NEARLINE"
    assert options.create_bucket is True
    assert options.location == "EU"
    assert pair.direction == "upload"
    assert pair.conflict == "local_wins"
    assert pair.poll_interval == 300.0
    assert "*.JPG" in pair.include
    assert pair.max_delete == 10.0
    assert pair.trash_days == 90


def check_azure(config: Config, env: Env) -> None:
    (pair,) = config.pairs
    assert pair.name == "team-reports"
    assert pair.local == env.home / "Reports"
    assert pair.remote_url.scheme == "az"
    assert pair.remote_url.bucket == "reports"
    assert pair.remote_url.prefix == "finance/"
    options = pair.options
    assert isinstance(options, AzureOptions)
    assert options.account_name == "contosoreports"
    assert options.account_key == dummy("AZURE_STORAGE_KEY")
    assert options.sas_token is None
    assert options.connection_string is None
    assert options.storage_class == "Cool"
    assert options.create_bucket is True
    assert pair.conflict == "version_preserve"
    assert pair.settle == 1.0


def check_folder(config: Config, env: Env) -> None:
    assert config.workers == 2
    (pair,) = config.pairs
    assert pair.local == env.home / "Music"
    assert pair.remote == "file:///mnt/nas/music"
    assert pair.remote_url.path == "/mnt/nas/music"
    assert isinstance(pair.options, FileOptions)
    assert pair.conflict == "manual"
    assert pair.max_delete == 10.0
    assert pair.trash_days == 14


def check_multi_pair(config: Config, env: Env) -> None:
    assert config.state == "sqlite:////var/lib/syncd/state.db"
    assert config.socket == Path("/run/syncd/syncd.sock")
    assert config.workers == 12
    assert config.log.format == "json"
    assert config.bandwidth_limit == 50_000_000
    assert config.upload_limit == 20_000_000
    assert config.part_size == 32 * 1024**2
    assert config.metrics is not None
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)
    assert config.log_retention_days == 90
    pairs = {pair.name: pair for pair in config.pairs}
    assert list(pairs) == ["docs", "builds", "datasets", "shared", "archive"]
    assert {name: pair.remote_url.scheme for name, pair in pairs.items()} == {
        "docs": "s3",
        "builds": "s3",
        "datasets": "gs",
        "shared": "az",
        "archive": "file",
    }
    docs = pairs["docs"].options
    assert isinstance(docs, S3Options)
    assert docs.profile == "work"
    assert docs.access_key_id is None
    assert docs.create_bucket is False
    builds = pairs["builds"].options
    assert isinstance(builds, S3Options)
    assert builds.endpoint_url == "https://minio.internal.example:9000"
    assert builds.secret_access_key == dummy("MINIO_SECRET_KEY")
    assert builds.create_bucket is True
    assert pairs["builds"].direction == "upload"
    assert pairs["builds"].remote_trash is False
    datasets = pairs["datasets"].options
    assert isinstance(datasets, GCSOptions)
    assert datasets.location == "US"  # the default; the bucket exists anyway
    assert pairs["datasets"].direction == "download"
    assert pairs["datasets"].include == ["*.parquet", "schemas/**"]
    shared = pairs["shared"].options
    assert isinstance(shared, AzureOptions)
    assert shared.connection_string == dummy("AZURE_STORAGE_CONNECTION_STRING")
    assert pairs["shared"].conflict == "version_preserve"
    assert pairs["archive"].remote_url.path == "/mnt/nas/archive"
    assert pairs["archive"].conflict == "manual"


def check_system(config: Config, env: Env) -> None:
    """The system service's config: state and socket in the unit's StateDirectory= and
    RuntimeDirectory=, a pair that works as installed (both folders in the StateDirectory)."""
    unit = (CONFIG_DIR.parent / "systemd" / "syncd.service").read_text()
    assert "StateDirectory=syncd" in unit and "RuntimeDirectory=syncd" in unit
    assert "Environment=SYNCD_CONFIG=/etc/syncd/syncd.yaml" in unit
    assert config.state == "sqlite:////var/lib/syncd/state.db"
    assert config.socket == Path("/run/syncd/syncd.sock")
    assert config.log.format == "json"
    (pair,) = config.pairs
    assert pair.local == Path("/var/lib/syncd/local")
    assert pair.remote_url.path == "/var/lib/syncd/remote"


CHECKS: dict[str, Callable[[Config, Env], None]] = {
    "syncd.yaml": check_default,
    "syncd.system.yaml": check_system,
    "s3.example.yaml": check_s3,
    "gcs.example.yaml": check_gcs,
    "azure.example.yaml": check_azure,
    "folder.example.yaml": check_folder,
    "multi-pair.example.yaml": check_multi_pair,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_typed_values(name: str, env: Env) -> None:
    CHECKS[name](env.load(name), env)


def test_a_set_variable_wins_over_the_example_default(env: Env) -> None:
    """`${VAR:default}`: the variable when it is set, the default otherwise."""
    env.prepare(CONFIG_DIR / "s3.example.yaml")
    env.monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    config = load_config(CONFIG_DIR / "s3.example.yaml")
    options = config.pairs[0].options
    assert isinstance(options, S3Options)
    assert options.region == "ap-southeast-2"
    env.prepare(CONFIG_DIR / "folder.example.yaml")  # NAS_ROOT unset: the default
    assert load_config(CONFIG_DIR / "folder.example.yaml").pairs[0].remote == (
        "file:///mnt/nas/music"
    )
    env.monkeypatch.setenv("NAS_ROOT", "/media/usb")
    assert load_config(CONFIG_DIR / "folder.example.yaml").pairs[0].remote == (
        "file:///media/usb/music"
    )

"""The config file as users write it: the contract's example loads into typed values, and every
mistake is one line naming the key (CONTRACT.md, "Config file")."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from harness import SYNCD, syncd, unavailable_here
from pydantic import ValidationError

from syncd.config import (
    Config,
    ConfigError,
    PairConfig,
    PairsPart,
    SocketPart,
    StatePart,
    default_socket_path,
    default_state_url,
    load_config,
    load_config_dict,
    load_config_part,
    resolve_config_path,
)
from syncd.config.units import parse_rate, parse_size
from syncd.providers.options import FileOptions, S3Options

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4

# The example from CONTRACT.md, verbatim except for the paths (TMP is replaced per test).
CONTRACT_EXAMPLE = """\
state: sqlite:///TMP/state.db  # any SQLAlchemy URL; default $XDG_STATE_HOME/syncd/state.db
socket: TMP/run/syncd.sock             # default $XDG_RUNTIME_DIR/syncd/syncd.sock
workers: 8
log: {level: info, format: auto}          # auto | json | console
bandwidth_limit: 20MB/s                   # shared by all workers; also upload_limit / download_limit
multipart_threshold: 64MiB                # part_size: 16MiB, part_concurrency: 4
retry: {attempts: 8, max_seconds: 300}
metrics: {listen: "127.0.0.1:9464"}       # optional Prometheus endpoint
pairs:
  - name: docs
    local: TMP/docs
    remote: s3://team-bucket/docs/
    options: {endpoint_url: "http://127.0.0.1:9000", region: us-east-1}
    direction: both              # both | upload | download
    conflict: timestamp_wins     # timestamp_wins | local_wins | cloud_wins | manual | version_preserve
    poll_interval: 30            # seconds between remote listings
    settle: 0.5                  # seconds a file must stay unchanged before it is uploaded
    max_delete: 50               # percent of a pair's files; a larger deletion is held, not propagated
    exclude: ["*.tmp", ".cache/"]  # plus a .syncignore (gitignore syntax) at the local root
    trash_days: 30               # local losers and deletions wait in .syncd/trash/ this long
    remote_trash: true           # remote losers and deletions are first copied under .syncd-trash/
"""  # noqa: E501 - verbatim from the contract, long comments included

# The smallest valid config; malformed cases below are built by adding to or editing it.
PAIR = """\
pairs:
  - name: docs
    local: TMP/docs
    remote: s3://team-bucket/docs/
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(textwrap.dedent(text).replace("TMP", str(tmp_path)))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests must not depend on the developer's own syncd environment."""
    for name in ("SYNCD_CONFIG", "XDG_CONFIG_HOME", "BUCKET", "EP", "SYNCD_TEST_VAR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


# -- the contract's example -------------------------------------------------------------------


def test_contract_example_loads_into_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE))

    assert config.state == f"sqlite:///{tmp_path}/state.db"
    assert config.socket == tmp_path / "run" / "syncd.sock"
    assert config.workers == 8
    assert (config.log.level, config.log.format) == ("info", "auto")
    assert config.bandwidth_limit == 20_000_000
    assert config.upload_limit is None and config.download_limit is None
    assert config.multipart_threshold == 64 * MiB
    assert config.part_size == 16 * MiB and config.part_concurrency == 4
    assert (config.retry.attempts, config.retry.max_seconds) == (8, 300.0)
    assert config.metrics is not None
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)

    [pair] = config.pairs
    assert pair.name == "docs"
    assert pair.local == tmp_path / "docs"
    assert pair.remote == "s3://team-bucket/docs/"
    assert (pair.remote_url.scheme, pair.remote_url.bucket, pair.remote_url.prefix) == (
        "s3",
        "team-bucket",
        "docs/",
    )
    assert isinstance(pair.options, S3Options)
    assert pair.options.endpoint_url == "http://127.0.0.1:9000"
    assert pair.options.region == "us-east-1"
    assert (pair.direction, pair.conflict) == ("both", "timestamp_wins")
    assert (pair.poll_interval, pair.settle, pair.max_delete) == (30.0, 0.5, 50.0)
    assert pair.exclude == ["*.tmp", ".cache/"]
    assert (pair.trash_days, pair.remote_trash) == (30, True)


def test_only_name_local_and_remote_are_required(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PAIR))

    assert config.state == f"sqlite:///{tmp_path}/xdg-state/syncd/state.db"
    assert config.socket == tmp_path / "xdg-run" / "syncd" / "syncd.sock"
    assert config.workers == 8
    assert (config.log.level, config.log.format) == ("info", "auto")
    assert config.bandwidth_limit is config.upload_limit is config.download_limit is None
    assert (config.multipart_threshold, config.part_size) == (64 * MiB, 16 * MiB)
    assert config.part_concurrency == 4
    assert (config.retry.attempts, config.retry.max_seconds) == (8, 300.0)
    assert config.metrics is None
    [pair] = config.pairs
    assert pair.options == S3Options()
    assert (pair.direction, pair.conflict, pair.poll_interval) == ("both", "timestamp_wins", 30)
    assert (pair.settle, pair.max_delete, pair.exclude) == (0.5, 50, [])
    assert (pair.trash_days, pair.remote_trash) == (30, True)


def test_limits_and_sizes_in_every_spelling(tmp_path: Path) -> None:
    extra = """\
        upload_limit: 1.5 MiB/s
        download_limit: 512KiB
        bandwidth_limit: 1000000
        multipart_threshold: 1GB
        part_size: "16 MiB"
        part_concurrency: 16
        """
    config = load_config(write(tmp_path, PAIR + textwrap.dedent(extra)))
    assert config.upload_limit == 1536 * KiB
    assert config.download_limit == 512 * KiB
    assert config.bandwidth_limit == 1_000_000
    assert config.multipart_threshold == 1_000_000_000
    assert config.part_size == 16 * MiB
    assert config.part_concurrency == 16


def test_relative_paths_are_anchored_at_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(
        write(
            tmp_path,
            """\
            state: "sqlite:///./sync/state.db"
            socket: ./sync/syncd.sock
            pairs:
              - {name: here, local: ./sync/local, remote: "file://TMP/sync/remote"}
              - {name: home, local: ~/docs, remote: "file://TMP/sync/remote2"}
            """,
        )
    )
    assert config.state == f"sqlite:///{tmp_path}/sync/state.db"
    assert config.socket == tmp_path / "sync" / "syncd.sock"
    assert config.pairs[0].local == tmp_path / "sync" / "local"
    assert config.pairs[1].local == tmp_path / "home" / "docs"
    assert isinstance(config.pairs[0].options, FileOptions)
    assert config.pairs[0].remote_url.path == f"{tmp_path}/sync/remote"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://syncd:pw@db.example/syncd",
        "sqlite:////var/lib/syncd/state.db?timeout=30",
        "sqlite:///file:/var/lib/syncd/state.db?mode=rwc&uri=true",
    ],
)
def test_state_urls_that_are_not_relative_files_are_kept(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PostgreSQL driver is not installed here; a stand-in is enough (nothing connects).
    monkeypatch.setitem(sys.modules, "psycopg", types.ModuleType("psycopg"))
    config = load_config_dict(
        {
            "state": url,
            "pairs": [{"name": "a", "local": str(tmp_path), "remote": "s3://team-bucket"}],
        }
    )
    assert config.state == url


def test_the_default_locations_follow_xdg_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_state_url() == "sqlite:////srv/state/syncd/state.db"
    assert default_socket_path() == Path("/run/user/1000/syncd/syncd.sock")

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", "/home/me")
    assert default_state_url() == "sqlite:////home/me/.local/state/syncd/state.db"
    assert default_socket_path() == Path(f"/tmp/syncd-{os.getuid()}/syncd.sock")


# -- malformed configs: one line, naming the key ----------------------------------------------

MALFORMED = [
    # (id, config text, the key the message must name, a phrase it must contain)
    ("bad yaml", "workers: 4\npairs: [\n  - name: x\n  bad: [\n", "line", "invalid YAML"),
    ("tab indentation", "pairs:\n\t- name: x\n", "line 2", "invalid YAML"),
    ("duplicate key", PAIR + "workers: 1\nworkers: 2\n", "line 6", "duplicate key 'workers'"),
    (
        "exclude pattern",
        PAIR + "    exclude: ['*.tmp', '[z-a]']\n",
        "pairs[0].exclude[1]",
        "not a valid pattern (bad character range z-a)",
    ),
    ("a newline in an unknown key", PAIR + '"ex\\nclude": 1\n', "ex\\nclude", "unknown key"),
    (
        "include pattern",
        PAIR + "    include: ['!']\n",
        "pairs[0].include[0]",
        "not a valid pattern",
    ),
    # Aliases share one object: a collection holding itself, or aliases of aliases that
    # expand without bound, would hang or overflow every walk of the document after parsing.
    ("alias holding itself", PAIR + "x: &a [*a]\n", None, "an alias refers to a collection"),
    (
        "alias bomb",
        PAIR
        + "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)),
        None,
        "expands to more than 100000 values",
    ),
    ("nested too deeply", PAIR + "x: " + "[" * 100 + "]" * 100 + "\n", None, "deeper than 32"),
    ("nested beyond the parser", "x: " + "[" * 600 + "\n", None, "deeper than 32 levels"),
    # Booleans are YAML's words only (a `${VAR}` gives them as text): pydantic's lax mode
    # read 1 and "1" as true.
    ("remote_trash as 1", PAIR + "    remote_trash: 1\n", "pairs[0].remote_trash", "(got 1)"),
    (
        "remote_trash as another word",
        PAIR + "    remote_trash: 'maybe'\n",
        "pairs[0].remote_trash",
        "must be true or false (got 'maybe')",
    ),
    (
        "an option's boolean as a digit string",
        PAIR + "    options: {create_bucket: '1'}\n",
        "pairs[0].options.create_bucket",
        "must be true or false",
    ),
    (
        "verify_ssl as 0",
        PAIR + "    options: {verify_ssl: 0}\n",
        "pairs[0].options.verify_ssl",
        "must be true or false",
    ),
    # A NUL gave Python's "pairs: embedded null byte", naming neither the key nor the problem.
    (
        "a NUL in a remote",
        PAIR.replace("s3://team-bucket/docs/", '"file://TMP/re\\0mote"'),
        "pairs[0].remote",
        "must not contain a NUL character",
    ),
    (
        "a NUL in a local root",
        PAIR.replace("TMP/docs", '"TMP/do\\0cs"'),
        "pairs[0].local",
        "must not contain a NUL character",
    ),
    ("a NUL in the state", PAIR + 'state: "sqlite:///TMP/s\\0.db"\n', "state", "NUL character"),
    (
        "a NUL in an option (never shown)",
        PAIR + '    options: {region: "s3cretpw\\0"}\n',
        "pairs[0].options.region",
        "must not contain a NUL character",
    ),
    (
        "a list too long",  # it read "through aliases?", with no key
        PAIR + "    exclude: [" + "a, " * 100_000 + "]\n",
        "pairs[0].exclude",
        "too many values: a config file holds at most 100000 in all",
    ),
    (
        "a typo'd option beside its companion",  # it said secret_access_key was missing
        PAIR + "    options: {access_key_id: AKIAFOO, secret_acess_key: s3cretpw}\n",
        "pairs[0].options.secret_acess_key",
        "unknown key (did you mean 'secret_access_key'?)",
    ),
    # `${...}` is YAML syntax inside a flow collection, the contract's own style for options.
    (
        "an unquoted ${VAR} in a flow mapping",
        PAIR + "    options: {create_bucket: ${CB}}\n",
        "line 5",
        "invalid YAML: expected ',' or '}', but got '{' "
        '(a ${...} inside {...} or [...] needs quotes: "${VAR}")',
    ),
    (
        "an unquoted ${VAR} in a flow list",
        PAIR + "    exclude: ['*.tmp',\n      ${X}]\n",
        "line 6",
        '(a ${...} inside {...} or [...] needs quotes: "${VAR}")',
    ),
    ("empty file", "", None, "file is empty"),
    ("only comments", "# nothing yet\n", None, "file is empty"),
    ("top level is a list", "- name: docs\n", None, "must be a mapping"),
    ("unknown top-level key", PAIR + "workerz: 4\n", "workerz", "unknown key"),
    ("unknown pair key", PAIR + "    direktion: both\n", "pairs[0].direktion", "unknown key"),
    ("typo in name", PAIR.replace("- name", "- nmae"), "pairs[0].nmae", "unknown key"),
    (
        "unknown s3 option",
        PAIR + "    options: {endpoint_urll: 'http://127.0.0.1:9000'}\n",
        "pairs[0].options.endpoint_urll",
        "unknown key (did you mean 'endpoint_url'?)",
    ),
    (
        "unknown file option",
        "pairs:\n  - {name: a, local: TMP/a, remote: 'file:///srv/r', options: {region: x}}\n",
        "pairs[0].options.region",
        "unknown key",
    ),
    ("options not a mapping", PAIR + "    options: [a]\n", "pairs[0].options", "mapping"),
    # One S3 key without the other was a TypeError traceback from botocore's signer.
    (
        "s3 secret without its key id",
        PAIR + "    options: {secret_access_key: s3cretpw}\n",
        "pairs[0].options.secret_access_key",
        "given without access_key_id",
    ),
    (
        "s3 key id without its secret",
        PAIR + "    options: {access_key_id: AKIAEXAMPLE}\n",
        "pairs[0].options.secret_access_key",
        "required when access_key_id is given",
    ),
    (
        "s3 session token without keys",
        PAIR + "    options: {session_token: s3cretpw}\n",
        "pairs[0].options.session_token",
        "given without access_key_id and secret_access_key",
    ),
    *(
        (
            f"endpoint_url {url!r}",
            PAIR + f"    options: {{endpoint_url: '{url}'}}\n",
            "pairs[0].options.endpoint_url",
            "not an http:// or https:// URL with a host",
        )
        for url in (
            "not a url",
            "http://",
            "127.0.0.1:9000",
            "localhost:9000",
            "ftp://x",
            "http://[::1",
            "http://u:s3cretpw@host:99999",
            "http://u:s3cretpw@ho st:9000",
        )
    ),
    (
        "gcs endpoint_url",
        PAIR.replace("s3://", "gs://") + "    options: {endpoint_url: 'localhost:4443'}\n",
        "pairs[0].options.endpoint_url",
        "not an http:// or https:// URL with a host",
    ),
    (
        "azure account_url",
        PAIR.replace("s3://team-bucket", "az://team-box")
        + "  - {name: b, local: TMP/b, remote: 'az://box', options: {account_url: 'not a url'}}\n",
        "pairs[1].options.account_url",
        "not an http:// or https:// URL with a host",
    ),
    ("workers not a number", PAIR + "workers: many\n", "workers", "whole number (got 'many')"),
    ("workers is a boolean", PAIR + "workers: yes\n", "workers", "not true/false"),
    ("workers too many", PAIR + "workers: 1000\n", "workers", "at most 256"),
    (
        "missing name",
        "pairs:\n  - {local: TMP/a, remote: 's3://team-bucket'}\n",
        "pairs[0].name",
        "required key is missing",
    ),
    (
        "missing local",
        "pairs:\n  - {name: a, remote: 's3://team-bucket'}\n",
        "pairs[0].local",
        "required key is missing",
    ),
    (
        "missing remote",
        "pairs:\n  - {name: a, local: TMP/a}\n",
        "pairs[0].remote",
        "required key is missing",
    ),
    ("unknown scheme", PAIR.replace("s3://", "ftp://"), "pairs[0].remote", "unknown scheme ftp://"),
    (
        "invalid azure container",
        PAIR.replace("s3://team-bucket", "az://Team--Box"),
        "pairs[0].remote",
        "invalid Azure container name",
    ),
    (
        "invalid bucket name",
        PAIR.replace("team-bucket", "Team_Bucket"),
        "pairs[0].remote",
        "invalid S3 bucket name",
    ),
    (
        "bucket name with two periods in a row",
        PAIR.replace("team-bucket", "team..bucket"),
        "pairs[0].remote",
        "invalid S3 bucket name 'team..bucket' (two periods in a row)",
    ),
    (
        "bucket name like an IP address",
        PAIR.replace("s3://team-bucket", "gs://192.168.5.4"),
        "pairs[0].remote",
        "invalid GCS bucket name '192.168.5.4' (it may not look like an IP address)",
    ),
    (
        "password in an s3 remote",
        PAIR.replace("s3://team-bucket", "s3://user:s3cretpw@team-bucket"),
        "pairs[0].remote",
        "invalid S3 bucket name 'user:***@team-bucket'",
    ),
    (
        "password in an azure remote",
        PAIR.replace("s3://team-bucket", "az://user:s3cretpw@team-box"),
        "pairs[0].remote",
        "invalid Azure container name 'user:***@team-box'",
    ),
    (
        "password holding an @",
        PAIR.replace("s3://team-bucket", "gs://user:pw@s3cretpw@team-bucket"),
        "pairs[0].remote",
        "invalid GCS bucket name 'user:***@team-bucket'",
    ),
    (
        "password in a file remote",
        PAIR.replace("s3://team-bucket/docs/", "file://user:s3cretpw@host/srv"),
        "pairs[0].remote",
        "got 'file://user:***@host/srv'",
    ),
    (
        "relative file remote",
        PAIR.replace("s3://team-bucket/docs/", "file://remote"),
        "pairs[0].remote",
        "absolute path",
    ),
    *(
        (
            f"remote with a {what}",
            PAIR.replace("s3://team-bucket/docs/", remote),
            "pairs[0].remote",
            "a remote URL takes no query (?...) or fragment (#...)",
        )
        for what, remote in [
            ("file query", "file://TMP/remote?x=1"),
            ("file fragment", "file://TMP/remote#top"),
        ]
    ),
    (
        "file remote on another host",
        PAIR.replace("s3://team-bucket/docs/", "file://fileserver/srv/docs"),
        "pairs[0].remote",
        "file:// takes no host other than localhost: write an absolute path as "
        "file:///ABSOLUTE/PATH (got 'file://fileserver/srv/docs')",
    ),
    (
        "bad pair name",
        PAIR.replace("name: docs", "name: my docs!"),
        "pairs[0].name",
        "1-64 letters",
    ),
    (
        "two pairs, one name",
        PAIR + "  - {name: docs, local: TMP/other, remote: 's3://team-bucket'}\n",
        "pairs",
        "pairs[0] and pairs[1] are both named 'docs'",
    ),
    (
        "local inside another",
        PAIR + "  - {name: sub, local: TMP/docs/sub, remote: 's3://bucket2'}\n",
        "pairs",
        "pairs[1].local",
    ),
    (
        "same local twice",
        PAIR + "  - {name: b, local: TMP/docs/, remote: 's3://bucket2'}\n",
        "pairs",
        "same folder",
    ),
    (
        "remote inside another",
        PAIR + "  - {name: sub, local: TMP/sub, remote: 's3://team-bucket/docs/sub'}\n",
        "pairs",
        "pairs[1].remote (s3://team-bucket/docs/sub/) is inside pairs[0].remote",
    ),
    (
        "same remote twice",
        PAIR + "  - {name: b, local: TMP/b, remote: 's3://team-bucket/docs'}\n",
        "pairs",
        "pairs[0].remote and pairs[1].remote are the same remote (s3://team-bucket/docs/)",
    ),
    (
        "file remote inside another",
        "pairs:\n  - {name: a, local: TMP/a, remote: 'file://TMP/r'}\n"
        "  - {name: b, local: TMP/b, remote: 'file://TMP/r/b'}\n",
        "pairs",
        "pairs[1].remote (TMP/r/b) is inside pairs[0].remote (TMP/r)",
    ),
    (
        "file remote inside local",
        "pairs:\n  - {name: a, local: TMP/a, remote: 'file://TMP/a/r'}\n",
        "pairs",
        "pairs[0].remote",
    ),
    ("unknown strategy", PAIR + "    conflict: newest\n", "pairs[0].conflict", "must be one of"),
    (
        "unknown direction",
        PAIR + "    direction: sideways\n",
        "pairs[0].direction",
        "must be one of both, upload, download (got 'sideways')",
    ),
    (
        "negative poll_interval",
        PAIR + "    poll_interval: -1\n",
        "pairs[0].poll_interval",
        "greater than 0",
    ),
    ("negative settle", PAIR + "    settle: -0.5\n", "pairs[0].settle", "at least 0"),
    *(
        (
            f"poll_interval {value}",
            PAIR + f"    poll_interval: {value}\n",
            "pairs[0].poll_interval",
            f"must be at most 604800 seconds (a week) (got {shown})",
        )
        for value, shown in ((".inf", "inf"), ("1e308", "1e+308"), ("604801", "604801.0"))
    ),
    ("poll_interval nan", PAIR + "    poll_interval: .nan\n", "pairs[0].poll_interval", "than 0"),
    (
        "settle inf",
        PAIR + "    settle: .inf\n",
        "pairs[0].settle",
        "must be at most 3600 seconds (an hour) (got inf)",
    ),
    ("settle nan", PAIR + "    settle: .nan\n", "pairs[0].settle", "at least 0 (got nan)"),
    (
        "max_delete inf",
        PAIR + "    max_delete: .inf\n",
        "pairs[0].max_delete",
        "at most 100 (got inf)",
    ),
    (
        "trash_days huge",
        PAIR + "    trash_days: " + "9" * 400 + "\n",
        "pairs[0].trash_days",
        "must be at most 3650 days (ten years) (got 999999999999999999999...)",
    ),
    (
        "log_retention_days huge",
        PAIR + "log_retention_days: 1000000000\n",
        "log_retention_days",
        "must be at most 3650 days (ten years) (got 1000000000)",
    ),
    (
        "retry max_seconds inf",
        PAIR + "retry: {max_seconds: .inf}\n",
        "retry.max_seconds",
        "must be at most 86400 seconds (a day) (got inf)",
    ),
    (
        "retry attempts huge",
        PAIR + "retry: {attempts: 1000000}\n",
        "retry.attempts",
        "must be at most 1000 (got 1000000)",
    ),
    ("part_size too large", PAIR + "part_size: 6GiB\n", "part_size", "at most 5GiB"),
    (
        "multipart_threshold too large",
        PAIR + "multipart_threshold: 6TiB\n",
        "multipart_threshold",
        "must be at most 5TiB",
    ),
    (
        "bandwidth_limit too large",
        PAIR + "bandwidth_limit: " + "9" * 400 + "\n",
        "bandwidth_limit",
        "must be at most 1TB/s",
    ),
    ("upload_limit too large", PAIR + "upload_limit: 2TB/s\n", "upload_limit", "at most 1TB/s"),
    ("max_delete 150", PAIR + "    max_delete: 150\n", "pairs[0].max_delete", "at most 100"),
    ("negative trash_days", PAIR + "    trash_days: -1\n", "pairs[0].trash_days", "at least 0"),
    (
        "remote_trash not a bool",
        PAIR + "    remote_trash: maybe\n",
        "pairs[0].remote_trash",
        "true or false",
    ),
    ("exclude not a list", PAIR + "    exclude: 5\n", "pairs[0].exclude", "must be a list"),
    (
        "undefined variable",
        PAIR.replace("team-bucket", "${BUCKET}"),
        "pairs[0].remote",
        "${BUCKET} is not set and has no default",
    ),
    (
        "unterminated variable",
        PAIR + "    exclude: ['${BUCKET']\n",
        "pairs[0].exclude[0]",
        "unterminated ${",
    ),
    (
        "socket path too long",
        PAIR + "socket: TMP/" + "s" * 120 + ".sock\n",
        "socket",
        "at most 107",
    ),
    ("no pairs", "workers: 4\npairs: []\n", "pairs", "at least one pair is required"),
    ("pairs key missing", "workers: 4\n", "pairs", "at least one pair is required"),
    ("part_size too small", PAIR + "part_size: 1MiB\n", "part_size", "at least 5MiB"),
    (
        "bad size string",
        PAIR + "multipart_threshold: 64 megs\n",
        "multipart_threshold",
        "'64 megs' is not a size",
    ),
    ("bad rate string", PAIR + "bandwidth_limit: fast\n", "bandwidth_limit", "not a rate"),
    ("negative rate", PAIR + "upload_limit: -1\n", "upload_limit", "-1 is not a rate"),
    ("bad log level", PAIR + "log: {level: loud}\n", "log.level", "must be one of debug"),
    ("unknown log key", PAIR + "log: {levle: info}\n", "log.levle", "did you mean 'level'?"),
    ("retry attempts 0", PAIR + "retry: {attempts: 0}\n", "retry.attempts", "at least 1"),
    (
        "metrics port out of range",
        PAIR + "metrics: {listen: '127.0.0.1:70000'}\n",
        "metrics.listen",
        "port 1-65535",
    ),
    (
        "metrics without port",
        PAIR + "metrics: {listen: localhost}\n",
        "metrics.listen",
        "HOST:PORT",
    ),
    ("state not a URL", PAIR + "state: not a url\n", "state", "not a database URL"),
    (
        "state inside a local root",
        PAIR + "state: sqlite:///TMP/docs/state.db\n",
        "state",
        "the state database TMP/docs/state.db is inside pairs[0].local (TMP/docs): it would be"
        " synced",
    ),
    (
        "state deep inside a local root, through ..",
        PAIR + "state: sqlite:///TMP/other/../docs/a/b/state.db\n",
        "state",
        "the state database TMP/docs/a/b/state.db is inside pairs[0].local (TMP/docs)",
    ),
    (
        "state inside the second pair's root",
        PAIR
        + "  - {name: b, local: TMP/b, remote: 's3://bucket2'}\n"
        + "state: sqlite:///TMP/b/.syncd/state.db\n",
        "state",
        "is inside pairs[1].local (TMP/b)",
    ),
    (
        "state inside a file remote",
        "state: sqlite:///TMP/r/state.db\n"
        "pairs:\n  - {name: a, local: TMP/a, remote: 'file://TMP/r'}\n",
        "state",
        "the state database TMP/r/state.db is inside pairs[0].remote (TMP/r): it would be synced",
    ),
    (
        "state as a SQLite URI inside a local root",
        PAIR + "state: 'sqlite:///file:TMP/docs/state.db?mode=rwc&uri=true'\n",
        "state",
        "is inside pairs[0].local (TMP/docs)",
    ),
    # A query SQLAlchemy's SQLite driver drops was ignored (mode=ro opened read-write).
    (
        "state with a query parameter the driver drops",
        PAIR + "state: 'sqlite:///TMP/s.db?mode=ro'\n",
        "state",
        "query parameter 'mode' would be ignored; SQLite's own parameters need its URI form",
    ),
    (
        "state with uri=true on a plain path",  # SQLite made a file named `s.db?mode=ro`
        PAIR + "state: 'sqlite:///TMP/s.db?mode=ro&uri=true'\n",
        "state",
        "query parameter 'mode' would be ignored",
    ),
    (
        "state with a driver parameter of the wrong type",
        PAIR + "state: 'sqlite:///TMP/s.db?timeout=abc'\n",
        "state",
        "a query parameter is not valid (could not convert string to float: 'abc')",
    ),
    (
        "state driver not installed",
        PAIR + "state: 'postgresql://u:s3cretpw@127.0.0.1:1/db'\n",
        "state",
        "the SQLAlchemy driver for postgresql is not installed (No module named 'psycopg')",
    ),
    (
        "state unknown dialect",
        PAIR + "state: 'nosuchdialect://u:s3cretpw@x/y'\n",
        "state",
        "unknown database dialect 'nosuchdialect'",
    ),
    (
        "state unknown driver",
        PAIR + "state: 'postgresql+nosuch://u:s3cretpw@x/y'\n",
        "state",
        "unknown database driver 'postgresql+nosuch'",
    ),
]


@pytest.mark.parametrize(
    "text",
    [
        PAIR + "    local: ${X}\n",  # a duplicate key: parsed fine, not a matter of quotes
        PAIR + "    exclude: [a, b\n",  # broken, with no ${ on its lines
    ],
    ids=["duplicate key", "no ${"],
)
def test_the_quoting_hint_is_only_given_where_it_applies(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert "invalid YAML" in message and "needs quotes" not in message, message


def test_remotes_side_by_side_or_on_other_services_load(tmp_path: Path) -> None:
    """A prefix beside another (`a/` and `ab/`), another bucket, or the same bucket name on
    another endpoint is no overlap."""
    text = (
        "pairs:\n"
        "  - {name: a, local: TMP/a, remote: 's3://team-bucket/a'}\n"
        "  - {name: ab, local: TMP/ab, remote: 's3://team-bucket/ab'}\n"
        "  - {name: other, local: TMP/o, remote: 's3://other-bucket/a'}\n"
        "  - {name: far, local: TMP/f, remote: 's3://team-bucket/a',\n"
        "     options: {endpoint_url: 'http://127.0.0.1:9000'}}\n"
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(text.replace("TMP", str(tmp_path)))
    assert [p.name for p in load_config(path).pairs] == ["a", "ab", "other", "far"]


#: (scheme, the first pair's options, the second's, the environment)
Servers = tuple[str, dict[str, str], dict[str, str], dict[str, str]]
#: Two spellings of one server.
ONE_SERVER: list[Servers] = [
    (
        "s3",
        {"endpoint_url": "http://127.0.0.1:9000"},
        {"endpoint_url": "http://127.0.0.1:9000/"},
        {},
    ),
    ("s3", {"endpoint_url": "http://minio:9000"}, {"endpoint_url": "HTTP://MinIO:9000"}, {}),
    ("s3", {"endpoint_url": "http://minio"}, {"endpoint_url": "http://minio:80/"}, {}),
    ("s3", {"endpoint_url": "https://minio:443"}, {"endpoint_url": "https://minio"}, {}),
    ("s3", {"endpoint_url": "http://[::1]:9000"}, {"endpoint_url": "http://[::1]:9000/"}, {}),
    (
        "s3",
        {"endpoint_url": "http://127.0.0.1:9000"},
        {},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"},
    ),
    ("s3", {"endpoint_url": "http://h:1"}, {}, {"AWS_ENDPOINT_URL_S3": "http://H:1"}),
    (
        "s3",
        {"endpoint_url": "http://h:1", "region": "eu-west-1"},
        {"storage_class": "STANDARD_IA", "access_key_id": "k", "secret_access_key": "s"},
        {"AWS_ENDPOINT_URL_S3": "http://h:1", "AWS_ENDPOINT_URL": "http://other:2"},
    ),
    ("s3", {"region": "eu-west-1"}, {}, {}),
    (
        "gs",
        {"endpoint_url": "http://127.0.0.1:4443"},
        {},
        {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443/"},
    ),
    ("gs", {"project": "a"}, {"project": "b"}, {}),
    (
        "az",
        {"account_name": "team"},
        {"account_url": "https://Team.blob.core.windows.net/"},
        {},
    ),
    (
        "az",
        {"connection_string": "AccountName=team;AccountKey=a2V5;EndpointSuffix=core.windows.net"},
        {"account_url": "https://team.blob.core.windows.net", "sas_token": "sv=x"},
        {},
    ),
    (
        "az",
        {"connection_string": "UseDevelopmentStorage=true"},
        {"account_url": "http://127.0.0.1:10000/devstoreaccount1/", "account_key": "a2V5"},
        {},
    ),
    ("az", {}, {"account_name": "team"}, {"AZURE_STORAGE_ACCOUNT": "team"}),
]
#: Two servers.
TWO_SERVERS: list[Servers] = [
    (
        "s3",
        {"endpoint_url": "http://127.0.0.1:9000"},
        {"endpoint_url": "http://127.0.0.1:9001"},
        {},
    ),
    ("s3", {"endpoint_url": "http://h"}, {"endpoint_url": "https://h"}, {}),
    ("s3", {"endpoint_url": "http://h:1"}, {}, {"AWS_ENDPOINT_URL": "http://other:1"}),
    (
        "s3",
        {"endpoint_url": "http://h:1"},
        {},
        {"AWS_ENDPOINT_URL": "http://h:1", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
    ),
    ("s3", {"profile": "minio"}, {}, {}),  # the profile may name an endpoint of its own
    ("gs", {"endpoint_url": "http://127.0.0.1:4443"}, {}, {}),
    ("az", {"account_name": "team"}, {"account_name": "other"}, {}),
    (
        "az",
        {"connection_string": "AccountName=team;AccountKey=a2V5;EndpointSuffix=x.cn"},
        {"account_name": "team"},
        {},
    ),
]
SERVER_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
)


def _two_pairs_on(scheme: str, first: dict[str, str], second: dict[str, str]) -> str:
    """Two pairs on `SCHEME://team-bucket/docs/`, with these options (JSON is YAML)."""
    import json

    return "pairs:\n" + "".join(
        f"  - {{name: p{i}, local: TMP/p{i}, remote: '{scheme}://team-bucket/docs/', "
        f"options: {json.dumps(options)}}}\n"
        for i, options in enumerate((first, second))
    )


@pytest.mark.parametrize("case", ONE_SERVER)
def test_two_pairs_on_one_server_spelled_two_ways_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Servers
) -> None:
    """The options were compared as written: a trailing `/`, an upper-case host, a default
    port, or the endpoint given as an option to one pair and by AWS_ENDPOINT_URL to the other
    let two pairs share a prefix, and each synced (and deleted) the other's files."""
    scheme, first, second, env = case
    for name in SERVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = load_error(tmp_path, _two_pairs_on(scheme, first, second))
    assert message.endswith(
        ": pairs: pairs[0].remote and pairs[1].remote are the same remote "
        f"({scheme}://team-bucket/docs/)"
    ), message


@pytest.mark.parametrize("case", TWO_SERVERS)
def test_one_bucket_name_on_two_servers_is_no_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Servers
) -> None:
    scheme, first, second, env = case
    for name in SERVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(write(tmp_path, _two_pairs_on(scheme, first, second)))
    assert [p.name for p in config.pairs] == ["p0", "p1"]


def test_check_refuses_two_pairs_on_one_endpoint_spelled_two_ways(tmp_path: Path) -> None:
    """Through the program, as a user meets it: exit 2, one line naming both pairs."""
    text = _two_pairs_on("s3", {"endpoint_url": "http://127.0.0.1:9"}, {})
    text = text.replace("docs/', options: {}", "docs/sub', options: {}")
    path = write(tmp_path, text)
    done = syncd("check", "-c", path, env={"AWS_ENDPOINT_URL": "HTTP://127.0.0.1:9/"}, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: {path}: pairs: pairs[1].remote (s3://team-bucket/docs/sub/) is inside "
        "pairs[0].remote (s3://team-bucket/docs/)\n"
    )


@pytest.mark.parametrize(
    ("text", "key", "phrase"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_a_malformed_config_is_one_line_naming_the_key(
    tmp_path: Path, text: str, key: str | None, phrase: str
) -> None:
    message = load_error(tmp_path, text)
    if key is not None:
        assert f": {key}" in message, message
    assert phrase.replace("TMP", str(tmp_path)) in message, message
    assert "Traceback" not in message and "pydantic" not in message, message
    assert "s3cretpw" not in message, message


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("postgresql://u:s3cretpw@127.0.0.1:1/db", "driver for postgresql is not installed"),
        ("mysql://u:s3cretpw@127.0.0.1:1/db", "driver for mysql is not installed"),
        ("nosuchdialect://u:s3cretpw@x/y", "unknown database dialect 'nosuchdialect'"),
    ],
)
@pytest.mark.parametrize("command", [["once", "--dry-run"], ["check"]])
def test_a_state_url_syncd_cannot_open_is_a_config_error(
    tmp_path: Path, url: str, phrase: str, command: list[str]
) -> None:
    """Its driver missing or its dialect unknown: exit 2 and one line naming `state`, found
    before anything runs (`check` included), never the URL's password nor a traceback."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    path = write(
        tmp_path, f"state: '{url}'\n" + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}")
    )
    done = syncd(*command, "-c", path, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"syncd: {path}: state: "), output
    assert phrase in output and "Traceback" not in output and "s3cretpw" not in output


@pytest.mark.parametrize("command", [["once"], ["check"]])
def test_a_state_query_that_would_be_ignored_exits_2_with_no_raw_warning(
    tmp_path: Path, command: list[str]
) -> None:
    """`?mode=ro` was dropped (`once` ran read-write, exit 0), and SQLAlchemy's warning reached
    stderr as a `py.warnings` record holding a line of Python source."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    text = "state: 'sqlite:///TMP/state.db?mode=ro'\nsocket: TMP/s.sock\n"
    path = write(tmp_path, text + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}"))
    done = syncd(*command, "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.startswith(f"syncd: {path}: state: query parameter 'mode' would be ")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "state.db").exists()


def test_a_state_in_sqlites_uri_form_is_locked_beside_its_file(tmp_path: Path) -> None:
    """`sqlite:///file:/PATH?mode=rwc&uri=true` is SQLite's own URI form: its lock was made
    from the URL's text, as `./file:/PATH.lock` under the working directory, folders and all."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    (tmp_path / "st").mkdir()
    text = "state: 'sqlite:///file:TMP/st/state.db?mode=rwc&uri=true'\nsocket: TMP/s.sock\n"
    path = write(tmp_path, text + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run(
        [*SYNCD, "once", "-c", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (remote / "a.txt").read_text() == "a"
    assert sorted(p.name for p in (tmp_path / "st").iterdir())[:2] == ["state.db", "state.db.lock"]
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("uri", ["yes", "on", "t", "1", "TRUE"])
def test_uri_is_read_as_sqlalchemy_reads_a_boolean(tmp_path: Path, uri: str) -> None:
    """SQLAlchemy takes `uri=yes` (or on, t, 1) as on and hands `mode=rwc` to SQLite: only
    `true` and `1` counted here, and such a state was refused with exit 2."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    state = f"sqlite:///file:{tmp_path}/st/state.db?mode=rwc&uri={uri}"
    path = write(
        tmp_path, f"state: '{state}'\n" + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}")
    )
    done = syncd("once", "-c", path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (remote / "a.txt").read_text() == "a" and (tmp_path / "st" / "state.db").is_file()


def test_a_uri_value_that_is_no_boolean_is_said_to_be_not_valid(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, "state: 'sqlite:///file:/x/state.db?mode=rwc&uri=maybe'\n" + PAIR
    )
    assert ": state: a query parameter is not valid (" in message, message


def test_a_state_uri_path_is_percent_decoded_as_sqlite_does(tmp_path: Path) -> None:
    """SQLAlchemy decodes the URL once (`%2520` is `%20`), and SQLite decodes its URI again:
    `file:TMP/my%20dir/state.db` is in `TMP/my dir`. syncd took the folder to be
    `TMP/my%20dir`: the pre-flight checked that one (here a file: exit 1, `Not a directory`)
    and the lock went there, not beside the database."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my%20dir").write_text("not the state's folder")
    state = f"sqlite:///file:{tmp_path}/my%2520dir/state.db?mode=rwc&uri=true"
    text = f"state: '{state}'\nsocket: TMP/s.sock\n"
    path = write(tmp_path, text + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}"))
    done = syncd("once", "-c", path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "my dir").iterdir())[:2] == [
        "state.db",
        "state.db.lock",
    ]
    assert (tmp_path / "my%20dir").read_text() == "not the state's folder"


# -- the state, the socket and the metrics endpoint can be used ------------------------------


def _folder_pair(tmp_path: Path, extra: str) -> Path:
    """A config of one folder pair (both folders made), its state and socket under
    `tmp_path/st` and `tmp_path/run` unless `extra` says otherwise."""
    remote = tmp_path / "remote"
    remote.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    text = PAIR.replace("s3://team-bucket/docs/", f"file://{remote}") + extra
    for key, default in (("state", "sqlite:///TMP/st/state.db"), ("socket", "TMP/run/s.sock")):
        if f"{key}:" not in extra:
            text += f"{key}: {default}\n"
    return write(tmp_path, text)


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        (
            "state: sqlite:///TMP/a-file/state.db",
            "state: cannot create TMP/a-file/state.db: TMP/a-file: Not a directory",
        ),
        (
            "state: sqlite:///TMP/a-file/deeper/state.db",
            "state: cannot create TMP/a-file/deeper/state.db: TMP/a-file: Not a directory",
        ),
        ("state: sqlite:///TMP/a-folder", "state: TMP/a-folder is a folder, not a database file"),
        (
            "state: sqlite:////proc/state.db",
            "state: cannot create /proc/state.db: /proc: no file can be created there",
        ),
        (
            "socket: TMP/a-file/s.sock",
            "socket: cannot create TMP/a-file/s.sock: TMP/a-file: Not a directory",
        ),
        ("socket: TMP/a-folder", "socket: TMP/a-folder is a folder, not a socket"),
        ("socket: TMP/a-file", "socket: TMP/a-file exists and is not a socket"),
        (
            "socket: /proc/syncd/s.sock",
            "socket: cannot create /proc/syncd/s.sock: /proc: no file can be created there",
        ),
    ],
    ids=[
        "state under a file",
        "state deeper under a file",
        "state a folder",
        "state in /proc",
        "socket under a file",
        "socket a folder",
        "socket a file",
        "socket in /proc",
    ],
)
def test_check_refuses_a_state_or_socket_no_command_can_use(
    tmp_path: Path, setting: str, said: str
) -> None:
    """`check` said ok of them, and `once` / `run` then failed (`run` with "File exists" of
    a socket under a file). Now: exit 2, one line naming the key and the real cause, and
    nothing made (the probe of a folder removes its file)."""
    path = _folder_pair(tmp_path, setting + "\n")
    before = _files(tmp_path)
    done = syncd("check", "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == f"syncd: {path}: {said.replace('TMP', str(tmp_path))}\n"
    assert _files(tmp_path) == before


def test_check_refuses_a_damaged_state_as_the_daemon_would(tmp_path: Path) -> None:
    """A state database that is no database: `once` and `run` stop (exit 1, `file is not a
    database`), and `check` said ok, exit 0 (sweep W): the daemon it vouched for would not
    start. It opens the state as they do: exit 2, one line naming `state`."""
    path = _folder_pair(tmp_path, "state: sqlite:///TMP/state.db\n")
    (tmp_path / "state.db").write_bytes(b"not a database, and long enough to be read" * 4)
    done = syncd("check", "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.startswith(f"syncd: {path}: state: state database ")
    assert "file is not a database" in done.stderr and done.stderr.count("\n") == 1
    assert syncd("once", "-c", path, timeout=60).returncode == 1  # as `check` said


@pytest.mark.parametrize("command", [["once"], ["run"], ["state", "rebuild"]], ids=" ".join)
def test_a_state_that_cannot_be_made_is_one_line_naming_state(
    tmp_path: Path, command: list[str]
) -> None:
    """The commands that use the state say it as `check` does, with the exit 1 README gives
    a state that cannot be opened, before anything is made: no lock, no socket."""
    path = _folder_pair(tmp_path, "state: sqlite:///TMP/a-file/state.db\n")
    before = _files(tmp_path)
    done = syncd(*command, "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (1, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: {path}: state: cannot create {tmp_path}/a-file/state.db: {tmp_path}/a-file: "
        "Not a directory\n"
    )
    assert _files(tmp_path) == before


@contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """`folder` (or a file) takes no write, whoever asks: mode 555, or for root (whom modes
    do not stop) the immutable attribute."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    try:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    except FileNotFoundError:
        unavailable_here("no chattr to make a folder root cannot write")
    if made.returncode != 0:
        unavailable_here(f"chattr +i refused here: {made.stderr.strip()!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_dry_run_with_no_state_yet_needs_no_writable_state_folder(tmp_path: Path) -> None:
    """A dry run plans on a scratch state when there is none yet, and so ran in a read-only
    checkout, in CI or as another user. The pre-flight refused it (exit 1, `cannot create`).
    The real pass still refuses, with one line naming `state`."""
    path = _folder_pair(tmp_path, "")
    (tmp_path / "docs" / "a.txt").write_text("a")
    folder = tmp_path / "st"
    folder.mkdir()
    with _unwritable(folder):
        done = syncd("once", "--dry-run", "-c", path, timeout=60)
        assert (done.returncode, done.stdout) == (0, "upload\tdocs/a.txt\tnew locally\n"), (
            done.stdout + done.stderr
        )
        real = syncd("once", "-c", path, timeout=60)
    assert list(folder.iterdir()) == [] and not (tmp_path / "remote" / "a.txt").exists()
    assert (real.returncode, real.stdout) == (1, ""), real.stdout + real.stderr
    assert len(real.stderr.splitlines()) == 1, real.stderr
    assert real.stderr.startswith(
        f"syncd: {path}: state: cannot create {folder}/state.db: {folder}: "
    ), real.stderr


def test_the_pre_flight_writes_no_name_in_the_folders_it_asks(tmp_path: Path) -> None:
    """It made and removed a `.syncd-check-*` file in the state's and the socket's folders:
    their mtime moved (for a dry run, which promises to change nothing), and a kill at the
    wrong moment left the file. access(2) and a file with no name answer without that. A
    folder not made yet is asked through its nearest existing one, which syncd makes it in."""
    path = _folder_pair(tmp_path, "")
    (tmp_path / "st").mkdir()  # the state's folder; the socket's (TMP/run) is not there yet
    (tmp_path / "docs" / "a.txt").write_text("a")
    before = {folder: folder.stat().st_mtime_ns for folder in (tmp_path, tmp_path / "st")}
    time.sleep(0.01)
    done = syncd("check", "-c", path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {folder: folder.stat().st_mtime_ns for folder in before} == before
    dry = syncd("once", "--dry-run", "-c", path, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert {folder: folder.stat().st_mtime_ns for folder in before} == before


def test_a_read_only_state_serves_the_readers_and_the_writers_refuse_it(tmp_path: Path) -> None:
    """`?mode=ro` (SQLite's URI form) on a state file that is not writable: `check` said exit 2
    (the pre-flight asked for read-write access), though `conflicts`, `log` and a dry run read
    it. The commands that write it say so in one line naming `state`, exit 2 (`once` ran with
    exit 0, saving no record of its pass)."""
    state = f"sqlite:///file:{tmp_path}/st/state.db?mode=rwc&uri=true"
    path = _folder_pair(tmp_path, f"state: '{state}'\n")
    (tmp_path / "docs" / "a.txt").write_text("a")
    assert syncd("once", "-c", path, timeout=60).returncode == 0
    (tmp_path / "docs" / "b.txt").write_text("b")
    path.write_text(path.read_text().replace("mode=rwc", "mode=ro"))
    with _unwritable(tmp_path / "st" / "state.db"):
        check = syncd("check", "-c", path, timeout=60)
        dry = syncd("once", "--dry-run", "-c", path, timeout=60)
        writers = [syncd(*command, "-c", path, timeout=60) for command in WRITERS]
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok\tdocs\t"), check.stdout
    assert (dry.returncode, dry.stdout) == (0, "upload\tdocs/b.txt\tnew locally\n"), dry.stderr
    for done in writers:
        assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
        assert done.stderr == (
            f"syncd: {path}: state: mode=ro opens the state read-only, and this command writes it\n"
        )
    assert not (tmp_path / "remote" / "b.txt").exists()


WRITERS = [["once"], ["run"], ["state", "rebuild"]]


def test_a_read_only_state_that_is_not_there_is_a_config_error(tmp_path: Path) -> None:
    """`mode=ro` makes nothing: no command could open it, so `check` says so, exit 2."""
    state = f"sqlite:///file:{tmp_path}/st/state.db?mode=ro&uri=true"
    path = _folder_pair(tmp_path, f"state: '{state}'\n")
    done = syncd("check", "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: {path}: state: {tmp_path}/st/state.db: no such file (mode=ro opens only a "
        "state that is there)\n"
    )


def test_run_on_a_socket_under_a_file_names_socket_and_leaves_no_lock(tmp_path: Path) -> None:
    """It said `cannot create the control socket …: File exists` (mkdir's word for the file
    in the way) and left `state.db.lock` (and its folder) behind."""
    path = _folder_pair(tmp_path, "socket: TMP/a-file/s.sock\n")
    before = _files(tmp_path)
    done = syncd("run", "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (1, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: {path}: socket: cannot create {tmp_path}/a-file/s.sock: {tmp_path}/a-file: "
        "Not a directory\n"
    )
    assert _files(tmp_path) == before and not (tmp_path / "st").exists()


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("999.1.1.1:1", "cannot listen on 999.1.1.1:1: "),
        ("no-such-host.invalid:9464", "cannot listen on no-such-host.invalid:9464: "),
        ("192.0.2.1:9464", "cannot listen on 192.0.2.1:9464: Cannot assign requested address"),
        ("127.0.0.1:70000", "must be HOST:PORT with a port 1-65535 (got '127.0.0.1:70000')"),
    ],
    ids=["no such address", "unknown host", "not this machine's", "port out of range"],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_metrics_address_no_endpoint_can_have_is_a_config_error(
    tmp_path: Path, listen: str, reason: str, command: str
) -> None:
    """`check` said ok of a `metrics.listen` that `run` refused, and `run` refused it only
    after making the state database and its lock. Now both: exit 2 naming the key, before
    anything is made."""
    path = _folder_pair(tmp_path, f"metrics: {{listen: '{listen}'}}\n")
    before = _files(tmp_path)
    done = syncd(command, "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.startswith(f"syncd: {path}: metrics.listen: {reason}"), done.stderr
    assert done.stderr.count("\n") == 1
    assert _files(tmp_path) == before


def test_check_still_passes_a_metrics_port_the_daemon_holds(tmp_path: Path) -> None:
    """`check` beside the running daemon: the port is taken, by that very daemon. Only the
    address is tried, on another port."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _folder_pair(tmp_path, f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
        done = syncd("check", "-c", path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_resolve_with_no_daemon_names_the_config_error_first(tmp_path: Path) -> None:
    """With no daemon `resolve` settles the conflict itself, which needs the whole config: a
    mistake in it is the news, not "no open conflict" of a path it never looked at."""
    path = _folder_pair(tmp_path, "workers: abc\n")
    done = syncd("resolve", "x.txt", "--keep", "local", "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"syncd: {path}: workers: must be a whole number (got 'abc')\n"
    fine = _folder_pair(tmp_path / "fine", "")
    done = syncd("resolve", "x.txt", "--keep", "local", "-c", fine, timeout=60)
    assert (done.returncode, done.stderr) == (
        2,
        "syncd: no open conflict for 'x.txt' (see `syncd conflicts`)\n",
    )


# -- the state database lies outside every pair's folders --------------------------------------


def _two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """A local root and a file:// remote folder, one file in each."""
    local, remote = tmp_path / "docs", tmp_path / "remote"
    for folder in (local, remote):
        folder.mkdir()
        (folder / f"{folder.name}.txt").write_text(folder.name)
    return local, remote


def _files(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["local", "remote"])
@pytest.mark.parametrize(
    "command", [["once"], ["run"], ["check"], ["state", "rebuild"]], ids=" ".join
)
def test_a_state_inside_a_pairs_folder_is_a_config_error(
    tmp_path: Path, where: str, command: list[str]
) -> None:
    """Synced, the state (and its -wal, -shm, .lock) went up at every pass and never settled,
    and another machine's newer state.db came down over the live one. Now: exit 2, one line
    naming `state`, and nothing is written on either side."""
    local, remote = _two_folders(tmp_path)
    db = (local if where == "local" else remote) / "state.db"
    path = write(
        tmp_path,
        f"state: sqlite:///{db}\nsocket: TMP/run/syncd.sock\n"
        + PAIR.replace("s3://team-bucket/docs/", f"file://{remote}"),
    )
    before = _files(local, remote)

    done = syncd(*command, "-c", path, timeout=60)

    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: {path}: state: the state database {db} is inside pairs[0].{where} "
        f"({db.parent}): it would be synced; keep it outside every pair's folders\n"
    )
    assert _files(local, remote) == before


def test_the_state_is_compared_by_its_real_path(tmp_path: Path) -> None:
    """Through a symlink, the state is where it really is."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "docs")
    message = load_error(tmp_path, PAIR + "state: sqlite:///TMP/link/sub/state.db\n")
    assert message.endswith(
        f": state: the state database {tmp_path}/docs/sub/state.db is inside pairs[0].local"
        f" ({tmp_path}/docs): it would be synced; keep it outside every pair's folders"
    )
    # ... and so is a root reached through one.
    message = load_error(
        tmp_path,
        "pairs: [{name: a, local: TMP/link, remote: 's3://b-1'}]\nstate: 'sqlite:///TMP/docs/s.db'\n",
    )
    assert f"is inside pairs[0].local ({tmp_path}/docs)" in message


def test_the_default_state_inside_a_root_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "docs" / ".state"))
    message = load_error(tmp_path, PAIR)
    assert message.endswith(
        f": state: the state database {tmp_path}/docs/.state/syncd/state.db is inside "
        f"pairs[0].local ({tmp_path}/docs): it would be synced; keep it outside every pair's "
        "folders"
    )


@pytest.mark.parametrize(
    "state",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///TMP/docs2/state.db",  # beside the root, a name that starts alike
        "sqlite:///TMP/state.db",  # above it
    ],
)
def test_a_state_outside_every_folder_loads(tmp_path: Path, state: str) -> None:
    text = f"state: '{state}'\n" + PAIR + "  - {name: b, local: TMP/b, remote: 'file://TMP/r'}\n"
    config = load_config(write(tmp_path, text))
    assert config.state == state.replace("TMP", str(tmp_path))


def test_the_environments_state_inside_its_local_is_refused(tmp_path: Path) -> None:
    local, remote = _two_folders(tmp_path)
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{local}/state.db",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    done = syncd("once", env=env, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"syncd: environment: SYNCD_STATE: the state database {local}/state.db is inside "
        f"SYNCD_LOCAL ({local}): it would be synced; keep it outside every pair's folders\n"
    )
    assert not (local / "state.db").exists()


@pytest.mark.parametrize("command", ["upload", "download"])
def test_a_one_way_copy_refuses_a_folder_holding_its_state(tmp_path: Path, command: str) -> None:
    """`syncd upload` / `download` keep their state under $XDG_STATE_HOME/syncd/transfers/:
    a LOCAL_DIR (or a file:// remote) holding it would copy it along."""
    local, remote = _two_folders(tmp_path)
    holder = local if command == "upload" else remote
    env = {"XDG_STATE_HOME": str(holder / ".state")}
    args = [str(local), f"file://{remote}"]
    if command == "download":
        args.reverse()
    before = _files(local, remote)

    done = syncd(command, *args, env=env, timeout=60)

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    where, what = (
        ("LOCAL_DIR", local) if command == "upload" else ("REMOTE_URL", f"file://{remote}")
    )
    assert done.stderr == (
        f"syncd: {where}: {what} holds syncd's state ({holder}/.state/syncd/transfers): it "
        "would be copied along; set XDG_STATE_HOME to a folder outside it\n"
    )
    assert _files(local, remote) == before


@pytest.mark.parametrize("command", ["upload", "download"])
@pytest.mark.parametrize("suffix", ["?x=1", "#frag"])
def test_a_one_way_copy_refuses_a_remote_with_a_query(
    tmp_path: Path, command: str, suffix: str
) -> None:
    """`?x=1` or `#frag` is no part of a folder's name: an upload made a folder `dst?x=1`."""
    local, remote = _two_folders(tmp_path)
    args = [str(local), f"file://{remote / 'dst'}{suffix}"]
    if command == "download":
        args.reverse()
    before = _files(local, remote)

    done = syncd(command, *args, timeout=60)

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        "syncd: REMOTE_URL: a remote URL takes no query (?...) or fragment (#...) "
        "(in a folder name, write ? as %3F and # as %23)\n"
    )
    assert _files(local, remote) == before


@pytest.mark.parametrize("host", ["localhost", "LocalHost"])
def test_a_file_remote_may_name_localhost(tmp_path: Path, host: str) -> None:
    """RFC 8089's `file://localhost/PATH` is the local `/PATH`, as `file:///PATH` is."""
    local, remote = _two_folders(tmp_path)
    path = write(tmp_path, PAIR.replace("s3://team-bucket/docs/", f"file://{host}{remote}"))

    assert load_config(path).pairs[0].remote_url.path == str(remote)
    done = syncd("upload", str(local), f"file://{host}{remote / 'up'}", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (remote / "up" / "docs.txt").read_text() == "docs"


# -- every number has an upper bound -----------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "    poll_interval: .inf\n",
            "pairs[0].poll_interval: must be at most 604800 seconds (a week) (got inf)",
        ),
        (
            "    poll_interval: 1e308\n",
            "pairs[0].poll_interval: must be at most 604800 seconds (a week) (got 1e+308)",
        ),
        ("    settle: .inf\n", "pairs[0].settle: must be at most 3600 seconds (an hour) (got inf)"),
        (
            "retry: {max_seconds: .inf}\n",
            "retry.max_seconds: must be at most 86400 seconds (a day) (got inf)",
        ),
    ],
    ids=["poll_interval inf", "poll_interval 1e308", "settle inf", "retry inf"],
)
@pytest.mark.parametrize("command", ["once", "run", "check"])
def test_an_endless_duration_is_a_config_error(
    tmp_path: Path, setting: str, message: str, command: str
) -> None:
    """`.inf` passed `check`, then `syncd run` died with an OverflowError traceback (the poll
    job's timedelta), and an endless `settle` uploaded nothing ever."""
    _, remote = _two_folders(tmp_path)
    text = "socket: TMP/run/syncd.sock\nstate: sqlite:///TMP/state/state.db\n"
    text += PAIR.replace("s3://team-bucket/docs/", f"file://{remote}")
    path = write(tmp_path, text + setting if setting.startswith(" ") else setting + text)
    done = syncd(command, "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == f"syncd: {path}: {message}\n"


@pytest.mark.parametrize("value", ["inf", "1e308", "Infinity"])
def test_an_endless_poll_interval_from_the_environment_is_refused(
    tmp_path: Path, value: str
) -> None:
    local, remote = _two_folders(tmp_path)
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path}/state.db",
        "SYNCD_POLL_INTERVAL": value,
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    done = syncd("run", env=env, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith(
        "syncd: environment: SYNCD_POLL_INTERVAL: must be at most 604800 seconds (a week) (got "
    )
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("variable", ["SYNCD_EXCLUDE", "SYNCD_INCLUDE"])
def test_a_bad_pattern_from_the_environment_names_the_variable(
    tmp_path: Path, variable: str
) -> None:
    """It said `pairs[0].exclude[1]`, a key of a file there is none of."""
    local, remote = _two_folders(tmp_path)
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path}/state.db",
        variable: "*.tmp, [z-a]",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    done = syncd("check", env=env, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"syncd: environment: {variable}: '[z-a]': not a valid pattern (bad character range z-a)\n"
    )


@pytest.mark.parametrize("command", ["once", "check"])
def test_a_missing_local_root_from_the_environment_names_the_variable(
    tmp_path: Path, command: str
) -> None:
    """Issue 9: a bad value from the environment exits 2 naming the variable. `once` named
    SYNCD_LOCAL, but `check` said `pairs[0].local`, a key of a file there is none of."""
    remote = tmp_path / "remote"
    remote.mkdir()
    env = {
        "SYNCD_LOCAL": str(tmp_path / "gone"),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path}/state.db",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    done = syncd(command, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert f"SYNCD_LOCAL: {tmp_path / 'gone'} does not exist" in said
    assert "pairs[0]" not in said


@pytest.mark.parametrize(
    ("remote", "said"),
    [
        ("local/sub", "SYNCD_REMOTE ({local}/sub) is inside SYNCD_LOCAL ({local})"),
        ("local", "SYNCD_REMOTE and SYNCD_LOCAL are the same folder ({local})"),
    ],
)
def test_a_remote_inside_the_local_root_from_the_environment_names_the_variables(
    tmp_path: Path, remote: str, said: str
) -> None:
    """Issue 9: invalid values name the variable. The overlap check named
    `pairs: pairs[0].remote (…) is inside pairs[0].local (…)`, keys of a file there is none of."""
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{tmp_path / remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path}/state.db",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    done = syncd("once", env=env, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == f"syncd: environment: {said.format(local=local)}\n"


@pytest.mark.parametrize(
    "command",
    [["check", "-c", "CONFIG"], ["once", "-c", "CONFIG"], ["upload", "TMP", "REMOTE"]],
)
def test_a_remote_urls_password_is_never_printed(tmp_path: Path, command: list[str]) -> None:
    remote = "s3://user:s3cretpw@team-bucket/x"
    path = write(tmp_path, PAIR.replace("s3://team-bucket/docs/", remote))
    given = {"CONFIG": str(path), "TMP": str(tmp_path), "REMOTE": remote}
    done = syncd(*[given.get(arg, arg) for arg in command], timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("syncd: ") and len(done.stderr.splitlines()) == 1
    assert "'user:***@team-bucket'" in done.stderr and "s3cretpw" not in done.stderr


BAD_URL = "http://me:s3cretpw@not a url"


class BadEndpoint(NamedTuple):
    """Where a malformed endpoint sits, and what the one line must name."""

    remote: str
    options: dict[str, str]
    env: dict[str, str]
    named: str


#: Each is a config error, whether the option, a variable or the SDK's profile has it.
BAD_ENDPOINTS = {
    "option": BadEndpoint(
        "s3://team-bucket", {"endpoint_url": BAD_URL}, {}, "pairs[0].options.endpoint_url"
    ),
    "variable": BadEndpoint(
        "s3://team-bucket", {}, {"AWS_ENDPOINT_URL": BAD_URL}, "AWS_ENDPOINT_URL"
    ),
    "profile": BadEndpoint(
        "s3://team-bucket", {"profile": "bad"}, {}, "Invalid endpoint: http://me:***@"
    ),
    "gcs": BadEndpoint(
        "gs://team-bucket", {}, {"STORAGE_EMULATOR_HOST": "localhost:4443"}, "STORAGE_EMULATOR_HOST"
    ),
}


@pytest.mark.parametrize(
    ("command", "case"),
    [
        pytest.param(command, case, id=f"{name}-{command}")
        for name, case in BAD_ENDPOINTS.items()
        for command in ("check", "once", "run", "upload")
        # `syncd upload` takes no pair options: only a variable or a profile reaches it.
        if not (command == "upload" and case.options.get("endpoint_url"))
    ],
)
def test_a_malformed_endpoint_is_a_config_error(
    tmp_path: Path, command: str, case: BadEndpoint
) -> None:
    """Exit 2 and one line that names the option or the variable, never a traceback (each
    SDK fails its own way on one) nor the URL's password."""
    remote, options, env, named = case
    (tmp_path / "docs").mkdir()
    (tmp_path / "aws-config").write_text(f"[profile bad]\nendpoint_url = {BAD_URL}\n")
    pair = PAIR.replace("s3://team-bucket/docs/", remote)
    if options:
        pair += "    options: {" + ", ".join(f"{k}: '{v}'" for k, v in options.items()) + "}\n"
    path = write(tmp_path, f"state: sqlite:///TMP/state.db\nsocket: TMP/s.sock\n{pair}")
    environment = {
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_ENDPOINT_URL": "",
        "AWS_ENDPOINT_URL_S3": "",
        "STORAGE_EMULATOR_HOST": "",
        **env,
    }
    if command == "upload":
        args: list[str | Path] = ["upload", tmp_path / "docs", remote]
        if options.get("profile"):
            environment["AWS_PROFILE"] = options["profile"]
    else:
        args = [command, "-c", path]

    done = syncd(*args, env=environment, timeout=60)

    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert len(output.splitlines()) == 1 and named in output, output
    assert "Traceback" not in output and "s3cretpw" not in output, output


@pytest.mark.parametrize("command", ["once", "check", "run"])
def test_an_unknown_s3_profile_names_the_option(tmp_path: Path, command: str) -> None:
    """Issue 9's S3 named profile: a name the AWS files lack is a config error (exit 2) that
    names `pairs[0].options.profile`, as every other bad option; it said only "cannot set up
    the S3 client: The config profile (nosuch) could not be found"."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "aws-config").write_text("[profile work]\nregion = eu-west-1\n")
    pair = PAIR + "    options: {profile: nosuch}\n"
    path = write(tmp_path, f"state: sqlite:///TMP/state.db\nsocket: TMP/s.sock\n{pair}")
    environment = {
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-config"),
    }
    done = syncd(command, "-c", path, env=environment, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "pairs[0].options.profile: no profile 'nosuch' in the AWS config files" in output
    assert "Traceback" not in output


def test_an_unknown_strategy_reads_exactly_as_documented(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR + "    conflict: newest\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: pairs[0].conflict: must be one of timestamp_wins, local_wins, cloud_wins, "
        "manual, version_preserve (got 'newest')"
    )
    assert caught.value.key == "pairs[0].conflict"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file$"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/urandom", "folder"])
@pytest.mark.parametrize("command", ["check", "status"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str, command: str
) -> None:
    """A FIFO with no writer blocked in open() for ever, and /dev/zero filled memory (RSS ~600
    MB/s): now one line, exit 2, before anything is read."""
    if kind == "fifo":
        path, what = tmp_path / "fifo", "file is empty"
        os.mkfifo(path)
    elif kind == "folder":
        path, what = tmp_path, "is a directory, not a config file"
    else:
        path, what = Path(kind), "is not a regular file (it is a device)"
    done = syncd(command, "-c", path, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stdout + done.stderr == f"syncd: {path}: {what}\n"


def test_a_config_from_a_pipe_is_read(tmp_path: Path) -> None:
    """`syncd check -c <(envsubst < tpl)` and `-c /dev/stdin` give a pipe: it is read."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "docs").mkdir()
    text = PAIR.replace("s3://team-bucket/docs/", f"file://{remote}").replace("TMP", str(tmp_path))
    text += f"state: sqlite:///{tmp_path}/state.db\nsocket: {tmp_path}/s.sock\n"
    done = subprocess.run(
        [*SYNCD, "check", "-c", "/dev/stdin"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_config_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    """A 50 MB file of comments took 11 s of CPU at every command; the cap is said."""
    message = load_error(tmp_path, PAIR + ("#" * 1023 + "\n") * 1025)
    assert message.endswith(": is larger than 1 MiB, too large for a config file"), message


def test_a_folder_at_the_default_config_path_is_said_to_be_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was skipped, and the error told the user to create the file that was there."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    default = tmp_path / "syncd" / "syncd.yaml"
    default.mkdir(parents=True)
    done = syncd("check", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"syncd: {default}: is a directory, not a config file\n"


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_no_config_file_at_the_default_path_leaves_the_environments_config(
    tmp_path: Path, kind: str
) -> None:
    """A folder there (Docker makes one when it bind-mounts a host file that is not there) or a
    dangling dotfile link is no config file, and README says the SYNCD_* variables make the
    config when there is none: it took precedence, and a container configured by its
    environment stopped with exit 2."""
    default = tmp_path / "xdg" / "syncd" / "syncd.yaml"
    default.parent.mkdir(parents=True)
    if kind == "folder":
        default.mkdir()
    else:
        default.symlink_to(tmp_path / "gone.yaml")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / "remote").mkdir()
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "SYNCD_LOCAL": str(tmp_path / "data"),
        "SYNCD_REMOTE": f"file://{tmp_path}/remote",
        "SYNCD_STATE": f"sqlite:///{tmp_path}/st/state.db",
    }
    done = syncd("once", env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "remote" / "a.txt").read_text() == "a"


def test_config_error_survives_pickling() -> None:
    error = ConfigError("syncd.yaml", "unknown key", key="workerz")
    assert str(pickle.loads(pickle.dumps(error)))  # noqa: S301 - our own bytes == "syncd.yaml: workerz: unknown key"


# -- ${VAR} substitution ----------------------------------------------------------------------


def test_variables_and_defaults_are_substituted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUCKET", "team-bucket")
    config = load_config(
        write(
            tmp_path,
            """\
            workers: ${SYNCD_TEST_VAR:3}
            pairs:
              - name: docs
                local: TMP/docs
                remote: s3://${BUCKET}/docs/
                options: {endpoint_url: "${EP:http://127.0.0.1:9000}"}
            """,
        )
    )
    assert config.workers == 3
    assert config.pairs[0].remote == "s3://team-bucket/docs/"
    assert isinstance(config.pairs[0].options, S3Options)
    assert config.pairs[0].options.endpoint_url == "http://127.0.0.1:9000"


def test_a_set_variable_wins_over_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EP", "http://minio:9000")
    config = load_config(write(tmp_path, PAIR + '    options: {endpoint_url: "${EP:x}"}\n'))
    assert isinstance(config.pairs[0].options, S3Options)
    assert config.pairs[0].options.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://fallback:9000"),
        ("", "http://fallback:9000"),
        ("http://set:1", "http://set:1"),
    ],
    ids=["unset", "empty", "set"],
)
def test_the_shells_colon_dash_default_is_understood_as_the_shell_means_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    """`${EP:-http://fallback:9000}` gave `-http://fallback:9000`: now the default, when EP
    is unset or empty, as in a shell."""
    if value is None:
        monkeypatch.delenv("EP", raising=False)
    else:
        monkeypatch.setenv("EP", value)
    text = PAIR + '    options: {endpoint_url: "${EP:-http://fallback:9000}"}\n'
    config = load_config(write(tmp_path, text))
    assert isinstance(config.pairs[0].options, S3Options)
    assert config.pairs[0].options.endpoint_url == expected


def test_a_value_with_yaml_syntax_cannot_change_the_structure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Substituted into the raw text, this would add keys; on the parsed scalar it stays a name.
    monkeypatch.setenv("SYNCD_TEST_VAR", "x'\n    conflict: manual #: {]")
    path = write(tmp_path, PAIR + "    exclude: ['${SYNCD_TEST_VAR}']\n")
    [pair] = load_config(path).pairs
    assert pair.exclude == ["x'\n    conflict: manual #: {]"]
    assert pair.conflict == "timestamp_wins"


def test_double_dollar_escapes_and_values_are_not_expanded_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCD_TEST_VAR", "${BUCKET}")
    path = write(tmp_path, PAIR + "    exclude: ['$${HOME}/x', 'cost$5', '${SYNCD_TEST_VAR}']\n")
    assert load_config(path).pairs[0].exclude == ["${HOME}/x", "cost$5", "${BUCKET}"]


@pytest.mark.parametrize(
    "value", ["${SYNCD_TEST_VAR:${BUCKET:/x}}", "${SYNCD_TEST_VAR:${BUCKET}}", "a${EP:-${BUCKET}}b"]
)
def test_a_nested_reference_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    """`${A:${B:x}}` became the literal text `${B:x}}`, a relative path, with no error."""
    message = load_error(tmp_path, PAIR.replace("TMP/docs", f"'{value}'"))
    assert ": pairs[0].local: " in message, message
    assert message.endswith("nested ${...} is not supported (a default is plain text)"), message


def test_keys_are_not_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_VAR", "workers")
    message = load_error(tmp_path, PAIR + "${SYNCD_TEST_VAR}: 4\n")
    assert ": ${SYNCD_TEST_VAR}: unknown key" in message


# -- secrets never reach a message ------------------------------------------------------------

SECRET = "PLANTED-SECRET-3f9a1c"


@pytest.mark.parametrize(
    "options",
    [
        f"{{secret_access_key: {SECRET}, verify_ssl: definitely}}",
        f"{{secret_access_key: {SECRET}, storage_class: COLD}}",
        f"{{secret_access_key: {SECRET}, secret_acess_key: {SECRET}}}",
        f"{{secret_access_key: [{SECRET}]}}",
        "{secret_access_key: 31415926535}",
    ],
    ids=["bad bool beside", "bad choice beside", "typo'd copy", "secret of wrong type", "number"],
)
def test_option_values_never_appear_in_errors(tmp_path: Path, options: str) -> None:
    message = load_error(tmp_path, PAIR + f"    options: {options}\n")
    assert "pairs[0].options." in message
    assert SECRET not in message and "31415926535" not in message, message


def test_pydantic_own_report_hides_option_values_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        PairConfig.model_validate(
            {
                "name": "a",
                "local": tmp_path,
                "remote": "s3://team-bucket",
                "options": {"secret_access_key": SECRET, "verify_ssl": "definitely"},
            }
        )
    assert SECRET not in str(caught.value)


# -- the parts commands read alone -------------------------------------------------------------

# The service's secrets come from its environment (EnvironmentFile=); an operator's shell lacks
# them. Unknown keys and bad values beside are the full load's business too.
SERVICE_CONFIG = """\
state: sqlite:///${SYNCD_TEST_DIR:TMP}/state.db
socket: TMP/run/syncd.sock
workerz: 4
pairs:
  - name: docs
    local: TMP/docs
    remote: s3://${BUCKET}/docs/
    options: {access_key_id: "${SYNCD_TEST_VAR}", secret_access_key: "${SYNCD_TEST_VAR}"}
"""


def test_a_part_reads_its_keys_alone(tmp_path: Path) -> None:
    path = write(tmp_path, SERVICE_CONFIG)
    with pytest.raises(ConfigError, match=r"\$\{BUCKET\} is not set"):
        load_config(path)
    assert load_config_part(path, SocketPart).socket == tmp_path / "run" / "syncd.sock"
    assert load_config_part(path, StatePart).state == f"sqlite:///{tmp_path}/state.db"
    places = load_config_part(path, PairsPart)
    assert [(p.name, p.local) for p in places.pairs] == [("docs", tmp_path / "docs")]
    defaults = load_config_part(write(tmp_path, "pairs: [{name: a}]\n"), SocketPart)
    assert defaults.socket == default_socket_path()


@pytest.mark.parametrize(
    ("text", "part", "message"),
    [
        ("socket: ${SYNCD_TEST_VAR}\n", SocketPart, "socket: ${SYNCD_TEST_VAR} is not set"),
        ("socket: TMP/" + "s" * 120 + "\n", SocketPart, "socket: TMP/ss"),
        ("socket: [a]\n", SocketPart, "socket: must be a path"),
        ("state: not a url\n", StatePart, "state: not a database URL"),
        ("pairs: [{name: 'a b', local: /x}]\n", PairsPart, "pairs[0].name: must be 1-64"),
        ("pairs: [{name: a, local: '${BUCKET}'}]\n", PairsPart, "pairs[0].local: ${BUCKET}"),
        ("socket: [\n", SocketPart, "line 2: invalid YAML"),
        ("- socket\n", SocketPart, "must be a mapping of keys"),
    ],
    ids=["unset", "too long", "not a path", "bad state", "bad name", "unset local", "yaml", "list"],
)
def test_a_part_is_refused_for_what_it_reads(
    tmp_path: Path, text: str, part: type[SocketPart | StatePart | PairsPart], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config_part(path, part)
    assert str(caught.value).startswith(f"{path}: {message.replace('TMP', str(tmp_path))}")


@pytest.mark.parametrize(
    ("command", "key"),
    [(["status"], "socket"), (["pause"], "socket"), (["conflicts"], "state")],
)
def test_a_command_that_reads_a_part_exits_2_naming_it(
    tmp_path: Path, command: list[str], key: str
) -> None:
    path = write(tmp_path, PAIR + f"{key}: ${{SYNCD_TEST_VAR}}\n")
    done = syncd(*command, "-c", path, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        done.stderr == f"syncd: {path}: {key}: ${{SYNCD_TEST_VAR}} is not set and has no default\n"
    )


# -- the Python API ---------------------------------------------------------------------------


def test_load_config_dict_validates_like_a_file(tmp_path: Path) -> None:
    data = {"pairs": [{"name": "a", "local": str(tmp_path / "a"), "remote": "s3://team-bucket"}]}
    assert isinstance(load_config_dict(data), Config)
    with pytest.raises(ConfigError, match=r"^<dict>: pairs\[0\]\.remote: required key is missing$"):
        load_config_dict({"pairs": [{"name": "a", "local": str(tmp_path)}]})
    with pytest.raises(ConfigError, match=r"^api: workerz: unknown key"):
        load_config_dict({**data, "workerz": 1}, source="api")


def test_the_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PAIR))
    with pytest.raises(ValidationError):
        config.workers = 2


# -- finding the config file ------------------------------------------------------------------


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert resolve_config_path(None) is None  # nothing anywhere

    default = xdg / "syncd" / "syncd.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(PAIR)
    assert resolve_config_path(None) == default

    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "from-env.yaml"))
    assert resolve_config_path(None) == tmp_path / "from-env.yaml"  # even before it exists

    assert resolve_config_path(str(tmp_path / "explicit.yaml")) == tmp_path / "explicit.yaml"


def test_config_home_defaults_to_dot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".config" / "syncd" / "syncd.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(PAIR)
    assert resolve_config_path(None) == default
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # XDG says: ignore a relative value
    assert resolve_config_path(None) == default


# -- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (1234, 1234),
        ("1234", 1234),
        ("10B", 10),
        ("1KiB", KiB),
        ("64MiB", 64 * MiB),
        ("16 MiB", 16 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("2TiB", 2 * TiB),
        ("1KB", 1000),
        ("20MB", 20_000_000),
        ("3gb", 3_000_000_000),
        ("1TB", 10**12),
        ("64mib", 64 * MiB),
        (" 8 kib ", 8 * KiB),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "MiB", "64 megs", "-1", -1, "1.2.3MB", "0.3B", True, None, [1], "1e3", "12 MiB/s"]
)
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"size|bytes|negative"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("20MB/s", 20_000_000),
        ("20MB", 20_000_000),
        ("512 KiB/s", 512 * KiB),
        (1000, 1000),
        ("1000", 1000),
        ("1.5MiB / s", 3 * MiB // 2),
        ("1mb/sec", 1_000_000),
    ],
)
def test_parse_rate(text: str | int, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "/s", "20MB/min", "20MB/s/s", False])
def test_parse_rate_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_local_root_missing_or_not_a_folder_is_a_config_error(tmp_path: Path, kind: str) -> None:
    """Issue 6: `once` stops with exit 2 and one line naming `pairs[0].local`, before anything
    is listed or deleted; `check` says it on the pair's line, exit 2 too."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "kept.txt").write_text("kept")
    if kind == "a file":
        (tmp_path / "docs").write_text("not a folder")
    path = write(tmp_path, PAIR.replace("s3://team-bucket/docs/", f"file://{remote}"))
    problem = "is not a folder" if kind == "a file" else "does not exist"

    done = syncd("once", "-c", path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"syncd: {path}: pairs[0].local: {tmp_path / 'docs'} {problem}"
    ]
    assert (remote / "kept.txt").read_text() == "kept"

    checked = syncd("check", "-c", path, timeout=60)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"pairs[0].local: {tmp_path / 'docs'} {problem}" in checked.stdout


def test_where_a_bucket_is_served_names_no_secret() -> None:
    """Part of what a pair's state is bound to (`served_by`): the endpoint cut to scheme,
    host, port and path; the Azure account, never its key."""
    from syncd.providers.options import AzureOptions, FileOptions, GCSOptions, S3Options, served_by

    s3 = S3Options(endpoint_url="http://user:pw@Minio.local:9000/?token=x")
    assert served_by(s3, {}) == "http://minio.local:9000"
    assert served_by(S3Options(), {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}) == (
        "http://127.0.0.1:9000"
    )
    assert served_by(S3Options(), {}) is None
    assert served_by(GCSOptions(), {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"}) == (
        "http://127.0.0.1:4443"
    )
    conn = "DefaultEndpointsProtocol=https;AccountName=team;AccountKey=c2VjcmV0;EndpointSuffix=x"
    assert served_by(AzureOptions(connection_string=conn), {}) == "https://team.blob.x"
    emulator = "AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    assert served_by(AzureOptions(connection_string=emulator), {}) == (
        "http://127.0.0.1:10000/devstoreaccount1"
    )
    assert served_by(AzureOptions(account_name="team"), {}) == (
        "https://team.blob.core.windows.net"
    )
    assert served_by(FileOptions(), {"AWS_ENDPOINT_URL": "http://x"}) is None


@pytest.mark.parametrize("key", ["bandwidth_limit", "upload_limit", "download_limit"])
def test_a_rate_of_0_is_no_limit(tmp_path: Path, key: str) -> None:
    """rclone's `--bwlimit 0` and Syncthing's `maxSendKbps: 0` mean no limit; 0 was refused."""
    pair = {"name": "p", "local": str(tmp_path / "l"), "remote": f"file://{tmp_path}/r"}
    config = load_config_dict({"pairs": [pair], key: 0}, expand_env=False)
    assert getattr(config, key) is None


def test_bwlimit_0_copies_with_no_limit(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    (local / "a.txt").write_bytes(b"a")
    done = syncd("upload", str(local), f"file://{remote}", "--bwlimit", "0", timeout=60)
    assert done.returncode == 0, done.stderr
    assert (remote / "a.txt").read_bytes() == b"a"


def test_a_boolean_from_a_variable_is_read_as_yaml_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${VAR}` substitution gives text, quoted or not: `remote_trash: ${T}` with T=false was
    refused once booleans became strict, as was the quoted form the YAML hint suggests."""
    monkeypatch.setenv("T", "false")
    monkeypatch.setenv("CB", "True")
    text = (
        "pairs:\n"
        f"  - {{name: p, local: {tmp_path}/l, remote: 's3://bucket/p/',\n"
        '     remote_trash: "${T}", options: {create_bucket: "${CB}"}}\n'
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    pair = load_config(path).pairs[0]
    assert pair.remote_trash is False
    assert pair.options.create_bucket is True  # type: ignore[union-attr]


@pytest.mark.parametrize("prefix", ["x?versionId=1", "x#frag", "q?a#b/c"])
def test_a_bucket_prefix_takes_question_marks_and_hashes_as_they_are(prefix: str) -> None:
    """Legal in keys, and a prefix is not %-decoded: refused, such a prefix had no spelling."""
    from syncd.providers.url import parse_remote_url

    url = parse_remote_url(f"s3://team-bucket/{prefix}")
    assert (url.bucket, url.prefix) == ("team-bucket", prefix + "/")

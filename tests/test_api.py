"""The Python API: `from syncd import Engine`, its constructors, its typed report, one-way
copies, retries, status and statistics — and config from the environment alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import syncd, tree
from remotes import S3Remote, remote_for

import syncd as api
from syncd import ConfigError, Engine, Report
from syncd.daemon.lock import AlreadyRunning
from syncd.providers.errors import InvalidRequest
from syncd.providers.local import FileProvider


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    return local, remote


def _config(tmp_path: Path, local: Path, remote_url: str, **pair: Any) -> dict[str, Any]:
    return {
        "state": f"sqlite:///{tmp_path / 'state.db'}",
        "socket": str(tmp_path / "syncd.sock"),
        "pairs": [{"name": "docs", "local": str(local), "remote": remote_url, **pair}],
    }


def test_sync_once_reports_typed_totals(tmp_path: Path, s3_bucket: Any) -> None:
    remote = S3Remote(s3_bucket)
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.txt").write_bytes(b"alpha")
    remote.put("b.txt", b"beta, longer")
    data = _config(tmp_path, local, remote.url, options=remote.options)

    with Engine.from_config_dict(data) as engine:
        report = engine.sync_once()
        assert isinstance(report, Report)
        assert (report.files_up, report.bytes_up) == (1, 5)
        assert (report.files_down, report.bytes_down) == (1, 12)
        assert report.elapsed_s > 0 and report.speed_bps > 0
        assert report.failures == [] and report.conflicts == [] and report.held_deletions == {}
        assert report.exit_code == 0

        # A second pass on the same engine reports only its own work.
        again = engine.sync_once()
        assert (again.files_up, again.files_down, again.bytes_up) == (0, 0, 0)

        status = engine.status()
        (pair,) = status["pairs"]
        assert pair["synced_files"] == 2
        assert pair["totals"]["since_start"]["files_up"] == 1
        assert pair["totals"]["since_install"]["bytes_down"] == 12
    assert remote.get("a.txt") == b"alpha"
    assert (local / "b.txt").read_bytes() == b"beta, longer"


def test_conflicts_and_statistics_per_strategy(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    (local / "f.txt").write_bytes(b"local version")
    (remote / "f.txt").write_bytes(b"remote version!")
    data = _config(tmp_path, local, f"file://{remote}", conflict="version_preserve")
    with Engine.from_config_dict(data) as engine:
        report = engine.sync_once()
    (conflict,) = report.conflicts
    assert (conflict.pair, conflict.path, conflict.strategy) == (
        "docs",
        "f.txt",
        "version_preserve",
    )
    assert "older" in conflict.outcome
    # Totals since install survive a new engine (they live in the state).
    with Engine.from_config_dict(data) as engine:
        installed = engine.status()["pairs"][0]["totals"]["since_install"]
        started = engine.status()["pairs"][0]["totals"]["since_start"]
    assert installed["conflicts_resolved"] == {"version_preserve": 1}
    assert started["conflicts_resolved"] == {}


def test_manual_conflicts_are_reported_open(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    (local / "f.txt").write_bytes(b"mine")
    (remote / "f.txt").write_bytes(b"theirs")
    data = _config(tmp_path, local, f"file://{remote}", conflict="manual")
    with Engine.from_config_dict(data) as engine:
        report = engine.sync_once()
    (conflict,) = report.conflicts
    assert conflict.outcome.startswith("open: ")
    assert report.exit_code == 4


def test_a_pass_that_works_again_clears_the_pairs_fault(tmp_path: Path) -> None:
    """An engine kept by a script: a pass that failed for the pair (its remote folder gone)
    left the fault standing, and every later pass reported it (exit 1) though it synced."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_bytes(b"a")
    away = tmp_path / "unmounted"
    remote.rename(away)
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        failed = engine.sync_once()
        assert failed.exit_code == 1
        assert failed.pairs[0].fault is not None and "does not exist" in failed.pairs[0].fault
        away.rename(remote)
        again = engine.sync_once()
        assert (again.exit_code, again.pairs[0].fault) == (0, None)
        assert engine.status()["pairs"][0]["last_error"] is None
    assert tree(remote) == {"a.txt": b"a"}


def test_failures_are_typed_and_retried(tmp_path: Path, s3_bucket: Any) -> None:
    remote = S3Remote(s3_bucket)
    too_long = "n" * 300 + ".txt"  # no local filesystem holds such a name
    remote.put(too_long, b"cannot land")
    remote.put("fine.txt", b"fine")
    local = tmp_path / "local"
    local.mkdir()
    data = _config(tmp_path, local, remote.url, options=remote.options)
    with Engine.from_config_dict(data) as engine:
        report = engine.sync_once()
        (failure,) = report.failures
        assert isinstance(failure, api.Failure)
        assert (failure.path, failure.op, failure.attempts) == (too_long, "download", 1)
        assert report.exit_code == 1 and report.files_down == 1

        still = engine.retry_failed()
        assert [f.attempts for f in still.failures] == [2]
        remote.delete(too_long)
        assert engine.retry_failed().failures == []
    assert tree(local) == {"fine.txt": b"fine"}


def test_upload_and_download_through_the_api(tmp_path: Path) -> None:
    source, remote = tmp_path / "src", tmp_path / "remote"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "x.bin").write_bytes(b"x" * 1000)
    (source / "skip.tmp").write_bytes(b"no")
    data = _config(tmp_path, tmp_path / "unused", f"file://{tmp_path / 'unused-remote'}")
    (tmp_path / "unused").mkdir()
    (tmp_path / "unused-remote").mkdir()
    with Engine.from_config_dict(data) as engine:
        up = engine.upload(source, f"file://{remote}", exclude=["*.tmp"])
        assert (up.files_up, up.bytes_up) == (1, 1000)
        down = engine.download(f"file://{remote}", tmp_path / "back")
        assert down.files_down == 1
    assert tree(remote) == {"sub/x.bin": b"x" * 1000}
    assert tree(tmp_path / "back") == {"sub/x.bin": b"x" * 1000}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"exclude": "*.tmp"}, r"exclude: must be a list of patterns, not one string: write \['"),
        ({"include": "*.txt"}, r"include: must be a list of patterns, not one string"),
        ({"exclude": {"*.tmp"}}, r"exclude: must be a list of patterns \(got set\)"),
        ({"include": ["*.txt", 1]}, r"include\[1\]: must be a string"),
    ],
)  # fmt: skip
def test_one_way_patterns_given_as_one_string_are_refused(
    tmp_path: Path, given: dict[str, Any], said: str
) -> None:
    """`exclude="*.tmp"` (a string, not a list) was read as the patterns `*`, `.`, `t`, …:
    every file left out, 0 uploaded and exit 0; `include="*.txt"` let everything in. Refused
    as the config refuses it, in the words of the call (no `command line: pairs[0]…`)."""
    local, remote = _folders(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "src" / "c.tmp").write_text("c")
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        with pytest.raises(ConfigError, match=rf"^Engine\.upload: {said}") as raised:
            engine.upload(tmp_path / "src", f"file://{tmp_path / 'out'}", **given)
        assert "\n" not in str(raised.value)
        with pytest.raises(ConfigError, match=rf"^Engine\.download: {said}"):
            engine.download(f"file://{tmp_path / 'src'}", tmp_path / "back", **given)
    assert not (tmp_path / "out").exists() and not (tmp_path / "back").exists()


def test_one_way_config_errors_name_the_arguments_of_the_call(tmp_path: Path) -> None:
    """A script called `engine.upload(local_dir, remote_url, options=…)`: its ConfigError
    names those, not the `command line` and `pairs[0].remote` of the CLI's config."""
    local, remote = _folders(tmp_path)
    (tmp_path / "src").mkdir()
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        with pytest.raises(ConfigError, match=r"^Engine\.upload: remote_url: unknown scheme"):
            engine.upload(tmp_path / "src", "bogus://x")
        with pytest.raises(
            ConfigError, match=r"^Engine\.upload: remote_url \(\S+\) is inside local_dir"
        ):
            engine.upload(tmp_path / "src", f"file://{tmp_path / 'src' / 'sub'}")
        with pytest.raises(ConfigError, match=r"^Engine\.download: options\.bogus: unknown key"):
            engine.download(f"file://{remote}", tmp_path / "back", options={"bogus": 1})
        with pytest.raises(
            InvalidRequest,  # a PairRemoteError: a ConfigError and still an InvalidRequest
            match=r"^Engine\.download: options\.connection_string: the Azure connection",
        ) as raised:
            engine.download("az://box/p/", tmp_path / "back", options={"connection_string": "x"})
        assert isinstance(raised.value, ConfigError)


def test_an_engine_holds_its_state(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    data = _config(tmp_path, local, f"file://{remote}")
    with Engine.from_config_dict(data), pytest.raises(AlreadyRunning):
        Engine.from_config_dict(data)
    with Engine.from_config_dict(data) as engine:  # released on close
        assert engine.sync_once().exit_code == 0


def test_a_closed_engine_and_an_unknown_pair_raise(tmp_path: Path) -> None:
    """A pass on a closed engine reported exit_code 0 having done nothing, and an unknown
    pair was a bare KeyError: a script must not take either for "in sync"."""
    local, remote = _folders(tmp_path)
    engine = Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}"))
    with pytest.raises(ValueError, match="no pair named 'nope'"):
        engine.sync_once(pair="nope")
    engine.close()
    engine.close()  # twice is fine
    (local / "new.txt").write_text("new")
    with pytest.raises(RuntimeError, match="closed"):
        engine.sync_once()
    with pytest.raises(RuntimeError, match="closed"):
        engine.retry_failed()
    with pytest.raises(RuntimeError, match="closed"):  # the one-way copies as well
        engine.upload(local, f"file://{tmp_path / 'elsewhere'}")
    with pytest.raises(RuntimeError, match="closed"):
        engine.download(f"file://{remote}", tmp_path / "back")
    assert not (remote / "new.txt").exists()
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "back").exists()


def test_an_engine_that_fails_on_a_pair_releases_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair that cannot be set up fails the constructor: the pairs before it close their
    clients, the requeue thread stops, the state closes and its lock is free again (a script
    that catches the error and carries on leaked all of them)."""
    local, remote = _folders(tmp_path)
    data = _config(tmp_path, local, f"file://{remote}")
    (tmp_path / "boxes").mkdir()
    data["pairs"].append(
        {"name": "boxes", "local": str(tmp_path / "boxes"), "remote": "az://box/",
         "options": {"connection_string": "not a connection string"}}
    )  # fmt: skip
    closed: list[str] = []
    real_close = FileProvider.close

    def close(self: FileProvider) -> None:
        closed.append(self.root)
        real_close(self)

    monkeypatch.setattr(FileProvider, "close", close)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(InvalidRequest, match=r"pairs\[1\]\.options\.connection_string"):
        Engine.from_config_dict(data)
    assert closed == [str(remote)]
    assert {t.name for t in threading.enumerate()} <= before
    del data["pairs"][1]
    with Engine.from_config_dict(data) as engine:  # the state and its lock are free
        assert engine.sync_once().exit_code == 0


#: A pair option its provider cannot use: (remote, options, the key the error names).
BAD_OPTIONS = [
    ("s3://bkt/p/", {"profile": "nope"}, "options.profile"),
    ("gs://bkt/p/", {"credentials_file": "/nonexistent/key.json"}, "options.credentials_file"),
]


@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=[option for _, _, option in BAD_OPTIONS])
@pytest.mark.parametrize("source", ["dict", "file"])
def test_a_bad_provider_option_is_a_config_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bad: tuple[str, dict[str, str], str],
    source: str,
) -> None:
    """README: "A bad config raises `syncd.ConfigError`, whose message names the key". An
    option the provider refused raised InvalidRequest, no ConfigError, where the CLI says it
    as a config error (exit 2, naming `pairs[0].options.KEY`)."""
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    remote_url, options, option = bad
    local, _ = _folders(tmp_path)
    data = _config(tmp_path, local, remote_url, options=options)
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"^pair 'docs': pairs\[0\]\.{option}: ") as raised:
        Engine.from_config_dict(data) if source == "dict" else Engine.from_config_file(path)
    assert raised.value.key == f"pairs[0].{option}"
    assert isinstance(raised.value, InvalidRequest)  # what scripts caught before
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{tmp_path}/remote")):
        pass  # the state and its lock are free again


def test_a_profile_from_the_environment_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`from_env` as the other constructors: the AWS_PROFILE variable named the profile."""
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_PROFILE", "nope")
    local, _ = _folders(tmp_path)
    environ = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": "s3://bkt/p/",
        "SYNCD_STATE": f"sqlite:///{tmp_path / 'state.db'}",
    }
    with pytest.raises(ConfigError, match="the AWS_PROFILE variable: no profile 'nope'"):
        Engine.from_env(environ)


def test_from_config_file(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, local, f"file://{remote}")))
    (local / "a.txt").write_bytes(b"a")
    with Engine.from_config_file(path) as engine:
        assert engine.sync_once().files_up == 1
    path.write_text("pairs: [{name: x}]\n")
    with pytest.raises(ConfigError, match=r"pairs\[0\]\.local"):
        Engine.from_config_file(path)


def test_api_is_exported_and_typed() -> None:
    assert set(api.__all__) >= {"Engine", "Report", "ConflictOutcome", "Failure", "ConfigError"}
    assert (Path(api.__file__).parent / "py.typed").exists()


# -- config from the environment -------------------------------------------------------------


def test_from_env(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    (local / "keep.txt").write_bytes(b"keep")
    (local / "skip.log").write_bytes(b"skip")
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path / 'env.db'}",
        "SYNCD_CONFLICT": "manual",
        "SYNCD_DIRECTION": "upload",
        "SYNCD_WORKERS": "3",
        "SYNCD_POLL_INTERVAL": "2.5",
        "SYNCD_EXCLUDE": "*.log, cache/",
    }
    with Engine.from_env(env) as engine:
        pair = engine.config.pairs[0]
        assert (pair.conflict, pair.direction, pair.poll_interval) == ("manual", "upload", 2.5)
        assert pair.exclude == ["*.log", "cache/"] and engine.config.workers == 3
        engine.sync_once()
    assert tree(remote) == {"keep.txt": b"keep"}


def test_from_env_takes_include_filters_too(tmp_path: Path) -> None:
    """Include filters came with config files and `--include`, but the environment alone (a
    container's only config) could not say one: SYNCD_INCLUDE was ignored and every file
    went up. It is the comma-separated `include`, as SYNCD_EXCLUDE is `exclude`."""
    local, remote = _folders(tmp_path)
    (local / "raw").mkdir()
    (local / "t.parquet").write_bytes(b"table")
    (local / "raw" / "r.csv").write_bytes(b"raw")
    (local / "raw" / "r.tmp").write_bytes(b"tmp")
    (local / "notes.txt").write_bytes(b"notes")
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path / 'env.db'}",
        "SYNCD_INCLUDE": "*.parquet, raw/**",
        "SYNCD_EXCLUDE": "*.tmp",
    }
    with Engine.from_env(env) as engine:
        assert engine.config.pairs[0].include == ["*.parquet", "raw/**"]
        assert engine.sync_once().exit_code == 0
    assert tree(remote) == {"t.parquet": b"table", "raw/r.csv": b"raw"}


@pytest.mark.parametrize(
    ("variable", "value", "phrase"),
    [
        ("SYNCD_WORKERS", "many", "whole number"),
        ("SYNCD_CONFLICT", "newest", "must be one of"),
        ("SYNCD_POLL_INTERVAL", "-1", "greater than 0"),
        ("SYNCD_REMOTE", "ftp://host/x", "unknown scheme"),
        ("SYNCD_DIRECTION", "sideways", "must be one of"),
        ("SYNCD_STATE", "not a url", "not a database URL"),
    ],
)
def test_a_bad_variable_exits_2_naming_it(
    tmp_path: Path, variable: str, value: str, phrase: str
) -> None:
    env = {
        "SYNCD_LOCAL": str(tmp_path),
        "SYNCD_REMOTE": f"file://{tmp_path}/remote",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
        variable: value,
    }
    result = syncd("once", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"syncd: environment: {variable}: "), result.stderr
    assert phrase in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_syncd_once_runs_from_the_environment_alone(tmp_path: Path) -> None:
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_bytes(b"from env")
    env = {
        "SYNCD_LOCAL": str(local),
        "SYNCD_REMOTE": f"file://{remote}",
        "SYNCD_STATE": f"sqlite:///{tmp_path / 'state.db'}",
        "SYNCD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config-here"),
    }
    result = syncd("once", env=env)
    assert result.returncode == 0, result.stderr
    assert (remote / "a.txt").read_bytes() == b"from env"

    half = syncd("once", env={**env, "SYNCD_REMOTE": ""})
    assert half.returncode == 2
    assert half.stderr.strip().splitlines() == [
        "syncd: SYNCD_LOCAL is set but SYNCD_REMOTE is not: set both, or pass -c CONFIG"
    ]


def test_a_pass_to_a_folder_records_every_file_after_one_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync_once` to a local-folder remote: the uploads skip their own fsyncs, one barrier
    flushes them before their records are committed, and when the pass ends every file is
    recorded and the remote is back to flushing each upload (for the daemon's passes)."""
    from syncd.providers import local as local_provider

    local, remote = _folders(tmp_path)
    for i in range(30):
        (local / f"f{i:02}.txt").write_bytes(f"file {i}".encode())
    flushes: list[int] = []
    monkeypatch.setattr(local_provider, "syncfs", lambda fd: flushes.append(fd))

    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        report = engine.sync_once()
        assert report.files_up == 30 and report.exit_code == 0
        assert flushes  # the barrier ran (once per commit of written-behind records)
        assert len(engine.store.entries("docs")) == 30
        provider = engine.syncers["docs"].provider
        assert isinstance(provider, FileProvider) and not provider._batched
    assert tree(remote) == tree(local)


def test_a_folder_remote_moves_one_file_at_a_time_beside_a_big_one_and_hashes_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 8 workers, a local-folder remote still moves one small file at a time (more only
    contend for the GIL), but a big one steps aside: the small files go on while it is
    copied. And a first upload of many files of one size looks for no move sources (nothing
    synced has gone), so no file is hashed a second time for it."""
    import threading
    import time as time_module

    from syncd.engine import localfs, syncer

    local, remote = _folders(tmp_path)
    for i in range(40):
        (local / f"f{i:02}.txt").write_bytes(f"file {i:02}".encode())  # all 7 bytes
    (local / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # streamed: beyond 8 MiB
    lock = threading.Lock()
    running: set[str] = set()
    most_small = [0]
    beside_big: list[str] = []
    real_upload = FileProvider.upload

    def counting_upload(self: FileProvider, request: Any) -> Any:
        with lock:
            running.add(request.key)
            small = [key for key in running if key != "big.bin"]
            most_small[0] = max(most_small[0], len(small))
            if "big.bin" in running and request.key != "big.bin":
                beside_big.append(request.key)
        try:
            # Long enough for other workers to pile in if allowed; the big file longer.
            time_module.sleep(1.0 if request.key == "big.bin" else 0.01)
            return real_upload(self, request)
        finally:
            with lock:
                running.discard(request.key)

    hashed: list[Path] = []
    real_hash = localfs.hash_file

    def counting_hash(path: Path, *args: Any, **kwargs: Any) -> Any:
        hashed.append(path)
        return real_hash(path, *args, **kwargs)

    streamed: list[int] = []
    real_sha256_of = localfs.sha256_of_fd

    def counting_sha256_of(fd: int) -> str:
        streamed.append(os.fstat(fd).st_size)
        return real_sha256_of(fd)

    monkeypatch.setattr(FileProvider, "upload", counting_upload)
    monkeypatch.setattr(syncer.localfs, "hash_file", counting_hash)
    monkeypatch.setattr(localfs, "sha256_of_fd", counting_sha256_of)
    data = _config(tmp_path, local, f"file://{remote}")
    data["workers"] = 8
    with Engine.from_config_dict(data) as engine:
        assert engine.sync_once().files_up == 41
    assert most_small[0] == 1
    assert beside_big, "no small file moved while the big one was being copied"
    # The streamed upload hashes its file before sending (the metadata needs it): that once.
    assert hashed == [] and streamed == [9 * 1024 * 1024]
    assert tree(remote) == tree(local)


def test_last_sync_survives_a_restart_while_held(tmp_path: Path) -> None:
    """`last_sync` is when the pair was last in sync: a restart while its deletions were held
    made it null (and the metrics said "never synced") until someone let them through."""
    local, remote = _folders(tmp_path)
    for name in "abcd":
        (local / f"{name}.txt").write_text(name)
    data = _config(tmp_path, local, f"file://{remote}")
    with Engine.from_config_dict(data) as engine:
        assert engine.sync_once().exit_code == 0
        synced = engine.status()["pairs"][0]["last_sync"]
    assert synced is not None
    for name in "abc":
        (local / f"{name}.txt").unlink()
    with Engine.from_config_dict(data) as engine:
        assert engine.sync_once().exit_code == 4  # held: 3 of 4
        assert engine.status()["pairs"][0]["last_sync"] == synced


def test_an_approval_for_a_deletion_that_did_not_happen_lapses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard let a deletion through, and the file came back before the path was looked
    at again (restored, or saved by an editor that unlinks first): the approval stayed for
    the life of the process, and a later mass deletion the guard held took that file at
    once, uncounted. An approval now lapses when the path is decided as anything else."""
    local, remote = _folders(tmp_path)
    names = [f"{n}.txt" for n in "abcdefghij"]
    for name in names:
        (local / name).write_text(name)
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        assert engine.sync_once().exit_code == 0
        (local / "a.txt").unlink()  # 1 of 10: the guard lets it through
        syncer = engine.syncers["docs"]
        real = syncer.sync_path
        looks: list[str] = []

        def look(path: str, keep: str | None = None) -> Any:
            if path == "a.txt":
                looks.append(path)
                if len(looks) == 2:  # approved, not yet carried out: the file is back
                    (local / "a.txt").write_text("a")
            return real(path, keep)

        monkeypatch.setattr(syncer, "sync_path", look)
        assert engine.sync_once().exit_code == 0
        assert len(looks) == 2 and (remote / "a.txt").read_text() == "a"
        monkeypatch.undo()

        for name in names[:6]:  # 6 of 10 gone from the remote: more than max_delete's 50 %
            (remote / name).unlink()
        report = engine.sync_once()
    assert report.exit_code == 4, report
    assert sorted(report.pairs[0].held) == names[:6]
    assert sorted(p.name for p in local.iterdir() if p.is_file()) == names
    assert not (local / ".syncd" / "trash").exists()


def test_a_script_engine_logs_as_its_config_says_on_stderr(tmp_path: Path) -> None:
    """Only the CLI set logging up: a script's engine logged through structlog's default,
    console lines on stdout (mixed into the script's own output), at info whatever `log:`
    said. It logs as the config says, on stderr."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    data = _config(tmp_path, local, f"file://{remote}")
    script = (
        "import json, sys\n"
        "from syncd import Engine\n"
        "data = json.loads(sys.argv[1])\n"
        "with Engine.from_config_dict(data) as engine:\n"
        "    print('REPORT', engine.sync_once().files_up)\n"
    )
    for level, said in (("error", []), ("info", ["uploaded"])):
        data["log"] = {"level": level, "format": "json"}
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(data)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, "REPORT 1\n"), done
        assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == said, done
        (local / "a.txt").write_text(f"a, edited after the {level} run")


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_one_way_copies_reach_the_service_the_engines_pairs_are_on(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`engine.upload(dir, "s3://bucket/results/")` on an engine whose pair names its
    endpoint and credentials under `options:` (moto, Azurite, MinIO, a key in the config):
    the copy went to the SDK's defaults instead (AWS itself, no Azure account) and failed
    ('no usable AWS credentials found'). It now takes the options of the engine's pair on
    that bucket (else on that service), or those given as `options=`."""
    pair_remote = remote_for(kind, request, tmp_path, prefix="pair/")
    results = remote_for(kind, request, tmp_path, prefix="results/")
    # Only the config knows the service (the session points the SDK at Azurite otherwise).
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    local, source = tmp_path / "local", tmp_path / "source"
    local.mkdir()
    source.mkdir()
    (source / "r.csv").write_text("1,2")
    (source / "skip.tmp").write_text("no")
    data = _config(tmp_path, local, pair_remote.url, options=pair_remote.options)
    with Engine.from_config_dict(data) as engine:
        up = engine.upload(source, results.url, exclude=["*.tmp"])
        assert (up.exit_code, up.files_up) == (0, 1), up.pairs[0].fault
        down = engine.download(results.url, tmp_path / "back", include=["*.csv"])
        assert (down.exit_code, down.files_down) == (0, 1), down.pairs[0].fault
        again = engine.download(results.url, tmp_path / "again", options=dict(pair_remote.options))
        assert (again.exit_code, again.files_down) == (0, 1), again.pairs[0].fault
    assert results.objects() == {"r.csv": b"1,2"}
    assert tree(tmp_path / "back") == tree(tmp_path / "again") == {"r.csv": b"1,2"}


def test_each_dry_run_of_an_engine_plans_only_its_own_pass(tmp_path: Path) -> None:
    """One engine, several dry runs: each report's plan held every earlier dry run's items
    as well (the same path planned two, three times), and a dry run after the real run still
    listed what that run had done."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_bytes(b"alpha")
    data = _config(tmp_path, local, f"file://{remote}")
    with Engine.from_config_dict(data) as engine:
        plans = [engine.sync_once(dry_run=True).pairs[0].planned for _ in range(2)]
        assert [[(i.path, i.decision.action.value) for i in p] for p in plans] == [
            [("a.txt", "upload")],
            [("a.txt", "upload")],
        ]
        assert engine.sync_once().files_up == 1
        assert engine.sync_once(dry_run=True).pairs[0].planned == []
    assert (remote / "a.txt").read_bytes() == b"alpha"


def test_a_pass_waits_for_its_requeues_without_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that moves under the engine is requeued after a growing pause (0.25 s times 1..8).
    Meanwhile the queue is idle, so `wait_idle` returned at once and the pass's loop spun a
    CPU until every pause had passed: a `syncd once` burnt seconds of CPU. It waits instead:
    a few turns of the loop per requeue, whatever the pauses add up to."""
    from syncd.engine import core
    from syncd.engine.syncer import Outcome, PairSyncer

    local, remote = _folders(tmp_path)
    (local / "moving.txt").write_text("m")
    real_sync_path = PairSyncer.sync_path
    asked: list[str] = []

    def sync_path(self: PairSyncer, path: str, keep: str | None = None) -> Outcome:
        asked.append(path)
        if path == "moving.txt" and asked.count(path) <= 4:
            return Outcome.REQUEUE  # "changed under us": four pauses, 0.1 + … + 0.4 s
        return real_sync_path(self, path, keep)

    monkeypatch.setattr(PairSyncer, "sync_path", sync_path)
    monkeypatch.setattr(core, "REQUEUE_BASE_DELAY", 0.1)
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        turns = 0
        real_wait_idle = engine.queue.wait_idle

        def wait_idle(timeout: float | None = None) -> bool:
            nonlocal turns
            turns += 1
            return real_wait_idle(timeout)

        monkeypatch.setattr(engine.queue, "wait_idle", wait_idle)
        report = engine.sync_once()
    assert (report.exit_code, report.files_up, asked.count("moving.txt")) == (0, 1, 5)
    assert tree(remote) == {"moving.txt": b"m"}
    assert turns <= 20, turns


def test_an_engine_on_a_mistyped_remote_forgets_no_state(tmp_path: Path) -> None:
    """The same for a mistyped `remote` (a folder remote that is not there): the root was
    usable, so the state went at the first pass, which failed its listing; after the fix the
    file deleted since the last sync came back. It goes only once the new remote listed."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    (local / "b.txt").write_text("b")
    right = _config(tmp_path, local, f"file://{remote}", max_delete=100)
    typo = _config(tmp_path, local, f"file://{tmp_path / 'remot'}", max_delete=100)
    with Engine.from_config_dict(right) as engine:
        assert engine.sync_once().exit_code == 0
    (local / "b.txt").unlink()  # deleted by the user since the last sync
    with Engine.from_config_dict(typo) as engine:
        report = engine.sync_once()
        assert report.exit_code == 1 and "does not exist" in str(report.pairs[0].fault)
    with Engine.from_config_dict(right) as engine:
        report = engine.sync_once()
    assert (report.exit_code, report.files_down, report.pairs[0].deleted) == (0, 0, 1)
    assert tree(local) == {"a.txt": b"a"} and tree(remote) == {"a.txt": b"a"}


def test_an_engine_on_a_mistyped_local_forgets_no_state(tmp_path: Path) -> None:
    """A pair's state is forgotten when its `local` or `remote` changes. That happened when an
    engine was made: one made on a mistyped `local` (a folder that is not there), closed
    without a pass or failing its pass, forgot it, and the next pass on the right folder was
    a first sync: the file deleted since the last sync came back. It is forgotten when a pass
    finds the new root usable, and only then."""
    local, remote = _folders(tmp_path)
    (local / "a.txt").write_text("a")
    (local / "b.txt").write_text("b")
    right = _config(tmp_path, local, f"file://{remote}", max_delete=100)
    elsewhere = tmp_path / "elsewhere"
    typo = _config(tmp_path, elsewhere, f"file://{remote}", max_delete=100)
    with Engine.from_config_dict(right) as engine:
        assert engine.sync_once().exit_code == 0
    (local / "b.txt").unlink()  # deleted by the user since the last sync
    Engine.from_config_dict(typo).close()
    with Engine.from_config_dict(typo) as engine:
        report = engine.sync_once()
        assert report.exit_code == 1 and "missing" in str(report.pairs[0].fault)
        assert engine.retry_failed().exit_code == 0  # nothing taken up meanwhile
    with Engine.from_config_dict(right) as engine:
        report = engine.sync_once()
    assert (report.exit_code, report.files_down, report.pairs[0].deleted) == (0, 0, 1)
    assert tree(local) == {"a.txt": b"a"} and tree(remote) == {"a.txt": b"a"}

    # Pointed at another folder that is there, the pair starts over: a first sync there,
    # which deletes nothing, and the writer id, last sync and base of the old place go.
    elsewhere.mkdir()
    (elsewhere / "new.txt").write_text("new")
    with Engine.from_config_dict(typo) as engine:
        report = engine.sync_once()
    assert (report.exit_code, report.files_up, report.files_down) == (0, 1, 1)
    assert tree(elsewhere) == tree(remote) == {"a.txt": b"a", "new.txt": b"new"}


def test_a_one_shot_pass_waits_for_a_slow_probe_of_the_remote_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the daemon's main loop caps its wait for the root's probe (PROBE_WAIT_S): a
    one-shot pass capped it too, and a slow answer held the deletion (exit 4), which not even
    --force could let through."""
    import syncd.engine.syncer as syncer_module

    monkeypatch.setattr(syncer_module, "PROBE_WAIT_S", 0.1)
    local, remote = _folders(tmp_path)
    for name in ("a.txt", "b.txt", "c.txt"):
        (local / name).write_text(name)
    with Engine.from_config_dict(_config(tmp_path, local, f"file://{remote}")) as engine:
        assert engine.sync_once().exit_code == 0
        (remote / "a.txt").unlink()
        provider = engine.syncers["docs"].provider
        answer = provider.probe

        def slow() -> None:
            threading.Event().wait(0.5)
            answer()

        monkeypatch.setattr(provider, "probe", slow)
        report = engine.sync_once()
    assert (report.exit_code, report.pairs[0].deleted) == (0, 1), report
    assert tree(local) == {"b.txt": b"b.txt", "c.txt": b"c.txt"}

"""Scenarios 1-6: syncd and its peers on the same trees, the same emulators, fresh buckets.

Within a run every tool takes its turn (round-robin, so a slow drift of the machine spreads
over all tools instead of landing on one), and each turn starts on an empty bucket: the first
upload (scenario 1) is really first, the no-op (2) and the one-file change (3) follow on the
bucket and state that tool's own first upload left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import trees
from bench.emulators import AZURITE_ACCOUNT, AZURITE_KEY
from bench.peers import (
    RAW_LIST,
    RAW_PUT,
    RCLONE_FLAGS,
    rclone_argv,
    rclone_azure,
    rclone_gcs,
    rclone_s3,
    s3cmd_config,
    with_env,
)
from bench.runner import RSS_AND_CPU, Bench, say, syncd_config
from bench.settings import MiB

S0 = "0 fixed cost: empty folder (S3)"
S1 = "1 first upload (S3)"
S2 = "2 no-op (S3)"
#: Scenario 2's floor: one listing of the bucket with boto3 (bench/raw_list.py).
RAW_LIST_NAME = "boto3 list only"
RAW_LIST_NOTE = "floor: one listing of the bucket, nothing walked or compared"
S3 = "3 one file changed (S3)"
S4_UP = "4 big file up (S3)"
S4_DOWN = "4 big file down (S3)"
S5 = "5 local remote, first copy"
S5_NOOP = "5 local remote, no-op"


# -- checks: a run only counts when the result is right ----------------------------------------


def s3_keys(bench: Bench, bucket: str) -> dict[str, str]:
    """Every user key in the bucket (syncd's own .syncd* keys left out) with its ETag."""
    import boto3
    from botocore.config import Config

    assert bench.moto is not None
    client = boto3.client(
        "s3",
        endpoint_url=bench.moto.endpoint_url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - moto accepts any key
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    keys: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if not item["Key"].startswith(".syncd"):
                keys[item["Key"]] = item["ETag"].strip('"')
    return keys


def s3_count(bench: Bench, bucket: str) -> int:
    return len(s3_keys(bench, bucket))


def expect_count(count: Callable[[], int], wanted: int) -> Callable[[], str | None]:
    def check() -> str | None:
        found = count()
        return None if found == wanted else f"{found} of {wanted} objects at the remote"

    return check


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# -- scenarios 1-3: many small files on S3 -----------------------------------------------------


@dataclass
class SmallTool:
    """How one tool uploads a folder to a bucket (run again for the no-op and the change)."""

    name: str
    #: Builds the command for (source folder, bucket, per-run folder).
    argv: Callable[[Path, str, Path], list[str]]
    env: Callable[[Path], dict[str, str]]
    incremental: bool = True  # the raw loop has no notion of "already there"
    #: For a tool that is not incremental: the command of its no-op row, RAW_LIST_NAME (the
    #: raw loop's is one listing of the bucket, the floor of any tool's no-op).
    noop_argv: Callable[[str], list[str]] | None = None


def s3_small_tools(bench: Bench, s3cmd_cfg: Path) -> list[SmallTool]:
    assert bench.moto is not None
    endpoint = bench.moto.endpoint_url
    peers = bench.peers
    workers = bench.settings.syncd_workers
    tools: list[SmallTool] = []

    def syncd(src: Path, bucket: str, run_dir: Path) -> list[str]:
        config = run_dir / "syncd.yaml"
        if not config.exists():  # the no-op and change runs reuse the first run's state
            syncd_config(
                config,
                local=src,
                remote=f"s3://{bucket}/",
                state_dir=run_dir / "state",
                workers=workers,
                options={"endpoint_url": endpoint},
                direction="upload",
            )
        return [peers.syncd.exe, "once", "-c", str(config)]

    tools.append(SmallTool("syncd", syncd, lambda run_dir: bench.env))
    if peers.rclone.available:
        tools.append(
            SmallTool(
                "rclone",
                lambda src, bucket, _: rclone_argv(
                    peers.rclone, "copy", str(src), rclone_s3(endpoint, bucket), *RCLONE_FLAGS
                ),
                lambda run_dir: bench.env,
            )
        )
    if peers.aws.available:
        tools.append(
            SmallTool(
                "aws s3 sync",
                lambda src, bucket, _: [
                    peers.aws.exe,
                    "s3",
                    "sync",
                    str(src),
                    f"s3://{bucket}/",
                    "--endpoint-url",
                    endpoint,
                    "--only-show-errors",
                ],
                lambda run_dir: bench.env,
            )
        )
    if peers.s3cmd.available:
        tools.append(
            SmallTool(
                "s3cmd sync",
                lambda src, bucket, _: [
                    peers.s3cmd.exe,
                    "-c",
                    str(s3cmd_cfg),
                    "sync",
                    "--no-progress",
                    "--quiet",
                    f"{src}/",
                    f"s3://{bucket}/",
                ],
                lambda run_dir: bench.env,
            )
        )
    tools.append(
        SmallTool(
            "boto3 put_object x16",
            lambda src, bucket, _: [
                peers.python.exe,
                "-P",  # keep bench/ off sys.path: its modules must not shadow anything
                str(RAW_PUT),
                endpoint,
                bucket,
                str(src),
                "--threads",
                "16",
            ],
            lambda run_dir: bench.env,
            incremental=False,
            noop_argv=lambda bucket: [
                peers.python.exe,
                "-P",
                str(RAW_LIST),
                endpoint,
                bucket,
            ],
        )
    )
    return tools


def s3_small(bench: Bench) -> None:
    """Scenarios 1, 2 and 3 on moto."""
    assert bench.moto is not None
    moto = bench.moto
    s = bench.settings
    say(f"scenarios 1-3: {s.small_files} files of {s.small_size} B in {s.small_folders} folders")
    src = bench.fresh_dir("s1", "src")
    files = trees.small_files(src, s.small_files, s.small_folders, s.small_size)
    # Diagnostic: the same count and mean size, but every file a different size (see README).
    distinct = bench.fresh_dir("s1", "src-distinct-sizes")
    for index in range(s.small_files):
        folder = distinct / f"dir{index % s.small_folders:02d}"
        folder.mkdir(exist_ok=True)
        size = s.small_size - s.small_files // 2 + index
        (folder / f"file{index:06d}.bin").write_bytes(os.urandom(size))
    s3cmd_cfg = s3cmd_config(bench.work / "s3cmd.cfg", moto.endpoint_url)
    tools = s3_small_tools(bench, s3cmd_cfg)
    for missing, reason in bench.peers.missing().items():
        if missing in ("rclone", "aws", "s3cmd"):
            label = {"aws": "aws s3 sync", "s3cmd": "s3cmd sync"}.get(missing, missing)
            for scenario in (S1, S2, S3):
                bench.unavailable(scenario, label, reason)
    amount = ("files", float(s.small_files))
    fixed_cost(bench, tools)

    for run in range(s.runs):
        say(f" run {run + 1}/{s.runs}")
        for tool in tools:
            first = bench.row(S1, tool.name, amount=amount)
            if bench.timed_out(first):
                continue
            bucket = moto.fresh_bucket()
            run_dir = bench.fresh_dir("s1", _slug(tool.name), f"run-{run}")
            env = tool.env(run_dir)
            before = moto.cpu_seconds()
            done = bench.measure(
                first,
                tool.argv(src, bucket, run_dir),
                env=env,
                check=expect_count(partial(s3_count, bench, bucket), len(files)),
            )
            if done is None:
                continue
            first.extra.setdefault("moto CPU s", []).append(moto.cpu_seconds() - before)
            if not tool.incremental:
                if tool.noop_argv is not None:
                    bench.measure(
                        bench.row(S2, RAW_LIST_NAME, amount=amount, note=RAW_LIST_NOTE),
                        tool.noop_argv(bucket),
                        env=env,
                    )
                continue
            bench.measure(
                bench.row(S2, tool.name, amount=amount),
                tool.argv(src, bucket, run_dir),
                env=env,
            )
            changed = files[run % len(files)]
            trees.change_one(changed)
            key = changed.relative_to(src).as_posix()

            def uploaded(b: str = bucket, k: str = key, p: Path = changed) -> str | None:
                etag = s3_keys(bench, b).get(k)
                return None if etag == md5(p) else f"{k} was not replaced"

            bench.measure(
                bench.row(S3, tool.name, amount=amount),
                tool.argv(src, bucket, run_dir),
                env=env,
                check=uploaded,
            )
        # syncd on files of distinct sizes: isolates the cost of its move detection.
        diag = bench.row(
            S1,
            "syncd, distinct sizes",
            amount=amount,
            compare=False,
            note="diagnostic: same count, every file a different size",
        )
        if not bench.timed_out(diag):
            bucket = moto.fresh_bucket()
            run_dir = bench.fresh_dir("s1", "syncd-distinct", f"run-{run}")
            before = moto.cpu_seconds()
            if bench.measure(
                diag,
                tools[0].argv(distinct, bucket, run_dir),
                check=expect_count(partial(s3_count, bench, bucket), s.small_files),
            ):
                diag.extra.setdefault("moto CPU s", []).append(moto.cpu_seconds() - before)
    bench.row(S3, "boto3 put_object x16", note="n/a: a raw loop has no incremental mode")


def fixed_cost(bench: Bench, tools: list[SmallTool]) -> None:
    """Each tool on an empty folder and an empty bucket: start-up, imports, one listing. At a
    small BENCH_SCALE this is most of scenario 1's time; subtract it to compare the rest."""
    assert bench.moto is not None
    empty = bench.fresh_dir("s0", "empty")
    for run in range(bench.settings.runs):
        for tool in tools:
            bucket = bench.moto.fresh_bucket()
            run_dir = bench.fresh_dir("s0", _slug(tool.name), f"run-{run}")
            bench.measure(
                bench.row(S0, tool.name), tool.argv(empty, bucket, run_dir), env=tool.env(run_dir)
            )


# -- scenario 4: one big file up and down ------------------------------------------------------


def s3_big(bench: Bench) -> None:
    assert bench.moto is not None
    moto = bench.moto
    s = bench.settings
    peers = bench.peers
    endpoint = moto.endpoint_url
    say(f"scenario 4: one file of {s.big_size // MiB} MiB up and down")
    src = bench.fresh_dir("s4", "src")
    big = src / "big.bin"
    trees.big_file(big, s.big_size)
    amount = ("MB", s.big_size / 1e6)

    Commands = tuple[Callable[[str, Path], list[str]], Callable[[str, Path], list[str]]]
    tools: dict[str, Commands] = {
        "syncd": (
            lambda bucket, _: [peers.syncd.exe, "upload", str(src), f"s3://{bucket}/"],
            lambda bucket, dst: [peers.syncd.exe, "download", f"s3://{bucket}/", str(dst)],
        )
    }
    if peers.aws.available:
        aws = [peers.aws.exe, "s3", "cp"]
        tail = ["--endpoint-url", endpoint, "--only-show-errors"]
        tools["aws s3 cp"] = (
            lambda bucket, _: [*aws, str(big), f"s3://{bucket}/big.bin", *tail],
            lambda bucket, dst: [*aws, f"s3://{bucket}/big.bin", str(dst / "big.bin"), *tail],
        )
    else:
        for scenario in (S4_UP, S4_DOWN):
            bench.unavailable(scenario, "aws s3 cp", peers.aws.missing)
    if peers.rclone.available:
        tools["rclone copy"] = (
            lambda bucket, _: rclone_argv(
                peers.rclone, "copy", str(big), rclone_s3(endpoint, bucket)
            ),
            lambda bucket, dst: rclone_argv(
                peers.rclone, "copy", rclone_s3(endpoint, bucket) + "/big.bin", str(dst)
            ),
        )
    else:
        for scenario in (S4_UP, S4_DOWN):
            bench.unavailable(scenario, "rclone copy", peers.rclone.missing)

    for run in range(s.runs):
        say(f" run {run + 1}/{s.runs}")
        for name, (up, down) in tools.items():
            tool = "syncd" if name == "syncd" else name
            up_row = bench.row(S4_UP, tool, amount=amount)
            if bench.timed_out(up_row):
                continue
            bucket = moto.fresh_bucket()
            run_dir = bench.fresh_dir("s4", _slug(name), f"run-{run}")
            env = with_env(
                bench.env, AWS_ENDPOINT_URL=endpoint, XDG_STATE_HOME=str(run_dir / "state")
            )

            def stored(b: str = bucket) -> str | None:
                keys = s3_keys(bench, b)
                return None if "big.bin" in keys else "big.bin is not in the bucket"

            os.sync()  # start with no writeback pending from the previous run
            before = moto.cpu_seconds()
            if not bench.measure(
                up_row, up(bucket, run_dir), env=env, check=stored, extra=RSS_AND_CPU
            ):
                continue
            up_row.extra.setdefault("moto CPU s", []).append(moto.cpu_seconds() - before)
            dst = bench.fresh_dir("s4", _slug(name), f"run-{run}", "dst")
            env = with_env(env, XDG_STATE_HOME=str(run_dir / "state-down"))

            def arrived(d: Path = dst) -> str | None:
                got = d / "big.bin"
                size = got.stat().st_size if got.exists() else -1
                return None if size == s.big_size else f"downloaded {size} of {s.big_size} B"

            down_row = bench.row(S4_DOWN, tool, amount=amount)
            before = moto.cpu_seconds()
            if bench.measure(
                down_row, down(bucket, dst), env=env, check=arrived, extra=RSS_AND_CPU
            ):
                # moto builds the whole object for every ranged GET: see the README's caveats.
                down_row.extra.setdefault("moto CPU s", []).append(moto.cpu_seconds() - before)
            _remove(dst)


# -- scenario 5: a local-folder remote ---------------------------------------------------------


def local_remote(bench: Bench) -> None:
    s = bench.settings
    peers = bench.peers
    say(f"scenario 5: {s.local_files} files of {s.local_size} B to a local folder")
    src = bench.fresh_dir("s5", "src")
    trees.small_files(src, s.local_files, 20, s.local_size)
    amount = ("files", float(s.local_files))
    tools: dict[str, Callable[[Path], list[str]]] = {
        "syncd": lambda dst: [
            peers.syncd.exe,
            "upload",
            str(src),
            f"file://{dst}",
            "--transfers",
            str(s.syncd_workers),
        ],
    }
    if peers.rclone.available:
        tools["rclone copy"] = lambda dst: rclone_argv(
            peers.rclone, "copy", str(src), str(dst), *RCLONE_FLAGS
        )
    else:
        bench.unavailable(S5, "rclone copy", peers.rclone.missing)
    if peers.rsync.available:
        tools["rsync -a"] = lambda dst: [peers.rsync.exe, "-a", f"{src}/", f"{dst}/"]
    else:
        bench.unavailable(S5, "rsync -a", peers.rsync.missing)

    # Every run's copy stays until the scenario ends: on ext4 without a journal (this VM's
    # disk) the kernel skips inodes freed in the last 60-360 s when it allocates new ones, so
    # deleting 20,000 files between runs made each later run's creates scan past them
    # (bench/README finding 18).
    run_dirs: list[Path] = []
    for run in range(s.runs):
        say(f" run {run + 1}/{s.runs}")
        for name, argv in tools.items():
            first = bench.row(S5, name, amount=amount)
            if bench.timed_out(first):
                continue
            run_dir = bench.fresh_dir("s5", _slug(name), f"run-{run}")
            run_dirs.append(run_dir)
            dst = run_dir / "dst"
            env = with_env(bench.env, XDG_STATE_HOME=str(run_dir / "state"))
            check = expect_count(partial(trees.count_files, dst), s.local_files)
            os.sync()  # no writeback of the previous tool's files during this one's run
            if bench.measure(
                first,
                argv(dst),
                env=env,
                check=check,
            ):
                bench.measure(
                    bench.row(S5_NOOP, name, amount=amount),
                    argv(dst),
                    env=env,
                )
    for run_dir in run_dirs:
        _remove(run_dir)


# -- scenario 6: Azure (Azurite) and GCS (fake-gcs-server) -------------------------------------


def azure_count(bench: Bench, container: str) -> int:
    from azure.storage.blob import ContainerClient

    assert bench.azurite is not None
    with ContainerClient.from_connection_string(
        bench.azurite.connection_string, container
    ) as client:
        return sum(1 for blob in client.list_blobs() if not blob.name.startswith(".syncd"))


def gcs_count(bench: Bench, bucket: str) -> int:
    assert bench.gcs is not None
    count, token = 0, ""
    while True:
        query = {"maxResults": "1000", **({"pageToken": token} if token else {})}
        url = f"{bench.gcs.endpoint_url}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback
            page = json.load(response)
        count += sum(1 for item in page.get("items", []) if not item["name"].startswith(".syncd"))
        token = page.get("nextPageToken", "")
        if not token:
            return count


@dataclass
class CloudRun:
    """One fresh bucket on one emulator, as syncd and rclone each address it."""

    bucket: str
    syncd_remote: str
    syncd_options: dict[str, str]
    rclone_remote: str
    env: dict[str, str]
    count: Callable[[], int]
    cleanup: Callable[[], None]


def _cloud_run(bench: Bench, cloud: str) -> CloudRun:
    if cloud == "Azure":
        az = bench.azurite
        assert az is not None
        container = az.fresh_bucket()
        return CloudRun(
            container,
            f"az://{container}/",
            {"connection_string": az.connection_string},
            rclone_azure(az.blob_endpoint, AZURITE_ACCOUNT, AZURITE_KEY, container),
            dict(bench.env),
            lambda: azure_count(bench, container),
            lambda: az.drop_bucket(container),
        )
    gcs = bench.gcs
    assert gcs is not None
    bucket = gcs.fresh_bucket()
    return CloudRun(
        bucket,
        f"gs://{bucket}/",
        {},
        rclone_gcs(gcs.endpoint_url, bucket),
        with_env(bench.env, STORAGE_EMULATOR_HOST=gcs.endpoint_url),
        lambda: gcs_count(bench, bucket),
        lambda: None,
    )


def other_clouds(bench: Bench) -> None:
    """Scenario 6: scenarios 1 and 2, syncd vs rclone, on Azurite and on fake-gcs-server."""
    s = bench.settings
    peers = bench.peers
    src = bench.work / "s1" / "src"
    if not src.exists():
        src = bench.fresh_dir("s6", "src")
        trees.small_files(src, s.small_files, s.small_folders, s.small_size)
    count = trees.count_files(src)
    amount = ("files", float(count))
    clouds = [name for name, emu in (("Azure", bench.azurite), ("GCS", bench.gcs)) if emu]
    tools = ["syncd", "rclone"] if peers.rclone.available else ["syncd"]
    for cloud in clouds:
        say(f"scenario 6 ({cloud}): {count} files, first upload and no-op")
        first_s, noop_s = f"6 first upload ({cloud})", f"6 no-op ({cloud})"
        if not peers.rclone.available:
            for scenario in (first_s, noop_s):
                bench.unavailable(scenario, "rclone", peers.rclone.missing)
        for run in range(s.runs):
            say(f" run {run + 1}/{s.runs}")
            for tool in tools:
                first = bench.row(first_s, tool, amount=amount)
                if bench.timed_out(first):
                    continue
                run_dir = bench.fresh_dir("s6", cloud.lower(), tool, f"run-{run}")
                target = _cloud_run(bench, cloud)
                emulator = bench.azurite if cloud == "Azure" else bench.gcs
                assert emulator is not None
                if tool == "syncd":
                    config = syncd_config(
                        run_dir / "syncd.yaml",
                        local=src,
                        remote=target.syncd_remote,
                        state_dir=run_dir / "state",
                        workers=s.syncd_workers,
                        options=target.syncd_options,
                        direction="upload",
                    )
                    argv = [peers.syncd.exe, "once", "-c", str(config)]
                else:
                    argv = rclone_argv(
                        peers.rclone, "copy", str(src), target.rclone_remote, *RCLONE_FLAGS
                    )
                check = expect_count(target.count, count)
                before = emulator.cpu_seconds()
                if bench.measure(first, argv, env=target.env, check=check):
                    # Beside the wall time, as in scenario 1: the emulator shares the two cores.
                    first.extra.setdefault("emulator CPU s", []).append(
                        emulator.cpu_seconds() - before
                    )
                    bench.measure(bench.row(noop_s, tool, amount=amount), argv, env=target.env)
                target.cleanup()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

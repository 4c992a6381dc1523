"""`syncd once` against real remotes: both directions, and a second run that changes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import SYNCD, Setup, require_without_dac, syncd, tree
from remotes import (
    ALL_KINDS,
    BUCKET_KINDS,
    PREFIX,
    REMOTE_TRASH,
    AzureRemote,
    FolderRemote,
    GCSRemote,
    Remote,
    S3Remote,
    remote_for,
)

from syncd.config import load_config
from syncd.engine.conflicts import host_name
from syncd.engine.core import Engine
from syncd.engine.decide import ARCHIVED
from syncd.engine.localfs import NOT_A_KEY

MTIME_NS = 1_700_000_000_123_456_789


@pytest.fixture(params=ALL_KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


@pytest.fixture(params=BUCKET_KINDS)
def bucket_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


def _setup(tmp_path: Path, remote: Remote) -> Setup:
    setup = Setup(tmp_path, remote.url, options=remote.options)
    setup.write()
    return setup


def _counted_failures(setup: Setup) -> int:
    """The failures the state counts since install, over every pair."""
    if not setup.state_db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(setup.state_db)) as db:
        rows = db.execute("SELECT value FROM counters WHERE name = 'failures'").fetchall()
    return sum(int(value) for (value,) in rows)


def _local_mtimes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
    }


def test_upload_then_second_run_rewrites_nothing(tmp_path: Path, remote: Remote) -> None:
    setup = _setup(tmp_path, remote)
    files = {
        "a.txt": b"alpha",
        "sub/b.bin": os.urandom(70_000),
        "sub/deeper/c.md": b"# c\n",
        "empty": b"",
        "unicode ü/naïve #1.txt": "grüße".encode(),
    }
    for rel, data in files.items():
        (setup.local / rel).parent.mkdir(parents=True, exist_ok=True)
        (setup.local / rel).write_bytes(data)
    os.utime(setup.local / "a.txt", ns=(MTIME_NS, MTIME_NS))

    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stderr
    assert "5 uploaded" in first.stdout
    for rel, data in files.items():
        assert remote.get(rel) == data
    before_remote = remote.listing()
    before_local = _local_mtimes(setup.local)

    second = syncd("once", "-c", setup.config)
    assert second.returncode == 0, second.stderr
    assert "0 uploaded, 0 downloaded" in second.stdout
    assert remote.listing() == before_remote  # same ETags and LastModified: nothing rewritten
    assert _local_mtimes(setup.local) == before_local


def test_download_restores_bytes_and_mtime_then_second_run_rewrites_nothing(
    tmp_path: Path, remote: Remote
) -> None:
    setup = _setup(tmp_path, remote)
    remote.put("from-remote.txt", b"hello from the bucket")
    remote.put("nested/deep/data.bin", bytes(range(256)) * 100)

    # A file uploaded by syncd carries its mtime; push one from another local root first.
    other = Setup(tmp_path / "other", remote.url, options=remote.options)
    other.write()
    (other.local / "dated.txt").write_bytes(b"dated")
    os.utime(other.local / "dated.txt", ns=(MTIME_NS, MTIME_NS))
    assert syncd("once", "-c", other.config).returncode == 0

    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stderr
    assert "3 downloaded" in first.stdout
    assert tree(setup.local) == {
        "dated.txt": b"dated",
        "from-remote.txt": b"hello from the bucket",
        "nested/deep/data.bin": bytes(range(256)) * 100,
    }
    assert (setup.local / "dated.txt").stat().st_mtime_ns == MTIME_NS
    assert not list(setup.local.rglob(".syncd-tmp-*"))

    before_remote = remote.listing()
    before_local = _local_mtimes(setup.local)
    second = syncd("once", "-c", setup.config)
    assert second.returncode == 0, second.stderr
    assert "0 uploaded, 0 downloaded" in second.stdout
    assert remote.listing() == before_remote
    assert _local_mtimes(setup.local) == before_local


def test_both_directions_in_one_pass_and_edits(tmp_path: Path, remote: Remote) -> None:
    setup = _setup(tmp_path, remote)
    (setup.local / "mine.txt").write_bytes(b"local v1")
    remote.put("theirs.txt", b"remote v1")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert remote.get("mine.txt") == b"local v1"
    assert (setup.local / "theirs.txt").read_bytes() == b"remote v1"

    (setup.local / "mine.txt").write_bytes(b"local v2, longer")
    remote.put("theirs.txt", b"remote v2, longer")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert "1 uploaded, 1 downloaded" in result.stdout
    assert remote.get("mine.txt") == b"local v2, longer"
    assert (setup.local / "theirs.txt").read_bytes() == b"remote v2, longer"


def test_first_sync_with_equal_content_on_both_sides_transfers_nothing(
    tmp_path: Path, remote: Remote
) -> None:
    setup = _setup(tmp_path, remote)
    remote.put("same.txt", b"identical bytes")
    (setup.local / "same.txt").write_bytes(b"identical bytes")
    before = remote.listing()
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert "0 uploaded, 0 downloaded" in result.stdout
    if isinstance(remote, FolderRemote):
        # The folder's file is the older: it takes the newer local mtime, and nothing else.
        mtime = (setup.local / "same.txt").stat().st_mtime_ns
        assert (remote.root / "same.txt").stat().st_mtime_ns == mtime
        assert remote.objects() == {"same.txt": b"identical bytes"}
    else:
        assert remote.listing() == before  # states no mtime (another tool's object): left be


def test_first_sync_with_different_content_is_a_conflict_not_an_overwrite(
    tmp_path: Path, remote: Remote
) -> None:
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra={"conflict": "manual"})
    setup.write()
    remote.put("clash.txt", b"remote version")
    (setup.local / "clash.txt").write_bytes(b"local version!")
    # The dry run says so with the real run's exit code (it said 0).
    dry = syncd("once", "--dry-run", "-c", setup.config)
    assert dry.returncode == 4, dry.stdout + dry.stderr
    assert "conflict\tdocs/clash.txt\t" in dry.stdout and "manual: waiting" in dry.stdout
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "conflict: clash.txt" in result.stdout
    assert remote.get("clash.txt") == b"remote version"
    assert (setup.local / "clash.txt").read_bytes() == b"local version!"


def test_resolve_says_what_it_did_when_the_kept_side_is_gone(
    tmp_path: Path, remote: Remote
) -> None:
    """`resolve --keep remote` after the remote version was deleted: the usual rules settle it
    (the local edit goes up); `resolve` said "kept remote" all the same. It says what was
    done, and a plain keep still reads "kept local"."""
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra={"conflict": "manual"})
    setup.write()
    for name in ("a.txt", "b.txt"):
        remote.put(name, f"remote {name}".encode())
        (setup.local / name).write_bytes(f"local {name}".encode())
    assert syncd("once", "-c", setup.config).returncode == 4
    remote.delete("a.txt")

    gone = syncd("resolve", "a.txt", "--keep", "remote", "-c", setup.config)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "kept remote" not in gone.stdout
    assert gone.stdout.startswith("docs/a.txt: no longer a conflict"), gone.stdout
    assert remote.get("a.txt") == b"local a.txt"

    kept = syncd("resolve", "b.txt", "--keep", "local", "-c", setup.config)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout.strip() == "docs/b.txt: kept local"
    assert remote.get("b.txt") == b"local b.txt"


def test_resolve_takes_the_pair_slash_path_it_prints(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`resolve` prints `docs/a.txt: kept local` (PAIR/PATH) but refused `docs/a.txt` as its
    PATH: it takes it now, and the old spellings still work. Where the two readings name two
    conflicts (a folder `docs` in pair `docs`), it asks for the full path."""
    remote = remote_for("file", request, tmp_path)
    setup = Setup(tmp_path, remote.url, pair_extra={"conflict": "manual"})
    setup.write()
    (setup.local / "docs").mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "docs/c.txt"):
        remote.put(name, f"remote {name}".encode())
        (setup.local / name).write_bytes(f"local {name}".encode())
    assert syncd("once", "-c", setup.config).returncode == 4

    printed = syncd("resolve", "docs/a.txt", "--keep", "local", "-c", setup.config)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert printed.stdout.strip() == "docs/a.txt: kept local"
    assert remote.get("a.txt") == b"local a.txt"

    plain = syncd("resolve", "b.txt", "--keep", "remote", "-c", setup.config)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.strip() == "docs/b.txt: kept remote"

    both = syncd("resolve", "docs/c.txt", "--keep", "local", "-c", setup.config)
    assert both.returncode == 2, both.stdout + both.stderr
    assert "docs/c.txt, docs/docs/c.txt" in both.stderr or "docs/docs/c.txt, docs/c.txt" in (
        both.stderr
    )
    assert remote.get("c.txt") == b"remote c.txt"
    assert remote.get("docs/c.txt") == b"remote docs/c.txt"
    full = syncd("resolve", setup.local / "docs" / "c.txt", "--keep", "local", "-c", setup.config)
    assert full.returncode == 0, full.stdout + full.stderr
    assert full.stdout.strip() == "docs/docs/c.txt: kept local"
    left = syncd("resolve", "docs/c.txt", "--keep", "local", "-c", setup.config)
    assert left.returncode == 0, left.stdout + left.stderr  # one conflict of that name now
    assert left.stdout.strip() == "docs/c.txt: kept local"
    assert remote.get("c.txt") == b"local c.txt"


def test_first_sync_clash_under_timestamp_wins_keeps_the_loser_in_the_remote_trash(
    tmp_path: Path, remote: Remote
) -> None:
    setup = _setup(tmp_path, remote)
    remote.put("clash.txt", b"older remote version")
    (setup.local / "clash.txt").write_bytes(b"newer local version")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "timestamp_wins: local is newer" in result.stdout
    assert remote.get("clash.txt") == b"newer local version"
    trashed = [key for key in remote.listing() if key.startswith(".syncd-trash/")]
    assert len(trashed) == 1 and trashed[0].endswith("/clash.txt")
    assert remote.get(trashed[0]) == b"older remote version"


def _put_without_checksum(remote: Remote, key: str, data: bytes) -> None:
    """Write `key` as another tool's multipart upload does: no `sha256` metadata and no whole
    MD5 (an S3 ETag "…-2", an Azure block blob committed without Content-MD5)."""
    cut = 5 * 1024 * 1024  # S3's smallest part (but for the last)
    assert len(data) > cut
    if isinstance(remote, S3Remote):
        client, bucket, name = remote.bucket.client, remote.bucket.bucket, remote.prefix + key
        upload = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
        parts = [
            {
                "PartNumber": number,
                "ETag": client.upload_part(
                    Bucket=bucket, Key=name, UploadId=upload, PartNumber=number, Body=chunk
                )["ETag"],
            }
            for number, chunk in ((1, data[:cut]), (2, data[cut:]))
        ]
        client.complete_multipart_upload(
            Bucket=bucket, Key=name, UploadId=upload, MultipartUpload={"Parts": parts}
        )
        assert client.head_object(Bucket=bucket, Key=name)["ETag"].endswith('-2"')
    else:
        assert isinstance(remote, AzureRemote)
        blob = remote.container.client.get_blob_client(remote.prefix + key)
        blocks = ["YmxvY2sx", "YmxvY2sy"]
        blob.stage_block(blocks[0], data[:cut])
        blob.stage_block(blocks[1], data[cut:])
        blob.commit_block_list(blocks)
        assert blob.get_blob_properties().content_settings.content_md5 is None


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_first_sync_compares_content_an_object_states_no_checksum_for(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    # A bucket seeded by another tool (`aws s3 cp`, azcopy) with the files the local root has.
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    same = os.urandom(5 * 1024 * 1024 + 10)
    _put_without_checksum(remote, "same.bin", same)
    (setup.local / "same.bin").write_bytes(same)
    older = os.urandom(len(same))
    _put_without_checksum(remote, "other.bin", older)
    newer = os.urandom(len(same))  # the same size, other bytes: a real conflict
    (setup.local / "other.bin").write_bytes(newer)
    before = remote.listing()

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 uploaded, 0 downloaded" in result.stdout  # other.bin's newer local version
    assert "same.bin" not in result.stdout  # no conflict
    assert remote.listing()["same.bin"] == before["same.bin"]  # not sent again
    assert remote.get("other.bin") == newer
    trashed = sorted(key for key in remote.listing() if key.startswith(".syncd-trash/"))
    assert [key.rsplit("/", 1)[-1] for key in trashed] == ["other.bin"]  # the loser only
    assert remote.get(trashed[0]) == older
    assert tree(setup.local) == {"same.bin": same, "other.bin": newer}
    assert not (setup.local / ".syncd" / "trash").exists()
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stderr
    assert "0 uploaded, 0 downloaded, 0 failed, 0 conflicts" in again.stdout


def test_direction_upload_never_downloads(tmp_path: Path, remote: Remote) -> None:
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra={"direction": "upload"})
    setup.write()
    remote.put("remote-only.txt", b"stays remote")
    (setup.local / "up.txt").write_bytes(b"goes up")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert remote.get("up.txt") == b"goes up"
    assert tree(setup.local) == {"up.txt": b"goes up"}


def test_an_upload_pair_whose_remote_lost_everything_is_in_error_not_in_sync(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup (`direction: upload`) whose bucket lost every object said "in sync", exit 0,
    run after run: it never deletes locally, so no held deletion showed the emptied remote,
    and it sends nothing again by itself. It fails naming the cause and the way out."""
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra={"direction": "upload"})
    setup.write()
    for name in ("a.txt", "b.txt", "c.txt"):
        (setup.local / name).write_bytes(name.encode())
    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stdout + first.stderr
    for key in list(remote.listing()):
        remote.delete(key)
    for _ in range(2):
        emptied = syncd("once", "-c", setup.config)
        assert emptied.returncode == 1, emptied.stdout + emptied.stderr
        assert (
            "docs: error: the remote listing came back without any of the files this pair "
            "synced (emptied, or another bucket?)"
        ) in emptied.stdout
        assert "`syncd state rebuild --pair docs` starts it over" in emptied.stdout
        assert remote.listing() == {}
    rebuilt = syncd("state", "rebuild", "-c", setup.config)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert remote.objects() == {name: name.encode() for name in ("a.txt", "b.txt", "c.txt")}
    assert tree(setup.local) == remote.objects()
    # A one-way copy (`syncd upload`) sends what the remote lost again: no fault there.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with Engine(load_config(setup.config)) as engine:
        assert engine.upload(setup.local, remote.url, options=remote.options).exit_code == 0
        for key in list(remote.listing()):
            remote.delete(key)
        pushed = engine.upload(setup.local, remote.url, options=remote.options)
    assert (pushed.exit_code, pushed.pairs[0].fault, pushed.pairs[0].uploaded) == (0, None, 3)


def test_excluded_paths_are_not_transferred(tmp_path: Path, remote: Remote) -> None:
    setup = Setup(
        tmp_path, remote.url, options=remote.options, pair_extra={"exclude": ["*.tmp", "cache/"]}
    )
    setup.write()
    (setup.local / "keep.txt").write_bytes(b"keep")
    (setup.local / "skip.tmp").write_bytes(b"skip")
    (setup.local / "cache").mkdir()
    (setup.local / "cache" / "x").write_bytes(b"x")
    (setup.local / ".syncignore").write_text("secret*\n")
    (setup.local / "secret.key").write_bytes(b"k")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert set(remote.listing()) == {"keep.txt", ".syncignore"}


def test_un_excluding_compares_afresh_and_deletes_nothing(tmp_path: Path, remote: Remote) -> None:
    """While a path is excluded its changes go unseen; once it syncs again, a copy one side
    lost meanwhile is copied back, never taken for a deletion to carry out on the other."""
    setup = _setup(tmp_path, remote)
    for name in ("gone-remote.txt", "gone-local.txt", "edited.txt", "plain.txt"):
        (setup.local / name).write_bytes(name.encode())
    assert syncd("once", "-c", setup.config).returncode == 0

    setup.pair_extra["exclude"] = ["gone-*.txt", "edited.txt"]
    setup.write()
    assert syncd("once", "-c", setup.config).returncode == 0
    remote.delete("gone-remote.txt")
    (setup.local / "gone-local.txt").unlink()
    remote.put("edited.txt", b"edited on the remote, meanwhile")
    os.utime(setup.local / "edited.txt", (1_600_000_000, 1_600_000_000))  # the older copy
    excluded = syncd("once", "-c", setup.config)
    assert excluded.returncode == 0, excluded.stdout + excluded.stderr
    assert "0 uploaded, 0 downloaded, 0 failed" in excluded.stdout

    setup.pair_extra["exclude"] = []
    setup.write()
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {
        "gone-remote.txt": b"gone-remote.txt",
        "gone-local.txt": b"gone-local.txt",
        "edited.txt": b"edited on the remote, meanwhile",  # timestamp_wins: the newer copy
        "plain.txt": b"plain.txt",
    }
    assert tree(setup.local) == expected
    assert {key: remote.get(key) for key in expected} == expected
    # Only the loser of edited.txt went to a trash, as any loser does; nothing was deleted.
    local_trash = setup.local / ".syncd" / "trash"
    trashed = [p.read_bytes() for p in local_trash.rglob("*") if p.is_file()]
    trashed += [remote.get(key) for key in remote.listing() if key.startswith(REMOTE_TRASH)]
    assert trashed == [b"edited.txt"]


def test_hostile_remote_keys_are_refused_and_nothing_leaves_the_root(
    tmp_path: Path, bucket_remote: Remote
) -> None:
    # Only a bucket can hold such keys; a folder remote cannot name a file outside itself.
    remote = bucket_remote
    setup = _setup(tmp_path, remote)
    keys = ["a//b.txt", "tab\tkey.txt"]
    if remote.kind != "azure":
        # Azure cannot hold these: it drops dot segments and turns "\\" into "/" before a blob
        # is named.
        keys += ["back\\slash.txt", "../escape.txt", "a/../../escape2.txt"]
    for key in [*keys, "folder/"]:
        remote.put(key, b"evil")
    remote.put("fine.txt", b"fine")
    result = syncd("once", "-c", setup.config)
    # Each refused key is a failure of that key, named (exit 1); the rest syncs; a folder
    # marker is skipped quietly.
    assert result.returncode == 1, result.stdout + result.stderr
    assert tree(setup.local) == {"fine.txt": b"fine"}
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path.parent / "escape2.txt").exists()
    failed = sorted(line for line in result.stdout.splitlines() if "failed: " in line)
    shown = {key.replace("\t", "\\x09") for key in keys}  # control characters escaped
    assert [line.split(": ")[1] for line in failed] == sorted(shown), result.stdout
    assert all(": remote key refused: " in line for line in failed), result.stdout
    assert f"1 downloaded, {len(keys)} failed" in result.stdout
    assert "folder" not in result.stdout

    # Not fixed by another pass: named again, and nothing changes.
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"0 uploaded, 0 downloaded, {len(keys)} failed" in again.stdout

    # Gone from the remote, they are no longer failures.
    for key in keys:
        remote.delete(key)
    clean = syncd("once", "-c", setup.config)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 uploaded, 0 downloaded, 0 failed" in clean.stdout
    assert tree(setup.local) == {"fine.txt": b"fine"}


def test_one_way_copies_pass_over_bad_names_only_their_destination_holds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A push never downloads, so a key in the bucket no local path may hold (another tool's
    Windows path) is no failure of `syncd upload`: reported once as skipped, exit 0, as
    rclone's copy passes over what only the destination holds. The same for a pull and a
    local name no key may hold."""
    remote = remote_for("s3", request, tmp_path)
    env = {
        "XDG_STATE_HOME": str(tmp_path / "state-home"),
        "AWS_ENDPOINT_URL": remote.options["endpoint_url"],
    }
    remote.put("backup\\2025\\old.txt", b"written by a Windows tool")
    source = tmp_path / "source"
    source.mkdir()
    (source / "report.txt").write_bytes(b"report")
    (source / "my\\notes.txt").write_bytes(b"a local name no key may hold")

    for _ in range(2):
        pushed = syncd("upload", source, remote.url, env=env)
        # The source's own bad name still fails: that file is not copied.
        assert pushed.returncode == 1, pushed.stdout + pushed.stderr
        failed = [line for line in pushed.stdout.splitlines() if "failed: " in line]
        assert failed == [f"  failed: my\\notes.txt: name contains a backslash: {NOT_A_KEY}"]
    assert remote.objects() == {
        "backup\\2025\\old.txt": b"written by a Windows tool",
        "report.txt": b"report",
    }
    (source / "my\\notes.txt").rename(source / "my-notes.txt")
    pushed = syncd("upload", source, remote.url, env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "1 uploaded, 0 downloaded, 0 failed" in pushed.stdout
    skipped = [json.loads(line) for line in pushed.stderr.splitlines() if '"skipped"' in line]
    assert [entry["path"] for entry in skipped] == ["backup\\2025\\old.txt"], pushed.stderr

    target = tmp_path / "target"
    target.mkdir()
    (target / "mine\\local.txt").write_bytes(b"stays, never uploaded by a pull")
    pulled = syncd("download", remote.url, target, env=env)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr  # the bucket's own bad key
    assert [line for line in pulled.stdout.splitlines() if "failed: " in line] == [
        "  failed: backup\\2025\\old.txt: remote key refused: contains a backslash"
    ]
    assert tree(target) == {
        "mine\\local.txt": b"stays, never uploaded by a pull",
        "my-notes.txt": b"a local name no key may hold",
        "report.txt": b"report",
    }


def test_remote_keys_that_differ_only_in_unicode_normalization_are_reported(
    tmp_path: Path, remote: Remote
) -> None:
    # One name, two spellings (é as one code point, or e + a combining accent): two objects
    # on the remote, one path here. One is synced, the other reported, and neither is lost.
    composed, decomposed = "\u00e9t\u00e9.txt", "e\u0301te\u0301.txt"
    setup = _setup(tmp_path, remote)
    remote.put(decomposed, b"decomposed")
    remote.put(composed, b"composed")
    result = syncd("once", "-c", setup.config)
    # The other spelling is a failure of that key (named, exit 1), left as it is.
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["event"] == "refused"]
    assert len(refused) == 1, result.stderr
    said = f"{refused[0]['path']} {refused[0]['reason']}"
    assert "Unicode normalization" in said
    assert composed in said and decomposed in said
    # The two look the same on screen: which is which is said, the refused one escaped.
    assert f"'{decomposed}' (NFD, 'e\\u0301te\\u0301.txt') and '{composed}' (NFC)" in said
    assert f"  failed: {decomposed}: remote key refused: " in result.stdout
    assert tree(setup.local) == {composed: b"composed"}
    (setup.local / composed).write_bytes(b"composed, edited")
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 uploaded, 0 downloaded, 1 failed" in again.stdout
    assert remote.objects() == {composed: b"composed, edited", decomposed: b"decomposed"}
    # With one spelling left, the pass is clean.
    remote.delete(decomposed)
    clean = syncd("once", "-c", setup.config)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert remote.objects() == {composed: b"composed, edited"}


def test_local_names_that_differ_only_in_unicode_normalization_are_reported(
    tmp_path: Path,
) -> None:
    # The same on the local side: two files, one remote key.
    remote = FolderRemote(tmp_path / "remote")
    remote.root.mkdir()
    composed, decomposed = "\u00e9t\u00e9.txt", "e\u0301te\u0301.txt"
    setup = _setup(tmp_path, remote)
    (setup.local / decomposed).write_bytes(b"decomposed")
    (setup.local / composed).write_bytes(b"composed")
    for _ in range(2):
        result = syncd("once", "-c", setup.config)
        # The other spelling is a failure of that name (named, exit 1), left as it is.
        assert result.returncode == 1, result.stdout + result.stderr
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        refused = [line for line in lines if line["event"] == "refused"]
        assert len(refused) == 1, result.stderr
        said = f"{refused[0]['path']} {refused[0]['reason']}"
        assert "Unicode normalization" in said
        assert composed in said and decomposed in said
        assert f"'{decomposed}' (NFD, 'e\\u0301te\\u0301.txt') and '{composed}' (NFC)" in said
        assert f"  failed: {decomposed}: local name " in result.stdout
        assert remote.objects() == {composed: b"composed"}
        assert tree(setup.local) == {composed: b"composed", decomposed: b"decomposed"}
    (setup.local / decomposed).unlink()
    clean = syncd("once", "-c", setup.config)
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_once_dry_run_changes_nothing(tmp_path: Path, remote: Remote) -> None:
    setup = _setup(tmp_path, remote)
    (setup.local / "new.txt").write_bytes(b"new")
    result = syncd("once", "--dry-run", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert "upload\tdocs/new.txt\tnew locally" in result.stdout
    assert remote.listing() == {}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_dry_run_plans_local_renames_as_the_moves_the_real_run_makes(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """Two of three synced files renamed: the real run moves them (a server-side copy and
    a delete, nothing held by max_delete), but the dry run planned an upload and a deletion
    for each and said the deletions would be held, which the real run then did not do."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    files = {name: os.urandom(2000) for name in ("f1", "f2", "f3")}
    for name, data in files.items():
        (setup.local / name).write_bytes(data)
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "f1").rename(setup.local / "g1")
    (setup.local / "sub").mkdir()
    (setup.local / "f2").rename(setup.local / "sub" / "g2")

    dry = syncd("once", "--dry-run", "-c", setup.config)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines() == [
        "move\tdocs/g1\tmoved locally from f1",
        "move\tdocs/sub/g2\tmoved locally from f2",
    ]
    assert remote.objects() == files

    real = syncd("once", "-c", setup.config)
    assert real.returncode == 0, real.stdout + real.stderr
    assert "held" not in real.stdout
    assert real.stderr.count('"event": "moved"') == 2
    expected = {"g1": files["f1"], "sub/g2": files["f2"], "f3": files["f3"]}
    assert remote.objects() == expected and tree(setup.local) == expected
    assert syncd("once", "--dry-run", "-c", setup.config).stdout == ""


def test_syncd_upload_after_a_local_rename_deletes_nothing(tmp_path: Path) -> None:
    """`syncd upload` copies and never deletes, but a renamed file was sent as a move: its
    old name was deleted from the destination (and kept in no trash)."""
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    data = os.urandom(3000)
    (source / "a.bin").write_bytes(data)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert syncd("upload", source, f"file://{target}", env=env).returncode == 0
    (source / "a.bin").rename(source / "b.bin")
    dry = syncd("upload", source, f"file://{target}", "--dry-run", env=env)
    assert "upload\t" in dry.stdout and "b.bin\tnew locally" in dry.stdout
    result = syncd("upload", source, f"file://{target}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(target) == {"a.bin": data, "b.bin": data}


def test_one_way_copies_leave_the_trash_of_their_folder_alone(tmp_path: Path) -> None:
    """`syncd upload` / `download` never delete, but their pass pruned the trash of the
    folder they copy from or into after the default 30 days: versions a pair with
    `trash_days: 0` keeps for good in that folder were gone."""
    source, target, remote = tmp_path / "source", tmp_path / "target", tmp_path / "remote"
    for folder in (source, target, remote):
        folder.mkdir()
    (source / "a.txt").write_text("a")
    (remote / "b.txt").write_text("b")
    old = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y%m%d-%H%M%S")
    for root in (source, target):
        kept = root / ".syncd" / "trash" / old / "report.txt"
        kept.parent.mkdir(parents=True)
        kept.write_text("precious v1")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    pushed = syncd("upload", source, f"file://{remote}", env=env)
    pulled = syncd("download", f"file://{remote}", target, env=env)
    assert (pushed.returncode, pulled.returncode) == (0, 0), pushed.stderr + pulled.stderr
    assert (target / "a.txt").read_text() == "a"
    for root in (source, target):
        assert (root / ".syncd" / "trash" / old / "report.txt").read_text() == "precious v1"


def test_a_file_url_with_dot_segments_names_the_folder_they_lead_to(tmp_path: Path) -> None:
    """`file:///W/nope/../target`: read as is, the dry run listed a missing folder (every file
    "new locally") while the real run replaced the target's differing file, and the upload
    made the folder `nope`, outside both folders. Its dot segments are removed, as from any
    URL's path: both runs name `W/target`, and nothing else is made."""
    source, target = tmp_path / "source", tmp_path / "target"
    for folder in (source, target):
        folder.mkdir()
    (source / "same.txt").write_text("same")
    (target / "same.txt").write_text("same")
    (source / "new.txt").write_text("new")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    dotted = f"file://{tmp_path}/nope/../target"
    plan = syncd("upload", source, dotted, "--dry-run", env=env)
    plain = syncd("upload", source, f"file://{target}", "--dry-run", env=env)
    assert plan.returncode == plain.returncode == 0, plan.stdout + plan.stderr

    def steps(stdout: str) -> list[tuple[str, ...]]:
        """The plan's lines, each path without the copy's own pair name (`upload-1a2b/`)."""
        lines = [line.split("\t") for line in stdout.splitlines() if line.count("\t") == 2]
        return [(action, path.partition("/")[2], why) for action, path, why in lines]

    assert (
        steps(plan.stdout)
        == steps(plain.stdout)
        == [
            ("upload", "new.txt", "new locally"),
            ("record", "same.txt", "same content on both sides"),
        ]
    )
    pushed = syncd("upload", source, dotted, env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert (target / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source", "target", "xdg"]


def test_dry_runs_create_no_state_and_no_folder(tmp_path: Path) -> None:
    """A dry run changes nothing, not even the state: no state database, lock or folder is
    made where none was; a download's dry run into a folder the real run would make plans
    every file, and the folder stays unmade."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "down.txt").write_bytes(b"down")
    source = tmp_path / "source"
    source.mkdir()
    (source / "up.txt").write_bytes(b"up")
    config = tmp_path / "syncd.yaml"
    state = tmp_path / "new-state-folder" / "state.db"
    config.write_text(
        f"state: sqlite:///{state}\n"
        f"socket: {tmp_path / 'run' / 'syncd.sock'}\n"
        f"pairs: [{{name: p, local: {source}, remote: 'file://{remote}'}}]\n"
    )
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    once = syncd("once", "--dry-run", "-c", config, env=env)
    up = syncd("upload", source, f"file://{remote}", "--dry-run", env=env)
    down = syncd("download", f"file://{remote}", tmp_path / "target", "--dry-run", env=env)

    assert once.returncode == 0, once.stderr
    assert "upload\tp/up.txt\tnew locally" in once.stdout
    assert "download\tp/down.txt\tnew remotely" in once.stdout
    assert up.returncode == 0 and "up.txt\tnew locally" in up.stdout, up.stderr
    assert down.returncode == 0 and "down.txt\tnew remotely" in down.stdout, down.stderr
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before


def test_a_dry_run_into_a_folder_the_real_run_would_make_plans_it_and_makes_nothing(
    tmp_path: Path,
) -> None:
    """`syncd upload --dry-run` to a file:// folder that does not exist yet failed (exit 1,
    "cannot list"); the real run makes it. The dry run plans every file, exits as the real
    run would (0) and leaves the folder unmade; `download --dry-run` into a missing folder
    too, however deep."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "up.txt").write_bytes(b"up")
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "down.txt").write_bytes(b"down")
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    new_remote = tmp_path / "remote" / "new" / "deeper"
    target = tmp_path / "target" / "deeper"
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    up = syncd("upload", source, f"file://{new_remote}", "--dry-run", env=env)
    down = syncd("download", f"file://{tmp_path / 'remote'}", target, "--dry-run", env=env)

    assert up.returncode == 0, up.stdout + up.stderr
    assert "upload\t" in up.stdout and "up.txt\tnew locally" in up.stdout
    assert down.returncode == 0, down.stdout + down.stderr
    assert "down.txt\tnew remotely" in down.stdout
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before  # no folder, no state

    real = syncd("upload", source, f"file://{new_remote}", env=env)
    assert real.returncode == 0, real.stdout + real.stderr
    assert tree(new_remote) == {"up.txt": b"up"}


@pytest.mark.parametrize("prefix", ["", "new/prefix/"])
def test_a_dry_run_against_an_empty_bucket_prefix_plans_every_file(
    tmp_path: Path, s3_bucket: Any, prefix: str
) -> None:
    """An empty bucket, or a prefix nothing is under yet: the dry runs exit 0 and plan what
    the real runs do, and write nothing."""
    remote = S3Remote(s3_bucket, prefix)
    env = {
        "XDG_STATE_HOME": str(tmp_path / "state-home"),
        "AWS_ENDPOINT_URL": s3_bucket.endpoint_url,
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "up.txt").write_bytes(b"up")
    target = tmp_path / "target"

    up = syncd("upload", source, remote.url, "--dry-run", env=env)
    down = syncd("download", remote.url, target, "--dry-run", env=env)

    assert up.returncode == 0 and "up.txt\tnew locally" in up.stdout, up.stdout + up.stderr
    assert down.returncode == 0, down.stdout + down.stderr
    assert remote.listing() == {}
    assert not target.exists() and not (tmp_path / "state-home").exists()


def test_an_edit_that_restores_size_and_mtime_is_still_caught(
    tmp_path: Path, remote: Remote
) -> None:
    setup = _setup(tmp_path, remote)
    target = setup.local / "sneaky.txt"
    target.write_bytes(b"version A")
    os.utime(target, ns=(MTIME_NS, MTIME_NS))
    assert syncd("once", "-c", setup.config).returncode == 0
    target.write_bytes(b"version B")  # same size
    os.utime(target, ns=(MTIME_NS, MTIME_NS))  # and the old mtime put back
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert "1 uploaded" in result.stdout
    assert remote.get("sneaky.txt") == b"version B"


def test_a_folder_remote_rewritten_in_place_with_its_old_size_and_mtime_is_caught(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The remote side's twin of the test above: a file of a file:// remote rewritten in place
    (same inode, same size, the old mtime put back) is a new version, told by its ctime; unseen,
    a later local edit would replace it with no copy kept."""
    remote = remote_for("file", request, tmp_path)
    assert isinstance(remote, FolderRemote)
    setup = _setup(tmp_path, remote)
    (setup.local / "sneaky.txt").write_bytes(b"version A")
    (setup.local / "other.txt").write_bytes(b"other")
    assert syncd("once", "-c", setup.config).returncode == 0
    target = remote.root / "sneaky.txt"

    def rewrite_in_place(data: bytes) -> None:
        before = target.stat()
        with open(target, "r+b") as fh:
            fh.write(data)
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = target.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )

    rewrite_in_place(b"VERSION A")
    pulled = syncd("once", "-c", setup.config)
    assert pulled.returncode == 0, pulled.stderr
    assert "0 uploaded, 1 downloaded" in pulled.stdout
    assert tree(setup.local) == {"sneaky.txt": b"VERSION A", "other.txt": b"other"}
    settled = syncd("once", "-c", setup.config)
    assert "0 uploaded, 0 downloaded" in settled.stdout

    # Rewritten again while the local file is edited too: a conflict, both versions kept.
    rewrite_in_place(b"version B")
    (setup.local / "sneaky.txt").write_bytes(b"a local edit")
    both = syncd("once", "-c", setup.config)
    assert both.returncode == 0, both.stderr
    assert "conflict settled: sneaky.txt: timestamp_wins: local is newer" in both.stdout
    kept = [p.read_bytes() for p in remote.root.glob(".syncd-trash/*/sneaky.txt")]
    assert kept == [b"version B"]  # the loser, in the remote trash
    assert remote.get("sneaky.txt") == b"a local edit"  # the newer one, on both sides
    assert (setup.local / "sneaky.txt").read_bytes() == b"a local edit"


def _put_archived(remote: Remote, key: str, data: bytes) -> None:
    """Write `key` straight into the service's archive tier (unreadable until restored)."""
    if isinstance(remote, S3Remote):
        remote.bucket.client.put_object(
            Bucket=remote.bucket.bucket, Key=remote.prefix + key, Body=data, StorageClass="GLACIER"
        )
    elif isinstance(remote, AzureRemote):
        remote.put(key, data)
        blob = remote.container.client.get_blob_client(remote.prefix + key)
        blob.set_standard_blob_tier("Archive")
    else:  # GCS's ARCHIVE class is read like any other: nothing to hold back there
        raise AssertionError(f"{remote.kind} has no archive tier")


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_archived_objects_are_reported_and_left_alone(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    (setup.local / "cold.txt").write_bytes(b"local copy")
    assert syncd("once", "-c", setup.config).returncode == 0
    before = remote.listing()
    # Someone archives the object with new content; the local copy is now stale.
    _put_archived(remote, "cold.txt", b"archived edit")
    archived = remote.listing()["cold.txt"]
    (setup.local / "cold.txt").unlink()  # and the local file is deleted meanwhile
    planned = syncd("once", "--dry-run", "-c", setup.config)  # as the real run: exit 1
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert f"  failed: cold.txt: {ARCHIVED}" in planned.stdout.splitlines(), planned.stdout
    result = syncd("once", "-c", setup.config)
    # Not in sync, nothing to do till someone restores it: a per-file failure, named (it
    # was exit 0, "everything in sync", with the local folder lacking the file).
    assert result.returncode == 1, result.stderr
    assert f"  failed: cold.txt: {ARCHIVED}" in result.stdout.splitlines(), result.stdout
    assert remote.listing() == {"cold.txt": archived} != before  # neither deleted nor replaced
    assert not (setup.local / "cold.txt").exists()


def _archived_md5(remote: Remote, key: str) -> tuple[str, str]:
    """The tier and MD5 (hex) the service states for an archived object, which cannot be
    read back to compare bytes: a single-part S3 ETag is the MD5, Azure keeps Content-MD5."""
    if isinstance(remote, S3Remote):
        head = remote.bucket.client.head_object(
            Bucket=remote.bucket.bucket, Key=remote.prefix + key
        )
        return head["StorageClass"], head["ETag"].strip('"')
    assert isinstance(remote, AzureRemote)
    blob = remote.container.client.get_blob_client(remote.prefix + key)
    props = blob.get_blob_properties()
    return props.blob_tier, bytes(props.content_settings.content_md5).hex()


@pytest.mark.parametrize("direction", ["both", "upload"])
@pytest.mark.parametrize(
    ("kind", "tier"), [("s3", "GLACIER"), ("s3", "DEEP_ARCHIVE"), ("azure", "Archive")]
)
def test_a_local_edit_goes_up_over_its_archived_object(
    tmp_path: Path, kind: str, tier: str, direction: str, request: pytest.FixtureRequest
) -> None:
    # A backup pair straight into an archive tier: every edit is a new version to keep.
    remote = remote_for(kind, request, tmp_path)
    setup = Setup(
        tmp_path,
        remote.url,
        options={**remote.options, "storage_class": tier},
        pair_extra={"direction": direction},
    )
    setup.write()
    target = setup.local / "ledger.txt"
    target.write_bytes(b"version 1")
    assert syncd("once", "-c", setup.config).returncode == 0
    assert _archived_md5(remote, "ledger.txt")[0] == tier
    edit = b"version 2, edited after the backup"
    target.write_bytes(edit)

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert "1 uploaded" in result.stdout
    assert "archive tier" not in result.stderr
    expected_md5 = hashlib.md5(edit, usedforsecurity=False).hexdigest()
    assert _archived_md5(remote, "ledger.txt") == (tier, expected_md5)
    assert list(remote.listing()) == ["ledger.txt"]  # no trash copy (it could not be read)
    # A touch: recorded, not sent (and the archived object's mtime is not restamped, which
    # the service would refuse).
    later = target.stat().st_mtime_ns + 60 * 10**9
    os.utime(target, ns=(later, later))
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stderr
    assert "0 uploaded, 0 downloaded" in again.stdout
    assert "archive tier" not in again.stderr


def test_an_archived_object_edited_on_both_sides_is_reported_and_both_kept(
    tmp_path: Path, s3_bucket: Any
) -> None:
    remote = S3Remote(s3_bucket)
    setup = _setup(tmp_path, remote)
    target = setup.local / "cold.txt"
    target.write_bytes(b"synced")
    assert syncd("once", "-c", setup.config).returncode == 0
    _put_archived(remote, "cold.txt", b"archived edit")  # a new version, unreadable
    archived = remote.listing()
    target.write_bytes(b"local edit")  # settling the conflict needs the archived bytes

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 1, result.stderr
    assert f"  failed: cold.txt: {ARCHIVED}" in result.stdout.splitlines(), result.stdout
    assert remote.listing() == archived
    assert tree(setup.local) == {"cold.txt": b"local edit"}


def test_a_name_too_long_for_the_local_filesystem_is_a_per_file_error(
    tmp_path: Path, s3_bucket: Any
) -> None:
    remote = S3Remote(s3_bucket)
    setup = _setup(tmp_path, remote)
    long_name = "n" * 300 + ".txt"
    remote.put(long_name, b"too long")
    remote.put("fine.txt", b"fine")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 1, result.stdout + result.stderr
    # The name at fault, not the temp file it came down into (`.syncd-tmp-…`), which the
    # user never sees.
    assert f"  failed: {long_name}: File name too long: {long_name}" in result.stdout.splitlines()
    assert ".syncd-tmp-" not in result.stdout + result.stderr
    assert tree(setup.local) == {"fine.txt": b"fine"}


#: 229 and 235 bytes: a conflict copy's name (some 30 bytes more) would pass NAME_MAX (255).
LONG_NAMES = ("y" * 226 + ".md", "é" * 115 + "-b.md")


def _copies(names: dict[str, bytes]) -> list[str]:
    return sorted(name for name in names if ".conflict-" in name)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_conflict_on_a_long_name_settles_with_a_shortened_copy(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """Its copy's name did not fit a file name: the machine failed at every pass, forever.
    Either side's older version (a local rename, a server-side copy) gets a copy whose NAME
    is shortened to fit; both versions are on both sides, and the next pass is quiet."""
    remote = remote_for(kind, request, tmp_path)
    setup = Setup(
        tmp_path, remote.url, options=remote.options, pair_extra={"conflict": "version_preserve"}
    )
    setup.write()
    older_local, older_remote = LONG_NAMES
    remote.put(older_local, b"remote, newer", mtime_ns=MTIME_NS + 10**9)
    remote.put(older_remote, b"remote, older", mtime_ns=MTIME_NS)
    for name, data, mtime in (
        (older_local, b"local, older", MTIME_NS),
        (older_remote, b"local, newer", MTIME_NS + 10**9),
    ):
        (setup.local / name).write_bytes(data)
        os.utime(setup.local / name, ns=(mtime, mtime))

    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stdout + first.stderr
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 uploaded, 0 downloaded, 0 failed, 0 conflicts" in again.stdout

    local = tree(setup.local)
    assert local == remote.objects()
    copies = _copies(local)
    assert len(copies) == 2 and all(len(c.encode()) <= 255 for c in copies)
    assert local[older_local] == b"remote, newer" and local[older_remote] == b"local, newer"
    assert sorted(local[c] for c in copies) == [b"local, older", b"remote, older"]


def test_a_new_accented_name_longer_than_255_bytes_decomposed_comes_down(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Looking for its NFD spelling on disk (366 bytes: no such name can exist) raised "File
    name too long": the file never came down."""
    remote = remote_for("file", request, tmp_path)
    setup = _setup(tmp_path, remote)
    name = "é" * 120 + ".txt"
    remote.put(name, b"accented")
    run = syncd("once", "-c", setup.config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert tree(setup.local) == {name: b"accented"}


def test_resolve_keep_both_on_a_long_name(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote = remote_for("file", request, tmp_path)
    setup = Setup(tmp_path, remote.url, pair_extra={"conflict": "manual"})
    setup.write()
    name = LONG_NAMES[0]
    remote.put(name, b"remote version")
    (setup.local / name).write_bytes(b"local version")
    assert syncd("once", "-c", setup.config).returncode == 4

    kept = syncd("resolve", name, "--keep", "both", "-c", setup.config)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout.strip() == f"docs/{name}: kept both"
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stdout + again.stderr
    local = tree(setup.local)
    assert local == remote.objects()
    assert sorted(local.values()) == [b"local version", b"remote version"]


def test_one_way_upload_and_download_copy_without_deleting(tmp_path: Path, remote: Remote) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    if "endpoint_url" in remote.options:  # the one-way commands take the SDK's own variables
        env["AWS_ENDPOINT_URL"] = remote.options["endpoint_url"]
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha")
    (source / "sub" / "b.bin").write_bytes(b"beta")
    (source / "skip.tmp").write_bytes(b"excluded")
    remote.put("remote-only.txt", b"stays")

    pushed = syncd("upload", source, remote.url, "--exclude", "*.tmp", env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "2 uploaded" in pushed.stdout
    assert remote.get("a.txt") == b"alpha" and remote.get("sub/b.bin") == b"beta"
    assert "skip.tmp" not in remote.listing()
    again = syncd("upload", source, remote.url, "--exclude", "*.tmp", env=env)
    assert again.returncode == 0 and "0 uploaded" in again.stdout

    (source / "a.txt").unlink()  # a one-way copy never deletes on the other side
    (source / "sub" / "b.bin").write_bytes(b"beta, edited")
    third = syncd("upload", source, remote.url, "--exclude", "*.tmp", env=env)
    assert third.returncode == 0, third.stderr
    assert remote.get("a.txt") == b"alpha" and remote.get("sub/b.bin") == b"beta, edited"

    target = tmp_path / "target"
    pulled = syncd("download", remote.url, target, "--exclude", "remote-only.txt", env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert tree(target) == {"a.txt": b"alpha", "sub/b.bin": b"beta, edited"}
    dry = syncd("download", remote.url, target, "--dry-run", env=env)
    assert dry.returncode == 0 and "download\t" in dry.stdout and "remote-only.txt" in dry.stdout
    assert "remote-only.txt" not in tree(target)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_one_way_download_keeps_a_file_whose_name_a_local_folder_takes(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """`syncd download`: the remote file `x` where the local side has a folder `x` never
    came down (exit 0, the summary silent); the reverse clash (a local file `y`, a remote
    folder `y`) made a conflict copy. Now `x` comes down as a conflict copy beside the
    folder, said in the summary, and a second run makes no second copy."""
    remote = remote_for(kind, request, tmp_path)
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    if "endpoint_url" in remote.options:
        env["AWS_ENDPOINT_URL"] = remote.options["endpoint_url"]
    remote.put("x", b"remote file x")
    remote.put("y/inner", b"remote inner")
    target = tmp_path / "target"
    (target / "x").mkdir(parents=True)
    (target / "x" / "mine").write_bytes(b"local inside x")
    (target / "y").write_bytes(b"local file y")

    pulled = syncd("download", remote.url, target, env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    got = tree(target)
    (x_copy,) = [p for p in got if p.startswith("x.conflict-")]
    (y_copy,) = [p for p in got if p.startswith("y.conflict-")]
    assert got == {
        "x/mine": b"local inside x",
        x_copy: b"remote file x",
        "y/inner": b"remote inner",
        y_copy: b"local file y",
    }
    assert f"conflict settled: x: a folder of this name here: the remote file kept as {x_copy}" in (
        pulled.stdout
    )
    assert remote.objects() == {"x": b"remote file x", "y/inner": b"remote inner"}

    again = syncd("download", remote.url, target, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "conflict settled" not in again.stdout
    assert tree(target) == got


def test_one_way_upload_settles_a_file_and_a_folder_of_one_name_on_the_remote(
    tmp_path: Path,
) -> None:
    """`syncd upload` into a folder remote, which cannot hold a file and a folder of one
    name: where the source had a folder `x` and the destination a file `x` (or the other way
    round), nothing crossed and the run said "0 failed, 0 conflicts", exit 0. It settles the
    clash on the side it writes, as `download` does on its own: the remote file `x` steps
    aside as a conflict copy and the folder goes up; the local file `d` goes up as a copy
    beside the remote folder `d`. Said in the summary, once."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    source, remote = tmp_path / "source", tmp_path / "remote"
    (source / "x").mkdir(parents=True)
    (source / "x" / "y").write_bytes(b"source inside x")
    (source / "d").write_bytes(b"source file d")
    (remote / "d").mkdir(parents=True)
    (remote / "d" / "old.txt").write_bytes(b"remote inside d")
    (remote / "x").write_bytes(b"remote file x")

    pushed = syncd("upload", source, f"file://{remote}", env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    got = tree(remote)
    (x_copy,) = [p for p in got if p.startswith("x.conflict-")]
    (d_copy,) = [p for p in got if p.startswith("d.conflict-")]
    assert got == {
        "x/y": b"source inside x",
        x_copy: b"remote file x",
        "d/old.txt": b"remote inside d",
        d_copy: b"source file d",
    }
    assert f"conflict settled: x: a folder of this name here: the remote file kept as {x_copy}" in (
        pushed.stdout
    )
    assert (
        "conflict settled: d: a folder of this name on the remote: "
        f"the local file kept on the remote as {d_copy}"
    ) in pushed.stdout
    assert tree(source) == {"x/y": b"source inside x", "d": b"source file d"}

    again = syncd("upload", source, f"file://{remote}", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "conflict settled" not in again.stdout and "0 uploaded" in again.stdout
    assert tree(remote) == got


def test_one_way_copies_restore_what_the_destination_lost_or_changed(
    tmp_path: Path, remote: Remote
) -> None:
    """Like `rclone copy`: a second `syncd upload` sends again an object deleted since the
    first, and replaces one edited on the remote, whose edit is kept in the remote trash; a
    second `syncd download` does the same for the local folder (the edit kept in the local
    trash)."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    if "endpoint_url" in remote.options:
        env["AWS_ENDPOINT_URL"] = remote.options["endpoint_url"]
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha")
    (source / "b.txt").write_bytes(b"beta")
    first = syncd("upload", source, remote.url, env=env)
    assert first.returncode == 0, first.stdout + first.stderr

    remote.delete("a.txt")
    remote.put("b.txt", b"beta, edited on the remote")
    again = syncd("upload", source, remote.url, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert remote.get("a.txt") == b"alpha" and remote.get("b.txt") == b"beta"
    trashed = [remote.read(k) for k in remote.listing() if k.startswith(".syncd-trash/")]
    assert trashed == [b"beta, edited on the remote"]
    settled = syncd("upload", source, remote.url, env=env)
    assert settled.returncode == 0 and "0 uploaded" in settled.stdout

    target = tmp_path / "target"
    pulled = syncd("download", remote.url, target, env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    (target / "a.txt").unlink()
    (target / "b.txt").write_bytes(b"beta, edited locally")
    again = syncd("download", remote.url, target, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree(target) == {"a.txt": b"alpha", "b.txt": b"beta"}
    kept = [p.read_bytes() for p in (target / ".syncd" / "trash").rglob("*") if p.is_file()]
    assert kept == [b"beta, edited locally"]


def test_one_way_commands_reject_bad_input_with_one_line(tmp_path: Path) -> None:
    missing = syncd("upload", tmp_path / "nope", "s3://bucket-x/p")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    bad_url = syncd("download", "ftp://x/y", tmp_path / "t")
    assert bad_url.returncode == 2 and "unknown scheme" in bad_url.stderr
    assert "Traceback" not in bad_url.stderr
    bad_glob = syncd("upload", tmp_path, "file:///nowhere", "--exclude", "a", "--exclude", "[z-a]")
    assert bad_glob.returncode == 2, bad_glob.stderr
    assert bad_glob.stderr == (
        "syncd: --exclude '[z-a]': not a valid pattern (bad character range z-a)\n"
    )


def test_one_way_argument_errors_name_the_arguments_typed(tmp_path: Path) -> None:
    """`upload` / `download` take LOCAL_DIR and REMOTE_URL: their errors said
    `command line: pairs: pairs[0].remote (…) is inside pairs[0].local (…)`, words of a
    config file the user never wrote."""
    local = tmp_path / "local"
    (local / "inside").mkdir(parents=True)
    cases = [
        (
            ["upload", local, f"file://{local}/inside"],
            f"REMOTE_URL ({local}/inside) is inside LOCAL_DIR ({local})",
        ),
        (
            ["download", f"file://{local}/inside", local],
            f"REMOTE_URL ({local}/inside) is inside LOCAL_DIR ({local})",
        ),
        (
            ["upload", local, "ftp://x/y"],
            "REMOTE_URL: unknown scheme ftp:// (supported: file://, s3://, gs://, az://)",
        ),
        (
            ["upload", local, "file:///nowhere", "--transfers", "0"],
            "--transfers: must be at least 1",
        ),
    ]
    for argv, line in cases:
        done = syncd(*argv, timeout=60)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.startswith(f"syncd: {line}") and done.stderr.count("\n") == 1
        assert "pairs" not in done.stderr and "command line" not in done.stderr, done.stderr
    assert sorted(p.name for p in local.rglob("*")) == ["inside"]


def test_a_one_way_destination_that_cannot_be_a_folder_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """A download into a file, under a file or where syncd may not make the folder (and an
    upload to a file:// remote that is a file, or from a file: it said "no such folder" of a
    file that is there): exit 2, one line naming the path, the file in
    the way untouched; it was a traceback and exit 1. A dry run says the same (sweep T)."""
    remote, src = tmp_path / "remote", tmp_path / "src"
    remote.mkdir()
    src.mkdir()
    (remote / "a.txt").write_bytes(b"a")
    (src / "b.txt").write_bytes(b"b")
    in_the_way = tmp_path / "in-the-way.txt"
    in_the_way.write_bytes(b"keep me")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    cases = [
        ([], ["download", f"file://{remote}", in_the_way], f"{in_the_way}: not a folder"),
        (
            [],
            ["download", f"file://{remote}", in_the_way / "sub"],
            f"{in_the_way / 'sub'}: cannot make this folder: Not a directory",
        ),
        ([], ["upload", src, f"file://{in_the_way}"], f"{in_the_way}: not a folder"),
        ([], ["upload", in_the_way, f"file://{remote}"], f"{in_the_way}: not a folder"),
        (
            [],
            ["upload", tmp_path / "nowhere", f"file://{remote}"],
            f"{tmp_path}/nowhere: no such folder",
        ),
        (
            require_without_dac(),
            ["download", f"file://{remote}", locked / "new"],
            f"{locked / 'new'}: cannot make this folder: Permission denied",
        ),
    ]
    # A dry run refuses each as the real run does (it planned a copy, exit 0, under a file).
    for dry in ([], ["--dry-run"]):
        for prefix, argv, line in cases:
            result = subprocess.run(
                [*prefix, *SYNCD, *map(str, argv), *dry],
                capture_output=True,
                text=True,
                check=False,
            )
            assert (result.returncode, result.stderr) == (2, f"syncd: {line}\n"), (
                dry,
                result.stdout,
            )
    assert in_the_way.read_bytes() == b"keep me"
    assert list(locked.iterdir()) == []


def test_a_download_that_copies_nothing_for_a_missing_remote_leaves_no_folder_made(
    tmp_path: Path,
) -> None:
    """`syncd download` from a missing folder (a bucket alike) fails naming it, exit 1; the
    destination folders it made for the copy (here two levels) are gone again. It left them."""
    target = tmp_path / "new" / "target"
    missing = syncd("download", f"file://{tmp_path / 'no-such-remote'}", target)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "no-such-remote" in missing.stdout
    assert not (tmp_path / "new").exists()
    (tmp_path / "there").mkdir()  # a folder that was there stays
    kept = syncd("download", f"file://{tmp_path / 'no-such-remote'}", tmp_path / "there")
    assert kept.returncode == 1 and (tmp_path / "there").is_dir()


#: A non-default storage class per kind, and how the service reports it on an object.
STORAGE_CLASSES = {"s3": "STANDARD_IA", "gcs": "NEARLINE", "azure": "Cool"}


def _storage_class(remote: Remote, key: str) -> str:
    if isinstance(remote, S3Remote):
        head = remote.bucket.client.head_object(
            Bucket=remote.bucket.bucket, Key=remote.prefix + key
        )
        return str(head.get("StorageClass", "STANDARD"))
    if isinstance(remote, GCSRemote):
        return str(remote.bucket.get(remote.prefix + key).storage_class)
    assert isinstance(remote, AzureRemote)
    blob = remote.container.client.get_blob_client(remote.prefix + key)
    return str(blob.get_blob_properties().blob_tier)


def test_storage_class_is_set_per_pair(tmp_path: Path, bucket_remote: Remote) -> None:
    remote = bucket_remote
    wanted = STORAGE_CLASSES[remote.kind]
    setup = Setup(tmp_path, remote.url, options={**remote.options, "storage_class": wanted})
    setup.write()
    (setup.local / "a.txt").write_bytes(b"cold-ish")
    (setup.local / "sub").mkdir()
    (setup.local / "sub" / "b.txt").write_bytes(b"also")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert remote.objects() == {"a.txt": b"cold-ish", "sub/b.txt": b"also"}
    assert _storage_class(remote, "a.txt") == _storage_class(remote, "sub/b.txt") == wanted
    # A later edit keeps the class.
    (setup.local / "a.txt").write_bytes(b"cold-ish, edited")
    assert syncd("once", "-c", setup.config).returncode == 0
    assert _storage_class(remote, "a.txt") == wanted


def test_a_conflict_copy_an_interrupted_run_made_is_reused_not_duplicated(
    tmp_path: Path, remote: Remote
) -> None:
    """version_preserve with the remote older: a kill after the server-side copy leaves the copy
    behind; the next run finds it (by the checksum the service states, or by hashing a
    local-folder remote's file) and finishes that conflict without a second copy."""
    setup = Setup(
        tmp_path, remote.url, options=remote.options, pair_extra={"conflict": "version_preserve"}
    )
    setup.write()
    (setup.local / "f.txt").write_bytes(b"base")
    assert syncd("once", "-c", setup.config).returncode == 0
    remote.put("f.txt", b"the remote edit", mtime_ns=MTIME_NS)  # the older side
    (setup.local / "f.txt").write_bytes(b"the local edit, newer")
    copy = f"f.conflict-20261124-101500-{host_name()}.txt"
    remote.copy("f.txt", copy)  # what the interrupted run did before it was killed

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    copies = sorted(key for key in remote.objects() if ".conflict-" in key)
    assert copies == [copy]
    assert sorted(p.name for p in setup.local.iterdir() if ".conflict-" in p.name) == [copy]
    assert remote.get(copy) == b"the remote edit"
    assert (setup.local / copy).read_bytes() == b"the remote edit"
    assert remote.get("f.txt") == b"the local edit, newer"
    assert (setup.local / "f.txt").read_bytes() == b"the local edit, newer"


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("folder_side", ["local", "remote"])
def test_a_file_and_a_folder_of_one_name_settle_in_one_pass(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, folder_side: str
) -> None:
    """One side makes a folder of a synced file's name while the other edits the file:
    neither can cross. The file steps aside as a conflict copy (on its own side, then synced
    both ways) and the folder crosses: one pass, exit 0, every version kept. (A bucket may
    hold the edited file beside the folder for a moment; its removal counts for max_delete.)"""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    (setup.local / "a.txt").write_bytes(b"as synced")
    others = {f"other-{i}.txt": b"other" for i in range(3)}  # the pair is more than that file
    for name, data in others.items():
        (setup.local / name).write_bytes(data)
    assert syncd("once", "-c", setup.config).returncode == 0

    if folder_side == "local":
        (setup.local / "a.txt").unlink()
        (setup.local / "a.txt").mkdir()
        (setup.local / "a.txt" / "inner.txt").write_bytes(b"in the new folder")
        remote.put("a.txt", b"edited on the remote")
        edited = b"edited on the remote"
    else:
        remote.delete("a.txt")
        remote.put("a.txt/inner.txt", b"in the new folder")
        (setup.local / "a.txt").write_bytes(b"edited locally")
        edited = b"edited locally"

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    local = tree(setup.local)
    copies = [path for path in local if path.startswith("a.conflict-")]
    assert len(copies) == 1 and local[copies[0]] == edited
    assert local == {"a.txt/inner.txt": b"in the new folder", copies[0]: edited, **others}
    # Said in the summary, as any settled conflict (it said "0 conflicts" and nothing more).
    assert "  conflict settled: a.txt: a folder of this name " in result.stdout, result.stdout
    assert remote.objects() == local
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0 and "0 uploaded, 0 downloaded" in again.stdout


def _synced_x(setup: Setup, becomes: str) -> dict[str, bytes]:
    """Sync `x` as what it is before it `becomes` the other kind (a file, or a folder holding
    `inner.txt`), beside a few other files (the pair is more than `x`, as max_delete weighs);
    returns those others."""
    others = {f"other-{i}.txt": b"other" for i in range(3)}
    for name, data in others.items():
        (setup.local / name).write_bytes(data)
    if becomes == "folder":
        (setup.local / "x").write_bytes(b"a file at first")
    else:
        (setup.local / "x").mkdir()
        (setup.local / "x" / "inner.txt").write_bytes(b"in a folder at first")
    assert syncd("once", "-c", setup.config).returncode == 0
    return others


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("becomes", ["folder", "file"])
def test_a_file_replaced_by_a_folder_of_its_name_settles_in_one_pass(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, becomes: str
) -> None:
    """A synced file replaced locally by a folder of the same name (or a folder by a file):
    the old one is deleted on the remote (into its trash) and the new one crosses, in the same
    pass, though deletions go last: what failed for want of room is tried again after them."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    others = _synced_x(setup, becomes)

    if becomes == "folder":
        (setup.local / "x").unlink()
        (setup.local / "x").mkdir()
        (setup.local / "x" / "inner.txt").write_bytes(b"now a folder")
        expected = {"x/inner.txt": b"now a folder", **others}
    else:
        (setup.local / "x" / "inner.txt").unlink()
        (setup.local / "x").rmdir()
        (setup.local / "x").write_bytes(b"now a file")
        expected = {"x": b"now a file", **others}
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(setup.local) == expected
    assert {k: v for k, v in remote.objects().items() if not k.startswith(".syncd")} == expected


def test_a_download_only_copy_never_moves_the_remote_file_aside(tmp_path: Path) -> None:
    """`syncd download` into a folder holding a folder where the remote has a file of that
    name: a one-way copy never writes its source, so the remote file stays where it is and
    comes down as a conflict copy beside the folder (and is said so)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "a.txt").write_bytes(b"a file on the remote")
    (remote / "b.txt").write_bytes(b"b")
    target = tmp_path / "target"
    (target / "a.txt").mkdir(parents=True)
    (target / "a.txt" / "mine.txt").write_bytes(b"a folder here")
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    result = syncd("download", f"file://{remote}", target, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a folder stands where the remote has a file" in result.stderr
    assert tree(remote) == {"a.txt": b"a file on the remote", "b.txt": b"b"}
    got = tree(target)
    (copy,) = [path for path in got if path.startswith("a.conflict-")]
    assert copy.endswith(".txt") and f"the remote file kept as {copy}" in result.stdout
    assert got == {"a.txt/mine.txt": b"a folder here", "b.txt": b"b", copy: b"a file on the remote"}


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("becomes", ["folder", "file"])
def test_a_remote_file_replaced_by_a_folder_comes_down_in_one_pass_without_a_copy(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, becomes: str
) -> None:
    """The remote side swaps a synced file for a folder of its name (or the other way round),
    nothing edited locally: the local one goes to the trash and the new one comes down, in one
    pass, and no conflict copy is made (nothing conflicts)."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    others = _synced_x(setup, becomes)

    if becomes == "folder":
        remote.delete("x")
        remote.put("x/inner.txt", b"now a folder")
        expected = {"x/inner.txt": b"now a folder", **others}
    else:
        remote.delete("x/inner.txt")
        remote.put("x", b"now a file")
        expected = {"x": b"now a file", **others}
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(setup.local) == expected
    assert {k: v for k, v in remote.objects().items() if not k.startswith(".syncd")} == expected


def _visible_objects(remote: Remote) -> dict[str, bytes]:
    """The remote's objects but syncd's own (its trash)."""
    return {k: v for k, v in remote.objects().items() if not k.startswith(".syncd")}


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@pytest.mark.parametrize("folder_first", [False, True], ids=["both new", "folder synced first"])
@pytest.mark.parametrize("workers", [1, 4])
def test_a_bucket_holding_a_file_and_a_folder_of_one_name_brings_both_down_in_one_pass(
    tmp_path: Path, request: pytest.FixtureRequest, workers: int, folder_first: bool, kind: str
) -> None:
    """A bucket may hold both `x` and `x/inner.txt`, a file system cannot: the folder comes
    down, and the file steps aside as a conflict copy and comes down under that name. One
    pass, exit 0, nothing lost, whichever is here first: the file (one worker, both new: the
    file is in the folder's way) or the folder (synced before the file was added beside it).
    No temp file is named, no failure said."""
    remote = remote_for(kind, request, tmp_path)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra={"workers": workers})
    setup.write()
    (setup.local / "o.txt").write_bytes(b"o")
    remote.put("x/inner.txt", b"in the folder x")
    if folder_first:
        assert syncd("once", "-c", setup.config).returncode == 0
    remote.put("x", b"the file x")

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    local = tree(setup.local)
    copies = [path for path in local if path.startswith("x.conflict-")]
    assert len(copies) == 1, local
    assert local == {"o.txt": b"o", "x/inner.txt": b"in the folder x", copies[0]: b"the file x"}
    assert _visible_objects(remote) == local
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0 and "0 uploaded, 0 downloaded" in again.stdout, again.stdout


def _swap_x(root: Path | None, remote: Remote, becomes: str) -> dict[str, bytes]:
    """Swap `x` for the other kind, on the local side (`root`) or the remote (None); returns
    what the pair holds once that crossed."""
    if becomes == "folder":
        if root is None:
            remote.delete("x")
            remote.put("x/inner.txt", b"now a folder")
        else:
            (root / "x").unlink()
            (root / "x").mkdir()
            (root / "x" / "inner.txt").write_bytes(b"now a folder")
        return {"x/inner.txt": b"now a folder"}
    if root is None:
        remote.delete("x/inner.txt")
        remote.put("x", b"now a file")
    else:
        (root / "x" / "inner.txt").unlink()
        (root / "x").rmdir()
        (root / "x").write_bytes(b"now a file")
    return {"x": b"now a file"}


def _waiting_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("  waiting: ")]


def _waits_for_x(becomes: str) -> str:
    """The summary's line for the new `x` (a folder's file, or a file) waiting for the held
    deletion of the old one."""
    if becomes == "folder":
        return "  waiting: x/inner.txt: for the held deletion of x"
    return "  waiting: x: for the held deletion of x/inner.txt"


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("side", ["local", "remote"])
@pytest.mark.parametrize("becomes", ["folder", "file"])
def test_a_swap_whose_deletion_max_delete_holds_waits_for_it_then_crosses_with_force(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, side: str, becomes: str
) -> None:
    """A pair of one synced `x` (a file, or a folder holding `inner.txt`) that one side swaps
    for the other kind: deleting the old one is 1 of 1 synced files, which max_delete holds.
    The new one waits for that deletion (on a bucket too, which could hold both): exit 4 (a
    guard held changes back), said to wait for it, nothing failed. `once --force`
    lets the deletion through, and the new one crosses in the same pass."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    if becomes == "folder":
        (setup.local / "x").write_bytes(b"a file at first")
    else:
        (setup.local / "x").mkdir()
        (setup.local / "x" / "inner.txt").write_bytes(b"in a folder at first")
    assert syncd("once", "-c", setup.config).returncode == 0
    before = tree(setup.local)
    expected = _swap_x(setup.local if side == "local" else None, remote, becomes)

    held = syncd("once", "-c", setup.config)
    assert held.returncode == 4, held.stdout + held.stderr
    assert "0 failed" in held.stdout and "held: 1 deletions" in held.stdout, held.stdout
    if side == "local":
        # The new one waits, on a bucket too: one that holds both had another machine
        # settle that clash against the change (sweep N), its file kept under a conflict name.
        assert tree(setup.local) == expected
        assert "waits for a held deletion" in held.stderr
        assert _waiting_lines(held.stdout) == [_waits_for_x(becomes)], held.stdout
        assert _visible_objects(remote) == before
    else:  # the local side is a file system: the new one waits, whatever the remote
        assert "waits for a held deletion" in held.stderr
        assert _waiting_lines(held.stdout) == [_waits_for_x(becomes)], held.stdout
        assert tree(setup.local) == before
        assert _visible_objects(remote) == expected

    forced = syncd("once", "--force", "-c", setup.config)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert tree(setup.local) == expected
    assert _visible_objects(remote) == expected


def test_a_new_file_takes_the_place_of_an_empty_folder_on_a_folder_remote(
    tmp_path: Path,
) -> None:
    """An empty folder on a file:// remote where a new local file goes (no object, as in a
    bucket): the file goes up in one pass. It was refused as taken again and again (~10 s
    of looking again), then failed as "kept changing while being synced", at every pass."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / "other.txt").write_bytes(b"other")
    assert syncd("once", "-c", setup.config).returncode == 0
    (remote / "new.txt").mkdir()
    (setup.local / "new.txt").write_bytes(b"new")
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 uploaded" in result.stdout and "0 failed" in result.stdout
    assert tree(remote) == {"new.txt": b"new", "other.txt": b"other"}


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("direction", ["upload", "download"])
@pytest.mark.parametrize("folder_side", ["local", "remote"])
def test_a_one_way_pair_settles_a_file_and_a_folder_of_one_name_on_its_side(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, direction: str, folder_side: str
) -> None:
    """A pair with a `direction`, and a synced file `x` that one side turns into a folder while
    the other edits it. The pair settles it on the side it may write: nothing fails (exit 0,
    at every pass), every version stays. Where a bucket can hold both, the upload crosses
    beside the other."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    others = _synced_x(setup, "folder")
    setup.pair_extra = {"direction": direction}
    setup.write()
    if folder_side == "local":
        (setup.local / "x").unlink()
        (setup.local / "x").mkdir()
        (setup.local / "x" / "inner.txt").write_bytes(b"in the new folder")
        remote.put("x", b"edited on the remote")
        here, there = {"x/inner.txt": b"in the new folder"}, {"x": b"edited on the remote"}
    else:
        remote.delete("x")
        remote.put("x/inner.txt", b"in the new folder")
        (setup.local / "x").write_bytes(b"edited locally")
        here, there = {"x": b"edited locally"}, {"x/inner.txt": b"in the new folder"}

    for _ in range(2):
        result = syncd("once", "-c", setup.config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 failed" in result.stdout
        local = tree(setup.local)
        if direction == "download" and folder_side == "remote":
            # The local edit steps aside (a local copy) and the folder comes down.
            copies = [path for path in local if path.startswith("x.conflict-")]
            assert len(copies) == 1, local
            assert local == {copies[0]: b"edited locally", **there, **others}
            assert _visible_objects(remote) == {**there, **others}
            continue
        if direction == "download":
            # The remote file comes down as a copy beside the folder, the remote untouched.
            copies = [path for path in local if path.startswith("x.conflict-")]
            assert len(copies) == 1, local
            assert local == {copies[0]: b"edited on the remote", **here, **others}
            assert _visible_objects(remote) == {**there, **others}
            continue
        assert local == {**here, **others}
        if kind == "s3":
            assert _visible_objects(remote) == {**here, **there, **others}
            continue
        # A folder remote cannot hold both: the upload settles it there, the remote file
        # stepping aside as a copy (the folder goes up), or the local file going up as a copy
        # beside the remote folder.
        objects = _visible_objects(remote)
        copies = [path for path in objects if path.startswith("x.conflict-")]
        assert len(copies) == 1, objects
        folder, (data,) = (
            (here, there.values()) if folder_side == "local" else (there, here.values())
        )
        assert objects == {copies[0]: data, **folder, **others}


def test_a_dry_run_plans_no_deletion_the_guard_would_hold(tmp_path: Path) -> None:
    """8 of 10 files deleted locally: `--dry-run` printed a delete_remote line for each, above
    the held lines, though the real run deletes none. Now the plan holds what the real run
    does: the held lines only (exit 4); with `--force` the eight deletions."""
    remote = remote_for("file", None, tmp_path)  # type: ignore[arg-type]
    setup = _setup(tmp_path, remote)
    for i in range(10):
        (setup.local / f"f{i}.txt").write_text(f"file {i}")
    assert syncd("once", "-c", setup.config).returncode == 0
    for i in range(8):
        (setup.local / f"f{i}.txt").unlink()
    held = syncd("once", "--dry-run", "-c", setup.config)
    assert held.returncode == 4, held.stdout + held.stderr
    lines = held.stdout.splitlines()
    assert lines[0].startswith("  held: 8 deletions: 8 of 10 synced files"), held.stdout
    assert lines[1:] == [f"  held: f{i}.txt" for i in range(8)]
    forced = syncd("once", "--dry-run", "--force", "-c", setup.config)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.splitlines() == [
        f"delete_remote\tdocs/f{i}.txt\tdeleted locally" for i in range(8)
    ]
    assert len(_visible_objects(remote)) == 10


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure", "file"])
def test_a_folder_renamed_on_another_machine_is_no_mass_deletion_here(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """Machine A renames a folder holding most of the files: a move there, which max_delete
    does not count. Machine B saw 4 of 5 files gone from the remote and held them (exit 4,
    `--force` needed on every other machine). The same bytes under new names are a rename:
    B follows it, the old versions in its trash."""
    remote = remote_for(kind, request, tmp_path)
    a, b = _setup(tmp_path / "a", remote), _setup(tmp_path / "b", remote)
    (a.local / "project").mkdir()
    for i in range(4):
        (a.local / "project" / f"f{i}.txt").write_bytes(f"file {i}".encode())
    (a.local / "top.txt").write_bytes(b"top")
    for machine in (a, b):
        assert syncd("once", "-c", machine.config).returncode == 0
    (a.local / "project").rename(a.local / "project-2026")
    moved = syncd("once", "-c", a.config)
    assert moved.returncode == 0 and "4 moved" in moved.stdout, moved.stdout

    followed = syncd("once", "-c", b.config)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "held" not in followed.stdout
    assert (
        tree(b.local)
        == tree(a.local)
        == {
            **{f"project-2026/f{i}.txt": f"file {i}".encode() for i in range(4)},
            "top.txt": b"top",
        }
    )
    trashed = sorted(p.name for p in (b.local / ".syncd" / "trash").rglob("*.txt"))
    assert trashed == [f"f{i}.txt" for i in range(4)]


def test_a_folder_deleted_beside_an_older_copy_of_it_is_still_weighed(tmp_path: Path) -> None:
    """A remote rename is known by the same bytes under a name new in this pass. A copy
    synced long before is no rename: `photos/` deleted on the remote beside an older
    `photos-backup/` is a mass deletion the guard holds."""
    remote = remote_for("file", None, tmp_path)  # type: ignore[arg-type]
    setup = _setup(tmp_path, remote)
    for folder in ("photos", "photos-backup"):
        (setup.local / folder).mkdir()
        for i in range(4):
            (setup.local / folder / f"p{i}.jpg").write_bytes(f"photo {i}".encode())
    (setup.local / "top.txt").write_bytes(b"top")
    assert syncd("once", "-c", setup.config).returncode == 0
    for key in [f"photos/p{i}.jpg" for i in range(4)] + ["top.txt"]:
        remote.delete(key)  # 5 of 9 gone: more than max_delete's 50 %
    held = syncd("once", "-c", setup.config)
    assert held.returncode == 4, held.stdout + held.stderr
    assert sorted(p.name for p in (setup.local / "photos").iterdir()) == [
        f"p{i}.jpg" for i in range(4)
    ]


def test_held_deletions_stay_held_over_runs_until_force_or_the_files_come_back(
    tmp_path: Path,
) -> None:
    """10 of 10 files deleted locally are held; 11 new files then arrive on the remote and
    10 of 21 is under max_delete: the next run must still hold the 10 (it deleted them on
    the remote), and the next after it. When the files come back the hold is gone, and a
    later deletion of one file goes through as any would."""
    remote = remote_for("file", None, tmp_path)  # type: ignore[arg-type]
    setup = _setup(tmp_path, remote)
    for i in range(10):
        (setup.local / f"f{i}.txt").write_text(f"file {i}")
    assert syncd("once", "-c", setup.config).returncode == 0
    stash = tmp_path / "stash"
    stash.mkdir()
    for i in range(10):
        (setup.local / f"f{i}.txt").rename(stash / f"f{i}.txt")
    held = syncd("once", "-c", setup.config)
    assert held.returncode == 4 and "held: 10 deletions" in held.stdout, held.stdout
    for i in range(11):
        remote.put(f"new/n{i}.txt", f"new {i}".encode())

    for _ in range(2):
        again = syncd("once", "-c", setup.config)
        assert again.returncode == 4, again.stdout + again.stderr
        assert "held: 10 deletions: " in again.stdout, again.stdout
        assert len(list(setup.local.glob("new/*.txt"))) == 11
        assert all(remote.get(f"f{i}.txt") == f"file {i}".encode() for i in range(10))
    assert "10 deletions held earlier still wait" in again.stdout  # 10 of 21 is under 50 %

    for i in range(10):
        (stash / f"f{i}.txt").rename(setup.local / f"f{i}.txt")
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "f0.txt").unlink()
    done = syncd("once", "-c", setup.config)
    assert done.returncode == 0, done.stdout
    assert "f0.txt" not in _visible_objects(remote)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_local_names_no_key_may_hold_are_named_failures_and_the_rest_syncs(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """A backslash, a control character, bytes that are not UTF-8 (no remote key can hold
    them; S3 crashed a worker on them, UnicodeEncodeError): each name is a failure of its
    own, named on stdout with what cannot be printed escaped (the output is valid UTF-8),
    exit 1; never a traceback. The rest syncs; renamed, they sync and the pass is clean."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    (setup.local / "back\\slash.txt").write_bytes(b"backslash")
    (setup.local / "bell\x07.txt").write_bytes(b"bell")
    with open(os.fsencode(setup.local) + b"/bad\xff.txt", "wb") as raw:
        raw.write(b"not UTF-8")
    (setup.local / "fine.txt").write_bytes(b"fine")
    why = "it cannot be a remote key (not synced)"
    expected = [
        f"  failed: back\\slash.txt: name contains a backslash: {why}",
        f"  failed: bad\\xff.txt: name is not valid UTF-8: {why}",
        f"  failed: bell\\x07.txt: name contains a control character: {why}",
    ]
    for attempt in range(2):
        done = subprocess.run(
            [*SYNCD, "once", "-c", str(setup.config)], capture_output=True, timeout=120, check=False
        )
        stdout = done.stdout.decode("utf-8")  # strict: the summary is valid UTF-8
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1, stdout + stderr
        assert "Traceback" not in stderr and "crashed" not in stderr, stderr
        assert sorted(line for line in stdout.splitlines() if "failed: " in line) == expected
        uploaded = 1 if attempt == 0 else 0
        assert f"docs: {uploaded} uploaded, 0 downloaded, 3 failed" in stdout
        assert remote.objects() == {"fine.txt": b"fine"}
    if kind == "s3":
        # A dry run names them too, and changes nothing: it added each to the state's
        # totals (`since_install.failures`) at every dry run.
        counted = _counted_failures(setup)
        for _ in range(2):
            planned = syncd("once", "--dry-run", "-c", setup.config)
            assert planned.returncode == 1, planned.stdout + planned.stderr
        assert _counted_failures(setup) == counted > 0

    (setup.local / "back\\slash.txt").rename(setup.local / "back-slash.txt")
    (setup.local / "bell\x07.txt").unlink()
    os.rename(os.fsencode(setup.local) + b"/bad\xff.txt", setup.local / "bad.txt")
    clean = syncd("once", "-c", setup.config)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "docs: 2 uploaded, 0 downloaded, 0 failed" in clean.stdout
    assert remote.objects() == {
        "fine.txt": b"fine",
        "back-slash.txt": b"backslash",
        "bad.txt": b"not UTF-8",
    }


@pytest.mark.parametrize("kind", BUCKET_KINDS)
def test_a_deep_path_near_the_key_limit_is_deleted_into_the_trash(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """A path whose key is near a bucket's 1024 bytes: its remote trash key (`.syncd-trash/`
    and a time stamp, ~30 bytes more) passed the limit, which S3, GCS and Azure enforce (the
    emulators do not), so the copy and with it the deletion would fail at every pass. The
    trash key now names a digest of its folders and the file's name, within the limit; the
    object is deleted, its bytes kept there."""
    remote = remote_for(kind, request, tmp_path)
    setup = Setup(tmp_path, remote.url, options=remote.options)
    setup.write()
    folders = "/".join(f"{i}" + "d" * 199 for i in range(4))  # 803 bytes
    name = f"{folders}/" + "f" * 180 + ".txt"  # 988 bytes; with the prefix, 1,002
    (setup.local / folders).mkdir(parents=True)
    (setup.local / name).write_bytes(b"deep")
    for i in range(3):  # a share of 1 in 4 deleted: below max_delete
        (setup.local / f"keep{i}.txt").write_text("kept")
    assert syncd("once", "-c", setup.config).returncode == 0
    assert remote.get(name) == b"deep"

    (setup.local / name).unlink()
    done = syncd("once", "-c", setup.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert name not in remote.objects()
    trashed = {k: v for k, v in _everything(remote).items() if k.startswith(REMOTE_TRASH)}
    assert list(trashed.values()) == [b"deep"]
    (key,) = trashed
    assert key.endswith("/" + name.rpartition("/")[2]) and len((PREFIX + key).encode()) <= 1024


def _everything(remote: Remote) -> dict[str, bytes]:
    """Every object under the prefix, syncd's trash included."""
    return {key: remote.get(key) for key in remote.listing()}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_pair_pointed_at_another_remote_starts_over_with_a_first_sync(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The state of a pair describes one remote. Kept when the config named another one, its
    base made the new, empty remote look like every file was deleted there: the pass held
    them all (exit 4, nothing uploaded), and `--force` would have deleted the local files.
    Now the pair's state is forgotten, as `syncd state rebuild` does: a first sync, which
    uploads and deletes nothing; the dry run before it plans exactly that."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = remote_for(kind, request, tmp_path / "first", prefix="first/")
    setup = _setup(tmp_path, first)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (setup.local / name).parent.mkdir(parents=True, exist_ok=True)
        (setup.local / name).write_text(name)
    assert syncd("once", "-c", setup.config).returncode == 0
    second = remote_for(kind, request, tmp_path / "second", prefix="second/")
    second.put("there.txt", b"already there")
    Setup(tmp_path, second.url, options=second.options).write()

    plan = syncd("once", "--dry-run", "-c", setup.config)
    assert plan.returncode == 0, plan.stderr
    assert sorted(line.split("\t")[:2] for line in plan.stdout.splitlines()) == [
        ["download", "docs/there.txt"],
        ["upload", "docs/a.txt"],
        ["upload", "docs/b.txt"],
        ["upload", "docs/sub/c.txt"],
    ]
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 uploaded, 1 downloaded" in result.stdout
    expected = {"a.txt": b"a.txt", "b.txt": b"b.txt", "sub/c.txt": b"sub/c.txt"}
    assert second.objects() == {**expected, "there.txt": b"already there"}
    assert tree(setup.local) == {**expected, "there.txt": b"already there"}
    assert first.objects() == expected  # the old remote is left as it was


def test_a_pair_pointed_at_another_local_folder_brings_the_remote_down_there(
    tmp_path: Path,
) -> None:
    """The same for `local`: the old base made the new, empty folder look like every file
    was deleted locally (held, exit 4); now the remote comes down into it."""
    remote = FolderRemote(tmp_path / "remote")
    remote.root.mkdir()
    setup = _setup(tmp_path, remote)
    (setup.local / "a.txt").write_text("a")
    (setup.local / "b.txt").write_text("b")
    assert syncd("once", "-c", setup.config).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    config = setup.config.read_text().replace(f"local: {setup.local}\n", f"local: {other}\n")
    assert config != setup.config.read_text()
    setup.config.write_text(config)
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(other) == {"a.txt": b"a", "b.txt": b"b"} == remote.objects()
    assert tree(setup.local) == {"a.txt": b"a", "b.txt": b"b"}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_the_summary_counts_deletions_and_moves(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """A pass that only deleted and moved files said `0 uploaded, 0 downloaded, 0 failed,
    0 conflicts`, as if it had done nothing: it now says how many of each, on either side."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    for name in "abcde":
        (setup.local / f"{name}.txt").write_text(f"file {name}")
    first = syncd("once", "-c", setup.config)
    assert "docs: 5 uploaded, 0 downloaded, 0 failed, 0 conflicts, 0 deleted, 0 moved" in (
        first.stdout
    ), first.stdout + first.stderr
    (setup.local / "a.txt").unlink()
    remote.delete("b.txt")
    (setup.local / "c.txt").rename(setup.local / "renamed.txt")
    done = syncd("once", "-c", setup.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts, 2 deleted, 1 moved" in (
        done.stdout
    ), done.stdout
    assert sorted(remote.objects()) == ["d.txt", "e.txt", "renamed.txt"]
    assert sorted(tree(setup.local)) == ["d.txt", "e.txt", "renamed.txt"]


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("hours", [5, -5])
def test_a_file_copied_to_a_new_name_and_removed_moves_with_its_own_mtime(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, hours: int
) -> None:
    """`cp a b && rm a` (a `git checkout`, an extract) is sent as a move, but the copy kept
    the old file's mtime on the remote for good: every later pass said in sync, and other
    machines downloaded the new name with the old time. The copy now takes the new file's."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    data = os.urandom(3000)
    (setup.local / "a.txt").write_bytes(data)
    os.utime(setup.local / "a.txt", ns=(MTIME_NS, MTIME_NS))
    assert syncd("once", "-c", setup.config).returncode == 0
    new_mtime = MTIME_NS + hours * 3600 * 10**9
    (setup.local / "b.txt").write_bytes(data)
    os.utime(setup.local / "b.txt", ns=(new_mtime, new_mtime))
    (setup.local / "a.txt").unlink()

    moved = syncd("once", "-c", setup.config)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "0 uploaded, 0 downloaded, 0 failed, 0 conflicts, 0 deleted, 1 moved" in moved.stdout
    assert remote.objects() == {"b.txt": data}
    before = remote.listing()
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 uploaded, 0 downloaded, 0 failed, 0 conflicts, 0 deleted, 0 moved" in again.stdout
    assert remote.listing() == before
    assert (setup.local / "b.txt").stat().st_mtime_ns == new_mtime

    other = Setup(tmp_path / "other", remote.url, options=remote.options)
    other.write()
    assert syncd("once", "-c", other.config).returncode == 0
    assert tree(other.local) == {"b.txt": data}
    assert (other.local / "b.txt").stat().st_mtime_ns == new_mtime


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_new_file_equal_to_one_whose_old_name_is_now_a_link_or_pipe_goes_up(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """`mv photos archive/photos; ln -s archive/photos photos` (or a file's old name now a
    link or a named pipe): looking for a move source, the old name's own refusal was taken
    for the new file's, which was skipped with that reason, for good, in a pass that said
    in sync. Such an old name is no move source: the new files go up as new ones."""
    remote = remote_for(kind, request, tmp_path)
    setup = _setup(tmp_path, remote)
    files = {name: os.urandom(2000) for name in ("photos/img1", "photos/img2", "a.txt", "b.txt")}
    for name, data in files.items():
        (setup.local / name).parent.mkdir(exist_ok=True)
        (setup.local / name).write_bytes(data)
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "archive").mkdir()
    (setup.local / "photos").rename(setup.local / "archive" / "photos")
    (setup.local / "photos").symlink_to("archive/photos")
    (setup.local / "store").mkdir()
    (setup.local / "a.txt").rename(setup.local / "store" / "a.txt")
    (setup.local / "a.txt").symlink_to("store/a.txt")
    (setup.local / "b.txt").rename(setup.local / "b-copy.txt")
    os.mkfifo(setup.local / "b.txt")
    new = {
        "archive/photos/img1": files["photos/img1"],
        "archive/photos/img2": files["photos/img2"],
        "store/a.txt": files["a.txt"],
        "b-copy.txt": files["b.txt"],
    }

    dry = syncd("once", "--dry-run", "-c", setup.config)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert sorted(dry.stdout.splitlines()) == sorted(
        f"upload\tdocs/{name}\tnew locally" for name in new
    )
    done = syncd("once", "-c", setup.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 uploaded, 0 downloaded, 0 failed, 0 conflicts, 0 deleted, 0 moved" in done.stdout
    assert remote.objects() == {**files, **new}  # the old names' objects are left be
    again = syncd("once", "-c", setup.config)
    assert "0 uploaded, 0 downloaded, 0 failed" in again.stdout, again.stdout + again.stderr


def test_a_copy_of_a_file_in_a_folder_made_unreadable_goes_up(tmp_path: Path) -> None:
    """A readable copy of a synced file whose folder was then made unreadable failed for
    ever, with the other file's "Permission denied": a move source that cannot be looked at
    is none, and only the folder itself is the failure."""
    without_dac = require_without_dac()
    (tmp_path / "remote").mkdir()
    remote = FolderRemote(tmp_path / "remote")
    setup = _setup(tmp_path, remote)
    data = os.urandom(2000)
    (setup.local / "priv").mkdir()
    (setup.local / "priv" / "key.txt").write_bytes(data)
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "key-copy.txt").write_bytes(data)
    (setup.local / "priv").chmod(0)
    try:
        done = subprocess.run(
            [*without_dac, *SYNCD, "once", "-c", str(setup.config)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        (setup.local / "priv").chmod(0o755)
    assert "key-copy.txt" not in "".join(
        line for line in done.stdout.splitlines() if "failed:" in line
    ), done.stdout
    assert "1 uploaded" in done.stdout, done.stdout + done.stderr
    assert remote.objects() == {"priv/key.txt": data, "key-copy.txt": data}


def test_conflicts_of_a_renamed_pair_are_neither_listed_nor_resolvable(tmp_path: Path) -> None:
    """A pair renamed (or removed) keeps its old state, but no pass settles its open
    conflicts any more: `syncd conflicts` listed them and exited 4 for good (`state rebuild`
    did not clear them), and `resolve` of one ended in a traceback."""
    import yaml

    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"conflict": "manual"})
    setup.write()
    (setup.local / "a.txt").write_text("v1")
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / "a.txt").write_text("local edit")
    (remote / "a.txt").write_text("remote edit, longer")
    assert syncd("once", "-c", setup.config).returncode == 4
    assert syncd("conflicts", "-c", setup.config).returncode == 4

    doc = yaml.safe_load(setup.config.read_text())
    doc["pairs"][0]["name"] = "notes"
    setup.config.write_text(yaml.safe_dump(doc))
    (remote / "a.txt").write_text("local edit")  # the user made both sides equal
    assert syncd("once", "-c", setup.config).returncode == 0
    listed = syncd("conflicts", "-c", setup.config)
    assert (listed.returncode, listed.stdout) == (0, "no conflicts\n"), listed.stderr
    for given in ("a.txt", "docs/a.txt", str(setup.local / "a.txt")):
        resolved = syncd("resolve", "-c", setup.config, given, "--keep", "local")
        assert resolved.returncode == 2, resolved.stderr
        assert resolved.stderr == f"syncd: no open conflict for {given!r} (see `syncd conflicts`)\n"

    rebuilt = syncd("state", "rebuild", "-c", setup.config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    with contextlib.closing(sqlite3.connect(setup.state_db)) as db:
        assert db.execute("SELECT pair, path FROM conflicts").fetchall() == []
        assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)

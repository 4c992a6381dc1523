"""A timestamp-only change travels both ways (issue 3: "a timestamp-only change is not a
content change, though the newer mtime is carried over").

Locally that is an `os.utime`; remotely `Provider.set_mtime`, which restamps an object's `mtime`
metadata without rewriting its bytes, on condition that it still is the version the engine saw.
Every kind of remote, on its real emulator; setup and assertions go through each service's own
client (remotes.py), never through the provider under test.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContentSettings, StandardBlobTier
from botocore.stub import Stubber
from harness import Setup, running_daemon, syncd, tree, wait_for
from remotes import (
    ALL_KINDS,
    BUCKET_KINDS,
    AzureRemote,
    FolderRemote,
    GCSRemote,
    Remote,
    S3Remote,
    remote_for,
)
from test_providers import MTIME_NS, put

from syncd.providers import NotFound, PreconditionFailed, Provider, open_provider
from syncd.providers.base import parse_mtime
from syncd.providers.s3 import MAX_COPY_SIZE, S3Provider

LATER_NS = 1_900_000_000_987_654_321  # 2030
LATEST_NS = 1_930_000_000_000_000_000  # 2031

#: A non-default storage class per kind, as the service reports it on an object.
STORAGE_CLASSES = {"s3": "STANDARD_IA", "gcs": "NEARLINE", "azure": "Cool"}


@pytest.fixture(params=ALL_KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


@pytest.fixture(params=BUCKET_KINDS)
def bucket_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


def _provider(remote: Remote) -> Iterator[Provider]:
    provider = open_provider(remote.url, remote.options)
    yield provider
    provider.close()


@pytest.fixture
def provider(remote: Remote) -> Iterator[Provider]:
    yield from _provider(remote)


@pytest.fixture
def bucket_provider(bucket_remote: Remote) -> Iterator[Provider]:
    yield from _provider(bucket_remote)


def _stated_mtime(remote: Remote, key: str) -> int | None:
    """The mtime a fresh download would restore, read behind syncd's back."""
    if isinstance(remote, FolderRemote):
        return (remote.root / key).stat().st_mtime_ns
    return parse_mtime(_object(remote, key)["metadata"].get("mtime"))


def _object(remote: Remote, key: str) -> dict[str, Any]:
    """What the service holds for a bucket object besides its bytes."""
    if isinstance(remote, S3Remote):
        head = remote.bucket.client.head_object(
            Bucket=remote.bucket.bucket, Key=remote.prefix + key
        )
        return {
            "metadata": head["Metadata"],
            "content_type": head["ContentType"],
            "cache_control": head.get("CacheControl"),
            "storage_class": head.get("StorageClass", "STANDARD"),
        }
    if isinstance(remote, GCSRemote):
        blob = remote.bucket.get(remote.prefix + key)
        return {
            "metadata": dict(blob.metadata or {}),
            "content_type": blob.content_type,
            "cache_control": blob.cache_control,
            "storage_class": blob.storage_class,
        }
    assert isinstance(remote, AzureRemote)
    props = remote.container.client.get_blob_client(remote.prefix + key).get_blob_properties()
    return {
        "metadata": dict(props.metadata or {}),
        "content_type": props.content_settings.content_type,
        "cache_control": props.content_settings.cache_control,
        "storage_class": str(props.blob_tier),
    }


def _put_dressed(remote: Remote, key: str, data: bytes, metadata: dict[str, str]) -> None:
    """An object with a content type, a cache control and a storage class of its own, written
    by another tool."""
    if isinstance(remote, S3Remote):
        remote.bucket.client.put_object(
            Bucket=remote.bucket.bucket,
            Key=remote.prefix + key,
            Body=data,
            Metadata=metadata,
            ContentType="text/markdown",
            CacheControl="max-age=60",
            StorageClass=STORAGE_CLASSES["s3"],
        )
    elif isinstance(remote, GCSRemote):
        blob = remote.bucket.client.bucket(remote.bucket.bucket).blob(remote.prefix + key)
        blob.metadata = metadata
        blob.cache_control = "max-age=60"
        blob.storage_class = STORAGE_CLASSES["gcs"]
        blob.upload_from_string(data, content_type="text/markdown")
    else:
        assert isinstance(remote, AzureRemote)
        remote.container.client.upload_blob(
            remote.prefix + key,
            data,
            metadata=metadata,
            content_settings=ContentSettings(
                content_type="text/markdown", cache_control="max-age=60"
            ),
            standard_blob_tier=StandardBlobTier(STORAGE_CLASSES["azure"]),
        )


# -- the provider ---------------------------------------------------------------------------


def test_set_mtime_restamps_the_object_and_keeps_its_content(
    remote: Remote, provider: Provider
) -> None:
    data = b"same bytes, a newer time"
    sha256 = hashlib.sha256(data).hexdigest()
    original = put(provider, "sub/touched.txt", data)

    updated = provider.set_mtime("sub/touched.txt", LATER_NS, if_match=original.etag)

    assert updated.mtime_ns == LATER_NS
    assert updated.size == len(data)
    assert remote.get("sub/touched.txt") == data
    assert _stated_mtime(remote, "sub/touched.txt") == LATER_NS
    stat = provider.stat("sub/touched.txt")
    # The token returned is the version now stored: what the engine records as the base.
    assert stat.etag == updated.etag
    assert stat.mtime_ns == LATER_NS
    assert stat.sha256 == sha256
    sink = io.BytesIO()
    downloaded = provider.download("sub/touched.txt", sink, if_match=updated.etag)
    assert sink.getvalue() == data
    assert downloaded.mtime_ns == LATER_NS


def test_set_mtime_needs_the_version_the_caller_saw(remote: Remote, provider: Provider) -> None:
    first = put(provider, "raced.txt", b"version one")
    second = put(provider, "raced.txt", b"version two, longer", if_match=first.etag)

    with pytest.raises(PreconditionFailed):
        provider.set_mtime("raced.txt", LATER_NS, if_match=first.etag)

    assert remote.get("raced.txt") == b"version two, longer"
    assert _stated_mtime(remote, "raced.txt") == MTIME_NS
    assert provider.stat("raced.txt").etag == second.etag

    provider.delete("raced.txt")
    with pytest.raises((PreconditionFailed, NotFound)):
        provider.set_mtime("raced.txt", LATER_NS, if_match=second.etag)
    assert "raced.txt" not in remote.listing()


def test_set_mtime_keeps_every_other_piece_of_metadata(
    bucket_remote: Remote, bucket_provider: Provider
) -> None:
    remote, provider = bucket_remote, bucket_provider
    data = b"# notes\n"
    sha256 = hashlib.sha256(data).hexdigest()
    _put_dressed(remote, "notes.md", data, {"mtime": "1700000000", "sha256": sha256, "by": "ann"})
    before = _object(remote, "notes.md")

    provider.set_mtime("notes.md", LATER_NS, if_match=provider.stat("notes.md").etag)

    after = _object(remote, "notes.md")
    assert parse_mtime(after["metadata"].pop("mtime")) == LATER_NS
    before["metadata"].pop("mtime")
    after["metadata"].pop("goog-reserved-file-mtime", None)  # gsutil's copy of it (GCS)
    assert after == before
    assert after["metadata"] == {"sha256": sha256, "by": "ann"}
    assert after["content_type"] == "text/markdown"
    assert after["storage_class"] == STORAGE_CLASSES[remote.kind]
    assert remote.get("notes.md") == data


def test_s3_leaves_an_object_too_large_to_copy_as_it_is(s3_bucket: Any) -> None:
    """Above 5 GiB S3 cannot copy an object in one request: its mtime stays, nothing else is
    sent (a multipart copy onto itself is not worth an mtime)."""
    provider = open_provider(s3_bucket.url("p/"), {"endpoint_url": s3_bucket.endpoint_url})
    assert isinstance(provider, S3Provider)
    head = {
        "ETag": '"abc-2"',
        "ContentLength": MAX_COPY_SIZE + 1,
        "LastModified": datetime(2024, 1, 1, tzinfo=UTC),
        "Metadata": {"mtime": "1700000000.000000000"},
    }
    with Stubber(provider._client) as stub:
        stub.add_response(
            "head_object", head, {"Bucket": s3_bucket.bucket, "Key": "p/big", "IfMatch": '"abc-2"'}
        )
        info = provider.set_mtime("big", LATER_NS, if_match="abc-2")
        stub.assert_no_pending_responses()  # and no copy_object was asked for
    assert info.etag == "abc-2"
    assert info.mtime_ns == 1_700_000_000_000_000_000
    provider.close()


# -- syncd once -----------------------------------------------------------------------------


def _setup(tmp_path: Path, remote: Remote, **pair: Any) -> Setup:
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra=pair)
    setup.write()
    return setup


def _touch_remote(remote: Remote, key: str, data: bytes, mtime_ns: int) -> None:
    """The remote side's touch: a folder's utime, an object written again with the same
    bytes and a newer `mtime` (as another syncd or rclone would)."""
    if isinstance(remote, FolderRemote):
        os.utime(remote.root / key, ns=(mtime_ns, mtime_ns))
    else:
        remote.put(key, data, mtime_ns=mtime_ns)


def _next_second() -> None:
    """Wait into the next whole second. S3 states LastModified in whole seconds: a restamp in
    the same second as the write before it cannot be told from that write."""
    time.sleep(1.05 - time.time() % 1)


def _local_mtimes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and ".syncd" not in p.parts
    }


def test_a_timestamp_only_change_is_carried_over_both_ways(tmp_path: Path, remote: Remote) -> None:
    setup = _setup(tmp_path, remote)
    (setup.local / "a").write_bytes(b"a\n")
    (setup.local / "b").write_bytes(b"b\n")
    first = syncd("once", "-c", setup.config)
    assert first.returncode == 0, first.stderr
    assert "2 uploaded" in first.stdout

    os.utime(setup.local / "a", ns=(LATER_NS, LATER_NS))
    _next_second()
    _touch_remote(remote, "b", b"b\n", LATEST_NS)
    carried = syncd("once", "-c", setup.config)
    assert carried.returncode == 0, carried.stderr
    assert "0 uploaded, 0 downloaded" in carried.stdout
    # On S3 the same bytes written again keep the ETag (their MD5): LastModified tells.
    settled = {"a": LATER_NS, "b": LATEST_NS}
    assert _local_mtimes(setup.local) == settled
    assert _stated_mtime(remote, "a") == LATER_NS
    assert _stated_mtime(remote, "b") == LATEST_NS
    assert remote.objects() == {"a": b"a\n", "b": b"b\n"}

    # Settled: a second pass transfers nothing and writes nothing on either side.
    before_remote = remote.listing()
    again = syncd("once", "-c", setup.config)
    assert again.returncode == 0, again.stderr
    assert "0 uploaded, 0 downloaded" in again.stdout
    assert remote.listing() == before_remote
    assert _local_mtimes(setup.local) == settled

    # A fresh download restores the newer mtimes.
    fresh = _setup(tmp_path / "fresh", remote)
    pulled = syncd("once", "-c", fresh.config)
    assert pulled.returncode == 0, pulled.stderr
    assert "2 downloaded" in pulled.stdout
    assert tree(fresh.local) == {"a": b"a\n", "b": b"b\n"}
    assert _local_mtimes(fresh.local) == {"a": LATER_NS, "b": LATEST_NS}


@pytest.mark.parametrize(
    ("restamp", "old_state"),
    [("set_mtime", False), ("set_mtime", True), ("put", False)],
    ids=["by another syncd", "by another syncd, state from before", "same bytes put again"],
)
def test_a_restamp_on_the_remote_reaches_every_machine(
    tmp_path: Path, bucket_remote: Remote, restamp: str, old_state: bool
) -> None:
    """Two machines on one remote. A touch on machine A is a restamp of the object (S3 copies
    it onto itself, keeping its ETag; GCS patches its metadata, keeping its generation); so is
    another tool putting the same bytes again with a newer `mtime` (S3: the same ETag, their
    MD5). Machine B (and A, for the latter) takes the newer mtime: no transfer, no conflict."""
    remote = bucket_remote
    a, b = _setup(tmp_path / "a", remote), _setup(tmp_path / "b", remote)
    (a.local / "f").write_bytes(b"f\n")
    (a.local / "g").write_bytes(b"g\n")
    os.utime(a.local / "f", ns=(MTIME_NS, MTIME_NS))
    assert syncd("once", "-c", a.config).returncode == 0
    pulled = syncd("once", "-c", b.config)
    assert pulled.returncode == 0, pulled.stderr
    assert "2 downloaded" in pulled.stdout
    if old_state:
        # As a syncd from before kept it: no metadata version of the remote recorded.
        with sqlite3.connect(b.state_db) as db:
            db.execute("UPDATE files SET remote_version = NULL")
        quiet = syncd("once", "-c", b.config)
        assert "0 uploaded, 0 downloaded" in quiet.stdout
        with sqlite3.connect(b.state_db) as db:  # nothing looked changed, nothing recorded
            assert db.execute("SELECT remote_version FROM files").fetchall() == [(None,), (None,)]

    _next_second()
    if restamp == "set_mtime":
        os.utime(a.local / "f", ns=(LATER_NS, LATER_NS))
        stamped = syncd("once", "-c", a.config)
        assert stamped.returncode == 0, stamped.stderr
        assert "0 uploaded, 0 downloaded" in stamped.stdout
    else:
        remote.put("f", b"f\n", mtime_ns=LATER_NS)
    assert _stated_mtime(remote, "f") == LATER_NS

    for machine in (b, a):
        carried = syncd("once", "-c", machine.config)
        assert carried.returncode == 0, carried.stderr
        assert carried.stdout.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts")
        assert tree(machine.local) == {"f": b"f\n", "g": b"g\n"}
        assert (machine.local / "f").stat().st_mtime_ns == LATER_NS

    # Settled: more passes on either machine write nothing anywhere.
    before = remote.listing()
    for machine in (b, a):
        again = syncd("once", "-c", machine.config)
        assert again.stdout.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts")
        assert _local_mtimes(machine.local) == {"f": LATER_NS, "g": _local_mtimes(a.local)["g"]}
    assert remote.listing() == before
    assert remote.objects() == {"f": b"f\n", "g": b"g\n"}


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_a_touch_reaches_an_object_another_tool_wrote(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """An object another tool wrote states no mtime: a touch of its file was recorded and
    never carried over, so two machines kept their own times for good. Its upload time
    stands for its mtime now, and a newer touch restamps it as for any object."""
    remote = remote_for(kind, request, tmp_path)
    a, b = _setup(tmp_path / "a", remote), _setup(tmp_path / "b", remote)
    remote.put("foreign.txt", b"by another tool\n")
    remote.put("other.txt", b"also by another tool\n")
    assert _stated_mtime(remote, "foreign.txt") is None
    for machine in (a, b):
        assert syncd("once", "-c", machine.config).returncode == 0
    os.utime(a.local / "foreign.txt", ns=(LATER_NS, LATER_NS))
    stamped = syncd("once", "-c", a.config)
    assert stamped.returncode == 0, stamped.stderr
    assert "0 uploaded, 0 downloaded" in stamped.stdout
    assert _stated_mtime(remote, "foreign.txt") == LATER_NS
    carried = syncd("once", "-c", b.config)
    assert "0 uploaded, 0 downloaded" in carried.stdout, carried.stdout
    assert (b.local / "foreign.txt").stat().st_mtime_ns == LATER_NS
    assert remote.objects()["foreign.txt"] == b"by another tool\n"

    # Renamed, another tool's object is moved server-side: the copy states the file's time
    # (it stated none, and other machines took the copy's).
    _next_second()
    (a.local / "other.txt").rename(a.local / "renamed.txt")
    moved = syncd("once", "-c", a.config)
    assert "1 moved" in moved.stdout, moved.stdout
    mtime = (a.local / "renamed.txt").stat().st_mtime_ns
    assert _stated_mtime(remote, "renamed.txt") == mtime
    assert syncd("once", "-c", b.config).returncode == 0
    assert (b.local / "renamed.txt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_the_daemons_poll_sees_a_restamp_made_on_the_remote(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """The poll compares a listing with the recorded versions alone (no request per object):
    a restamp that keeps the ETag / generation shows there too, and the file takes its mtime."""
    remote = remote_for(kind, request, tmp_path)
    setup = Setup(tmp_path, remote.url, options=remote.options)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "f").write_bytes(b"f\n")
    os.utime(tmp_path / "local" / "f", ns=(MTIME_NS, MTIME_NS))
    with running_daemon(setup) as daemon:
        wait_for(lambda: remote.objects() == {"f": b"f\n"})
        daemon.wait_idle()
        _next_second()
        other = open_provider(remote.url, remote.options)  # another machine's syncd
        try:
            other.set_mtime("f", LATER_NS, if_match=other.stat("f").etag)
        finally:
            other.close()
        wait_for(lambda: (setup.local / "f").stat().st_mtime_ns == LATER_NS)
        pair = daemon.wait_idle()
        assert (pair["uploaded"], pair["downloaded"], pair["failed"]) == (1, 0, 0)
    assert _stated_mtime(remote, "f") == LATER_NS


@pytest.mark.parametrize("direction", ["both", "upload", "download"])
def test_a_first_comparison_of_equal_bytes_takes_the_newer_mtime_either_way(
    tmp_path: Path, remote: Remote, direction: str
) -> None:
    """No state yet (a first sync, another machine, `state rebuild`): both sides hold the
    same bytes under mtimes from the past. The newer one is carried to the side the pair
    writes. S3's listing states no mtime; a HEAD was skipped when the local mtime was older
    than the upload time, which says nothing of the mtime the object states: the object
    kept its older mtime for good (and a download-only pair never looked)."""
    older, newer = 1_700_000_000_123_456_789, 1_750_000_000_987_654_321  # both before now
    setup = _setup(tmp_path, remote, direction=direction)
    for name, here, there in (("up", newer, older), ("down", older, newer)):
        (setup.local / name).write_bytes(b"same bytes\n")
        os.utime(setup.local / name, ns=(here, here))
        remote.put(name, b"same bytes\n", mtime_ns=there)
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 uploaded, 0 downloaded" in result.stdout
    assert _stated_mtime(remote, "up") == (older if direction == "download" else newer)
    assert (setup.local / "down").stat().st_mtime_ns == (older if direction == "upload" else newer)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_only_the_side_a_pair_may_write_takes_the_newer_mtime(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    remote = remote_for(kind, request, tmp_path)
    pulled = _setup(tmp_path / "down", remote, direction="download")
    remote.put("a", b"a\n", mtime_ns=MTIME_NS)
    assert syncd("once", "-c", pulled.config).returncode == 0
    os.utime(pulled.local / "a", ns=(LATER_NS, LATER_NS))

    result = syncd("once", "-c", pulled.config)
    assert result.returncode == 0, result.stderr
    assert "0 uploaded, 0 downloaded" in result.stdout
    assert _stated_mtime(remote, "a") == MTIME_NS  # a download-only pair never writes there
    # ...and takes a newer one from there, also where a listing does not state it (S3).
    _next_second()
    _touch_remote(remote, "a", b"a\n", LATEST_NS)
    taken = syncd("once", "-c", pulled.config)
    assert taken.returncode == 0, taken.stderr
    assert "0 uploaded, 0 downloaded" in taken.stdout
    assert (pulled.local / "a").stat().st_mtime_ns == LATEST_NS

    # A one-way `syncd upload` stamps its destination, and leaves its source alone.
    env = {"XDG_STATE_HOME": str(tmp_path / "state-home")}
    if "endpoint_url" in remote.options:
        env["AWS_ENDPOINT_URL"] = remote.options["endpoint_url"]
    source = tmp_path / "source"
    source.mkdir()
    (source / "s").write_bytes(b"s\n")
    (source / "t").write_bytes(b"t\n")
    os.utime(source / "t", ns=(MTIME_NS, MTIME_NS))
    assert syncd("upload", source, remote.url, env=env).returncode == 0
    os.utime(source / "s", ns=(LATER_NS, LATER_NS))
    _touch_remote(remote, "t", b"t\n", LATEST_NS)
    pushed = syncd("upload", source, remote.url, env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "0 uploaded" in pushed.stdout
    assert _stated_mtime(remote, "s") == LATER_NS
    assert (source / "t").stat().st_mtime_ns == MTIME_NS
    settled = syncd("upload", source, remote.url, env=env)
    assert settled.returncode == 0 and "0 uploaded" in settled.stdout

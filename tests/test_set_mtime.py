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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContentSettings, StandardBlobTier
from botocore.stub import Stubber
from harness import Setup, syncd, tree
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

    b_before = (setup.local / "b").stat().st_mtime_ns
    os.utime(setup.local / "a", ns=(LATER_NS, LATER_NS))
    _touch_remote(remote, "b", b"b\n", LATEST_NS)
    carried = syncd("once", "-c", setup.config)
    assert carried.returncode == 0, carried.stderr
    assert "0 uploaded, 0 downloaded" in carried.stdout
    # S3's ETag of a single-part object is the MD5 of its bytes: the same bytes written again
    # are the same version to a listing, so that touch is not seen (and needs no carrying).
    settled = {"a": LATER_NS, "b": b_before if remote.kind == "s3" else LATEST_NS}
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

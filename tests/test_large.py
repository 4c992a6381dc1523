"""Large files: multipart up, ranged down, resume after a crash, integrity, memory, bandwidth,
progress — against moto (S3 multipart), fake-gcs-server (resumable) and Azurite (blocks)."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import pty
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import pytest
from harness import SYNCD, Setup, running_daemon, syncd, tree, wait_for
from remotes import PREFIX, AzureRemote, GCSRemote, Remote, S3Remote, remote_for
from test_s3_parts import s3_reports_the_part_checksum

from syncd.config import load_config
from syncd.engine import localfs
from syncd.engine.core import Engine
from syncd.engine.localfs import local_file
from syncd.engine.multipart import (
    FileDigests,
    LargeTransfers,
    PartSettings,
    choose_part_size,
    digest_file,
    download_chunk,
    plan_parts,
)
from syncd.engine.progress import InFlight
from syncd.engine.retry import RetryPolicy
from syncd.providers import (
    InvalidRequest,
    MultipartProvider,
    ObjectInfo,
    PartInfo,
    PartLimits,
    UploadRequest,
    open_provider,
)
from syncd.providers.azure import AzureProvider
from syncd.providers.gcs import GCSProvider
from syncd.providers.s3 import S3Provider
from syncd.state import StateStore
from syncd.state.partials import PartialDownload, Partials, PartialUpload, RecordedPart

MiB = 1024 * 1024
KINDS = ["s3", "gcs", "azure"]
PART = 5 * MiB
#: Settings that make a 23 MiB file go in 5 parts of 5 MiB (quick, yet truly multipart).
SMALL_PARTS = {"multipart_threshold": "8MiB", "part_size": "5MiB", "part_concurrency": 3}
#: The size of the kill -9 tests' file: 10 parts of 16 MiB, so a kill after 3 leaves 7 to resume
#: (SYNCD_LARGE_MIB sets it).
KILL_MIB = int(os.environ.get("SYNCD_LARGE_MIB", "160"))


@pytest.fixture(params=KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


def _random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _unfinished_uploads(remote: Remote) -> list[str]:
    """Multipart uploads the service still holds (S3 only can be asked)."""
    if isinstance(remote, S3Remote):
        answer = remote.bucket.client.list_multipart_uploads(Bucket=remote.bucket.bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]
    return []


def _partials(state_db: Path) -> tuple[int, int]:
    with sqlite3.connect(state_db) as db:
        uploads = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
        downloads = db.execute("SELECT count(*) FROM downloads").fetchone()[0]
    return int(uploads), int(downloads)


# -- part sizing ----------------------------------------------------------------------------


def test_part_size_grows_to_fit_the_part_count() -> None:
    s3 = PartLimits(min_part=5 * MiB, max_part=5 * 1024 * MiB, max_parts=10_000)
    assert choose_part_size(100 * MiB, 16 * MiB, s3) == 16 * MiB
    assert choose_part_size(100 * MiB, 1 * MiB, s3) == 5 * MiB  # the service's minimum
    huge = 400 * 1024 * MiB  # 400 GiB in 16 MiB parts would be 25,600 parts
    part = choose_part_size(huge, 16 * MiB, s3)
    assert len(plan_parts(huge, part)) <= 10_000
    gcs = PartLimits(min_part=256 * 1024, max_part=5 * 1024 * MiB, max_parts=10_000,
                     sequential=True, alignment=256 * 1024)  # fmt: skip
    assert choose_part_size(huge, 16 * MiB + 1, gcs) % (256 * 1024) == 0
    with pytest.raises(Exception, match="do not fit"):
        choose_part_size(10**15, 16 * MiB, s3)


@pytest.mark.parametrize(
    ("size", "part_size", "concurrency", "chunk"),
    [
        (1024 * MiB, 16 * MiB, 4, 64 * MiB),  # 16 ranges of 64 MiB, not 64 of 16
        (10 * 1024 * MiB, 16 * MiB, 4, 64 * MiB),  # never above rclone's 64 MiB
        (100 * MiB, 16 * MiB, 4, 16 * MiB),  # a mid-size file keeps part_size: 7 ranges
        (400 * MiB, 16 * MiB, 4, 25 * MiB),  # 16 ranges: four per stream
        (100 * MiB, 8 * MiB, 2, 100 * MiB // 8),
        (1024 * MiB, 128 * MiB, 4, 128 * MiB),  # a bigger part_size wins
    ],
)
def test_download_ranges_grow_to_64_mib(
    size: int, part_size: int, concurrency: int, chunk: int
) -> None:
    settings = PartSettings(threshold=64 * MiB, part_size=part_size, concurrency=concurrency)
    assert download_chunk(size, settings) == chunk


def test_parts_cover_the_file_exactly() -> None:
    parts = plan_parts(23 * MiB, PART)
    assert [p.number for p in parts] == [1, 2, 3, 4, 5]
    assert parts[-1].size == 3 * MiB
    assert sum(p.size for p in parts) == 23 * MiB
    assert all(b.offset == a.offset + a.size for a, b in itertools.pairwise(parts))


# -- end to end through `syncd once` ---------------------------------------------------------


def test_large_file_goes_up_in_parts_and_comes_down_in_ranges(
    tmp_path: Path, remote: Remote
) -> None:
    alice = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    alice.write()
    data = _random_file(alice.local / "video" / "big.bin", 23 * MiB + 4321)
    mtime_ns = (alice.local / "video" / "big.bin").stat().st_mtime_ns

    result = syncd("once", "-c", alice.config)
    assert result.returncode == 0, result.stderr
    assert remote.get("video/big.bin") == data
    assert '"event": "part sent"' in result.stderr  # it really went in parts
    assert _unfinished_uploads(remote) == []
    assert _partials(alice.state_db) == (0, 0)

    bob = Setup(tmp_path / "bob", remote.url, options=remote.options, extra=SMALL_PARTS)
    bob.write()
    result = syncd("once", "-c", bob.config)
    assert result.returncode == 0, result.stderr
    assert tree(bob.local) == {"video/big.bin": data}
    assert (bob.local / "video" / "big.bin").stat().st_mtime_ns == mtime_ns
    umask = os.umask(0o022)
    os.umask(umask)
    # The mode of any new file (a small download's too), not the private temp file's.
    assert stat.S_IMODE((bob.local / "video" / "big.bin").stat().st_mode) == 0o666 & ~umask
    assert _partials(bob.state_db) == (0, 0)

    # A second pass on either side moves nothing.
    again = syncd("once", "-c", bob.config)
    assert "0 uploaded, 0 downloaded" in again.stdout


def test_a_byte_flipped_on_the_server_is_caught_on_download(tmp_path: Path, remote: Remote) -> None:
    alice = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    alice.write()
    big = _random_file(alice.local / "big.bin", 12 * MiB)
    small = _random_file(alice.local / "small.bin", 100_000)
    assert syncd("once", "-c", alice.config).returncode == 0

    # Someone corrupts both objects on the server, keeping their metadata (the sha256).
    for name, data in (("big.bin", big), ("small.bin", small)):
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        _rewrite_keeping_metadata(remote, name, bytes(flipped))

    bob = Setup(tmp_path / "bob", remote.url, options=remote.options, extra=SMALL_PARTS)
    bob.write()
    result = syncd("once", "-c", bob.config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "checksum mismatch" in result.stdout
    assert tree(bob.local) == {}  # nothing under a real name, no temp file either
    assert not any(p.name.startswith(".syncd-tmp-") for p in bob.local.rglob("*"))


def test_a_foreign_blob_is_checked_against_the_md5_the_service_states(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A blob another tool wrote has no sha256 metadata, but Azure states its Content-MD5:
    bytes that do not match it are a failure (exit 1), never a download, in one GET or in
    ranges. The blobs whose MD5 matches come down as usual."""
    from azure.storage.blob import ContentSettings

    remote = remote_for("azure", request, tmp_path)
    assert isinstance(remote, AzureRemote)
    blobs = {
        name: os.urandom(size)
        for name, size in (
            ("small.bin", 100_000),
            ("big.bin", 12 * MiB),
            ("good-small.bin", 1000),
            ("good-big.bin", 9 * MiB),
        )
    }
    for name, data in blobs.items():
        blob = remote.container.client.get_blob_client(remote.prefix + name)
        blob.upload_blob(data, overwrite=True)
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        if not name.startswith("good-"):  # as stated by a buggy writer, or bytes gone bad
            md5 = hashlib.md5(data + b"!", usedforsecurity=False).digest()
        blob.set_http_headers(ContentSettings(content_md5=bytearray(md5)))

    bob = Setup(tmp_path / "bob", remote.url, options=remote.options, extra=SMALL_PARTS)
    bob.write()
    result = syncd("once", "-c", bob.config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: small.bin: checksum mismatch (expected MD5" in result.stdout
    assert "failed: big.bin: checksum mismatch (expected MD5" in result.stdout
    assert tree(bob.local) == {n: d for n, d in blobs.items() if n.startswith("good-")}
    assert not any(p.name.startswith(".syncd-tmp-") for p in bob.local.rglob("*"))


def _rewrite_keeping_metadata(remote: Remote, key: str, data: bytes) -> None:
    if isinstance(remote, S3Remote):
        client, bucket = remote.bucket.client, remote.bucket.bucket
        head = client.head_object(Bucket=bucket, Key=remote.prefix + key)
        client.put_object(
            Bucket=bucket, Key=remote.prefix + key, Body=data, Metadata=head["Metadata"]
        )
    elif isinstance(remote, GCSRemote):
        blob = remote.bucket.get(remote.prefix + key)
        remote.bucket.write(remote.prefix + key, data, dict(blob.metadata))
    else:
        assert isinstance(remote, AzureRemote)
        blob = remote.container.client.get_blob_client(remote.prefix + key)
        metadata = blob.get_blob_properties().metadata
        blob.upload_blob(data, overwrite=True, metadata=metadata)


# -- resume after a crash, in-process (deterministic) ----------------------------------------


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (no except Exception catches it)."""


class CrashingProvider:
    """The real provider; counts the parts it sends and 'dies' after `crash_after` of them."""

    def __init__(self, inner: MultipartProvider, crash_after: int | None) -> None:
        self._inner = inner
        self.crash_after = crash_after
        self.sent: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        if self.crash_after is not None and len(self.sent) >= self.crash_after:
            raise Crash
        done = self._inner.upload_part(request, upload_id, part, body, digest)
        self.sent.append(part.number)
        return done


class RefusingProvider(CrashingProvider):
    """Refuses the parts of uploads begun before it, as S3 refuses a part whose checksum is
    not the one its upload was created with (an upload an older syncd began, say)."""

    def __init__(self, inner: MultipartProvider, refused: str) -> None:
        super().__init__(inner, crash_after=None)
        self.refused = refused
        self.digests: dict[int, str] = {}

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        if upload_id == self.refused:
            raise InvalidRequest(f"{request.key}: checksum type mismatch")
        self.digests[part.number] = digest
        return super().upload_part(request, upload_id, part, body, digest)


def _large(provider: Any, state: StateStore, concurrency: int = 1) -> LargeTransfers:
    return LargeTransfers(
        "docs",
        provider,
        partials=Partials(state),
        settings=PartSettings(threshold=8 * MiB, part_size=PART, concurrency=concurrency),
        retry=RetryPolicy(3, 30),
        is_cancelled=lambda: False,
    )


@pytest.fixture
def provider(remote: Remote) -> Iterator[MultipartProvider]:
    opened = open_provider(remote.url, remote.options)
    assert isinstance(opened, MultipartProvider)
    yield opened
    opened.close()  # type: ignore[attr-defined]


def _send(
    large: LargeTransfers, path: Path, key: str, data: bytes, *, hashed: bool = False
) -> ObjectInfo:
    """Upload `path` through `large`; `hashed`: with the digests of a pre-pass, as the engine
    does, else each part is hashed as it goes."""
    with open(path, "rb") as fh:
        local = local_file(os.fstat(fh.fileno()))
        digests = large.digest(fh.fileno(), len(data)) if hashed else None
        request = UploadRequest(
            key=key,
            body=io.BytesIO(b""),
            size=len(data),
            mtime_ns=local.mtime_ns,
            sha256=hashlib.sha256(data).hexdigest(),
            if_absent=True,
        )
        with InFlight().track("docs", key, "upload", len(data)) as progress:
            return large.upload(key, fh.fileno(), local, request, progress, digests=digests)


def _digest(kind: str, data: bytes) -> str:
    if kind == "crc32c":
        return f"{google_crc32c.value(data):08x}"
    if kind == "sha256":
        return hashlib.sha256(data).hexdigest()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _digest_file(path: Path, *args: Any, **kwargs: Any) -> FileDigests:
    """digest_file over the whole file at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_file(fd, os.fstat(fd).st_size, *args, **kwargs)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["md5", "sha256", "crc32c"])
@pytest.mark.parametrize("part_size", [PART, PART + 12_345])  # a part may end mid-slice
def test_one_read_hashes_the_file_and_each_part(tmp_path: Path, kind: Any, part_size: int) -> None:
    data = _random_file(tmp_path / "big.bin", 3 * part_size + 999)
    digests = _digest_file(tmp_path / "big.bin", part_size, kind)

    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert digests.part_size == part_size
    assert list(digests.parts) == [
        _digest(kind, data[p.offset : p.offset + p.size]) for p in plan_parts(len(data), part_size)
    ]
    assert digests.md5 is None  # only where the provider asks for it (Azure)
    assert digests.crc32c is None  # likewise (GCS)


def test_the_same_read_gives_the_whole_files_md5_when_asked(tmp_path: Path) -> None:
    data = _random_file(tmp_path / "big.bin", 3 * PART + 12_345)
    digests = _digest_file(tmp_path / "big.bin", PART, "md5", whole_md5=True)

    assert digests.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert list(digests.parts) == [_digest("md5", data[p.offset : p.offset + p.size])
                                   for p in plan_parts(len(data), PART)]  # fmt: skip


def test_parts_go_with_the_digests_of_the_pre_pass(
    tmp_path: Path, remote: Remote, provider: MultipartProvider
) -> None:
    """Each part is sent with the digest the service checks it by, computed in the same read
    as the file's SHA-256; what is recorded of a part is what the service states."""
    source = tmp_path / "big.bin"
    data = _random_file(source, 2 * PART + 999)
    watching = RefusingProvider(provider, refused="")
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    info = _send(_large(watching, state), source, "big.bin", data, hashed=True)

    kind = provider.part_limits().digest
    assert watching.digests == {
        p.number: _digest(kind, data[p.offset : p.offset + p.size])
        for p in plan_parts(len(data), PART)
    }
    assert remote.get("big.bin") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    state.close()


def test_a_resumed_upload_whose_parts_are_refused_starts_over(
    tmp_path: Path, remote: Remote, provider: MultipartProvider
) -> None:
    source = tmp_path / "big.bin"
    data = _random_file(source, 2 * PART + 999)  # 3 parts
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    state = StateStore(state_url)
    with pytest.raises(Crash):
        _send(_large(CrashingProvider(provider, crash_after=1), state), source, "big.bin", data)
    record = Partials(state).upload("docs", "big.bin")
    assert record is not None
    state.close()

    state = StateStore(state_url)
    refusing = RefusingProvider(provider, refused=record.upload_id)
    info = _send(_large(refusing, state), source, "big.bin", data, hashed=True)

    assert sorted(refusing.sent) == [1, 2, 3]  # all of them, in a new upload
    assert remote.get("big.bin") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert Partials(state).upload("docs", "big.bin") is None
    assert _unfinished_uploads(remote) == []  # the refused one was aborted
    state.close()


def test_an_s3_upload_an_older_syncd_began_with_sha256_parts_starts_over(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """syncd once checked S3 parts by SHA-256; an upload it recorded before a crash could not
    take CRC32C parts nor be committed with them. ListParts names the upload's checksum: the
    record is dropped, the upload aborted and the file sent again, whole."""
    remote = remote_for("s3", request, tmp_path)
    assert isinstance(remote, S3Remote)
    provider = open_provider(remote.url, remote.options)
    assert isinstance(provider, S3Provider)
    s3_reports_the_part_checksum(provider)
    client, bucket = provider._client, remote.bucket.bucket
    source = tmp_path / "big.bin"
    data = _random_file(source, 2 * PART + 999)  # 3 parts
    key = remote.prefix + "big.bin"
    old_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    first = data[:PART]
    checksum = base64.b64encode(hashlib.sha256(first).digest()).decode()
    sent = client.upload_part(
        Bucket=bucket, Key=key, UploadId=old_id, PartNumber=1, Body=first, ChecksumSHA256=checksum
    )
    st = source.stat()
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    partials = Partials(state)
    partials.start_upload(
        "docs",
        PartialUpload(
            path="big.bin",
            key="big.bin",
            upload_id=old_id,
            size=len(data),
            mtime_ns=st.st_mtime_ns,
            inode=st.st_ino,
            sha256=hashlib.sha256(data).hexdigest(),
            part_size=PART,
            condition="absent",
        ),
    )
    etag = sent["ETag"].strip('"')
    partials.add_part(
        "docs", "big.bin", old_id, RecordedPart(1, 0, PART, f"{etag} {checksum}", etag)
    )

    watching = CrashingProvider(provider, crash_after=None)
    info = _send(_large(watching, state), source, "big.bin", data, hashed=True)

    assert sorted(watching.sent) == [1, 2, 3]  # all of them, in a new upload
    assert remote.get("big.bin") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert partials.upload("docs", "big.bin") is None
    assert _unfinished_uploads(remote) == []  # the old one was aborted
    provider.close()
    state.close()


class CrashAfterSending(CrashingProvider):
    """Dies right after the service took part `crash_after` + 1, before it is recorded: the
    resumed upload sends that part again."""

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        done = self._inner.upload_part(request, upload_id, part, body, digest)
        self.sent.append(part.number)
        if self.crash_after is not None and len(self.sent) > self.crash_after:
            raise Crash
        return done


def test_a_gcs_part_taken_but_not_recorded_before_a_crash_ends_in_the_right_object(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """fake-gcs-server appends a chunk sent again instead of placing it at its offset, so the
    resumed session finishes with too many bytes: that object (the session's own) is removed
    and the upload starts over; the right bytes end up under the name, and no conflict."""
    remote = remote_for("gcs", request, tmp_path)
    provider = open_provider(remote.url, remote.options)
    assert isinstance(provider, MultipartProvider)
    source = tmp_path / "big.bin"
    data = _random_file(source, 3 * PART + 999)  # 4 parts
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    state = StateStore(state_url)
    with pytest.raises(Crash):
        _send(_large(CrashAfterSending(provider, crash_after=2), state), source, "big.bin", data)
    state.close()

    state = StateStore(state_url)
    info = _send(_large(provider, state), source, "big.bin", data)

    assert remote.get("big.bin") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert set(remote.listing()) == {"big.bin"}  # no conflict copy, nothing else
    assert Partials(state).upload("docs", "big.bin") is None
    provider.close()  # type: ignore[attr-defined]
    state.close()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_crashed_upload_resumes_without_sending_parts_again(
    tmp_path: Path, remote: Remote, provider: MultipartProvider, concurrency: int
) -> None:
    source = tmp_path / "big.bin"
    data = _random_file(source, 6 * PART + 999)  # 7 parts
    state_url = f"sqlite:///{tmp_path / 'state.db'}"

    first = CrashingProvider(provider, crash_after=3)
    state = StateStore(state_url)
    with pytest.raises(Crash):
        _send(_large(first, state, concurrency), source, "big.bin", data)
    state.close()
    recorded = {p.number for p in Partials(StateStore(state_url)).upload("docs", "big.bin").parts}  # type: ignore[union-attr]
    assert len(recorded) >= 3 - (concurrency - 1)  # in-flight parts may die with the crash
    assert "big.bin" not in remote.objects()  # nothing visible yet

    # "Restart": a new process state over the same database.
    second = CrashingProvider(provider, crash_after=None)
    state = StateStore(state_url)
    info = _send(_large(second, state, concurrency), source, "big.bin", data)

    assert remote.get("big.bin") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    if provider.part_limits().sequential:
        assert sorted(second.sent) == [n for n in range(1, 8) if n not in recorded]
    else:
        assert not set(second.sent) & recorded  # completed parts were not sent again
        assert sorted(set(second.sent) | recorded) == list(range(1, 8))
    assert Partials(state).upload("docs", "big.bin") is None
    assert _unfinished_uploads(remote) == []
    state.close()


def _content_md5(remote: AzureRemote, key: str) -> str | None:
    blob = remote.container.client.get_blob_client(remote.prefix + key)
    md5 = blob.get_blob_properties().content_settings.content_md5
    return bytes(md5).hex() if md5 else None


@pytest.mark.parametrize("resumed", [False, True])
def test_an_azure_blob_sent_in_blocks_carries_the_files_md5(
    tmp_path: Path, request: pytest.FixtureRequest, resumed: bool
) -> None:
    """Issue 4: Azure computes Content-MD5 only for a single put, so the block list's commit
    states the whole file's MD5, taken in the read before the upload; a resumed upload (its
    first parts sent by a process that died) carries it as well."""
    remote = remote_for("azure", request, tmp_path)
    assert isinstance(remote, AzureRemote)
    setup = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    data = _random_file(setup.local / "big.bin", 4 * PART + 999)  # 5 blocks
    if resumed:
        _crash_mid_upload(setup, remote, data)

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert ('"event": "resuming multipart upload"' in result.stderr) == resumed
    assert sorted(_parts_sent(result.stderr)) == ([3, 4, 5] if resumed else [1, 2, 3, 4, 5])
    assert remote.get("big.bin") == data
    assert _content_md5(remote, "big.bin") == hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("why", ["changed", "old"])
def test_a_stale_upload_is_aborted(
    tmp_path: Path, remote: Remote, provider: MultipartProvider, why: str
) -> None:
    """An upload whose file changed, or that is older than 7 days, is aborted at the start of
    the next pass, not resumed."""
    source = tmp_path / "local" / "big.bin"
    data = _random_file(source, 4 * PART)
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    large = _large(CrashingProvider(provider, crash_after=2), state)
    with pytest.raises(Crash):
        _send(large, source, "big.bin", data)
    assert Partials(state).upload("docs", "big.bin") is not None

    if why == "changed":
        source.write_bytes(b"rewritten, much smaller now")
    else:  # unchanged, but started more than 7 days ago
        with state.writing() as conn:
            conn.exec_driver_sql("UPDATE uploads SET started_at = started_at - 8 * 86400")
    dropped = _large(provider, state).cleanup_stale(
        lambda path: local_file(os.stat(tmp_path / "local" / path)), tmp_path / "local"
    )

    assert dropped == 1
    assert Partials(state).upload("docs", "big.bin") is None
    assert _unfinished_uploads(remote) == []
    state.close()


def _crash_mid_upload(setup: Setup, remote: Remote, data: bytes) -> None:
    """A first run sends 2 parts of `big.bin`, records them, and dies (as by kill -9)."""
    setup.state_db.parent.mkdir(parents=True, exist_ok=True)
    state = StateStore(f"sqlite:///{setup.state_db}")
    provider = open_provider(remote.url, remote.options)
    with pytest.raises(Crash):
        _send(_large(CrashingProvider(provider, 2), state), setup.local / "big.bin",
              "big.bin", data)  # fmt: skip
    provider.close()  # type: ignore[attr-defined]
    state.close()
    assert _partials(setup.state_db) == (1, 0)
    assert _unfinished_uploads(remote) == ([PREFIX + "big.bin"] if remote.kind == "s3" else [])


def test_an_upload_the_pass_does_not_resume_is_aborted_in_that_pass(
    tmp_path: Path, remote: Remote
) -> None:
    """Issue 5: after a successful sync no multipart upload is left behind. The killed run's
    upload is not resumed (another writer created the key meanwhile, and is newer): it is
    aborted by the pass that settles the conflict, not by the next one."""
    setup = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    data = _random_file(setup.local / "big.bin", 4 * PART + 999)
    os.utime(setup.local / "big.bin", ns=(1_000_000_000, 1_000_000_000))  # older than theirs
    _crash_mid_upload(setup, remote, data)
    remote.put("big.bin", b"another writer's version")

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert "remote is newer" in result.stderr
    assert tree(setup.local) == {"big.bin": b"another writer's version"}
    assert _unfinished_uploads(remote) == []
    assert _partials(setup.state_db) == (0, 0)


def test_an_upload_of_a_path_with_nothing_to_do_is_aborted_by_the_first_plan(
    tmp_path: Path, remote: Remote
) -> None:
    """The file of the killed run's upload is excluded since: the pass has nothing to do for
    it, and aborts the upload all the same."""
    setup = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    data = _random_file(setup.local / "big.bin", 4 * PART + 999)
    _crash_mid_upload(setup, remote, data)
    setup.pair_extra["exclude"] = ["*.bin"]
    setup.write()

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert '"event": "multipart upload aborted: not resumed"' in result.stderr
    assert "big.bin" not in remote.objects()
    assert _unfinished_uploads(remote) == []
    assert _partials(setup.state_db) == (0, 0)


def test_the_first_plans_sweep_leaves_this_runs_own_uploads_alone(
    tmp_path: Path, remote: Remote, provider: MultipartProvider
) -> None:
    """A daemon's watcher may start an upload before the first plan is done: the sweep of
    the paths that plan left out aborts only what an earlier run left behind."""
    source = tmp_path / "big.bin"
    data = _random_file(source, 4 * PART)
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    this_run = _large(CrashingProvider(provider, crash_after=2), state)
    with pytest.raises(Crash):  # stands for an upload still under way
        _send(this_run, source, "big.bin", data)

    assert this_run.abandon_all_but(set()) == 0
    assert Partials(state).upload("docs", "big.bin") is not None
    assert _large(provider, state).abandon_all_but(set()) == 1  # the next run's sweep
    assert Partials(state).upload("docs", "big.bin") is None
    assert _unfinished_uploads(remote) == []
    state.close()


# -- kill -9 of the real daemon, then a restart ------------------------------------------------


def _recorded_parts(state_db: Path) -> set[int]:
    try:
        with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute("SELECT parts FROM uploads").fetchall()
    except sqlite3.Error:
        return set()
    return {part[0] for (text,) in rows for part in json.loads(text)}


def _parts_sent(stderr: str) -> list[int]:
    sent = []
    for line in stderr.splitlines():
        if '"part sent"' in line:
            sent.append(int(json.loads(line)["part"]))
    return sent


@pytest.mark.slow
def test_kill_9_mid_upload_then_restart_resumes(tmp_path: Path, remote: Remote) -> None:
    setup = Setup(tmp_path, remote.url, options=remote.options, extra={"part_size": "16MiB"})
    setup.write()
    data = _random_file(setup.local / "huge.bin", KILL_MIB * MiB)

    process = subprocess.Popen(
        [*SYNCD, "once", "-c", str(setup.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(_recorded_parts(setup.state_db)) >= 3, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    held = _recorded_parts(setup.state_db)
    assert held and "huge.bin" not in remote.objects()

    result = syncd("once", "-c", setup.config, timeout=600)
    if result.returncode != 0:
        (tmp_path / "restart.stderr").write_text(result.stderr)  # kept whole, for a post-mortem
    if isinstance(remote, GCSRemote) and "the upload session finished with" in result.stderr:
        # The kill landed after fake-gcs-server stored a chunk but before syncd recorded it;
        # the restart sends that chunk again and the emulator appends it a second time (real
        # GCS answers 308 with the range it holds). syncd refused the wrong-sized object and
        # started over (the pass may even end well, every part sent again): what is asserted
        # here is that no wrong byte stays anywhere; the emulator cannot show the resume.
        assert hashlib.sha256((setup.local / "huge.bin").read_bytes()).digest() == (
            hashlib.sha256(data).digest()
        )
        if result.returncode == 0:
            assert hashlib.sha256(remote.get("huge.bin")).digest() == hashlib.sha256(data).digest()
        pytest.xfail("fake-gcs-server appended a re-sent chunk (emulator quirk)")
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-4000:]
    assert '"event": "resuming multipart upload"' in result.stderr
    sent = _parts_sent(result.stderr)
    assert not set(sent) & held, f"parts sent again: {sorted(set(sent) & held)}"
    assert hashlib.sha256(remote.get("huge.bin")).digest() == hashlib.sha256(data).digest()
    assert _unfinished_uploads(remote) == []
    assert _partials(setup.state_db) == (0, 0)


@pytest.mark.slow
def test_kill_9_mid_download_then_restart_resumes(tmp_path: Path, remote: Remote) -> None:
    size = max(KILL_MIB // 3, 40) * MiB
    data = os.urandom(size)
    remote.put("huge.bin", data)
    setup = Setup(
        tmp_path,
        remote.url,
        options=remote.options,
        extra={
            "multipart_threshold": "16MiB",
            "part_size": "8MiB",
            "part_concurrency": 2,
            "download_limit": "40MB/s",
        },
    )
    setup.write()
    process = subprocess.Popen(
        [*SYNCD, "once", "-c", str(setup.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def chunks() -> int:
        try:
            with sqlite3.connect(f"file:{setup.state_db}?mode=ro", uri=True, timeout=1) as db:
                rows = db.execute("SELECT chunks FROM downloads").fetchall()
        except sqlite3.Error:
            return 0
        return sum(len(json.loads(text)) for (text,) in rows)

    try:
        wait_for(lambda: chunks() >= 2, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (setup.local / "huge.bin").exists()  # never half a file under its real name

    result = syncd("once", "-c", setup.config, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"event": "resuming download"' in result.stderr
    assert (setup.local / "huge.bin").read_bytes() == data
    assert {p.name for p in setup.local.iterdir()} <= {"huge.bin", ".syncd"}  # no temp left
    assert _partials(setup.state_db) == (0, 0)


# -- memory, bandwidth, progress ----------------------------------------------------------------


def test_upload_memory_stays_bounded(tmp_path: Path, s3_bucket: Any) -> None:
    """`syncd upload` of a 96 MiB file in 16 MiB parts, 4 at a time: the child's peak RSS stays
    far below the file (the bench measures the 2 GiB case on every provider)."""
    remote = S3Remote(s3_bucket)
    folder = tmp_path / "src"
    _random_file(folder / "big.bin", 96 * MiB)
    env = {**os.environ, "AWS_ENDPOINT_URL": remote.options["endpoint_url"],
           "XDG_STATE_HOME": str(tmp_path / "xdg")}  # fmt: skip
    # A fresh parent whose only child is syncd, so RUSAGE_CHILDREN is syncd's own peak.
    measure = (
        "import resource, subprocess, sys; "
        "code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, *SYNCD, "upload", str(folder), remote.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    assert remote.objects() == {"big.bin": (folder / "big.bin").read_bytes()}
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib // 1024} MiB"


def test_bandwidth_limit_paces_uploads(tmp_path: Path) -> None:
    """6 MB through a 3 MB/s limit takes about 2 s: never much faster (the limit holds),
    within a wide margin of slower (a loaded CI machine)."""
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    setup = Setup(tmp_path, f"file://{remote_dir}", extra={"bandwidth_limit": "3MB/s"})
    setup.write()
    for i in range(3):
        _random_file(setup.local / f"f{i}.bin", 2_000_000)
    started = time.monotonic()
    result = syncd("once", "-c", setup.config)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert len(tree(remote_dir)) == 3
    burst = 3_000_000 // 4
    floor = (6_000_000 - burst) / 3_000_000  # the fastest the bucket allows
    assert elapsed >= floor * 0.9, f"{elapsed:.2f} s: the limit did not hold"
    assert elapsed < floor * 4 + 3, f"{elapsed:.2f} s: far slower than the limit"


def test_status_shows_in_flight_transfers(tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    setup = Setup(tmp_path, f"file://{remote_dir}", extra={"upload_limit": "2MB/s"})
    with running_daemon(setup) as daemon:
        _random_file(setup.local / "slow.bin", 8_000_000)

        def moving() -> dict[str, Any] | None:
            status = daemon.status()
            transfers = (status or {}).get("transfers") or []
            return transfers[0] if transfers and transfers[0]["bytes_done"] > 0 else None

        wait_for(lambda: moving() is not None, timeout=20)
        seen = moving()
        assert seen is not None
        assert seen["pair"] == "docs" and seen["path"] == "slow.bin"
        assert seen["direction"] == "upload"
        assert seen["bytes_total"] == 8_000_000
        assert 0 < seen["bytes_done"] <= 8_000_000
        assert seen["speed_bps"] > 0
        human = syncd("status", "-c", setup.config)
        assert "slow.bin" in human.stdout
        wait_for(lambda: (remote_dir / "slow.bin").exists(), timeout=30)
        daemon.wait_idle()
        assert (daemon.status() or {}).get("transfers") == []
        assert daemon.terminate() == 0


def test_upload_shows_progress_bars_on_a_terminal(tmp_path: Path) -> None:
    folder, remote_dir = tmp_path / "src", tmp_path / "remote"
    data = _random_file(folder / "big.bin", 3_000_000)
    remote_dir.mkdir()
    leader, follower = pty.openpty()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg"), "COLUMNS": "120"}
    process = subprocess.Popen(
        [*SYNCD, "upload", str(folder), f"file://{remote_dir}", "--bwlimit", "1MB/s"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    assert (remote_dir / "big.bin").read_bytes() == data
    assert "↑ big.bin".encode() in seen  # the bar's label
    assert b"MB/s" in seen or b"kB/s" in seen  # and its speed


def test_transfer_flags_are_validated_by_name(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for flag, value in (("--bwlimit", "fast"), ("--part-size", "1KiB"), ("--transfers", "0")):
        result = syncd("upload", tmp_path / "src", f"file://{tmp_path}/remote", flag, value)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"syncd: {flag}:"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_ranged_download_never_follows_a_folder_swapped_for_a_symlink_meanwhile(
    tmp_path: Path, s3_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large download writes its resumable temp file in the target's folder held open from
    the root: a folder swapped for a symlink after the check gets no byte outside the root,
    and nothing is placed (the path is skipped, as any path through a symlink is)."""
    remote = S3Remote(s3_bucket, PREFIX)
    data = os.urandom(12 * MiB)
    remote.put("video/big.bin", data)
    bob = Setup(tmp_path / "bob", remote.url, options=remote.options, extra=SMALL_PARTS)
    bob.write()
    (bob.local / "video").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    real_make_parents = localfs.make_parents

    def make_parents(root: Path, target: Path) -> None:
        real_make_parents(root, target)
        if not (root / "video").is_symlink():
            (root / "video").rename(root / "video.real")
            (root / "video").symlink_to(outside, target_is_directory=True)

    monkeypatch.setattr(localfs, "make_parents", make_parents)
    with Engine(load_config(bob.config)) as engine:
        report = engine.sync_once()

    assert report.exit_code == 0 and report.pairs[0].downloaded == 0, report
    assert list(outside.iterdir()) == []
    assert list((bob.local / "video.real").iterdir()) == []
    assert remote.get("video/big.bin") == data


#: Each bucket provider's class, for a test to wrap one of its calls.
PROVIDERS: dict[str, Any] = {"s3": S3Provider, "gcs": GCSProvider, "azure": AzureProvider}


def _pass_of(setup: Setup, multipart: bool) -> Any:
    """One in-process pass of `setup`'s pair; not `multipart`: its file of 10-23 MiB is
    streamed whole (the threshold raised over it)."""
    config = load_config(setup.config)
    if not multipart:
        config = config.model_copy(update={"multipart_threshold": 64 * MiB})
    with Engine(config) as engine:
        return engine.sync_once()


@pytest.mark.parametrize(
    ("kind", "multipart"),
    [("s3", True), ("s3", False), ("gcs", True), ("azure", True)],
    ids=["s3 in parts", "s3 streamed whole", "gcs in parts", "azure in parts"],
)
def test_a_file_that_shrinks_while_it_is_sent_is_looked_at_again(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    multipart: bool,
) -> None:
    """Issue 2: a file that changes while it is read is thrown away and requeued. One that
    grew was; one that shrank failed the pass ("the file got shorter while it was being
    sent", exit 1) and left its multipart upload behind: now the pass sends what it became
    and ends clean."""
    remote = remote_for(kind, request, tmp_path)
    alice = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    alice.write()
    path = alice.local / "shrinks.bin"
    data = _random_file(path, 23 * MiB if multipart else 10 * MiB)
    shrunk = data[: 6 * MiB + 17]
    provider = PROVIDERS[kind]
    method = "upload_part" if multipart else "upload"
    real = getattr(provider, method)
    cuts: list[int] = []

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not cuts:
            cuts.append(1)
            with open(path, "r+b") as fh:
                fh.truncate(len(shrunk))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(provider, method, send)
    report = _pass_of(alice, multipart)

    assert cuts and report.exit_code == 0, report
    assert remote.get("shrinks.bin") == shrunk
    assert _unfinished_uploads(remote) == []


@pytest.mark.parametrize(
    ("kind", "multipart"),
    [("s3", True), ("s3", False), ("gcs", True), ("gcs", False), ("azure", True), ("azure", False)],
    ids=[
        "s3 in parts",
        "s3 streamed",
        "gcs in parts",
        "gcs streamed",
        "azure in parts",
        "azure streamed",
    ],
)
def test_a_file_that_changes_while_it_is_sent_is_never_published_torn(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    multipart: bool,
) -> None:
    """Issue 2: a file that changes while it is read is thrown away, never a torn version
    under the real key. The parts of one that grew were committed all the same (a mix of
    versions, with a SHA-256 of those very bytes: no other machine could tell), and so was
    a streamed upload; now the upload is aborted before its commit, and the file as it
    became goes up once it is sent whole."""
    remote = remote_for(kind, request, tmp_path)
    alice = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    alice.write()
    path = alice.local / "grows.bin"
    provider = PROVIDERS[kind]
    data = _random_file(path, 23 * MiB if multipart else 10 * MiB)
    grown = data + os.urandom(MiB)
    method = "upload_part" if multipart else "upload"
    real_send = getattr(provider, method)
    real_complete = provider.complete_multipart
    published: list[int] = []
    appended = threading.Lock()

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        if appended.acquire(blocking=False):  # once, while the first part goes
            with open(path, "ab") as fh:
                fh.write(grown[len(data) :])
        info = real_send(self, *args, **kwargs)
        if not multipart:
            published.append(info.size)
        return info

    def complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_complete(self, *args, **kwargs)
        published.append(info.size)
        return info

    monkeypatch.setattr(provider, method, send)
    monkeypatch.setattr(provider, "complete_multipart", complete)
    report = _pass_of(alice, multipart)

    assert report.exit_code == 0, report
    assert published == [len(grown)]  # the torn one never was
    assert remote.get("grows.bin") == grown
    assert _unfinished_uploads(remote) == []


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_a_file_deleted_while_it_is_sent_in_parts_stays_deleted(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A resumable GCS upload has no commit to hold back: its last chunk publishes the
    object. A file deleted while its parts went was published all the same, with nothing
    recorded, and the next pass brought it back down. The last chunk now waits on the same
    check of the file as S3's commit."""
    remote = remote_for(kind, request, tmp_path)
    alice = Setup(tmp_path / "alice", remote.url, options=remote.options, extra=SMALL_PARTS)
    alice.write()
    path = alice.local / "doomed.bin"
    _random_file(path, 23 * MiB)
    provider = PROVIDERS[kind]
    real = provider.upload_part

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        path.unlink(missing_ok=True)  # the user deletes it while the first part goes
        return real(self, *args, **kwargs)

    monkeypatch.setattr(provider, "upload_part", send)
    assert _pass_of(alice, True).exit_code == 0
    assert "doomed.bin" not in remote.listing()
    monkeypatch.undo()
    assert _pass_of(alice, True).exit_code == 0
    assert not path.exists()  # not brought back
    assert "doomed.bin" not in remote.listing()
    assert _unfinished_uploads(remote) == []


def test_the_same_read_gives_the_whole_files_crc32c_when_asked(tmp_path: Path) -> None:
    """GCS checks a finished resumable upload by the whole file's CRC32C: the one read before
    the upload takes it, for that provider only (the others would pay ~0.05 s per GiB)."""
    data = _random_file(tmp_path / "big.bin", 2 * PART + 777)
    digests = _digest_file(tmp_path / "big.bin", PART, "crc32c", whole_crc32c=True)
    assert digests.crc32c == f"{google_crc32c.value(data):08x}"
    assert digests.md5 is None


# -- pause and resume of a transfer in flight --------------------------------------------------

#: A pair that moves 5 MiB parts slowly enough for a `pause` to land mid-transfer.
SLOW_PARTS = {
    "multipart_threshold": "5MiB",
    "part_size": "5MiB",
    "part_concurrency": 1,
    "upload_limit": "4MB/s",
    "download_limit": "4MB/s",
}


def _moving(daemon: Any, least: int) -> bool:
    """Is a transfer in flight with at least `least` bytes done?"""
    transfers = (daemon.status() or {}).get("transfers") or []
    return any(t["bytes_done"] >= least for t in transfers)


def _events(logs: str) -> list[str]:
    """The daemon's log lines but the chatty ones, for a failure's message."""
    quiet = ('"remote listed"', '"part sent"', '"status"')
    return [line[:300] for line in logs.splitlines() if not any(q in line for q in quiet)]


def _held_still(daemon: Any, setup: Setup) -> None:
    """`syncd pause` stops what is in flight at once: the transfers list empties within a
    couple of seconds and stays empty, the pair says paused."""
    paused = syncd("pause", "-c", setup.config)
    assert paused.returncode == 0, paused.stderr
    wait_for(lambda: (daemon.status() or {}).get("transfers") == [], timeout=3)
    time.sleep(1.5)
    status = daemon.status() or {}
    assert status.get("transfers") == [], status
    assert status["pairs"][0]["state"] == "paused"


def test_pause_stops_an_upload_in_flight_and_resume_sends_only_the_missing_parts(
    tmp_path: Path, s3_bucket: Any
) -> None:
    """Issue 7: a paused pair transfers nothing. `pause` held back only queued paths: a big
    file in flight went on to the end (the object on the remote while status said paused).
    It now stops as at a stop of syncd, its finished parts kept; `resume` sends the rest."""
    remote = S3Remote(s3_bucket)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=SLOW_PARTS)
    with running_daemon(setup) as daemon:
        # Written beside, then moved in: a write slowed down by a loaded machine must not
        # have its first half go up (then the upload resumed is of another file).
        data = _random_file(tmp_path / "big.bin", 24 * MiB)
        (tmp_path / "big.bin").rename(setup.local / "big.bin")
        wait_for(lambda: _moving(daemon, 7 * MiB), timeout=30)
        _held_still(daemon, setup)
        assert "big.bin" not in remote.objects()
        held = _recorded_parts(setup.state_db)
        assert held, "the parts sent before the pause are kept"
        before = len(_parts_sent(daemon.logs()))

        resumed = syncd("resume", "-c", setup.config)
        assert resumed.returncode == 0, resumed.stderr
        daemon.wait_idle(timeout=60)
        assert remote.get("big.bin") == data
        logs = daemon.logs()
        assert '"event": "resuming multipart upload"' in logs, _events(logs)
        again = _parts_sent(logs)[before:]
        assert again and not set(again) & held, f"parts sent again: {again}, held {held}"
        assert _unfinished_uploads(remote) == []
        assert _partials(setup.state_db) == (0, 0)
        assert daemon.terminate() == 0


def test_pause_stops_a_download_in_flight_and_resume_finishes_it(
    tmp_path: Path, s3_bucket: Any
) -> None:
    """The same for a download: nothing lands under the real name while the pair is paused,
    the chunks on disk are kept, and `resume` fetches the rest into the same temp file."""
    remote = S3Remote(s3_bucket)
    data = os.urandom(24 * MiB)
    remote.put("big.bin", data)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=SLOW_PARTS)
    with running_daemon(setup) as daemon:
        wait_for(lambda: _moving(daemon, 7 * MiB), timeout=30)
        _held_still(daemon, setup)
        assert not (setup.local / "big.bin").exists()
        assert _partials(setup.state_db) == (0, 1)

        assert syncd("resume", "-c", setup.config).returncode == 0
        daemon.wait_idle(timeout=60)
        assert (setup.local / "big.bin").read_bytes() == data
        assert '"event": "resuming download"' in daemon.logs()
        assert {p.name for p in setup.local.iterdir()} <= {"big.bin", ".syncd"}  # no temp left
        assert _partials(setup.state_db) == (0, 0)
        assert daemon.terminate() == 0


# -- a download the pass settles another way ----------------------------------------------------


def _left_download(setup: Setup, data_size: int, *, chunks: frozenset[int]) -> Path:
    """What a run killed mid-download of `big.bin` leaves: its record in the state and its
    temp file (preallocated to the object's size) beside the target. Returns the temp."""
    setup.state_db.parent.mkdir(parents=True, exist_ok=True)
    state = StateStore(f"sqlite:///{setup.state_db}")
    temp = ".syncd-tmp-resume-0123456789ab"
    Partials(state).start_download(
        "docs",
        PartialDownload(
            path="big.bin", key="big.bin", etag="an-etag", size=data_size, temp=temp,
            chunk_size=PART, chunks=chunks,
        ),
    )  # fmt: skip
    state.close()
    (setup.local / temp).write_bytes(b"\0" * data_size)
    return setup.local / temp


@pytest.mark.parametrize("how", ["deleted remotely", "local wins", "excluded"])
def test_a_download_the_pass_settles_otherwise_leaves_no_temp_behind(
    tmp_path: Path, s3_bucket: Any, how: str
) -> None:
    """A large download cut short leaves a temp file of the object's full size. When the
    path is then settled without it (the object deleted, the local file written meanwhile
    and newer, the path excluded), its record and temp file stayed for 7 days, the pair idle
    all along. They now go in the pass that settles the path, as an unfinished upload does."""
    remote = S3Remote(s3_bucket)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    size = 3 * PART
    temp = _left_download(setup, size, chunks=frozenset({0}))
    if how == "local wins":
        remote.put("big.bin", os.urandom(size), mtime_ns=1_000_000_000)
        (setup.local / "big.bin").write_bytes(b"written here meanwhile")
    elif how == "excluded":
        remote.put("big.bin", os.urandom(size))
        setup.pair_extra["exclude"] = ["*.bin"]
        setup.write()
    remote.put("other.txt", b"keeps the remote from looking emptied")

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert not temp.exists()
    assert _partials(setup.state_db) == (0, 0)
    assert '"event": "unfinished download dropped: not resumed"' in result.stderr
    if how == "local wins":
        assert remote.get("big.bin") == b"written here meanwhile"
    assert not list((setup.local / ".syncd").rglob("*resume*"))  # deleted, not trashed


def test_a_resumable_temp_whose_folder_was_renamed_goes_to_the_trash(
    tmp_path: Path, s3_bucket: Any
) -> None:
    """Killed mid-download of `d/big.bin`, then the user renamed `d` to `d2`: the record
    names a temp in a folder that is gone (it is dropped), and the temp, the object's size,
    moved with the folder, where no clean-up looked at it again, ever (sweep Q). A resumable
    temp that no record names goes to the trash as other stale temps do."""
    remote = S3Remote(s3_bucket)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    size = 3 * PART
    data = os.urandom(size)
    remote.put("d/big.bin", data)
    setup.state_db.parent.mkdir(parents=True, exist_ok=True)
    state = StateStore(f"sqlite:///{setup.state_db}")
    name = ".syncd-tmp-resume-0123456789ab"
    Partials(state).start_download(
        "docs",
        PartialDownload(
            path="d/big.bin", key="d/big.bin", etag="an-etag",
            size=size, temp=name, chunk_size=PART, chunks=frozenset({0}),
        ),
    )  # fmt: skip
    state.close()
    (setup.local / "d2").mkdir()
    (setup.local / "d2" / name).write_bytes(data[:PART] + b"\0" * (size - PART))

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (setup.local / "d2").iterdir()) == []
    assert (setup.local / "d" / "big.bin").read_bytes() == data
    assert _partials(setup.state_db) == (0, 0)
    kept = [p for p in (setup.local / ".syncd").rglob(name) if p.is_file()]
    assert len(kept) == 1 and kept[0].stat().st_size == size


def test_a_finished_temp_that_may_hold_the_replaced_file_goes_to_the_trash(
    tmp_path: Path, s3_bucket: Any
) -> None:
    """A finished download is swapped into place (RENAME_EXCHANGE): a crash before the file
    it replaced is unlinked leaves that file under the temp name, its record complete. Not
    known to be syncd's own bytes, it is moved to the local trash, never deleted."""
    remote = S3Remote(s3_bucket)
    setup = Setup(tmp_path, remote.url, options=remote.options, extra=SMALL_PARTS)
    setup.write()
    temp = _left_download(setup, 3 * PART, chunks=frozenset({0, 1, 2}))
    temp.write_bytes(b"the user's earlier version")
    remote.put("other.txt", b"keeps the remote from looking emptied")

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 0, result.stderr
    assert not temp.exists(), result.stderr
    assert _partials(setup.state_db) == (0, 0)
    kept = [p for p in (setup.local / ".syncd").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [b"the user's earlier version"], kept


# -- what a resumed transfer counts ---------------------------------------------------------------


def _left_chunk(setup: Setup, remote: S3Remote, key: str, data: bytes) -> None:
    """What a run killed mid-download of `key` leaves when its first chunk (PART bytes, as
    SMALL_PARTS cut a file of this size) was written: the record and the temp file."""
    head = remote.bucket.client.head_object(Bucket=remote.bucket.bucket, Key=remote.prefix + key)
    temp = ".syncd-tmp-resume-00000000abcd"
    state = StateStore(f"sqlite:///{setup.state_db}")
    Partials(state).start_download(
        "docs",
        PartialDownload(
            path=key, key=key, etag=head["ETag"].strip('"'), size=len(data), temp=temp,
            chunk_size=PART, chunks=frozenset({0}),
        ),
    )  # fmt: skip
    state.close()
    (setup.local / temp).write_bytes(data[:PART] + b"\0" * (len(data) - PART))


def test_a_resumed_transfer_counts_only_the_bytes_it_moved(tmp_path: Path, s3_bucket: Any) -> None:
    """Issue 7's metrics count the bytes transferred. After a resumed upload (or download)
    the whole file was counted, though only the missing parts moved: a crash counted twice as
    egress, and the log line's bytes over its duration read faster than the limit. Now the
    counters and the line's `bytes` say what moved; the line's `size` is the file's."""
    from emulators import free_port

    remote = S3Remote(s3_bucket)
    port = free_port()
    setup = Setup(
        tmp_path, remote.url, options=remote.options,
        extra={**SMALL_PARTS, "metrics": {"listen": f"127.0.0.1:{port}"}},
    )  # fmt: skip
    setup.write()
    up = _random_file(setup.local / "big.bin", 4 * PART + 999)
    _crash_mid_upload(setup, remote, up)  # 2 parts held
    down = os.urandom(3 * PART + 77)
    remote.put("theirs.bin", down)
    _left_chunk(setup, remote, "theirs.bin", down)  # 1 chunk held
    sent, fetched = len(up) - 2 * PART, len(down) - PART

    with running_daemon(setup) as daemon:
        daemon.wait_idle(timeout=60)
        assert remote.get("big.bin") == up
        assert (setup.local / "theirs.bin").read_bytes() == down
        logs = daemon.logs()
        assert '"event": "resuming multipart upload"' in logs
        assert '"event": "resuming download"' in logs
        totals = daemon.pair_status()["totals"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert daemon.terminate() == 0

    for when in ("since_start", "since_install"):
        assert (totals[when]["bytes_up"], totals[when]["bytes_down"]) == (sent, fetched), totals
    counted = {
        line.split('direction="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("syncd_bytes_transferred_total{")
    }
    assert counted == {"upload": sent, "download": fetched}, counted
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    said = {
        e["op"]: (e["bytes"], e["size"]) for e in lines if e["event"] in ("uploaded", "downloaded")
    }
    assert said == {"upload": (sent, len(up)), "download": (fetched, len(down))}


# -- a foreign object read through a hash once ----------------------------------------------------


def test_resolve_keep_remote_does_not_read_a_hashed_version_again(
    tmp_path: Path, s3_bucket: Any, moto_server: Any
) -> None:
    """An object another tool sent in parts states no checksum: of the same size as the
    local file, it is read through a hash (written nowhere) to tell whether they differ.
    `resolve --keep remote` then read the whole object through a hash again, though its ETag
    had not changed: three reads for one download. The hash of that version is kept."""
    from boto3.s3.transfer import TransferConfig

    remote = S3Remote(s3_bucket)
    name = f"foreign-{os.urandom(4).hex()}.bin"
    size = 6 * MiB
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra={"conflict": "manual"})
    setup.write()
    theirs = _random_file(tmp_path / "theirs.bin", size)
    s3_bucket.client.upload_file(
        str(tmp_path / "theirs.bin"), s3_bucket.bucket, PREFIX + name,
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )  # fmt: skip
    _random_file(setup.local / name, size)

    def whole_reads() -> int:
        """GETs of the whole object, in moto's request log (ranged ones answer 206)."""
        log = moto_server.log_path.read_text(errors="replace").splitlines()
        return sum('"GET /' in line and f"{PREFIX}{name} HTTP" in line and '" 200 ' in line
                   for line in log)  # fmt: skip

    with running_daemon(setup) as daemon:
        wait_for(lambda: daemon.pair_status()["conflicts"] == 1, timeout=30)
        assert whole_reads() == 1  # the first pass's hash
        settled = syncd("resolve", name, "--keep", "remote", "-c", setup.config)
        assert settled.returncode == 0, settled.stderr
        assert (setup.local / name).read_bytes() == theirs
        assert whole_reads() == 2  # and the download, no second hash
        assert daemon.terminate() == 0

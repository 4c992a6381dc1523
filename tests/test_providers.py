"""One conformance suite for every provider, against real backends: a temp folder and moto.

Each test states a promise of the Provider protocol (base.py) and checks the outcome through the
provider and, where it matters, behind its back (the folder on disk, a plain boto3 client).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import structlog.testing
from botocore.exceptions import ClientError, EndpointConnectionError
from conftest import Bucket
from emulators import Emulator, free_port, start_moto
from harness import nest_deep, unnest_deep

from syncd.providers import (
    InvalidRequest,
    NotFound,
    ObjectInfo,
    PermissionDenied,
    PreconditionFailed,
    Provider,
    Throttled,
    Transient,
    UploadRequest,
    open_provider,
)
from syncd.providers.local import FileProvider
from syncd.providers.s3 import S3Provider, _timestamp, _translate, should_retry

MTIME_NS = 1_700_000_000_123_456_789
PREFIX = "team/a/"


@dataclass
class Root:
    """A fresh provider plus a way to write beside its root without going through it."""

    kind: str
    provider: Provider
    write_outside: Callable[[str, bytes], None]  # key relative to the bucket / parent folder


#: Every kind of remote the suite runs against; each has a `<kind>_root` fixture yielding a
#: Root (file below, s3 in conftest.py, gcs and azure in their fixture modules).
KINDS = ["file", "s3", "gcs", "azure"]


@pytest.fixture(params=KINDS)
def root(request: pytest.FixtureRequest) -> Root:
    found: Root = request.getfixturevalue(f"{request.param}_root")
    return found


@pytest.fixture
def file_root(tmp_path: Path) -> Iterator[Root]:
    parent = tmp_path / "remote"
    (parent / PREFIX).mkdir(parents=True)

    def write_file(key: str, data: bytes) -> None:
        (parent / key).parent.mkdir(parents=True, exist_ok=True)
        (parent / key).write_bytes(data)

    provider = open_provider(f"file://{parent / PREFIX}", {})
    yield Root("file", provider, write_file)
    provider.close()


@pytest.fixture
def provider(root: Root) -> Provider:
    return root.provider


def put(provider: Provider, key: str, data: bytes, **kwargs: Any) -> ObjectInfo:
    return provider.upload(
        UploadRequest(
            key=key,
            body=io.BytesIO(data),
            size=len(data),
            mtime_ns=kwargs.pop("mtime_ns", MTIME_NS),
            sha256=hashlib.sha256(data).hexdigest(),
            **kwargs,
        )
    )


def get(provider: Provider, key: str, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
    sink = io.BytesIO()
    info = provider.download(key, sink, if_match=if_match)
    return sink.getvalue(), info


def listing(provider: Provider) -> dict[str, ObjectInfo]:
    return {info.key: info for info in provider.list()}


# -- listing --------------------------------------------------------------------------------


def test_listing_follows_pagination_past_1000_keys(provider: Provider) -> None:
    keys = [f"many/{i:04d}.txt" for i in range(1050)]
    with ThreadPoolExecutor(16) as pool:  # also exercises one provider from many threads
        list(pool.map(lambda key: put(provider, key, key.encode()), keys))

    found = listing(provider)

    assert sorted(found) == keys
    assert all(found[key].size == len(key) for key in keys)


def test_listing_sees_only_its_own_prefix(root: Root) -> None:
    root.write_outside("team/ab/x", b"sibling")
    root.write_outside("team/a.txt", b"sibling file")
    root.write_outside("team/x", b"parent level")
    if root.kind == "s3":  # keys a folder cannot hold next to the root folder itself
        root.write_outside("team/a", b"an object named like the prefix")
        root.write_outside("team/a/", b"")  # the prefix's own folder marker
    put(root.provider, "mine", b"inside")

    assert set(listing(root.provider)) == {"mine"}


def test_unicode_and_special_character_keys_round_trip(provider: Provider) -> None:
    keys = ["ü/naïve file#1.txt", "a b/c+d=e&f.txt", "日本/ファイル.bin", "q?x/%41;~'!.txt"]
    for key in keys:
        put(provider, key, key.encode())

    assert set(listing(provider)) == set(keys)
    for key in keys:
        assert provider.stat(key).size == len(key.encode())
        assert get(provider, key)[0] == key.encode()


def test_zero_byte_objects(provider: Provider) -> None:
    info = put(provider, "empty", b"")

    assert info.size == 0
    assert listing(provider)["empty"].size == 0
    assert provider.stat("empty").size == 0
    data, downloaded = get(provider, "empty")
    assert data == b""
    assert downloaded.size == 0
    assert downloaded.etag == info.etag


# -- metadata -------------------------------------------------------------------------------


def test_mtime_round_trips_to_the_nanosecond(provider: Provider) -> None:
    uploaded = put(provider, "dated.txt", b"when", mtime_ns=MTIME_NS)

    assert uploaded.mtime_ns == MTIME_NS
    assert provider.stat("dated.txt").mtime_ns == MTIME_NS
    assert get(provider, "dated.txt")[1].mtime_ns == MTIME_NS
    listed = listing(provider)["dated.txt"]
    if provider.capabilities.listing_has_metadata:
        assert listed.mtime_ns == MTIME_NS
    else:
        assert listed.mtime_ns is None  # S3 listings carry no user metadata


def test_sha256_round_trips(provider: Provider) -> None:
    data = b"content to be hashed"
    sha256 = hashlib.sha256(data).hexdigest()

    assert put(provider, "h.txt", data).sha256 == sha256
    stat = provider.stat("h.txt")
    assert stat.has_metadata
    assert stat.sha256 == sha256
    downloaded = get(provider, "h.txt")[1]
    assert downloaded.sha256 in (sha256, None)  # a folder does not hash on download
    assert downloaded.has_metadata == (downloaded.sha256 is not None)


def test_stat_and_download_agree_with_the_listing(provider: Provider) -> None:
    put(provider, "k", b"12345")

    listed = listing(provider)["k"]
    stat = provider.stat("k")
    downloaded = get(provider, "k")[1]

    assert listed.etag == stat.etag == downloaded.etag
    assert listed.size == stat.size == downloaded.size == 5


def test_every_write_returns_the_version_the_next_listing_reports(provider: Provider) -> None:
    """The engine records the version a write returns as the base and compares the next
    listing with it: a write whose last step changed the object after its version was taken
    (a folder remote's temp name unlinked after the fstat moves the file's ctime) would make
    every file it wrote look changed at the next pass."""
    plain = put(provider, "plain", b"plain")
    first = put(provider, "replaced", b"one")
    stamped = put(provider, "stamped", b"stamped")
    written = {
        "plain": plain,
        "created": put(provider, "created", b"created", if_absent=True),
        "replaced": put(provider, "replaced", b"two", if_match=first.etag),
        "copied": provider.copy("plain", "copied", if_match=plain.etag),
        "stamped": provider.set_mtime("stamped", MTIME_NS + 1, if_match=stamped.etag),
    }

    listed = listing(provider)

    assert {key: info.etag for key, info in listed.items()} == {
        key: info.etag for key, info in written.items()
    }


# -- conditional writes ---------------------------------------------------------------------


def test_create_if_absent_refuses_to_overwrite(provider: Provider) -> None:
    first = put(provider, "c.txt", b"first", if_absent=True)

    with pytest.raises(PreconditionFailed):
        put(provider, "c.txt", b"second, longer", if_absent=True)

    data, info = get(provider, "c.txt")
    assert data == b"first"
    assert info.etag == first.etag


def test_replace_if_match_needs_the_current_version(provider: Provider) -> None:
    v1 = put(provider, "r.txt", b"one")
    v2 = put(provider, "r.txt", b"two two", if_match=v1.etag)
    assert v2.etag != v1.etag

    with pytest.raises(PreconditionFailed):
        put(provider, "r.txt", b"stale writer", if_match=v1.etag)
    assert get(provider, "r.txt")[0] == b"two two"

    v3 = put(provider, "r.txt", b"three", if_match=v2.etag)
    assert get(provider, "r.txt")[0] == b"three"
    assert provider.stat("r.txt").etag == v3.etag


def test_replace_if_match_on_a_deleted_object_fails(provider: Provider) -> None:
    v1 = put(provider, "gone.txt", b"here")
    provider.delete("gone.txt")

    with pytest.raises(PreconditionFailed):
        put(provider, "gone.txt", b"again", if_match=v1.etag)
    with pytest.raises(NotFound):
        provider.stat("gone.txt")


def test_download_if_match_refuses_a_newer_version(provider: Provider) -> None:
    v1 = put(provider, "d.txt", b"one")
    put(provider, "d.txt", b"two!")

    with pytest.raises(PreconditionFailed):
        get(provider, "d.txt", if_match=v1.etag)


def test_delete_if_match(provider: Provider) -> None:
    v1 = put(provider, "x/del.txt", b"one")
    v2 = put(provider, "x/del.txt", b"two!")

    with pytest.raises(PreconditionFailed):
        provider.delete("x/del.txt", if_match=v1.etag)
    assert get(provider, "x/del.txt")[0] == b"two!"

    provider.delete("x/del.txt", if_match=v2.etag)
    with pytest.raises(NotFound):
        provider.stat("x/del.txt")
    assert listing(provider) == {}


# -- missing objects ------------------------------------------------------------------------


def test_copy_keeps_content_and_mtime_and_never_overwrites(provider: Provider) -> None:
    original = put(provider, "src/file.txt", b"copy me", mtime_ns=1_600_000_000_000_000_123)
    copied = provider.copy("src/file.txt", "trash/file.txt", if_match=original.etag)
    data, info = get(provider, "trash/file.txt")
    assert data == b"copy me"
    assert info.mtime_ns == 1_600_000_000_000_000_123
    assert copied.size == 7
    assert get(provider, "src/file.txt")[0] == b"copy me"  # the source is untouched
    put(provider, "src/other.txt", b"copy me", mtime_ns=1_600_000_000_000_000_124)
    with pytest.raises(PreconditionFailed):
        provider.copy("src/other.txt", "trash/file.txt")  # the destination holds another
    put(provider, "src/file.txt", b"newer", if_match=original.etag)
    with pytest.raises(PreconditionFailed):
        provider.copy("src/file.txt", "elsewhere.txt", if_match=original.etag)  # stale source
    assert "elsewhere.txt" not in listing(provider)


@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_onto_its_own_earlier_copy_is_that_copy(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The engine retries a copy as a whole: when the answer to one that landed was lost, the
    retry found its own copy in the way (PreconditionFailed), and the engine made a second
    conflict copy, or a second full copy in the remote trash. A destination holding the
    source's very version is that copy; anything else there is still never overwritten."""
    provider = request.getfixturevalue(f"{kind}_root").provider
    original = put(provider, "src/file.txt", b"copy me")
    first = provider.copy("src/file.txt", "trash/file.txt", if_match=original.etag)

    again = provider.copy("src/file.txt", "trash/file.txt", if_match=original.etag)

    assert (again.etag, again.size, again.sha256) == (first.etag, 7, original.sha256)
    assert sorted(listing(provider)) == ["src/file.txt", "trash/file.txt"]
    # The same bytes with another mtime, other bytes of the same size, a stale source:
    # none of them is this copy.
    put(provider, "src/touched.txt", b"copy me", mtime_ns=MTIME_NS + 1)
    put(provider, "src/other.txt", b"copy us")
    for src in ["src/touched.txt", "src/other.txt"]:
        with pytest.raises(PreconditionFailed):
            provider.copy(src, "trash/file.txt")
    put(provider, "src/file.txt", b"changed", if_match=original.etag)
    with pytest.raises(PreconditionFailed):
        provider.copy("src/file.txt", "trash/file.txt", if_match=original.etag)
    assert get(provider, "trash/file.txt")[0] == b"copy me"


def test_an_s3_copy_of_a_source_written_meanwhile_is_undone(
    s3_root: Root, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto ignores CopySourceIfMatch: a write that lands between the copy's look at its
    source and the copy was copied (a rename racing another machine's edit put their bytes
    under the new name). The copy is checked against the version asked for, and undone."""
    provider = s3_root.provider
    assert isinstance(provider, S3Provider)
    original = put(provider, "x.txt", b"mine")
    real = provider._client.copy_object

    def copy_after_a_write(**params: Any) -> Any:
        put(provider, "x.txt", b"their edit", if_match=original.etag)
        return real(**params)

    monkeypatch.setattr(provider._client, "copy_object", copy_after_a_write)
    with pytest.raises(PreconditionFailed, match="changed while it was copied"):
        provider.copy("x.txt", "y.txt", if_match=original.etag)
    assert "y.txt" not in listing(provider)
    assert get(provider, "x.txt")[0] == b"their edit"


def test_missing_object_is_not_found(provider: Provider) -> None:
    with pytest.raises(NotFound):
        provider.stat("nope/missing.txt")
    with pytest.raises(NotFound):
        get(provider, "nope/missing.txt")


def test_deleting_a_missing_object_is_fine(provider: Provider) -> None:
    provider.delete("never/was.txt")
    provider.delete("never/was.txt", if_match="0123456789abcdef0123456789abcdef")


# -- bodies ---------------------------------------------------------------------------------


class OneWayStream(io.RawIOBase):
    """A body that can only be read forward, counting what was read (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("body_kind", ["bytesio", "file", "one-way"])
def test_three_mib_blob_round_trips_byte_exact(
    provider: Provider, tmp_path: Path, body_kind: str
) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "blob.bin"
    source.write_bytes(blob)
    one_way = OneWayStream(blob)
    with open(source, "rb") as fh:
        bodies: dict[str, Any] = {"bytesio": io.BytesIO(blob), "file": fh, "one-way": one_way}
        body: BinaryIO = bodies[body_kind]
        uploaded = provider.upload(
            UploadRequest(
                key="big/blob.bin",
                body=body,
                size=len(blob),
                mtime_ns=MTIME_NS,
                sha256=hashlib.sha256(blob).hexdigest(),
            )
        )
    if body_kind == "one-way":
        assert one_way.bytes_read == len(blob)  # read exactly once, to its end

    data, info = get(provider, "big/blob.bin")

    assert data == blob
    assert info.size == uploaded.size == len(blob)
    assert info.etag == uploaded.etag


# -- reaching the root ----------------------------------------------------------------------


def test_check_passes_on_a_reachable_root(provider: Provider) -> None:
    provider.check()
    provider.probe()


def test_probe_of_a_missing_folder_makes_nothing_even_with_create_bucket(tmp_path: Path) -> None:
    provider = open_provider(f"file://{tmp_path / 'absent'}", {"create_bucket": True})
    with pytest.raises(NotFound, match="does not exist"):
        provider.probe()
    assert not (tmp_path / "absent").exists()
    provider.check()  # check makes it
    provider.probe()
    (tmp_path / "absent").rmdir()
    (tmp_path / "absent").write_text("a file now")
    with pytest.raises(NotFound, match="is not a folder"):
        provider.probe()


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    provider = open_provider(f"file://{tmp_path / 'absent'}", None)

    with pytest.raises(NotFound, match="does not exist"):
        provider.check()
    with pytest.raises(NotFound, match="does not exist"):
        list(provider.list())


def test_missing_bucket_is_not_found(moto_server: Emulator) -> None:
    provider = open_provider(
        "s3://no-such-bucket-here/p/", {"endpoint_url": moto_server.endpoint_url}
    )
    try:
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            provider.check()
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            list(provider.list())
        with pytest.raises(NotFound, match="does not exist"):
            provider.delete("k")  # a missing bucket is not a deleted key
    finally:
        provider.close()


@pytest.fixture(scope="module")
def moto_with_auth() -> Iterator[Emulator]:
    """A moto server that checks credentials (by default moto accepts any)."""
    server = start_moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server
    server.stop()


def test_unknown_credentials_are_permission_denied(moto_with_auth: Emulator) -> None:
    provider = open_provider(
        "s3://some-bucket/p/",
        {
            "endpoint_url": moto_with_auth.endpoint_url,
            "access_key_id": "AKIAUNKNOWNUNKNOWN00",
            "secret_access_key": "not-a-real-secret",
        },
    )
    try:
        for call in (
            provider.check,
            lambda: list(provider.list()),
            lambda: provider.stat("k"),
            lambda: put(provider, "k", b"x"),
        ):
            with pytest.raises(PermissionDenied) as caught:
                call()
            assert "not-a-real-secret" not in str(caught.value)
            assert "AKIAUNKNOWN" not in str(caught.value)
    finally:
        provider.close()


def test_unreachable_endpoint_is_transient() -> None:
    provider = open_provider(
        "s3://some-bucket/", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    try:
        with pytest.raises(Transient) as caught:
            provider.check()
        assert should_retry(caught.value)
    finally:
        provider.close()


def test_aws_endpoint_url_variable_is_honoured(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint_url)
    provider = open_provider(s3_bucket.url("via-env"), {})
    try:
        provider.check()
        put(provider, "k.txt", b"through the variable")
    finally:
        provider.close()

    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key="via-env/k.txt")
    assert head["ContentLength"] == len(b"through the variable")
    assert head["Metadata"]["mtime"] == "1700000000.123456789"


# -- error translation (inputs the emulator cannot produce on demand) -----------------------


def _client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("exc", "conditional", "expected"),
    [
        (_client_error("SlowDown", 503), False, Throttled),
        (_client_error("", 429), False, Throttled),
        (_client_error("InternalError", 500), False, Transient),
        (_client_error("", 504), False, Transient),
        (_client_error("ConditionalRequestConflict", 409), True, PreconditionFailed),
        (_client_error("NoSuchKey", 404), True, PreconditionFailed),
        (_client_error("NoSuchKey", 404), False, NotFound),
        (_client_error("SignatureDoesNotMatch", 403), False, PermissionDenied),
        (_client_error("InvalidArgument", 400), False, InvalidRequest),
        (EndpointConnectionError(endpoint_url="http://x"), False, Transient),
    ],
)
def test_translate(exc: Exception, conditional: bool, expected: type[Exception]) -> None:
    error = _translate(exc, "s3://b/k", bucket="b", on_object=True, conditional=conditional)
    assert type(error) is expected
    assert should_retry(error) == (expected in (Throttled, Transient))


def test_throttling_carries_retry_after() -> None:
    error = _translate(
        _client_error("SlowDown", 503, {"retry-after": "7"}), "w", bucket="b", on_object=True
    )
    assert isinstance(error, Throttled)
    assert error.retry_after == 7.0


# -- the folder provider's own safety -------------------------------------------------------

HOSTILE_KEYS = [
    "../escape.txt",
    "a/../../escape.txt",
    "/tmp/escape.txt",
    "a//b.txt",
    "a\\..\\escape.txt",
    "nul\x00.txt",
    "",
    ".",
    "a/./b.txt",
    "trailing/",
]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[FileProvider, Path, Path]]:
    """A FileProvider on tmp/root, and tmp/outside, a folder that must stay empty."""
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    provider = open_provider(f"file://{tmp_path / 'root'}", {})
    assert isinstance(provider, FileProvider)
    yield provider, tmp_path / "root", tmp_path / "outside"
    provider.close()


def _all_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*"))


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_refused(folder: tuple[FileProvider, Path, Path], key: str) -> None:
    provider, root, _ = folder
    before = _all_files(root.parent)

    with pytest.raises(InvalidRequest):
        put(provider, key, b"payload")
    with pytest.raises(InvalidRequest):
        provider.stat(key)
    with pytest.raises(InvalidRequest):
        get(provider, key)
    with pytest.raises(InvalidRequest):
        provider.delete(key)

    assert _all_files(root.parent) == before


def test_pipes_and_sockets_are_said_and_deep_folders_listed(
    folder: tuple[FileProvider, Path, Path],
) -> None:
    """A named pipe or a socket in the folder is no object: said once, as a symlink is (they
    went unsaid). A folder ~1100 levels deep is listed: the walk recursed, and a
    RecursionError failed every listing of the pair."""
    provider, root, _ = folder
    os.mkfifo(root / "pipe")
    os.mknod(root / "app.sock", 0o600 | stat.S_IFSOCK)
    nest_deep(root, 1100)
    deepest = root.joinpath(*["dd"] * 1100, "bottom.txt")
    deepest.write_bytes(b"bottom")
    try:
        with structlog.testing.capture_logs() as logs:
            assert list(listing(provider)) == ["dd/" * 1100 + "bottom.txt"]
            listing(provider)
    finally:
        deepest.unlink()
        unnest_deep(root)
    special = "not a regular file (a pipe, socket or device)"
    assert sorted((e["event"], e["key"], e["reason"]) for e in logs) == [
        ("skipped", "app.sock", special),
        ("skipped", "pipe", special),
    ]


def test_a_create_only_upload_names_a_link_or_pipe_in_its_way(
    folder: tuple[FileProvider, Path, Path],
) -> None:
    """A symlink or a named pipe under the key is no object (the listing skips it), so a
    create-only upload can never succeed there: it said "already exists", which the engine
    took for a race, looked again ~10 s and failed the file as "kept changing while being
    synced". It now names what is in the way."""
    provider, root, outside = folder
    (outside / "victim.txt").write_bytes(b"outside")
    (root / "notes.txt").symlink_to(outside / "victim.txt")
    os.mkfifo(root / "pipe.txt")
    with pytest.raises(InvalidRequest, match="a symlink is in the way"):
        put(provider, "notes.txt", b"mine", if_absent=True)
    with pytest.raises(InvalidRequest, match="a named pipe, socket or device is in the way"):
        put(provider, "pipe.txt", b"mine", if_absent=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        put(provider, "taken.txt", b"first", if_absent=True)
        put(provider, "taken.txt", b"second", if_absent=True)
    assert (outside / "victim.txt").read_bytes() == b"outside"
    assert stat.S_ISFIFO((root / "pipe.txt").lstat().st_mode)


def test_symlinked_parent_is_never_followed(folder: tuple[FileProvider, Path, Path]) -> None:
    provider, root, outside = folder
    (outside / "secret.txt").write_bytes(b"outside")
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidRequest):
        put(provider, "link/new.txt", b"payload")
    with pytest.raises(NotFound):
        provider.stat("link/secret.txt")
    provider.delete("link/secret.txt")

    assert _all_files(outside) == [outside / "secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"outside"
    assert listing(provider) == {}


def test_symlinked_file_is_not_an_object(folder: tuple[FileProvider, Path, Path]) -> None:
    provider, root, outside = folder
    (outside / "secret.txt").write_bytes(b"outside")
    (root / "alias.txt").symlink_to(outside / "secret.txt")

    with structlog.testing.capture_logs() as logs:
        assert listing(provider) == {}
        assert listing(provider) == {}
    # Said once (it went unsaid), as a local symlink is.
    assert [(e["event"], e["key"], e["reason"]) for e in logs] == [
        ("skipped", "alias.txt", "symlink (not followed)")
    ]
    with pytest.raises(NotFound):
        get(provider, "alias.txt")
    put(provider, "alias.txt", b"replaces the link, not its target")

    assert (outside / "secret.txt").read_bytes() == b"outside"
    assert not (root / "alias.txt").is_symlink()


def test_folder_upload_is_atomic_and_leaves_no_temp_files(
    folder: tuple[FileProvider, Path, Path],
) -> None:
    provider, root, _ = folder
    put(provider, "d/e/f.txt", b"data")
    with pytest.raises(PreconditionFailed):
        put(provider, "d/e/f.txt", b"other", if_absent=True)

    class Exploding(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("source vanished")

    with pytest.raises(OSError, match="source vanished"):
        provider.upload(UploadRequest("d/e/g.txt", Exploding(), 4, MTIME_NS))

    assert [p.relative_to(root).as_posix() for p in _all_files(root)] == ["d", "d/e", "d/e/f.txt"]
    assert (root / "d/e/f.txt").stat().st_mtime_ns == MTIME_NS


def test_folder_delete_prunes_empty_parents_but_not_the_root(
    folder: tuple[FileProvider, Path, Path],
) -> None:
    provider, root, _ = folder
    put(provider, "x/y/z.txt", b"1")
    put(provider, "x/keep.txt", b"2")

    provider.delete("x/y/z.txt")
    assert _all_files(root) == [root / "x", root / "x/keep.txt"]
    provider.delete("x/keep.txt")
    assert _all_files(root) == []
    assert root.is_dir()


def test_folder_listing_skips_temp_files(folder: tuple[FileProvider, Path, Path]) -> None:
    provider, root, _ = folder
    (root / ".syncd-tmp-0123456789abcdef").write_bytes(b"half")  # the names syncd gives them
    (root / ".syncd-tmp-notes").write_bytes(b"a user's file, whatever its name")
    put(provider, "real.txt", b"whole")

    assert set(listing(provider)) == {"real.txt", ".syncd-tmp-notes"}


def test_s3_provider_type(s3_bucket: Bucket) -> None:
    provider = open_provider(s3_bucket.url(), {"endpoint_url": s3_bucket.endpoint_url})
    assert isinstance(provider, S3Provider)
    assert isinstance(provider, Provider)
    provider.close()


@pytest.mark.parametrize(
    "stated",
    [
        "2026-11-25T21:20:31.123Z",  # a listing's LastModified
        "2026-11-25T21:20:31Z",
        "2026-11-25T21:20:31+02:00",
        "Wed, 25 Nov 2026 21:20:31 GMT",  # a HEAD's Last-Modified header
        "1700000000",
        "2026-11-25T21:20:31",  # no zone: botocore's own rule decides
    ],
)
def test_s3_timestamps_mean_what_botocore_would_read(stated: str) -> None:
    from botocore.utils import parse_timestamp

    ours, botocores = _timestamp(stated), parse_timestamp(stated)
    assert (ours.tzinfo is None) == (botocores.tzinfo is None)
    assert ours.timestamp() == botocores.timestamp()


def test_s3_listing_reads_last_modified_through_the_fast_parser(s3_bucket: Bucket) -> None:
    provider = open_provider(s3_bucket.url(), {"endpoint_url": s3_bucket.endpoint_url})
    try:
        put(provider, "a.txt", b"a")
        (listed,) = provider.list()
        headed = provider.stat("a.txt")
    finally:
        provider.close()
    assert abs(listed.modified - headed.modified) < 1  # the listing adds milliseconds
    assert listed.meta_version == headed.meta_version


def test_bad_options_name_the_key_but_not_the_value() -> None:
    with pytest.raises(InvalidRequest, match=r"options\.access_key_id") as caught:
        open_provider("s3://bucket/", {"access_key_id": 12345})
    assert "12345" not in str(caught.value)
    with pytest.raises(InvalidRequest, match=r"options\.nope"):
        open_provider("file:///tmp", {"nope": 1})


def test_folder_remote_clears_upload_temp_files_left_by_a_dead_writer(tmp_path: Path) -> None:
    """An upload temp file no live writer holds (its syncd was killed) goes at the next
    listing, whatever its age: it was kept for an hour by its ctime, so every clean run right
    after a kill -9 left it. One a writer holds (its flock) stays, however old; a user's file
    of another name under the prefix is an object."""
    root = tmp_path / "remote"
    (root / "sub").mkdir(parents=True)
    abandoned = root / "sub" / ".syncd-tmp-deadbeefdeadbeef"
    abandoned.write_bytes(b"half an upload")
    also = root / ".syncd-tmp-0123456789abcdef"
    also.write_bytes(b"another one, fresh")
    users = root / "sub" / ".syncd-tmp-old-notes"  # not a name syncd gives: a user's file
    users.write_bytes(b"kept")
    live = root / ".syncd-tmp-00000000feedface"
    live.write_bytes(b"being written right now")
    os.utime(live, (1, 1))
    provider = open_provider(f"file://{root}", {})
    with live.open("ab") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # as a syncd writing it holds it
        assert [info.key for info in provider.list()] == ["sub/.syncd-tmp-old-notes"]
        assert live.read_bytes() == b"being written right now"
    assert not abandoned.exists() and not also.exists()
    assert users.read_bytes() == b"kept"
    assert [info.key for info in provider.list()] == ["sub/.syncd-tmp-old-notes"]
    assert not live.exists()  # its writer gone


def test_on_a_network_filesystem_only_an_hour_old_temp_counts_as_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS mounted with local locks, FUSE, SMB without byte-range locks: another machine's
    writer holds a flock this one does not see, so an unheld lock proves nothing there. A
    fresh temp stays (the hour-old rule); on a local filesystem it would go."""
    import syncd.providers.local as folder_remote

    root = tmp_path / "remote"
    root.mkdir()
    temp = root / ".syncd-tmp-0123456789abcdef"
    temp.write_bytes(b"another machine's upload, in flight")
    monkeypatch.setattr(folder_remote, "local_filesystem_reason", lambda _root: "nfs4 at /srv")
    provider = open_provider(f"file://{root}", {})
    assert list(provider.list()) == []
    assert temp.read_bytes() == b"another machine's upload, in flight"
    monkeypatch.undo()
    assert list(provider.list()) == []
    assert not temp.exists()


def test_folder_remote_listing_keeps_the_temp_file_of_an_upload_in_flight(
    tmp_path: Path,
) -> None:
    """A listing (of this syncd or of another sharing the folder) while an upload writes its
    temp file leaves the temp file alone: the upload places its whole file."""
    root = tmp_path / "remote"
    root.mkdir()
    writer = open_provider(f"file://{root}", {})
    other = open_provider(f"file://{root}", {})
    seen: list[list[str]] = []

    class Body(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            if chunk:  # mid-upload: the temp file holds part of it
                assert listing(other) == {}
                seen.append(sorted(p.name for p in (root / "sub").iterdir()))
            return chunk

    data = os.urandom(3 * 1024 * 1024)
    writer.upload(
        UploadRequest(key="sub/big.bin", body=Body(data), size=len(data), mtime_ns=MTIME_NS)
    )
    assert (root / "sub" / "big.bin").read_bytes() == data
    assert seen and all(len(names) == 1 and names[0].startswith(".syncd-tmp-") for names in seen)
    assert os.listdir(root / "sub") == ["big.bin"]


def test_folder_remote_create_only_takes_the_place_of_an_empty_folder(tmp_path: Path) -> None:
    """A bucket has no empty folders: an empty folder of the key's name makes way for a new
    file (it was refused as taken, and the engine looked again and again). A folder holding
    anything stays, and the upload is refused."""
    root = tmp_path / "remote"
    (root / "empty").mkdir(parents=True)
    (root / "full").mkdir()
    (root / "full" / "inside.txt").write_text("kept")
    provider = open_provider(f"file://{root}", {})
    placed = put(provider, "empty", b"a file now", if_absent=True)
    assert (root / "empty").read_bytes() == b"a file now" and placed.size == 10
    with pytest.raises(PreconditionFailed):
        put(provider, "full", b"refused", if_absent=True)
    assert (root / "full" / "inside.txt").read_text() == "kept"
    assert not [p for p in root.iterdir() if p.name.startswith(".syncd-tmp-")]


_RACE_ROUNDS = 300


def _replace_racer(root: str, key: str, name: str, start: Any, out: str) -> None:
    """One of two processes: each round, read the object's version and replace it on
    condition that it is still that version; writes the versions it won against to `out`."""
    provider = open_provider(f"file://{root}", {})
    won = []
    start.wait()
    for round_ in range(_RACE_ROUNDS):
        try:
            etag = provider.stat(key).etag
        except Transient:
            continue  # the other racer replaced it while it was hashed: the engine retries
        body = f"{name} {round_}".encode()
        try:
            provider.upload(
                UploadRequest(key, io.BytesIO(body), len(body), MTIME_NS + round_, if_match=etag)
            )
        except PreconditionFailed:
            continue
        won.append(etag)
    Path(out).write_text("\n".join(won))


def test_folder_conditional_replace_holds_between_processes(tmp_path: Path) -> None:
    """Two syncd processes on one folder remote (two machines' syncd on a shared folder): a
    replace on condition of a version wins at most once per version. Had both won against
    the same version, one writer's bytes would be gone with neither of them knowing."""
    import multiprocessing

    root = tmp_path / "remote"
    root.mkdir()
    provider = open_provider(f"file://{root}", {})
    put(provider, "shared.txt", b"base")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    outs = {name: tmp_path / f"won-{name}.txt" for name in ("alice", "bob")}
    racers = [
        context.Process(
            target=_replace_racer, args=(str(root), "shared.txt", name, start, str(out))
        )
        for name, out in outs.items()
    ]
    for racer in racers:
        racer.start()
    start.set()
    for racer in racers:
        racer.join(timeout=120)
        assert racer.exitcode == 0
    alice, bob = (set(out.read_text().split()) for out in outs.values())
    assert alice and bob  # both won some rounds: they did race
    assert not alice & bob  # ...and never against the same version


def test_folder_batch_leaves_flushing_to_one_barrier(
    folder: tuple[FileProvider, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a batch every upload fsyncs its file and its folder; in a batch none does, and
    the barrier flushes the remote's filesystem once (syncfs) for all of them."""
    from syncd.providers import local

    provider, root, _ = folder
    fsyncs: list[int] = []
    syncfs_calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(local, "syncfs", lambda fd: syncfs_calls.append(fd))

    put(provider, "one.txt", b"1")
    assert len(fsyncs) == 2 and not syncfs_calls

    barrier = provider.batch()
    for i in range(5):
        put(provider, f"batch/{i}.txt", b"x")
    assert len(fsyncs) == 2  # none more
    barrier()
    assert len(syncfs_calls) == 1
    provider.unbatch()
    put(provider, "two.txt", b"2")
    assert len(fsyncs) == 4
    assert {p.name for p in (root / "batch").iterdir()} == {f"{i}.txt" for i in range(5)}


def test_folder_batch_with_a_barrier_per_file_flushes_exactly_what_was_uploaded(
    folder: tuple[FileProvider, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon's batch (`each=True`): the barrier fsyncs each file uploaded since it last ran
    and each of their folders, never the whole filesystem (other programs' writes are not
    ours to force out); a file deleted or a folder removed meanwhile is skipped, not an
    error; the next barrier only flushes what came after."""
    from syncd.providers import local

    provider, root, _ = folder
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        real_fsync(fd)
        flushed.append(os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), root))

    monkeypatch.setattr(os, "fsync", recording)
    monkeypatch.setattr(local, "syncfs", lambda fd: pytest.fail("syncfs in a per-file batch"))

    barrier = provider.batch(each=True)
    names = ("a/1.txt", "a/2.txt", "b/c/3.txt", "gone.txt", "dropped/4.txt", "a/piped")
    for name in names:
        put(provider, name, b"x")
    assert flushed == []  # the uploads left it to the barrier
    (root / "gone.txt").unlink()
    (root / "dropped" / "4.txt").unlink()
    (root / "dropped").rmdir()
    (root / "a" / "piped").unlink()
    os.mkfifo(root / "a" / "piped")  # someone else's pipe at the name: nothing to flush
    barrier()
    assert sorted(flushed) == [".", "a", "a/1.txt", "a/2.txt", "b/c", "b/c/3.txt"]

    flushed.clear()
    put(provider, "a/5.txt", b"y")
    barrier()
    assert sorted(flushed) == ["a", "a/5.txt"]
    provider.unbatch()
    flushed.clear()
    put(provider, "after.txt", b"z")
    assert len(flushed) == 2  # flushing per upload again (the temp file, then the folder)


def test_an_upload_still_running_when_its_batch_ends_flushes_itself(
    folder: tuple[FileProvider, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair removed (a reload) ends its batch while an upload runs: that upload, which
    skipped its flushes and would miss the last barrier, flushes its file and its folder
    itself before it returns, so its record never describes a file a power cut could take."""
    provider, root, _ = folder
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        flushed.append(os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), root))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    started, release = threading.Event(), threading.Event()
    real_utime = os.utime

    def slow_utime(*args: Any, **kwargs: Any) -> None:
        """The batch ends here: after the upload skipped its file's flush, before it placed it."""
        started.set()
        release.wait(10)
        real_utime(*args, **kwargs)

    monkeypatch.setattr(os, "utime", slow_utime)
    barrier = provider.batch(each=True)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(put, provider, "late/file.txt", b"late")
        assert started.wait(10)
        provider.unbatch()
        barrier()  # the last barrier: the upload has not placed its file yet
        release.set()
        running.result(timeout=10)
    assert (root / "late" / "file.txt").read_bytes() == b"late"
    assert len(flushed) == 2 and flushed[1] == "late"  # the file (as its temp name), the folder


def test_syncfs_flushes_a_real_filesystem(tmp_path: Path) -> None:
    """The barrier's syscall itself, on this machine's filesystem (no fake)."""
    from syncd.providers.local import syncfs

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs(fd)  # raises OSError if the kernel refused
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        syncfs(10_000)  # not an open descriptor: the error comes through

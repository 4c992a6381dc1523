"""One face for every kind of remote a test syncs against, seen from outside syncd.

Each class writes, reads and lists its remote with the service's own client (boto3,
google-cloud-storage, azure-storage-blob) or the filesystem, never through syncd's providers,
so a test's setup and its assertions do not depend on the code under test. `remote_for(kind)`
builds one on a fresh bucket / container / folder from the emulator fixtures.

Every remote offers: `url`, `options` (the pair's `options:` block), `put(key, data,
mtime_ns=None)` (mtime as the `mtime` metadata syncd reads), `get(key)`, `delete(key)`,
`copy(src, dst)`, `listing()` (key -> (version token, last modified), everything under the
prefix) and `objects()` (key -> bytes, syncd's trash and temp files left out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

#: Every remote kind the end-to-end tests run against.
ALL_KINDS = ("file", "s3", "gcs", "azure")
#: The kinds that are buckets (they can hold keys no folder can, like "../x" or "a//b").
BUCKET_KINDS = ("s3", "gcs", "azure")
#: The prefix a bucket remote syncs under (never the bucket's root: prefix isolation matters).
PREFIX = "team/docs/"

REMOTE_TRASH = ".syncd-trash/"
TEMP_MARK = ".syncd-tmp-"


def mtime_metadata(mtime_ns: int | None) -> dict[str, str]:
    """The `mtime` metadata syncd writes and reads ("SECONDS.NANOS", negative as a whole
    before 1970, as rclone spells it)."""
    if mtime_ns is None:
        return {}
    seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
    return {"mtime": f"{'-' if mtime_ns < 0 else ''}{seconds}.{nanos:09d}"}


def _missing_errors() -> tuple[type[BaseException], ...]:
    """What each SDK raises for a missing object (imported here, once)."""
    from azure.core.exceptions import ResourceNotFoundError
    from botocore.exceptions import ClientError
    from google.api_core.exceptions import NotFound

    return (FileNotFoundError, ClientError, NotFound, ResourceNotFoundError)


_MISSING = _missing_errors()


def _real(key: str) -> bool:
    """Not syncd's own bookkeeping (remote trash, temp files)."""
    return not key.startswith(REMOTE_TRASH) and TEMP_MARK not in key


class Remote(Protocol):
    kind: str
    options: dict[str, Any]

    @property
    def url(self) -> str: ...

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> None: ...
    def get(self, key: str) -> bytes: ...
    def read(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...
    def copy(self, src: str, dst: str) -> None: ...
    def listing(self) -> dict[str, tuple[str, float]]: ...
    def objects(self) -> dict[str, bytes]: ...


class _Objects:
    """`read()` and `objects()` for remotes that list and get."""

    def listing(self) -> dict[str, tuple[str, float]]:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none (also when it goes while read)."""
        try:
            return self.get(key)
        except _MISSING:
            return None

    def objects(self) -> dict[str, bytes]:
        """Every real object's bytes; one deleted between the listing and its read is left out
        (a daemon may be at work while a test looks)."""
        found = {key: self.read(key) for key in sorted(self.listing()) if _real(key)}
        return {key: data for key, data in found.items() if data is not None}


@dataclass
class ObjectReader:
    """`objects()` of one remote, read again only for keys whose listing token changed (an
    ETag, a generation, an inode-mtime-size): a test that looks at the whole remote after
    each of many rounds fetches only what the round changed, not every object again."""

    remote: Remote
    seen: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def objects(self) -> dict[str, bytes]:
        found = {}
        for key, (token, _) in sorted(self.remote.listing().items()):
            if not _real(key):
                continue
            known = self.seen.get(key)
            if known is not None and known[0] == token:
                found[key] = known[1]
                continue
            data = self.remote.read(key)
            if data is not None:
                self.seen[key] = (token, data)
                found[key] = data
        return found


@dataclass
class FolderRemote(_Objects):
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "file"

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        target = self.root / key
        target.unlink()
        # A bucket has no folders: do not leave empty ones behind.
        for parent in target.parents:
            if parent == self.root or any(parent.iterdir()):
                break
            parent.rmdir()

    def copy(self, src: str, dst: str) -> None:
        source = self.root / src
        self.put(dst, source.read_bytes(), source.stat().st_mtime_ns)

    def listing(self) -> dict[str, tuple[str, float]]:
        found = {}
        for path in self.root.rglob("*"):
            if path.is_file():
                info = path.stat()
                token = f"{info.st_ino}-{info.st_mtime_ns}-{info.st_size}"
                found[path.relative_to(self.root).as_posix()] = (token, info.st_mtime)
        return found


@dataclass
class S3Remote(_Objects):
    bucket: Any  # conftest.Bucket
    prefix: str = PREFIX
    kind: str = "s3"

    @property
    def url(self) -> str:
        return str(self.bucket.url(self.prefix))

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.bucket.endpoint_url}

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> None:
        self.bucket.client.put_object(
            Bucket=self.bucket.bucket,
            Key=self.prefix + key,
            Body=data,
            Metadata=mtime_metadata(mtime_ns),
        )

    def get(self, key: str) -> bytes:
        answer = self.bucket.client.get_object(Bucket=self.bucket.bucket, Key=self.prefix + key)
        body: bytes = answer["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self.bucket.client.delete_object(Bucket=self.bucket.bucket, Key=self.prefix + key)

    def copy(self, src: str, dst: str) -> None:
        self.bucket.client.copy_object(
            Bucket=self.bucket.bucket,
            Key=self.prefix + dst,
            CopySource={"Bucket": self.bucket.bucket, "Key": self.prefix + src},
        )

    def listing(self) -> dict[str, tuple[str, float]]:
        pages = self.bucket.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.bucket, Prefix=self.prefix
        )
        return {
            obj["Key"][len(self.prefix) :]: (obj["ETag"], obj["LastModified"].timestamp())
            for page in pages
            for obj in page.get("Contents", [])
        }


@dataclass
class GCSRemote(_Objects):
    bucket: Any  # fixtures_gcs.GCSBucket
    prefix: str = PREFIX
    kind: str = "gcs"

    @property
    def url(self) -> str:
        return str(self.bucket.url(self.prefix))

    @property
    def options(self) -> dict[str, Any]:
        return {}  # the provider finds the emulator through STORAGE_EMULATOR_HOST

    def _bucket(self) -> Any:
        return self.bucket.client.bucket(self.bucket.bucket)

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> None:
        self.bucket.write(self.prefix + key, data, mtime_metadata(mtime_ns) or None)

    def get(self, key: str) -> bytes:
        data: bytes = self._bucket().blob(self.prefix + key).download_as_bytes()
        return data

    def delete(self, key: str) -> None:
        self._bucket().blob(self.prefix + key).delete()

    def copy(self, src: str, dst: str) -> None:
        bucket = self._bucket()
        bucket.copy_blob(bucket.blob(self.prefix + src), bucket, self.prefix + dst)

    def listing(self) -> dict[str, tuple[str, float]]:
        return {
            blob.name[len(self.prefix) :]: (str(blob.generation), blob.updated.timestamp())
            for blob in self.bucket.client.list_blobs(self.bucket.bucket, prefix=self.prefix)
        }


@dataclass
class AzureRemote(_Objects):
    container: Any  # fixtures_azure.AzureContainer
    prefix: str = PREFIX
    kind: str = "azure"

    @property
    def url(self) -> str:
        return str(self.container.url(self.prefix))

    @property
    def options(self) -> dict[str, Any]:
        return {"connection_string": self.container.connection_string}

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> None:
        self.container.write(self.prefix + key, data, mtime_metadata(mtime_ns) or None)

    def get(self, key: str) -> bytes:
        downloader = self.container.client.download_blob(self.prefix + key)
        data: bytes = downloader.readall()
        return data

    def delete(self, key: str) -> None:
        self.container.client.delete_blob(self.prefix + key)

    def copy(self, src: str, dst: str) -> None:
        source = self.container.client.get_blob_client(self.prefix + src)
        target = self.container.client.get_blob_client(self.prefix + dst)
        target.start_copy_from_url(source.url)  # within one account: no SAS needed

    def listing(self) -> dict[str, tuple[str, float]]:
        return {
            props.name[len(self.prefix) :]: (str(props.etag), props.last_modified.timestamp())
            for props in self.container.client.list_blobs(name_starts_with=self.prefix)
        }


def remote_for(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str = PREFIX
) -> Remote:
    """A fresh, empty remote of `kind`, from the session's emulator of that kind."""
    if kind == "file":
        root = tmp_path / "remote"
        root.mkdir()
        return FolderRemote(root)
    if kind == "s3":
        return S3Remote(request.getfixturevalue("s3_bucket"), prefix)
    if kind == "gcs":
        return GCSRemote(request.getfixturevalue("gcs_bucket"), prefix)
    if kind == "azure":
        return AzureRemote(request.getfixturevalue("azure_container"), prefix)
    raise ValueError(f"unknown remote kind {kind!r}")

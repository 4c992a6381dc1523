"""`s3://BUCKET[/PREFIX]` remotes on boto3: AWS S3 and S3-compatible services.

The whole adapter speaks the Provider protocol and the sentinel errors; every botocore
exception is translated at this boundary by `_translate`, and nothing else of boto3 leaks out.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3.session
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    UnseekableStreamError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from syncd.providers.base import (
    MTIME_META,
    SHA256_META,
    Capabilities,
    ObjectInfo,
    UploadRequest,
    format_mtime,
    parse_mtime,
)
from syncd.providers.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ProviderError,
    Throttled,
    Transient,
)
from syncd.providers.options import S3Options
from syncd.providers.url import RemoteURL

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024
PAGE_SIZE = 1000

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412"}
_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "RequestTimeTooSkewed",
    "AllAccessDisabled",
}
_THROTTLED = {"SlowDown", "503", "429", "Throttling", "ThrottlingException", "ServiceUnavailable"}
_SERVER = {"500", "502", "504", "InternalError", "RequestTimeout"}
_TRANSPORT = (
    BotoConnectionError,  # botocore's: EndpointConnectionError, ConnectTimeoutError, …
    HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError, …
    IncompleteReadError,
    ChecksumError,
    UnseekableStreamError,  # a retry found the body half-read; a fresh attempt starts over
    urllib3.exceptions.HTTPError,  # ProtocolError, ReadTimeoutError that escape botocore
)


def should_retry(exc: BaseException) -> bool:
    """True for the failures that promise a later success (for tenacity's `retry=`)."""
    return isinstance(exc, Throttled | Transient)


class BucketMissing(NotFound):
    """NotFound for the bucket itself, so a delete can tell it from an already-deleted key."""


def _translate(
    exc: Exception, where: str, *, bucket: str, on_object: bool, conditional: bool = False
) -> ProviderError:
    """The one place where botocore's exceptions become the sentinel errors.

    `where` names the object (s3://bucket/prefix/key) in the message; `on_object` says a bare
    404 means a missing key rather than a missing bucket; `conditional` marks a conditional
    write, where a missing key (If-Match) or a 409 means the precondition lost. Messages are
    built from the error code and message (service or botocore), never from the request or
    client configuration, so they cannot carry credentials.
    """
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionDenied(f"{where}: no usable AWS credentials found")
    # botocore's own messages name endpoints and parameter names, never credentials.
    if isinstance(exc, _TRANSPORT):
        return Transient(f"{where}: {exc}")
    if not isinstance(exc, ClientError):
        return InvalidRequest(f"{where}: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    meta = exc.response.get("ResponseMetadata", {})
    status = str(meta.get("HTTPStatusCode", ""))
    if code == "NoSuchBucket" or (status == "404" and code in _NOT_FOUND and not on_object):
        return BucketMissing(f"bucket {bucket!r} does not exist")
    if code in _PRECONDITION or status == "412":
        return PreconditionFailed(f"{where}: precondition failed (changed meanwhile)")
    # 409: another conditional write on the same key was in flight, and it won.
    if code == "ConditionalRequestConflict" or (conditional and status == "409"):
        return PreconditionFailed(f"{where}: a concurrent write won")
    if code in _NOT_FOUND or status == "404":
        if conditional:
            return PreconditionFailed(f"{where}: no longer exists")
        return NotFound(f"{where}: not found")
    if code in _DENIED or status == "403":
        detail = "" if code in ("AccessDenied", "403") else f" ({code})"
        return PermissionDenied(f"{where}: access denied{detail}")
    if code in _THROTTLED or status in ("429", "503"):
        headers = meta.get("HTTPHeaders", {})
        return Throttled(
            f"{where}: throttled ({code})", retry_after=_seconds(headers.get("retry-after"))
        )
    if code in _SERVER or status.startswith("5"):
        return Transient(f"{where}: server error ({code})")
    message = str(error.get("Message", "")).strip()
    return InvalidRequest(f"{where}: {code}" + (f": {message}" if message else ""))


def _seconds(value: str | None) -> float | None:
    """Retry-After as delta-seconds; the HTTP-date form is rare enough to ignore."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


#: Storage classes whose objects need a restore before they can be read.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _archived(answer: Any) -> bool:
    """A head/get answer for an archived object that has not been restored (yet)."""
    if answer.get("StorageClass") not in ARCHIVE_CLASSES:
        return False
    return 'ongoing-request="false"' not in str(answer.get("Restore", ""))


def _md5(etag: str) -> str | None:
    """A single-part upload's ETag is the content's MD5; a multipart one ("…-3") is not."""
    return etag if _MD5.match(etag) else None


def _sha256(metadata: dict[str, str]) -> str | None:
    value = metadata.get(SHA256_META, "").strip().lower()
    return value if _SHA256.match(value) else None


def _endpoint_configured(options: S3Options) -> bool:
    """Is S3 reached through a custom endpoint (an option or boto3's own variables)?"""
    return bool(
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def make_client(options: S3Options, workers: int) -> S3Client:
    """One client per provider: botocore clients are thread-safe and pool connections."""
    style = options.addressing_style or ("path" if _endpoint_configured(options) else "auto")
    config = Config(
        max_pool_connections=max(10, workers * 2),
        retries={"mode": "standard", "max_attempts": 3},
        s3={
            "addressing_style": style,
            # Uploads always carry x-amz-checksum-sha256 (signed, and checked by the service),
            # so hashing the payload again for the signature would only read every body twice
            # and require it to be seekable. Without a checksum over plain http the body is
            # unprotected; the engine always sends one, and https protects it anyway.
            "payload_signing_enabled": False,
        },
        connect_timeout=10,
        read_timeout=60,
        # Only the checksums the API requires: we send our own SHA-256 and verify downloads
        # against it ourselves, so botocore's default CRC32 on both ends would be spent twice.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    try:
        session = boto3.session.Session(
            profile_name=options.profile,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            aws_session_token=options.session_token,
            region_name=options.region,
        )
        return session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            verify=None if options.verify_ssl else False,  # None: honour AWS_CA_BUNDLE
            config=config,
        )
    except BotoCoreError as exc:  # ProfileNotFound, InvalidRegionError, …
        raise InvalidRequest(f"cannot set up the S3 client: {exc}") from exc


class S3Provider:
    """A bucket (and optional prefix) as a remote root. Thread-safe."""

    def __init__(self, url: RemoteURL, options: S3Options | None = None, workers: int = 8) -> None:
        self.remote = url
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.options = options or S3Options()
        self.capabilities = Capabilities(
            conditional_writes=True, server_side_copy=True, listing_has_metadata=False
        )
        self._client = make_client(self.options, workers)

    @contextmanager
    def _errors(self, key: str | None, *, conditional: bool = False) -> Iterator[None]:
        """Translate whatever botocore raises inside the block (a sink's own OSError or a
        cancellation passes through untouched)."""
        where = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        try:
            yield
        except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError) as exc:
            raise _translate(
                exc, where, bucket=self.bucket, on_object=key is not None, conditional=conditional
            ) from exc

    def list(self) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        with self._errors(None):
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    if not key:
                        continue  # the prefix's own folder marker
                    etag = obj["ETag"].strip('"')
                    yield ObjectInfo(
                        key=key,
                        size=obj["Size"],
                        etag=etag,
                        modified=obj["LastModified"].timestamp(),
                        md5=_md5(etag),
                        archived=obj.get("StorageClass") in ARCHIVE_CLASSES,
                    )

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        return self._info(key, head)

    def upload(self, request: UploadRequest) -> ObjectInfo:
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        metadata = dict(request.metadata)
        metadata[MTIME_META] = format_mtime(request.mtime_ns)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + request.key,
            "Body": request.body,
            "ContentLength": request.size,
            "Metadata": metadata,
        }
        if request.sha256 is not None:
            try:
                digest = bytes.fromhex(request.sha256)
            except ValueError:
                raise InvalidRequest(f"{request.key}: sha256 is not hex") from None
            metadata[SHA256_META] = request.sha256
            params["ChecksumSHA256"] = base64.b64encode(digest).decode("ascii")
        if self.options.storage_class is not None:
            params["StorageClass"] = self.options.storage_class
        if request.if_absent:
            params["IfNoneMatch"] = "*"
        if request.if_match is not None:
            params["IfMatch"] = f'"{request.if_match}"'
        conditional = request.if_absent or request.if_match is not None
        with self._errors(request.key, conditional=conditional):
            answer = self._client.put_object(**params)
        etag = answer["ETag"].strip('"')
        return ObjectInfo(
            key=request.key,
            size=request.size,
            etag=etag,
            modified=time.time(),
            mtime_ns=request.mtime_ns,
            sha256=request.sha256,
            md5=_md5(etag),
            has_metadata=True,
            archived=self.options.storage_class in ARCHIVE_CLASSES,
        )

    def download(self, key: str, sink: BinaryIO, if_match: str | None = None) -> ObjectInfo:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if if_match is not None:
            params["IfMatch"] = f'"{if_match}"'
        with self._errors(key):
            answer = self._client.get_object(**params)
            body = answer["Body"]
            try:
                for chunk in body.iter_chunks(CHUNK):
                    sink.write(chunk)
            finally:
                body.close()
        return self._info(key, answer)

    def delete(self, key: str, if_match: str | None = None) -> None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if if_match is not None:
            params["IfMatch"] = f'"{if_match}"'
        try:
            with self._errors(key):
                self._client.delete_object(**params)
        except BucketMissing:
            raise
        except NotFound:
            pass  # already gone: what a delete wants (S3 answers 404 to a conditional one)

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + dst_key,
            "CopySource": {"Bucket": self.bucket, "Key": self.prefix + src_key},
            "MetadataDirective": "COPY",
            "IfNoneMatch": "*",
        }
        if if_match is not None:
            params["CopySourceIfMatch"] = f'"{if_match}"'
        if self.options.storage_class is not None:
            params["StorageClass"] = self.options.storage_class
        # S3 honours IfNoneMatch and CopySourceIfMatch on CopyObject, but not every S3
        # implementation does (moto ignores both): look first, so the promises hold everywhere.
        if if_match is not None and self.stat(src_key).etag != if_match:
            raise PreconditionFailed(f"{self.url}{src_key}: changed since it was listed")
        try:
            self.stat(dst_key)
        except NotFound:
            pass
        else:
            raise PreconditionFailed(f"{self.url}{dst_key}: already exists")
        with self._errors(src_key, conditional=True):
            self._client.copy_object(**params)
        return self.stat(dst_key)

    def check(self) -> None:
        with self._errors(None):
            self._client.head_bucket(Bucket=self.bucket)

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _info(key: str, answer: Any) -> ObjectInfo:
        """ObjectInfo from a head_object / get_object answer (same field names)."""
        etag = str(answer["ETag"]).strip('"')
        metadata: dict[str, str] = answer.get("Metadata", {})
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            etag=etag,
            modified=answer["LastModified"].timestamp(),
            mtime_ns=parse_mtime(metadata.get(MTIME_META)),
            sha256=_sha256(metadata),
            md5=_md5(etag),
            has_metadata=True,
            archived=_archived(answer),
        )

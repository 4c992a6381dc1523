"""`s3://BUCKET[/PREFIX]` remotes on boto3: AWS S3 and S3-compatible services.

The whole adapter speaks the Provider protocol and the sentinel errors; every botocore
exception is translated at this boundary by `_translate`, and nothing else of boto3 leaks out.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import io
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3.session
import botocore.session
import structlog
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
    ProfileNotFound,
    UnseekableStreamError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.utils import parse_timestamp

from syncd.providers.base import (
    MTIME_META,
    ORIGIN_META,
    SHA256_META,
    Capabilities,
    ObjectInfo,
    PartInfo,
    PartLimits,
    UploadRequest,
    format_mtime,
    holds_copy_of,
    parse_mtime,
    same_digest,
)
from syncd.providers.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ProviderError,
    SourceChanged,
    Throttled,
    Transient,
)
from syncd.providers.options import URL_SHAPE, S3Options, is_endpoint_url
from syncd.providers.url import RemoteURL

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024
PAGE_SIZE = 1000
MiB = 1024 * 1024

#: S3's multipart limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000.
#: Each part is checked by its CRC32C (x-amz-checksum-crc32c), which S3 verifies on arrival
#: (BadDigest): it catches what a wire or a disk does to bytes, costs ~0.05 s per GiB where
#: SHA-256 costs 0.6 and MD5 1.4, and the service computes it as cheaply when it builds the
#: object's composite checksum. The object's identity stays the whole file's SHA-256 (its
#: metadata), checked again on every download.
PART_LIMITS = PartLimits(
    min_part=5 * MiB, max_part=5 * 1024 * MiB, max_parts=10_000, digest="crc32c"
)
#: The per-part checksum every multipart upload is created with (and its parts must carry).
PART_CHECKSUM = "CRC32C"
#: The largest object CopyObject takes in one request: `copy` copies a larger one in parts,
#: and `set_mtime` leaves it be.
MAX_COPY_SIZE = 5 * 1024 * MiB
#: The part size of a copy in parts, grown for an object that would need more parts than S3
#: takes. Each part is one UploadPartCopy, done inside S3: large parts mean few requests.
COPY_PART_SIZE = 512 * MiB
#: What a copy with MetadataDirective=REPLACE drops unless it is said again (head_object and
#: copy_object name them alike); the storage class and the encryption are said separately.
_CONTENT_HEADERS = (
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "WebsiteRedirectLocation",
)

log = structlog.get_logger("syncd.providers.s3")

#: How far the `Initiated` time S3 states for an upload may stand off the moments we measure
#: around the request (it is rounded, and stamped somewhere between sending and answering).
INITIATED_SLACK = 1.0
#: How long after a create whose answer was lost the next create of that key still cleans
#: up after it (`_create_upload`): the retry policy's usual span.
UNANSWERED_WINDOW_S = 300.0
#: An unfinished upload with no part older than this is no writer's in flight.
ORPHAN_AGE_S = 24 * 3600.0

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")

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
#: CreateBucket's answers for a bucket that exists already (made meanwhile by another writer,
#: or by another account: a second look tells which).
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
#: The region whose buckets are created without a LocationConstraint (S3 refuses one there).
_DEFAULT_REGION = "us-east-1"
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
    # Before the conditional rules: a gone upload is gone, whatever conditions its commit had.
    if code == "NoSuchUpload":
        return NotFound(f"{where}: the multipart upload no longer exists")
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


def _meta_version(last_modified: datetime | None) -> str | None:
    """S3's ObjectInfo.meta_version: LastModified, which every write moves (a copy onto itself
    too, which keeps the ETag), in the whole seconds a HEAD states it (a listing may add
    milliseconds)."""
    if last_modified is None:
        return None
    return str(int(last_modified.timestamp()))


def _archived(answer: Any) -> bool:
    """A head/get answer for an archived object that has not been restored (yet)."""
    if answer.get("StorageClass") not in ARCHIVE_CLASSES:
        return False
    return 'ongoing-request="false"' not in str(answer.get("Restore", ""))


def _md5(etag: str, answer: Any = None) -> str | None:
    """A single-part upload's ETag is the content's MD5; a multipart one ("…-3") is not, and
    neither is the ETag of an object encrypted with SSE-KMS or a customer key (which a
    head / get `answer` states; a listing does not)."""
    if answer is not None and (
        str(answer.get("ServerSideEncryption", "")).startswith("aws:kms")
        or answer.get("SSECustomerAlgorithm")
    ):
        return None
    return etag if _MD5.match(etag) else None


def _sha256(metadata: dict[str, str]) -> str | None:
    value = metadata.get(SHA256_META, "").strip().lower()
    return value if _SHA256.match(value) else None


def _b64_of_hex(value: str, what: str, key: str) -> str:
    """A hex digest as the base64 the checksum headers carry; InvalidRequest if not hex."""
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        raise InvalidRequest(f"{key}: {what} is not hex") from None
    return base64.b64encode(digest).decode("ascii")


def _part_token(etag: str, checksum: str | None) -> str:
    """A part's PartInfo.token: what CompleteMultipartUpload names it by, its ETag and (for an
    upload created with PART_CHECKSUM) its base64 checksum, space-separated."""
    return f"{etag} {checksum}" if checksum else etag


def _completed_part(part: PartInfo) -> dict[str, Any]:
    """A part as CompleteMultipartUpload lists it (a token without a checksum is an ETag: a
    service that does not report the parts' checksums in ListParts does not want them)."""
    etag, _, checksum = part.token.partition(" ")
    named: dict[str, Any] = {"PartNumber": part.number, "ETag": f'"{etag}"'}
    if checksum:
        named["ChecksumCRC32C"] = checksum
    return named


def _content_range(answer: Any) -> tuple[int, int]:
    """(first byte, whole object's size) of a ranged GET. A server that ignored the Range
    answers the whole object without a Content-Range: that is first byte 0 of all of it."""
    value = answer.get("ContentRange")
    if not value:
        return 0, int(answer["ContentLength"])
    found = _CONTENT_RANGE.match(str(value).strip())
    if found is None:
        raise InvalidRequest(f"unexpected Content-Range {value!r}")
    return int(found[1]), int(found[3])


class _PartBody(io.RawIOBase):
    """Exactly `size` bytes of `inner` from where it stands, never a byte past them (the engine
    may hand over one open file for all the parts, or a pipe).

    botocore streams a file-like body as it sends, without needing to seek: payload signing is
    off and no checksum is computed unless required, and the length is given. A retry rewinds
    with seek(0), which works when `inner` can seek; otherwise it fails as UnseekableStreamError
    (Transient), and the engine sends the part again.
    """

    def __init__(self, inner: BinaryIO, size: int, where: str) -> None:
        super().__init__()
        self._inner = inner
        self._size = size
        self._left = size
        self._where = where
        self._start: int | None = None
        #: What `inner` raised, or the early end it met: botocore wraps what a body raises
        #: (a cancellation, a read error) into a retryable client error, so look here.
        self.failure: BaseException | None = None
        try:
            if inner.seekable():
                self._start = inner.tell()
        except (OSError, ValueError):
            self._start = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._start is not None

    def read(self, size: int | None = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        if want == 0:
            return b""
        try:
            chunk = self._inner.read(want)
            if not chunk:
                raise InvalidRequest(
                    f"{self._where}: body ended {self._left} bytes before the part's end"
                )
        except BaseException as exc:
            self.failure = exc
            raise
        self._left -= len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def tell(self) -> int:
        if self._start is None:
            raise io.UnsupportedOperation("the part's body cannot seek")
        return self._size - self._left

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._start is None:
            raise io.UnsupportedOperation("the part's body cannot seek")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._size - self._left, io.SEEK_END: self._size}
        if whence not in base:
            raise ValueError(f"invalid whence {whence}")
        target = base[whence] + offset
        if not 0 <= target <= self._size:
            raise ValueError(f"seek to {target} outside a part of {self._size} bytes")
        self._inner.seek(self._start + target)
        self._left = self._size - target
        return target


def _endpoint_configured(options: S3Options) -> bool:
    """Is S3 reached through a custom endpoint (an option or boto3's own variables)?"""
    return bool(
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


#: The variables boto3 takes an endpoint from, the service's own first.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _check_endpoint_variable(options: S3Options) -> None:
    """The endpoint variable boto3 would use must be a URL: a config error that names it,
    where botocore raises a bare ValueError (the option is checked with the config)."""
    ignored = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    if options.endpoint_url or ignored:
        return
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name)
        if value:
            if not is_endpoint_url(value):
                raise InvalidRequest(f"{name}: {URL_SHAPE}")
            return


def _same_content(source: ObjectInfo, copied: ObjectInfo) -> bool:
    """Does `copied` hold the bytes of `source` (both as a head states them)? By the SHA-256
    both state, else by the MD5 both state (a copy of an object stored whole gets the same).
    Where either states none it cannot tell, and takes them as the same: a multipart source
    (its copy gets another ETag), and an object under SSE-KMS or SSE-C, whose ETag is no MD5
    and differs on every write, a copy's too (taken for a change, it failed every trash copy,
    move and conflict copy of another tool's object in such a bucket)."""
    if source.size != copied.size:
        return False
    return same_digest(source, copied) is not False


def _kept_headers(head: Any) -> dict[str, Any]:
    """What a write that is told everything (a copy with MetadataDirective=REPLACE, a copy in
    parts) must say again to keep it, from the object's head: its content headers and its
    encryption (head_object and the write requests name them alike)."""
    fields: dict[str, Any] = dict(head)
    params = {name: fields[name] for name in _CONTENT_HEADERS if fields.get(name)}
    if fields.get("ServerSideEncryption"):
        params["ServerSideEncryption"] = fields["ServerSideEncryption"]
        if fields.get("SSEKMSKeyId"):
            params["SSEKMSKeyId"] = fields["SSEKMSKeyId"]
    return params


def _copy_parts(size: int) -> list[PartInfo]:
    """The parts of a copy in parts of `size` bytes: COPY_PART_SIZE each, or as much larger
    as S3's limit of parts asks."""
    step = max(COPY_PART_SIZE, -(-size // PART_LIMITS.max_parts))
    return [
        PartInfo(number, offset, min(step, size - offset))
        for number, offset in enumerate(range(0, size, step), start=1)
    ]


def _timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, for the ISO 8601 dates of a listing in 0.1 us.

    botocore parses every timestamp with dateutil, ~35 us each: one per key listed, 70 ms of
    CPU in a no-op pass over 2,000 keys, and in every poll of the bucket. S3's XML states
    them as ISO 8601 with a zone (`2026-11-25T21:20:31.000Z`), which `datetime.fromisoformat`
    reads exactly; anything else (the RFC 822 dates of headers, an epoch, a date without a
    zone) goes to botocore's own parser."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parse_timestamp(value)


def make_client(options: S3Options, workers: int) -> S3Client:
    """One client per provider: botocore clients are thread-safe and pool connections."""
    _check_endpoint_variable(options)
    style = options.addressing_style or ("path" if _endpoint_configured(options) else "auto")
    config = Config(
        max_pool_connections=max(10, workers * 2),
        # One attempt per call: the engine retries (tenacity, full jitter, Retry-After
        # honoured) on the sentinels, so botocore's own retries would only stack under them
        # and ignore the service's Retry-After.
        retries={"mode": "standard", "total_max_attempts": 1},
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
    # AWS_REGION is the variable the other AWS SDKs and the CLI v2 read; botocore reads only
    # AWS_DEFAULT_REGION (and the profile's region): without this, a bucket made with
    # create_bucket went to us-east-1 and requests were signed for it.
    region = options.region or (
        None if os.environ.get("AWS_DEFAULT_REGION") else os.environ.get("AWS_REGION") or None
    )
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    try:
        session = boto3.session.Session(
            botocore_session=core,
            profile_name=options.profile,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            aws_session_token=options.session_token,
            region_name=region,
        )
        return session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=region,
            verify=None if options.verify_ssl else False,  # None: honour AWS_CA_BUNDLE
            config=config,
        )
    except ProfileNotFound as exc:
        # Named as a config error names it: the option (the engine adds `pairs[N].`), or the
        # variable that asked for the profile.
        where = "options.profile" if options.profile else "the AWS_PROFILE variable"
        raise InvalidRequest(
            f"{where}: no profile {exc.kwargs.get('profile')!r} in the AWS config files "
            "(~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
        ) from exc
    except BotoCoreError as exc:  # InvalidRegionError, …
        raise InvalidRequest(f"cannot set up the S3 client: {exc}") from exc
    except ValueError as exc:  # "Invalid endpoint: …" (a profile's endpoint_url, say)
        # One line; a password in the URL is masked by ProviderError.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidRequest(f"cannot set up the S3 client: {first}") from None


class S3Provider:
    """A bucket (and optional prefix) as a remote root. Thread-safe."""

    def __init__(self, url: RemoteURL, options: S3Options | None = None, workers: int = 8) -> None:
        self.remote = url
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.options = options or S3Options()
        self.capabilities = Capabilities(
            conditional_writes=True,
            server_side_copy=True,
            listing_has_metadata=False,
            multipart=True,
        )
        self._client = make_client(self.options, workers)
        #: Set once `ensure_root` has made sure the bucket exists (create_bucket only).
        self._root_ready = False
        self._root_lock = threading.Lock()
        #: key -> when (time.monotonic) the first CreateMultipartUpload for it went out whose
        #: answer never came: it may have made an upload we hold no id of (see `_create_upload`).
        self._unanswered: dict[str, float] = {}
        self._unanswered_lock = threading.Lock()

    @contextmanager
    def _errors(self, key: str | None, *, conditional: bool = False) -> Iterator[None]:
        """Translate whatever botocore raises inside the block (a sink's own OSError or a
        cancellation passes through untouched)."""
        where = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        try:
            yield
        except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError) as exc:
            body_error = exc.kwargs.get("error") if isinstance(exc, HTTPClientError) else None
            if isinstance(body_error, Cancelled | SourceChanged):
                # Our own body raised it while botocore sent it: syncd is stopping, or the
                # file shrank, neither a network fault to retry.
                raise body_error from None
            raise _translate(
                exc, where, bucket=self.bucket, on_object=key is not None, conditional=conditional
            ) from exc

    def ensure_root(self) -> None:
        """With `create_bucket`, create the bucket if it is missing (once per provider; the
        first listing and `check` call it). Without it, a missing bucket stays the
        BucketMissing error of whatever call meets it."""
        if self._root_ready or not self.options.create_bucket:
            return
        with self._root_lock:
            if self._root_ready:
                return
            try:
                self._head_bucket()
            except BucketMissing:
                self._create_bucket()
            self._root_ready = True

    def _head_bucket(self) -> None:
        with self._errors(None):
            self._client.head_bucket(Bucket=self.bucket)

    def _create_bucket(self) -> None:
        """CreateBucket in the configured region; a bucket that appeared meanwhile is fine
        when it can be reached (another writer won the race), anything else is the error."""
        region = self.options.region or self._client.meta.region_name or _DEFAULT_REGION
        params: dict[str, Any] = {"Bucket": self.bucket}
        if region != _DEFAULT_REGION:
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**params)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in _BUCKET_EXISTS:
                raise _translate(
                    exc,
                    f"cannot create bucket {self.bucket!r}",
                    bucket=self.bucket,
                    on_object=False,
                ) from exc
            self._head_bucket()  # ours after all, or a clear error (another account's)
        except (BotoCoreError, urllib3.exceptions.HTTPError) as exc:
            raise _translate(
                exc, f"cannot create bucket {self.bucket!r}", bucket=self.bucket, on_object=False
            ) from exc

    def list(self) -> Iterator[ObjectInfo]:
        self.ensure_root()
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
                        meta_version=_meta_version(obj["LastModified"]),
                    )

    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._head(key))

    def _head(self, key: str) -> Any:
        """The object's head_object answer: all its metadata and headers."""
        with self._errors(key):
            return self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)

    def _object_params(self, request: UploadRequest) -> dict[str, Any]:
        """Bucket, Key, Metadata (mtime, sha256) and StorageClass: what a single upload and a
        multipart one both send, so either way the object carries the same metadata."""
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        metadata = dict(request.metadata)
        metadata[MTIME_META] = format_mtime(request.mtime_ns)
        if request.sha256 is not None:
            _b64_of_hex(request.sha256, "sha256", request.key)  # refuse a garbled one early
            metadata[SHA256_META] = request.sha256
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + request.key,
            "Metadata": metadata,
        }
        if self.options.storage_class is not None:
            params["StorageClass"] = self.options.storage_class
        return params

    def _written(self, request: UploadRequest, etag: str) -> ObjectInfo:
        """The info of the object a finished upload (single or multipart) created. S3's
        answer states no LastModified: `meta_version` stays unknown (the engine learns it
        with the next look at the object's metadata)."""
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
            origin=request.metadata.get(ORIGIN_META),
        )

    def upload(self, request: UploadRequest) -> ObjectInfo:
        params = self._object_params(request)
        params["Body"] = request.body
        params["ContentLength"] = request.size
        if request.sha256 is not None:
            params["ChecksumSHA256"] = _b64_of_hex(request.sha256, "sha256", request.key)
        if request.if_absent:
            params["IfNoneMatch"] = "*"
        if request.if_match is not None:
            params["IfMatch"] = f'"{request.if_match}"'
        conditional = request.if_absent or request.if_match is not None
        with self._errors(request.key, conditional=conditional):
            answer = self._client.put_object(**params)
        return self._written(request, answer["ETag"].strip('"'))

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
        # S3 honours IfNoneMatch and CopySourceIfMatch on a copy, but not every S3
        # implementation does (moto ignores both): look first, so the promises hold there
        # too, but for a write landing between the look and the copy (README, "Many
        # writers"): only the server's condition closes that window.
        # The source's head also says whether CopyObject can take it in one request.
        head = self._head(src_key)
        source = self._info(src_key, head)
        if if_match is not None and source.etag != if_match:
            raise PreconditionFailed(f"{self.url}{src_key}: changed since it was listed")
        try:
            found = self.stat(dst_key)
        except NotFound:
            pass
        else:
            if holds_copy_of(source, found) is True:
                return found  # an earlier attempt's copy, whose answer was lost
            raise PreconditionFailed(f"{self.url}{dst_key}: already exists")
        if source.size > MAX_COPY_SIZE:
            return self._copy_in_parts(src_key, dst_key, head, source)
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
        with self._errors(src_key, conditional=True):
            self._client.copy_object(**params)
        copied = self.stat(dst_key)
        if if_match is not None and not _same_content(source, copied):
            # Another write to the source landed between the look and the copy, on a server
            # that ignores CopySourceIfMatch: the copy holds it, not the version asked for
            # (a rename racing another machine's edit moved their bytes under the new name).
            # Undone, on condition of its own version.
            with contextlib.suppress(NotFound, PreconditionFailed):
                self.delete(dst_key, if_match=copied.etag)
            raise PreconditionFailed(f"{self.url}{src_key}: changed while it was copied")
        return copied

    def _copy_in_parts(
        self, src_key: str, dst_key: str, head: Any, source: ObjectInfo
    ) -> ObjectInfo:
        """Copy a source larger than CopyObject takes (without this, its trash copy, a rename
        or a conflict copy failed on every pass) as a multipart upload of UploadPartCopy
        ranges. Every range is taken from the version looked at (CopySourceIfMatch), so the
        parts can never mix two versions; the upload is created with what a copy in parts
        does not carry over by itself (metadata, content headers, storage class, encryption)
        and committed create-only, as CopyObject is. A source changed or gone, or a
        destination that appeared, aborts the upload: nothing of the copy is left."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + dst_key,
            "Metadata": dict(head.get("Metadata", {})),
            "StorageClass": self.options.storage_class or head.get("StorageClass", "STANDARD"),
            **_kept_headers(head),
        }
        upload_id = self._create_upload(dst_key, params)
        try:
            parts = [
                self._copy_part(src_key, dst_key, upload_id, part, source.etag)
                for part in _copy_parts(source.size)
            ]
            self._still_the_source(src_key, source.etag)
            commit: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self.prefix + dst_key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": [_completed_part(p) for p in parts]},
                "IfNoneMatch": "*",
            }
            with self._errors(dst_key, conditional=True):
                self._client.complete_multipart_upload(**commit)
        except BaseException:
            with suppress(ProviderError):  # best effort: the failure is the news
                self._abort(dst_key, upload_id)
            raise
        return self.stat(dst_key)

    def _copy_part(
        self, src_key: str, dst_key: str, upload_id: str, part: PartInfo, etag: str
    ) -> PartInfo:
        """One UploadPartCopy of `part`'s bytes of version `etag`; the part with the token the
        commit names it by. A source changed or gone is PreconditionFailed; the upload itself
        gone (an abort by another hand) is Transient: a new attempt makes a new one."""
        last = part.offset + part.size - 1
        try:
            with self._errors(src_key, conditional=True):
                answer = self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self.prefix + dst_key,
                    UploadId=upload_id,
                    PartNumber=part.number,
                    CopySource={"Bucket": self.bucket, "Key": self.prefix + src_key},
                    CopySourceIfMatch=f'"{etag}"',
                    CopySourceRange=f"bytes={part.offset}-{last}",
                )
        except BucketMissing:
            raise
        except NotFound as exc:
            raise Transient(f"{self.url}{dst_key}: {exc}; the copy starts over") from None
        copied = str(answer.get("CopyPartResult", {}).get("ETag", "")).strip('"')
        return dataclasses.replace(part, token=copied)

    def _still_the_source(self, src_key: str, etag: str) -> None:
        """PreconditionFailed unless the source still is version `etag`: the check that holds
        a copy in parts to that version where the server ignores CopySourceIfMatch (moto).
        A version that stayed was the one every part read, as no other write makes the
        same ETag from other bytes."""
        try:
            current = self.stat(src_key).etag
        except NotFound:
            current = None
        if current != etag:
            raise PreconditionFailed(f"{self.url}{src_key}: changed while it was copied")

    def set_mtime(self, key: str, mtime_ns: int, if_match: str) -> ObjectInfo:
        """S3 cannot edit metadata in place: the object is copied onto itself with the new
        `mtime` (MetadataDirective=REPLACE, as rclone's SetModTime does), on condition of its
        version. Such a copy keeps only what it is told, so the head of that very version
        supplies the rest: the other metadata (sha256), the content headers, the storage class
        and the encryption. Tags are copied by S3 itself; an object ACL is not (as for rclone)."""
        where = f"s3://{self.bucket}/{self.prefix}{key}"
        quoted = f'"{if_match}"'
        with self._errors(key, conditional=True):
            head = self._client.head_object(
                Bucket=self.bucket, Key=self.prefix + key, IfMatch=quoted
            )
        current = self._info(key, head)
        if current.etag != if_match:  # a server that ignores If-Match
            raise PreconditionFailed(f"{where}: changed since it was listed")
        if current.size > MAX_COPY_SIZE:
            # Only a multipart copy could restamp it: a rewrite of every part, not worth an mtime.
            log.debug("mtime left as it is: too large to copy in one request", key=where)
            return current
        metadata = dict(head.get("Metadata", {}))
        metadata[MTIME_META] = format_mtime(mtime_ns)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "CopySource": {"Bucket": self.bucket, "Key": self.prefix + key},
            # S3 holds the copy to this version; moto ignores it, hence the If-Match head above.
            "CopySourceIfMatch": quoted,
            "MetadataDirective": "REPLACE",
            "Metadata": metadata,
            "StorageClass": head.get("StorageClass", "STANDARD"),
            **_kept_headers(head),
        }
        with self._errors(key, conditional=True):
            answer = self._client.copy_object(**params)
        result = answer.get("CopyObjectResult", {})
        etag = str(result.get("ETag", "")).strip('"')
        modified = result.get("LastModified")
        # The copy's own answer, not a fresh head: that could already describe a later version,
        # which the engine would then take for the one it stamped.
        return dataclasses.replace(
            current,
            etag=etag,
            md5=_md5(etag),
            mtime_ns=mtime_ns,
            modified=modified.timestamp() if modified is not None else time.time(),
            meta_version=_meta_version(modified),
        )

    # -- multipart (MultipartProvider) ---------------------------------------------------------

    def part_limits(self) -> PartLimits:
        return PART_LIMITS

    def start_multipart(self, request: UploadRequest) -> str:
        params = self._object_params(request)
        # Declared at the start, S3 requires (and checks) the checksum of every part, and the
        # commit names each part by ETag and checksum (see `_part_token`).
        params["ChecksumAlgorithm"] = PART_CHECKSUM
        return self._create_upload(request.key, params)

    def _create_upload(self, key: str, params: dict[str, Any]) -> str:
        """CreateMultipartUpload; its UploadId.

        A request whose answer is lost (the connection dropped, a timeout, a 5xx) may still
        have made an upload, whose id we never learn: the engine records and aborts only the
        ids it got, so the retry's upload completed and that one stayed listed forever (issue
        5: no multipart upload is left behind after a successful sync). Such a key is noted,
        and the next create for it that is answered drops those uploads
        (`_drop_unanswered`)."""
        sent = time.monotonic()
        try:
            with self._errors(key):
                upload_id = str(self._client.create_multipart_upload(**params)["UploadId"])
        except Transient:  # not Throttled: a SlowDown or a 429 made nothing
            with self._unanswered_lock:
                self._unanswered.setdefault(key, sent)
            raise
        with self._unanswered_lock:
            since = self._unanswered.pop(key, None)
        # Only a create that follows within a retry's time: a window of hours (the key
        # uploaded again much later) could take in another writer's upload begun meanwhile.
        if since is not None and time.monotonic() - since <= UNANSWERED_WINDOW_S:
            try:
                self._drop_unanswered(key, upload_id, time.monotonic() - since)
            except ProviderError:  # best effort: the upload goes on, the next create retries
                with self._unanswered_lock:
                    self._unanswered.setdefault(key, since)
        return upload_id

    def _drop_unanswered(self, key: str, ours: str, span: float) -> None:
        """Abort the uploads of `key` that our unanswered creates may have made, `ours` (the
        one answered) aside. ListMultipartUploads states no metadata, so no mark of ours can
        be seen there: an upload is taken for one of them only when all of these hold, which
        keeps another writer's upload of the same key safe:

        - its key is exactly `key` (the listing is by prefix);
        - S3 says it was initiated within the `span` seconds our attempts took, measured back
          from `ours`'s own Initiated (the service's clock on both sides: no skew), give or
          take INITIATED_SLACK;
        - it holds no part: an unanswered create's upload never got one, while a writer's
          upload in flight gets its first part at once.

        One whose request reached S3 only after the retry's (a very slow request that timed
        out here) is not seen: it lasts until the bucket's lifecycle rule drops it. A server
        that states no real Initiated (moto gives every upload the same one) leaves the part
        rule alone to decide."""
        uploads = self._uploads_of(key)
        mine = uploads.get(ours)
        if mine is None:
            return  # not listed (yet): nothing to measure the window from
        earliest = mine.timestamp() - span - INITIATED_SLACK
        latest = mine.timestamp() + INITIATED_SLACK
        for upload_id, initiated in uploads.items():
            if upload_id == ours or not earliest <= initiated.timestamp() <= latest:
                continue
            if self._holds_parts(key, upload_id):
                continue
            self._abort(key, upload_id)
            log.info("dropped an upload whose creation went unanswered", key=key)

    def drop_orphan_uploads(self, key: str, since: float) -> int:
        """See KeepsOrphanUploads. An upload of the key begun more than a day before `since`
        with no part is no one's in flight either (a writer's gets its first part at once),
        and a server that states no real Initiated (moto: one fixed date) reads so; another
        writer's upload begun after `since` that has no part yet when it is looked at would go
        too (it fails and starts over: nothing is lost), as for `_drop_unanswered`."""
        dropped = 0
        for upload_id, initiated in self._uploads_of(key).items():
            started = initiated.timestamp()
            if since - ORPHAN_AGE_S <= started < since - INITIATED_SLACK:
                continue  # begun shortly before our record: not ours
            if self._holds_parts(key, upload_id):
                continue
            self._abort(key, upload_id)
            dropped += 1
        if dropped:
            log.info("dropped uploads a killed run left unrecorded", key=key, uploads=dropped)
        return dropped

    def _uploads_of(self, key: str) -> dict[str, datetime]:
        """Upload id -> Initiated, of the unfinished uploads of exactly `key`."""
        full = self.prefix + key
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        found: dict[str, datetime] = {}
        with self._errors(key):
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload.get("Key") == full and upload.get("Initiated") is not None:
                        found[str(upload["UploadId"])] = upload["Initiated"]
        return found

    def _holds_parts(self, key: str, upload_id: str) -> bool:
        """Does the upload hold a part (True as well when it cannot be told)?"""
        try:
            with self._errors(key):
                answer = self._client.list_parts(
                    Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id, MaxParts=1
                )
        except NotFound:
            return True  # gone meanwhile (completed, aborted): nothing to abort
        return bool(answer.get("Parts"))

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        # Streamed, not read into memory: botocore sends a non-seekable body as it is when the
        # length is known and neither payload signing nor a computed checksum needs the bytes
        # first (see make_client). `digest` is the part's CRC32C (PART_LIMITS.digest): with
        # it S3 refuses a part that arrived damaged (BadDigest).
        checksum = _b64_of_hex(digest, "part crc32c", request.key)
        reader = _PartBody(body, part.size, f"{self.url}{request.key} part {part.number}")
        try:
            with self._errors(request.key):
                answer = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=self.prefix + request.key,
                    UploadId=upload_id,
                    PartNumber=part.number,
                    Body=cast(BinaryIO, reader),
                    ContentLength=part.size,
                    ChecksumCRC32C=checksum,
                )
        except ProviderError:
            if reader.failure is not None:  # the body's own fault, whatever botocore made of it
                raise reader.failure from None
            raise
        etag = answer["ETag"].strip('"')
        return dataclasses.replace(part, token=_part_token(etag, checksum), md5=_md5(etag))

    def list_parts(self, request: UploadRequest, upload_id: str) -> builtins.list[PartInfo]:
        """Offsets are not stored by S3: they add up the sizes in number order. Where a part is
        missing (parts go up in parallel, a crash leaves holes) it is taken to be as large as
        the largest held part, as every part but the last is planned to be.

        An upload created with another part checksum than PART_CHECKSUM (an older syncd's
        SHA-256) is InvalidRequest: its parts could not be named at the commit, nor could new
        ones be added to it; the engine aborts it and starts over."""
        paginator = self._client.get_paginator("list_parts")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Key=self.prefix + request.key,
            UploadId=upload_id,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        held: builtins.list[tuple[int, int, str, str | None]] = []
        with self._errors(request.key):
            for page in pages:
                algorithm = page.get("ChecksumAlgorithm")
                if algorithm and algorithm != PART_CHECKSUM:
                    raise InvalidRequest(
                        f"{self.url}{request.key}: upload {upload_id} was created with"
                        f" {algorithm} part checksums, not {PART_CHECKSUM}"
                    )
                held.extend(
                    (p["PartNumber"], p["Size"], p["ETag"].strip('"'), p.get("ChecksumCRC32C"))
                    for p in page.get("Parts", [])
                )
        held.sort()
        planned = max((size for _, size, _, _ in held), default=0)
        parts: builtins.list[PartInfo] = []
        offset, expected = 0, 1
        for number, size, etag, checksum in held:
            offset += (number - expected) * planned
            token = _part_token(etag, checksum)
            parts.append(PartInfo(number, offset, size, token=token, md5=_md5(etag)))
            offset += size
            expected = number + 1
        return parts

    def complete_multipart(
        self, request: UploadRequest, upload_id: str, parts: builtins.list[PartInfo]
    ) -> ObjectInfo:
        """A failed condition aborts the upload as well: S3 would keep its parts (and bill
        them) for a retry that the engine never makes, it decides again and starts over."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + request.key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": [_completed_part(p) for p in parts]},
        }
        if request.if_absent:
            params["IfNoneMatch"] = "*"
        if request.if_match is not None:
            params["IfMatch"] = f'"{request.if_match}"'
        conditional = request.if_absent or request.if_match is not None
        try:
            # S3 checks IfMatch on the commit, but not every implementation does (moto
            # ignores it there): look first, so the promise holds there too, but for a write
            # landing between the look and the commit (README, "Many writers").
            if request.if_match is not None:
                try:
                    current = self.stat(request.key).etag
                except NotFound:
                    current = None
                if current != request.if_match:
                    raise PreconditionFailed(f"{self.url}{request.key}: changed meanwhile")
            with self._errors(request.key, conditional=conditional):
                answer = self._client.complete_multipart_upload(**params)
        except PreconditionFailed:
            with suppress(ProviderError):  # best effort: the lost condition is the news
                self.abort_multipart(request, upload_id)
            raise
        return self._written(request, answer["ETag"].strip('"'))

    def abort_multipart(self, request: UploadRequest, upload_id: str) -> None:
        self._abort(request.key, upload_id)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            with self._errors(key):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id
                )
        except BucketMissing:
            raise
        except NotFound:
            pass  # aborted, expired or completed already: nothing is left to drop

    def download_range(
        self, key: str, sink: BinaryIO, offset: int, length: int, if_match: str
    ) -> ObjectInfo:
        """A missing key is the version gone too: PreconditionFailed, not NotFound."""
        if offset < 0 or length < 0:
            raise InvalidRequest(f"{key}: bad range ({offset}, {length})")
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "IfMatch": f'"{if_match}"',
        }
        if length == 0:  # "bytes=a-(a-1)" is no range at all: only check the version
            with self._errors(key, conditional=True):
                head = self._client.head_object(**params)
            return self._info(key, head)
        params["Range"] = f"bytes={offset}-{offset + length - 1}"
        with self._errors(key, conditional=True):
            answer = self._client.get_object(**params)
            body = answer["Body"]
            try:
                first, total = _content_range(answer)
                last = first + int(answer["ContentLength"])
                if first > offset or offset + length > last:
                    # S3 cuts a range at the object's end: the caller asked past it.
                    raise InvalidRequest(
                        f"{self.url}{key}: bytes {offset}+{length} are not in"
                        f" {first}-{last - 1} of {total}"
                    )
                # Trimmed only where a server answered more than the range (the whole object).
                skip, left = offset - first, length
                for chunk in body.iter_chunks(CHUNK):
                    kept = chunk
                    if skip or len(chunk) > left:
                        kept = chunk[skip : skip + left]
                        skip = max(0, skip - len(chunk))
                    if kept:
                        sink.write(kept)
                        left -= len(kept)
                    if not left:
                        break
            finally:
                body.close()
        if left:
            raise Transient(f"{self.url}{key}: the range ended {left} bytes early")
        return dataclasses.replace(self._info(key, answer), size=total)

    def list_multipart_uploads(self) -> builtins.list[tuple[str, str]]:
        """(key, upload id) of every unfinished upload under the root, for the engine to drop
        the stale ones (a crashed run's, or one whose state was lost)."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        found: builtins.list[tuple[str, str]] = []
        with self._errors(None):
            for page in pages:
                for upload in page.get("Uploads", []):
                    full = upload.get("Key", "")
                    if full.startswith(self.prefix) and full != self.prefix:
                        found.append((full[len(self.prefix) :], upload.get("UploadId", "")))
        return found

    def check(self) -> None:
        self.ensure_root()
        self.probe()

    def probe(self) -> None:
        """One key listed under the prefix (ListObjectsV2, MaxKeys 1): what a listing needs.
        HeadBucket needs ListBucket on the whole bucket, which credentials scoped to the
        pair's prefix lack: every pass with a local deletion read that as an unreachable
        remote."""
        with self._errors(None):
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

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
            md5=_md5(etag, answer),
            has_metadata=True,
            archived=_archived(answer),
            origin=metadata.get(ORIGIN_META),
            meta_version=_meta_version(answer["LastModified"]),
        )

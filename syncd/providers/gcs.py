"""`gs://BUCKET[/PREFIX]` remotes on google-cloud-storage (the JSON API).

The whole adapter speaks the Provider protocol and the sentinel errors; every exception of
google-cloud-storage, google-auth and requests is translated at this boundary by `_translate`,
and nothing else of the SDK leaks out.

A GCS object's version token is its *generation*: `ObjectInfo.etag` is `str(generation)`, and
every conditional call is made against it (`ifGenerationMatch`, with 0 meaning "must not
exist"). The SDK's own retries are switched off (`retry=None`): the engine retries with
tenacity on the sentinels, so a retry is never stacked on another.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO

import google.auth
import google.auth.exceptions
import requests
import requests.adapters
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.exceptions import InvalidResponse as MediaInvalidResponse
from google.oauth2 import service_account

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
from syncd.providers.options import GCSOptions
from syncd.providers.url import RemoteURL

PAGE_SIZE = 1000
#: Uploads above 8 MiB go resumable, in chunks of this size (a multiple of 256 KiB); each
#: chunk is held in memory once, so this bounds an upload's footprint (the SDK default is
#: 100 MiB per upload).
CHUNK_SIZE = 16 * 1024 * 1024
#: Project used with the emulator (and a custom endpoint without credentials), where the
#: project only names new buckets.
DEFAULT_PROJECT = "syncd"
#: The mtime gsutil / `gcloud storage` keep (whole seconds); written beside `mtime` so those
#: tools (and rclone, which reads it when `mtime` is not RFC 3339) keep the local time too.
GSUTIL_MTIME_META = "goog-reserved-file-mtime"
#: The largest generation GCS hands out fits a signed 64-bit integer.
_MAX_GENERATION = 2**63 - 1
#: Only the fields ObjectInfo needs, so a listing page of 1000 objects stays small.
_LIST_FIELDS = "items(name,size,generation,md5Hash,updated,metadata),nextPageToken"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: 403 reasons that are rate limits, not refusals (older JSON API answers use them).
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_TRANSPORT = (
    requests.ConnectionError,  # refused, reset, DNS; also urllib3's ProtocolError wrapped
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    google.auth.exceptions.TransportError,  # a token refresh that could not reach its server
    DataCorruption,  # a download's checksum did not match: a fresh attempt reads it again
)
_SDK_ERRORS = (
    api_exceptions.GoogleAPIError,
    google.auth.exceptions.GoogleAuthError,
    requests.RequestException,
    MediaInvalidResponse,
    DataCorruption,
)


def should_retry(exc: BaseException) -> bool:
    """True for the failures that promise a later success (for tenacity's `retry=`)."""
    return isinstance(exc, Throttled | Transient)


class BucketMissing(NotFound):
    """NotFound for the bucket itself, so a delete can tell it from an already-deleted key."""


class _Unseekable(OSError):
    """The SDK wanted to rewind a one-way upload body (only after a failed chunk)."""


def _translate(
    exc: BaseException, where: str, *, bucket: str, on_object: bool, conditional: bool = False
) -> ProviderError:
    """The one place where the SDK's exceptions become the sentinel errors.

    `where` names the object (gs://bucket/prefix/key) in the message; `on_object` says a 404
    means a missing object rather than a missing bucket; `conditional` marks a conditional
    call, where a missing object or a 409 means the precondition lost. Messages carry the
    service's own error text, never request headers or credentials.
    """
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return PermissionDenied(f"{where}: no usable Google credentials found")
    if isinstance(exc, google.auth.exceptions.RefreshError):
        if getattr(exc, "retryable", False):
            return Transient(f"{where}: could not refresh the access token")
        return PermissionDenied(f"{where}: credentials were rejected when refreshing the token")
    if isinstance(exc, _TRANSPORT):
        return Transient(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, _Unseekable):
        return Transient(f"{where}: the upload body cannot be rewound; a new attempt starts over")
    if isinstance(exc, MediaInvalidResponse):  # not converted by the SDK: judge by status
        response = getattr(exc, "response", None)
        status = int(getattr(response, "status_code", 0) or 0)
        exc = api_exceptions.from_http_status(  # type: ignore[no-untyped-call]
            status or 500, str(exc), response=response
        )
    if not isinstance(exc, api_exceptions.GoogleAPICallError):
        return InvalidRequest(f"{where}: {type(exc).__name__}: {exc}")
    status = int(exc.code or 0)
    detail = _detail(exc)
    if status == 404 and not on_object:
        return BucketMissing(f"bucket {bucket!r} does not exist")
    if status == 412:
        return PreconditionFailed(f"{where}: precondition failed (changed meanwhile)")
    if status == 409 and conditional:
        return PreconditionFailed(f"{where}: a concurrent write won")
    if status == 404:
        if conditional:
            return PreconditionFailed(f"{where}: no longer exists")
        return NotFound(f"{where}: not found")
    if status == 429 or (status == 403 and _reasons(exc) & _RATE_LIMIT_REASONS):
        return Throttled(f"{where}: throttled ({detail})", retry_after=_retry_after(exc))
    if status in (401, 403):
        return PermissionDenied(f"{where}: access denied ({detail})")
    if status == 408 or status >= 500:
        return Transient(f"{where}: server error {status} ({detail})")
    return InvalidRequest(f"{where}: {status} {detail}")


def _detail(exc: api_exceptions.GoogleAPICallError) -> str:
    """The service's own message ("No such object: …"), without the request URL."""
    for error in exc.errors or []:
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    response = getattr(exc, "response", None)
    try:
        message = response.json()["error"]["message"] if response is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        message = None
    if message:
        return str(message)
    reason = getattr(response, "reason", None)
    return str(reason) if reason else type(exc).__name__


def _reasons(exc: api_exceptions.GoogleAPICallError) -> set[str]:
    return {str(e.get("reason")) for e in exc.errors or [] if isinstance(e, dict)}


def _retry_after(exc: api_exceptions.GoogleAPICallError) -> float | None:
    """Retry-After as delta-seconds; the HTTP-date form is rare enough to ignore."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _generation(etag: str) -> int | None:
    """The generation an `ObjectInfo.etag` names, or None when it is not one of ours."""
    if not etag.isdigit():
        return None
    value = int(etag)
    return value if 0 < value <= _MAX_GENERATION else None


def _md5(b64: str | None) -> str | None:
    """GCS states MD5 as base64; composite objects have none."""
    if not b64:
        return None
    try:
        digest = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def _sha256(metadata: dict[str, str]) -> str | None:
    value = str(metadata.get(SHA256_META, "")).strip().lower()
    return value if _SHA256.match(value) else None


def _mtime(metadata: dict[str, str]) -> int | None:
    """Our "SECONDS.NANOS", else rclone's RFC 3339 `mtime`, else gsutil's whole seconds."""
    value = metadata.get(MTIME_META)
    parsed = parse_mtime(value)
    if parsed is None and value:
        parsed = _rfc3339_ns(value)
    if parsed is None:
        parsed = parse_mtime(metadata.get(GSUTIL_MTIME_META))
    return parsed


def _rfc3339_ns(value: str) -> int | None:
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value
    )
    if match is None:
        return None
    whole, frac, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    seconds = int(moment.timestamp())
    if seconds < 0:
        return None
    return seconds * 1_000_000_000 + int(((frac or "") + "000000000")[:9])


class _Body(io.RawIOBase):
    """The upload body as the SDK wants it: `tell()` must work even on a pipe.

    Counts what was read, so a one-way stream reports its position; a seek to anywhere but
    the current position is refused (the SDK seeks only to recover a failed chunk, and the
    engine's next attempt starts over with a fresh body)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self.position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self.position + offset}.get(whence)
        if target != self.position:
            raise _Unseekable("upload body cannot be rewound")
        return self.position


def _anonymous() -> Any:
    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def _credentials(options: GCSOptions) -> tuple[Any, str | None]:
    """Credentials and project, by the usual precedence; raises the sentinels.

    An explicit `credentials_file` wins; with STORAGE_EMULATOR_HOST the client is anonymous
    (as the SDK itself does); otherwise Application Default Credentials, and a custom
    `endpoint_url` without any credentials is reached anonymously (an emulator or a proxy).
    """
    if options.credentials_file:
        path = os.path.expanduser(options.credentials_file)
        try:
            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                path, scopes=list(storage.Client.SCOPE)
            )
        except OSError as exc:
            raise InvalidRequest(
                f"options.credentials_file: cannot read {path!r} ({exc.strerror or exc})"
            ) from None
        except (ValueError, KeyError, google.auth.exceptions.GoogleAuthError):
            # The parser's message may quote the file; say only what is wrong with it.
            raise InvalidRequest(
                f"options.credentials_file: {path!r} is not a service account key file"
            ) from None
        return credentials, options.project or credentials.project_id
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return _anonymous(), options.project or DEFAULT_PROJECT
    try:
        credentials, project = google.auth.default(scopes=list(storage.Client.SCOPE))
    except google.auth.exceptions.DefaultCredentialsError:
        if options.endpoint_url:
            return _anonymous(), options.project or DEFAULT_PROJECT
        raise PermissionDenied(
            "no usable Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS, "
            "run `gcloud auth application-default login`, or set options.credentials_file)"
        ) from None
    return credentials, options.project or project


def make_client(options: GCSOptions, workers: int) -> Any:
    """One client per provider, its HTTP pool sized for the engine's worker threads."""
    credentials, project = _credentials(options)
    client_options = {"api_endpoint": options.endpoint_url} if options.endpoint_url else None
    try:
        client = storage.Client(
            project=project, credentials=credentials, client_options=client_options
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise InvalidRequest(f"cannot set up the GCS client: {type(exc).__name__}") from None
    # The SDK (3.x) fetches each bucket's metadata in a background thread, with its own
    # retries, only to label OpenTelemetry spans syncd does not record: an extra request that
    # needs storage.buckets.get. The SDK skips it when the cache is unset.
    if getattr(client, "_bucket_metadata_cache", None) is not None:
        client._bucket_metadata_cache = None
    # The SDK talks through one requests session (AuthorizedSession); its default pool of 10
    # connections per host would make the other workers wait or open throwaway connections.
    size = max(10, workers * 2)
    adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
    session = client._http
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return client


class GCSProvider:
    """A bucket (and optional prefix) as a remote root. Thread-safe."""

    def __init__(self, url: RemoteURL, options: GCSOptions | None = None, workers: int = 8) -> None:
        self.remote = url
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.options = options or GCSOptions()
        self.capabilities = Capabilities(
            conditional_writes=True, server_side_copy=True, listing_has_metadata=True
        )
        # Missing credentials surface on the first call (like S3), so a daemon still starts
        # and reports the pair; an unreadable credentials_file is a config error right away.
        self._setup_error: PermissionDenied | None = None
        self._client: Any = None
        try:
            self._client = make_client(self.options, workers)
        except PermissionDenied as exc:
            self._setup_error = exc

    # -- plumbing ------------------------------------------------------------------------

    def _bucket(self) -> Any:
        if self._setup_error is not None:
            raise PermissionDenied(f"{self.url}: {self._setup_error}")
        return self._client.bucket(self.bucket)

    def _where(self, key: str | None) -> str:
        return f"gs://{self.bucket}/{self.prefix}{key or ''}"

    @contextmanager
    def _errors(self, key: str | None, *, conditional: bool = False) -> Iterator[None]:
        """Translate whatever the SDK raises inside the block (a sink's own OSError or a
        cancellation passes through untouched)."""
        try:
            yield
        except (*_SDK_ERRORS, _Unseekable) as exc:
            raise _translate(
                exc,
                self._where(key),
                bucket=self.bucket,
                on_object=key is not None,
                conditional=conditional,
            ) from exc

    def _info(self, key: str, blob: Any) -> ObjectInfo:
        """ObjectInfo from an object resource (listing item, get, upload or copy answer)."""
        metadata: dict[str, str] = dict(blob.metadata or {})
        updated = blob.updated
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            etag=str(blob.generation),
            modified=updated.timestamp() if updated is not None else 0.0,
            mtime_ns=_mtime(metadata),
            sha256=_sha256(metadata),
            md5=_md5(blob.md5_hash),
            has_metadata=True,  # the JSON API's object resource always carries `metadata`
            archived=False,  # ARCHIVE objects are read like any other in GCS
        )

    def _wanted(self, key: str, etag: str) -> int:
        """The generation a conditional call is made against; a token this adapter never
        produced cannot be the object's current version."""
        generation = _generation(etag)
        if generation is None:
            raise PreconditionFailed(f"{self._where(key)}: {etag!r} is not a GCS generation")
        return generation

    def _get(self, key: str, generation: int | None = None) -> Any:
        """The object resource, or NotFound (a missing bucket too, like a missing key)."""
        with self._errors(key):
            blob = self._bucket().get_blob(
                self.prefix + key, if_generation_match=generation, retry=None
            )
        if blob is None:
            raise NotFound(f"{self._where(key)}: not found")
        return blob

    # -- the Provider protocol -----------------------------------------------------------

    def list(self) -> Iterator[ObjectInfo]:
        bucket = self._bucket()
        with self._errors(None):
            blobs = self._client.list_blobs(
                bucket, prefix=self.prefix, page_size=PAGE_SIZE, fields=_LIST_FIELDS, retry=None
            )
            for blob in blobs:
                key = blob.name[len(self.prefix) :]
                if not key:
                    continue  # the prefix's own folder marker
                yield self._info(key, blob)

    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._get(key))

    def upload(self, request: UploadRequest) -> ObjectInfo:
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        generation: int | None = None
        if request.if_absent:
            generation = 0
        elif request.if_match is not None:
            generation = self._wanted(request.key, request.if_match)
        metadata = dict(request.metadata)
        metadata[MTIME_META] = format_mtime(request.mtime_ns)
        metadata[GSUTIL_MTIME_META] = str(request.mtime_ns // 1_000_000_000)
        if request.sha256 is not None:
            if not _SHA256.match(request.sha256):
                raise InvalidRequest(f"{request.key}: sha256 is not 64 lowercase hex digits")
            metadata[SHA256_META] = request.sha256
        blob = self._bucket().blob(self.prefix + request.key, chunk_size=CHUNK_SIZE)
        blob.metadata = metadata
        if self.options.storage_class is not None:
            blob.storage_class = self.options.storage_class
        body = _Body(request.body)
        with self._errors(request.key, conditional=generation is not None):
            try:
                # Up to 8 MiB: one multipart request carrying a CRC32C the service checks;
                # above: a resumable upload in CHUNK_SIZE pieces, checked at the end.
                blob.upload_from_file(
                    body,
                    size=request.size,
                    if_generation_match=generation,
                    checksum="auto",
                    retry=None,
                )
            except ValueError as exc:  # the body ended before `size` bytes
                raise InvalidRequest(
                    f"{self._where(request.key)}: body does not match its size ({exc})"
                ) from None
        return self._info(request.key, blob)

    def download(self, key: str, sink: BinaryIO, if_match: str | None = None) -> ObjectInfo:
        wanted = self._wanted(key, if_match) if if_match is not None else None
        # Read the object resource first (its metadata is the answer), then fetch exactly that
        # generation: the bytes and the info always describe the same version.
        blob = self._get(key, wanted)
        if wanted is not None and blob.generation != wanted:  # servers that ignore the header
            raise PreconditionFailed(f"{self._where(key)}: changed since it was listed")
        pinned = self._bucket().blob(self.prefix + key, generation=blob.generation)
        try:
            with self._errors(key):
                # raw: the stored bytes, as sized and hashed (no gzip transcoding); the SDK
                # checks them against the stored CRC32C / MD5 while streaming into `sink`.
                pinned.download_to_file(sink, raw_download=True, checksum="auto", retry=None)
        except NotFound:
            if wanted is not None:
                raise PreconditionFailed(f"{self._where(key)}: replaced while reading") from None
            raise Transient(f"{self._where(key)}: replaced while reading") from None
        return self._info(key, blob)

    def delete(self, key: str, if_match: str | None = None) -> None:
        generation: int | None = None
        if if_match is not None:
            generation = _generation(if_match)
            if generation is None:  # cannot match anything: only "already gone" is fine
                try:
                    self._get(key)
                except NotFound:
                    self._bucket_exists()  # a missing bucket is not a deleted key
                    return
                raise PreconditionFailed(f"{self._where(key)}: {if_match!r} is not a generation")
        blob = self._bucket().blob(self.prefix + key)
        try:
            with self._errors(key):
                blob.delete(if_generation_match=generation, retry=None)
        except NotFound:
            self._bucket_exists()  # a missing bucket is not a deleted key
            # otherwise already gone: what a delete wants

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        generation = self._wanted(src_key, if_match) if if_match is not None else None
        # GCS enforces ifGenerationMatch=0 on the destination atomically, but fake-gcs-server
        # (and so possibly other look-alikes) ignores it: look first, so the promise holds
        # everywhere. Pinning sourceGeneration makes a stale source a 404 on any server.
        try:
            self._get(dst_key)
        except NotFound:
            pass
        else:
            raise PreconditionFailed(f"{self._where(dst_key)}: already exists")
        bucket = self._bucket()
        source = bucket.blob(self.prefix + src_key)
        with self._errors(src_key, conditional=generation is not None):
            copied = bucket.copy_blob(
                source,
                bucket,
                self.prefix + dst_key,
                source_generation=generation,
                if_generation_match=0,
                if_source_generation_match=generation,
                retry=None,
            )
        return self._info(dst_key, copied)

    def check(self) -> None:
        self._bucket_exists()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _bucket_exists(self) -> None:
        """One object listed under the prefix: needs only storage.objects.list (a bucket GET
        would need storage.buckets.get, which object-level roles lack)."""
        bucket = self._bucket()
        with self._errors(None):
            pages = self._client.list_blobs(
                bucket, prefix=self.prefix, max_results=1, fields="items(name)", retry=None
            )
            for _ in pages:
                break

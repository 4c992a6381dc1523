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
import builtins
import io
import os
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

import google.auth
import google.auth.exceptions
import google_crc32c
import requests
import requests.adapters
import structlog
import urllib3.exceptions
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.exceptions import InvalidResponse as MediaInvalidResponse
from google.oauth2 import service_account

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
    parse_stated_mtime,
)
from syncd.providers.errors import (
    InvalidRequest,
    NotFound,
    OptionError,
    PermissionDenied,
    PreconditionFailed,
    ProviderError,
    Throttled,
    Transient,
)
from syncd.providers.http import SdkSession, pin_environment
from syncd.providers.options import URL_SHAPE, GCSOptions, is_endpoint_url
from syncd.providers.url import RemoteURL

log = structlog.get_logger("syncd.providers.gcs")

PAGE_SIZE = 1000
#: How long a credentials refresh may take (google-cloud-core's own default).
CREDENTIALS_REFRESH_TIMEOUT = 300
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
#: A resumable session takes its chunks in order, each but the last a multiple of 256 KiB.
_QUANTUM = 256 * 1024
#: GCS puts no limit on a session's chunk count; a high one lets the engine keep parts small,
#: and each part is held in memory once while it is sent (see upload_part), checked against
#: its CRC32C from the engine's read of the file: 0.05 s per GiB where MD5 costs 1.4.
PART_LIMITS = PartLimits(
    min_part=_QUANTUM,
    max_part=5 * 1024 * 1024 * 1024,
    max_parts=100_000,
    sequential=True,
    alignment=_QUANTUM,
    digest="crc32c",
    whole_crc32c=True,
)
#: Seconds to connect and between bytes on a session request (the SDK's own default).
SESSION_TIMEOUT = 60.0
#: Finished uploads remembered for complete_multipart; bounded, so sessions the engine never
#: completes cannot pile up.
_FINISHED_KEPT = 256
#: What a session's status says it holds: "bytes=0-LAST".
_HELD = re.compile(r"^bytes=0-(\d+)$")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A URL's query in an exception's text: on a resumable session's URL (`upload_id=…`) it is a
#: credential of its own, and requests quotes it ("Max retries exceeded with url: …").
_URL_QUERY = re.compile(r"\?[^\s'\"]+")
#: 403 reasons that are rate limits, not refusals (older JSON API answers use them).
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_TRANSPORT = (
    requests.ConnectionError,  # refused, reset, DNS; also urllib3's ProtocolError wrapped
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    google.auth.exceptions.TransportError,  # a token refresh that could not reach its server
    DataCorruption,  # a download's checksum did not match: a fresh attempt reads it again
    # A download streams the body from urllib3 itself (response.raw), so a connection cut
    # mid-body surfaces as urllib3's ProtocolError, not wrapped by requests.
    urllib3.exceptions.HTTPError,
)
_SDK_ERRORS = (
    api_exceptions.GoogleAPIError,
    google.auth.exceptions.GoogleAuthError,
    requests.RequestException,
    MediaInvalidResponse,
    DataCorruption,
    urllib3.exceptions.HTTPError,
)


def should_retry(exc: BaseException) -> bool:
    """True for the failures that promise a later success (for tenacity's `retry=`)."""
    return isinstance(exc, Throttled | Transient)


class BucketMissing(NotFound):
    """NotFound for the bucket itself, so a delete can tell it from an already-deleted key."""


class _Unseekable(OSError):
    """The SDK wanted to rewind a one-way upload body (only after a failed chunk)."""


def _redact(text: str) -> str:
    """An exception's text as a message may quote it: without any URL's query."""
    return _URL_QUERY.sub("?<redacted>", text)


def _quoted(exc: BaseException) -> str:
    """An exception as a message quotes it ("Type: text"), its text redacted."""
    return _redact(f"{type(exc).__name__}: {exc}")


def _translate(
    exc: BaseException, where: str, *, bucket: str, on_object: bool, conditional: bool = False
) -> ProviderError:
    """The one place where the SDK's exceptions become the sentinel errors.

    `where` names the object (gs://bucket/prefix/key) in the message; `on_object` says a 404
    means a missing object rather than a missing bucket; `conditional` marks a conditional
    call, where a missing object or a 409 means the precondition lost. Messages carry the
    service's own error text, never request headers or credentials; an exception's own text
    is quoted without URL queries (a resumable session's URL is a credential, see `_redact`).
    """
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return PermissionDenied(f"{where}: no usable Google credentials found")
    if isinstance(exc, google.auth.exceptions.RefreshError):
        if getattr(exc, "retryable", False):
            return Transient(f"{where}: could not refresh the access token")
        return PermissionDenied(f"{where}: credentials were rejected when refreshing the token")
    if isinstance(exc, _TRANSPORT):
        return Transient(f"{where}: {_quoted(exc)}")
    if isinstance(exc, _Unseekable):
        return Transient(f"{where}: the upload body cannot be rewound; a new attempt starts over")
    if isinstance(exc, MediaInvalidResponse):  # not converted by the SDK: judge by status
        response = getattr(exc, "response", None)
        status = int(getattr(response, "status_code", 0) or 0)
        exc = api_exceptions.from_http_status(  # type: ignore[no-untyped-call]
            status or 500, str(exc), response=response
        )
    if not isinstance(exc, api_exceptions.GoogleAPICallError):
        return InvalidRequest(f"{where}: {_quoted(exc)}")
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


def _crc32c_hex(b64: str | None) -> str | None:
    """GCS states CRC32C as the base64 of its 4 big-endian bytes; as hex (None if absent)."""
    if not b64:
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 4 else None


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
    parsed = parse_stated_mtime(metadata.get(MTIME_META))
    if parsed is None:
        parsed = parse_mtime(metadata.get(GSUTIL_MTIME_META))
    return parsed


def _meta_version(metadata: dict[str, str]) -> str | None:
    """GCS's ObjectInfo.meta_version: the stated mtime, which a metadata patch (set_mtime)
    changes while the generation stays. Not the metageneration: GCS moves it with any
    metadata change, but fake-gcs-server never does, and the mtime is what matters here."""
    mtime_ns = _mtime(metadata)
    return None if mtime_ns is None else str(mtime_ns)


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


def _read_part(body: BinaryIO, size: int, where: str) -> bytes:
    """Exactly `size` bytes of `body` from where it stands, never a byte past them (the engine
    may hand over one open file for all the parts, or a pipe)."""
    pieces: list[bytes] = []
    left = size
    while left:
        piece = body.read(left)
        if not piece:
            raise InvalidRequest(f"{where}: body ended {left} bytes before the part's end")
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


def _held(response: requests.Response, where: str) -> int:
    """How many bytes a session holds, from a 308's Range header (none: nothing yet)."""
    value = response.headers.get("Range")
    if not value:
        return 0
    match = _HELD.match(value.strip())
    if match is None:
        raise Transient(f"{where}: the upload session answered an unexpected Range {value!r}")
    return int(match.group(1)) + 1


class _Counted:
    """A sink that counts what the SDK wrote into it (a range has no checksum to check)."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.written += len(data)
        return len(data)


def _anonymous() -> Any:
    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def _emulated(options: GCSOptions) -> bool:
    """The client talks to something other than Google: an `endpoint_url` off
    googleapis.com (an emulator, http or https), or else STORAGE_EMULATOR_HOST."""
    if options.endpoint_url:
        host = (urllib.parse.urlsplit(options.endpoint_url).hostname or "").lower()
        return not (host == "googleapis.com" or host.endswith(".googleapis.com"))
    return bool(os.environ.get("STORAGE_EMULATOR_HOST"))


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
            raise OptionError(
                "credentials_file", f"cannot read {path!r} ({exc.strerror or exc})"
            ) from None
        except (ValueError, KeyError, google.auth.exceptions.GoogleAuthError):
            # The parser's message may quote the file; say only what is wrong with it.
            raise OptionError(
                "credentials_file", f"{path!r} is not a service account key file"
            ) from None
        if _emulated(options):
            # An emulator takes any bearer token, but the SDK would first trade the key for
            # one at Google's token endpoint (the file's token_uri), which a test network or
            # an air-gapped emulator cannot reach: the credentials sign their own JWT instead
            # (AIP-4111), with the file's key, and nothing leaves for Google.
            credentials = credentials.with_always_use_jwt_access(True)
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
    if _emulated(options) and isinstance(credentials, service_account.Credentials):
        # A key found by ADC (GOOGLE_APPLICATION_CREDENTIALS): as for credentials_file.
        credentials = credentials.with_always_use_jwt_access(True)  # type: ignore[no-untyped-call]
    return credentials, options.project or project


class _Session(AuthorizedSession, SdkSession):  # type: ignore[misc]  # google-auth's untyped request
    """google-auth's session (it adds the credentials to each request and refreshes them)
    over SdkSession, which sends the plain request straight to the adapter: ~10 % of the CPU
    of a small upload."""


def make_client(options: GCSOptions, workers: int) -> Any:
    """One client per provider, its HTTP pool sized for the engine's worker threads."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not options.endpoint_url and emulator and not is_endpoint_url(emulator):
        # The SDK takes it as the endpoint (scheme included, despite the name) and would fail
        # only at the first request; the option is checked with the config.
        raise InvalidRequest(f"STORAGE_EMULATOR_HOST: {URL_SHAPE}")
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
    # The SDK talks through one requests session, the AuthorizedSession it would make itself
    # (same credentials, refresh timeout and mTLS setting), here over SdkSession. Its default
    # pool of 10 connections per host would make the other workers wait or open throwaway
    # connections.
    session = _Session(  # type: ignore[no-untyped-call]
        client._credentials, refresh_timeout=CREDENTIALS_REFRESH_TIMEOUT
    )
    session.configure_mtls_channel(  # type: ignore[no-untyped-call]
        getattr(client, "_client_cert_source", None)
    )
    client._http_internal = session
    size = max(10, workers * 2)
    adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    pin_environment(session, client.api_endpoint)
    return client


class GCSProvider:
    """A bucket (and optional prefix) as a remote root. Thread-safe.

    Also a MultipartProvider, on a GCS *resumable upload session*: the upload id is the
    session URL, the parts are its chunks (sent in order), and the last chunk finishes the
    object, so complete_multipart only reports what that chunk made.
    """

    def __init__(self, url: RemoteURL, options: GCSOptions | None = None, workers: int = 8) -> None:
        self.remote = url
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.options = options or GCSOptions()
        self.capabilities = Capabilities(
            conditional_writes=True,
            server_side_copy=True,
            listing_has_metadata=True,
            multipart=True,
        )
        #: upload id -> the object its last chunk made, for complete_multipart.
        self._finished: OrderedDict[str, ObjectInfo] = OrderedDict()
        self._finished_lock = threading.Lock()
        # Missing credentials surface on the first call (like S3), so a daemon still starts
        # and reports the pair; an unreadable credentials_file is a config error right away.
        self._setup_error: PermissionDenied | None = None
        self._client: Any = None
        try:
            self._client = make_client(self.options, workers)
        except PermissionDenied as exc:
            self._setup_error = exc
        #: Set once `ensure_root` has made sure the bucket exists (create_bucket only).
        self._root_ready = False
        self._root_lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------

    def _bucket(self) -> Any:
        self._ready()
        return self._client.bucket(self.bucket)

    def _ready(self) -> None:
        if self._setup_error is not None:
            raise PermissionDenied(f"{self.url}: {self._setup_error}")

    def _where(self, key: str | None) -> str:
        return f"gs://{self.bucket}/{self.prefix}{key or ''}"

    @contextmanager
    def _errors(
        self, key: str | None, *, conditional: bool = False, on_object: bool | None = None
    ) -> Iterator[None]:
        """Translate whatever the SDK raises inside the block (a sink's own OSError or a
        cancellation passes through untouched). `on_object=False` for a call on a key that
        need not exist (starting an upload), where a 404 can only mean the bucket."""
        try:
            yield
        except (*_SDK_ERRORS, _Unseekable) as exc:
            raise _translate(
                exc,
                self._where(key),
                bucket=self.bucket,
                on_object=key is not None if on_object is None else on_object,
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
            origin=metadata.get(ORIGIN_META),
            meta_version=_meta_version(metadata),
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

    def ensure_root(self) -> None:
        """With `create_bucket`, create the bucket (in `location`) if it is missing (once per
        provider; the first listing and `check` call it). Without it, a missing bucket stays
        the BucketMissing error of whatever call meets it."""
        if self._root_ready or not self.options.create_bucket:
            return
        with self._root_lock:
            if self._root_ready:
                return
            try:
                self.probe()
            except BucketMissing:
                self._create_bucket()
            self._root_ready = True

    def _create_bucket(self) -> None:
        """Create the bucket; one that appeared meanwhile (409) is fine when it can be
        reached (another writer won the race), anything else is the error."""
        bucket = self._bucket()
        if not self._client.project:
            raise InvalidRequest(
                f"cannot create bucket {self.bucket!r}: no project to create it in "
                "(set options.project)"
            )
        try:
            self._client.create_bucket(bucket, location=self.options.location, retry=None)
        except api_exceptions.Conflict:
            self.probe()  # ours after all, or a clear error (someone else's)
        except _SDK_ERRORS as exc:
            raise _translate(
                exc, f"cannot create bucket {self.bucket!r}", bucket=self.bucket, on_object=False
            ) from exc

    def list(self) -> Iterator[ObjectInfo]:
        self.ensure_root()
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

    def _condition(self, request: UploadRequest) -> int | None:
        """The `ifGenerationMatch` of an upload: 0 for create-only, the generation for
        replace-only-if-unchanged, None for neither."""
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        if request.if_absent:
            return 0
        if request.if_match is not None:
            return self._wanted(request.key, request.if_match)
        return None

    def _new_blob(self, request: UploadRequest, chunk_size: int | None = None) -> Any:
        """The blob an upload writes, carrying its metadata (ours, gsutil's mtime, the
        request's own) and the configured storage class."""
        metadata = dict(request.metadata)
        metadata[MTIME_META] = format_mtime(request.mtime_ns)
        metadata[GSUTIL_MTIME_META] = str(request.mtime_ns // 1_000_000_000)
        if request.sha256 is not None:
            if not _SHA256.match(request.sha256):
                raise InvalidRequest(f"{request.key}: sha256 is not 64 lowercase hex digits")
            metadata[SHA256_META] = request.sha256
        blob = self._bucket().blob(self.prefix + request.key, chunk_size=chunk_size)
        blob.metadata = metadata
        if self.options.storage_class is not None:
            blob.storage_class = self.options.storage_class
        return blob

    def upload(self, request: UploadRequest) -> ObjectInfo:
        generation = self._condition(request)
        blob = self._new_blob(request, CHUNK_SIZE)
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
                detail = _redact(str(exc))
                raise InvalidRequest(
                    f"{self._where(request.key)}: body does not match its size ({detail})"
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
                    self.probe()  # a missing bucket is not a deleted key
                    return
                raise PreconditionFailed(f"{self._where(key)}: {if_match!r} is not a generation")
        blob = self._bucket().blob(self.prefix + key)
        try:
            with self._errors(key):
                blob.delete(if_generation_match=generation, retry=None)
        except NotFound:
            self.probe()  # a missing bucket is not a deleted key
            # otherwise already gone: what a delete wants

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        generation = self._wanted(src_key, if_match) if if_match is not None else None
        # GCS enforces ifGenerationMatch=0 on the destination atomically, but fake-gcs-server
        # (and so possibly other look-alikes) ignores it: look first, so the promise holds
        # everywhere. Pinning sourceGeneration makes a stale source a 404 on any server.
        try:
            found = self._get(dst_key)
        except NotFound:
            pass
        else:
            return self._in_class(dst_key, self._earlier_copy(src_key, dst_key, found, generation))
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
        return self._in_class(dst_key, copied)

    def _earlier_copy(self, src_key: str, dst_key: str, found: Any, generation: int | None) -> Any:
        """The destination `found` is taken: it is this copy when it holds the source's very
        version (an earlier attempt whose answer was lost), by `holds_copy_of` or, where that
        cannot tell (a composite object states no MD5), by the CRC32C both state. Anything
        else is PreconditionFailed, as is a source gone or changed since it was listed."""
        taken = PreconditionFailed(f"{self._where(dst_key)}: already exists")
        try:
            source = self._get(src_key)
        except NotFound:
            raise taken from None
        if generation is not None and source.generation != generation:
            raise PreconditionFailed(f"{self._where(src_key)}: changed since it was listed")
        same = holds_copy_of(self._info(src_key, source), self._info(dst_key, found))
        if same is None:
            crc32c = _crc32c_hex(source.crc32c)
            same = crc32c is not None and crc32c == _crc32c_hex(found.crc32c)
        if not same:
            raise taken
        return found

    def _in_class(self, dst_key: str, copied: Any) -> ObjectInfo:
        """The copy's info, once it is in the pair's storage class.

        A copy takes the bucket's default class (as gsutil's cp and mv say), not the
        source's: a file renamed in a NEARLINE pair went STANDARD. Rewritten in place to the
        pair's class, as an upload of it would be; its metadata goes along whole."""
        wanted = self.options.storage_class
        if wanted is not None and copied.storage_class != wanted:
            with self._errors(dst_key, conditional=True):
                copied.update_storage_class(
                    wanted, if_generation_match=copied.generation, retry=None
                )
        return self._info(dst_key, copied)

    def set_mtime(self, key: str, mtime_ns: int, if_match: str) -> ObjectInfo:
        """A metadata patch of that generation (the same `mtime` and gsutil's seconds an upload
        writes), held to the generation and to the metageneration read just before, so neither
        a new version nor a concurrent metadata change is overwritten. The generation stays:
        the etag the engine knows is still the version's."""
        generation = self._wanted(key, if_match)
        blob = self._get(key, generation)
        if blob.generation != generation:  # servers that ignore the header
            raise PreconditionFailed(f"{self._where(key)}: changed since it was listed")
        metadata = dict(blob.metadata or {})
        metadata[MTIME_META] = format_mtime(mtime_ns)
        metadata[GSUTIL_MTIME_META] = str(mtime_ns // 1_000_000_000)
        blob.metadata = metadata  # patches only `metadata`: class, type and bytes stay
        with self._errors(key, conditional=True):
            blob.patch(
                if_generation_match=generation,
                if_metageneration_match=blob.metageneration,
                retry=None,
            )
        return self._info(key, blob)

    # -- multipart (MultipartProvider), on a resumable upload session -----------------------

    def part_limits(self) -> PartLimits:
        return PART_LIMITS

    def start_multipart(self, request: UploadRequest) -> str:
        """Opens the session with the object's metadata and storage class, and the condition
        as `ifGenerationMatch`, which GCS holds the upload to when the last chunk lands."""
        generation = self._condition(request)
        if request.size <= 0:
            raise InvalidRequest(f"{self._where(request.key)}: an empty object goes by upload()")
        blob = self._new_blob(request)
        self._check_condition(request, generation, at_start=True)  # before the file is sent
        # on_object=False: the key need not exist, so a 404 is the bucket missing.
        with self._errors(request.key, conditional=generation is not None, on_object=False):
            url = blob.create_resumable_upload_session(
                size=request.size,
                if_generation_match=generation,
                checksum=None,  # no bytes go with the start; each chunk is checked below
                timeout=SESSION_TIMEOUT,
                retry=None,
            )
        return str(url)

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        """PUTs the chunk at its offset. The chunk is held in memory: GCS may persist only a
        prefix of it (a 308 with a shorter Range), and the rest is then sent again from there.

        GCS checks no hash per chunk (an X-Goog-Hash on the last chunk must describe the whole
        object, which a resumed upload never sees in one process), so `digest` (a CRC32C, of
        the engine's earlier read) is checked here against the bytes read, which catches a file
        changed between the two reads; the stored object's CRC32C / MD5 are GCS's own,
        its size is checked when the last chunk finishes it, and the engine verifies our
        sha256 on reads.
        """
        where = self._where(request.key)
        end = part.offset + part.size
        last = end == request.size
        if part.offset < 0 or part.size <= 0 or end > request.size:
            raise InvalidRequest(
                f"{where}: part {part.number} ({part.offset}+{part.size}) is outside the"
                f" object's {request.size} bytes"
            )
        if not last and (part.offset % _QUANTUM or part.size % _QUANTUM):
            raise InvalidRequest(f"{where}: part {part.number} is not aligned to 256 KiB")
        data = _read_part(body, part.size, f"{where} part {part.number}")
        if f"{google_crc32c.value(data):08x}" != digest.lower():
            raise InvalidRequest(f"{where}: part {part.number} does not match its CRC32C")
        if last:
            self._check_condition(request, self._condition(request), at_start=False)
        sent = part.offset
        while True:
            response = self._session(
                request.key,
                "PUT",
                upload_id,
                headers={"Content-Range": f"bytes {sent}-{end - 1}/{request.size}"},
                data=data[sent - part.offset :],
            )
            if response.status_code != 308:  # 200 / 201: that was the last byte
                self._remember(request, upload_id, response, last=last)
                return PartInfo(part.number, part.offset, part.size)
            held = _held(response, where)
            if held >= end and not last:  # this part was held already (sent once before)
                return PartInfo(part.number, part.offset, part.size)
            if held < part.offset:
                raise InvalidRequest(
                    f"{where}: the upload session holds {held} bytes, part {part.number}"
                    f" starts at {part.offset} (an earlier part is missing)"
                )
            if held <= sent or held >= end:
                raise Transient(f"{where}: the upload session did not take part {part.number}")
            sent = held  # persisted a prefix only: send the rest

    def list_parts(self, request: UploadRequest, upload_id: str) -> builtins.list[PartInfo]:
        """GCS tells only how many bytes the session holds, not the parts they came in: the
        answer is one PartInfo numbered 0 for that prefix ([] when it holds nothing), or for
        the whole object when the session finished already.

        fake-gcs-server answers this status query wrongly: it finishes the upload with the
        bytes it holds (caught below as a size mismatch). The engine does not ask a
        sequential provider; it resumes from the parts it recorded.
        """
        response = self._session(
            request.key, "PUT", upload_id, headers={"Content-Range": f"bytes */{request.size}"}
        )
        if response.status_code != 308:
            return [PartInfo(0, 0, self._remember(request, upload_id, response, last=True).size)]
        held = _held(response, self._where(request.key))
        return [PartInfo(0, 0, held)] if held else []

    def complete_multipart(
        self, request: UploadRequest, upload_id: str, parts: builtins.list[PartInfo]
    ) -> ObjectInfo:
        """The last chunk finished the object already (GCS has no separate commit): its info,
        remembered by upload_part, is the answer. A process that did not send that chunk (a
        restart in between) reads the key back instead, and it must be this upload's."""
        where = self._where(request.key)
        covered = 0
        for part in parts:
            if part.offset != covered:
                raise InvalidRequest(f"{where}: parts are not contiguous at byte {covered}")
            covered += part.size
        if covered != request.size:
            raise InvalidRequest(
                f"{where}: the parts cover {covered} of {request.size} bytes (the last one was"
                " not sent)"
            )
        with self._finished_lock:
            finished = self._finished.pop(upload_id, None)
        if finished is not None:
            return finished
        try:
            current: ObjectInfo = self.stat(request.key)
        except NotFound:
            raise NotFound(f"{where}: the upload finished, but the object is gone") from None
        if not self._is_ours(request, current, self._condition(request)):
            raise PreconditionFailed(f"{where}: replaced since the upload finished")
        return current

    def abort_multipart(self, request: UploadRequest, upload_id: str) -> None:
        """DELETE on the session URL: GCS answers 499 when it dropped the session, 404 / 410
        when it is gone already. fake-gcs-server answers 499 to any DELETE and keeps the
        session usable, but nothing shows under the key unless its last chunk is sent."""
        with self._finished_lock:
            self._finished.pop(upload_id, None)
        if not upload_id.startswith(("https://", "http://")):
            return  # not a session of ours: nothing to drop
        with suppress(NotFound):  # finished, expired or aborted already
            self._session(request.key, "DELETE", upload_id, {}, ok=(200, 204, 499))

    def download_range(
        self, key: str, sink: BinaryIO, offset: int, length: int, if_match: str
    ) -> ObjectInfo:
        """The object resource is read first (its size and metadata are the answer), then the
        range of exactly that generation, pinned and conditional: fake-gcs-server ignores
        `ifGenerationMatch` on reads, but a pinned generation that is gone is a 404. A
        missing key is the version gone too, so PreconditionFailed (as on S3)."""
        wanted = self._wanted(key, if_match)
        if offset < 0 or length < 0:
            raise InvalidRequest(f"{self._where(key)}: bad range ({offset}, {length})")
        try:
            blob = self._get(key, wanted)
        except NotFound:
            raise PreconditionFailed(f"{self._where(key)}: no longer exists") from None
        if blob.generation != wanted:  # servers that ignore the header
            raise PreconditionFailed(f"{self._where(key)}: changed since it was listed")
        info = self._info(key, blob)
        if offset + length > info.size:
            raise InvalidRequest(
                f"{self._where(key)}: bytes {offset}+{length} are past the end ({info.size})"
            )
        if length == 0:
            return info
        pinned = self._bucket().blob(self.prefix + key, generation=wanted)
        counted = _Counted(sink)
        try:
            with self._errors(key):
                # raw: the stored bytes; no checksum, as the stored ones cover the whole object
                pinned.download_to_file(
                    counted,
                    start=offset,
                    end=offset + length - 1,
                    raw_download=True,
                    checksum=None,
                    if_generation_match=wanted,
                    retry=None,
                )
        except NotFound:
            raise PreconditionFailed(f"{self._where(key)}: replaced while reading") from None
        if counted.written != length:
            raise Transient(
                f"{self._where(key)}: the range brought {counted.written} of {length} bytes"
            )
        return info

    def _check_condition(
        self, request: UploadRequest, generation: int | None, *, at_start: bool
    ) -> None:
        """Look at the key before the start and before the last chunk: GCS enforces the
        session's `ifGenerationMatch` atomically, but fake-gcs-server (and so possibly other
        look-alikes) ignores it on resumable uploads, so the promise is kept everywhere.

        Before the last chunk, the object this very upload made is no conflict: that chunk
        is being sent again after its answer was lost, and GCS answers with the object."""
        if generation is None:
            return
        try:
            current = self._get(request.key)
        except NotFound:
            if generation == 0:
                return
            raise PreconditionFailed(f"{self._where(request.key)}: no longer exists") from None
        if not at_start and self._is_ours(request, self._info(request.key, current), generation):
            return
        if generation == 0:
            raise PreconditionFailed(f"{self._where(request.key)}: already exists")
        if current.generation != generation:
            raise PreconditionFailed(f"{self._where(request.key)}: changed meanwhile")

    @staticmethod
    def _is_ours(request: UploadRequest, current: ObjectInfo, generation: int | None) -> bool:
        """Whether the object under the key is the one `request`'s upload made: its size, mtime
        and sha256, and (a generation being a timestamp) newer than the one it replaced."""
        return (
            current.size == request.size
            and current.mtime_ns == request.mtime_ns
            and (request.sha256 is None or current.sha256 == request.sha256)
            and (not generation or (_generation(current.etag) or 0) > generation)
        )

    def _session(
        self,
        key: str,
        method: str,
        upload_id: str,
        headers: dict[str, str],
        *,
        data: bytes = b"",
        ok: tuple[int, ...] = (200, 201, 308),
    ) -> requests.Response:
        """One request on a resumable session, through the client's authorized session and
        without retries. 404 / 410 (aborted, expired, finished) is NotFound; another status
        goes through `_translate`. The session URL is a credential of its own, so no message
        quotes it (requests' own exception texts would)."""
        where = self._where(key)
        if not upload_id.startswith(("https://", "http://")):
            raise NotFound(f"{where}: the upload id is not a GCS upload session")
        self._ready()
        try:
            response: requests.Response = self._client._http.request(
                method,
                upload_id,
                data=data,
                headers=headers,
                timeout=SESSION_TIMEOUT,
                allow_redirects=False,  # GCS's 308 means "resume incomplete", not "go there"
            )
        except (*_TRANSPORT, requests.RequestException) as exc:
            kind = Transient if isinstance(exc, _TRANSPORT) else InvalidRequest
            raise kind(f"{where}: {type(exc).__name__} on the upload session") from None
        except _SDK_ERRORS as exc:  # a token refresh that failed
            raise _translate(exc, where, bucket=self.bucket, on_object=True) from exc
        if response.status_code in ok:
            return response
        if response.status_code in (404, 410):
            raise NotFound(f"{where}: the upload session is gone (aborted, expired or finished)")
        error = api_exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
        raise _translate(error, where, bucket=self.bucket, on_object=True) from None

    def _remember(
        self, request: UploadRequest, upload_id: str, response: requests.Response, *, last: bool
    ) -> ObjectInfo:
        """The object a session's last chunk made (its resource is the answer), kept for
        complete_multipart. Its size must be the declared one: fake-gcs-server, for one,
        appends a chunk sent twice instead of placing it at its offset."""
        where = self._where(request.key)
        try:
            resource = response.json()
        except ValueError:
            raise Transient(f"{where}: the finished upload did not describe the object") from None
        if not isinstance(resource, dict):
            raise Transient(f"{where}: the finished upload did not describe the object")
        blob = self._bucket().blob(self.prefix + request.key)
        blob._set_properties(resource)
        info = self._info(request.key, blob)
        problem: str | None = None
        if not last or info.size != request.size:
            problem = f"the upload session finished with {info.size} of {request.size} bytes"
        elif request.crc32c is not None:
            # Issue 5: GCS checks no chunk, so the finished object's CRC32C (the service's
            # own, of what it stored) is checked against the file's, read before the upload.
            stored = _crc32c_hex(blob.crc32c)
            if stored is not None and stored != request.crc32c.lower():
                problem = (
                    f"the finished object's CRC32C ({stored}) is not the file's"
                    f" ({request.crc32c.lower()})"
                )
        if problem is not None:
            # That object is this session's own, and wrong: left in place, it would read as
            # another writer's version (a conflict, its copy failing every download). Its
            # very generation goes; the engine then starts over.
            try:
                self.delete(request.key, if_match=info.etag)
            except ProviderError as exc:
                log.warning("could not remove a wrongly finished upload", key=where, error=str(exc))
            raise InvalidRequest(f"{where}: {problem}")
        with self._finished_lock:
            self._finished[upload_id] = info
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
        return info

    def check(self) -> None:
        self.ensure_root()
        self.probe()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def probe(self) -> None:
        """One object listed under the prefix: needs only storage.objects.list (a bucket GET
        would need storage.buckets.get, which object-level roles lack)."""
        bucket = self._bucket()
        with self._errors(None):
            pages = self._client.list_blobs(
                bucket, prefix=self.prefix, max_results=1, fields="items(name)", retry=None
            )
            for _ in pages:
                break

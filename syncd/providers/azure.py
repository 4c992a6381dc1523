"""`az://CONTAINER[/PREFIX]` remotes on azure-storage-blob (the synchronous API).

The whole adapter speaks the Provider protocol and the sentinel errors; every exception of
azure-core, azure-storage-blob, azure-identity and requests is translated at this boundary by
`_translate`, and nothing else of the SDK leaks out.

A blob's version token is its ETag (without the quotes). Conditional calls are made against it:
create-only is `If-None-Match: *`, replace / delete / download-if-unchanged are `If-Match`.
The SDK's own retries are switched off (`retry_total=0`): the engine retries with tenacity on
the sentinels, so a retry is never stacked on another.

Uploads are streamed: a body of up to `SINGLE_PUT_SIZE` bytes goes in one Put Blob; a larger
one is read forward once, block by block (Put Block), and committed with one Put Block List
that carries the conditions, the metadata and the MD5 of the whole content (computed while
reading, since the service computes it only for a single put). At most one block is held in
memory per upload.

Multipart uploads (MultipartProvider) are block uploads driven by the engine: Azure has no
upload id, so the adapter picks a run id and names part N's block `base64("{run}-{N:06d}")`
(the same naming as a single upload's blocks: every block id of a blob has one length). Parts
are staged blocks (Put Block, with the part's MD5 for the service to check), `list_parts`
reads the blob's uncommitted block list, and completing is one Put Block List with the
conditions and metadata. There is no abort: uncommitted blocks live until a commit of the blob
or until the service drops them (after 7 days), so `abort_multipart` does nothing and a run's
parts stay listable until then. Ranged reads are If-Match the version being read.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import dataclasses
import hashlib
import io
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, urlsplit

import requests
import requests.adapters
import urllib3.exceptions
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import Pipeline
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobProperties,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    StandardBlobTier,
)
from urllib3.util.retry import Retry

from syncd.providers import azure_listing
from syncd.providers.azure_listing import ListedBlob
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
    parse_stated_mtime,
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
from syncd.providers.http import SdkSession, ca_bundle, pin_environment
from syncd.providers.options import AzureOptions
from syncd.providers.url import RemoteURL

PAGE_SIZE = 1000
MiB = 1024 * 1024
#: Bodies up to this size go in one Put Blob request (held in memory once).
SINGLE_PUT_SIZE = 8 * MiB
#: Larger bodies are sent in blocks of this size (grown for huge files: a blob holds at most
#: MAX_BLOCKS committed blocks).
BLOCK_SIZE = 8 * MiB
MAX_BLOCKS = 50_000
#: The largest block (Put Block) the service takes, and so the largest multipart part.
MAX_BLOCK_SIZE = 4000 * MiB
#: Downloads are fetched in ranges of this size, each held in memory once.
GET_CHUNK_SIZE = 4 * MiB
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
#: How long a server-side copy may stay "pending" before it is aborted as transient.
COPY_TIMEOUT = 600.0
#: The public endpoint suffix used when only an account name is given.
ENDPOINT_SUFFIX = "blob.core.windows.net"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
#: A multipart upload id: the run id `start_multipart` hands out (uuid4 hex).
_RUN = re.compile(r"^[0-9a-f]{32}$")
#: The (SDK-decoded) id of a block staged by this adapter: run id and part number.
_BLOCK_NAME = re.compile(r"^([0-9a-f]{32})-([0-9]{6})$")
#: The whole size in a Content-Range answer ("bytes 0-99/1234").
_CONTENT_RANGE_TOTAL = re.compile(r"/([0-9]+)\s*$")

_PRECONDITION = {"ConditionNotMet", "SourceConditionNotMet", "TargetConditionNotMet"}
_CONTAINER_GONE = {"ContainerNotFound", "ContainerBeingDeleted", "ContainerDisabled"}
_ARCHIVED = {"BlobArchived", "BlobBeingRehydrated"}
_THROTTLED = {"ServerBusy", "IngressOverAccountLimit", "EgressOverAccountLimit", "TooManyRequests"}
_SERVER = {"InternalError", "OperationTimedOut", "ServerTimeout"}
_TRANSPORT = (
    ServiceRequestError,  # refused, reset before an answer, DNS, connect timeout
    ServiceResponseError,  # reset or timeout while reading an answer
    DecodeError,  # a body cut short (IncompleteReadError) or garbled
    requests.RequestException,  # anything of requests that escapes the pipeline
    urllib3.exceptions.HTTPError,
)
#: Everything the SDK (and the HTTP stack under it) raises on purpose.
_SDK_ERRORS = (AzureError, requests.RequestException, urllib3.exceptions.HTTPError)
#: Secrets that could appear inside a transport error's text: a SAS query string (URLs in
#: urllib3 messages), an account key or SAS inside a connection string.
_SECRETS = re.compile(
    r"(\?[^\s'\"]*)|((?:AccountKey|SharedAccessSignature|sig)=[^;&\s'\"]*)", re.IGNORECASE
)


def should_retry(exc: BaseException) -> bool:
    """True for the failures that promise a later success (for tenacity's `retry=`)."""
    return isinstance(exc, Throttled | Transient)


class ContainerMissing(NotFound):
    """NotFound for the container itself, so a delete can tell it from an already-deleted
    blob."""


def _code(exc: HttpResponseError) -> str:
    """The service's error code ("BlobNotFound"); the SDK gives a str or a StorageErrorCode."""
    code = getattr(exc, "error_code", None)
    if code is None:
        code = _headers(exc).get("x-ms-error-code")
    return str(getattr(code, "value", code or ""))


def _headers(exc: HttpResponseError) -> Mapping[str, str]:
    """The answer's headers (case-insensitive in azure-core's responses)."""
    headers: Mapping[str, str] | None = getattr(exc.response, "headers", None)
    return headers if headers is not None else {}


def _redact(text: str) -> str:
    return _SECRETS.sub("<redacted>", text)


def _translate(
    exc: Exception,
    where: str,
    *,
    container: str,
    on_object: bool = True,
    conditional: bool = False,
) -> ProviderError:
    """The one place where the SDK's exceptions become the sentinel errors.

    `where` names the blob (az://container/prefix/key) in the message; `on_object` says a bare
    404 means a missing blob rather than a missing container; `conditional` marks a conditional
    write, where a missing blob (If-Match) or a 409 means the precondition lost. Messages are
    built from the status and the service's error code, never from the request, the service's
    free text (which can echo a string-to-sign) or the client configuration, so they cannot
    carry credentials.
    """
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        if type(exc).__name__ == "AzureSigningError":  # the shared key could not sign
            return PermissionDenied(f"{where}: the account key is not valid (base64 expected)")
        # azure-identity: no credential in the chain could produce a token.
        return PermissionDenied(f"{where}: no usable Azure credentials found")
    if isinstance(exc, _TRANSPORT):
        detail = _redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return Transient(f"{where}: {detail}")
    if not isinstance(exc, HttpResponseError):
        return InvalidRequest(f"{where}: {type(exc).__name__}")
    code = _code(exc)
    status = exc.status_code or 0
    label = code or str(status)
    if not status and not code:
        # No status and no error code: the service's answer never arrived whole (a connection
        # cut mid-answer surfaces like this in azure-core), which a later attempt may fix.
        return Transient(f"{where}: no answer from the service ({type(exc).__name__})")
    if code in _CONTAINER_GONE or (status == 404 and not on_object):
        return ContainerMissing(f"container {container!r} does not exist")
    if code in _ARCHIVED:
        return InvalidRequest(f"{where} is in the Archive tier; rehydrate it first")
    if code in _PRECONDITION or status == 412:
        return PreconditionFailed(f"{where}: precondition failed (changed meanwhile)")
    if code == "BlobAlreadyExists" or (conditional and status == 409):
        return PreconditionFailed(f"{where}: already exists or a concurrent write won ({label})")
    if status == 404:
        if conditional:
            return PreconditionFailed(f"{where}: no longer exists")
        return NotFound(f"{where}: not found")
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        detail = "" if code in ("", "AuthorizationFailure") else f" ({code})"
        return PermissionDenied(f"{where}: access denied{detail}")
    if code in _THROTTLED or status in (429, 503):
        return Throttled(
            f"{where}: throttled ({label})",
            retry_after=_seconds(_headers(exc).get("Retry-After")),
        )
    if code in _SERVER or status >= 500 or status == 408:
        return Transient(f"{where}: server error ({label})")
    return InvalidRequest(f"{where}: {label}" + (f" (HTTP {status})" if code else ""))


def _seconds(value: str | None) -> float | None:
    """Retry-After as delta-seconds; the HTTP-date form is rare enough to ignore."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _quoted(etag: str) -> str:
    """An ETag as the service hands it out (and compares it): in double quotes."""
    return etag if etag.startswith('"') else f'"{etag}"'


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _hex(md5: bytes | bytearray | None) -> str | None:
    return bytes(md5).hex() if md5 else None


def _sha256(metadata: Mapping[str, str | None] | None) -> str | None:
    # A listing reads an empty metadata value (`<sha256/>`) as None.
    value = ((metadata or {}).get(SHA256_META) or "").strip().lower()
    return value if _SHA256.match(value) else None


def _archived(tier: str | None, archive_status: str | None) -> bool:
    """In the Archive tier (also while a rehydration is pending): the bytes cannot be read."""
    return tier == "Archive" or (archive_status or "").startswith("rehydrate-pending")


def _read_exactly(body: BinaryIO, size: int, where: str) -> bytes:
    """`size` bytes of `body` (which may answer short reads, like a pipe)."""
    parts: list[bytes] = []
    missing = size
    while missing > 0:
        chunk = body.read(missing)
        if not chunk:
            raise InvalidRequest(f"{where}: body ended {missing} bytes before its size")
        parts.append(chunk)
        missing -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _block_name(run: str, number: int) -> str:
    """The id of block `number` of `run` as the SDK takes it (it base64-encodes it on the wire,
    and decodes it back in block lists); fixed width, as the service wants one length per
    blob."""
    return f"{run}-{number:06d}"


def _block_token(run: str, number: int) -> str:
    """The block id as the service knows it (base64 of the name): a part's token."""
    return base64.b64encode(_block_name(run, number).encode()).decode("ascii")


def _full_size(props: BlobProperties) -> int | None:
    """The whole blob's size behind a ranged download (whose `size` is the range's)."""
    found = _CONTENT_RANGE_TOTAL.search(props.content_range or "")
    return int(found.group(1)) if found else None


class _PartBody:
    """Exactly `size` bytes of `body`, for the SDK to stream as one Put Block.

    It reads forward to the part's end and never past it (the bytes after belong to the next
    part), and a body that ends early raises rather than sending a short block. `__len__` and
    `tell` let requests send a Content-Length instead of falling back to chunked encoding. The
    body's own error is kept in `failure`: the HTTP stack wraps an OSError raised while sending
    into a connection error, which must not pass for a network failure.
    """

    def __init__(self, body: BinaryIO, size: int, where: str) -> None:
        self._body = body
        self._size = size
        self._done = 0
        self._where = where
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._done

    def read(self, size: int | None = -1) -> bytes:
        want = self._size - self._done
        if size is not None and size >= 0:
            want = min(want, size)
        if want <= 0:
            return b""
        try:
            chunk = self._body.read(want)
            if not chunk:
                missing = self._size - self._done
                raise InvalidRequest(
                    f"{self._where}: body ended {missing} bytes before the part's end"
                )
        except BaseException as exc:
            self.failure = exc
            raise
        self._done += len(chunk)
        return chunk


def _block_size(size: int) -> int:
    """BLOCK_SIZE, or the whole MiBs that fit `size` into MAX_BLOCKS blocks."""
    needed = -(-size // MAX_BLOCKS)
    return max(BLOCK_SIZE, -(-needed // MiB) * MiB)


def make_client(options: AzureOptions, workers: int) -> tuple[BlobServiceClient, Any]:
    """One service client per provider (thread-safe; one HTTP pool sized for the workers).

    Credentials, first found wins: `connection_string`; `account_url` (or `account_name`)
    with `sas_token`, `account_key`, or DefaultAzureCredential; AZURE_STORAGE_CONNECTION_STRING;
    AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN or
    DefaultAzureCredential. Explicit options beat the environment, so a pair that names its
    account is never redirected by a variable meant for another tool. Returns the client and
    the token credential it owns (to close), if any.
    """
    size = max(10, workers * 2)
    session = SdkSession()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=size,
        pool_maxsize=size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    kwargs: dict[str, Any] = {
        "transport": RequestsTransport(
            session=session,
            session_owner=True,
            connection_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            # The SDK passes this with every request, so it must carry the environment's
            # bundle itself (the session no longer reads it: see `pin_environment`).
            connection_verify=ca_bundle() or True,
        ),
        "retry_total": 0,
        "max_single_put_size": SINGLE_PUT_SIZE,
        "max_block_size": BLOCK_SIZE,
        "max_single_get_size": GET_CHUNK_SIZE,
        "max_chunk_get_size": GET_CHUNK_SIZE,
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
    }
    environ = os.environ
    account_url = options.account_url
    if not account_url and options.account_name:
        account_url = f"https://{options.account_name}.{ENDPOINT_SUFFIX}"
    client: BlobServiceClient | None = None
    owned: Any = None
    # Where the value in use came from, and what it is: a malformed one is named by these.
    source, what = "options.connection_string", "connection string"
    try:
        if options.connection_string:
            client = BlobServiceClient.from_connection_string(options.connection_string, **kwargs)
        elif account_url:
            source = "options.account_url" if options.account_url else "options.account_name"
            what = "account URL"
            if not (options.account_key or options.sas_token) and _signed(account_url):
                # A SAS URL (`https://ACCOUNT.blob.core.windows.net/?sv=…&sig=…`): the SDK
                # signs every request with the query it holds; a token credential on top
                # failed over http and was tried needlessly over https.
                credential, owned = None, None
            else:
                credential, owned = _credential(
                    options.account_name,
                    options.account_key,
                    options.sas_token,
                    key_from="options.account_key",
                )
            client = BlobServiceClient(account_url, credential=credential, **kwargs)
        elif environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            source = "the AZURE_STORAGE_CONNECTION_STRING variable"
            conn = environ["AZURE_STORAGE_CONNECTION_STRING"]
            client = BlobServiceClient.from_connection_string(conn, **kwargs)
        elif environ.get("AZURE_STORAGE_ACCOUNT"):
            source, what = "the AZURE_STORAGE_ACCOUNT variable", "account URL"
            name = environ["AZURE_STORAGE_ACCOUNT"]
            credential, owned = _credential(
                name,
                environ.get("AZURE_STORAGE_KEY"),
                environ.get("AZURE_STORAGE_SAS_TOKEN"),
                key_from="the AZURE_STORAGE_KEY variable",
            )
            client = BlobServiceClient(
                f"https://{name}.{ENDPOINT_SUFFIX}", credential=credential, **kwargs
            )
    except ValueError as exc:
        client = None
        token_over_http = owned is not None and str(account_url).startswith("http://")
        problem = _set_up_problem(exc, source, what, token_over_http=token_over_http)
    else:
        problem = (
            "no Azure account configured: set options.connection_string or "
            "options.account_url, or AZURE_STORAGE_CONNECTION_STRING"
        )
    if client is None:
        session.close()
        if owned is not None:
            owned.close()
        raise InvalidRequest(problem)
    pin_environment(session, client.url)
    return client, owned


def _set_up_problem(exc: ValueError, source: str, what: str, *, token_over_http: bool) -> str:
    """Why the client could not be set up, naming the option or variable at fault (`source`,
    a value that is `what`): never the value, nor the SDK's message."""
    if isinstance(exc, _NotBase64):
        return f"{exc.where}: the account key is not valid (base64 expected)"
    if token_over_http:
        # The SDK sends a token (DefaultAzureCredential) over https only: a plain-http
        # account (Azurite) needs a key or a SAS, and is not malformed for lacking one.
        return (
            f"{source}: an http:// account URL needs options.account_key or "
            "options.sas_token (a token credential is sent over https only)"
        )
    # The SDK's messages here ("Connection string is either blank or malformed.") name no
    # value, but a wrong one is still better reported without echoing anything: the
    # message names where it came from instead (the engine adds the pair).
    return f"{source}: the Azure {what} is malformed (cannot set up the Azure client)"


class _NotBase64(ValueError):
    """An account key the SDK cannot sign with; `where` names the option or variable."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def _check_key(key: str, where: str) -> None:
    """An account key the SDK cannot decode (it base64-decodes it, leniently, to sign each
    request) is refused here, where the option is named: found at the first request, it was
    exit 1 "not valid" naming no option, where a malformed connection string is a config
    error (exit 2) naming it. The key is never part of the message."""
    try:
        base64.b64decode(key.encode("utf-8"))
    except (binascii.Error, ValueError):
        raise _NotBase64(where) from None


def _signed(account_url: str) -> bool:
    """Does the account URL carry a SAS of its own (a `sig` in its query)?"""
    return "sig" in parse_qs(urlsplit(account_url).query)


def _credential(
    name: str | None, key: str | None, sas: str | None, *, key_from: str
) -> tuple[Any, Any]:
    """The credential for an account URL, and the token credential to close (if made here).
    `key_from` names where the key came from, for a key that is not base64 (`_check_key`)."""
    if sas:
        return sas.lstrip("?"), None
    if key:
        _check_key(key, key_from)
        # A bare key lets the SDK take the account name from the URL (also for Azurite's
        # http://host:port/ACCOUNT form).
        return ({"account_name": name, "account_key": key} if name else key), None
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return credential, credential


class AzureProvider:
    """A container (and optional prefix) as a remote root. Thread-safe."""

    def __init__(
        self, url: RemoteURL, options: AzureOptions | None = None, workers: int = 8
    ) -> None:
        self.remote = url
        self.url = str(url)
        self.container = url.bucket
        self.prefix = url.prefix
        self.options = options or AzureOptions()
        self.capabilities = Capabilities(
            conditional_writes=True,
            server_side_copy=True,
            listing_has_metadata=True,
            multipart=True,
            replaces_archived=False,
        )
        self._tier = (
            StandardBlobTier(self.options.storage_class)
            if self.options.storage_class is not None
            else None
        )
        self._service, self._credential = make_client(self.options, workers)
        self._container: ContainerClient = self._service.get_container_client(self.container)
        #: The container client's policies and transport, which small uploads use directly
        #: (see `_put_blob`).
        self._pipeline: Pipeline[HttpRequest, Any] = self._container._pipeline
        #: The container's URL and its query (a SAS), split once for `_blob_url`.
        self._container_url, mark, query = self._container.url.partition("?")
        self._container_query = mark + query
        #: Set once `ensure_root` has made sure the container exists (create_bucket only).
        self._root_ready = False
        self._root_lock = threading.Lock()

    def _where(self, key: str | None) -> str:
        return f"az://{self.container}/{self.prefix}{key or ''}"

    def _blob(self, key: str) -> BlobClient:
        return self._container.get_blob_client(self.prefix + key)

    @contextmanager
    def _errors(self, key: str | None, *, conditional: bool = False) -> Iterator[None]:
        """Translate whatever the SDK raises inside the block (a body's or a sink's own error,
        or a cancellation, passes through untouched)."""
        try:
            yield
        except _SDK_ERRORS as exc:
            raise _translate(
                exc,
                self._where(key),
                container=self.container,
                on_object=key is not None,
                conditional=conditional,
            ) from exc

    def ensure_root(self) -> None:
        """With `create_bucket`, create the container if it is missing (once per provider;
        the first listing and `check` call it). Without it, a missing container stays the
        ContainerMissing error of whatever call meets it."""
        if self._root_ready or not self.options.create_bucket:
            return
        with self._root_lock:
            if self._root_ready:
                return
            try:
                self.probe()
            except ContainerMissing:
                self._create_container()
            self._root_ready = True

    def _create_container(self) -> None:
        """Create the container; one that appeared meanwhile is fine when it can be reached
        (another writer won the race), anything else is the error."""
        try:
            self._container.create_container()
        except ResourceExistsError as exc:
            if _code(exc) != "ContainerAlreadyExists":
                raise _translate(
                    exc,
                    f"cannot create container {self.container!r}",
                    container=self.container,
                    on_object=False,
                ) from exc
            self.probe()  # made meanwhile: ours to use, or a clear error
        except _SDK_ERRORS as exc:
            raise _translate(
                exc,
                f"cannot create container {self.container!r}",
                container=self.container,
                on_object=False,
            ) from exc

    def list(self) -> Iterator[ObjectInfo]:
        """The blobs under the prefix, read from List Blobs' XML by `azure_listing` (the SDK's
        own listing where that does not understand a page)."""
        self.ensure_root()
        with self._errors(None):
            blobs = azure_listing.list_blobs(
                self._container, self._pipeline, self.prefix, PAGE_SIZE
            )
            for blob in blobs:
                key = blob.name[len(self.prefix) :]
                if not key:
                    continue  # the prefix's own folder marker
                if blob.metadata.get("hdi_isfolder") == "true":
                    continue  # a directory of a hierarchical-namespace (Data Lake) account
                yield self._listed_info(key, blob)

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            props = self._blob(key).get_blob_properties()
        return self._info(key, props)

    @staticmethod
    def _prepare(request: UploadRequest) -> tuple[dict[str, str], str | None, dict[str, Any]]:
        """The checked request as the SDK takes it: metadata (mtime, sha256 and the request's
        own), the normalised sha256, and the condition keywords of the write."""
        if request.if_absent and request.if_match is not None:
            raise InvalidRequest("if_absent and if_match are mutually exclusive")
        if request.size < 0:
            raise InvalidRequest(f"{request.key}: negative size")
        metadata = dict(request.metadata)
        metadata[MTIME_META] = format_mtime(request.mtime_ns)
        sha256 = None
        if request.sha256 is not None:
            sha256 = request.sha256.lower()
            if not _SHA256.match(sha256):
                raise InvalidRequest(f"{request.key}: sha256 is not 64 hex digits")
            metadata[SHA256_META] = sha256
        conditions: dict[str, Any] = {}
        if request.if_absent:
            # Only the match condition: the SDK refuses an etag next to IfMissing.
            conditions["match_condition"] = MatchConditions.IfMissing
        elif request.if_match is not None:
            conditions["etag"] = _quoted(request.if_match)
            conditions["match_condition"] = MatchConditions.IfNotModified
        return metadata, sha256, conditions

    def _written(
        self, request: UploadRequest, answer: Mapping[str, Any], sha256: str | None, md5: str | None
    ) -> ObjectInfo:
        """The info of a blob this adapter just wrote, from the write's answer."""
        return ObjectInfo(
            key=request.key,
            size=request.size,
            etag=_etag(answer.get("etag")),
            modified=_timestamp(answer.get("last_modified")) or time.time(),
            mtime_ns=request.mtime_ns,
            sha256=sha256,
            md5=md5,
            has_metadata=True,
            archived=self.options.storage_class == "Archive",
            origin=request.metadata.get(ORIGIN_META),
        )

    def upload(self, request: UploadRequest) -> ObjectInfo:
        metadata, sha256, conditions = self._prepare(request)
        where = self._where(request.key)
        try:
            with self._errors(request.key, conditional=bool(conditions)):
                if request.size <= SINGLE_PUT_SIZE:
                    data = _read_exactly(request.body, request.size, where)
                    md5 = hashlib.md5(data, usedforsecurity=False).digest()
                    answer = self._put_blob(request, data, md5, metadata)
                else:
                    blob = self._blob(request.key)
                    md5, answer = self._put_blocks(blob, request, metadata, conditions, where)
        except PreconditionFailed:
            if not (request.if_absent and request.size <= SINGLE_PUT_SIZE):
                raise
            if not self._uncommitted_only(request.key):
                raise
            # Blocks an abandoned block upload staged (no API removes them) stand in the way
            # of a create-only Put Blob (Azurite answers BlobAlreadyExists, though there is
            # no blob): a commit of one block on the same condition goes through, and it
            # drops those blocks.
            again = dataclasses.replace(request, body=io.BytesIO(data))
            with self._errors(request.key, conditional=True):
                md5, answer = self._put_blocks(
                    self._blob(request.key), again, metadata, conditions, where
                )
        return self._written(request, answer, sha256, md5.hex())

    def _uncommitted_only(self, key: str) -> bool:
        """No blob stands at `key`, only uncommitted blocks (or nothing at all)."""
        try:
            self.stat(key)
        except NotFound:
            return True
        return False

    def _put_blob(
        self, request: UploadRequest, data: bytes, md5: bytes, metadata: dict[str, str]
    ) -> Mapping[str, Any]:
        """One Put Blob of a small body, sent through the container client's own pipeline.

        The request `BlobClient.upload_blob` makes (the same headers, signed and sent by the
        same policies and transport), without building a BlobClient, its generated client and
        the operation's serializers for every blob: that was ~0.3 ms of the ~1.2 ms of CPU a
        4 KiB blob cost, CPU a first upload shares with the network stack or the emulator
        (bench/README finding 20). The MD5 is computed once, for both the Content-MD5 the
        service checks the bytes against and the blob's stored Content-MD5. Returns the
        answer's etag and last_modified, as upload_blob does.
        """
        digest = base64.b64encode(md5).decode()
        headers = {
            "x-ms-version": self._container.api_version,
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": "application/octet-stream",
            "Content-MD5": digest,
            "x-ms-blob-content-md5": digest,
            "Accept": "application/xml",
        }
        headers.update((f"x-ms-meta-{name}", value) for name, value in metadata.items())
        if request.if_absent:
            headers["If-None-Match"] = "*"
        elif request.if_match is not None:
            headers["If-Match"] = _quoted(request.if_match)
        # else: no condition, the blob is replaced (upload_blob's overwrite=True)
        if self._tier is not None:
            headers["x-ms-access-tier"] = self._tier.value
        url = self._blob_url(self.prefix + request.key)
        response = self._pipeline.run(HttpRequest("PUT", url, headers=headers, content=data))
        answer = response.http_response
        if answer.status_code != 201:
            raise HttpResponseError(response=answer)
        modified = answer.headers.get("Last-Modified")
        return {
            "etag": answer.headers.get("ETag"),
            "last_modified": parsedate_to_datetime(modified) if modified else None,
        }

    def _blob_url(self, name: str) -> str:
        """A blob's URL as the SDK spells it (BlobClient's `_format_url`): the container's
        URL, the name quoted but for `/` and `~`, then the container URL's query (a SAS)."""
        return f"{self._container_url}/{quote(name, safe='~/')}{self._container_query}"

    def _put_blocks(
        self,
        blob: BlobClient,
        request: UploadRequest,
        metadata: dict[str, str],
        conditions: dict[str, Any],
        where: str,
    ) -> tuple[bytes, dict[str, Any]]:
        """Read the body forward once, one block at a time (Put Block), then commit the list
        (Put Block List) with the conditions: nothing is visible before the commit, and the
        uncommitted blocks of a failed attempt are discarded by the service."""
        md5 = hashlib.md5(usedforsecurity=False)
        block_size = _block_size(request.size)
        run = uuid.uuid4().hex  # distinct ids per attempt: concurrent writers never mix blocks
        blocks: list[BlobBlock] = []
        remaining = request.size
        while remaining > 0:
            data = _read_exactly(request.body, min(block_size, remaining), where)
            md5.update(data)
            name = _block_name(run, len(blocks) + 1)
            blob.stage_block(name, data, length=len(data), validate_content=True)
            blocks.append(BlobBlock(block_id=name))
            remaining -= len(data)
        digest = md5.digest()
        answer = self._commit(
            blob, blocks, metadata, conditions, ContentSettings(content_md5=bytearray(digest))
        )
        return digest, answer

    def _commit(
        self,
        blob: BlobClient,
        blocks: builtins.list[BlobBlock],
        metadata: dict[str, str],
        conditions: dict[str, Any],
        content_settings: ContentSettings,
    ) -> dict[str, Any]:
        """Put Block List: the blob appears (or is replaced) whole, if the conditions hold."""
        answer = blob.commit_block_list(
            blocks,
            content_settings=content_settings,
            metadata=metadata,
            standard_blob_tier=self._tier,
            **conditions,
        )
        return dict(answer)

    # -- multipart (MultipartProvider) ---------------------------------------------------------

    def part_limits(self) -> PartLimits:
        """Put Block takes 1 byte to 4000 MiB, a blob commits at most 50,000 blocks, and
        blocks may be staged in any order and in parallel. The blob's Content-MD5 is the
        commit's to state (`whole_md5`): the service computes none for a block list."""
        return PartLimits(
            min_part=1,
            max_part=MAX_BLOCK_SIZE,
            max_parts=MAX_BLOCKS,
            sequential=False,
            whole_md5=True,
        )

    def start_multipart(self, request: UploadRequest) -> str:
        """A fresh run id (Azure has no upload id): the blocks it names never mix with another
        run's, even on the same blob. Nothing is sent; the conditions are checked at the
        commit."""
        self._prepare(request)  # refuse a malformed request now rather than at the end
        return uuid.uuid4().hex

    def upload_part(
        self, request: UploadRequest, upload_id: str, part: PartInfo, body: BinaryIO, digest: str
    ) -> PartInfo:
        """Put Block of the part's bytes, streamed (never more than `part.size` read from
        `body`), with the part's MD5 as Content-MD5 for the service to check (a mismatch is
        InvalidRequest).

        Azure cannot tell an unknown run from a new one, so this never raises NotFound for an
        upload id (only for a missing container): a block staged for a dead run is dropped
        with the other uncommitted blocks."""
        run = self._run(upload_id)
        self._check_part(request, part)
        md5 = digest.lower()  # PartLimits.digest is "md5" here
        if not _MD5.fullmatch(md5):
            raise InvalidRequest(f"{request.key}: part md5 is not 32 hex digits")
        data = _PartBody(body, part.size, self._where(request.key))
        try:
            with self._errors(request.key):
                self._blob(request.key).stage_block(
                    _block_name(run, part.number),
                    data,  # type: ignore[arg-type]  # read like a file: read(n), len, tell
                    length=part.size,
                    transactional_content_md5=bytes.fromhex(md5),
                )
        except ProviderError:
            if data.failure is not None:  # the body's own error, not the service's
                raise data.failure from None
            raise
        if data.tell() != part.size:  # the SDK sent less than the part: never commit that
            raise InvalidRequest(f"{self._where(request.key)}: part {part.number} sent short")
        return PartInfo(
            number=part.number,
            offset=part.offset,
            size=part.size,
            token=_block_token(run, part.number),
            md5=md5,
        )

    def list_parts(self, request: UploadRequest, upload_id: str) -> builtins.list[PartInfo]:
        """The run's parts among the blob's uncommitted blocks, by number; NotFound only for a
        missing container.

        Azure keeps no record of a run: a run that was completed, aborted or dropped by the
        service (7 days), and one that has not sent a part yet, all answer [] (never
        NotFound), and after `abort_multipart` the parts stay listed until the service drops
        them. A block's offset is the sum of the sizes before it, so the parts are reported
        up to the first missing number only (those after it are sent again on a resume)."""
        run = self._run(upload_id)
        try:
            with self._errors(request.key):
                _, uncommitted = self._blob(request.key).get_block_list("uncommitted")
        except ContainerMissing:
            raise
        except NotFound:
            return []  # no blob and no uncommitted blocks at all
        sizes: dict[int, int] = {}
        for block in uncommitted:
            found = _BLOCK_NAME.fullmatch(str(block.id))
            if found and found.group(1) == run:
                sizes[int(found.group(2))] = int(block.size or 0)
        parts: list[PartInfo] = []
        offset = 0
        number = 1
        while number in sizes:
            size = sizes[number]
            parts.append(PartInfo(number, offset, size, token=_block_token(run, number)))
            offset += size
            number += 1
        return parts

    def complete_multipart(
        self, request: UploadRequest, upload_id: str, parts: builtins.list[PartInfo]
    ) -> ObjectInfo:
        """Put Block List of the run's blocks in order, with the metadata, the tier and the
        conditions (If-None-Match: * / If-Match), which the service checks at this moment.

        The blob's Content-MD5 is `request.md5` (issue 4: Azure computes it only for single
        puts, and other tools check a download by it); a request without one commits a blob
        without. A block that is gone (dropped after 7 days, or discarded by another
        writer's commit of the blob) is NotFound: start over."""
        metadata, sha256, conditions = self._prepare(request)
        run = self._run(upload_id)
        md5 = request.md5.lower() if request.md5 is not None else None
        if md5 is not None and not _MD5.fullmatch(md5):
            raise InvalidRequest(f"{request.key}: md5 is not 32 hex digits")
        settings = ContentSettings(content_md5=bytearray.fromhex(md5) if md5 else None)
        offset = 0
        for number, part in enumerate(parts, start=1):
            self._check_part(request, part)
            if part.number != number or part.offset != offset:
                raise InvalidRequest(f"{request.key}: parts must be 1..N, in order, contiguous")
            offset += part.size
        if offset != request.size:
            raise InvalidRequest(f"{request.key}: parts hold {offset} of {request.size} bytes")
        # The block ids follow from the run and the numbers (the parts' tokens are the same).
        blocks = [BlobBlock(block_id=_block_name(run, part.number)) for part in parts]
        try:
            with self._errors(request.key, conditional=bool(conditions)):
                answer = self._commit(
                    self._blob(request.key), blocks, metadata, conditions, settings
                )
        except InvalidRequest as exc:
            cause = exc.__cause__
            if isinstance(cause, HttpResponseError) and _code(cause) == "InvalidBlockList":
                where = self._where(request.key)
                raise NotFound(f"{where}: parts of upload {run} are gone") from cause
            raise
        return self._written(request, answer, sha256, md5)

    def abort_multipart(self, request: UploadRequest, upload_id: str) -> None:
        """Nothing to do, and nothing that could be done: Azure has no call that drops
        uncommitted blocks (short of committing the blob, which would replace it or make it
        appear). Nothing was ever visible; the run's blocks stay listable until the service
        drops them, 7 days after the last write, or until the blob is committed."""
        self._run(upload_id)

    def download_range(
        self, key: str, sink: BinaryIO, offset: int, length: int, if_match: str
    ) -> ObjectInfo:
        """Get Blob of the range, If-Match the version, streamed into `sink`; the info is of
        the whole blob (its size too, not the range's). A missing blob is NotFound, a replaced
        one PreconditionFailed, as for `download`."""
        if offset < 0 or length < 0:
            raise InvalidRequest(f"{key}: negative range")
        conditions: dict[str, Any] = {
            "etag": _quoted(if_match),
            "match_condition": MatchConditions.IfNotModified,
        }
        if length == 0:  # an empty range cannot be asked for: the version still must hold
            return self._stat_if_match(key, if_match)
        with self._errors(key):
            # The first answer (up to GET_CHUNK_SIZE) comes now, with the whole size in its
            # Content-Range; the rest is fetched while `sink` is written, If-Match too.
            downloader = self._blob(key).download_blob(
                offset=offset, length=length, max_concurrency=1, **conditions
            )
            props = downloader.properties
            size = _full_size(props)
            if size is not None and offset + length > size:
                raise InvalidRequest(
                    f"{self._where(key)}: range {offset}+{length} is past the end ({size})"
                )
            written = downloader.readinto(sink)
        if written != length:
            raise InvalidRequest(f"{self._where(key)}: range {offset}+{length} came short")
        if size is None:  # no Content-Range to read the whole size from: ask for it
            return self._stat_if_match(key, if_match)
        return dataclasses.replace(self._info(key, props), size=size)

    def _stat_if_match(self, key: str, if_match: str) -> ObjectInfo:
        """The blob's info if it still is version `if_match` (PreconditionFailed otherwise)."""
        with self._errors(key):
            props = self._blob(key).get_blob_properties(
                etag=_quoted(if_match), match_condition=MatchConditions.IfNotModified
            )
        return self._info(key, props)

    @staticmethod
    def _run(upload_id: str) -> str:
        """The run id in `upload_id`, checked: it is part of every block id, whose length
        must not vary."""
        if not _RUN.fullmatch(upload_id):
            raise InvalidRequest(f"not an Azure multipart upload id: {upload_id[:40]!r}")
        return upload_id

    @staticmethod
    def _check_part(request: UploadRequest, part: PartInfo) -> None:
        """A part Put Block can take, inside the object."""
        if not 1 <= part.number <= MAX_BLOCKS:
            raise InvalidRequest(f"{request.key}: part number {part.number} not in 1..50000")
        if not 1 <= part.size <= MAX_BLOCK_SIZE:
            raise InvalidRequest(f"{request.key}: part size {part.size} not in 1..4000 MiB")
        if part.offset < 0 or part.offset + part.size > request.size:
            raise InvalidRequest(f"{request.key}: part {part.number} lies outside the object")

    def download(self, key: str, sink: BinaryIO, if_match: str | None = None) -> ObjectInfo:
        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions = {
                "etag": _quoted(if_match),
                "match_condition": MatchConditions.IfNotModified,
            }
        try:
            with self._errors(key):
                # The first answer pins the version: every further range is asked If-Match it.
                downloader = self._blob(key).download_blob(max_concurrency=1, **conditions)
                downloader.readinto(sink)
        except PreconditionFailed:
            if if_match is not None:
                raise
            # Unasked-for: the blob was replaced between two ranges; a fresh attempt reads the
            # new version whole.
            raise Transient(f"{self._where(key)}: replaced while reading") from None
        return self._info(key, downloader.properties)

    def delete(self, key: str, if_match: str | None = None) -> None:
        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions = {
                "etag": _quoted(if_match),
                "match_condition": MatchConditions.IfNotModified,
            }
        try:
            with self._errors(key):
                self._blob(key).delete_blob(**conditions)
        except ContainerMissing:
            raise
        except NotFound:
            pass  # already gone: what a delete wants
        except PreconditionFailed:
            # Some servers (Azurite) answer 412 rather than 404 to a conditional delete of a
            # missing blob: a blob that is gone is still what a delete wants.
            try:
                self.stat(key)
            except ContainerMissing:
                raise
            except NotFound:
                return
            raise

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        source = self._blob(src_key)
        target = self._blob(dst_key)
        params: dict[str, Any] = {
            # Create-only on the destination, enforced by the service.
            "match_condition": MatchConditions.IfMissing,
            "standard_blob_tier": self._tier,
        }
        if if_match is not None:
            params["source_etag"] = _quoted(if_match)
            params["source_match_condition"] = MatchConditions.IfNotModified
        # Same account: the service reads the source with this request's own authorization
        # (its URL carries the SAS when that is the credential). Metadata=None keeps the
        # source's metadata, mtime and sha256 included.
        try:
            answer = target.start_copy_from_url(source.url, **params)
        except _SDK_ERRORS as exc:
            refused = self._copy_refused(exc, src_key, dst_key, if_match)
            if isinstance(refused, PreconditionFailed):
                return self._earlier_copy(src_key, dst_key, if_match, refused)
            raise refused from exc
        if answer.get("copy_status") != "success":
            self._wait_for_copy(target, dst_key, str(answer.get("copy_id") or ""))
        return self.stat(dst_key)

    def _copy_refused(
        self, exc: Exception, src_key: str, dst_key: str, if_match: str | None
    ) -> ProviderError:
        """What a refused Copy Blob means: a missing source (a 404 that is not the container
        gone) is NotFound, or PreconditionFailed under `if_match` (stale); the rest is said of
        the destination, a 409 / 412 as PreconditionFailed."""
        if (
            isinstance(exc, HttpResponseError)
            and exc.status_code == 404
            and _code(exc) not in _CONTAINER_GONE
        ):  # the source is missing: stale (if_match) or never there
            where = self._where(src_key)
            if if_match is None:
                return NotFound(f"{where}: not found")
            return PreconditionFailed(f"{where}: no longer exists")
        return _translate(exc, self._where(dst_key), container=self.container, conditional=True)

    def _earlier_copy(
        self, src_key: str, dst_key: str, if_match: str | None, refused: PreconditionFailed
    ) -> ObjectInfo:
        """A copy the service refused on a condition: when the destination holds the source's
        very version (`holds_copy_of`), it is an earlier attempt's copy whose answer was lost
        (or whose look afterwards failed), and counts as done. It must be a finished copy:
        one still pending (or failed) holds no whole version yet, and deleting its source (a
        move) would fail it. Else `refused` stands: the source changed, or the name holds
        something else."""
        try:
            with self._errors(dst_key):
                props = self._blob(dst_key).get_blob_properties()
            source = self.stat(src_key)
        except NotFound:
            raise refused from None
        if if_match is not None and source.etag != if_match:
            raise refused
        if props.copy.status not in (None, "success"):
            raise refused
        found = self._info(dst_key, props)
        if holds_copy_of(source, found) is not True:
            raise refused
        return found

    def set_mtime(self, key: str, mtime_ns: int, if_match: str) -> ObjectInfo:
        """Set Blob Metadata on that version (If-Match), with the `mtime` replaced and the rest
        of the metadata as it was (the call replaces all of it). Content settings and tier are
        not touched. Azure gives the blob a new ETag: the answer's is returned."""
        with self._errors(key):
            props = self._blob(key).get_blob_properties(
                etag=_quoted(if_match), match_condition=MatchConditions.IfNotModified
            )
        metadata = dict(props.metadata or {})
        metadata[MTIME_META] = format_mtime(mtime_ns)
        with self._errors(key, conditional=True):
            answer = self._blob(key).set_blob_metadata(
                metadata, etag=_quoted(if_match), match_condition=MatchConditions.IfNotModified
            )
        modified = answer.get("last_modified")
        return dataclasses.replace(
            self._info(key, props),
            etag=_etag(answer.get("etag")),
            modified=modified.timestamp() if isinstance(modified, datetime) else time.time(),
            mtime_ns=mtime_ns,
        )

    def _wait_for_copy(self, target: BlobClient, dst_key: str, copy_id: str) -> None:
        """Poll a pending copy to its end; a failed or stuck copy leaves no destination."""
        deadline = time.monotonic() + COPY_TIMEOUT
        delay = 0.1
        while True:
            with self._errors(dst_key):
                props = target.get_blob_properties()
            status = props.copy.status
            if status == "success":
                return
            if status == "pending" and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            with self._errors(dst_key):
                if status == "pending":
                    target.abort_copy(copy_id)
                target.delete_blob(
                    etag=_quoted(_etag(props.etag)),
                    match_condition=MatchConditions.IfNotModified,
                )
            raise Transient(f"{self._where(dst_key)}: server-side copy {status or 'lost'}")

    def check(self) -> None:
        self.ensure_root()
        self.probe()

    def probe(self) -> None:
        """The container's properties, or ContainerMissing (and the other sentinels)."""
        try:
            with self._errors(None):
                self._container.get_container_properties()
        except PermissionDenied:
            # A container-scoped SAS may list blobs without being allowed the container's
            # properties: one page of at most one blob proves the root as well.
            with self._errors(None):
                pages = self._container.list_blobs(
                    name_starts_with=self.prefix or None, results_per_page=1
                ).by_page()
                next(pages, None)

    def close(self) -> None:
        self._service.close()
        if self._credential is not None:
            self._credential.close()

    @staticmethod
    def _info(key: str, props: BlobProperties) -> ObjectInfo:
        """ObjectInfo from the SDK's BlobProperties (an SDK listing's item,
        get_blob_properties or a downloader's properties; metadata included)."""
        return AzureProvider._listed_info(key, ListedBlob.of(props))

    @staticmethod
    def _listed_info(key: str, blob: ListedBlob) -> ObjectInfo:
        """ObjectInfo from a listed blob's fields: the one place either path builds it."""
        metadata = blob.metadata
        return ObjectInfo(
            key=key,
            size=blob.size,
            etag=_etag(blob.etag),
            modified=blob.modified,
            mtime_ns=parse_stated_mtime(metadata.get(MTIME_META)),
            sha256=_sha256(metadata),
            md5=_hex(blob.md5),
            has_metadata=True,
            archived=_archived(blob.tier, blob.archive_status),
            origin=metadata.get(ORIGIN_META),
        )

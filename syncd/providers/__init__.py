"""Storage backends behind one small Protocol; `open_provider` turns a remote URL into one.

The rest of syncd imports from here only: the Protocol, its value types, the sentinel errors,
and the factory. Adapters are imported lazily so that a file:// pair never loads boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from syncd.providers.base import (
    Capabilities,
    MultipartProvider,
    ObjectInfo,
    PartInfo,
    PartLimits,
    Provider,
    UploadRequest,
)
from syncd.providers.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    OptionError,
    PermissionDenied,
    PreconditionFailed,
    ProviderError,
    Throttled,
    Transient,
)
from syncd.providers.options import (
    OPTIONS_BY_SCHEME,
    AzureOptions,
    FileOptions,
    GCSOptions,
    S3Options,
)
from syncd.providers.url import RemoteURL, RemoteURLError, parse_remote_url

__all__ = [
    "Cancelled",
    "Capabilities",
    "InvalidRequest",
    "MultipartProvider",
    "NotFound",
    "ObjectInfo",
    "OptionError",
    "PartInfo",
    "PartLimits",
    "PermissionDenied",
    "PreconditionFailed",
    "Provider",
    "ProviderError",
    "RemoteURL",
    "RemoteURLError",
    "Throttled",
    "Transient",
    "UploadRequest",
    "open_provider",
]


def open_provider(
    url: str, options: Mapping[str, Any] | BaseModel | None = None, *, workers: int = 8
) -> Provider:
    """The adapter for `url`, with its scheme's options validated.

    Raises RemoteURLError for a bad URL and InvalidRequest for bad options; the message names
    the option but never its value (options hold credentials).
    """
    remote = parse_remote_url(url)
    validated = _options(remote.scheme, options)
    if isinstance(validated, S3Options):
        from syncd.providers.s3 import S3Provider

        return S3Provider(remote, validated, workers=workers)
    if isinstance(validated, FileOptions):
        from syncd.providers.local import FileProvider

        return FileProvider(remote, validated)
    if isinstance(validated, GCSOptions):
        from syncd.providers.gcs import GCSProvider

        return GCSProvider(remote, validated, workers=workers)
    if isinstance(validated, AzureOptions):
        from syncd.providers.azure import AzureProvider

        return AzureProvider(remote, validated, workers=workers)
    raise InvalidRequest(f"{remote.scheme}:// remotes are not supported")  # pragma: no cover


def _options(scheme: str, options: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    model = OPTIONS_BY_SCHEME[scheme]
    if isinstance(options, model):
        return options
    if isinstance(options, BaseModel):
        raise InvalidRequest(f"{type(options).__name__} does not apply to {scheme}:// remotes")
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "options"
        raise OptionError(where, first["msg"]) from None

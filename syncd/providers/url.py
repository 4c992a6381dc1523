"""Parsing of remote URLs: `s3://BUCKET[/PREFIX]`, `file:///ABSOLUTE/PATH`, and later gs:// / az://."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote

from syncd.providers.errors import redact_url_passwords

SUPPORTED_SCHEMES = ("file", "s3", "gs", "az")
KNOWN_SCHEMES = ("file", "s3", "gs", "az")

# S3's rules for bucket names (the general-purpose subset every S3 implementation accepts).
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,61}[a-z0-9]$")
#: A bucket name in the form of an IPv4 address (192.168.5.4), which S3 and GCS refuse.
_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# Azure: 3-63 characters, lowercase letters, digits and single hyphens, no hyphen at either end.
_AZ_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$")


class RemoteURLError(ValueError):
    """The remote URL cannot be used; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class RemoteURL:
    """A parsed remote: `bucket` is the bucket/container (empty for file://), `prefix` is either
    empty or ends with '/', so that prefix `a/` never matches keys under `ab/`."""

    scheme: str
    bucket: str
    prefix: str
    path: str = ""  # file:// only: the absolute folder

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"{self.scheme}://{self.bucket}/{self.prefix}"


def parse_remote_url(url: str) -> RemoteURL:
    """Parse and validate a remote URL, raising RemoteURLError with a one-line reason.

    The reason quotes the URL (or its bucket) with a user-info password masked as `***`:
    `s3://user:secret@bucket` is no valid remote, but its password must not be printed.
    """
    shown = redact_url_passwords(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RemoteURLError(
            f"{shown!r} is not a URL (expected s3://BUCKET/PREFIX or file:///PATH)"
        )
    scheme = scheme.lower()
    if scheme not in KNOWN_SCHEMES:
        supported = ", ".join(s + "://" for s in SUPPORTED_SCHEMES)
        raise RemoteURLError(f"unknown scheme {scheme}:// (supported: {supported})")
    if scheme not in SUPPORTED_SCHEMES:
        raise RemoteURLError(f"{scheme}:// remotes are not supported by this version of syncd")
    if scheme == "file":
        _refuse_query(rest)
        path = unquote(_without_localhost(rest, shown))
        if not path.startswith("/"):
            raise RemoteURLError(
                f"file:// needs an absolute path (file:///ABSOLUTE/PATH), got {shown!r}"
            )
        if any(part in (".", "..") for part in path.split("/")):
            # Dot segments are removed (RFC 3986), as from any URL's path: read as is, a
            # folder named before a `..` that did not exist yet was made (outside the
            # remote), and a dry run listed `nope/../tgt` as missing, its plan not the run's.
            path = posixpath.normpath(path)
        path = "/" + path.strip("/") if path.strip("/") else "/"
        return RemoteURL(scheme="file", bucket="", prefix="", path=path)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise RemoteURLError(f"{shown!r} names no bucket")
    _check_bucket(scheme, bucket, shown.partition("://")[2].partition("/")[0])
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise RemoteURLError(f"prefix of {shown!r} may not contain '.' or '..' segments")
    normalized = "/".join(parts) + "/" if parts else ""
    return RemoteURL(scheme=scheme, bucket=bucket, prefix=normalized)


def _refuse_query(rest: str) -> None:
    """A `?query` or `#fragment` of a file:// URL means nothing to a folder, but taken as part
    of the path it named another folder (`dst?x=1`): refused, not guessed at. A literal `?`
    or `#` in a folder's name is written %3F / %23 (file:// paths are %-decoded). A bucket's
    prefix takes them as they are, as `aws s3` and rclone do: they are legal in keys, and a
    prefix is not %-decoded."""
    if "?" in rest or "#" in rest:
        raise RemoteURLError(
            "a remote URL takes no query (?...) or fragment (#...) "
            "(in a folder name, write ? as %3F and # as %23)"
        )


def _without_localhost(rest: str, shown: str) -> str:
    """`rest` (what follows `file://`) with the host part `localhost` dropped: RFC 8089 lets
    `file://localhost/PATH` name the local `/PATH`. Any other host (a remote machine, or a
    relative path written `file://docs`) is refused: syncd reaches local folders only."""
    if rest.startswith("/") or not rest:
        return rest
    host, slash, path = rest.partition("/")
    if host.lower() == "localhost":
        return slash + path
    raise RemoteURLError(
        "file:// takes no host other than localhost: write an absolute path as "
        f"file:///ABSOLUTE/PATH (got {shown!r})"
    )


def _check_bucket(scheme: str, bucket: str, shown: str) -> None:
    """The provider's naming rules; `shown` is `bucket` as a message may quote it."""
    if scheme == "s3" and not _S3_BUCKET.match(bucket):
        raise RemoteURLError(
            f"invalid S3 bucket name {shown!r} (3-63 lowercase letters, digits, '.' or '-')"
        )
    if scheme == "gs" and not _GCS_BUCKET.match(bucket):
        raise RemoteURLError(
            f"invalid GCS bucket name {shown!r} (3-63 lowercase letters, digits, '.', '-' or '_')"
        )
    if scheme in ("s3", "gs"):
        # Both services refuse these too, but only at the first request, in words of
        # their own (a malformed request, or a bucket that does not exist).
        service = "S3" if scheme == "s3" else "GCS"
        if ".." in bucket:
            raise RemoteURLError(f"invalid {service} bucket name {shown!r} (two periods in a row)")
        if _IP_ADDRESS.match(bucket):
            raise RemoteURLError(
                f"invalid {service} bucket name {shown!r} (it may not look like an IP address)"
            )
    if scheme == "az" and not _AZ_CONTAINER.match(bucket):
        raise RemoteURLError(
            f"invalid Azure container name {shown!r} (3-63 lowercase letters, digits or '-')"
        )

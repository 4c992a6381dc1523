"""The sentinel errors every provider adapter maps its SDK's exceptions onto.

The engine only ever sees these, never a boto3 / google / azure exception, so its decisions
(retry, conflict handling, per-file failure) are written once for every backend.
"""

from __future__ import annotations

import re

#: The password of a URL's user info (`scheme://user:password@host`), as an SDK's message
#: may quote an endpoint: everything a user sees of an error goes through a ProviderError.
#: Up to the last `@` before the path: a password may hold an `@` its writer did not escape.
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/\s]*@")


def redact_url_passwords(text: str) -> str:
    """`http://me:secret@host` -> `http://me:***@host`, wherever it stands in `text`."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


class ProviderError(Exception):
    """Base of every error a provider raises on purpose. Its message never holds a URL's
    password (no secret is ever printed or logged)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_url_passwords(a) if isinstance(a, str) else a for a in args))


class NotFound(ProviderError):
    """The object (or the bucket / container / root folder) does not exist."""


class PreconditionFailed(ProviderError):
    """A conditional write or delete lost: someone else changed the object first.

    Never retried blindly; the engine re-reads the object and decides again.
    """


class PermissionDenied(ProviderError):
    """Credentials were rejected or lack the permission for this call."""


class Throttled(ProviderError):
    """The service asked us to slow down (S3 SlowDown, HTTP 429, Azure ServerBusy)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(ProviderError):
    """A failure that is likely to pass: timeouts, connection resets, 5xx answers."""


class InvalidRequest(ProviderError):
    """The service refused the request as malformed; retrying will not help."""


class OptionError(InvalidRequest):
    """A pair option its provider cannot use (a credentials file that is no key), found when
    the provider is set up. The message names it as `options.KEY`; the engine, which knows the
    pair's place in the config, puts that first, so it reads as every config error does:
    `pair 'docs': pairs[1].options.credentials_file: …`."""

    def __init__(self, option: str, reason: str, where: str = "options") -> None:
        super().__init__(f"{where}.{option}: {reason}")
        self.option, self.reason, self.where = option, reason, where

    def __reduce__(self) -> tuple[type[OptionError], tuple[str, str, str]]:
        return type(self), (self.option, self.reason, self.where)


class Cancelled(ProviderError):
    """The transfer was cancelled because the daemon is stopping. Never retried."""


class SourceChanged(ProviderError):
    """The file being sent got shorter while it was read: no fault of the remote, and no
    retry of the same bytes can help. The upload is dropped and the path looked at again
    once the file settles (issue 2: a torn file is never recorded as synced)."""

"""Per-scheme `options:` of a pair, validated so that a typo is a config error naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

#: YAML's spellings of a boolean, as `${VAR}` substitution leaves them: a string.
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _bool_from_text(value: object) -> object:
    """`create_bucket: ${CB}` with CB=true is the string "true" once substituted (quoted or
    not, a substitution is text): read as YAML would have read it unquoted. Anything else
    passes on to StrictBool, which refuses 1 or "1" (a typo more often than a yes)."""
    if isinstance(value, str):
        return _BOOL_WORDS.get(value.strip().lower(), value)
    return value


#: A boolean key: YAML's true/false (and yes/no, on/off), also as a substituted string.
ConfigBool = Annotated[StrictBool, BeforeValidator(_bool_from_text)]

#: What an endpoint must look like, said in every complaint about one.
URL_SHAPE = "not an http:// or https:// URL with a host (like http://127.0.0.1:9000)"


def is_endpoint_url(value: str) -> bool:
    """Can an SDK reach `value` as its endpoint: http(s), a host, a port if any in range?

    Checked up front because each SDK fails its own way on a malformed one: botocore with a
    ValueError (a traceback), google-cloud-storage only at the first request, and the Azure
    SDK takes "not a url" for a host name and then tries every credential it knows."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError when out of range or not a number
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(char.isspace() for char in value)
    )


def _endpoint(value: str | None) -> str | None:
    """A field validator's half: the value, or a one-line error that never echoes it (an
    endpoint may carry a password or a SAS)."""
    if value is not None and not is_endpoint_url(value):
        raise PydanticCustomError("endpoint_url", "{reason}", {"reason": URL_SHAPE})
    return value


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileOptions(_Options):
    """The local-folder remote's options; unknown keys are an error."""

    #: Make the folder (and its parents) when it does not exist, as `create_bucket` makes a
    #: bucket, instead of failing the pair.
    create_bucket: ConfigBool = False


class S3Options(_Options):
    """S3 (and S3-compatible) options. Unset values fall back to boto3's own chain
    (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_PROFILE`, shared config files, …)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = Field(default=None, repr=False)
    # Checked even when left out (validate_default): one key of the pair without the other
    # made boto3 sign with None, a TypeError deep in botocore at the first request.
    secret_access_key: str | None = Field(default=None, repr=False, validate_default=True)
    session_token: str | None = Field(default=None, repr=False, validate_default=True)
    storage_class: (
        Literal["STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE"] | None
    ) = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    verify_ssl: ConfigBool = True
    #: Create the bucket (in `region`, else the client's region) when it does not exist,
    #: instead of failing the pair.
    create_bucket: ConfigBool = False

    _check_endpoint = field_validator("endpoint_url")(_endpoint)

    @field_validator("secret_access_key")
    @classmethod
    def _keys_go_together(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Explicit keys come as a pair (the values are never echoed)."""
        if "access_key_id" not in info.data:
            return value  # access_key_id itself failed: that error is the one to read
        key_id = info.data["access_key_id"]
        if value is None and key_id is not None:
            raise _missing("required when access_key_id is given")
        if value is not None and key_id is None:
            raise _missing("given without access_key_id: give both keys, or neither")
        return value

    @field_validator("session_token")
    @classmethod
    def _token_needs_keys(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "secret_access_key" not in info.data:
            return value  # the keys' own error is the one to read
        if value is not None and info.data["secret_access_key"] is None:
            raise _missing("given without access_key_id and secret_access_key")
        return value


def _missing(reason: str) -> PydanticCustomError:
    return PydanticCustomError("missing_key", "{reason}", {"reason": reason})


class GCSOptions(_Options):
    """Google Cloud Storage options. Unset values fall back to Application Default Credentials
    and `STORAGE_EMULATOR_HOST`."""

    project: str | None = None
    credentials_file: str | None = None
    endpoint_url: str | None = None
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None
    #: Create the bucket (in `location`) when it does not exist, instead of failing the pair.
    create_bucket: ConfigBool = False
    #: Where a bucket made by `create_bucket` lives: a multi-region ("US", "EU", "ASIA"), a
    #: dual-region or a region ("europe-west1"). Ignored for a bucket that exists.
    location: str = Field(default="US", min_length=1)

    _check_endpoint = field_validator("endpoint_url")(_endpoint)


class AzureOptions(_Options):
    """Azure Blob options: a connection string (also `AZURE_STORAGE_CONNECTION_STRING`), or an
    account URL with a SAS token, an account key, or DefaultAzureCredential."""

    connection_string: str | None = Field(default=None, repr=False)
    account_url: str | None = None
    account_name: str | None = None
    account_key: str | None = Field(default=None, repr=False)
    sas_token: str | None = Field(default=None, repr=False)
    storage_class: Literal["Hot", "Cool", "Cold", "Archive"] | None = None
    #: Create the container when it does not exist, instead of failing the pair.
    create_bucket: ConfigBool = False

    _check_account_url = field_validator("account_url")(_endpoint)


OPTIONS_BY_SCHEME: dict[str, type[_Options]] = {
    "file": FileOptions,
    "s3": S3Options,
    "gs": GCSOptions,
    "az": AzureOptions,
}


#: The blob endpoint of Azure's local emulator, as the SDK reads `UseDevelopmentStorage=true`.
DEVELOPMENT_STORAGE = "http://127.0.0.1:10000/devstoreaccount1"
AZURE_SUFFIX = "core.windows.net"
DEFAULT_PORTS = {"http": 80, "https": 443}


def served_by(options: BaseModel, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where a bucket remote is served when that is not the service's own default: the
    endpoint of S3 or GCS (an option, else the SDK's variable), the Azure account's blob
    endpoint, resolved as each SDK resolves them and spelled one way (`server_name`): two
    spellings of one server are one server. A pair's state is bound to it
    (`Engine._take_place`): a bucket of the same name on another server is another remote,
    whose missing files were never deleted by anyone; and two pairs on one bucket of one
    server must not share a prefix (`config.model`). Never a secret: an endpoint is cut to
    scheme, host, port and path."""
    if isinstance(options, S3Options):
        return server_name(options.endpoint_url or _s3_variable(environ))
    if isinstance(options, GCSOptions):
        return server_name(options.endpoint_url or environ.get("STORAGE_EMULATOR_HOST"))
    if isinstance(options, AzureOptions):
        if options.connection_string:
            return _account(options.connection_string)
        if options.account_url:
            return server_name(options.account_url)
        if options.account_name:
            return _account_endpoint(options.account_name)
        if environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            return _account(environ["AZURE_STORAGE_CONNECTION_STRING"])
        return _account_endpoint(environ.get("AZURE_STORAGE_ACCOUNT"))
    return None


def _s3_variable(environ: Mapping[str, str]) -> str | None:
    """The endpoint boto3 takes from the environment: the service's variable first, and none
    when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS says to ignore them."""
    if environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None


def server_name(url: str | None) -> str | None:
    """An endpoint spelled one way, without what may be secret in it (user info, query,
    fragment): scheme and host in lower case, the scheme's default port left out, no
    trailing `/`. `HTTP://Minio:80/` and `http://minio` are one server."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None  # no URL (a stray bracket): the SDK refuses it when the pair is opened
    scheme, path = parts.scheme.lower(), parts.path.rstrip("/")
    try:
        port = parts.port
    except ValueError:  # a port out of range, refused when the pair is opened
        return f"{scheme}://{parts.netloc.rpartition('@')[2].lower()}{path}"
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    shown_port = f":{port}" if port is not None and port != DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{shown_port}{path}"


def _account_endpoint(name: str | None, suffix: str = AZURE_SUFFIX) -> str | None:
    """An Azure account's blob endpoint, as the SDK makes it from the account's name."""
    return f"https://{name.lower()}.blob.{suffix.lower()}" if name else None


def _account(connection_string: str) -> str | None:
    """The blob endpoint a connection string names (the key and SAS in it are left out): its
    BlobEndpoint, else made of its account name and endpoint suffix, as the SDK does."""
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    lowered = {key.strip().lower(): value.strip() for key, value in fields.items()}
    if lowered.get("usedevelopmentstorage", "").lower() == "true":
        return DEVELOPMENT_STORAGE
    return server_name(lowered.get("blobendpoint")) or _account_endpoint(
        lowered.get("accountname"), lowered.get("endpointsuffix") or AZURE_SUFFIX
    )


def served_by_before(options: BaseModel, environ: Mapping[str, str] = os.environ) -> str | None:
    """`served_by` as syncd spelled it before servers were spelled one way (f7e62a1), kept so
    that a state recorded then is still known as this pair's (`core.same_place`) where
    `same_server` cannot read the old spelling back: an IPv6 host without its brackets
    (`http://::1:9000`), an endpoint variable AWS_IGNORE_CONFIGURED_ENDPOINT_URLS ignores."""
    if isinstance(options, S3Options):
        return _bare_before(
            options.endpoint_url
            or environ.get("AWS_ENDPOINT_URL_S3")
            or environ.get("AWS_ENDPOINT_URL")
        )
    if isinstance(options, GCSOptions):
        return _bare_before(options.endpoint_url) or environ.get("STORAGE_EMULATOR_HOST") or None
    if isinstance(options, AzureOptions):
        if options.connection_string:
            return _account_before(options.connection_string)
        if options.account_url:
            return _bare_before(options.account_url)
        if options.account_name:
            return options.account_name
        if environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            return _account_before(environ["AZURE_STORAGE_CONNECTION_STRING"])
        return environ.get("AZURE_STORAGE_ACCOUNT") or None
    return None


def _bare_before(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def _account_before(connection_string: str) -> str | None:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    lowered = {key.strip().lower(): value.strip() for key, value in fields.items()}
    if lowered.get("usedevelopmentstorage", "").lower() == "true":
        return "devstoreaccount1"
    return _bare_before(lowered.get("blobendpoint")) or lowered.get("accountname") or None


def same_server(recorded: str, current: str | None) -> bool:
    """Is `recorded`, a `served_by` as an older syncd wrote it, the server `current` names?
    It spelled endpoints with default ports and a GCS emulator variable as given (respelled
    here), and an Azure account by its name alone (`team`, for
    `https://team.blob.core.windows.net`) or as `devstoreaccount1` for the emulator."""
    if current is None:
        return False
    if "://" in recorded:
        return server_name(recorded) == current
    if recorded == "devstoreaccount1" and current == DEVELOPMENT_STORAGE:
        return True
    host = urlsplit(current).hostname or ""
    return current.startswith("https://") and host.startswith(f"{recorded.lower()}.blob.")

"""Per-scheme `options:` of a pair, validated so that a typo is a config error naming the key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileOptions(_Options):
    """The local-folder remote takes no options today; unknown keys are still an error."""


class S3Options(_Options):
    """S3 (and S3-compatible) options. Unset values fall back to boto3's own chain
    (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_PROFILE`, shared config files, …)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = Field(default=None, repr=False)
    secret_access_key: str | None = Field(default=None, repr=False)
    session_token: str | None = Field(default=None, repr=False)
    storage_class: (
        Literal["STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE"] | None
    ) = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    verify_ssl: bool = True
    #: Create the bucket (in `region`, else the client's region) when it does not exist,
    #: instead of failing the pair.
    create_bucket: bool = False


class GCSOptions(_Options):
    """Google Cloud Storage options. Unset values fall back to Application Default Credentials
    and `STORAGE_EMULATOR_HOST`."""

    project: str | None = None
    credentials_file: str | None = None
    endpoint_url: str | None = None
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None
    #: Create the bucket (in `location`) when it does not exist, instead of failing the pair.
    create_bucket: bool = False
    #: Where a bucket made by `create_bucket` lives: a multi-region ("US", "EU", "ASIA"), a
    #: dual-region or a region ("europe-west1"). Ignored for a bucket that exists.
    location: str = Field(default="US", min_length=1)


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
    create_bucket: bool = False


OPTIONS_BY_SCHEME: dict[str, type[_Options]] = {
    "file": FileOptions,
    "s3": S3Options,
    "gs": GCSOptions,
    "az": AzureOptions,
}

"""Shared fixtures: a clean AWS environment, one moto server per session, a fresh bucket per test.

Emulators run as real subprocesses on loopback (see emulators.py) and are stopped by pid at the
end of the session. Nothing here is global except the AWS variables set below, which every test
(and every syncd subprocess a test starts) should see.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from emulators import Emulator, start_moto

from syncd.providers import open_provider

if TYPE_CHECKING:
    from test_providers import Root

#: Each remote kind beyond S3 keeps its emulator and fixtures in its own module.
pytest_plugins = ["fixtures_gcs", "fixtures_azure"]

# -- environment ----------------------------------------------------------------------------

#: Dummy credentials for the emulators; a real account must never be reachable from tests.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Variables of the machine that would change how boto3 reaches the emulators (this machine sets
#: AWS_CA_BUNDLE; a profile could bring its own endpoint or credentials).
AWS_REMOVED_ENV = (
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session", autouse=True)
def aws_test_env() -> Iterator[None]:
    """Point boto3 at dummy credentials for the whole session, and restore the environment."""
    saved = {name: os.environ.get(name) for name in (*AWS_TEST_ENV, *AWS_REMOVED_ENV)}
    os.environ.update(AWS_TEST_ENV)
    for name in AWS_REMOVED_ENV:
        os.environ.pop(name, None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- S3 (moto) ------------------------------------------------------------------------------


#: The session's moto server, once a test has asked for it (for the per-module reset).
_moto: list[Emulator] = []


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Emulator]:
    """One moto_server for the session; tests isolate themselves by bucket, not by server."""
    server = start_moto()
    _moto.append(server)
    yield server
    _moto.clear()
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def reset_moto_after_module() -> Iterator[None]:
    """moto keeps every object in memory and slows down as they pile up: forget them all
    after each test module (buckets are per test, so nothing a later module needs is lost)."""
    yield
    for server in _moto:
        server.reset()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client for a test's own setup and assertions (not the code under test)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=AWS_TEST_ENV["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )


@dataclass
class Bucket:
    endpoint_url: str
    bucket: str
    client: Any  # mypy_boto3_s3.S3Client

    def url(self, prefix: str = "") -> str:
        """The remote URL of `prefix` in this bucket: "s3://bucket/prefix/"."""
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}/" if prefix else f"s3://{self.bucket}/"


@pytest.fixture
def s3_bucket(moto_server: Emulator) -> Iterator[Bucket]:
    """A fresh, uniquely named, empty bucket on the session's moto server."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    client = s3_client(moto_server.endpoint_url)
    client.create_bucket(Bucket=name)
    yield Bucket(moto_server.endpoint_url, name, client)
    client.close()


@pytest.fixture
def s3_root(s3_bucket: Bucket) -> Iterator[Root]:
    """The conformance suite's s3 remote (see test_providers.Root)."""
    from test_providers import PREFIX, Root  # lazily: test_providers imports conftest

    def write_object(key: str, data: bytes) -> None:
        s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=key, Body=data)

    provider = open_provider(
        s3_bucket.url(PREFIX), {"endpoint_url": s3_bucket.endpoint_url}, workers=16
    )
    yield Root("s3", provider, write_object)
    provider.close()

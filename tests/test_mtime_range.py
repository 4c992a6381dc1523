"""File times at the edges: before 1970, past what 64-bit nanoseconds hold (2262-04-11), and
`mtime` metadata that no file time fits. "The local modification time travels in object
metadata, and a download restores it": every kind of remote, on its real emulator.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness import Setup, syncd, tree
from remotes import ALL_KINDS, BUCKET_KINDS, AzureRemote, GCSRemote, Remote, S3Remote, remote_for
from test_set_mtime import _object, _stated_mtime

from syncd.providers.base import format_mtime, parse_mtime
from syncd.providers.gcs import _mtime as gcs_mtime

#: 2300-01-01T00:00:00.000000123Z: a time files can have and 64-bit nanoseconds cannot.
FAR_FUTURE_NS = 10_413_792_000 * 1_000_000_000 + 123
#: The last nanosecond a signed 64-bit count holds: 2262-04-11T23:47:16.854775807Z.
INT64_MAX = 2**63 - 1
#: 1965-01-01T00:00:00.123456789Z (touch -d 1965-01-01), to the nanosecond.
PRE_1970_NS = -157_766_400 * 1_000_000_000 + 123_456_789


@pytest.fixture(params=ALL_KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


@pytest.fixture(params=BUCKET_KINDS)
def bucket_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return remote_for(request.param, request, tmp_path)


def _machine(tmp_path: Path, remote: Remote, **pair: Any) -> Setup:
    setup = Setup(tmp_path, remote.url, options=remote.options, pair_extra=pair)
    setup.write()
    return setup


def _once(setup: Setup) -> str:
    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "too large" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    return result.stdout


def _recorded(setup: Setup) -> dict[str, int]:
    with sqlite3.connect(setup.state_db) as db:
        return dict(db.execute("SELECT path, mtime_ns FROM files").fetchall())


def _trashed(setup: Setup, remote: Remote) -> list[str]:
    local = [
        p.relative_to(setup.local).as_posix()
        for p in (setup.local / ".syncd" / "trash").rglob("*")
        if p.is_file()
    ]
    return local + [key for key in remote.listing() if key.startswith(".syncd-trash/")]


def _put_with_metadata(remote: Remote, key: str, data: bytes, metadata: dict[str, str]) -> None:
    """An object written by another tool, with whatever metadata it chose."""
    if isinstance(remote, S3Remote):
        remote.bucket.client.put_object(
            Bucket=remote.bucket.bucket, Key=remote.prefix + key, Body=data, Metadata=metadata
        )
    elif isinstance(remote, GCSRemote):
        remote.bucket.write(remote.prefix + key, data, metadata)
    else:
        assert isinstance(remote, AzureRemote)
        remote.container.write(remote.prefix + key, data, metadata)


# -- past 2262 ------------------------------------------------------------------------------


@pytest.mark.parametrize("first_on", ["machine", "remote"])
def test_a_file_stamped_past_2262_is_recorded_and_an_edit_of_it_syncs(
    tmp_path: Path, remote: Remote, first_on: str
) -> None:
    """A file stamped 2300 (on machine A, or on the remote: a folder's file time, an object's
    `mtime` metadata) gets a state record like any other; B's ordinary edit of it then comes
    down to A as an edit: not a conflict A's far-future time wins, nothing in any trash."""
    a = _machine(tmp_path / "a", remote, conflict="timestamp_wins")
    b = _machine(tmp_path / "b", remote, conflict="timestamp_wins")
    if first_on == "machine":
        (a.local / "arch.txt").write_bytes(b"old archive file\n")
        os.utime(a.local / "arch.txt", ns=(FAR_FUTURE_NS, FAR_FUTURE_NS))
        assert "1 uploaded" in _once(a)
        # Held, recorded and sent as the last time 64-bit nanoseconds hold.
        assert _recorded(a) == {"arch.txt": INT64_MAX}
        assert _stated_mtime(remote, "arch.txt") == INT64_MAX
    else:
        remote.put("arch.txt", b"old archive file\n", mtime_ns=FAR_FUTURE_NS)
        assert "1 downloaded" in _once(a)
        assert list(_recorded(a)) == ["arch.txt"]
    again = _once(a)
    assert again.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts"), again

    assert "1 downloaded" in _once(b)
    assert list(_recorded(b)) == ["arch.txt"]
    (b.local / "arch.txt").write_bytes(b"b edits the file\n")
    assert "1 uploaded" in _once(b)

    pulled = _once(a)
    assert pulled.startswith("docs: 0 uploaded, 1 downloaded, 0 failed, 0 conflicts"), pulled
    for machine in (a, b):
        assert tree(machine.local) == {"arch.txt": b"b edits the file\n"}
        assert _trashed(machine, remote) == []
    assert remote.objects() == {"arch.txt": b"b edits the file\n"}
    assert (a.local / "arch.txt").stat().st_mtime_ns == (b.local / "arch.txt").stat().st_mtime_ns


# -- metadata no file time fits --------------------------------------------------------------


@pytest.mark.parametrize(
    "stated", ["99999999999999999999", "-99999999999999999999", "9223372036.854775808"]
)
def test_an_mtime_no_file_time_fits_falls_back_to_last_modified(
    tmp_path: Path, bucket_remote: Remote, stated: str
) -> None:
    """As `abc`, `nan` or `1e20` do: the object comes down with its LastModified, once."""
    remote = bucket_remote
    _put_with_metadata(remote, "report.txt", b"written by another tool\n", {"mtime": stated})
    setup = _machine(tmp_path, remote)
    assert "1 downloaded" in _once(setup)
    assert tree(setup.local) == {"report.txt": b"written by another tool\n"}
    last_modified = remote.listing()["report.txt"][1]
    mtime = (setup.local / "report.txt").stat().st_mtime_ns / 1e9
    assert abs(mtime - last_modified) < 1, (mtime, last_modified)
    again = _once(setup)
    assert again.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts"), again


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000.123456789", 1_700_000_000_123_456_789),
        ("1700000000", 1_700_000_000_000_000_000),
        ("1700000000.5", 1_700_000_000_500_000_000),
        ("1700000000.1234567891", 1_700_000_000_123_456_789),
        ("-157766399.876543211", PRE_1970_NS),
        ("-0.000000001", -1),
        ("-5", -5_000_000_000),
        ("9223372036.854775807", INT64_MAX),
        ("-9223372036.854775808", -(2**63)),
        ("9223372036.854775808", None),
        ("-9223372036.854775809", None),
        ("99999999999999999999", None),
        ("9" * 5000, None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("1e20", None),
        ("1_000", None),
        ("--5", None),
        ("-", None),
        (".", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_mtime(value: str | None, expected: int | None) -> None:
    assert parse_mtime(value) == expected
    if expected is not None:
        assert parse_mtime(format_mtime(expected)) == expected


def test_format_mtime_signs_a_time_before_1970_as_a_whole() -> None:
    """As rclone writes it (and reads it: "-1.5" is 1.5 seconds before the epoch)."""
    assert format_mtime(-1_500_000_000) == "-1.500000000"
    assert format_mtime(-1) == "-0.000000001"
    assert format_mtime(PRE_1970_NS) == "-157766399.876543211"
    assert format_mtime(1_700_000_000_000_000_001) == "1700000000.000000001"


# -- before 1970 ----------------------------------------------------------------------------


def test_a_pre_1970_mtime_travels_to_the_nanosecond(tmp_path: Path, remote: Remote) -> None:
    a, b = _machine(tmp_path / "a", remote), _machine(tmp_path / "b", remote)
    (a.local / "old.txt").write_bytes(b"old\n")
    os.utime(a.local / "old.txt", ns=(PRE_1970_NS, PRE_1970_NS))
    assert "1 uploaded" in _once(a)
    assert _stated_mtime(remote, "old.txt") == PRE_1970_NS
    if remote.kind != "file":
        assert _object(remote, "old.txt")["metadata"]["mtime"] == "-157766399.876543211"

    assert "1 downloaded" in _once(b)
    assert (b.local / "old.txt").stat().st_mtime_ns == PRE_1970_NS
    for machine in (a, b):  # settled: nothing moves, no restamp either way
        again = _once(machine)
        assert again.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts"), again
        assert (machine.local / "old.txt").stat().st_mtime_ns == PRE_1970_NS
    assert _stated_mtime(remote, "old.txt") == PRE_1970_NS


def test_a_pre_1970_mtime_another_tool_stated_is_restored(tmp_path: Path, remote: Remote) -> None:
    remote.put("old.txt", b"old\n", mtime_ns=PRE_1970_NS)
    setup = _machine(tmp_path, remote)
    assert "1 downloaded" in _once(setup)
    assert (setup.local / "old.txt").stat().st_mtime_ns == PRE_1970_NS
    again = _once(setup)
    assert again.startswith("docs: 0 uploaded, 0 downloaded, 0 failed, 0 conflicts"), again


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1965-01-01T00:00:00.123456789Z", PRE_1970_NS),
        ("1964-12-31T23:00:00.123456789-01:00", PRE_1970_NS),
        ("2262-04-11T23:47:16.854775807Z", INT64_MAX),
        ("2300-01-01T00:00:00Z", None),
        ("1600-01-01T00:00:00Z", None),
    ],
)
def test_gcs_reads_an_rfc3339_mtime_in_the_same_range(value: str, expected: int | None) -> None:
    assert gcs_mtime({"mtime": value}) == expected

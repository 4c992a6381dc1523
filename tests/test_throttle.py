"""Bandwidth limiting: the bucket's arithmetic on a fake clock (exact and instant), threads sharing
one bucket on the real clock, the buckets the config asks for, and the read/write wrappers."""

from __future__ import annotations

import io
import threading
import time

import pytest

from syncd.engine.throttle import (
    CANCEL_POLL_SECONDS,
    MIN_DEFAULT_BURST,
    Limits,
    ThrottledReader,
    ThrottledWriter,
    TokenBucket,
    default_burst,
)
from syncd.providers.errors import Cancelled


class FakeTime:
    """A clock that moves only when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def fake_bucket(rate: int, burst: int | None = None) -> tuple[TokenBucket, FakeTime]:
    fake = FakeTime()
    return TokenBucket(rate, burst, clock=fake.clock, sleep=fake.sleep), fake


# -- the bucket's arithmetic -----------------------------------------------------------------


def test_default_burst_is_a_quarter_second_but_at_least_64k() -> None:
    assert default_burst(1000) == MIN_DEFAULT_BURST == 64 * 1024
    assert default_burst(10 * 1024 * 1024) == 10 * 1024 * 1024 // 4
    assert TokenBucket(1000).burst == 64 * 1024


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate)


def test_burst_must_be_positive() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1000, 0)


def test_negative_consume_is_refused() -> None:
    bucket, _ = fake_bucket(1000, 500)
    with pytest.raises(ValueError, match="negative"):
        bucket.consume(-1)


def test_within_the_burst_nothing_sleeps() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(0)
    bucket.consume(200)
    bucket.consume(300)
    assert fake.sleeps == []
    assert bucket.available() == pytest.approx(0)


def test_sleeps_total_minus_initial_burst() -> None:
    """5000 B at 1000 B/s is 5 s, less the 500 B the full bucket lets through at once."""
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(5000)
    assert sum(fake.sleeps) == pytest.approx(4.5)
    assert fake.now == pytest.approx(104.5)


def test_a_big_consume_is_taken_in_burst_sized_slices() -> None:
    fake = FakeTime()
    debts: list[float] = []

    def watching_sleep(seconds: float) -> None:
        debts.append(bucket.available())  # the lock is not held while sleeping
        fake.sleep(seconds)

    bucket = TokenBucket(1000, 500, clock=fake.clock, sleep=watching_sleep)
    bucket.consume(5000)
    # Each slice reserves at most one burst, so the debt slept off never exceeds one burst.
    assert len(fake.sleeps) == 9
    assert max(fake.sleeps) <= 500 / 1000 + 1e-9
    assert min(debts) >= -500 - 1e-9


def test_refill_is_capped_at_the_burst() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(500)
    fake.now += 60  # a long quiet spell earns one burst, not a minute of traffic
    assert bucket.available() == pytest.approx(500)
    bucket.consume(1500)
    assert sum(fake.sleeps) == pytest.approx(1.0)


def test_a_partly_refilled_bucket_waits_only_for_the_rest() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(500)
    fake.now += 0.2  # 200 B earned
    bucket.consume(500)
    assert fake.sleeps == [pytest.approx(0.3)]


def test_a_clock_stepping_back_takes_nothing_away() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(300)
    fake.now -= 10
    assert bucket.available() == pytest.approx(200)
    fake.now += 10.1  # back to where it was, plus 0.1 s: 100 B more
    assert bucket.available() == pytest.approx(300)


def test_cancelled_while_waiting_raises_and_gives_the_slice_back() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(500)
    calls: list[int] = []

    def cancelled() -> bool:
        calls.append(1)
        return len(fake.sleeps) >= 2  # turns true after two naps

    with pytest.raises(Cancelled):
        bucket.consume(500, cancelled)
    # It napped in short steps (so a stopping daemon is not held up) and then gave up.
    assert fake.sleeps == [pytest.approx(CANCEL_POLL_SECONDS)] * 2
    # The reserved slice never moved, so it is not charged: only the time slept has refilled.
    assert bucket.available() == pytest.approx(2 * CANCEL_POLL_SECONDS * 1000)


def test_cancelled_is_not_asked_when_nothing_waits() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(400, lambda: pytest.fail("no wait, so no need to ask"))
    assert fake.sleeps == []


def test_cancelled_that_stays_false_only_splits_the_sleep() -> None:
    bucket, fake = fake_bucket(1000, 500)
    bucket.consume(1500, lambda: False)
    assert sum(fake.sleeps) == pytest.approx(1.0)
    assert max(fake.sleeps) <= CANCEL_POLL_SECONDS + 1e-9


# -- threads share one bucket (real clock) -----------------------------------------------------


def test_two_threads_share_one_bucket_and_both_progress() -> None:
    rate, burst, per_thread, chunk = 20_000, 2_000, 15_000, 1_000
    bucket = TokenBucket(rate, burst)
    start = threading.Barrier(3)
    finished: dict[str, float] = {}
    received: dict[str, bytes] = {}

    def move(name: str) -> None:
        reader = ThrottledReader(io.BytesIO(name.encode() * per_thread), [bucket])
        parts: list[bytes] = []
        start.wait()
        while data := reader.read(chunk):
            parts.append(data)
        finished[name] = time.monotonic()
        received[name] = b"".join(parts)

    threads = [threading.Thread(target=move, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = max(finished.values()) - began

    expected = (2 * per_thread - burst) / rate  # 1.4 s: both threads' bytes, less the burst
    assert expected * 0.65 <= elapsed <= expected * 1.35
    # Fair enough: neither thread finished while the other had most of its bytes still to go.
    assert min(finished.values()) - began >= 0.6 * elapsed
    assert received == {"a": b"a" * per_thread, "b": b"b" * per_thread}


# -- the buckets the config asks for ---------------------------------------------------------


def test_unlimited_has_no_buckets() -> None:
    limits = Limits.from_rates(None, None, None)
    assert not limits
    assert limits.for_direction("upload") == []
    assert limits.for_direction("download") == []


def test_total_limit_is_one_bucket_shared_by_both_directions() -> None:
    limits = Limits.from_rates(1000, None, None)
    assert limits
    (up,) = limits.for_direction("upload")
    (down,) = limits.for_direction("download")
    assert up is down is limits.total
    assert up.rate == 1000


def test_direction_limit_applies_to_its_direction_only() -> None:
    limits = Limits.from_rates(None, 2000, None)
    assert limits
    assert limits.for_direction("upload") == [limits.upload]
    assert limits.for_direction("download") == []

    limits = Limits.from_rates(None, None, 3000)
    assert limits.for_direction("upload") == []
    assert limits.for_direction("download") == [limits.download]


def test_total_and_direction_limits_both_apply() -> None:
    limits = Limits.from_rates(1000, 2000, 3000)
    assert limits.total is not None
    assert limits.upload is not None
    assert limits.download is not None
    up = limits.for_direction("upload")
    down = limits.for_direction("download")
    assert up == [limits.total, limits.upload]
    assert down == [limits.total, limits.download]
    assert [b.rate for b in up] == [1000, 2000]
    assert [b.rate for b in down] == [1000, 3000]
    assert up[0] is down[0]  # the total is one bucket, not one per direction


def test_unknown_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="direction"):
        Limits().for_direction("sideways")  # type: ignore[arg-type]


def test_from_rates_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        Limits.from_rates(0, None, None)


def test_slowest_limit_sets_the_pace() -> None:
    fake = FakeTime()
    limits = Limits.from_rates(1000, 500, None, clock=fake.clock, sleep=fake.sleep)
    buckets = limits.for_direction("upload")
    for bucket in buckets:
        bucket.consume(bucket.burst)  # drain both default bursts
    fake.sleeps.clear()
    reader = ThrottledReader(io.BytesIO(b"x" * 1000), buckets)
    assert reader.read() == b"x" * 1000
    # 1000 B cost 1 s on the total bucket, then 1 s more to make 2 s on the 500 B/s one.
    assert sum(fake.sleeps) == pytest.approx(2.0)


# -- the wrappers ----------------------------------------------------------------------------


PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, every byte value


def test_reader_passes_bytes_through_and_reports_progress() -> None:
    bucket, fake = fake_bucket(1024, 1024)
    progress: list[int] = []
    reader = ThrottledReader(io.BytesIO(PAYLOAD), [bucket], on_bytes=progress.append)
    assert reader.readable()
    assert not reader.writable()
    parts = []
    while data := reader.read(3000):
        parts.append(data)
    assert b"".join(parts) == PAYLOAD
    assert progress == [3000, 3000, 3000, 1240]  # nothing reported for the empty read at EOF
    assert sum(fake.sleeps) == pytest.approx((len(PAYLOAD) - 1024) / 1024)


def test_reader_readinto_and_seek_are_delegated() -> None:
    progress: list[int] = []
    reader = ThrottledReader(io.BytesIO(PAYLOAD), [], on_bytes=progress.append)
    assert reader.seekable()
    buffer = bytearray(100)
    assert reader.readinto(buffer) == 100
    assert bytes(buffer) == PAYLOAD[:100]
    assert reader.tell() == 100
    assert reader.seek(-10, io.SEEK_END) == len(PAYLOAD) - 10
    assert reader.read() == PAYLOAD[-10:]
    assert reader.seek(0) == 0
    assert reader.read(5) == PAYLOAD[:5]
    assert progress == [100, 10, 5]


class ReadOnly:
    """A stream with `read` but no `readinto`, like some SDK bodies."""

    def __init__(self, data: bytes) -> None:
        self._raw = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._raw.read(size)

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        return self._raw.tell()


def test_reader_readinto_falls_back_to_read() -> None:
    bucket, _ = fake_bucket(10_000)
    reader = ThrottledReader(ReadOnly(b"hello"), [bucket])
    assert not reader.seekable()
    buffer = bytearray(8)
    assert reader.readinto(buffer) == 5
    assert bytes(buffer[:5]) == b"hello"
    assert reader.readinto(buffer) == 0
    assert bucket.available() == pytest.approx(bucket.burst - 5)


def test_reader_without_limits_is_a_straight_pass() -> None:
    raw = io.BytesIO(PAYLOAD)
    reader = ThrottledReader(raw, [])
    assert reader.read() == PAYLOAD


def test_reader_cancelled_while_throttled() -> None:
    bucket, _ = fake_bucket(1000, 500)
    reader = ThrottledReader(io.BytesIO(PAYLOAD), [bucket], cancelled=lambda: True)
    assert reader.read(500) == PAYLOAD[:500]  # within the burst: no wait, no question
    with pytest.raises(Cancelled):
        reader.read(500)


def test_writer_passes_bytes_through_and_reports_progress() -> None:
    bucket, fake = fake_bucket(1024, 1024)
    progress: list[int] = []
    sink = io.BytesIO()
    writer = ThrottledWriter(sink, [bucket], on_bytes=progress.append)
    assert writer.writable()
    assert not writer.readable()
    for start in range(0, len(PAYLOAD), 4096):
        chunk = PAYLOAD[start : start + 4096]
        assert writer.write(chunk) == len(chunk)
    assert writer.write(b"") == 0
    writer.flush()
    assert sink.getvalue() == PAYLOAD
    assert progress == [4096, 4096, 2048]
    assert sum(fake.sleeps) == pytest.approx((len(PAYLOAD) - 1024) / 1024)


def test_writer_without_limits_is_a_straight_pass() -> None:
    sink = io.BytesIO()
    writer = ThrottledWriter(sink, [])
    writer.write(PAYLOAD)
    assert sink.getvalue() == PAYLOAD


def test_writer_cancelled_while_throttled() -> None:
    bucket, _ = fake_bucket(1000, 500)
    writer = ThrottledWriter(io.BytesIO(), [bucket], cancelled=lambda: True)
    with pytest.raises(Cancelled):
        writer.write(b"x" * 600)

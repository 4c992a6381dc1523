"""Bandwidth limiting: `bandwidth_limit`, `upload_limit` and `download_limit` from the config.

One `TokenBucket` per configured limit is shared by every worker thread, so the limit holds for
the daemon as a whole, however many transfers run at once. A transfer passes its bytes through a
`ThrottledReader` (uploads) or `ThrottledWriter` (downloads), which takes every chunk from each
bucket of its direction (`Limits.for_direction`): the total limit and the direction's own one.

Without a limit (the common case) the bucket list is empty and the wrappers do no more than one
extra branch per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from syncd.providers.errors import Cancelled

if TYPE_CHECKING:
    from syncd.config import Config

KiB = 1024

#: The smallest default burst: below this a limit would cost a sleep on nearly every chunk.
MIN_DEFAULT_BURST = 64 * KiB

#: While a waiter can be cancelled it sleeps at most this long between looks at the flag, so a
#: stopping daemon is not held up by a slow limit.
CANCEL_POLL_SECONDS = 0.1

TransferDirection = Literal["upload", "download"]


def default_burst(rate: int) -> int:
    """A quarter second of traffic, but at least 64 KiB: a short burst keeps small transfers
    snappy without letting the average overshoot the limit by much."""
    return max(rate // 4, MIN_DEFAULT_BURST)


class TokenBucket:
    """A thread-safe token bucket: on average at most `rate` bytes per second, at most `burst`
    bytes at once after a quiet spell.

    Waiting works by reservation: a consumer takes its slice at once, letting the balance go
    negative, and then sleeps (outside the lock) until the bucket has refilled that debt. Slices
    are therefore served in the order they were asked for, so threads sharing a bucket all make
    progress, and a big `consume` is cut into `burst`-sized slices so that other threads get
    their turn between them instead of waiting for the whole of it.
    """

    def __init__(
        self,
        rate: int,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be greater than 0 bytes/s (got {rate})")
        if burst is None:
            burst = default_burst(rate)
        if burst <= 0:
            raise ValueError(f"burst must be greater than 0 bytes (got {burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)  # start full: the first transfer need not wait
        self._last = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"

    def _refill(self, now: float) -> None:
        """Credit the time since the last look (never negative: a clock that steps back must
        not take tokens away). Caller holds the lock."""
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._last = max(self._last, now)

    def available(self) -> float:
        """The balance now: positive is what may pass without waiting, negative is debt that
        already-reserved slices are sleeping off."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    def consume(self, n: int, cancelled: Callable[[], bool] | None = None) -> None:
        """Block until `n` bytes may pass.

        `n` may exceed the burst: it is taken in slices of at most `burst` bytes, each waited
        for in turn, so a big read is paced rather than refused. `cancelled` is consulted only
        while waiting (bytes that may pass at once just pass); when it turns true the slice
        being waited for is given back and `Cancelled` is raised.
        """
        if n < 0:
            raise ValueError(f"cannot consume a negative number of bytes ({n})")
        remaining = n
        while remaining > 0:
            piece = min(remaining, self.burst)
            self._take(piece, cancelled)
            remaining -= piece

    def _take(self, piece: int, cancelled: Callable[[], bool] | None) -> None:
        """Reserve one slice (at most `burst` bytes) and sleep off any debt it leaves."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= piece
            if self._tokens >= 0:
                return
            deadline = now + -self._tokens / self.rate
        while (left := deadline - self._clock()) > 0:
            if cancelled is None:
                self._sleep(left)
                continue
            if cancelled():
                self._give_back(piece)
                raise Cancelled("transfer cancelled while waiting for the bandwidth limit")
            self._sleep(min(left, CANCEL_POLL_SECONDS))

    def _give_back(self, piece: int) -> None:
        """Undo a reservation whose bytes will never move, so that other waiters (and the next
        transfer) are not charged for them."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(float(self.burst), self._tokens + piece)


def consume_all(
    buckets: Sequence[TokenBucket], n: int, cancelled: Callable[[], bool] | None = None
) -> None:
    """Take `n` bytes from each bucket in turn. The waits overlap (a bucket keeps refilling
    while we sleep on the one before it), so the slowest limit is what sets the pace."""
    for bucket in buckets:
        bucket.consume(n, cancelled)


@dataclass(frozen=True, slots=True)
class Limits:
    """The buckets the config asks for, built once and shared by every transfer.

    `total` is `bandwidth_limit` (uploads and downloads together); `upload` and `download` are
    the per-direction limits. Each is None when the key is unset.
    """

    total: TokenBucket | None = None
    upload: TokenBucket | None = None
    download: TokenBucket | None = None

    @classmethod
    def from_rates(
        cls,
        bandwidth: int | None,
        upload: int | None,
        download: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Limits:
        """Buckets for the given rates in bytes per second (None: unlimited)."""

        def bucket(rate: int | None) -> TokenBucket | None:
            return None if rate is None else TokenBucket(rate, clock=clock, sleep=sleep)

        return cls(total=bucket(bandwidth), upload=bucket(upload), download=bucket(download))

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """Buckets for a loaded config's `bandwidth_limit`, `upload_limit`, `download_limit`."""
        return cls.from_rates(config.bandwidth_limit, config.upload_limit, config.download_limit)

    def __bool__(self) -> bool:
        """True when any limit is set."""
        return not (self.total is None and self.upload is None and self.download is None)

    def for_direction(self, direction: TransferDirection) -> list[TokenBucket]:
        """Every bucket a transfer in `direction` must take its bytes from: the shared total
        (if `bandwidth_limit` is set) and the direction's own (if set). Empty when unlimited,
        which the wrappers treat as "pass straight through"."""
        if direction == "upload":
            own = self.upload
        elif direction == "download":
            own = self.download
        else:
            raise ValueError(f"direction must be 'upload' or 'download' (got {direction!r})")
        return [bucket for bucket in (self.total, own) if bucket is not None]


class ReadableStream(Protocol):
    """What `ThrottledReader` needs of the stream it wraps (a file, a `HashingReader`, …)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seekable(self) -> bool: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


class WritableStream(Protocol):
    """What `ThrottledWriter` needs of the sink it wraps (a file, a `HashingWriter`, …)."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class ThrottledReader:
    """A read-only wrapper for an upload body: every chunk read is taken from `buckets`, then
    reported to `on_bytes`.

    Bytes are charged after they are read, by what was actually read (a short read at the end
    of the file costs only what it returned). With no buckets and no callback, each call is the
    wrapped call plus one branch.
    """

    def __init__(
        self,
        raw: ReadableStream,
        buckets: Sequence[TokenBucket] = (),
        on_bytes: Callable[[int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._raw = raw
        self._buckets = tuple(buckets)
        self._on_bytes = on_bytes
        self._cancelled = cancelled
        self._active = bool(self._buckets) or on_bytes is not None

    def _account(self, n: int) -> None:
        if n <= 0:
            return
        consume_all(self._buckets, n, self._cancelled)
        if self._on_bytes is not None:
            self._on_bytes(n)

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if self._active:
            self._account(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """Fill `buffer`, using the wrapped stream's own `readinto` when it has one (no copy)."""
        readinto: Callable[[bytearray | memoryview], int | None] | None = getattr(
            self._raw, "readinto", None
        )
        if readinto is not None:
            n = readinto(buffer) or 0
        else:
            data = self._raw.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        if self._active:
            self._account(n)
        return n

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Delegated. Bytes read again after a rewind (an SDK retrying) are charged again:
        they cross the network again."""
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


class ThrottledWriter:
    """A write-only wrapper for a download sink: every chunk written is taken from `buckets`,
    then reported to `on_bytes`.

    The chunk is written first and then charged by what the sink accepted; holding the writer
    back is what slows the download, since the SDK reads the socket no faster than it can hand
    chunks on. With no buckets and no callback, each call is the wrapped call plus one branch.
    """

    def __init__(
        self,
        raw: WritableStream,
        buckets: Sequence[TokenBucket] = (),
        on_bytes: Callable[[int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._raw = raw
        self._buckets = tuple(buckets)
        self._on_bytes = on_bytes
        self._cancelled = cancelled
        self._active = bool(self._buckets) or on_bytes is not None

    def write(self, data: bytes, /) -> int:
        written = self._raw.write(data)
        if self._active and written > 0:
            consume_all(self._buckets, written, self._cancelled)
            if self._on_bytes is not None:
                self._on_bytes(written)
        return written

    def flush(self) -> None:
        self._raw.flush()

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

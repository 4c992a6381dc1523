"""Provider calls wrapped in tenacity: throttling and transient faults are retried with
exponential backoff and full jitter; everything else (auth, missing bucket, preconditions,
cancellation) fails at once so the engine can decide what it means."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from syncd.providers.errors import Cancelled, Throttled, Transient

T = TypeVar("T")


def should_retry(exc: BaseException) -> bool:
    """Only the sentinel errors that promise a later success are worth another attempt."""
    return isinstance(exc, Throttled | Transient)


class _OutOfTime(stop_base):
    """Stop once `seconds` have passed since `started` (monotonic): `max_seconds` counts from
    the first attempt, which tenacity does not see start (`RetryPolicy.call`)."""

    def __init__(self, seconds: float, started: float) -> None:
        self.seconds = seconds
        self.started = started

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() - self.started >= self.seconds


class RetryPolicy:
    """How often and how long provider calls are tried again.

    `stopping` (the engine's flag) cuts a backoff short: a daemon asked to stop must not sit
    out a retry's wait (up to `max_wait`) with a transfer in hand; the call ends as Cancelled.
    """

    def __init__(
        self,
        attempts: int = 8,
        max_seconds: float = 300.0,
        max_wait: float = 30.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.attempts = attempts
        self.max_seconds = max_seconds
        self._jitter = wait_random_exponential(multiplier=0.2, max=max_wait)
        self._stopping = stopping

    def _sleep(self, seconds: float) -> None:
        if self._stopping is None:
            time.sleep(seconds)
        elif self._stopping.wait(seconds):
            raise Cancelled("retry abandoned: syncd is stopping")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Throttled) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_seconds)
        return float(self._jitter(state))

    def call(
        self, fn: Callable[[], T], on_retry: Callable[[BaseException], None] | None = None
    ) -> T:
        """`fn()`, retried on Throttled / Transient; `on_retry` hears each failure that is
        retried (before the wait), so a caller can say what is going on meanwhile. The first
        attempt runs bare: setting up tenacity costs ~14 us, more than a call to a
        local-folder remote itself, and nearly every call succeeds at once. Its failure is
        handed to tenacity as attempt 1, so the backoff and the attempt count are the same as
        if tenacity had made it."""
        started = time.monotonic()
        try:
            return fn()
        except (Throttled, Transient) as exc:
            first: BaseException = exc
        replay = [first]

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and failure is not None:
                on_retry(failure)

        def attempt() -> T:
            if replay:
                raise replay.pop()
            return fn()

        retrying = Retrying(
            retry=retry_if_exception(should_retry),
            # A request hung until its read timeout took the budget twice over when it
            # counted from tenacity's own start.
            stop=stop_any(stop_after_attempt(self.attempts), _OutOfTime(self.max_seconds, started)),
            wait=self._wait,
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(attempt)

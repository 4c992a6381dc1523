"""Provider calls wrapped in tenacity: throttling and transient faults are retried with
exponential backoff and full jitter; everything else (auth, missing bucket, preconditions,
cancellation) fails at once so the engine can decide what it means."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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

#: A removed pair's retry wait looks at the engine's stop flag this often (it sleeps on the
#: pair's own flag, and one thread can wait on one event only).
STOP_POLL_SECONDS = 0.1


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


@dataclass
class _Budget:
    """How many attempts a call gets and for how long: one per engine, shared by its pairs'
    policies (`RetryPolicy.for_pair`), so that a reload's new values reach every pair."""

    attempts: int
    max_seconds: float


class RetryPolicy:
    """How often and how long provider calls are tried again.

    `stopping` (the engine's flag) cuts a backoff short: a daemon asked to stop must not sit
    out a retry's wait (up to `max_wait`) with a transfer in hand; the call ends as Cancelled.
    A pair's own policy (`for_pair`) can be cancelled too, when the pair is removed.
    """

    def __init__(
        self,
        attempts: int = 8,
        max_seconds: float = 300.0,
        max_wait: float = 30.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self._budget = _Budget(attempts, max_seconds)
        self._jitter = wait_random_exponential(multiplier=0.2, max=max_wait)
        self._stopping = stopping
        #: Set by `cancel` (a pair's policy only).
        self._cancelled: threading.Event | None = None

    @property
    def attempts(self) -> int:
        return self._budget.attempts

    @attempts.setter
    def attempts(self, value: int) -> None:
        self._budget.attempts = value

    @property
    def max_seconds(self) -> float:
        return self._budget.max_seconds

    @max_seconds.setter
    def max_seconds(self, value: float) -> None:
        self._budget.max_seconds = value

    def for_pair(self) -> RetryPolicy:
        """A policy for one pair's calls: this one's settings (changed with it) and stop
        flag, and a `cancel` of its own."""
        mine = copy.copy(self)
        mine._cancelled = threading.Event()
        return mine

    def cancel(self) -> None:
        """The pair is being removed (a reload changed or dropped it): a retry's wait ends
        now, no attempt starts, and a call that ends from now on ends as Cancelled, so what
        it did is not recorded. The remover waits for the pair's transfers to end, then may
        forget its state (a changed place): a wait of up to `max_seconds` held up that
        reload, in the daemon's main loop, and a transfer that came back after it recorded a
        base of the old place in the new place's state."""
        if self._cancelled is None:
            raise RuntimeError("only a pair's policy (for_pair) can be cancelled")
        self._cancelled.set()

    def _check(self) -> None:
        if self._cancelled is not None and self._cancelled.is_set():
            raise Cancelled("call abandoned: the pair was removed")

    def _sleep(self, seconds: float) -> None:
        if self._cancelled is not None:
            self._sleep_cancellable(self._cancelled, seconds)
        elif self._stopping is None:
            time.sleep(seconds)
        elif self._stopping.wait(seconds):
            raise Cancelled("retry abandoned: syncd is stopping")

    def _sleep_cancellable(self, cancelled: threading.Event, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping is not None and self._stopping.is_set():
                raise Cancelled("retry abandoned: syncd is stopping")
            if cancelled.wait(min(left, STOP_POLL_SECONDS)):
                self._check()

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
        self._check()
        try:
            result = fn()
        except (Throttled, Transient) as exc:
            first: BaseException = exc
        else:
            self._check()
            return result
        replay = [first]

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and failure is not None:
                on_retry(failure)

        def attempt() -> T:
            if replay:
                raise replay.pop()
            self._check()
            result = fn()
            self._check()
            return result

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

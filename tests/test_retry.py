"""The retry policy: transient faults and throttling are retried with backoff, the attempt
count holds whether the first attempt fails or not, and other errors pass at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from syncd.engine.retry import RetryPolicy
from syncd.providers.errors import Cancelled, NotFound, Throttled, Transient


def _failing(times: int, error: Exception) -> tuple[list[float], Callable[[], str]]:
    calls: list[float] = []

    def fn() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return "done"

    return calls, fn


def test_transient_faults_are_retried_until_success() -> None:
    calls, fn = _failing(2, Transient("connection reset"))
    assert RetryPolicy(attempts=5, max_wait=0.01).call(fn) == "done"
    assert len(calls) == 3


def test_the_attempt_count_includes_the_first_attempt() -> None:
    calls, fn = _failing(10, Transient("down"))
    with pytest.raises(Transient, match="down"):
        RetryPolicy(attempts=4, max_wait=0.01).call(fn)
    assert len(calls) == 4


def test_a_retry_after_is_waited_from_the_first_failure() -> None:
    calls, fn = _failing(1, Throttled("slow down", retry_after=0.3))
    assert RetryPolicy(attempts=3).call(fn) == "done"
    assert calls[1] - calls[0] >= 0.3


def test_other_errors_are_not_retried() -> None:
    calls, fn = _failing(1, NotFound("gone"))
    with pytest.raises(NotFound):
        RetryPolicy(attempts=5, max_wait=0.01).call(fn)
    assert len(calls) == 1


def test_a_stop_cuts_the_backoff_short() -> None:
    """A daemon asked to stop does not sit out a retry's wait: the call ends as Cancelled
    when the flag is set, and no further attempt is made."""
    stopping = threading.Event()
    calls, fn = _failing(10, Throttled("slow down", retry_after=30))
    threading.Timer(0.2, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        RetryPolicy(attempts=5, stopping=stopping).call(fn)
    assert len(calls) == 1
    assert time.monotonic() - started < 10


def test_the_time_budget_counts_from_the_first_attempt() -> None:
    """`retry.max_seconds` was counted from the second attempt (tenacity's start): a first
    attempt that hung until its timeout took the whole budget and a second one as long."""
    calls: list[float] = []

    def slow_failure() -> str:
        calls.append(time.monotonic())
        time.sleep(0.3)
        raise Transient("read timeout")

    with pytest.raises(Transient):
        RetryPolicy(attempts=10, max_seconds=0.2, max_wait=0.01).call(slow_failure)
    assert len(calls) == 1  # the budget was spent by the first attempt: no second one


def _in_thread(call: Callable[[], str]) -> tuple[threading.Thread, list[BaseException]]:
    """Run `call` on a thread of its own; what it raises lands in the list."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, raised


def test_a_removed_pairs_retry_wait_ends_and_no_attempt_follows() -> None:
    """A pair removed by a reload while one of its calls waits out a Retry-After: the wait
    went on (only a stop of syncd cut it short), and the reload waited for it."""
    policy = RetryPolicy(attempts=5, stopping=threading.Event()).for_pair()
    calls, fn = _failing(10, Throttled("slow down", retry_after=3600))
    thread, raised = _in_thread(lambda: policy.call(fn))
    while not calls:
        time.sleep(0.01)
    policy.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert [type(exc) for exc in raised] == [Cancelled]
    assert len(calls) == 1
    with pytest.raises(Cancelled):
        policy.call(fn)
    assert len(calls) == 1  # a call made after the removal makes no attempt


def test_what_a_call_brings_back_after_its_pair_was_removed_is_not_taken() -> None:
    """An attempt under way when its pair is removed (a stalled request) may end after the
    remover stopped waiting: its result must not be recorded in a state that may be
    forgotten meanwhile, so the call ends as Cancelled."""
    policy = RetryPolicy(attempts=5).for_pair()
    started, release = threading.Event(), threading.Event()

    def stalled() -> str:
        started.set()
        release.wait(30)
        return "done"

    thread, raised = _in_thread(lambda: policy.call(stalled))
    assert started.wait(30)
    policy.cancel()
    release.set()
    thread.join(30)
    assert [type(exc) for exc in raised] == [Cancelled]


def test_a_pairs_policy_follows_the_engines_settings_and_stop() -> None:
    """A reload changes `retry` on the engine's policy: each pair's follows it. A stop of
    syncd still cuts a pair's wait short."""
    stopping = threading.Event()
    engine_policy = RetryPolicy(attempts=8, max_wait=0.01, stopping=stopping)
    pair_policy = engine_policy.for_pair()
    engine_policy.attempts = 2
    calls, fn = _failing(10, Transient("down"))
    with pytest.raises(Transient):
        pair_policy.call(fn)
    assert len(calls) == 2

    calls, fn = _failing(10, Throttled("slow down", retry_after=3600))
    thread, raised = _in_thread(lambda: pair_policy.call(fn))
    while not calls:
        time.sleep(0.01)
    stopping.set()
    thread.join(30)
    assert [type(exc) for exc in raised] == [Cancelled]
    assert len(calls) == 1

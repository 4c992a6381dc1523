"""Coalescing bursts: the pure merge rule from a table, and the debouncer thread on a fake clock."""

from __future__ import annotations

import threading

import pytest
from harness import wait_for

from syncd.engine.debounce import Debouncer, Pending, merge

CASES = [
    # id, pending, now, settle, walk, expected
    ("first event", None, 10.0, 0.5, False, Pending(10.0, 10.5)),
    ("burst pushes deadline", Pending(10.0, 10.5), 10.3, 0.5, False, Pending(10.0, 10.8)),
    ("folder event sticks", Pending(10.0, 10.5), 10.1, 0.5, True, Pending(10.0, 10.6, walk=True)),
    (
        "walk is never lost",
        Pending(10.0, 10.5, walk=True),
        10.2,
        0.5,
        False,
        Pending(10.0, 10.7, walk=True),
    ),
    ("busy file capped at 30 s", Pending(0.0, 29.9), 29.8, 0.5, False, Pending(0.0, 30.0)),
    ("large settle caps at 20x", Pending(0.0, 80.0), 79.0, 4.0, False, Pending(0.0, 80.0)),
]


@pytest.mark.parametrize(
    ("pending", "now", "settle", "walk", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_merge(
    pending: Pending | None, now: float, settle: float, walk: bool, expected: Pending
) -> None:
    assert merge(pending, now, settle, walk) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_debouncer_emits_once_after_quiet_period() -> None:
    clock = FakeClock()
    emitted: list[str] = []
    fired = threading.Event()

    def emit(key: str, _pending: Pending) -> None:
        emitted.append(key)
        fired.set()

    debouncer: Debouncer[str] = Debouncer(emit, clock=clock)
    debouncer.start()
    try:
        for step in range(5):  # a burst of events 0.1 s apart
            clock.now = step * 0.1
            debouncer.touch("a", settle=0.5)
        assert not fired.wait(0.1)
        clock.now = 0.95  # quiet for 0.55 s after the last event
        debouncer.touch("b", settle=10)  # wakes the thread up with the new time
        assert fired.wait(2)
        assert emitted == ["a"]
        wait_for(lambda: debouncer.pending_keys() == ["b"])  # once `emit` has returned
    finally:
        debouncer.stop()
    assert not debouncer.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_successor_takes_over_what_a_dead_debouncer_left() -> None:
    """A debouncer whose thread died (its emit raised) was replaced by a new, empty one:
    every key still waiting, and the rest of the batch under way, were lost. Its successor
    takes them over (a folder's walk with it), and any key touched on the dead one since."""
    clock = FakeClock()
    emitted: dict[str, bool] = {}

    def emit(key: str, pending: Pending) -> None:
        if key == "boom":
            raise RuntimeError("emit failed")
        emitted[key] = pending.walk

    dead: Debouncer[str] = Debouncer(emit, clock=clock)
    dead.touch("boom", settle=0.5)
    dead.touch("next", settle=0.5)  # in the same batch, after the one that fails
    dead.touch("later", settle=5)
    dead.touch("folder", settle=5, walk=True)
    clock.now = 1.0
    dead.start()
    wait_for(lambda: not dead.is_alive())
    assert emitted == {}

    successor = dead.successor()
    dead.touch("after", settle=0.5)  # by a thread that still holds the dead one
    successor.start()
    try:
        wait_for(lambda: "next" in emitted)
        clock.now = 10.0
        successor.touch("wake", settle=100)  # wakes the thread up with the new time
        wait_for(lambda: len(emitted) == 4)
        assert emitted == {"next": False, "later": False, "folder": True, "after": False}
        assert successor.pending_keys() == ["wake"]
    finally:
        successor.stop()


def test_a_key_being_emitted_and_its_batch_are_still_pending() -> None:
    """Due keys are emitted one after the other (a folder's walk takes seconds): until its
    `emit` has returned, a key (and each one behind it in the batch) is still pending, so
    the daemon counts it as settling and its pair is not called idle meanwhile."""
    clock = FakeClock()
    walking, go = threading.Event(), threading.Event()

    def emit(key: str, _pending: Pending) -> None:
        if key == "folder":
            walking.set()
            assert go.wait(10)

    debouncer: Debouncer[str] = Debouncer(emit, clock=clock)
    debouncer.touch("folder", settle=0.5, walk=True)
    debouncer.touch("file", settle=0.5)
    debouncer.touch("later", settle=5)
    clock.now = 1.0
    debouncer.start()
    try:
        assert walking.wait(2)
        assert sorted(debouncer.pending_keys()) == ["file", "folder", "later"]
        assert len(debouncer) == 3
        go.set()
        wait_for(lambda: debouncer.pending_keys() == ["later"])
    finally:
        go.set()
        debouncer.stop()

"""The work queue never runs one path twice at once and never loses a change that arrives
while its path is in flight."""

from __future__ import annotations

from syncd.engine.workqueue import WorkQueue


def test_duplicates_collapse() -> None:
    q = WorkQueue()
    q.put("p", "a")
    q.put("p", "a")
    assert q.counts() == {"p": (1, 0)}


def test_change_during_flight_is_requeued_after_done() -> None:
    q = WorkQueue()
    q.put("p", "a")
    key = q.get(timeout=0)
    assert key == ("p", "a")
    q.put("p", "a")  # a new event while the worker is busy with it
    assert q.get(timeout=0) is None  # not handed to a second worker
    q.done(key)
    assert q.get(timeout=0) == ("p", "a")


def test_paused_pair_keeps_its_items() -> None:
    q = WorkQueue()
    q.pause("p")
    q.put("p", "a")
    q.put("other", "b")
    assert q.get(timeout=0) == ("other", "b")
    assert q.get(timeout=0) is None
    assert q.counts()["p"] == (1, 0)
    q.resume("p")
    assert q.get(timeout=0) == ("p", "a")


def test_idle_and_wait_idle() -> None:
    q = WorkQueue()
    assert q.idle() and q.wait_idle(timeout=0)
    q.put("p", "a")
    assert not q.idle("p") and q.idle("other")
    key = q.get(timeout=0)
    assert key is not None
    assert not q.wait_idle(timeout=0.01)
    q.done(key)
    assert q.wait_idle(timeout=0)

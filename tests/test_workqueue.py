"""The work queue never runs one path twice at once and never loses a change that arrives
while its path is in flight."""

from __future__ import annotations

import threading
import time

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


def test_a_gated_pair_keeps_its_items_and_is_not_paused() -> None:
    """A daemon's pair before its start-up pass: its changes are queued, none is handed out,
    and it does not count as paused (nor keeps the queue from settling)."""
    q = WorkQueue()
    q.close_gate("p")
    q.put("p", "a")
    q.put("other", "b")
    assert q.get(timeout=0) == ("other", "b")
    q.done(("other", "b"))
    assert q.get(timeout=0) is None
    assert q.counts()["p"] == (1, 0) and not q.is_paused("p") and q.is_gated("p")
    assert q.wait_idle(timeout=0)
    q.open_gate("p")
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


def test_waiters_wake_when_work_arrives_or_the_queue_settles() -> None:
    """A waiting worker is woken by a new item, a waiting `wait_idle` by the last item done
    and by a pause that leaves only paused work; neither waits out its timeout."""
    q = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    q.put("p", "a")
    q.put("p", "b")
    worker.join(timeout=5)
    assert got == [("p", "a")] and time.monotonic() - started < 2

    settled: list[bool] = []
    waiter = threading.Thread(target=lambda: settled.append(q.wait_idle(timeout=5)))
    waiter.start()
    q.done(("p", "a"))  # "b" is still queued: not settled
    time.sleep(0.05)
    assert settled == []
    started = time.monotonic()
    q.pause("p")  # only paused work is left: settled
    waiter.join(timeout=5)
    assert settled == [True] and time.monotonic() - started < 2


def test_a_capped_pair_never_has_more_in_flight_than_its_cap() -> None:
    """A pair limited to two transfers at once (a local-folder remote) gets two workers; the
    other pairs are served meanwhile, and a freed slot is taken again."""
    q = WorkQueue()
    q.limit("local", 2)
    for name in ("a", "b", "c"):
        q.put("local", name)
    q.put("cloud", "x")
    taken = [q.get(timeout=0) for _ in range(4)]
    assert sorted(k for k in taken if k is not None) == [
        ("cloud", "x"),
        ("local", "a"),
        ("local", "b"),
    ]
    assert q.counts()["local"] == (1, 2)
    q.done(("local", "a"))
    assert q.get(timeout=0) == ("local", "c")
    q.limit("local", None)  # the cap lifted: no longer limited
    q.put("local", "d")
    q.put("local", "e")
    assert q.get(timeout=0) == ("local", "d")


def test_a_slot_freed_by_a_busy_worker_wakes_a_waiting_one() -> None:
    """A worker that frees a capped pair's slot and then takes another pair's item leaves the
    freed slot to a waiting worker, which is woken for it at once."""
    q = WorkQueue()
    q.limit("local", 1)
    q.put("local", "a")
    q.put("local", "b")
    first = q.get(timeout=0)
    assert first == ("local", "a")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)  # the waiter sleeps: the pair is at its cap
    q.put("cloud", "x")  # wakes the waiter, which takes the cloud item...
    waiter.join(timeout=5)
    assert got == [("cloud", "x")]
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    q.done(first)  # ...and the freed slot wakes the next waiter, well before its timeout
    waiter.join(timeout=5)
    assert got[-1] == ("local", "b")
    assert time.monotonic() - started < 2


def test_a_long_item_steps_out_of_its_pairs_cap_and_wakes_a_worker_for_the_next() -> None:
    """A big file in flight stops counting against its pair's cap: a waiting worker is woken
    for the pair's next item at once, and when the big one finishes no slot is freed twice
    (the cap holds for the small items)."""
    q = WorkQueue()
    q.limit("local", 1)
    for name in ("big", "a", "b"):
        q.put("local", name)
    assert q.get(timeout=0) == ("local", "big")
    assert q.get(timeout=0) is None  # at the cap
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    q.long_running("local", "big")
    waiter.join(timeout=5)
    assert got == [("local", "a")] and time.monotonic() - started < 2
    assert q.get(timeout=0) is None  # "a" holds the one slot; "big" does not count
    q.done(("local", "big"))
    assert q.get(timeout=0) is None  # finishing the long one freed no slot
    assert q.counts()["local"] == (1, 1)
    q.long_running("local", "gone")  # not in flight: ignored
    q.done(("local", "a"))
    assert q.get(timeout=0) == ("local", "b")


def test_a_pair_is_said_drained_when_its_last_item_finishes_and_only_then() -> None:
    """The daemon ends a pair's pass (held deletions decided, last_sync stamped) as soon as
    its queue runs dry, not at its next tick: the queue tells it which pair drained."""
    q = WorkQueue()
    drained: list[str] = []
    q.on_drained = drained.append
    for key in (("p", "a"), ("p", "b"), ("other", "x")):
        q.put(*key)
    first, second, third = (q.get(timeout=0) for _ in range(3))
    assert {first, second, third} == {("p", "a"), ("p", "b"), ("other", "x")}
    q.done(("p", "a"))
    assert drained == []  # b is still in flight
    q.put("p", "b")  # changed again while in flight: it goes round once more
    q.done(("p", "b"))
    assert drained == []
    assert q.get(timeout=0) == ("p", "b")
    q.done(("p", "b"))
    assert drained == ["p"]
    q.done(("other", "x"))
    assert drained == ["p", "other"]

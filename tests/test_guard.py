"""The end-of-pass deletion guard, from a table."""

from __future__ import annotations

import pytest

from syncd.engine.guard import DeletionBatch, PassFacts, hold_reason

CASES = [
    # id, facts, held?, words in the reason
    ("nothing to delete", PassFacts(0, 0, 10, 50), False, ""),
    ("half may go", PassFacts(2, 0, 4, 50), False, ""),
    ("more than half is held", PassFacts(3, 0, 4, 50), True, "3 of 4"),
    ("either side counts", PassFacts(0, 3, 4, 50), True, "remote side"),
    ("sides are counted apart", PassFacts(2, 2, 4, 50), False, ""),
    ("max_delete 100 lets all go", PassFacts(4, 0, 4, 100), False, ""),
    ("max_delete 0 holds any", PassFacts(1, 0, 1000, 0), True, "max_delete 0%"),
    ("the only file may not go at 50", PassFacts(1, 0, 1, 50), True, "1 of 1"),
    ("root missing holds", PassFacts(0, 1, 100, 50, root_present=False), True, "local root"),
    (
        "a remote that cannot be listed holds even one deletion",
        PassFacts(1, 0, 100, 100, remote_fault="bucket 'b' does not exist"),
        True,
        "the remote cannot be listed (bucket 'b' does not exist)",
    ),
    (
        "emptied remote holds local deletions",
        PassFacts(1, 0, 100, 100, remote_emptied=True),
        True,
        "without any of the files the base remembers",
    ),
    (
        "emptied remote, remote deletions only",
        PassFacts(0, 1, 100, 50, remote_emptied=True),
        False,
        "",
    ),
    (
        "held before stays held though the pair grew",
        PassFacts(60, 0, 121, 50, held_before=60),
        True,
        "60 deletions held earlier",
    ),
    ("a share over the line says so first", PassFacts(3, 0, 4, 50, held_before=1), True, "3 of 4"),
]


@pytest.mark.parametrize(
    ("facts", "held", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hold_reason(facts: PassFacts, held: bool, words: str) -> None:
    reason = hold_reason(facts)
    assert (reason is not None) == held
    if held:
        assert reason is not None and words in reason


def test_a_batch_approves_once_and_forgets_redecided_paths() -> None:
    batch = DeletionBatch()
    batch.hold("a", "local")
    batch.hold("b", "remote")
    batch.forget("b")  # looked at again: no longer a deletion
    assert batch.pending() == {"a": "local"}
    batch.approve(["a"])
    assert batch.pending() == {}
    assert batch.take_approval("a") is True
    assert batch.take_approval("a") is False

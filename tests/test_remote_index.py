"""RemoteIndex.holds_folder: which folder names the remote holds objects in (pure logic)."""

from __future__ import annotations

import time

from syncd.engine.remote_index import RemoteIndex
from syncd.providers.base import ObjectInfo


def _info(key: str) -> ObjectInfo:
    return ObjectInfo(key=key, size=1, etag="e", mtime_ns=0)


def test_holds_folder_follows_listings_and_writes() -> None:
    index = RemoteIndex()
    index.replace([(k, _info(k)) for k in ("a/b/c.txt", "a/d.txt", "e")], time.monotonic())
    assert [index.holds_folder(f) for f in ("a", "a/b", "e", "a/b/c.txt", "")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    index.put("a/b/c.txt", None)
    assert not index.holds_folder("a/b") and index.holds_folder("a")
    index.put("e/f", _info("e/f"))
    index.put("e/f", _info("e/f"))  # written again: still one object
    assert index.holds_folder("e")
    index.put("e/f", None)
    assert not index.holds_folder("e")
    index.put("a/d.txt", None)
    assert not index.holds_folder("a")
    index.replace([("x/y", _info("x/y"))], time.monotonic())
    assert index.holds_folder("x") and not index.holds_folder("a")


def test_a_build_of_the_folder_counts_takes_the_writes_made_meanwhile() -> None:
    """The counts are built outside the lock (workers' lookups waited ~1 s per 500,000
    keys): what is written while they are built is counted once they are through."""
    index = RemoteIndex()
    index.replace([(k, _info(k)) for k in ("a/x", "b/y")], time.monotonic())
    import syncd.engine.remote_index as module

    real = module._count
    writes = iter([("a/x", None), ("c/z", _info("c/z"))])

    def count_and_write(folders: dict[str, int], key: str, step: int) -> None:
        real(folders, key, step)
        written = next(writes, None)
        if written is not None:
            index.put(*written)  # a worker's write while the build runs

    module._count = count_and_write  # type: ignore[assignment]
    try:
        assert index.holds_folder("a") is False  # gone meanwhile
    finally:
        module._count = real
    assert [index.holds_folder(f) for f in ("a", "b", "c")] == [False, True, True]

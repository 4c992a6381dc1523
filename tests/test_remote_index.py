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

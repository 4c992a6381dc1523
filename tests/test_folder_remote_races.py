"""The folder remote (`file://`) against programs other than syncd writing in its folder.

Its conditional replace, delete and restamp check the version under syncd's lock, which other
programs do not take. A save landing right after that check must come out of the act intact,
and the act must say PreconditionFailed (the engine then decides the path again), never
replace it, remove it, or restamp it and hand back its version as the one syncd wrote.

The interleaving is forced: the act (the rename, unlink or utime, whichever the code makes)
is wrapped so that another writer saves the file just before it runs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import unavailable_here

from syncd.providers import ObjectInfo, PreconditionFailed, UploadRequest, open_provider
from syncd.providers import renames as provider_renames
from syncd.providers.local import FileProvider

MTIME_NS = 1_700_000_000_123_456_789
KEY = "docs/notes.txt"
OURS = b"v2 from syncd"
THEIRS = b"W saved by another program"

_real_replace = os.replace


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[FileProvider, Path]]:
    root = tmp_path / "remote"
    root.mkdir()
    provider = open_provider(f"file://{root}", {})
    assert isinstance(provider, FileProvider)
    yield provider, root
    provider.close()


@pytest.fixture(params=["renameat2", "without renameat2"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with the real renameat2, and as on a filesystem (or libc) without."""
    if request.param == "without renameat2":
        monkeypatch.setattr(provider_renames, "_renameat2", None)
    return str(request.param)


@pytest.fixture
def swaps(tmp_path: Path) -> None:
    """The forced races need the atomic renames: a machine whose filesystem lacks them
    cannot run them (a failure under CI=true, where they must be proven)."""
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not provider_renames.exchange(fd, "a", "b"):
            unavailable_here("no RENAME_EXCHANGE on this filesystem")
    finally:
        os.close(fd)


def put(provider: FileProvider, key: str, data: bytes, if_match: str | None = None) -> ObjectInfo:
    return provider.upload(
        UploadRequest(
            key=key, body=io.BytesIO(data), size=len(data), mtime_ns=MTIME_NS, if_match=if_match
        )
    )


def save(path: Path, data: bytes) -> None:
    """An editor's atomic save: a new file renamed over the name."""
    temp = path.with_name(path.name + ".swp")
    temp.write_bytes(data)
    _real_replace(temp, path)


def write_in_place(path: Path, data: bytes) -> None:
    """A program that rewrites the file where it is (same inode)."""
    with path.open("r+b") as fh:
        fh.write(data)
        fh.truncate()


WRITERS = {"atomic save": save, "in place": write_in_place}


def before_the_act(
    monkeypatch: pytest.MonkeyPatch, name: str, strike: Callable[[], None], *, utime: bool = False
) -> list[str]:
    """Run `strike` once, right before the first rename, unlink (or, with `utime`, restamp)
    the provider makes of `name`; returns the calls it fired on."""
    fired: list[str] = []

    def wrap(module: Any, attr: str) -> None:
        real = getattr(module, attr)

        def act(*args: Any, **kwargs: Any) -> Any:
            if not fired and (utime or name in args):
                fired.append(attr)
                strike()
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attr, act)

    if utime:
        wrap(os, "utime")
    else:
        for module, attr in [
            (os, "replace"),
            (os, "unlink"),
            (provider_renames, "exchange"),
            (provider_renames, "move_to_fresh"),
        ]:
            wrap(module, attr)
    return fired


def names_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- a write between the check and the act is kept -------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_just_before_a_conditional_replace_is_kept(
    remote: tuple[FileProvider, Path], swaps: None, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY
    fired = before_the_act(monkeypatch, "notes.txt", lambda: WRITERS[writer](path, THEIRS))

    with pytest.raises(PreconditionFailed):
        put(provider, KEY, OURS, if_match=base.etag)

    assert fired
    assert path.read_bytes() == THEIRS
    assert names_in(path.parent) == ["notes.txt"]  # no temp file left, nothing else made
    assert [info.key for info in provider.list()] == [KEY]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_just_before_a_conditional_delete_is_kept(
    remote: tuple[FileProvider, Path], swaps: None, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY
    fired = before_the_act(monkeypatch, "notes.txt", lambda: WRITERS[writer](path, THEIRS))

    with pytest.raises(PreconditionFailed):
        provider.delete(KEY, if_match=base.etag)

    assert fired
    assert path.read_bytes() == THEIRS
    assert names_in(path.parent) == ["notes.txt"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_just_before_a_restamp_is_not_handed_back_as_synced(
    remote: tuple[FileProvider, Path], monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    """The hard case is a rewrite in place of the same size: the restamp moves the mtime and
    ctime the write moved, so only the content can tell."""
    provider, root = remote
    base = put(provider, KEY, b"v1 base content")
    path = root / KEY
    theirs = b"W same length!!"
    assert len(theirs) == base.size
    fired = before_the_act(
        monkeypatch, "notes.txt", lambda: WRITERS[writer](path, theirs), utime=True
    )

    with pytest.raises(PreconditionFailed):
        provider.set_mtime(KEY, MTIME_NS + 10**9, if_match=base.etag)

    assert fired
    assert path.read_bytes() == theirs
    assert names_in(path.parent) == ["notes.txt"]


# -- a second write while the first is put back: both are kept --------------------------------


def test_a_second_save_while_a_delete_puts_the_first_back_keeps_both(
    remote: tuple[FileProvider, Path], swaps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY
    before_the_act(monkeypatch, "notes.txt", lambda: save(path, THEIRS))
    real_move_free = provider_renames.move_free

    def move_free(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
        if dst == "notes.txt" and not path.exists():
            path.write_bytes(b"W2 a second save")
        real_move_free(src_fd, src, dst_fd, dst)

    monkeypatch.setattr(provider_renames, "move_free", move_free)

    with pytest.raises(PreconditionFailed):
        provider.delete(KEY, if_match=base.etag)

    assert path.read_bytes() == b"W2 a second save"
    kept = [name for name in names_in(path.parent) if name != "notes.txt"]
    assert len(kept) == 1
    assert kept[0].startswith("notes.txt.syncd-kept-")
    assert (path.parent / kept[0]).read_bytes() == THEIRS
    assert sorted(info.key for info in provider.list()) == [KEY, f"docs/{kept[0]}"]


def test_a_second_save_before_a_replace_swaps_back_keeps_both(
    remote: tuple[FileProvider, Path], swaps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY
    real_exchange = provider_renames.exchange
    calls: list[int] = []

    def exchange(folder: int, a: str, b: str) -> bool:
        calls.append(1)
        if len(calls) == 1:
            save(path, THEIRS)  # before the swap in
        elif len(calls) == 2:
            save(path, b"W2 a second save")  # before the swap back, over our upload
        return real_exchange(folder, a, b)

    monkeypatch.setattr(provider_renames, "exchange", exchange)

    with pytest.raises(PreconditionFailed):
        put(provider, KEY, OURS, if_match=base.etag)

    assert path.read_bytes() == THEIRS
    kept = [name for name in names_in(path.parent) if name != "notes.txt"]
    assert len(kept) == 1
    assert kept[0].startswith("notes.txt.syncd-kept-")
    assert (path.parent / kept[0]).read_bytes() == b"W2 a second save"


# -- without a race, with and without renameat2: as before ------------------------------------


def test_conditional_replace_delete_and_restamp_still_work(
    remote: tuple[FileProvider, Path], kernel: str
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY

    replaced = put(provider, KEY, OURS, if_match=base.etag)
    assert path.read_bytes() == OURS
    assert names_in(path.parent) == ["notes.txt"]
    assert [info.etag for info in provider.list()] == [replaced.etag]

    stamped = provider.set_mtime(KEY, MTIME_NS + 10**9, if_match=replaced.etag)
    assert path.stat().st_mtime_ns == MTIME_NS + 10**9
    assert path.read_bytes() == OURS
    assert [info.etag for info in provider.list()] == [stamped.etag]

    provider.delete(KEY, if_match=stamped.etag)
    assert names_in(root) == []  # the file and the folder it left empty


def test_a_stale_version_still_fails_every_conditional_change(
    remote: tuple[FileProvider, Path], kernel: str
) -> None:
    provider, root = remote
    base = put(provider, KEY, b"v1 base")
    path = root / KEY
    save(path, THEIRS)

    with pytest.raises(PreconditionFailed):
        put(provider, KEY, OURS, if_match=base.etag)
    with pytest.raises(PreconditionFailed):
        provider.set_mtime(KEY, MTIME_NS + 10**9, if_match=base.etag)
    with pytest.raises(PreconditionFailed):
        provider.delete(KEY, if_match=base.etag)
    assert path.read_bytes() == THEIRS
    assert names_in(path.parent) == ["notes.txt"]

    path.unlink()
    with pytest.raises(PreconditionFailed):
        put(provider, KEY, OURS, if_match=base.etag)
    with pytest.raises(PreconditionFailed):
        provider.set_mtime(KEY, MTIME_NS, if_match=base.etag)
    provider.delete(KEY, if_match=base.etag)  # nothing there: nothing to do
    assert names_in(path.parent) == []

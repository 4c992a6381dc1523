"""Stateful property test of the three-way sync, in-process through `Engine`.

Hypothesis drives a local folder and a `file://` remote folder with creates, edits, deletes and
renames on either side, interleaved with `sync_once()` passes (and engine restarts). After each
pass:

* the pass succeeded (exit code 0, nothing failed, nothing held);
* both trees (syncd's own `.syncd/` and `.syncd-trash/` excluded) are byte-identical;
* each path holds what the three-way rules say (one-sided changes win, an edit beats a delete,
  a conflict leaves the newer version under the name and the older as a `.conflict-` copy in
  the same folder, and nothing else appears); a propagated deletion left the deleted version
  in the trash of the side syncd deleted it from, at `<stamp>[-N]/<path>` (unless the version
  lives on under another name: a local rename goes up as a server-side move);
* no version was lost that syncd was not allowed to replace: every content either side held
  right before the pass still exists somewhere (either tree at any name, conflict copies
  included, or the local or remote trash), except the last-synced version of a path that the
  other side edited (an edit replaces the version it was made on; that is the sync working);
* whatever was once in a trash stays there (nothing is pruned within trash_days);
* a plan made right after finds nothing to do, and a second pass transfers and changes nothing.

Every written content is unique (a counter) and gets its own, increasing mtime, so that
version_preserve's "older" is deterministic and same-size edits are noticed (equal size and a
different mtime make syncd hash the file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import pytest
from harness import tree
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from syncd.config import load_config_dict
from syncd.engine.core import Engine, Report
from syncd.exitcodes import EXIT_OK

#: The paths the rules act on: five names in two folders (one nested), one without extension.
NAMES = ("a.txt", "b.txt", "x/c.txt", "x/d.bin", "y/z/e")
#: Written once on the local side and never touched: keeps the remote listing from ever being
#: empty, which syncd (rightly) treats as a fault and holds local deletions for.
ANCHOR = "anchor.txt"
#: Distinct, increasing modification times, one per write (ns; about November 2023).
BASE_NS = 1_700_000_000 * 10**9
STEP_NS = 1_000_003

SIDES = st.sampled_from(("local", "remote"))
PATHS = st.sampled_from(NAMES)
REPEATS = st.integers(1, 3)


def everything(root: Path) -> list[bytes]:
    """The bytes of every file under root, syncd's own folders (trash) included."""
    return [p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def trash_contents(local: Path, remote: Path) -> set[bytes]:
    found: set[bytes] = set()
    for folder in (local / ".syncd" / "trash", remote / ".syncd-trash"):
        if folder.is_dir():
            found.update(everything(folder))
    return found


@dataclass
class Expected:
    #: path -> the content it must hold after the pass (None: absent)
    tree: dict[str, bytes | None] = field(default_factory=dict)
    #: (path, older content): a conflict copy of it must appear beside the path
    copies: list[tuple[str, bytes]] = field(default_factory=list)
    #: (path, content) that must be in the local / remote trash under `<stamp>[-N]/path`
    local_trash: list[tuple[str, bytes | None]] = field(default_factory=list)
    remote_trash: list[tuple[str, bytes | None]] = field(default_factory=list)


def in_trash(folder: Path, path: str, content: bytes | None) -> bool:
    """Is `content` kept at `folder/<stamp>[-N]/path`?"""
    return folder.is_dir() and any(
        (stamp / path).is_file() and (stamp / path).read_bytes() == content
        for stamp in folder.iterdir()
    )


def describe(report: Report) -> str:
    pair = report.pairs[0]
    return (
        f"exit {report.exit_code}: fault={pair.fault!r} failures={pair.failures!r} "
        f"conflicts={pair.conflicts!r} held={pair.held_reason!r} {pair.held!r}"
    )


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="syncd-prop-"))
        self.local = self.tmp / "local"
        self.remote = self.tmp / "remote"
        self.local.mkdir()
        self.remote.mkdir()
        self.config = load_config_dict(
            {
                "state": f"sqlite:///{self.tmp / 'state.db'}",
                "socket": str(self.tmp / "syncd.sock"),
                "workers": 2,
                "pairs": [
                    {
                        "name": "p",
                        "local": str(self.local),
                        "remote": f"file://{self.remote}",
                        "conflict": "version_preserve",
                        "max_delete": 100,
                    }
                ],
            },
            expand_env=False,
        )
        self.engine: Engine | None = None
        self.counter = 0
        #: The synced tree after the last pass: the base of the next three-way comparison.
        self.base: dict[str, bytes] = {}
        self.trashed: set[bytes] = set()
        self.mtimes: dict[bytes, int] = {}  # every content written -> its mtime
        self.steps: list[str] = []

    # -- helpers ----------------------------------------------------------------------------
    def root(self, side: str) -> Path:
        return self.local if side == "local" else self.remote

    def next_mtime(self) -> int:
        self.counter += 1
        return BASE_NS + self.counter * STEP_NS

    def put(self, side: str, path: str, repeat: int) -> None:
        target = self.root(side) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        mtime = self.next_mtime()
        # Unique, and often the same size as the previous version of the path (repeat 1..3).
        data = (f"{side[0]}{self.counter:05d};" * repeat).encode()
        target.write_bytes(data)
        os.utime(target, ns=(mtime, mtime))
        self.mtimes[data] = mtime

    def must_survive(self, local: dict[str, bytes], remote: dict[str, bytes]) -> set[bytes]:
        """Every content held right before a pass, except a synced version the other side
        replaced with an edit."""
        required: set[bytes] = set()
        for path in local.keys() | remote.keys() | self.base.keys():
            held, base = (local.get(path), remote.get(path)), self.base.get(path)
            for mine, other in (held, held[::-1]):
                if mine is None:
                    continue
                superseded = mine == base and other is not None and other != base
                if not superseded:
                    required.add(mine)
        return required

    def expect(self, local: dict[str, bytes], remote: dict[str, bytes]) -> Expected:
        """What a pass must do to each path, by the three-way rules (contents are unique, so
        comparing bytes is comparing versions)."""
        expected = Expected()
        for path in sorted(local.keys() | remote.keys() | self.base.keys()):
            mine, theirs, base = local.get(path), remote.get(path), self.base.get(path)
            if mine == theirs:
                outcome = mine
            elif mine == base:  # changed remotely only
                outcome = theirs
                if theirs is None:
                    expected.local_trash.append((path, base))
            elif theirs == base:  # changed locally only
                outcome = mine
                if mine is None:
                    expected.remote_trash.append((path, base))
            elif mine is None or theirs is None:  # an edit beats a delete
                outcome = mine if theirs is None else theirs
            else:  # a conflict: the newer keeps the name, the older becomes a copy
                newer, older = sorted((mine, theirs), key=self.mtimes.__getitem__, reverse=True)
                outcome = newer
                expected.copies.append((path, older))
            expected.tree[path] = outcome
        return expected

    def run_sync(self) -> Report:
        assert self.engine is not None
        return self.engine.sync_once()

    # -- rules ------------------------------------------------------------------------------
    @initialize(synced=st.sets(PATHS))
    def start(self, synced: set[str]) -> None:
        """Start from a synced tree: the anchor and some of the names."""
        for path in [ANCHOR, *sorted(synced)]:
            self.put("local", path, 1)
        self.steps.append(f"start with {sorted(synced)}")
        self.engine = Engine(self.config)
        self.sync()

    def existing(self, side: str) -> list[str]:
        return [name for name in NAMES if (self.root(side) / name).is_file()]

    def has_files(self) -> bool:
        return bool(self.existing("local") or self.existing("remote"))

    @rule(side=SIDES, path=PATHS, repeat=REPEATS)
    def write(self, side: str, path: str, repeat: int) -> None:
        existed = (self.root(side) / path).exists()
        self.put(side, path, repeat)
        self.steps.append(f"{'edit' if existed else 'create'} {side} {path} x{repeat}")

    @rule(path=PATHS, first=SIDES, repeats=st.tuples(REPEATS, REPEATS))
    def write_both(self, path: str, first: str, repeats: tuple[int, int]) -> None:
        """The same path written on both sides (a conflict, or two creates that differ);
        `first` gets the older mtime."""
        second = "remote" if first == "local" else "local"
        self.put(first, path, repeats[0])
        self.put(second, path, repeats[1])
        self.steps.append(f"write both {path} ({first} first, x{repeats[0]}/x{repeats[1]})")

    @precondition(has_files)
    @rule(data=st.data(), side=SIDES)
    def delete(self, data: st.DataObject, side: str) -> None:
        names = self.existing(side)
        if not names:
            side = "remote" if side == "local" else "local"
            names = self.existing(side)
        path = data.draw(st.sampled_from(names), label="delete")
        (self.root(side) / path).unlink()
        self.steps.append(f"delete {side} {path}")

    @precondition(has_files)
    @rule(data=st.data(), side=SIDES, repeat=REPEATS)
    def edit_one_delete_other(self, data: st.DataObject, side: str, repeat: int) -> None:
        """Edit a file on `side`, delete it on the other: the edit must win."""
        other = "remote" if side == "local" else "local"
        names = self.existing(other)
        if not names:
            side, other = other, side
            names = self.existing(other)
        path = data.draw(st.sampled_from(names), label="edit/delete")
        (self.root(other) / path).unlink()
        self.put(side, path, repeat)
        self.steps.append(f"edit {side} {path} x{repeat}, delete {other} {path}")

    @precondition(has_files)
    @rule(data=st.data(), side=SIDES, dest=PATHS)
    def rename(self, data: st.DataObject, side: str, dest: str) -> None:
        names = self.existing(side)
        if not names:
            side = "remote" if side == "local" else "local"
            names = self.existing(side)
        source = data.draw(st.sampled_from(names), label="rename")
        if source == dest:
            return
        dst = self.root(side) / dest
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root(side) / source, dst)
        self.steps.append(f"rename {side} {source} -> {dest}")

    @rule()
    def restart_and_sync(self) -> None:
        """A new engine on the same state (like the next `syncd once`), then a pass."""
        assert self.engine is not None
        self.engine.close()
        self.engine = Engine(self.config)
        self.steps.append("restart")
        self.sync()

    @rule()
    def sync(self) -> None:
        local_before, remote_before = tree(self.local), tree(self.remote)
        required = self.must_survive(local_before, remote_before)
        expected = self.expect(local_before, remote_before)
        self.steps.append("sync")
        history = "; ".join(self.steps)

        report = self.run_sync()
        assert report.exit_code == EXIT_OK, f"{describe(report)} after: {history}"
        local_after, remote_after = tree(self.local), tree(self.remote)
        assert local_after == remote_after, f"trees differ after: {history}"

        for path, outcome in expected.tree.items():
            assert local_after.get(path) == outcome, (
                f"{path}: expected {outcome!r}, got {local_after.get(path)!r} after: {history}"
            )
        new = {k: v for k, v in local_after.items() if k not in expected.tree}
        for path, older in expected.copies:
            folder = path.rpartition("/")[0]
            copies = [k for k, v in new.items() if v == older and k.rpartition("/")[0] == folder]
            assert len(copies) == 1, f"no conflict copy of {path} ({older!r}) after: {history}"
            assert ".conflict-" in copies[0], copies
            del new[copies[0]]
        assert not new, f"unexpected new files {new} after: {history}"
        surviving = set(local_after.values())  # a local rename goes up as a move: no trash
        trashes = [(self.local / ".syncd" / "trash", item) for item in expected.local_trash] + [
            (self.remote / ".syncd-trash", item) for item in expected.remote_trash
        ]
        for trash_dir, (path, content) in trashes:
            assert content in surviving or in_trash(trash_dir, path, content), (
                f"{path} ({content!r}) not in {trash_dir} after: {history}"
            )

        present = set(everything(self.local)) | set(everything(self.remote))
        lost = sorted(required - present)
        assert not lost, f"versions lost: {lost} after: {history}"
        trashed = trash_contents(self.local, self.remote)
        assert self.trashed <= trashed, f"trash lost {sorted(self.trashed - trashed)}"
        self.trashed = trashed

        # A fresh plan finds nothing to do, and a second pass transfers nothing.
        assert self.engine is not None
        leftover = [
            f"{item.path}: {item.decision.action.value} ({item.decision.reason})"
            for item in self.engine.syncers["p"].plan()
        ]
        assert not leftover, f"not in sync: {leftover} after: {history}"
        again = self.run_sync()
        assert again.exit_code == EXIT_OK, f"second pass: {describe(again)} after: {history}"
        assert (again.pairs[0].uploaded, again.pairs[0].downloaded) == (0, 0), (
            f"the second pass transferred files after: {history}"
        )  # a report counts its own pass only
        assert tree(self.local) == local_after == tree(self.remote), (
            f"the second pass changed files after: {history}"
        )
        self.base = local_after

    def teardown(self) -> None:
        if self.engine is not None:
            self.engine.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


#: SYNCD_PROPERTY_EXAMPLES / SYNCD_PROPERTY_STEPS explore further (e.g. 500 / 30) than the default.
SyncMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SYNCD_PROPERTY_EXAMPLES", "25")),
    stateful_step_count=int(os.environ.get("SYNCD_PROPERTY_STEPS", "12")),
    deadline=None,
)
TestSync = SyncMachine.TestCase


# -- the smallest case the machine found, kept as a plain regression test ---------------------


def _replace_with_copy(path: Path) -> None:
    """Same bytes and mtime under a new inode (`cp -p` over the file, or a rename away and back
    that the machine found: `mv a b; mv b a` moves the ctime)."""
    copy = path.with_name("copy.tmp")
    shutil.copy2(path, copy)
    os.replace(copy, path)


@pytest.mark.parametrize(
    "touch",
    [lambda p: p.chmod(0o600), _replace_with_copy],
    ids=["chmod (ctime only)", "same bytes and mtime, new inode"],
)
def test_metadata_only_change_is_recorded_once(
    tmp_path: Path, touch: Callable[[Path], None]
) -> None:
    """After a change that leaves size, mtime and bytes alone, one pass must record the new
    stat in the base; otherwise every later pass hashes the file again."""
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    (tmp_path / "local" / "a.txt").write_bytes(b"hello")
    config = load_config_dict(
        {
            "state": f"sqlite:///{tmp_path / 'state.db'}",
            "socket": str(tmp_path / "syncd.sock"),
            "pairs": [
                {
                    "name": "p",
                    "local": str(tmp_path / "local"),
                    "remote": f"file://{tmp_path}/remote",
                }
            ],
        },
        expand_env=False,
    )
    with Engine(config) as engine:
        assert engine.sync_once().exit_code == EXIT_OK
        touch(tmp_path / "local" / "a.txt")
        assert engine.sync_once().exit_code == EXIT_OK
        leftover = [(i.path, i.decision.action.value) for i in engine.syncers["p"].plan()]
        assert leftover == []

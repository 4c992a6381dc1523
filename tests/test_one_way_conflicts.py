"""Conflicts in a pair with a `direction`: the strategy settles them only as far as the pair may
write. An upload-only pair never writes the local side, a download-only pair never the remote;
where the strategy's outcome would, both versions stay as they are, each on its side, and the
version the pair's own side keeps also crosses beside the other as a conflict copy (keep both,
and report): a download-only pair brings the remote version down, an upload-only pair sends
the local one up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import folder_engine
from remotes import BUCKET_KINDS, remote_for

from syncd.config import load_config_dict
from syncd.engine.core import Engine, Report

OLDER, NEWER = 1_700_000_000_000_000_000, 1_700_000_100_000_000_000
LOCAL, REMOTE = b"edited locally", b"edited remotely"

UP, DOWN, TS, VP = "upload", "download", "timestamp_wins", "version_preserve"
# id, direction, strategy, local is newer, what each side holds after the pass, and where the
# loser went ("remote trash", "local trash", "remote copy", "local copy", or None: no loser).
# A download-only pair whose local version stays brings the remote one down beside it as a
# local conflict copy ("remote kept locally"); an upload-only pair whose remote version stays
# sends the local one up beside it ("local kept remotely"). Both were left unreported.
CASES = [
    ("upload, local_wins", UP, "local_wins", False, LOCAL, LOCAL, "remote trash"),
    ("upload, cloud_wins", UP, "cloud_wins", False, LOCAL, REMOTE, "local kept remotely"),
    ("upload, timestamp, local newer", UP, TS, True, LOCAL, LOCAL, "remote trash"),
    ("upload, timestamp, remote newer", UP, TS, False, LOCAL, REMOTE, "local kept remotely"),
    ("upload, preserve, remote older", UP, VP, True, LOCAL, LOCAL, "remote copy"),
    ("upload, preserve, local older", UP, VP, False, LOCAL, REMOTE, "local kept remotely"),
    ("download, cloud_wins", DOWN, "cloud_wins", True, REMOTE, REMOTE, "local trash"),
    ("download, local_wins", DOWN, "local_wins", True, LOCAL, REMOTE, "remote kept locally"),
    ("download, timestamp, remote newer", DOWN, TS, False, REMOTE, REMOTE, "local trash"),
    ("download, timestamp, local newer", DOWN, TS, True, LOCAL, REMOTE, "remote kept locally"),
    ("download, preserve, local older", DOWN, VP, False, REMOTE, REMOTE, "local copy"),
    ("download, preserve, remote older", DOWN, VP, True, LOCAL, REMOTE, "remote kept locally"),
]


def _engine(tmp_path: Path, direction: str, strategy: str) -> Engine:
    engine: Engine = folder_engine(tmp_path, direction=direction, conflict=strategy)
    return engine


def _sync(tmp_path: Path, direction: str, strategy: str) -> Report:
    with _engine(tmp_path, direction, strategy) as engine:
        return engine.sync_once()


def _plan(tmp_path: Path, direction: str, strategy: str) -> list[str]:
    """The paths a dry run plans to act on."""
    with _engine(tmp_path, direction, strategy) as engine:
        return [item.path for item in engine.sync_once(dry_run=True).pairs[0].planned]


def _plan_of(loser: str | None) -> list[str]:
    return [] if loser is None else ["doc.txt"]


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, syncd's own folder and trash included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _visible(root: Path) -> dict[str, bytes]:
    """What a person sees in the folder: its files but syncd's own (trash) and the copies."""
    return {
        path: data
        for path, data in _files(root).items()
        if not path.startswith((".syncd/", ".syncd-trash/")) and ".conflict-" not in path
    }


@pytest.mark.parametrize("case", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_one_way_pair_settles_a_conflict_only_toward_its_direction(
    tmp_path: Path, case: tuple[str, str, bool, bytes, bytes, str | None]
) -> None:
    direction, strategy, local_newer, local_after, remote_after, loser = case
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    _write(local / "doc.txt", b"as synced", OLDER - 1)
    _write(remote / "doc.txt", b"as synced", OLDER - 1)
    assert _sync(tmp_path, direction, strategy).exit_code == 0  # the same bytes: the base

    _write(local / "doc.txt", LOCAL, NEWER if local_newer else OLDER)
    _write(remote / "doc.txt", REMOTE, OLDER if local_newer else NEWER)
    copied = loser in ("remote kept locally", "local kept remotely")
    # The dry run plans what the real run does: the copy beside the other version, once (it
    # planned nothing, and the real run made the copy).
    assert _plan(tmp_path, direction, strategy) == (["doc.txt"] if copied else _plan_of(loser))
    for attempt in range(2):  # and a second pass changes nothing more
        report = _sync(tmp_path, direction, strategy)
        assert report.exit_code == 0, report

        assert _visible(local) == {"doc.txt": local_after}
        assert _visible(remote) == {"doc.txt": remote_after}
        everything = {
            "remote trash": [p for p in _files(remote) if p.startswith(".syncd-trash/")],
            "local trash": [p for p in _files(local) if p.startswith(".syncd/trash/")],
            "remote copy": [p for p in _files(remote) if ".conflict-" in p],
            "local copy": [p for p in _files(local) if ".conflict-" in p],
        }
        kept = {where: paths for where, paths in everything.items() if paths}
        if loser is None:
            assert kept == {}  # nothing written anywhere: both versions stand where they were
        elif loser in ("remote kept locally", "local kept remotely"):
            where, side, data = (
                ("local copy", local, REMOTE)
                if loser == "remote kept locally"
                else ("remote copy", remote, LOCAL)
            )
            assert list(kept) == [where]  # once: the second pass makes no other
            (path,) = kept[where]
            assert (side / path).read_bytes() == data
            assert ("doc.txt" in report.pairs[0].settled) == (attempt == 0)  # said, once
        else:
            assert list(kept) == [loser]
            (path,) = kept[loser]
            side = remote if loser.startswith("remote") else local
            assert (side / path).read_bytes() == (REMOTE if side is remote else LOCAL)
    if copied:
        assert _plan(tmp_path, direction, strategy) == []  # the copy is there: nothing to do


def test_keeping_by_hand_what_the_direction_forbids_leaves_the_conflict_open(
    tmp_path: Path,
) -> None:
    """`syncd resolve --keep remote` in an upload-only pair would write the local side: the
    conflict stays open (and says why); `--keep local` settles it."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    _write(local / "doc.txt", b"as synced", OLDER - 1)
    _write(remote / "doc.txt", b"as synced", OLDER - 1)
    assert _sync(tmp_path, UP, "manual").exit_code == 0
    _write(local / "doc.txt", LOCAL, NEWER)
    _write(remote / "doc.txt", REMOTE, OLDER)
    assert _sync(tmp_path, UP, "manual").exit_code == 4  # waits for a decision

    with _engine(tmp_path, UP, "manual") as engine:
        assert engine.resolve("p", "doc.txt", "remote") is False
        # What `syncd resolve` prints (it said only "could not be settled yet; see the log").
        assert engine.syncers["p"].resolutions.pop("doc.txt") == (
            "not settled: --keep remote: an upload-only pair does not write the local side"
        )
        assert _visible(local) == {"doc.txt": LOCAL}
        assert _visible(remote) == {"doc.txt": REMOTE}
        assert engine.resolve("p", "doc.txt", "local") is True
    assert _visible(local) == {"doc.txt": LOCAL}
    assert _visible(remote) == {"doc.txt": LOCAL}
    assert [p for p in _files(remote) if p.startswith(".syncd-trash/")] != []
    assert _sync(tmp_path, UP, "manual").exit_code == 0


def test_a_download_only_pair_brings_a_file_down_beside_a_folder_of_its_name(
    tmp_path: Path,
) -> None:
    """The remote has a file `x`, the local side a folder `x`: a download-only pair may not
    move the remote file aside (as a two-way pair does), so it never came down at all. It
    comes down as a conflict copy beside the folder, once; the remote is left as it is."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "x").mkdir(parents=True)
    (local / "x" / "mine").write_bytes(b"local inside x")
    remote.mkdir()
    _write(remote / "x", REMOTE, OLDER)

    for attempt in range(2):  # the second pass makes no second copy
        report = _sync(tmp_path, DOWN, "cloud_wins")
        assert report.exit_code == 0, report
        copies = [p for p in _files(local) if ".conflict-" in p]
        assert len(copies) == 1 and copies[0].startswith("x.conflict-")
        assert _files(local)[copies[0]] == REMOTE
        assert (local / copies[0]).stat().st_mtime_ns == OLDER
        assert _visible(local) == {"x/mine": b"local inside x"}
        assert _files(remote) == {"x": REMOTE}
        (pair,) = report.pairs
        if attempt == 0:
            assert pair.settled == {
                "x": f"a folder of this name here: the remote file kept as {copies[0]}"
            }
        else:
            assert pair.settled == {}


@pytest.mark.parametrize("kind", BUCKET_KINDS)
@pytest.mark.parametrize("direction", [UP, DOWN])
def test_a_one_way_pair_keeps_both_versions_on_a_bucket(
    tmp_path: Path, kind: str, direction: str, request: pytest.FixtureRequest
) -> None:
    """The copy that crosses, against each service: the version the pair's own side keeps goes
    beside the other once (a bucket's listing states no SHA-256: the copy is known by the one
    its metadata states), and the second pass makes no other."""
    remote = remote_for(kind, request, tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    _write(local / "doc.txt", b"as synced", OLDER - 1)
    remote.put("doc.txt", b"as synced", OLDER - 1)
    pair = {"name": "p", "local": str(local), "remote": remote.url, "options": remote.options}
    config = load_config_dict(
        {
            "state": f"sqlite:///{tmp_path / 'state.db'}",
            "socket": str(tmp_path / "syncd.sock"),
            # The strategy keeps the version on the side the pair may not write.
            "pairs": [
                {
                    **pair,
                    "direction": direction,
                    "conflict": "cloud_wins" if direction == UP else "local_wins",
                }
            ],
        },
        expand_env=False,
    )

    def sync() -> Report:
        with Engine(config) as engine:
            return engine.sync_once()

    assert sync().exit_code == 0
    _write(local / "doc.txt", LOCAL, NEWER)
    remote.put("doc.txt", REMOTE, NEWER)
    for attempt in range(2):
        report = sync()
        assert report.exit_code == 0, report
        assert ("doc.txt" in report.pairs[0].settled) == (attempt == 0)
        local_files = {p: b for p, b in _files(local).items() if not p.startswith(".syncd/")}
        copies = (
            {k: v for k, v in remote.objects().items() if ".conflict-" in k}
            if direction == UP
            else {k: v for k, v in local_files.items() if ".conflict-" in k}
        )
        assert list(copies.values()) == [LOCAL if direction == UP else REMOTE]
        assert (local / "doc.txt").read_bytes() == LOCAL
        assert remote.get("doc.txt") == REMOTE

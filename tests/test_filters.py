"""Which paths sync: exclude, include and .syncignore, and how they rank.

Precedence (documented in the README): syncd's own paths never sync; anything `exclude` or
`.syncignore` matches is out; then, when `include` is given, only the files it matches are in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Setup, syncd, tree

from syncd.engine.filters import PathFilter


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("data/part-0.parquet", False),  # included by *.parquet, at any depth
        ("top.parquet", False),
        ("raw/2026/11/dump.csv", False),  # included by raw/**
        ("notes.txt", True),  # matches no include
        ("raw/tmp/scratch.parquet", True),  # exclude wins over include
        ("data/secret.parquet", True),  # .syncignore applies to included files too
        (".syncd/trash/x.parquet", True),  # syncd's own, always
    ],
)
def test_precedence(tmp_path: Path, path: str, excluded: bool) -> None:
    (tmp_path / ".syncignore").write_text("secret*\n")
    rules = PathFilter(["raw/tmp/"], tmp_path, include=["*.parquet", "raw/**"])
    assert rules.excluded(path) is excluded


def test_folders_are_never_left_out_by_include_alone(tmp_path: Path) -> None:
    rules = PathFilter(["cache/"], tmp_path, include=["*.parquet"])
    assert not rules.excluded("deep/down", is_dir=True)  # a .parquet may live below
    assert rules.excluded("cache", is_dir=True)  # exclude prunes a whole folder


def test_without_include_everything_not_excluded_syncs(tmp_path: Path) -> None:
    rules = PathFilter(["*.tmp"], tmp_path)
    assert not rules.excluded("a/b.txt")
    assert rules.excluded("a/b.tmp")


def test_include_in_a_pair_both_ways(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(
        tmp_path,
        f"file://{remote}",
        pair_extra={"include": ["*.parquet", "raw/**"], "exclude": ["raw/tmp/"]},
    )
    setup.write()
    for name in ("a.parquet", "raw/x.csv", "raw/tmp/y.csv", "notes.txt"):
        (setup.local / name).parent.mkdir(parents=True, exist_ok=True)
        (setup.local / name).write_bytes(name.encode())
    (remote / "sub").mkdir()
    (remote / "sub" / "b.parquet").write_bytes(b"from the remote")
    (remote / "remote-notes.txt").write_bytes(b"stays remote")

    result = syncd("once", "-c", setup.config)
    assert result.returncode == 0, result.stderr
    assert tree(remote) == {
        "a.parquet": b"a.parquet",
        "raw/x.csv": b"raw/x.csv",
        "sub/b.parquet": b"from the remote",
        "remote-notes.txt": b"stays remote",  # not included: never downloaded, never deleted
    }
    assert set(tree(setup.local)) == {
        "a.parquet",
        "raw/x.csv",
        "raw/tmp/y.csv",
        "notes.txt",
        "sub/b.parquet",
    }


def test_upload_and_download_take_include(tmp_path: Path) -> None:
    source, remote, back = tmp_path / "src", tmp_path / "remote", tmp_path / "back"
    for name in ("keep.parquet", "drop.txt", "raw/r.bin", "raw/skip.tmp"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    up = syncd(
        "upload", source, f"file://{remote}", "--include", "*.parquet", "--include", "raw/**",
        "--exclude", "*.tmp", env=env,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert set(tree(remote)) == {"keep.parquet", "raw/r.bin"}
    down = syncd("download", f"file://{remote}", back, "--include", "raw/**", env=env)
    assert down.returncode == 0, down.stderr
    assert tree(back) == {"raw/r.bin": b"raw/r.bin"}


def test_a_pattern_given_alone_that_starts_with_a_hash_is_a_pattern(tmp_path: Path) -> None:
    """gitignore reads a line that starts with `#` as a comment: `--exclude '#*'` (Emacs's
    auto-save files, `#notes.txt#`) excluded nothing, and `include: ['#*']` took nothing in,
    without a word. Given alone, it is a pattern; in a `.syncignore` it stays a comment."""
    rules = PathFilter(["#*"], tmp_path)
    assert rules.excluded("#notes.txt#") and rules.excluded("d/#draft#")
    assert not rules.excluded("notes.txt")
    (tmp_path / ".syncignore").write_text("#notes.txt#\n")  # a comment there
    assert not PathFilter([], tmp_path).excluded("#notes.txt#")
    (tmp_path / ".syncignore").unlink()
    assert not PathFilter([], tmp_path, include=["#*"]).excluded("#notes.txt#")
    assert PathFilter([], tmp_path, include=["#*"]).excluded("notes.txt")

    source, remote = tmp_path / "source", tmp_path / "remote"
    source.mkdir()
    (source / "#notes.txt#").write_text("auto-save")
    (source / "notes.txt").write_text("notes")
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    result = syncd("upload", source, f"file://{remote}", "--exclude", "#*", env=env)
    assert result.returncode == 0, result.stderr
    assert tree(remote) == {"notes.txt": b"notes"}
    bad = syncd("upload", source, f"file://{remote}", "--exclude", "#[z-a]", env=env)
    assert bad.returncode == 2 and "--exclude" in bad.stderr, bad.stderr

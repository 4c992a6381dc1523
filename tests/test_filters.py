"""Which paths sync: exclude, include and .syncignore, and how they rank.

Precedence (documented in the README): syncd's own paths never sync; anything `exclude` or
`.syncignore` matches is out; then, when `include` is given, only the files it matches are in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import SYNCD, Setup, require_without_dac, running_daemon, syncd, tree, wait_for

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


REINCLUDING = [
    # git's "ignore everything but .txt" idiom: the folders back in, then the files.
    (["*", "!*/", "!*.txt"], {"a.txt", "d/notes.txt", "logs/keep.txt"}),
    # Everything inside logs/ but one file (git keeps it: `logs/**` leaves logs/ itself in).
    (["logs/**", "!logs/keep.txt"], {"a.txt", "a.log", "d/notes.txt", "logs/keep.txt"}),
    # A file named back in below an excluded folder (git would leave it out; syncd takes the
    # `!` rule at its word, on both sides alike).
    (["logs/", "!logs/keep.txt"], {"a.txt", "a.log", "d/notes.txt", "logs/keep.txt"}),
]
FILES = ("a.txt", "a.log", "d/notes.txt", "logs/keep.txt", "logs/x.log")


@pytest.mark.parametrize(("rules", "synced"), REINCLUDING, ids=["*-!*/-!*.txt", "**", "dir/"])
def test_a_file_let_back_in_below_an_excluded_folder_syncs_both_ways(
    tmp_path: Path, rules: list[str], synced: set[str]
) -> None:
    """A `!` rule bringing files back in below an excluded folder worked one way only: the
    remote's copies came down (each key is asked on its own), while the local walk skipped
    the folder, so the local ones never went up: `upload` copied 1 file, `download` 4."""
    for direction in ("up", "down"):
        remote = tmp_path / direction / "remote"
        remote.mkdir(parents=True)
        setup = Setup(tmp_path / direction, f"file://{remote}", pair_extra={"exclude": rules})
        setup.write()
        source = setup.local if direction == "up" else remote
        for name in FILES:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(name.encode())
        result = syncd("once", "-c", setup.config)
        assert result.returncode == 0, result.stdout + result.stderr
        target = remote if direction == "up" else setup.local
        assert set(tree(target)) == synced, direction
        assert set(tree(source)) == set(FILES)  # what is left out stays, never deleted
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    excludes = [arg for rule in rules for arg in ("--exclude", rule)]
    pushed = syncd("upload", tmp_path / "up" / "local", f"file://{tmp_path / 'pushed'}",
                   *excludes, env=env)  # fmt: skip
    pulled = syncd("download", f"file://{tmp_path / 'down' / 'remote'}", tmp_path / "pulled",
                   *excludes, env=env)  # fmt: skip
    assert (pushed.returncode, pulled.returncode) == (0, 0), pushed.stderr + pulled.stderr
    assert set(tree(tmp_path / "pushed")) == set(tree(tmp_path / "pulled")) == synced


def test_a_folder_is_skipped_whole_only_where_no_rule_lets_a_file_back_in(
    tmp_path: Path,
) -> None:
    assert PathFilter(["node_modules/"], tmp_path).prunes("node_modules")
    assert not PathFilter(["node_modules/", "!*.md"], tmp_path).prunes("node_modules")
    assert PathFilter(["node_modules/", "!*.md"], tmp_path).prunes(".syncd")
    assert not PathFilter(["*.tmp"], tmp_path).prunes("src")


def test_a_syncignore_saved_with_a_bom_keeps_its_first_rule(tmp_path: Path) -> None:
    """Windows editors start a UTF-8 file with a BOM; git skips it. Read as part of the first
    rule, that rule matched nothing, and the folder it kept private was uploaded."""
    (tmp_path / ".syncignore").write_bytes(b"\xef\xbb\xbfsecrets/\r\n*.tmp\r\n")
    rules = PathFilter([], tmp_path)
    assert rules.problem is None
    assert rules.excluded("secrets/pw.txt")
    assert rules.excluded("x.tmp")
    assert not rules.excluded("a.txt")


def test_check_fails_a_pair_whose_syncignore_stops_every_pass(tmp_path: Path) -> None:
    """A `.syncignore` line that is no pattern fails every pass of the pair (exit 1, nothing
    synced); `check`, run after editing the rules, said `ok`."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / ".syncignore").write_text("*.tmp\n[z-a]\n")
    result = syncd("check", "-c", setup.config)
    ignore = setup.local / ".syncignore"
    assert (result.returncode, result.stdout) == (
        1,
        f"FAIL\tdocs\tfile://{remote}\t{ignore}: line 2: not a valid pattern "
        "(bad character range z-a)\n",
    ), result.stdout + result.stderr
    ran = syncd("once", "-c", setup.config)
    assert ran.returncode == 1
    assert f"{ignore}: line 2: not a valid pattern" in ran.stdout
    ignore.write_text("*.tmp\n")
    assert syncd("check", "-c", setup.config).stdout == f"ok\tdocs\tfile://{remote}\n"


def test_a_file_replacing_a_folder_the_remote_keeps_for_excluded_files_names_them(
    tmp_path: Path,
) -> None:
    """A local folder `d` became a file while the remote's `d/` holds a file the filters
    leave out (from another machine). It is never deleted, so the file `d` cannot go up to
    a local-folder remote: that failed after seconds of requeues as "kept changing while
    being synced", which named the wrong cause. It fails at once naming what is in the way,
    deletes nothing, and goes up once the user removed it."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(
        tmp_path, f"file://{remote}", pair_extra={"exclude": ["*.tmp"], "max_delete": 100}
    )
    setup.write()
    (setup.local / "d").mkdir()
    (setup.local / "d" / "a.txt").write_text("a")
    assert syncd("once", "-c", setup.config).returncode == 0
    (remote / "d" / "x.tmp").write_text("other machine")
    (setup.local / "d" / "a.txt").unlink()
    (setup.local / "d").rmdir()
    (setup.local / "d").write_text("now a file")
    for _ in range(2):  # the pass that deletes d/a.txt there, and the one after
        done = syncd("once", "-c", setup.config, timeout=30)
        assert done.returncode == 1, done.stdout + done.stderr
        failed = [line.strip() for line in done.stdout.splitlines() if "failed:" in line]
        assert failed == [
            "failed: d: the remote folder d/ holds files the filters leave out (d/x.tmp); "
            "remove them there, or stop excluding them"
        ], done.stdout
        assert tree(remote) == {"d/x.tmp": b"other machine"}
        assert tree(setup.local) == {"d": b"now a file"}
    (remote / "d" / "x.tmp").unlink()
    done = syncd("once", "-c", setup.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree(remote) == {"d": b"now a file"}


def test_what_an_excluded_folder_holds_is_not_reported_when_a_rule_lets_files_back(
    tmp_path: Path,
) -> None:
    """With a `!` rule the walk goes into excluded folders (a file below may be let back in),
    and reported what it met there as it would in a synced folder: an unreadable folder (a
    root-owned `lost+found/`, excluded for that reason) failed every pass, exit 1; symlinks
    (`node_modules/.bin/*`) were "skipped" lines. A file let back in still syncs."""
    without_dac = require_without_dac()
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"exclude": ["vault/", "!*.md"]})
    setup.write()
    (setup.local / "vault" / "locked").mkdir(parents=True)
    (setup.local / "vault" / "locked" / "secret.txt").write_text("s")
    (setup.local / "vault" / "link").symlink_to("/etc/hostname")
    (setup.local / "vault" / "secret.txt").write_text("s")
    (setup.local / "vault" / "notes.md").write_text("let back in")
    (setup.local / "a.txt").write_text("a")
    (setup.local / "vault" / "locked").chmod(0)
    try:
        result = subprocess.run(
            [*without_dac, *SYNCD, "once", "-c", str(setup.config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        (setup.local / "vault" / "locked").chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout + result.stderr
    assert tree(remote) == {"a.txt": b"a", "vault/notes.md": b"let back in"}


def test_a_file_let_back_in_below_a_folder_that_cannot_be_listed_is_not_deleted(
    tmp_path: Path,
) -> None:
    """The walk said nothing of a folder it could not list inside an excluded one, so the
    file a `!` rule lets back in below it read as deleted locally: its remote copy was
    planned for deletion (counted by max_delete, shown by --dry-run). It is unknown now, not
    deleted, and the excluded folder is no failure of the pass."""
    without_dac = require_without_dac()
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"exclude": ["data/", "!*.md"]})
    setup.write()
    (setup.local / "data" / "sub").mkdir(parents=True)
    (setup.local / "data" / "sub" / "keep.md").write_text("let back in")
    (setup.local / "data" / "sub" / "x.bin").write_text("left out")
    (setup.local / "a.txt").write_text("a")
    assert syncd("once", "-c", setup.config).returncode == 0
    assert tree(remote) == {"a.txt": b"a", "data/sub/keep.md": b"let back in"}
    (setup.local / "data" / "sub").chmod(0)
    try:
        runs = [
            subprocess.run(
                [*without_dac, *SYNCD, "once", *flags, "-c", str(setup.config)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            for flags in (["--dry-run"], [])
        ]
    finally:
        (setup.local / "data" / "sub").chmod(0o755)
    planned, ran = runs
    assert (planned.returncode, planned.stdout) == (0, ""), planned.stdout + planned.stderr
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "0 deleted" in ran.stdout
    assert tree(remote) == {"a.txt": b"a", "data/sub/keep.md": b"let back in"}


def _remote_write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_bad_syncignore_from_the_remote_is_mended_from_the_remote(tmp_path: Path) -> None:
    """Another machine's `.syncignore` with a line that is no pattern comes down like any
    file, and then every pass stops at it (exit 1, naming the line). The fix made on the
    remote never came down: the pass stopped before it could (sweep S). A newer remote
    `.syncignore` comes down now while this one cannot be read, as last synced."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / ".syncignore").write_text("*.tmp\n")
    (setup.local / "a.txt").write_text("a")
    assert syncd("once", "-c", setup.config).returncode == 0
    _remote_write(remote / ".syncignore", "*.tmp\nbuild\\\n", 2_000_000_000_000_000_000)
    assert syncd("once", "-c", setup.config).returncode == 0  # it comes down

    stopped = syncd("once", "-c", setup.config)
    assert stopped.returncode == 1
    assert ".syncignore: line 2: not a valid pattern" in stopped.stdout + stopped.stderr

    _remote_write(remote / ".syncignore", "*.tmp\nbuild/\n", 2_000_000_001_000_000_000)
    (remote / "b.txt").write_text("b, sent meanwhile")
    mended = syncd("once", "-c", setup.config)

    assert mended.returncode == 0, mended.stdout + mended.stderr
    assert (setup.local / ".syncignore").read_text() == "*.tmp\nbuild/\n"
    assert (setup.local / "b.txt").read_text() == "b, sent meanwhile"


def test_a_bad_syncignore_written_here_is_not_replaced_nor_sent(tmp_path: Path) -> None:
    """The mend takes only a newer remote file over one as last synced: a bad line typed
    here stays (the pass fails naming it), and never goes up."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / ".syncignore").write_text("*.tmp\n")
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / ".syncignore").write_text("*.tmp\nbuild\\\n")
    _remote_write(remote / ".syncignore", "*.tmp\nlogs/\n", 2_000_000_000_000_000_000)

    stopped = syncd("once", "-c", setup.config)

    assert stopped.returncode == 1
    assert (setup.local / ".syncignore").read_text() == "*.tmp\nbuild\\\n"
    assert (remote / ".syncignore").read_text() == "*.tmp\nlogs/\n"


def test_the_daemon_mends_a_bad_syncignore_from_the_remote(tmp_path: Path) -> None:
    """As `once` does (above), at the daemon's poll: the pair is in error while its
    `.syncignore` cannot be read, and a newer one on the remote comes down and ends it."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}", pair_extra={"poll_interval": 0.5})
    setup.write()
    (setup.local / ".syncignore").write_text("*.tmp\n")
    assert syncd("once", "-c", setup.config).returncode == 0
    _remote_write(remote / ".syncignore", "*.tmp\nbuild\\\n", 2_000_000_000_000_000_000)
    assert syncd("once", "-c", setup.config).returncode == 0  # it comes down
    with running_daemon(setup) as daemon:
        wait_for(lambda: daemon.pair_status()["state"] == "error", timeout=20)
        _remote_write(remote / ".syncignore", "*.tmp\nbuild/\n", 2_000_000_001_000_000_000)
        (remote / "b.txt").write_text("b, sent meanwhile")
        wait_for(lambda: (setup.local / "b.txt").exists(), timeout=30)
        assert (setup.local / ".syncignore").read_text() == "*.tmp\nbuild/\n"
        assert daemon.wait_idle()["last_error"] is None
        assert daemon.terminate() == 0


@pytest.mark.parametrize("local_kind", ["folder", "symlink"])
def test_the_syncignore_mend_touches_nothing_but_a_file_as_last_synced(
    tmp_path: Path, local_kind: str
) -> None:
    """The mend only downloads over a regular file as last synced. A folder of that name
    took the route of a file/folder clash: the remote `.syncignore` moved aside as a
    conflict copy and deleted there, every other machine then deleting its own. A symlink
    made the mend a traceback (review R2)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    setup = Setup(tmp_path, f"file://{remote}")
    setup.write()
    (setup.local / ".syncignore").write_text("*.tmp\n")
    assert syncd("once", "-c", setup.config).returncode == 0
    (setup.local / ".syncignore").unlink()
    if local_kind == "folder":
        (setup.local / ".syncignore").mkdir()
        (setup.local / ".syncignore" / "inside.txt").write_text("x")
    else:
        (tmp_path / "rules").write_text("*.tmp\nbuild\\\n")
        (setup.local / ".syncignore").symlink_to(tmp_path / "rules")
    _remote_write(remote / ".syncignore", "*.tmp\nbuild/\n", 2_000_000_000_000_000_000)

    result = syncd("once", "-c", setup.config)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in remote.iterdir()) == [".syncignore"]
    assert (remote / ".syncignore").read_text() == "*.tmp\nbuild/\n"

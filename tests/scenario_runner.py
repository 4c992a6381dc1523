"""Scenario tests as data: the runner behind tests/test_scenarios.py.

A scenario is one YAML file in tests/scenarios/: the trees each side starts with, then steps.
A step changes files on either side, runs one syncd command the way a user does
(`syncd once -c CONFIG` unless it says otherwise), and states what both sides hold afterwards.
The idea is rclone's cmd/bisync/testdata (scenario + golden listings), in one file per scenario:

    description: A file deleted locally is deleted remotely, and kept in the remote trash.
    remotes: [file, s3]          # optional; which remotes to run against (default: all four)
    config: {max_delete: 50}     # optional; extra keys of the pair (conflict, exclude, ...)
    initial:                     # FILES per side; `both` writes the same files on each side
      local: {a.txt: alpha, b.txt: beta}
    steps:
      - name: first sync uploads both
        expect:
          exit: 0
          both: {a.txt: alpha, b.txt: beta}
      - name: the local delete reaches the remote
        local: {delete: [a.txt]}
        expect:
          exit: 0
          both: {b.txt: beta}
          remote_trash: {"*/a.txt": alpha}

FILES maps a path to its content, or to `{content: ..., mtime: SECONDS}` to set the modification
time (locally with os.utime; on S3 as the `mtime` object metadata syncd reads; on a file://
remote as the file's own mtime).

A step may hold, all optional and applied in this order:
  config: {...}          pair keys replaced before the run (e.g. a longer `exclude` list)
  forget_state: true     delete the state database (a lost state: the next pass is a first sync)
  local: / remote:       changes on that side, applied in this order:
      remove_root: true        (local only) the whole local root disappears
      delete_all: true         every file (syncd's own excepted) is deleted
      delete: [PATH, ...]
      move: {OLD: NEW}         a rename (on S3: server-side copy, then delete)
      write: FILES             create or overwrite
      touch: {PATH: SECONDS}   a new mtime, same content (on S3: the object is put again)
  run: [once, --force]   the syncd command; `-c CONFIG` is appended. `{local}` in an argument
                         is replaced by the local root. Default: [once].
  expect:                what must hold after the run (required; `expect: {}` + regenerate)
      exit: 0                          the exit code (default 0)
      both: LISTING                    shorthand for local and remote both equal to LISTING
      local: LISTING / remote: LISTING every file on that side, compared exactly
      local_trash: / remote_trash:     trash contents, `STAMP/PATH` keys (default: empty)
      stdout: / stderr: / output: [SUBSTRING, ...]   output is stdout + stderr
      stdout_lines: N                  exactly N non-empty lines on stdout

A LISTING maps path -> content. Omitted sides and trashes are expected empty. Listings leave out
syncd's own paths: the local `.syncd/` folder and `.syncd-tmp-*` files, the remote
`.syncd-trash/` prefix (that one is the `remote_trash` listing). Keys may hold the wildcards `*`
and `?`, which match within one path segment, because conflict copies and trash folders carry a
time and a host name: `report.conflict-*.csv`, `*/report.csv`. A pattern key may map to a list
of contents when it matches several files. Literal keys are matched first, then each pattern
key takes one file it matches with the same content.

Every step also checks two things no scenario has to spell out: nothing was written beside the
local root (a hostile key must not escape it), and every trash entry sits in a
`YYYYMMDD-HHMMSS[-N]/` folder.

Regenerating: `SYNCD_SCENARIO_REGEN=1 pytest tests/test_scenarios.py` rewrites every `expect`
block from what actually happened (listings, trash, exit code; time stamps and host names become
`*`), leaving the rest of the file, comments included, untouched; review it with `git diff`.
The first remote a scenario names writes the file; the other remotes are checked against what it
wrote. Output substrings and `stdout_lines` cannot be derived and are kept as they are.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Setup, syncd
from remotes import ALL_KINDS, FolderRemote, Remote, remote_for

REGEN_ENV = "SYNCD_SCENARIO_REGEN"
SCENARIO_DIR = Path(__file__).parent / "scenarios"
REMOTE_KINDS = ALL_KINDS

LOCAL_STATE_DIR = ".syncd"
LOCAL_TRASH = ".syncd/trash"
REMOTE_TRASH = ".syncd-trash"
TEMP_PREFIX = ".syncd-tmp-"

#: Entries a run may leave in the test's tmp folder; anything else was written outside the root.
TMP_ENTRIES = {"local", "remote", "state", "run", "syncd.yaml"}
STAMP_DIR = re.compile(r"^\d{8}-\d{6}(-\d+)?$")
#: The time, host and counter of a conflict copy's name (host names are made dot-free).
CONFLICT_MARK = re.compile(r"\.conflict-\d{8}-\d{6}-[^./]*")

SCENARIO_KEYS = {"description", "remotes", "config", "initial", "steps"}
STEP_KEYS = {"name", "config", "forget_state", "local", "remote", "run", "expect"}
OP_KEYS = {"remove_root", "delete_all", "delete", "move", "write", "touch"}
EXPECT_KEYS = {
    *("exit", "both", "local", "remote", "local_trash", "remote_trash"),
    *("stdout", "stderr", "output", "stdout_lines"),
}
KEPT_ON_REGEN = ("stdout", "stderr", "output", "stdout_lines")

Listing = dict[str, bytes]


def seconds_to_ns(value: float | int) -> int:
    return int(value) * 1_000_000_000 if isinstance(value, int) else round(value * 1e9)


# -- the two sides ---------------------------------------------------------------------------


@dataclass
class LocalSide:
    """The pair's local root, changed and read the way a user's programs would."""

    root: Path

    def write(self, path: str, data: bytes, mtime_ns: int | None) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mtime_ns is not None:
            os.utime(target, ns=(mtime_ns, mtime_ns))

    def delete(self, path: str) -> None:
        (self.root / path).unlink()

    def move(self, src: str, dst: str) -> None:
        (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
        (self.root / src).rename(self.root / dst)

    def touch(self, path: str, mtime_ns: int) -> None:
        os.utime(self.root / path, ns=(mtime_ns, mtime_ns))

    def remove_root(self) -> None:
        shutil.rmtree(self.root)

    def _walk(self, top: Path) -> Listing:
        # Not harness.tree(): that one hides every top-level name starting with ".syncd", so a
        # remote `.syncd-trash/` wrongly downloaded here would go unnoticed.
        if not top.is_dir():
            return {}
        return {
            p.relative_to(top).as_posix(): p.read_bytes()
            for p in sorted(top.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    def files(self) -> Listing:
        return {
            path: data
            for path, data in self._walk(self.root).items()
            if path.split("/", 1)[0] != LOCAL_STATE_DIR
            and not path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)
        }

    def trash(self) -> Listing:
        return self._walk(self.root / LOCAL_TRASH)


def split_trash(everything: Listing) -> tuple[Listing, Listing]:
    """(files outside the remote trash, trash contents keyed relative to the trash)."""
    files: Listing = {}
    trash: Listing = {}
    for key, data in everything.items():
        head, _, rest = key.partition("/")
        if head == REMOTE_TRASH and rest:
            trash[rest] = data
        else:
            files[key] = data
    return files, trash


@dataclass
class RemoteSide:
    """A remote as the scenarios change it; mtimes travel as the `mtime` metadata syncd reads
    (a folder remote's are the files' own)."""

    remote: Remote

    @property
    def url(self) -> str:
        return self.remote.url

    @property
    def options(self) -> dict[str, Any]:
        return self.remote.options

    def get(self, path: str) -> bytes:
        return self.remote.get(path)

    def listing(self) -> list[str]:
        return list(self.remote.listing())

    def write(self, path: str, data: bytes, mtime_ns: int | None) -> None:
        self.remote.put(path, data, mtime_ns)

    def delete(self, path: str) -> None:
        self.remote.delete(path)

    def move(self, src: str, dst: str) -> None:
        if isinstance(self.remote, FolderRemote):  # a real rename: same inode, same mtime
            (self.remote.root / dst).parent.mkdir(parents=True, exist_ok=True)
            (self.remote.root / src).rename(self.remote.root / dst)
            return
        self.remote.copy(src, dst)
        self.remote.delete(src)

    def touch(self, path: str, mtime_ns: int) -> None:
        if isinstance(self.remote, FolderRemote):
            os.utime(self.remote.root / path, ns=(mtime_ns, mtime_ns))
        else:  # an object's mtime is metadata: rewrite it with the same bytes
            self.write(path, self.get(path), mtime_ns)


#: Every side offers write(path, data, mtime_ns), delete(path), move(src, dst), touch(path, ns).
AnySide = LocalSide | RemoteSide


def snapshot(side: AnySide) -> tuple[Listing, Listing]:
    """(every file of the side, syncd's own paths excepted; its trash), each path -> bytes."""
    if isinstance(side, LocalSide):
        return side.files(), side.trash()
    return split_trash({key: side.get(key) for key in sorted(side.listing())})


def make_remote(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> RemoteSide:
    """A fresh, empty remote of `kind` (see remotes.remote_for)."""
    return RemoteSide(remote_for(kind, request, tmp_path))


# -- reading scenarios -----------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    problems = _unknown(doc, SCENARIO_KEYS, "scenario")
    for index, step in enumerate(doc.get("steps") or []):
        where = f"step {index + 1}"
        problems += _unknown(step, STEP_KEYS, where)
        for side in ("local", "remote"):
            problems += _unknown(step.get(side) or {}, OP_KEYS, f"{where} {side}")
        if "expect" not in step:
            problems.append(f"{where}: no expect block (write `expect: {{}}` and regenerate)")
        else:
            problems += _unknown(step["expect"] or {}, EXPECT_KEYS, f"{where} expect")
    if not doc.get("steps"):
        problems.append("no steps")
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))
    return dict(doc)


def _unknown(block: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: expected a mapping, got {block!r}"]
    return [f"{where}: unknown key {key!r}" for key in block if key not in allowed]


def scenario_remotes(path: Path) -> list[str]:
    remotes = load(path).get("remotes") or list(REMOTE_KINDS)
    unknown = set(remotes) - set(REMOTE_KINDS)
    if unknown:
        raise ValueError(f"{path.name}: unknown remotes {sorted(unknown)}")
    return list(remotes)


def file_spec(value: Any) -> tuple[bytes, int | None]:
    """FILES value -> (content, mtime_ns or None)."""
    if isinstance(value, dict):
        return str(value.get("content", "")).encode(), (
            seconds_to_ns(value["mtime"]) if "mtime" in value else None
        )
    return ("" if value is None else str(value)).encode(), None


# -- comparing listings ----------------------------------------------------------------------


def is_pattern(key: str) -> bool:
    return "*" in key or "?" in key


def pattern_regex(key: str) -> re.Pattern[str]:
    """`*` and `?` within one path segment; everything else literal."""
    parts = ("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in key)
    return re.compile("".join(parts) + r"\Z")


def text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def listing_matches(expected: dict[str, Any], actual: Listing) -> bool:
    """Literal keys exactly, then each pattern entry takes one distinct remaining file."""
    remaining = {path: text(data) for path, data in actual.items()}
    wanted: list[tuple[re.Pattern[str], str]] = []
    for key, value in (expected or {}).items():
        contents = value if isinstance(value, list) else [value]
        contents = ["" if c is None else str(c) for c in contents]
        if not is_pattern(key):
            if len(contents) != 1 or remaining.pop(key, None) != contents[0]:
                return False
            continue
        wanted += [(pattern_regex(key), content) for content in contents]
    return _assign(wanted, remaining)


def _assign(wanted: list[tuple[re.Pattern[str], str]], remaining: dict[str, str]) -> bool:
    if not wanted:
        return not remaining
    (regex, content), rest = wanted[0], wanted[1:]
    for path, data in list(remaining.items()):
        if data == content and regex.match(path):
            others = {p: d for p, d in remaining.items() if p != path}
            if _assign(rest, others):
                return True
    return False


def generalise(path: str, trash: bool) -> str:
    """An actual path -> the key a regenerated expectation uses (times and host as `*`)."""
    path = CONFLICT_MARK.sub(".conflict-*", path)
    if trash:
        head, _, rest = path.partition("/")
        if STAMP_DIR.match(head):
            path = f"*/{rest}"
    return path


def as_expectation(actual: Listing, trash: bool = False) -> dict[str, Any]:
    grouped: dict[str, list[str]] = {}
    for path, data in sorted(actual.items()):
        grouped.setdefault(generalise(path, trash), []).append(text(data))
    return {
        key: values[0] if len(values) == 1 else sorted(values) for key, values in grouped.items()
    }


# -- running ---------------------------------------------------------------------------------


@dataclass
class Observed:
    exit: int
    stdout: str
    stderr: str
    local: Listing
    remote: Listing
    local_trash: Listing
    remote_trash: Listing
    stray: list[str] = field(default_factory=list)

    def expectation(self, previous: dict[str, Any]) -> dict[str, Any]:
        """The `expect` block that describes this outcome (substring checks carried over)."""
        out: dict[str, Any] = {"exit": self.exit}
        out.update({key: previous[key] for key in KEPT_ON_REGEN if key in (previous or {})})
        local, remote = as_expectation(self.local), as_expectation(self.remote)
        if local == remote:
            out["both"] = local
        else:
            out["local"], out["remote"] = local, remote
        if self.local_trash:
            out["local_trash"] = as_expectation(self.local_trash, trash=True)
        if self.remote_trash:
            out["remote_trash"] = as_expectation(self.remote_trash, trash=True)
        return out


def problems_with(expect: dict[str, Any], seen: Observed) -> list[str]:
    """Every way `seen` differs from `expect`, in words."""
    expect = expect or {}
    problems = []
    if seen.exit != expect.get("exit", 0):
        problems.append(f"exit code {seen.exit}, expected {expect.get('exit', 0)}")
    if "both" in expect and ("local" in expect or "remote" in expect):
        problems.append("expect has `both` together with `local`/`remote`")
    sides = {
        "local": (expect.get("both", expect.get("local")), seen.local),
        "remote": (expect.get("both", expect.get("remote")), seen.remote),
        "local_trash": (expect.get("local_trash"), seen.local_trash),
        "remote_trash": (expect.get("remote_trash"), seen.remote_trash),
    }
    for name, (wanted, actual) in sides.items():
        if not listing_matches(wanted or {}, actual):
            problems.append(
                f"{name} differs:\n  expected: {wanted or {}}\n  actual:   "
                f"{ {path: text(data) for path, data in actual.items()} }"
            )
    streams = {"stdout": seen.stdout, "stderr": seen.stderr, "output": seen.stdout + seen.stderr}
    for stream, haystack in streams.items():
        problems += [
            f"{stream} lacks {needle!r}"
            for needle in expect.get(stream) or []
            if needle not in haystack
        ]
    if "stdout_lines" in expect:
        lines = [line for line in seen.stdout.splitlines() if line.strip()]
        if len(lines) != expect["stdout_lines"]:
            problems.append(f"{len(lines)} stdout lines, expected {expect['stdout_lines']}")
    return problems


def invariant_problems(seen: Observed) -> list[str]:
    problems = [f"written outside the local root: {name}" for name in seen.stray]
    for side, trash in (("local", seen.local_trash), ("remote", seen.remote_trash)):
        problems += [
            f"{side} trash entry not in a YYYYMMDD-HHMMSS[-N]/ folder: {path}"
            for path in trash
            if not STAMP_DIR.match(path.split("/", 1)[0])
        ]
    return problems


class ScenarioRun:
    """One scenario against one remote, in one tmp folder."""

    def __init__(self, path: Path, remote: RemoteSide, tmp_path: Path) -> None:
        self.path = path
        self.doc = load(path)
        self.tmp = tmp_path
        self.remote = remote
        self.setup = Setup(
            tmp_path,
            remote.url,
            options=remote.options,
            pair_extra=dict(self.doc.get("config") or {}),
        )
        self.setup.write()
        self.local = LocalSide(self.setup.local)

    def side(self, name: str) -> AnySide:
        return self.local if name == "local" else self.remote

    def prepare(self) -> None:
        initial = self.doc.get("initial") or {}
        problems = _unknown(initial, {"local", "remote", "both"}, "initial")
        assert not problems, problems
        for name in ("local", "remote"):
            for files in (initial.get("both"), initial.get(name)):
                for path, value in (files or {}).items():
                    data, mtime_ns = file_spec(value)
                    self.side(name).write(path, data, mtime_ns)

    def resolve(self, side: AnySide, path: str) -> str:
        """A path of an operation; a pattern must name exactly one existing file."""
        if not is_pattern(path):
            return path
        hits = [p for p in snapshot(side)[0] if pattern_regex(path).match(p)]
        assert len(hits) == 1, f"{path!r} should match one file, matches {hits}"
        return hits[0]

    def apply(self, name: str, ops: dict[str, Any]) -> None:
        side = self.side(name)
        if ops.get("remove_root"):
            assert name == "local", "remove_root is a local operation"
            self.local.remove_root()
        if ops.get("delete_all"):
            for path in snapshot(side)[0]:
                side.delete(path)
        for path in ops.get("delete") or []:
            side.delete(self.resolve(side, path))
        for src, dst in (ops.get("move") or {}).items():
            side.move(self.resolve(side, src), dst)
        for path, value in (ops.get("write") or {}).items():
            data, mtime_ns = file_spec(value)
            side.write(self.resolve(side, path), data, mtime_ns)
        for path, mtime in (ops.get("touch") or {}).items():
            side.touch(self.resolve(side, path), seconds_to_ns(mtime))

    def step(self, step: dict[str, Any]) -> Observed:
        if step.get("config"):
            self.setup.pair_extra.update(step["config"])
            self.setup.write()
        if step.get("forget_state"):
            db = self.setup.state_db
            for leftover in (
                db,
                *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")),
            ):
                leftover.unlink(missing_ok=True)
        for name in ("local", "remote"):
            self.apply(name, step.get(name) or {})
        args = [str(a).replace("{local}", str(self.setup.local)) for a in step.get("run", ["once"])]
        result = syncd(*args, "-c", self.setup.config)
        local, local_trash = snapshot(self.local)
        remote, remote_trash = snapshot(self.remote)
        return Observed(
            exit=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
            local=local,
            remote=remote,
            local_trash=local_trash,
            remote_trash=remote_trash,
            stray=sorted(p.name for p in self.tmp.iterdir() if p.name not in TMP_ENTRIES),
        )


def run_scenario(path: Path, remote: RemoteSide, tmp_path: Path, *, regenerate: bool) -> None:
    """Play every step; fail at the first step whose outcome differs from its `expect`.

    With `regenerate`, record every outcome instead and rewrite the file's `expect` blocks.
    """
    __tracebackhide__ = True  # the message says it all; the runner's source does not help
    run = ScenarioRun(path, remote, tmp_path)
    run.prepare()
    recorded: list[dict[str, Any]] = []
    for index, step in enumerate(run.doc["steps"]):
        seen = run.step(step)
        label = f"{path.name} step {index + 1} ({step.get('name', 'unnamed')})"
        broken = invariant_problems(seen)
        if not regenerate:
            broken += problems_with(step["expect"], seen)
        if broken:
            details = "\n".join(f"- {p}" for p in broken)
            raise AssertionError(
                f"{label}:\n{details}\n--- stdout ---\n{seen.stdout[-3000:]}"
                f"\n--- stderr (tail) ---\n{seen.stderr[-3000:]}"
            )
        recorded.append(seen.expectation(step["expect"]))
    if regenerate:
        rewrite_expectations(path, recorded)


# -- regeneration ----------------------------------------------------------------------------


class _ExpectDumper(yaml.SafeDumper):
    """Lists on one line; multi-line contents as one double-quoted line ("a\\nb")."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_ExpectDumper.add_representer(str, _represent_str)
_ExpectDumper.add_representer(list, _represent_list)

_EXPECT_LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?expect:(?P<rest>.*)$")


def rewrite_expectations(path: Path, expects: list[dict[str, Any]]) -> None:
    """Replace the text of each `expect:` block, in order, leaving every other line alone."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[str] = []
    index = found = 0
    while index < len(lines):
        match = _EXPECT_LINE.match(lines[index])
        if match is None:
            out.append(lines[index])
            index += 1
            continue
        key_indent = len(match["indent"]) + len(match["dash"] or "")
        end = index + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > key_indent
        ):
            end += 1
        while end > index + 1 and not lines[end - 1].strip():
            end -= 1  # trailing blank lines belong to what follows
        body = yaml.dump(
            expects[found],
            Dumper=_ExpectDumper,
            sort_keys=False,
            allow_unicode=False,  # escapes keep NFC and NFD names visibly apart
            width=1000,
            indent=2,
        )
        pad = " " * (key_indent + 2)
        out.append(f"{match['indent']}{match['dash'] or ''}expect:\n")
        out += [pad + line + "\n" for line in body.splitlines()]
        found += 1
        index = end
    assert found == len(expects), f"{path.name}: {found} expect blocks for {len(expects)} steps"
    new_text = "".join(out)
    reloaded = [step["expect"] for step in yaml.safe_load(new_text)["steps"]]
    assert reloaded == expects, f"{path.name}: rewritten expectations do not read back"
    path.write_text(new_text, encoding="utf-8")

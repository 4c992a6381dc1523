"""Which paths a pair syncs: gitignore-style `exclude` patterns plus the root's `.syncignore`,
and optional `include` patterns.

Precedence: syncd's own paths are never synced; then anything `exclude` or `.syncignore`
matches is out; then, when `include` is given, only files it matches are in. Exclude wins over
include, and `.syncignore` applies whatever `include` says. Folders are never left out by
`include` alone (a file deep below one may match), only by `exclude`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

import pathspec

from syncd.engine.paths import is_internal

SYNCIGNORE = ".syncignore"


#: A `.syncignore` longer than this is no list of rules someone wrote.
MAX_RULES_BYTES = 1024 * 1024


def _read_rules(path: Path) -> str:
    """The text of a `.syncignore`: a regular file (a link to one is read) of at most
    MAX_RULES_BYTES. A named pipe would block every pass that reads it, and a link to
    /dev/zero fill memory; OSError names what is wrong."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = fh.read(MAX_RULES_BYTES + 1)
    if len(data) > MAX_RULES_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_RULES_BYTES // 1024} KiB")
    # A leading BOM (Windows editors write one) is no part of the first rule, as for git.
    return data.decode("utf-8-sig")


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is no gitignore-style pattern (`[z-a]`, a lone `!`, a trailing `\\`), or
    None. pathspec raises a bare `re.error` for some: checked where a pattern enters (the
    config, a `.syncignore`), so no pass, reload or watcher thread dies of one."""
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except re.error as exc:  # its position is in pathspec's regex, not in the pattern
        return f"not a valid pattern ({exc.msg})"
    except ValueError as exc:  # GitIgnorePatternError
        return f"not a valid pattern ({exc})"
    return None


def as_rule(pattern: str) -> str:
    """A pattern given on its own (`exclude`, `include`, `--exclude`) as a gitignore line:
    one that starts with `#` is a pattern there (Emacs's `#notes#`), never a comment that
    silently matches nothing. In a `.syncignore` such a line stays a comment."""
    return "\\" + pattern if pattern.startswith("#") else pattern


class PathFilter:
    """Excluded paths are never transferred and never deleted on the other side."""

    def __init__(
        self,
        patterns: Iterable[str] = (),
        root: Path | None = None,
        include: Iterable[str] = (),
    ) -> None:
        lines = [as_rule(each) for each in patterns]
        #: Why the root's `.syncignore` could not be read, or which line of it is no
        #: pattern (None: read, or there is none). Its rules are unknown then, so every path
        #: counts as excluded: nothing is sent that it may keep private, nothing deleted; a
        #: pass of the pair fails with this reason.
        self.problem: str | None = None
        if root is not None:
            ignore_file = root / SYNCIGNORE
            try:
                own = _read_rules(ignore_file).splitlines()
                lines += own
                self.problem = next(
                    (
                        f"{ignore_file}: line {number}: {problem}"
                        for number, line in enumerate(own, 1)
                        if (problem := pattern_problem(line)) is not None
                    ),
                    None,
                )
            except (FileNotFoundError, NotADirectoryError):
                pass
            except UnicodeDecodeError:
                self.problem = f"cannot read {ignore_file}: not UTF-8 text"
            except OSError as exc:
                self.problem = f"cannot read {ignore_file}: {exc.strerror or exc}"
        if self.problem is not None:
            lines = []  # every path counts as excluded anyway; a bad line would not compile
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        #: A `!` rule may bring a file back in below an excluded folder.
        self._negates = self._spec is not None and any(
            each.include is False for each in self._spec.patterns
        )
        wanted = [as_rule(each) for each in include]
        self._include = pathspec.GitIgnoreSpec.from_lines(wanted) if wanted else None

    def prunes(self, folder: str) -> bool:
        """May a walk of the local root skip `folder` and all below it? Only where no file
        below it can be in, so that the local side and the remote's listing (where each key
        is asked on its own) agree. With a `!` rule a file below an excluded folder may be
        (`*` + `!*/` + `!*.txt`; `logs/**` + `!logs/keep.txt`): the walk goes in, and each
        file is asked as a remote key is. Skipped, it never went up while the remote's
        copies came down."""
        return self.excluded(folder, is_dir=True) and (
            not self._negates or is_internal(folder) or self.problem is not None
        )

    def excluded(self, path: str, is_dir: bool = False) -> bool:
        if is_internal(path) or self.problem is not None:
            return True
        if self._spec is not None and self._spec.match_file(path + "/" if is_dir else path):
            return True
        if self._include is None or is_dir:
            return False
        return not self._include.match_file(path)

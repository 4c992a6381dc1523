"""Which paths a pair syncs: gitignore-style `exclude` patterns plus the root's `.syncignore`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import pathspec

from syncd.engine.paths import is_internal

SYNCIGNORE = ".syncignore"


class PathFilter:
    """Excluded paths are never transferred and never deleted on the other side."""

    def __init__(self, patterns: Iterable[str] = (), root: Path | None = None) -> None:
        lines = list(patterns)
        if root is not None:
            ignore_file = root / SYNCIGNORE
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                lines += ignore_file.read_text(encoding="utf-8").splitlines()
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None

    def excluded(self, path: str, is_dir: bool = False) -> bool:
        if is_internal(path):
            return True
        if self._spec is None:
            return False
        return self._spec.match_file(path + "/" if is_dir else path)

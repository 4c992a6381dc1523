"""File trees the scenarios sync: random content (nothing compresses or dedupes), fixed names.

Trees are built once per scenario and reused by every tool and run; only the destination is
fresh each time. Contents come from os.urandom, so no two files are equal.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.settings import MiB


def small_files(root: Path, count: int, folders: int, size: int) -> list[Path]:
    """`count` files of exactly `size` bytes spread evenly over `folders` folders."""
    folders = max(1, min(folders, count))
    paths: list[Path] = []
    for index in range(count):
        folder = root / f"dir{index % folders:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"file{index:06d}.bin"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def varied_files(root: Path, count: int, per_folder: int = 1000, max_size: int = 2048) -> int:
    """`count` small files of many different sizes (1 .. max_size bytes), `per_folder` to a
    folder; returns the total bytes. Sizes repeat only every `max_size` files."""
    total = 0
    data = os.urandom(max_size)
    for index in range(count):
        folder = root / f"dir{index // per_folder:04d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        size = 1 + (index * 7919) % max_size
        # A distinct prefix keeps every file's content unique at no extra randomness cost.
        content = (b"%08d" % index + data)[:size]
        (folder / f"f{index:07d}.dat").write_bytes(content)
        total += size
    return total


def big_file(path: Path, size: int) -> None:
    """One file of `size` random bytes, written in 16 MiB chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = 16 * MiB
    with path.open("wb") as handle:
        left = size
        while left > 0:
            step = min(chunk, left)
            handle.write(os.urandom(step))
            left -= step


def change_one(path: Path) -> None:
    """Give one file new content of the same size (and a newer mtime)."""
    size = path.stat().st_size
    path.write_bytes(os.urandom(size))


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))

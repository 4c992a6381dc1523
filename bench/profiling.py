"""Profile one `syncd` first upload with py-spy, and print where the time goes.

    .venv/bin/python -m bench.profiling [--files 2000] [--size 4096] [--distinct-sizes]
                                      [--remote s3|file] [--rate 100]
    make bench-profile                # the same, with defaults (scenario 1's tree on moto)

It builds scenario 1's tree (or one with every file a different size), starts moto (for
`--remote s3`), runs `syncd once` under `py-spy record --format raw`, writes the folded stacks
to bench/results/profile-*.folded (open it in speedscope.app, or feed it to flamegraph.pl) and
prints the functions with the largest share of samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import emulators, trees
from bench.peers import Peers, base_env
from bench.runner import syncd_config
from bench.settings import RESULTS_DIR


def summarise(folded: Path, top: int = 25) -> str:
    """Inclusive and self shares of the functions in py-spy's folded stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")[1:]]  # [0] is the thread
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--distinct-sizes", action="store_true")
    parser.add_argument("--remote", choices=("s3", "file"), default="s3")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: where the CPU goes, not the waits",
    )
    args = parser.parse_args(argv)

    peers = Peers.discover()
    if not peers.py_spy.available:
        print(f"bench.profiling: py-spy {peers.py_spy.missing}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="syncd-profile-"))
    moto = None
    try:
        src = work / "src"
        if args.distinct_sizes:
            for index in range(args.files):
                folder = src / f"dir{index % 20:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                size = max(1, args.size - args.files // 2 + index)
                (folder / f"file{index:06d}.bin").write_bytes(os.urandom(size))
        else:
            trees.small_files(src, args.files, 20, args.size)
        env = base_env(work / "home")
        options: dict[str, str] = {}
        if args.remote == "s3":
            moto = emulators.start_moto(work)
            remote = f"s3://{moto.fresh_bucket()}/"
            options = {"endpoint_url": moto.endpoint_url}
        else:
            (work / "dst").mkdir()  # `syncd once` wants the remote folder to exist
            remote = f"file://{work / 'dst'}"
        config = syncd_config(
            work / "syncd.yaml",
            local=src,
            remote=remote,
            state_dir=work / "state",
            workers=args.workers,
            options=options,
            direction="upload",
        )
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        kind = f"{args.remote}-{args.files}x{args.size}{'-distinct' if args.distinct_sizes else ''}"
        folded = RESULTS_DIR / f"profile-{time.strftime('%Y%m%d-%H%M%S')}-{kind}.folded"
        argv_ = [
            peers.py_spy.exe,
            "record",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--output",
            str(folded),
            *(["--gil"] if args.gil else []),
            "--",
            peers.syncd.exe,
            "once",
            "-c",
            str(config),
        ]
        started = time.perf_counter()
        with (work / "syncd.log").open("wb") as log:
            done = subprocess.run(argv_, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        took = time.perf_counter() - started
        # py-spy's exit code is its own; syncd's summary is the last line of its output.
        summary = [
            line
            for line in (work / "syncd.log").read_text(errors="replace").splitlines()
            if line and not line.startswith(("{", "py-spy>"))
        ]
        print(f"syncd once under py-spy ({kind}): {took:.1f} s; py-spy exit {done.returncode}")
        print("syncd: " + (summary[-1] if summary else "(no summary line)"))
        if folded.exists():
            print(summarise(folded))
            print(f"\nfolded stacks: {folded}")
        return 0
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

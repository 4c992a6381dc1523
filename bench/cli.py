"""The bench's entry point: start the emulators, run the scenarios, print the table, write JSON.

Environment:
    BENCH_SCALE          shrink every size (0.05 = a quick run); default 1
    BENCH_RUNS           runs per tool and scenario (at least 3); default 3
    BENCH_ONLY           scenario numbers to run, e.g. "1 4 7"; default all
    BENCH_TIMEOUT        seconds one command may take before it is stopped; default
                         max(120, 1800 x BENCH_SCALE)
    BENCH_SYNCD_WORKERS  syncd's `workers:` (and `--transfers`); default 16
    BENCH_WORKDIR        where trees, buckets' logs and state go; default a new /tmp folder
    BENCH_KEEP=1         keep the work folder (logs of every command) instead of removing it

A scenario that crashes is reported and the next one runs; the exit code is 0 unless the
bench itself could not start (no moto), so a missed target never fails `make bench`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import daemon, emulators, report, scenarios, targets
from bench.peers import Peers, base_env, foreign_syncd, syncd_source
from bench.runner import Bench, say
from bench.settings import Settings

SCENARIOS: list[tuple[str, str, Callable[[Bench], None]]] = [
    ("123", "many small files on S3", scenarios.s3_small),
    ("4", "one big file on S3", scenarios.s3_big),
    ("5", "a local-folder remote", scenarios.local_remote),
    ("6", "Azure and GCS", scenarios.other_clouds),
    ("7", "the daemon: latency", daemon.latency),
    ("7", "the daemon: files under watch", daemon.watch_tree),
]


def _work_dir() -> Path:
    chosen = os.environ.get("BENCH_WORKDIR", "").strip()
    if chosen:
        path = Path(chosen).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    # Short and under /tmp: the daemon's control socket path must stay under 108 bytes.
    return Path(tempfile.mkdtemp(prefix="syncd-bench-"))


def _start_emulators(bench: Bench, wanted: set[str]) -> None:
    logs = bench.work / "emulators"
    logs.mkdir(parents=True, exist_ok=True)
    if wanted & set("12347"):
        bench.moto = emulators.start_moto(logs)
        say(f"moto on {bench.moto.endpoint_url} (pid {bench.moto.pid})")
    if "6" in wanted:
        try:
            bench.azurite = emulators.start_azurite(logs)
            say(f"Azurite on {bench.azurite.endpoint_url}")
        except Exception as exc:  # reported; the rest of the bench goes on
            bench.findings.append(f"Azurite could not start: {exc}")
            say(f"Azurite unavailable: {exc}")
        try:
            bench.gcs = emulators.start_fake_gcs(logs)
            say(f"fake-gcs-server on {bench.gcs.endpoint_url}")
        except Exception as exc:
            bench.findings.append(f"fake-gcs-server could not start: {exc}")
            say(f"fake-gcs-server unavailable: {exc}")


def _stop_emulators(bench: Bench) -> None:
    for emulator in (bench.moto, bench.azurite, bench.gcs):
        if emulator is not None:
            emulator.stop()


def _print_header(bench: Bench, versions: dict[str, str]) -> None:
    machine = report.machine()
    s = bench.settings
    print(
        f"syncd bench — {machine['cores']} cores, {machine['memory_mb']} MB, "
        f"{machine['cpu_model']}, Linux {machine['kernel']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"scale {s.scale:g}, {s.runs} runs per tool, syncd workers {s.syncd_workers}; "
        f"scenarios 1-3,6: {s.small_files} x {s.small_size} B in {s.small_folders} folders; "
        f"4: {s.big_size / 2**20:.0f} MiB; 5: {s.local_files} x {s.local_size} B; "
        f"7: {s.drops} drops, {s.watch_files} files under watch, idle window "
        f"{s.idle_window_s:.0f} s"
    )
    print()


def _print_runs(bench: Bench) -> None:
    """Scenario 1, run by run: wall time beside the emulator's CPU seconds."""
    rows = [r for r in bench.rows if r.scenario == scenarios.S1 and r.samples]
    if not rows:
        return
    print("\nscenario 1 run by run (wall s / moto CPU s / tool CPU s):")
    for row in rows:
        moto = row.extra.get("moto CPU s", [])
        tool = row.extra.get("tool CPU s", [])
        runs = "   ".join(
            f"{wall:.2f} / {moto[i]:.2f} / {tool[i]:.2f}"
            for i, wall in enumerate(row.samples)
            if i < len(moto) and i < len(tool)
        )
        print(f"  {row.tool:<24} {runs}")


def _print_commands(bench: Bench) -> None:
    print("\ncommands and flags (as run; $WORK is the work folder, BUCKET a fresh bucket):")
    for tool, lines in bench.commands.items():
        for line in lines:
            print(f"  [{tool}] {line}")
    print(
        "  syncd config: workers "
        f"{bench.settings.syncd_workers}, direction upload for `syncd once` (scenarios 1-3, 6), "
        "defaults otherwise (part_size 16 MiB, part_concurrency 4, log level info to a file)"
    )


def main() -> int:
    started = time.time()
    settings = Settings.from_env()
    peers = Peers.discover()
    if not peers.syncd.available:
        print(f"bench: {peers.syncd.missing}", file=sys.stderr)
        return 2
    elsewhere = foreign_syncd()
    if elsewhere is not None:
        print(
            f"bench: the venv's syncd runs the sources at {elsewhere}, not this checkout's; "
            "reinstall it here (`.venv/bin/pip install --no-deps -e .`)",
            file=sys.stderr,
        )
        return 2
    work = _work_dir()
    env = base_env(work / "home")
    # The bench's own boto3 calls (bucket listings, HEAD polls) need the same credentials.
    os.environ.pop("AWS_CA_BUNDLE", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ[key] = env[key]
    bench = Bench(settings=settings, peers=peers, work=work, env=env)
    versions = {**peers.versions(), **emulators.emulator_versions()}
    source = syncd_source()
    versions["syncd source"] = (
        f"{source['commit']} + {source['uncommitted_files']} changed files, "
        f"sources {source['sources_sha256']}"
    )
    for name, reason in peers.missing().items():
        say(f"{name} unavailable: {reason}")
    say(f"work folder {work}; scale {settings.scale:g}; scenarios {''.join(sorted(settings.only))}")

    wanted = set(settings.only)
    try:
        try:
            _start_emulators(bench, wanted)
        except RuntimeError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        for numbers, title, run in SCENARIOS:
            if not wanted & set(numbers):
                continue
            try:
                run(bench)
            except Exception as exc:  # one broken scenario must not hide the rest
                say(f"scenario {title} crashed: {exc}")
                bench.findings.append(f"scenario '{title}' crashed: {exc!r}")
                traceback.print_exc(file=sys.stderr)
    finally:
        _stop_emulators(bench)

    if syncd_source()["sources_sha256"] != source["sources_sha256"]:
        bench.findings.append(
            "syncd's sources changed while the bench ran: the rows mix two versions of syncd; "
            "run it again"
        )
    measured = targets.evaluate(bench.rows, settings.settle_s)
    text = _render(bench, measured, versions)
    print()
    print(text)
    path = report.write_json(
        bench.rows,
        measured,
        settings=settings.describe(),
        versions=versions,
        commands={tool: "\n".join(lines) for tool, lines in bench.commands.items()},
        missing=peers.missing(),
        started=started,
        findings=bench.findings,
    )
    path.with_suffix(".txt").write_text(text + "\n")
    print(f"\nresults: {path} (+ .txt); took {time.time() - started:.0f} s")
    if os.environ.get("BENCH_KEEP") == "1" or os.environ.get("BENCH_WORKDIR"):
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _render(bench: Bench, measured: list[report.Target], versions: dict[str, str]) -> str:
    """Everything the bench prints at the end (also saved as a .txt beside the JSON)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        _print_header(bench, versions)
        print(report.table(bench.rows))
        _print_runs(bench)
        _print_commands(bench)
        missing = bench.peers.missing()
        if missing:
            print("\nunavailable peers:")
            for name, reason in missing.items():
                print(f"  {name}: {reason}")
        print("\ntargets (reported, never asserted):")
        for target in measured:
            print(target.line())
        if bench.findings:
            print("\nnotes:")
            for finding in bench.findings:
                print(f"  - {finding}")
    return buffer.getvalue().rstrip()

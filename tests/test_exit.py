"""The console script leaves without tearing the interpreter down (`syncd.cli._leave`), but
with everything a normal exit does that a user or a script can see: the exit code, every
byte of output through a pipe, atexit handlers, and waiting for a thread still at work.
A usage error leaves like every other error: one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from syncd import __version__

SYNCD = Path(sys.executable).with_name("syncd")


def _script(body: str) -> subprocess.CompletedProcess[str]:
    """Run `body`, then the console script's main() with the argv it set."""
    code = textwrap.dedent(body) + "\nfrom syncd.cli import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_output_through_a_pipe_is_whole_and_the_code_kept(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SYNCD), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    normal_exit = subprocess.run(  # the same command, leaving the usual way
        [sys.executable, "-c", "from syncd.cli import cli; cli(['--help'], prog_name='syncd')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == normal_exit.returncode == 0
    assert done.stdout == normal_exit.stdout
    assert done.stdout.startswith("Usage: syncd") and "status" in done.stdout

    version = subprocess.run(
        [str(SYNCD), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"syncd, version {__version__}")

    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs: [{name: a, local: /tmp/x, remote: 'zz://nope'}]\nworkers: -1\n")
    refused = subprocess.run(
        [str(SYNCD), "once", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("syncd: ") and len(refused.stderr.splitlines()) == 1
    assert "Traceback" not in refused.stderr


def test_atexit_handlers_still_run() -> None:
    done = _script(
        """
        import atexit, sys
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.argv = ["syncd", "--version"]
        """
    )
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"syncd, version {__version__}", "atexit ran"]


def test_a_thread_still_at_work_is_waited_for() -> None:
    done = _script(
        """
        import sys, threading, time
        def late():
            time.sleep(3)  # well after the version is out, even on a loaded machine
            print("thread finished", flush=True)
        threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it
        sys.argv = ["syncd", "--version"]
        """
    )
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"syncd, version {__version__}", "thread finished"]


def test_a_failing_command_keeps_its_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"state: sqlite:///{tmp_path / 'state.db'}\nsocket: {tmp_path / 'none.sock'}\n"
        f"pairs: [{{name: a, local: {tmp_path / 'l'}, remote: 'file://{tmp_path / 'r'}'}}]\n"
    )
    done = _script(
        f"""
        import sys
        sys.argv = ["syncd", "status", "-c", {str(config)!r}]
        """
    )
    assert done.returncode == 3  # the contract's "daemon not running"
    assert done.stderr.startswith("syncd: syncd daemon is not running")


def test_under_a_profiler_the_exit_is_the_normal_one(tmp_path: Path) -> None:
    """cProfile (like pyinstrument) writes its report after the program returns."""
    report = tmp_path / "syncd.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(report), str(SYNCD), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"syncd, version {__version__}")
    assert report.stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["status", "--frobnicate"],
            "syncd: no such option '--frobnicate' (see 'syncd status --help')",
        ),
        (
            ["resolve", "x", "--keep", "sideways"],
            "syncd: invalid value for '--keep': 'sideways' is not one of 'local', 'remote', "
            "'both' (see 'syncd resolve --help')",
        ),
        (["resolve"], "syncd: missing argument 'PATH' (see 'syncd resolve --help')"),
        (
            ["once", "--pair"],
            "syncd: option '--pair' requires an argument (see 'syncd once --help')",
        ),
        (["bogus"], "syncd: no such command 'bogus' (see 'syncd --help')"),
        (
            ["state", "rebuild", "-x"],
            "syncd: no such option '-x' (see 'syncd state rebuild --help')",
        ),
        (["state"], "syncd: missing command (rebuild) (see 'syncd state --help')"),
    ],
    ids=[
        "unknown option",
        "bad choice",
        "missing argument",
        "missing value",
        "unknown command",
        "nested command",
        "group without its command",
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(argv: list[str], line: str) -> None:
    """The contract: "one clear line naming the problem"; click's text, not its block."""
    done = subprocess.run(
        [str(SYNCD), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")


def test_help_is_still_click_help() -> None:
    asked = subprocess.run(
        [str(SYNCD), "status", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert asked.returncode == 0 and asked.stdout.startswith("Usage: syncd status [OPTIONS]")
    group = subprocess.run(
        [str(SYNCD), "state", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert group.returncode == 0 and group.stdout.startswith("Usage: syncd state")
    assert "rebuild" in group.stdout


def test_the_control_commands_load_no_engine_state_or_sdk(tmp_path: Path) -> None:
    """`syncd status` (and sync, pause, resume, retry, --help) only read the config's socket
    and talk to the daemon: the engine, SQLAlchemy, structlog and the SDKs stay unloaded (the
    CLI's import went from ~0.4 s to ~0.1 s). `status` is what people and scripts run most."""
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"socket: {tmp_path / 'syncd.sock'}\n"
        f"pairs: [{{name: docs, local: {tmp_path}, remote: 's3://bucket/docs'}}]\n"
    )
    code = textwrap.dedent(
        f"""
        import atexit, sys
        from syncd.cli import main

        def loaded():  # at the exit: main() leaves through it
            heavy = ("sqlalchemy", "structlog", "boto3", "syncd.engine.core", "syncd.state")
            print(sorted(name for name in heavy if name in sys.modules), flush=True)

        atexit.register(loaded)
        sys.argv = ["syncd", "status", "-c", {str(config)!r}]
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert done.returncode == 3, done.stderr  # it did run: no daemon there

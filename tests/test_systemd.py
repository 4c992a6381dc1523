"""systemd integration: the unit files verify, and the daemon speaks sd_notify in order."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from harness import (
    SYNCD,
    folder_setup,
    hung_and_healthy,
    hung_endpoint,
    unavailable_here,
    wait_for,
)

from syncd.config import load_config
from syncd.daemon.daemon import Daemon
from syncd.daemon.notify import Notifier
from syncd.engine.core import Engine

UNITS = Path(__file__).parent.parent / "systemd"


@pytest.mark.parametrize("unit", ["syncd.service", "syncd-user.service"])
def test_unit_files_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable_here("systemd-analyze is not installed here")
    # The unit as shipped, before any install: verify checks that ExecStart's program
    # exists, and an ExecStart naming /usr/local/bin/syncd failed it wherever syncd was not
    # installed there yet (`/usr/bin/env syncd` finds it at start).
    text = (UNITS / unit).read_text()
    copy = tmp_path / "syncd.service"
    copy.write_text(text)
    environ = dict(os.environ)
    if "user" in unit:  # a user manager needs a runtime folder (none in a bare container)
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        environ["XDG_RUNTIME_DIR"] = str(runtime)
    result = subprocess.run(
        [analyze, "verify", *(["--user"] if "user" in unit else []), str(copy)],
        capture_output=True,
        text=True,
        check=False,
        env=environ,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "syncd.service" in line and "network-online.target" not in line
    ]
    assert problems == [], result.stderr
    assert all(
        line.startswith("#")
        or not line.strip()
        or line.startswith("[")
        or _commented_above(text, line)
        for line in text.splitlines()
    )


@pytest.mark.parametrize("unit", ["syncd.service", "syncd-user.service"])
def test_a_config_error_is_not_restarted_in_a_loop(unit: str) -> None:
    """`syncd run` exits 2 on a bad config; Restart=on-failure started it again every 5 s for
    ever. Exit 2 now ends it (the journal has the one line naming the key)."""
    settings = (UNITS / unit).read_text().splitlines()
    assert "Restart=on-failure" in settings and "RestartPreventExitStatus=2" in settings


def _commented_above(text: str, line: str) -> bool:
    """Every setting carries its own comment, on the line just above it (issue 7: "every
    line carries a comment saying why")."""
    lines = text.splitlines()
    index = lines.index(line)
    return index > 0 and lines[index - 1].startswith("#")


def _install_recipe() -> list[str]:
    """The commands of `make install-systemd`, read with `make -n` (which runs nothing)."""
    return subprocess.run(
        ["make", "-n", "install-systemd"],
        cwd=UNITS.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def test_the_system_install_gives_the_service_user_a_config_it_can_read() -> None:
    """`make install-systemd` (read with `make -n`, which runs nothing): the service user
    exists before the config is installed root:syncd 0640 (its credentials readable by the
    service, by no other user), and the config is the system one, not `make run`'s."""
    recipe = _install_recipe()
    useradd = next(i for i, line in enumerate(recipe) if "useradd" in line)
    config = next(i for i, line in enumerate(recipe) if "/etc/syncd/syncd.yaml" in line)
    assert useradd < config
    assert "install -o root -g syncd -m 0640 config/syncd.system.yaml" in recipe[config]
    unit = (UNITS / "syncd.service").read_text()
    assert "User=syncd" in unit and "Group=syncd" in unit


def test_the_installed_service_has_the_folders_of_its_pair() -> None:
    """The installed config's pair (/var/lib/syncd/local <-> file:///var/lib/syncd/remote)
    works as installed: `make install-systemd` makes both folders for the service user, after
    the user exists; and the unit's example ReadWritePaths= is optional ("-"), since a missing
    path there fails the unit's start (status 226/NAMESPACE)."""
    recipe = "\n".join(_install_recipe())
    config = yaml.safe_load((UNITS.parent / "config" / "syncd.system.yaml").read_text())
    pair = config["pairs"][0]
    folders = [pair["local"], pair["remote"].removeprefix("file://")]
    assert recipe.index("useradd") < recipe.index(folders[0])
    for folder in folders:
        assert folder in recipe
    assert "install -d -o syncd -g syncd" in recipe
    unit = (UNITS / "syncd.service").read_text()
    paths = [line for line in unit.splitlines() if line.startswith("ReadWritePaths=")]
    assert paths and all(
        word.startswith("-") for line in paths for word in line.split("=", 1)[1].split()
    )


def test_sysctl_dropin_raises_inotify_limits() -> None:
    text = (UNITS / "99-syncd-inotify.conf").read_text()
    values = dict(
        (key.strip(), int(value))
        for key, value in (
            line.split("=")
            for line in text.splitlines()
            if "=" in line and not line.startswith("#")
        )
    )
    assert values["fs.inotify.max_user_watches"] >= 524288
    assert values["fs.inotify.max_user_instances"] >= 256
    assert values["fs.inotify.max_queued_events"] > 16384  # the kernel's default


def test_notifier_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_daemon_sends_ready_status_watchdog_stopping_in_order(tmp_path: Path) -> None:
    setup, _ = folder_setup(tmp_path)
    setup.write()
    (setup.local / "a.txt").write_text("a")
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    listen.bind(address)
    listen.settimeout(10)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [*SYNCD, "run", "-c", str(setup.config)], env=env, stderr=subprocess.DEVNULL
    )
    messages: list[str] = []
    try:

        def got(prefix: str) -> bool:
            try:
                messages.extend(listen.recv(4096).decode().splitlines())
            except TimeoutError:
                return False
            return any(m.startswith(prefix) for m in messages)

        wait_for(lambda: got("WATCHDOG=1"), timeout=20, interval=0)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: got("STOPPING=1"), timeout=20, interval=0)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listen.close()
    kinds = [m.split("=", 1)[0] for m in messages]
    assert kinds.index("READY") < kinds.index("WATCHDOG") < kinds.index("STOPPING")
    assert kinds[0] == "READY" and "STATUS" in kinds
    statuses = [m.split("=", 1)[1] for m in messages if m.startswith("STATUS=")]
    assert any(s == "idle" or s.startswith("syncing") for s in statuses)
    assert f"MAINPID={proc.pid}" in messages


def test_ready_and_watchdog_do_not_wait_for_a_hung_remote(tmp_path: Path) -> None:
    """READY=1 once the start-up scans are queued, whatever the remotes do. A pair whose
    remote accepts connections and never answers (each listing waits out a 60 s read timeout,
    retried for up to 5 minutes) kept READY=1 and every WATCHDOG=1 back for six minutes:
    systemd's start timeout killed the service, and Restart= took the healthy pair down with
    it each time. The status line says what the pair is doing."""
    with hung_endpoint() as endpoint:
        setup = hung_and_healthy(tmp_path, endpoint)
        setup.write()
        listen = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = str(tmp_path / "notify.sock")
        listen.bind(address)
        listen.settimeout(1)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
        log = tmp_path / "daemon.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*SYNCD, "run", "-c", str(setup.config)], env=env, stderr=out)
        messages: list[str] = []
        try:

            def got(prefix: str) -> bool:
                with contextlib.suppress(TimeoutError):
                    messages.extend(listen.recv(4096).decode().splitlines())
                return any(m.startswith(prefix) for m in messages)

            wait_for(lambda: got("READY=1"), timeout=30, interval=0)
            wait_for(lambda: got("WATCHDOG=1"), timeout=30, interval=0)
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: got("STOPPING=1"), timeout=15, interval=0)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            listen.close()
    kinds = [m.split("=", 1)[0] for m in messages]
    assert kinds[0] == "READY"
    assert kinds.index("READY") < kinds.index("WATCHDOG") < kinds.index("STOPPING")
    ready_status = messages[kinds.index("READY") + 1]
    assert ready_status.startswith("STATUS=") and "cloud" in ready_status, messages


def test_the_status_line_reads_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd's STATUS= is refreshed twice a second: it must not query the state database
    (a count over 100,000 entries is ~10 ms each time); `syncd status` still reports counts."""
    setup, _ = folder_setup(tmp_path)
    setup.write()
    config = load_config(setup.config)
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        assert daemon.status()["pairs"][0]["synced_files"] == 0
        assert daemon.status_line() == "scanning docs"  # no first pass yet
        daemon.full_scan("docs", first_pass=True)

        def no_query(*args: object) -> int:
            raise AssertionError("the status line queried the state")

        monkeypatch.setattr(engine.store, "count", no_query)
        monkeypatch.setattr(engine.store, "counters", no_query)
        assert daemon.status_line() == "idle"
        engine.queue.pause("docs")
        assert daemon.status_line() == "paused"  # every pair: the word


def test_the_status_line_names_the_paused_pairs_while_others_go_on(tmp_path: Path) -> None:
    """`syncd pause --pair NAME` with other pairs running: "paused: NAME" beside the others'
    own words; `syncd pause` (all of them): "paused"."""
    setup, _ = folder_setup(tmp_path)
    other_remote = tmp_path / "other-remote"
    other_remote.mkdir()
    (tmp_path / "other").mkdir()
    setup.extra["pairs"] = [
        {"name": "docs", "local": str(setup.local), "remote": setup.remote},
        {"name": "music", "local": str(tmp_path / "other"), "remote": f"file://{other_remote}"},
    ]
    setup.write()
    config = load_config(setup.config)
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        for name in ("docs", "music"):
            daemon.full_scan(name, first_pass=True)
        engine.queue.pause("music")
        assert daemon.status_line() == "paused: music"
        engine.queue.pause("docs")
        assert daemon.status_line() == "paused"


def test_the_status_line_counts_files_in_plain_words(tmp_path: Path) -> None:
    """ "syncing 12 files in docs", as the issue has it, and "syncing 1 file in docs" for one
    (it said "1 files")."""
    setup, _ = folder_setup(tmp_path)
    setup.write()
    config = load_config(setup.config)
    with Engine(config) as engine:
        daemon = Daemon(config, engine)
        daemon.full_scan("docs", first_pass=True)
        engine.queue.put("docs", "a.txt")  # no worker runs: it stays queued
        assert daemon.status_line() == "syncing 1 file in docs"
        engine.queue.put("docs", "b.txt")
        assert daemon.status_line() == "syncing 2 files in docs"


def test_the_installs_use_a_venv_and_clean_keeps_the_synced_folder() -> None:
    """Read with `make -n` (which runs nothing). A distribution's Python refuses `pip install
    --user` (PEP 668), and Debian's puts `pip install --prefix /usr/local` under
    /usr/local/local, where neither the unit's PATH nor Python looks: each install makes a
    venv of its own and links `syncd` where the unit finds it. `make clean` deleted ./sync,
    the files `make run` syncs. `make run` from a folder with a space in its path failed."""

    def recipe(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target], cwd=UNITS.parent, capture_output=True, text=True, check=True
        ).stdout

    system, user = recipe("install-systemd"), recipe("install-systemd-user")
    assert "python3 -m venv /opt/syncd" in system
    assert "ln -sf /opt/syncd/bin/syncd /usr/local/bin/syncd" in system
    assert '/.local/share/syncd/venv/bin/syncd" "' in user and "/.local/bin/syncd" in user
    assert "--prefix" not in system and "install --user" not in user
    assert " sync" not in recipe("clean").split("rm -rf", 1)[1]
    assert f'cd "{UNITS.parent}"' in recipe("run")

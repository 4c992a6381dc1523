"""A reload (SIGHUP) that changes pairs: a pair whose new remote cannot be opened keeps
running as it was, a pair in a retry wait is let go at once, and nothing a reload meets ends
the daemon."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from faultproxy import FaultProxy, slow_down
from harness import Setup, folder_engine, folder_setup, running_daemon, wait_for
from remotes import S3Remote, remote_for

from syncd.config import load_config
from syncd.daemon.daemon import Daemon
from syncd.engine import core
from syncd.engine.core import Engine
from syncd.providers.base import ObjectInfo, UploadRequest

#: An AWS profile with the emulator's dummy credentials (a profile named in the options
#: takes its credentials from the config files, not from the environment).
PROFILE = (
    "[profile later]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    "region = us-east-1\n"
)


def _rewrite(setup: Setup, change: Any) -> None:
    """Change the config file's first pair in place (`change(pair)`)."""
    doc = yaml.safe_load(setup.config.read_text())
    change(doc["pairs"][0])
    setup.config.write_text(yaml.safe_dump(doc))


def test_a_changed_pair_whose_remote_cannot_be_opened_keeps_running_as_it_was(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that named an AWS profile not (yet) in the AWS config removed the pair, could
    not add it anew and kept the new config all the same: the pair stopped syncing without a
    word in `status`, the next SIGHUP did not try it again, and the reload after that (the
    profile line taken out) ended the daemon with JobLookupError. The reload is now rejected
    with one line naming the pair, the pair syncs on as before, and a later SIGHUP (once the
    profile is there) takes the config, as does the one that takes the profile out again."""
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    remote = remote_for("s3", request, tmp_path, prefix="docs/")
    setup = Setup(tmp_path, remote.url, options=remote.options)
    with running_daemon(setup) as daemon:
        daemon.wait_idle()
        _rewrite(setup, lambda pair: pair["options"].update(profile="later"))
        daemon.proc.send_signal(signal.SIGHUP)
        rejected = wait_for(
            lambda: [line for line in daemon.logs().splitlines() if "reload rejected" in line]
        )
        assert len(rejected) == 1
        assert '"pair": "docs"' in rejected[0] and "no profile 'later'" in rejected[0]
        (setup.local / "after.txt").write_bytes(b"synced under the running config")
        wait_for(lambda: remote.read("after.txt") == b"synced under the running config")
        assert daemon.wait_idle()["name"] == "docs"

        aws_config.write_text(PROFILE)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.logs().count("config reloaded") == 1)
        (setup.local / "later.txt").write_bytes(b"synced under the profile")
        wait_for(lambda: remote.read("later.txt") == b"synced under the profile")

        _rewrite(setup, lambda pair: pair["options"].pop("profile"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.logs().count("config reloaded") == 2)
        (setup.local / "last.txt").write_bytes(b"synced without the profile")
        wait_for(lambda: remote.read("last.txt") == b"synced without the profile")
        assert daemon.wait_idle()["name"] == "docs"
        assert "Traceback" not in daemon.logs()
        assert daemon.terminate() == 0


def test_a_reload_lets_go_of_a_changed_pair_that_waits_out_a_retry(
    tmp_path: Path, s3_bucket: Any
) -> None:
    """The first upload of `a.txt` is told to come back in 90 s (503 SlowDown, Retry-After).
    A reload that points the pair elsewhere meanwhile waited for that upload in the main
    loop, up to a minute (systemd's watchdog kills the daemon after 30 s; `status` did not
    answer), and the upload then went on to the old place. The wait now ends at once: the
    pair syncs at its new place, and nothing reaches the old one."""
    with FaultProxy(s3_bucket.endpoint_url, seed=7) as proxy:
        throttled = proxy.add_rule(
            slow_down(retry_after=90), method="PUT", path=r"/docs/a\.txt", limit=1
        )
        old, new = S3Remote(s3_bucket, "docs/"), S3Remote(s3_bucket, "moved/")
        setup = Setup(tmp_path, old.url, options={"endpoint_url": proxy.url})
        with running_daemon(setup) as daemon:
            daemon.wait_idle()
            (setup.local / "a.txt").write_bytes(b"a")
            wait_for(lambda: throttled.fired == 1)
            _rewrite(setup, lambda pair: pair.update(remote=new.url))
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: new.read("a.txt") == b"a")
            assert daemon.wait_idle()["remote"] == new.url
            assert daemon.terminate() == 0
        assert old.read("a.txt") is None
        assert not proxy.errors, proxy.errors[0]


def test_an_upload_that_ends_after_its_pair_was_removed_is_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal waits for the pair's transfers, for a while: an upload stalled past that
    came back and recorded its base in the state, which a reload that changed the pair's
    place had forgotten meanwhile (the new place's first sync then took the file for
    deleted). What ends after the pair's removal is not recorded now."""
    monkeypatch.setattr(core, "REMOVE_WAIT_S", 0.5)  # the removal gives up on the stall
    engine: Engine = folder_engine(tmp_path)
    sent, release = threading.Event(), threading.Event()
    try:
        syncer = engine.syncers["p"]
        upload = syncer.provider.upload

        def stalled(request: UploadRequest) -> ObjectInfo:
            sent.set()
            release.wait(60)
            return upload(request)

        monkeypatch.setattr(syncer.provider, "upload", stalled)
        (tmp_path / "local" / "a.txt").write_text("a")
        engine.queue.put("p", "a.txt")
        worker = threading.Thread(target=_work_one, args=(engine,))
        worker.start()
        assert sent.wait(30)
        engine.remove_pair("p")
        release.set()
        worker.join(60)
        assert not worker.is_alive()
        assert engine.store.get("p", "a.txt") is None
    finally:
        release.set()
        engine.close()


def _work_one(engine: Engine) -> None:
    """Be one of the daemon's workers, for one queued path."""
    key = engine.queue.get(timeout=5)
    assert key is not None
    engine.handle(key)
    engine.queue.done(key)


def test_a_reload_that_fails_does_not_end_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error out of a reload (JobLookupError, say) ended the main loop and the daemon,
    exit 1. It is logged now, and the daemon runs on: the next SIGHUP is heard too."""
    setup, _ = folder_setup(tmp_path)
    setup.write()
    config = load_config(setup.config)
    tried: list[int] = []

    def broken() -> None:
        tried.append(1)
        raise RuntimeError("a reload that fails")

    with Engine(config) as engine:
        daemon = Daemon(config, engine, setup.config)
        monkeypatch.setattr(daemon, "reload", broken)

        def hang_up_twice() -> None:
            try:
                daemon._on_hangup(signal.SIGHUP, None)
                wait_for(lambda: tried == [1])
                daemon._on_hangup(signal.SIGHUP, None)
                wait_for(lambda: tried == [1, 1])
            finally:
                daemon.stop()

        sender = threading.Thread(target=hang_up_twice)
        sender.start()
        try:
            assert daemon.run() == 0
        finally:
            daemon.stop()
            sender.join(30)
    assert tried == [1, 1]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_poll_whose_pair_a_reload_took_away_meanwhile_queues_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A reload that removed a pair while its poll listed the remote: the poll went on with
    the pair looked up again, a KeyError traceback (sweep O). Replaced by a pair of the same
    name elsewhere, the old listing's paths were queued into the new pair. The poll of a pair
    no longer running ends without a word now."""
    setup, remote = folder_setup(tmp_path)
    setup.write()
    config = load_config(setup.config)
    (remote / "new.txt").write_text("a file the poll would queue")
    with Engine(config) as engine:
        daemon = Daemon(config, engine, setup.config)
        (name,) = engine.syncers
        syncer = engine.syncers[name]
        daemon._scanned.add(name)  # past its first pass: the poll lists the remote
        daemon._scanned_at[name] = time.monotonic()
        monkeypatch.setattr(daemon, "_root_replaced", lambda _syncer: False)
        monkeypatch.setattr(daemon.remote_changes, "needs_listing", lambda _name: True)
        listing = syncer.list_remote

        def taken_away_meanwhile() -> dict[str, ObjectInfo]:
            found = listing()
            engine.remove_pair(name)  # a reload, in the main thread
            if how == "replaced":
                engine.add_pair(syncer.pair)
            return found

        monkeypatch.setattr(syncer, "list_remote", taken_away_meanwhile)
        with structlog.testing.capture_logs() as logs:
            daemon.poll(name)

        assert engine.queue.counts().get(name, (0, 0)) == (0, 0)
        assert [entry for entry in logs if entry["log_level"] in ("warning", "error")] == []
        assert (name in engine.syncers) == (how == "replaced")

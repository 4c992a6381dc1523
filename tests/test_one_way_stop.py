"""SIGINT (Ctrl-C) and SIGTERM during `syncd upload` / `syncd download`, sent to the real
command as a terminal or a service manager sends them.

The copy stops promptly (its transfers at their next chunk), prints the summary of what it
did so far, exits 130 (SIGINT) or 143 (SIGTERM), and leaves no temp file behind but a large
transfer's, which the next run resumes. Before, Ctrl-C waited up to 10 s for the transfers in
flight, then printed only click's `Aborted!` (exit 1, even for a copy that was through) and
left a download's partial `.syncd-tmp-*` in LOCAL_DIR; SIGTERM killed it with no clean-up.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Bucket
from harness import SYNCD, syncd, tree, wait_for

#: How long a stop may take: the transfers stop at their next chunk. The old way waited up
#: to 10 s for them.
PROMPT_S = 5.0
MiB = 1024 * 1024
#: Above the default multipart_threshold (64 MiB): a download that resumes, an upload in parts.
LARGE = 65 * MiB
SUMMARY = re.compile(
    r"^(upload|download)-[0-9a-f]{8}: \d+ uploaded, \d+ downloaded, 0 failed, 0 conflicts, "
    r"0 deleted, 0 moved$"
)


def _start(
    *args: str | Path, env: dict[str, str], sigint: str = "SIG_DFL"
) -> subprocess.Popen[str]:
    """A copy running in the background, with SIGINT at its default as a terminal starts it
    (`sigint="SIG_IGN"`: ignored, as a script's background job has it). Set by a launcher
    that execs syncd: an exec keeps a signal's disposition, and this runs no code between
    fork and exec (`preexec_fn`), which is unsafe in a process with threads."""
    launcher = (
        "import os, signal, sys; "
        f"signal.signal(signal.SIGINT, signal.{sigint}); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return subprocess.Popen(
        [SYNCD[0], "-c", launcher, *SYNCD[1:], *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _stop(
    copy: subprocess.Popen[str], sig: signal.Signals, when: Callable[[], object]
) -> tuple[str, str, float]:
    """Send `sig` once `when()` holds (a transfer under way); stdout, stderr and how long
    the copy took to exit after the signal."""
    wait_for(when, timeout=30)
    assert copy.poll() is None, "the copy ended before it could be stopped"
    sent = time.monotonic()
    copy.send_signal(sig)
    out, err = copy.communicate(timeout=60)
    return out, err, time.monotonic() - sent


def _temps(folder: Path) -> list[str]:
    """syncd's temp files anywhere under `folder` (its trash included)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".syncd-tmp-*"))


def _assert_stopped(
    copy: subprocess.Popen[str], out: str, err: str, took: float, sig: signal.Signals
) -> None:
    """Promptly, the signal's exit code, the summary of what was done, one line saying so."""
    assert copy.returncode == 128 + sig, (copy.returncode, out, err)
    assert took < PROMPT_S, f"{took:.1f} s after {sig.name}"
    assert [line for line in out.splitlines() if SUMMARY.match(line)], out
    assert "Aborted!" not in err
    said = [line for line in err.splitlines() if line.startswith("syncd: ")]
    assert said == [
        f"syncd: stopped by {sig.name} before the copy was through; run it again to copy the rest"
    ], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_download_from_a_folder_remote_stops_at_a_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A slow download (--bwlimit) of a file and a few small ones from a file:// remote:
    stopped in the middle of the file, it prints what came down, exits 128+N and removes
    the file's temp. The next run brings the rest; nothing is lost."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    remote = tmp_path / "remote"
    (remote / "sub").mkdir(parents=True)
    (remote / "big.bin").write_bytes(os.urandom(16 * MiB))
    for n in range(3):
        (remote / "sub" / f"small{n}.txt").write_bytes(f"small {n}".encode())
    local = tmp_path / "local"

    copy = _start("download", f"file://{remote}", local, "--bwlimit", "1MB/s", env=env)
    out, err, took = _stop(copy, sig, lambda: _temps(local) if local.exists() else None)
    _assert_stopped(copy, out, err, took, sig)
    assert _temps(local) == []
    assert "big.bin" not in tree(local)

    again = syncd("download", f"file://{remote}", local, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree(local) == tree(remote)
    assert _temps(local) == []


def test_a_download_from_s3_stops_at_ctrl_c_and_removes_its_temp(
    tmp_path: Path, s3_bucket: Bucket
) -> None:
    """The sweep's case: an object below the multipart threshold, ranged from S3, cut off by
    Ctrl-C. Its partial temp was left in LOCAL_DIR (and moved to the trash by the next run,
    for good); now it is removed, and the next run downloads the object whole."""
    data = os.urandom(12 * MiB)
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key="p/m.bin", Body=data)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "AWS_ENDPOINT_URL": s3_bucket.endpoint_url}
    local = tmp_path / "local"

    copy = _start("download", s3_bucket.url("p"), local, "--bwlimit", "1MB/s", env=env)
    out, err, took = _stop(copy, signal.SIGINT, lambda: _temps(local) if local.exists() else None)
    _assert_stopped(copy, out, err, took, signal.SIGINT)
    assert _temps(local) == []

    again = syncd("download", s3_bucket.url("p"), local, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 downloaded" in again.stdout
    assert tree(local) == {"m.bin": data}
    assert _temps(local) == []


def test_a_large_download_from_s3_keeps_its_temp_at_sigterm_and_resumes(
    tmp_path: Path, s3_bucket: Bucket
) -> None:
    """A large object (chunked, recorded): SIGTERM stops it promptly, its temp and record are
    kept, and the next run resumes from the chunks on disk and finishes it."""
    data = os.urandom(LARGE)
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key="p/large.bin", Body=data)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "AWS_ENDPOINT_URL": s3_bucket.endpoint_url}
    local = tmp_path / "local"
    flags = ("--part-size", "8MiB")

    copy = _start("download", s3_bucket.url("p"), local, *flags, "--bwlimit", "8MB/s", env=env)
    began: list[float] = []

    def two_chunks_in() -> bool:
        # The temp is made at full size at once: give it time for a chunk or two.
        if not began and local.exists() and _temps(local):
            began.append(time.monotonic())
        return bool(began) and time.monotonic() - began[0] > 2.5

    out, err, took = _stop(copy, signal.SIGTERM, two_chunks_in)
    _assert_stopped(copy, out, err, took, signal.SIGTERM)
    kept = _temps(local)
    assert len(kept) == 1 and kept[0].startswith(".syncd-tmp-resume-"), kept

    again = syncd("download", s3_bucket.url("p"), local, *flags, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming download" in again.stderr, again.stderr
    assert hashlib.sha256((local / "large.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
    assert _temps(local) == []


def test_a_large_upload_to_s3_keeps_its_parts_at_ctrl_c_and_resumes(
    tmp_path: Path, s3_bucket: Bucket
) -> None:
    """A multipart upload stopped by Ctrl-C: prompt, exit 130, its upload left on the service
    for the next run, which sends only the missing parts and completes it."""
    source = tmp_path / "source"
    source.mkdir()
    data = os.urandom(LARGE)
    (source / "large.bin").write_bytes(data)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "AWS_ENDPOINT_URL": s3_bucket.endpoint_url}
    flags = ("--part-size", "8MiB")
    client, bucket = s3_bucket.client, s3_bucket.bucket

    def parts_sent() -> bool:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if not uploads:
            return False
        listed = client.list_parts(
            Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
        )
        return len(listed.get("Parts", [])) >= 2

    copy = _start("upload", source, s3_bucket.url("p"), *flags, "--bwlimit", "8MB/s", env=env)
    out, err, took = _stop(copy, signal.SIGINT, parts_sent)
    _assert_stopped(copy, out, err, took, signal.SIGINT)
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)

    again = syncd("upload", source, s3_bucket.url("p"), *flags, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming multipart upload" in again.stderr, again.stderr
    body = client.get_object(Bucket=bucket, Key="p/large.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_copy_that_ignores_sigint_from_its_start_goes_on(tmp_path: Path) -> None:
    """A signal ignored from the start (a script's background job) stays ignored: the copy
    goes on and ends as usual, exit 0, with its summary."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "f.bin").write_bytes(os.urandom(3 * MiB))
    local = tmp_path / "local"
    copy = _start(
        "download", f"file://{remote}", local, "--bwlimit", "1MB/s", env=env, sigint="SIG_IGN"
    )
    out, err, _ = _stop(copy, signal.SIGINT, lambda: _temps(local) if local.exists() else None)
    assert copy.returncode == 0, (copy.returncode, out, err)
    assert [line for line in out.splitlines() if SUMMARY.match(line)], out
    assert tree(local) == tree(remote)

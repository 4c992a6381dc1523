"""`syncd once` through a fault-injection proxy (faultproxy.py) in front of the emulators.

Every request syncd makes goes through the proxy, which fails a share of them the ways a real
network and a real service do: 500s, 503 SlowDown (S3) / 503 and 429 (GCS, Azure),
connections dropped before the request is forwarded and after it (the write happened, syncd
never heard), bodies cut mid-way, and answers shorter than their Content-Length. Outcomes are
read straight from the emulator (never through the proxy) and from disk: every file arrives
once and intact, nothing temporary is left on either side, a second clean run transfers
nothing, and a download that keeps failing never leaves a partial file under its real name
(nor touches the version already there).

The S3 runs draw their faults at random from the proxy's seeded generator (FAULT_SEED), so a
run is reproducible up to the order in which syncd's worker threads send their requests; the
smaller GCS / Azure runs fault every fifth request in a fixed rotation, so each kind of fault
is met however few requests there are.

The proxy's own behaviour (framing, keep-alive, each action, rule selection) is checked first,
against a tiny upstream in this file. Two strict xfails record syncd bugs found on the way
(see their reasons): Retry-After is not honoured by the S3 client's own retries, and an error
a provider failed to translate makes `syncd once` lose the path yet exit 0.

GCS note: fake-gcs-server builds a resumable upload's session URL (its Location header) from
the request's Host, so sessions started through the proxy stay behind it. The files here are
all small (single-request uploads); large files are test_large.py's business.
"""

from __future__ import annotations

import http.client
import http.server
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import urllib3.exceptions
from emulators import AZURITE_ACCOUNT
from emulators import azurite_connection_string as connection_string
from faultproxy import (
    Action,
    Exchange,
    FaultProxy,
    Request,
    Rule,
    cut_response_body,
    delay,
    drop_before_response,
    internal_error,
    slow_down,
    status,
    too_many_requests,
    truncate_response,
)
from harness import Setup, syncd, tree
from remotes import PREFIX, TEMP_MARK, AzureRemote, GCSRemote, S3Remote

from syncd.config import load_config
from syncd.engine.core import Engine
from syncd.exitcodes import EXIT_FAILED

FAULT_SEED = int(os.environ.get("SYNCD_FAULT_SEED", "20240611"))
#: Retries generous enough that a request failing one time in five still gets through.
PATIENT = {"retry": {"attempts": 10, "max_seconds": 60}}
#: Few retries, for a fault that never goes away.
FEW_RETRIES = {"retry": {"attempts": 3, "max_seconds": 20}}
MTIME_NS = 1_700_000_000_000_000_000
IN_SYNC = "0 uploaded, 0 downloaded, 0 failed"


# -- the remotes, behind a proxy ------------------------------------------------------------


@dataclass
class Backend:
    """A fresh remote reached through its own FaultProxy. `remote` reads and writes the
    emulator directly (for setup and assertions); syncd gets `options` and `env`, which point
    at the proxy."""

    kind: str
    remote: S3Remote | GCSRemote | AzureRemote
    proxy: FaultProxy
    options: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def setup(self, tmp_path: Path, **extra: Any) -> Setup:
        setup = Setup(tmp_path, self.remote.url, options=self.options, extra=extra)
        setup.write()
        return setup

    def run(self, setup: Setup) -> subprocess.CompletedProcess[str]:
        """`syncd once`, its output kept beside the config (run-N.log) for a post-mortem."""
        result = syncd("once", "-c", setup.config, env=self.env, timeout=120)
        number = len(list(setup.tmp.glob("run-*.log"))) + 1
        (setup.tmp / f"run-{number}.log").write_text(result.stdout + "\n" + result.stderr)
        return result

    def keys(self) -> list[str]:
        """Every key under the remote's prefix, syncd's trash and temp files included."""
        return sorted(self.remote.listing())


def backend_for(kind: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh remote of `kind` behind its own proxy; the proxy must not have failed itself."""
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        proxy = FaultProxy(bucket.endpoint_url, seed=FAULT_SEED).start()
        backend = Backend(kind, S3Remote(bucket), proxy, {"endpoint_url": proxy.url})
    elif kind == "gcs":
        server = request.getfixturevalue("gcs_server")
        proxy = FaultProxy(server.endpoint_url, seed=FAULT_SEED).start()
        # The provider finds the emulator through STORAGE_EMULATOR_HOST, which the session's
        # fixture points at the emulator itself: syncd gets the proxy instead.
        env = {"STORAGE_EMULATOR_HOST": proxy.url}
        backend = Backend(kind, GCSRemote(request.getfixturevalue("gcs_bucket")), proxy, {}, env)
    elif kind == "azure":
        azurite = request.getfixturevalue("azurite")
        proxy = FaultProxy(azurite.emulator.endpoint_url, seed=FAULT_SEED).start()
        through = connection_string(f"{proxy.url}/{AZURITE_ACCOUNT}")
        container = request.getfixturevalue("azure_container")
        backend = Backend(kind, AzureRemote(container), proxy, {"connection_string": through})
    else:
        raise ValueError(kind)
    try:
        yield backend
        assert not proxy.errors, proxy.errors[0]
    finally:
        proxy.stop()


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend_for("s3", request)


@pytest.fixture(params=["s3", "gcs", "azure"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend_for(request.param, request)


@pytest.fixture(params=["gcs", "azure"])
def other_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend_for(request.param, request)


# -- files and faults -----------------------------------------------------------------------


def make_files(count: int, seed: int, max_size: int = 12_000) -> dict[str, bytes]:
    """`count` files of random bytes (a few empty), spread over a few folders."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        size = 0 if i % 50 == 0 else rng.randint(1, max_size)
        files[f"dir{i % 7}/sub{i % 3}/file-{i:03d}.bin"] = rng.randbytes(size)
    return files


def write_local(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def temp_files(root: Path) -> list[str]:
    """syncd's temporary download files anywhere under `root` (its own folder included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{TEMP_MARK}*"))


def transport_faults() -> list[tuple[Action, float]]:
    """Faults of the connection itself, the same for every service (12% of requests)."""
    return [
        (drop_before_response(), 0.03),
        (drop_before_response(forwarded=True), 0.03),
        (drop_before_response(forwarded=True, reset=True), 0.02),
        (cut_response_body(16), 0.02),
        (truncate_response(), 0.02),
    ]


def s3_faults() -> list[tuple[Action, float]]:
    """20% of S3 requests fail."""
    return [(internal_error(), 0.04), (slow_down(), 0.04), *transport_faults()]


def http_faults() -> list[Action]:
    """What GCS and Azure say when failing or throttling, and the connection faults."""
    text = {"Content-Type": "text/plain"}
    return [
        status(500, b"injected", text),
        status(503, b"injected", text),
        too_many_requests(),
        *(action for action, _ in transport_faults()),
    ]


def add_mix(proxy: FaultProxy, mix: list[tuple[Action, float]]) -> list[Rule]:
    """One rule per (action, share of all requests). Rules are tried in order and only see
    what no earlier rule faulted, so each one's probability is scaled up to keep its share."""
    rules: list[Rule] = []
    taken = 0.0
    for action, share in mix:
        rules.append(proxy.add_rule(action, probability=share / (1.0 - taken)))
        taken += share
    return rules


def add_rotation(proxy: FaultProxy, actions: list[Action], every: int = 5) -> list[Rule]:
    """Fault every `every`-th request the proxy receives (by its number), taking the actions
    in turn: a small run still meets each of them, and exactly 1/`every` of all requests."""

    def turn(k: int) -> Callable[[Request], bool]:
        return lambda request: (
            request.number % every == 0 and (request.number // every) % len(actions) == k
        )

    return [proxy.add_rule(action, predicate=turn(k)) for k, action in enumerate(actions)]


def check_fault_share(proxy: FaultProxy, rules: list[Rule]) -> None:
    """Every kind of fault happened, about a fifth of all requests failed, and no failure was
    the proxy's own (an upstream it could not reach)."""
    assert all(rule.fired for rule in rules), [(r.name, r.seen, r.fired) for r in rules]
    share = proxy.faulted / proxy.requests
    assert 0.12 < share < 0.28, (proxy.faulted, proxy.requests)
    assert proxy.upstream_failures == 0
    assert not proxy.errors, proxy.errors[0]


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr (tail):\n"
        + (result.stderr[-4000:])
    )


# -- the proxy itself, against a tiny upstream ----------------------------------------------


class _Upstream(http.server.BaseHTTPRequestHandler):
    """PUT / POST: keeps the body and answers "got N". GET /bytes/N or /chunked/N: N bytes,
    framed by Content-Length or in chunks. HEAD /bytes/N: only the Content-Length."""

    protocol_version = "HTTP/1.1"
    server: _UpstreamServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            pieces = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(pieces)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _reply(self, body: bytes, chunked: bool = False, head: bool = False) -> None:
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 40_000):
                piece = body[start : start + 40_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_PUT(self) -> None:
        body = self._read_body()
        self.server.received.append((self.command, self.path, body))
        self._reply(b"got %d" % len(body))

    do_POST = do_PUT

    def do_GET(self) -> None:
        size = int(self.path.rsplit("/", 1)[1])
        self._reply(pattern(size), chunked=self.path.startswith("/chunked/"))

    def do_HEAD(self) -> None:
        self._reply(pattern(int(self.path.rsplit("/", 1)[1])), head=True)


class _UpstreamServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    received: list[tuple[str, str, bytes]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A proxy that cut an answer closes its side: writing the rest fails, as it should."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.fixture
def upstream() -> Iterator[_UpstreamServer]:
    server = _UpstreamServer(("127.0.0.1", 0), _Upstream)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(upstream: _UpstreamServer) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", seed=7) as proxy:
        yield proxy


def client(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)


def fetch(proxy: FaultProxy, method: str, path: str, body: bytes | None = None) -> Any:
    """(status, headers, body) of one request on a fresh connection."""
    conn = client(proxy)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_proxy_forwards_both_framings_on_kept_alive_connections(
    upstream: _UpstreamServer, proxy: FaultProxy
) -> None:
    big = random.Random(1).randbytes(3 * 1024 * 1024)
    conn = client(proxy)
    conn.request("PUT", "/echo/length", body=big, headers={"Expect": "100-continue"})
    first = conn.getresponse()
    assert (first.status, first.read()) == (200, b"got %d" % len(big))
    sock = conn.sock
    pieces = [b"a" * 100_000, b"b" * 5, b"c" * 70_000]
    conn.request("POST", "/echo/chunked?x=1", body=iter(pieces), encode_chunked=True)
    assert conn.getresponse().read() == b"got 170005"
    for path, size in [("/bytes/1000000", 1_000_000), ("/chunked/300001", 300_001)]:
        conn.request("GET", path)
        assert conn.getresponse().read() == pattern(size)
    conn.request("HEAD", "/bytes/123")
    head = conn.getresponse()
    assert (head.getheader("Content-Length"), head.read()) == ("123", b"")
    conn.request("GET", "/bytes/0")
    assert conn.getresponse().read() == b""
    assert conn.sock is sock  # one client connection carried every request
    conn.close()

    assert upstream.received == [
        ("PUT", "/echo/length", big),
        ("POST", "/echo/chunked?x=1", b"".join(pieces)),
    ]
    assert [(ex.method, ex.status) for ex in proxy.exchanges] == [
        ("PUT", 200),
        ("POST", 200),
        ("GET", 200),
        ("GET", 200),
        ("HEAD", 200),
        ("GET", 200),
    ]
    assert (proxy.requests, proxy.faulted, proxy.upstream_failures, proxy.errors) == (6, 0, 0, [])


def test_proxy_answers_a_status_of_its_own(upstream: _UpstreamServer, proxy: FaultProxy) -> None:
    rule = proxy.add_rule(slow_down(retry_after=2), method="PUT")
    code, headers, body = fetch(proxy, "PUT", "/echo", b"data")
    assert (code, headers["Retry-After"]) == (503, "2")
    assert b"<Code>SlowDown</Code>" in body
    assert upstream.received == []  # never forwarded
    assert (rule.seen, rule.fired) == (1, 1)


@pytest.mark.parametrize("forwarded", [False, True])
@pytest.mark.parametrize("reset", [False, True])
def test_proxy_drops_the_connection_before_answering(
    upstream: _UpstreamServer, proxy: FaultProxy, forwarded: bool, reset: bool
) -> None:
    proxy.add_rule(drop_before_response(forwarded=forwarded, reset=reset))
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        fetch(proxy, "PUT", "/echo", b"data")
    assert upstream.received == ([("PUT", "/echo", b"data")] if forwarded else [])
    assert proxy.exchanges[0].status is None


@pytest.mark.parametrize("path", ["/bytes/100000", "/chunked/100000"])
def test_proxy_cuts_a_body(proxy: FaultProxy, path: str) -> None:
    proxy.add_rule(cut_response_body(1000))
    with pytest.raises(http.client.IncompleteRead) as cut:
        fetch(proxy, "GET", path)
    assert cut.value.partial == pattern(1000)


def test_proxy_truncates_an_answer(proxy: FaultProxy) -> None:
    proxy.add_rule(truncate_response(missing=7))
    with pytest.raises(http.client.IncompleteRead) as cut:
        fetch(proxy, "GET", "/bytes/5000")
    assert (cut.value.partial, cut.value.expected) == (pattern(5000), 7)
    # An answer without a body has nothing to fall short of: it goes through as it is.
    code, headers, body = fetch(proxy, "HEAD", "/bytes/5000")
    assert (code, headers["Content-Length"], body) == (200, "5000", b"")


def test_proxy_rules_fire_by_count_limit_and_seeded_chance(proxy: FaultProxy) -> None:
    waits = proxy.add_rule(delay(0.2), method="GET", path=r"^/bytes/3$")
    nth = proxy.add_rule(internal_error(), method="GET", path=r"^/bytes/", nth={2, 4})
    limited = proxy.add_rule(too_many_requests(), method="PUT", limit=2)
    started = time.monotonic()
    assert [fetch(proxy, "GET", f"/bytes/{i}")[0] for i in range(5)] == [200, 500, 200, 500, 200]
    assert time.monotonic() - started >= 0.2
    assert [fetch(proxy, "PUT", "/echo", b"x")[0] for _ in range(3)] == [429, 429, 200]
    assert (waits.seen, waits.fired, nth.seen, nth.fired) == (1, 1, 5, 2)
    assert (limited.seen, limited.fired) == (3, 2)
    assert proxy.faulted == 4  # delays do not count
    assert proxy.matching("GET", r"/bytes/3$")[0].faults == (waits.name, nth.name)

    def draws(seed: int) -> list[int]:
        with FaultProxy(f"http://127.0.0.1:{proxy.upstream_port}", seed=seed) as other:
            other.add_rule(status(500), probability=0.3)
            return [fetch(other, "GET", "/bytes/1")[0] for _ in range(40)]

    assert draws(3) == draws(3)
    assert 0 < draws(3).count(500) < 40


# -- hundreds of files, a fifth of the requests failing -------------------------------------


def s3_all_keys(backend: Backend) -> list[str]:
    """Every key in the whole bucket (not only under the prefix), straight from moto."""
    assert isinstance(backend.remote, S3Remote)
    bucket = backend.remote.bucket
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_s3_upload_of_300_files_through_a_fifth_of_requests_failing(
    tmp_path: Path, s3: Backend
) -> None:
    setup = s3.setup(tmp_path, **PATIENT)
    files = make_files(300, FAULT_SEED)
    write_local(setup.local, files)
    rules = add_mix(s3.proxy, s3_faults())

    first = s3.run(setup)

    assert first.returncode == 0, explain(first)
    check_fault_share(s3.proxy, rules)
    # Exactly the files, once each: no temp or trash key, nothing outside the prefix.
    assert s3_all_keys(s3) == sorted(PREFIX + rel for rel in files)
    assert s3.remote.objects() == files
    assert isinstance(s3.remote, S3Remote)
    bucket = s3.remote.bucket
    assert not bucket.client.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads")
    assert tree(setup.local) == files
    assert not temp_files(setup.local)

    s3.proxy.clear_rules()
    puts = len(s3.proxy.matching("PUT"))
    second = s3.run(setup)
    assert second.returncode == 0, explain(second)
    assert IN_SYNC in second.stdout
    assert len(s3.proxy.matching("PUT")) == puts


def test_s3_download_of_300_objects_through_a_fifth_of_requests_failing(
    tmp_path: Path, s3: Backend
) -> None:
    files = make_files(300, FAULT_SEED + 1)
    for rel, data in files.items():
        s3.remote.put(rel, data, MTIME_NS)
    setup = s3.setup(tmp_path, **PATIENT)
    rules = add_mix(s3.proxy, s3_faults())

    first = s3.run(setup)

    assert first.returncode == 0, explain(first)
    assert "300 downloaded" in first.stdout
    check_fault_share(s3.proxy, rules)
    assert tree(setup.local) == files
    assert not temp_files(setup.local)
    assert {p.stat().st_mtime_ns for p in setup.local.rglob("*.bin")} == {MTIME_NS}
    assert s3_all_keys(s3) == sorted(PREFIX + rel for rel in files)  # nothing written back

    s3.proxy.clear_rules()
    second = s3.run(setup)
    assert second.returncode == 0, explain(second)
    assert IN_SYNC in second.stdout


SMALL = 30  # files each way


def test_two_way_through_every_fifth_request_failing(
    tmp_path: Path, other_backend: Backend
) -> None:
    """GCS and Azure, smaller: files going up and objects coming down in the same pass."""
    remote = other_backend.remote
    up = {f"up/{rel}": data for rel, data in make_files(SMALL, FAULT_SEED + 5).items()}
    down = {f"down/{rel}": data for rel, data in make_files(SMALL, FAULT_SEED + 6).items()}
    for rel, data in down.items():
        remote.put(rel, data, MTIME_NS)
    setup = other_backend.setup(tmp_path, **PATIENT)
    write_local(setup.local, up)
    files = {**up, **down}
    rules = add_rotation(other_backend.proxy, http_faults())

    first = other_backend.run(setup)

    assert first.returncode == 0, explain(first)
    check_fault_share(other_backend.proxy, rules)
    assert other_backend.keys() == sorted(files)  # no temp or trash object either
    assert remote.objects() == files
    assert tree(setup.local) == files
    assert not temp_files(setup.local)

    other_backend.proxy.clear_rules()
    second = other_backend.run(setup)
    assert second.returncode == 0, explain(second)
    assert IN_SYNC in second.stdout


# -- a download that keeps being cut --------------------------------------------------------

#: NEW exists only remotely; OLD was synced, then replaced remotely by a newer version.
NEW = "deep/new-victim.bin"
OLD = "deep/old-victim.bin"
CUT_AFTER = 50_000


def cut_victims(proxy: FaultProxy) -> Rule:
    """Every GET of a victim is cut after CUT_AFTER bytes of body, persistently (a smaller
    answer, like GCS's metadata, goes through whole). The key may be URL-encoded (GCS)."""
    return proxy.add_rule(
        cut_response_body(CUT_AFTER), method="GET", path=r"(/|%2F)(new|old)-victim\.bin(\?|$)"
    )


def test_a_download_cut_mid_body_never_leaves_a_partial_file(
    tmp_path: Path, backend: Backend
) -> None:
    remote = backend.remote
    old = b"the version both sides agreed on\n" * 100
    remote.put(OLD, old, MTIME_NS)
    setup = backend.setup(tmp_path, **FEW_RETRIES)
    synced = backend.run(setup)
    assert synced.returncode == 0, explain(synced)
    target = setup.local / OLD
    assert target.read_bytes() == old
    before = target.stat()

    rng = random.Random(FAULT_SEED + 2)
    victims = {NEW: rng.randbytes(200_000), OLD: rng.randbytes(300_000)}
    others = make_files(20, FAULT_SEED + 3)
    for rel, data in {**others, **victims}.items():  # written behind syncd's back
        remote.put(rel, data, MTIME_NS + 10**9)
    rule = cut_victims(backend.proxy)

    failed = backend.run(setup)

    assert failed.returncode == 1, explain(failed)
    assert "0 uploaded, 20 downloaded, 2 failed" in failed.stdout
    assert f"failed: {NEW}" in failed.stdout
    assert f"failed: {OLD}" in failed.stdout
    assert rule.fired >= 4  # each retried, and cut every time
    # Nothing under the new file's name, the old file untouched, no temp file anywhere.
    assert tree(setup.local) == {**others, OLD: old}
    after = target.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert not temp_files(setup.local)
    assert remote.get(OLD) == victims[OLD]  # the failed download pushed nothing back

    backend.proxy.remove_rule(rule)
    healed = backend.run(setup)
    assert healed.returncode == 0, explain(healed)
    assert "0 uploaded, 2 downloaded, 0 failed" in healed.stdout
    assert tree(setup.local) == {**others, **victims}
    assert not temp_files(setup.local)
    assert backend.keys() == sorted([*others, *victims])


# -- throttling with Retry-After ------------------------------------------------------------

RETRY_AFTER = 1.0
#: The S3 client makes one attempt per call (botocore's own retries are off): every refusal
#: reaches syncd's retry.
BOTOCORE_ATTEMPTS = 1


def throttle(proxy: FaultProxy, names: list[str], times: int) -> Rule:
    """503 SlowDown with Retry-After on the first `times` PUTs of each of `names`."""
    attempts: Counter[str] = Counter()

    def early_attempt(request: Request) -> bool:  # called under the proxy's lock
        attempts[request.target] += 1
        return attempts[request.target] <= times

    alternatives = "|".join(re.escape(name) for name in names)
    return proxy.add_rule(
        slow_down(retry_after=RETRY_AFTER),
        method="PUT",
        path=rf"/({alternatives})$",
        predicate=early_attempt,
    )


def throttled_upload(
    tmp_path: Path, s3: Backend, throttled: int, times: int
) -> list[list[Exchange]]:
    """Upload 16 files and `throttled` more, each of those answered SlowDown `times` times;
    check that all arrive, and return the PUTs of each throttled file, in order."""
    names = [f"slow-{i}.txt" for i in range(throttled)]
    files = {**make_files(16, FAULT_SEED + 4), **{name: name.encode() for name in names}}
    setup = s3.setup(tmp_path, **PATIENT)
    write_local(setup.local, files)
    rule = throttle(s3.proxy, names, times)

    result = s3.run(setup)

    assert result.returncode == 0, explain(result)
    assert f"{len(files)} uploaded, 0 downloaded, 0 failed" in result.stdout
    assert rule.fired == throttled * times
    assert s3.remote.objects() == files
    assert s3.keys() == sorted(files)
    puts: dict[str, list[Exchange]] = {}
    for exchange in sorted(s3.proxy.matching("PUT", r"/slow-"), key=lambda ex: ex.started):
        puts.setdefault(exchange.target, []).append(exchange)
    assert len(puts) == throttled
    for tries in puts.values():
        assert [ex.status for ex in tries] == [503] * times + [200]
    return list(puts.values())


def test_s3_slow_down_with_retry_after_is_waited_out(tmp_path: Path, s3: Backend) -> None:
    """The S3 client does not retry on its own: syncd waits the Retry-After it was given
    before it tries again."""
    for tries in throttled_upload(tmp_path, s3, throttled=1, times=BOTOCORE_ATTEMPTS):
        last_refusal, success = tries[-2], tries[-1]
        assert success.started - last_refusal.started >= RETRY_AFTER * 0.95


def test_s3_every_retry_after_a_slow_down_waits_retry_after(tmp_path: Path, s3: Backend) -> None:
    for tries in throttled_upload(tmp_path, s3, throttled=4, times=1):
        refusal, retry = tries
        assert retry.started - refusal.started >= RETRY_AFTER * 0.95


# -- an error no provider translated --------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_error_no_provider_translated_still_fails_the_path(tmp_path: Path, s3: Backend) -> None:
    """Until the GCS provider translated urllib3's errors, a download cut mid-body made `syncd
    once` exit 0 with the file missing (seen through the proxy). Any provider gap would do the
    same; here one is simulated in-process, on S3."""
    s3.remote.put("good.txt", b"good", MTIME_NS)
    s3.remote.put("bad.txt", b"bad", MTIME_NS)
    setup = s3.setup(tmp_path, **FEW_RETRIES)
    with Engine(load_config(setup.config)) as engine:
        provider = engine.syncers["docs"].provider
        download = provider.download

        def leaky(key: str, sink: BinaryIO, if_match: str | None = None) -> Any:
            if key == "bad.txt":
                raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")
            return download(key, sink, if_match)

        provider.download = leaky  # type: ignore[method-assign]
        report = engine.sync_once()
    assert (setup.local / "good.txt").read_bytes() == b"good"
    assert not (setup.local / "bad.txt").exists()
    assert "bad.txt" in report.pairs[0].failures
    assert report.exit_code == EXIT_FAILED


def test_a_listing_error_no_provider_translated_is_a_fault_of_the_pair(
    tmp_path: Path, s3: Backend
) -> None:
    """An untranslated error while listing (botocore's TypeError from a half-given key pair
    was one) made `syncd once` end in a traceback: now the pair cannot be synced, with the
    reason, and the pass goes on to its end (exit 1)."""
    setup = s3.setup(tmp_path, **FEW_RETRIES)
    (setup.local / "mine.txt").write_bytes(b"mine")
    with Engine(load_config(setup.config)) as engine:
        provider = engine.syncers["docs"].provider

        def broken() -> Any:
            raise TypeError("sequence item 0: expected str instance, NoneType found")

        provider.list = broken  # type: ignore[method-assign]
        report = engine.sync_once()
    assert report.exit_code == EXIT_FAILED
    fault = report.pairs[0].fault
    assert fault is not None and fault.startswith(f"cannot list {setup.remote}"), fault
    assert "unexpected builtins.TypeError" in fault
    assert s3.remote.objects() == {}  # nothing was decided without the listing


# -- the remote root's probe before local deletions -------------------------------------------


def test_a_throttled_probe_of_the_bucket_is_retried_not_a_fault(
    tmp_path: Path, s3: Backend
) -> None:
    """Before local files are deleted for objects the remote lacks, the bucket is probed
    (`PairSyncer._remote_root_gone`). Sent once, one 503 SlowDown on it failed the pass whose
    listing had worked (exit 1, "cannot list"), held the deletion, and put the pair in error.
    It is retried as any request is."""
    setup = s3.setup(tmp_path, **PATIENT)
    files = {f"f{n}.txt": f"file {n}".encode() for n in range(5)}
    write_local(setup.local, files)
    first = s3.run(setup)
    assert first.returncode == 0, explain(first)
    s3.remote.delete("f0.txt")  # another machine deletes one file
    bucket = s3.remote.bucket.bucket  # type: ignore[union-attr]
    # The probe lists one key under the prefix (a listing's own request has no max-keys=1).
    probe = rf"^/{bucket}/?\?.*max-keys=1(&|$)"
    rule = s3.proxy.add_rule(slow_down(), method="GET", path=probe, limit=1)
    second = s3.run(setup)
    assert rule.fired == 1
    assert second.returncode == 0, explain(second)
    assert "1 deleted" in second.stdout
    assert tree(setup.local) == {name: data for name, data in files.items() if name != "f0.txt"}
    assert [p.name for p in (setup.local / ".syncd" / "trash").rglob("*") if p.is_file()] == [
        "f0.txt"
    ]


# -- a server-side copy whose answer is lost ------------------------------------------------

#: The copy request of each service: (method, what its target holds before the copy's key).
#: S3 and Azure PUT the destination (naming the source in a header); GCS POSTs the source's
#: `copyTo` the destination (its key URL-encoded, `/` as %2F).
COPY_REQUEST = {"s3": ("PUT", ""), "gcs": ("POST", "/copyTo/.*"), "azure": ("PUT", "")}


def lose_copy_answer(backend: Backend, to: str) -> Rule:
    """The first copy to a key where `to` (a regex) is found lands, and its answer is lost."""
    method, before = COPY_REQUEST[backend.kind]
    return backend.proxy.add_rule(
        drop_before_response(forwarded=True), method=method, path=before + to, limit=1
    )


def test_a_conflict_copy_whose_answer_was_lost_is_made_once(
    tmp_path: Path, backend: Backend
) -> None:
    """version_preserve, the remote version older: it is copied server-side to a conflict
    copy. The copy landed, its answer was lost, and the retry of the whole copy found the name
    taken: the path was decided again and a second conflict copy made (named after the next
    second), the first coming down only at the next run. Now the retry sees its own copy."""
    setup = Setup(
        tmp_path,
        backend.remote.url,
        options=backend.options,
        extra=PATIENT,
        pair_extra={"conflict": "version_preserve"},
    )
    setup.write()
    (setup.local / "f0.txt").write_bytes(b"original\n")
    first = backend.run(setup)
    assert first.returncode == 0, explain(first)
    now = time.time_ns()
    backend.remote.put("f0.txt", b"remote edit\n", now - 100 * 10**9)  # the older version
    (setup.local / "f0.txt").write_bytes(b"local edit\n")
    rule = lose_copy_answer(backend, r"\.conflict-")

    second = backend.run(setup)

    assert rule.fired == 1
    assert second.returncode == 0, explain(second)
    keys = backend.keys()
    copies = [key for key in keys if ".conflict-" in key]
    assert len(copies) == 1, keys
    assert backend.remote.objects() == {"f0.txt": b"local edit\n", copies[0]: b"remote edit\n"}
    assert tree(setup.local) == {"f0.txt": b"local edit\n", copies[0]: b"remote edit\n"}
    third = backend.run(setup)
    assert third.returncode == 0, explain(third)
    assert IN_SYNC in third.stdout
    assert tree(setup.local) == backend.remote.objects()


def remote_trash(backend: Backend) -> dict[str, bytes]:
    """What the remote trash holds, by key."""
    keys = backend.keys()
    return {key: backend.remote.get(key) for key in keys if ".syncd-trash/" in key}


def deleted_locally(backend: Backend, tmp_path: Path) -> tuple[Setup, dict[str, bytes]]:
    """Three files synced, then f0 deleted locally: the next run trashes the remote one."""
    setup = backend.setup(tmp_path, **PATIENT)
    files = {f"f{n}.txt": f"file {n}\n".encode() for n in range(3)}
    write_local(setup.local, files)
    first = backend.run(setup)
    assert first.returncode == 0, explain(first)
    (setup.local / "f0.txt").unlink()
    return setup, files


def check_trashed_once(backend: Backend, setup: Setup, files: dict[str, bytes]) -> None:
    """f0 is gone from both sides, and the remote trash holds exactly one copy of it."""
    kept = {name: data for name, data in files.items() if name != "f0.txt"}
    assert backend.remote.objects() == kept
    assert tree(setup.local) == kept
    trashed = remote_trash(backend)
    assert list(trashed.values()) == [files["f0.txt"]], sorted(trashed)
    assert next(iter(trashed)).endswith("/f0.txt")


def test_a_trash_copy_whose_answer_was_lost_is_made_once(tmp_path: Path, backend: Backend) -> None:
    """A local deletion goes to the remote trash first, as a server-side copy. Its answer
    lost, the retry found its own copy in the way, the deletion was requeued and the next
    try made another full copy under the next second's trash folder."""
    setup, files = deleted_locally(backend, tmp_path)
    rule = lose_copy_answer(backend, r"\.syncd-trash")

    second = backend.run(setup)

    assert rule.fired == 1
    assert second.returncode == 0, explain(second)
    assert "1 deleted" in second.stdout
    check_trashed_once(backend, setup, files)


def test_a_throttled_look_after_an_s3_trash_copy_makes_no_second_copy(
    tmp_path: Path, s3: Backend
) -> None:
    """S3's copy looks at the destination after CopyObject: one 429 there, and the retry of
    the whole copy found the first copy in the way (two or three full copies in the trash)."""
    setup, files = deleted_locally(s3, tmp_path)
    copied = threading.Event()

    def copy_seen(request: Request) -> bool:  # a rule that never fires: it only watches
        copied.set()
        return False

    s3.proxy.add_rule(status(500), method="PUT", path=r"\.syncd-trash", predicate=copy_seen)
    rule = s3.proxy.add_rule(
        too_many_requests(),
        method="HEAD",
        path=r"\.syncd-trash",
        predicate=lambda request: copied.is_set(),
        limit=1,
    )

    second = s3.run(setup)

    assert rule.fired == 1
    assert second.returncode == 0, explain(second)
    check_trashed_once(s3, setup, files)


# -- a CreateMultipartUpload whose answer is lost -------------------------------------------


def test_an_unanswered_multipart_create_leaves_no_upload_behind(
    tmp_path: Path, s3: Backend
) -> None:
    """The request reached S3, its answer was lost: the retry's upload completed, and the
    first, whose id syncd never heard, stayed listed forever (issue 5: after a successful
    sync no multipart upload is left behind)."""
    setup = s3.setup(tmp_path, multipart_threshold="5MiB", part_size="5MiB", **PATIENT)
    big = random.Random(FAULT_SEED).randbytes(12 * 1024 * 1024)
    (setup.local / "big.bin").write_bytes(big)
    rule = s3.proxy.add_rule(
        drop_before_response(forwarded=True), method="POST", path=r"\?uploads", limit=1
    )

    result = s3.run(setup)

    assert rule.fired == 1
    assert result.returncode == 0, explain(result)
    assert "1 uploaded" in result.stdout
    assert s3.remote.objects() == {"big.bin": big}
    assert isinstance(s3.remote, S3Remote)
    bucket = s3.remote.bucket
    assert not bucket.client.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads")


def test_the_probe_needs_no_more_than_a_listing_of_the_prefix(tmp_path: Path, s3: Backend) -> None:
    """The probe was HeadBucket, which needs ListBucket on the whole bucket: credentials
    scoped to the pair's prefix (the usual least-privilege policy) got 403 there while the
    listing worked, and every pass with a local deletion held it, the pair in error."""
    setup = s3.setup(tmp_path, **PATIENT)
    files = {f"f{n}.txt": f"file {n}".encode() for n in range(5)}
    write_local(setup.local, files)
    assert s3.run(setup).returncode == 0
    s3.remote.delete("f0.txt")
    bucket = s3.remote.bucket.bucket  # type: ignore[union-attr]
    refused = s3.proxy.add_rule(status(403), method="HEAD", path=rf"^/{bucket}/?$")
    second = s3.run(setup)
    assert second.returncode == 0, explain(second)
    assert "1 deleted" in second.stdout
    assert refused.fired == 0
    assert "f0.txt" not in tree(setup.local)

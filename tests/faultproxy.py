"""A fault-injection HTTP/1.1 reverse proxy for tests: loopback only, standard library only.

The proxy sits between the code under test and an emulator (moto, fake-gcs-server, Azurite)
and forwards every request unchanged (same method, target and headers, Host included, so
signatures still match), except where a rule says otherwise:

    with FaultProxy("http://127.0.0.1:5000", seed=7) as proxy:
        proxy.add_rule(slow_down(retry_after=1), method="PUT", limit=5)
        proxy.add_rule(cut_response_body(100), method="GET", path=r"/big\\.bin$")
        proxy.add_rule(internal_error(), probability=0.05)
        ... point the client at proxy.url ...
        assert proxy.rules[0].fired == 5

Rules are tried in the order they were added, on every request. A rule *matches* a request by
method, by a regular expression searched in the request target (path and query, as sent) and by
an optional predicate; a matching rule *fires* on the matching requests it counts in `nth`
(1-based), or with `probability` (drawn from the proxy's seeded `random.Random`), at most
`limit` times. The first rule that fires decides the request's fate; a rule after it is not
consulted (and does not count the request as seen), except that a firing `delay` only waits
and lets the rules after it have their say.

Actions (see their factories below): answer a status of our own (500, 503 SlowDown, 429, ...)
without forwarding; drop the connection without an answer, before forwarding the request or
after it (the write happened, the client never heard); cut the response body after some bytes;
send every byte of the body under a Content-Length that promises more; delay.

Bodies are streamed both ways (a 100-continue is answered by the proxy itself), framed by
Content-Length or chunked transfer-encoding; only `truncate_response` reads a body whole.
Client connections are kept alive, and so is one upstream connection per client connection.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import select
import socket
import socketserver
import struct
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from io import BufferedReader
from types import TracebackType
from typing import Literal, cast
from urllib.parse import urlsplit

#: Bytes moved per read while streaming a body.
CHUNK = 64 * 1024
#: Longest request line or header line accepted from a client.
MAX_LINE = 64 * 1024
#: Seconds a client connection may sit idle (or stall mid-request) before it is closed.
CLIENT_TIMEOUT = 120.0
#: Seconds to connect to the upstream, and between its bytes.
UPSTREAM_TIMEOUT = 120.0
#: Headers that describe one connection, never forwarded as they are (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


# -- requests and actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a rule can look at: the request line and headers (the body is not read yet)."""

    number: int  # 1-based, over every request the proxy received
    method: str
    target: str  # path and query, exactly as sent
    headers: http.client.HTTPMessage

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass(frozen=True)
class Status:
    """Answer `code` with `body` and `headers` ourselves; the upstream never sees the request."""

    code: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    kind = "status"


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without a word. With `forwarded`, the
    request first goes upstream and its whole answer is read (and thrown away): the change
    happened, the client never hears of it. With `reset`, the close is an RST, not a FIN."""

    forwarded: bool = False
    reset: bool = False

    kind = "drop"


@dataclass(frozen=True)
class CutBody:
    """Forward, then send the answer's headers and its first `after_bytes` body bytes (as
    framed: within the Content-Length, or in chunks), and close."""

    after_bytes: int
    reset: bool = False

    kind = "cut"


@dataclass(frozen=True)
class Truncate:
    """Forward, then send the whole body under a Content-Length `missing` bytes larger, and
    close: every byte arrived, yet the answer is short (one without a body goes as it is)."""

    missing: int = 1

    kind = "truncate"


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before going on (forwarding, or the next rule that fires)."""

    seconds: float

    kind = "delay"


Action = Status | Drop | CutBody | Truncate | Delay


def status(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Status:
    """Answer `code` with `body` (Content-Length is added) and `headers`."""
    return Status(code, body, tuple((headers or {}).items()))


def s3_error(code: int, error: str, message: str, headers: dict[str, str] | None = None) -> Status:
    """An S3-style XML error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{error}</Code><Message>{message}</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    ).encode()
    return status(code, body, {"Content-Type": "application/xml", **(headers or {})})


def slow_down(retry_after: float | None = None) -> Status:
    """S3's 503 SlowDown, with a Retry-After header when `retry_after` is given."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return s3_error(503, "SlowDown", "Please reduce your request rate.", headers)


def internal_error() -> Status:
    """S3's 500 InternalError."""
    return s3_error(500, "InternalError", "We encountered an internal error. Please try again.")


def too_many_requests(retry_after: float | None = None) -> Status:
    """A bare 429 (what GCS and Azure answer when throttling), with an optional Retry-After."""
    headers = {"Content-Type": "text/plain"}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return status(429, b"Too Many Requests", headers)


def drop_before_response(*, forwarded: bool = False, reset: bool = False) -> Drop:
    """Close without answering; `forwarded=True` lets the request reach the upstream first."""
    return Drop(forwarded, reset)


def cut_response_body(after_bytes: int, *, reset: bool = False) -> CutBody:
    """Forward, send the headers and `after_bytes` of the body, then close."""
    if after_bytes < 0:
        raise ValueError("after_bytes must be >= 0")
    return CutBody(after_bytes, reset)


def truncate_response(missing: int = 1) -> Truncate:
    """Forward, send the whole body under a Content-Length `missing` bytes too large, close."""
    if missing < 1:
        raise ValueError("missing must be >= 1")
    return Truncate(missing)


def delay(seconds: float) -> Delay:
    """Wait before forwarding (or before the action of a later rule that fires)."""
    return Delay(seconds)


# -- rules ----------------------------------------------------------------------------------


@dataclass
class Rule:
    """When to do what; `seen` and `fired` count the requests it matched and faulted."""

    action: Action
    method: frozenset[str] | None = None
    path: re.Pattern[str] | None = None
    predicate: Callable[[Request], bool] | None = None
    probability: float = 1.0
    nth: frozenset[int] | None = None
    limit: int | None = None
    name: str = ""
    enabled: bool = True
    seen: int = 0
    fired: int = 0

    def matches(self, request: Request) -> bool:
        if not self.enabled:
            return False
        if self.method is not None and request.method not in self.method:
            return False
        if self.path is not None and not self.path.search(request.target):
            return False
        return self.predicate is None or self.predicate(request)

    def _decide(self, request: Request, rng: random.Random) -> bool:
        """Count the request if it matches, and say whether the rule fires (lock held)."""
        if not self.matches(request):
            return False
        self.seen += 1
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.nth is not None and self.seen not in self.nth:
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Exchange:
    """One request as the proxy handled it, for assertions (times are `time.monotonic()`)."""

    number: int
    started: float
    method: str
    target: str
    faults: tuple[str, ...]  # names of the rules that fired on it, delays included
    status: int | None = None  # what the client was told (None: nothing, or cut short)


# -- the proxy ------------------------------------------------------------------------------


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 in front of a plain-http loopback `upstream`."""

    def __init__(self, upstream: str, *, seed: int = 0, port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"upstream must be a plain http origin, got {upstream!r}")
        if parts.hostname not in LOOPBACK:
            raise ValueError(f"upstream must be on loopback, got {parts.hostname!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.exchanges: list[Exchange] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._count = 0
        #: Requests answered 502 because the upstream could not be reached (a test that
        #: expects only its own faults should find none).
        self.upstream_failures = 0
        #: Tracebacks of the proxy's own unexpected errors (a test should find none).
        self.errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """Where clients reach the proxy: "http://127.0.0.1:PORT" (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="faultproxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open client connection, and wait for the server."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules -------------------------------------------------------------------------------

    def add_rule(
        self,
        action: Action,
        *,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        predicate: Callable[[Request], bool] | None = None,
        probability: float = 1.0,
        nth: int | Collection[int] | None = None,
        limit: int | None = None,
        name: str = "",
    ) -> Rule:
        """Add a rule (tried after the ones already there) and return it, for its counters.

        `method`: one or several (upper case); `path`: a regular expression searched in the
        target (path and query); `nth`: the 1-based matching requests it fires on (an int, or
        a collection such as range(1, 4)); `limit`: at most this many times in all.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        methods = None
        if method is not None:
            methods = frozenset({method} if isinstance(method, str) else method)
        nths = None
        if nth is not None:
            nths = frozenset({nth} if isinstance(nth, int) else nth)
        rule = Rule(
            action=action,
            method=methods,
            path=re.compile(path) if path is not None else None,
            predicate=predicate,
            probability=probability,
            nth=nths,
            limit=limit,
            name=name or f"{len(self.rules) + 1}:{action.kind}",
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)

    def clear_rules(self) -> None:
        """No more faults from now on (the counters of removed rules stay on their objects)."""
        with self._lock:
            self.rules.clear()

    # -- counters ----------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """How many requests the proxy has received."""
        return self._count

    @property
    def faulted(self) -> int:
        """How many requests a terminal rule (not a delay) acted on."""
        with self._lock:
            return sum(rule.fired for rule in self.rules if not isinstance(rule.action, Delay))

    def matching(self, method: str | None = None, path: str | None = None) -> list[Exchange]:
        """The exchanges so far with this method and a target where `path` (a regex) is found."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            found = list(self.exchanges)
        return [
            ex
            for ex in found
            if (method is None or ex.method == method)
            and (pattern is None or pattern.search(ex.target))
        ]

    # -- used by the handler -----------------------------------------------------------------

    def _admit(self, method: str, target: str, headers: http.client.HTTPMessage) -> Request:
        with self._lock:
            self._count += 1
            return Request(self._count, method, target, headers)

    def _rules_for(self, request: Request) -> list[tuple[Rule, Action]]:
        """The rules that fire on `request`: any delays, then at most one terminal action."""
        fired: list[tuple[Rule, Action]] = []
        with self._lock:
            for rule in self.rules:
                if rule._decide(request, self._rng):
                    fired.append((rule, rule.action))
                    if not isinstance(rule.action, Delay):
                        break
        return fired

    def _failed(self, trace: str) -> None:
        with self._lock:
            self.errors.append(trace)

    def _upstream_failed(self) -> None:
        with self._lock:
            self.upstream_failures += 1

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        """A bug of the proxy's own: kept for the test to see (not printed from a thread
        after the test's output capture has ended)."""
        self.proxy._failed(traceback.format_exc())


# -- one client connection ------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed its side, or sent something we cannot read as HTTP."""


class _Close(Exception):
    """End this client connection now (after a fault, or when either side asked to)."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__()
        self.reset = reset


@dataclass
class _Framing:
    """How a message body is delimited: not at all (none), by a length, or in chunks."""

    kind: Literal["none", "length", "chunked"]
    length: int = 0


@dataclass
class _Answer:
    """The upstream's answer, its body not read yet."""

    response: http.client.HTTPResponse
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Handler(socketserver.BaseRequestHandler):
    """Serves one client connection: requests one after the other, as HTTP/1.1 wants."""

    server: _Server
    request: socket.socket

    def setup(self) -> None:
        self.proxy = self.server.proxy
        self.sock = self.request
        self.sock.settimeout(CLIENT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = cast(BufferedReader, self.sock.makefile("rb", buffering=CHUNK))
        self.upstream: http.client.HTTPConnection | None = None
        self.proxy._track(self.sock, add=True)

    def finish(self) -> None:
        self.proxy._track(self.sock, add=False)
        if self.upstream is not None:
            self.upstream.close()
        with contextlib.suppress(OSError):
            self.rfile.close()

    def handle(self) -> None:
        reset = False
        try:
            while True:
                request = self._read_request()
                if request is None:
                    break
                if not self._serve(request):
                    break
        except _Close as close:
            reset = close.reset
        except (_ClientGone, OSError, http.client.HTTPException):
            pass
        if reset:
            # SO_LINGER with a zero timeout: close() sends an RST instead of a FIN.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    # -- reading the client ------------------------------------------------------------------

    def _read_request(self) -> tuple[Request, str, _Framing] | None:
        """The next request's head (None when the client closed between requests)."""
        line = b"\r\n"
        while line in (b"\r\n", b"\n"):  # a robust server ignores empty lines before one
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return None
        if len(line) > MAX_LINE:
            raise _ClientGone("request line too long")
        try:
            method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            raise _ClientGone(f"bad request line {line!r}") from None
        headers = http.client.parse_headers(self.rfile)
        request = self.proxy._admit(method, target, headers)
        return request, version, self._request_framing(headers)

    @staticmethod
    def _request_framing(headers: http.client.HTTPMessage) -> _Framing:
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return _Framing("chunked")
        length = headers.get("Content-Length")
        if length is not None:
            return _Framing("length", int(length))
        return _Framing("none")  # a request without either has no body

    def _body(self, framing: _Framing) -> Iterator[bytes]:
        """The request body, decoded from its framing, piece by piece."""
        if framing.kind == "length":
            left = framing.length
            while left:
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise _ClientGone("request body ended early")
                left -= len(piece)
                yield piece
        elif framing.kind == "chunked":
            while True:
                size_line = self.rfile.readline(MAX_LINE + 1)
                if not size_line:
                    raise _ClientGone("chunked request body ended early")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(CHUNK, left))
                    if not piece:
                        raise _ClientGone("chunked request body ended early")
                    left -= len(piece)
                    yield piece
                self.rfile.readline(MAX_LINE + 1)  # the CRLF after the chunk

    def _discard(self, framing: _Framing) -> None:
        for _ in self._body(framing):
            pass

    # -- serving one request -----------------------------------------------------------------

    def _serve(self, head: tuple[Request, str, _Framing]) -> bool:
        """Answer one request (or fault it); True to keep the connection for the next one."""
        request, version, framing = head
        started = time.monotonic()
        fired = self.proxy._rules_for(request)
        names = tuple(rule.name for rule, _ in fired)
        keep = (
            version == "HTTP/1.1" and "close" not in request.headers.get("Connection", "").lower()
        )
        if "100-continue" in request.headers.get("Expect", "").lower():
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        action: Action | None = None
        for _, fired_action in fired:
            if isinstance(fired_action, Delay):
                time.sleep(fired_action.seconds)
            else:
                action = fired_action
        recorded = False

        def record(told: int | None) -> None:
            """Log the exchange before the client can hear the end of it, so a test that
            has just read an answer finds its record."""
            nonlocal recorded
            recorded = True
            self.proxy._record(
                Exchange(request.number, started, request.method, request.target, names, told)
            )

        try:
            if isinstance(action, Status):
                self._discard(framing)
                record(action.code)
                self._send_status(request, action, keep)
                return keep
            if isinstance(action, Drop) and not action.forwarded:
                self._discard(framing)
                record(None)
                raise _Close(action.reset)
            answer = self._forward(request, framing)
            if answer is None:
                self.proxy._upstream_failed()
                record(502)
                self._send_status(request, Status(502, b"upstream unreachable"), keep=False)
                return False
            if isinstance(action, Drop):
                answer.response.read()
                record(None)
                raise _Close(action.reset)
            if isinstance(action, Truncate):
                record(None)
                self._relay_truncated(request, answer, action)
                raise _Close()
            if isinstance(action, CutBody):
                record(None)
                self._relay(request, answer, keep=False, cut=action.after_bytes)
                raise _Close(action.reset)
            record(answer.response.status)
            return self._relay(request, answer, keep=keep)
        finally:
            if not recorded:  # the client or the upstream went away half-way
                record(None)

    def _send_status(self, request: Request, action: Status, keep: bool) -> None:
        reason = http.client.responses.get(action.code, "Fault")
        lines = [f"HTTP/1.1 {action.code} {reason}"]
        lines += [f"{name}: {value}" for name, value in action.headers]
        lines.append(f"Content-Length: {len(action.body)}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + (b"" if request.method == "HEAD" else action.body))

    # -- the upstream ------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        """This client connection's upstream connection, fresh if the old one went stale."""
        conn = self.upstream
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:  # closed by the upstream while idle (or it sent something unasked)
                conn.close()
        if conn is None:
            conn = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT
            )
            self.upstream = conn
        return conn

    @property
    def upstream_host(self) -> str:
        return self.proxy.upstream_host

    @property
    def upstream_port(self) -> int:
        return self.proxy.upstream_port

    def _send_head(self, request: Request, framing: _Framing) -> http.client.HTTPConnection | None:
        """Send the request line and headers upstream (again on a fresh connection if the kept
        one fails: no byte of the body has gone yet); None when the upstream is unreachable."""
        for _ in range(2):
            conn = self._connection()
            try:
                conn.putrequest(
                    request.method, request.target, skip_host=True, skip_accept_encoding=True
                )
                for name, value in request.headers.items():
                    lower = name.lower()
                    if lower in HOP_BY_HOP or lower in ("content-length", "expect"):
                        continue
                    conn.putheader(name, value)
                if framing.kind == "length":
                    conn.putheader("Content-Length", str(framing.length))
                elif framing.kind == "chunked":
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.upstream = None
                continue
            return conn
        return None

    def _forward(self, request: Request, framing: _Framing) -> _Answer | None:
        """Send the request upstream, streaming its body; the answer's head, or None when
        the upstream cannot be reached at all."""
        conn = self._send_head(request, framing)
        if conn is None:
            self._discard(framing)
            return None
        upstream_ok = True
        for piece in self._body(framing):
            if not upstream_ok:
                continue  # keep reading the client, so it gets our 502 in order
            try:
                if framing.kind == "chunked":
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    conn.send(piece)
            except OSError:
                upstream_ok = False
        try:
            if framing.kind == "chunked" and upstream_ok:
                conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
        ]
        return _Answer(response, headers)

    # -- relaying the answer -----------------------------------------------------------------

    @staticmethod
    def _response_framing(request: Request, response: http.client.HTTPResponse) -> _Framing:
        if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
            return _Framing("none")
        length = response.getheader("Content-Length")
        if length is not None and not response.chunked:
            return _Framing("length", int(length))
        return _Framing("chunked")  # re-chunked for the client, whatever the upstream did

    def _head(
        self, response: http.client.HTTPResponse, headers: list[tuple[str, str]], extra: list[str]
    ) -> bytes:
        lines = [f"HTTP/1.1 {response.status} {response.reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines += extra
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _relay(
        self, request: Request, answer: _Answer, *, keep: bool, cut: int | None = None
    ) -> bool:
        """Stream the answer to the client; with `cut`, stop after that many body bytes.
        True when the connection can carry another request."""
        response = answer.response
        framing = self._response_framing(request, response)
        keep = keep and not response.will_close
        extra = []
        if framing.kind == "none":
            length = response.getheader("Content-Length")
            if length is not None:
                extra.append(f"Content-Length: {length}")
        elif framing.kind == "length":
            extra.append(f"Content-Length: {framing.length}")
        else:
            extra.append("Transfer-Encoding: chunked")
        extra.append("Connection: keep-alive" if keep and cut is None else "Connection: close")
        self.sock.sendall(self._head(response, answer.headers, extra))
        if framing.kind == "none":
            response.read()
            return keep
        budget = cut
        while True:
            piece = response.read1(CHUNK)
            if not piece:
                break
            if budget is not None:
                piece = piece[:budget]
                budget -= len(piece)
            if framing.kind == "chunked" and piece:
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            elif piece:
                self.sock.sendall(piece)
            if budget == 0:
                response.close()
                if self.upstream is not None:
                    self.upstream.close()  # the rest of the answer is still on the wire
                return False
        # read1() does not mark a Content-Length answer finished when it reaches its end;
        # only a closed response lets the upstream connection carry the next request.
        response.close()
        if framing.kind == "chunked" and cut is None:
            self.sock.sendall(b"0\r\n\r\n")
        return keep and cut is None

    def _relay_truncated(self, request: Request, answer: _Answer, action: Truncate) -> None:
        """Every byte of the body, under a Content-Length that promises `missing` more. An
        answer that has no body (to HEAD, 204, 304) has nothing to fall short of: it goes
        through as it is (its Content-Length, if any, describes the object, not a body), and
        only the connection is closed after it."""
        response = answer.response
        if self._response_framing(request, response).kind == "none":
            self._relay(request, answer, keep=False)
            return
        body = response.read()
        extra = [f"Content-Length: {len(body) + action.missing}", "Connection: close"]
        self.sock.sendall(self._head(response, answer.headers, extra) + body)

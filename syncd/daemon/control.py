"""The control socket server: newline-delimited JSON over a Unix socket.

The socket is created 0600 inside a 0700 folder, and each connection's peer uid is checked
(SO_PEERCRED), so only the daemon's own user (or root) can ask it anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import socketserver
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from syncd.daemon.protocol import MAX_LINE, encode

log = structlog.get_logger("syncd.control")

Handler = Callable[[str, dict[str, Any]], Any]


class CommandError(Exception):
    """A command the daemon refuses; its message goes back to the client as one line."""


class ControlSocketError(Exception):
    """The control socket cannot be set up; the message is one line for the user."""


class SocketInUse(ControlSocketError):
    """A live daemon already answers on the socket path."""


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    dispatch: Handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr for whatever a connection raised, which
        would break the daemon's JSON lines. A client that hung up before its answer (a
        script killed mid-request, a probe) is no fault of the daemon's; anything else is
        logged as a line like every other."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("control client hung up before its answer", error=str(error))
            return
        log.error("control connection failed", exc_info=True)


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        if not _peer_allowed(self.request):
            self.wfile.write(encode({"ok": False, "error": "permission denied"}))
            return
        line = self.rfile.readline(MAX_LINE)
        try:
            message = json.loads(line)
            if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
                raise ValueError("expected a JSON object with a 'cmd'")
            cmd = message.pop("cmd")
            reply = {"ok": True, "result": self.server.dispatch(cmd, message)}
        except CommandError as exc:
            reply = {"ok": False, "error": str(exc)}
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:
            log.exception("control command failed")
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        self.wfile.write(encode(reply))


def _peer_allowed(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


class ControlServer:
    """The daemon's end of the control socket.

    The socket file is the only sign of a running daemon other processes have, so it is
    never removed unless this server bound it: `bind` refuses (before touching anything) when
    something answers on the path, replaces only a stale file nothing listens on, and `stop`
    unlinks the path only while it is still the very socket this server created.
    """

    def __init__(self, path: Path, dispatch: Handler | None = None) -> None:
        self.path = path
        self.dispatch = dispatch
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: (st_dev, st_ino) of the socket file this server bound; None when it bound none.
        self._bound: tuple[int, int] | None = None

    def bind(self) -> None:
        """Claim the socket path: SocketInUse when something listens on it (a live daemon),
        a stale file (left by a daemon killed with -9) is replaced; ControlSocketError when
        the socket cannot be created."""
        if self._server is not None:
            return
        folder = self.path.parent
        try:
            # A folder made here is 0700; one that was there (/run, a home directory) keeps
            # its mode: the socket itself is 0600 and answers only this user or root.
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _folder_locked(folder):
                self._remove_stale()
                self._server = self._create()
        except OSError as exc:
            raise ControlSocketError(
                f"cannot create the control socket {self.path}: {_cause(exc, folder)}"
            ) from exc

    def _remove_stale(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not stat.S_ISSOCK(self.path.lstat().st_mode):
            raise SocketInUse(f"{self.path} exists and is not a socket")
        if _answers(self.path):
            raise SocketInUse(f"a syncd daemon already answers on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: nothing listens on it
        log.info("stale control socket replaced", socket=str(self.path))

    def _create(self) -> _Server:
        server = _Server(str(self.path), _Connection, bind_and_activate=False)
        try:
            server.server_bind()
            st = self.path.lstat()
            self._bound = (st.st_dev, st.st_ino)
            os.chmod(self.path, 0o600)
            server.server_activate()
        except BaseException:
            server.server_close()
            self._unlink_if_bound()  # the folder lock is held by `bind`
            raise
        return server

    def start(self) -> None:
        """Bind (unless `bind` already did) and answer commands on a thread."""
        self.bind()
        assert self._server is not None and self.dispatch is not None
        self._server.dispatch = self.dispatch
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop answering and remove the socket file, if it is still the one bound here.
        Safe to call more than once, and after a failed or no `bind`."""
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()  # waits for serve_forever: only when it runs
                self._thread = None
            self._server.server_close()
            self._server = None
        self._unlink_own()

    def _unlink_own(self) -> None:
        if self._bound is not None:
            with _folder_locked(self.path.parent):
                self._unlink_if_bound()

    def _unlink_if_bound(self) -> None:
        """Remove the socket file only while it is the one this server bound: another
        daemon may have replaced it since (and a refused one never bound any)."""
        if self._bound is None:
            return
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._bound:
                self.path.unlink()
        self._bound = None


def _cause(exc: OSError, folder: Path) -> str:
    """What stopped the socket, with the path at fault: mkdir says "File exists" of a file
    where the socket's folder belongs, which the folder is not: that is ENOTDIR."""
    if isinstance(exc, FileExistsError) and exc.filename == str(folder):
        return f"{folder}: {os.strerror(errno.ENOTDIR)}"
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _answers(path: Path) -> bool:
    """Whether something listens on the socket at `path` (a refused or missing connection:
    nothing does). Only a connection is tried: a busy daemon may answer slowly, but its
    socket still accepts."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # it exists and is not plainly dead (e.g. a full backlog): leave it
    return True


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """Hold an flock on the socket's folder: two daemons starting at once cannot both find
    the same stale socket, and one of them remove the other's fresh one. The critical
    section is short (one connection attempt of at most 2 s)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # an unreadable folder cannot be locked; the check still runs
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock

"""The control socket server: newline-delimited JSON over a Unix socket.

The socket is created 0600 inside a 0700 folder, and each connection's peer uid is checked
(SO_PEERCRED), so only the daemon's own user (or root) can ask it anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from syncd.daemon.protocol import MAX_LINE, DaemonUnreachable, encode, request

log = structlog.get_logger("syncd.control")

Handler = Callable[[str, dict[str, Any]], Any]


class CommandError(Exception):
    """A command the daemon refuses; its message goes back to the client as one line."""


class SocketInUse(Exception):
    """A live daemon already answers on the socket path."""


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    dispatch: Handler


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
    def __init__(self, path: Path, dispatch: Handler) -> None:
        self.path = path
        self._dispatch = dispatch
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid == os.getuid():
            folder.chmod(0o700)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise SocketInUse(f"{self.path} exists and is not a socket")
            try:
                request(self.path, "ping", timeout=2)
            except DaemonUnreachable:
                self.path.unlink()  # stale: left by a daemon that died
            except Exception as exc:
                raise SocketInUse(f"a syncd daemon already answers on {self.path}") from exc
            else:
                raise SocketInUse(f"a syncd daemon already answers on {self.path}")
        server = _Server(str(self.path), _Connection, bind_and_activate=True)
        os.chmod(self.path, 0o600)
        server.dispatch = self._dispatch
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="control", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

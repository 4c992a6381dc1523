"""The control socket's wire format: one JSON object per line each way.

Request:  {"cmd": "status", ...arguments}
Response: {"ok": true, "result": ...}  or  {"ok": false, "error": "one line"}
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

MAX_LINE = 1024 * 1024


class DaemonUnreachable(Exception):
    """No daemon answers on the socket (exit code 3)."""


class DaemonNoAnswer(DaemonUnreachable):
    """The daemon took the command but did not answer in time (it is stopped, or stuck): the
    command may still be carried out, so a caller must not report it as not done."""


class DaemonError(Exception):
    """The daemon answered with an error."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if chunk.endswith(b"\n") or b"\n" in chunk or total > MAX_LINE:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


def request(socket_path: Path, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result."""
    sent = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(encode({"cmd": cmd, **args}))
            sent = True
            line = read_line(sock)
    except TimeoutError as exc:
        if not sent:
            raise DaemonUnreachable(
                f"cannot reach the syncd daemon on {socket_path}: timed out"
            ) from exc
        raise DaemonNoAnswer(
            f"the syncd daemon on {socket_path} took `{cmd}` but did not answer within "
            f"{timeout:g} s (stopped or stuck?): it may still carry it out; see `syncd status`"
        ) from exc
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonUnreachable(
            f"syncd daemon is not running (no answer on {socket_path})"
        ) from exc
    except OSError as exc:
        raise DaemonUnreachable(
            f"cannot reach the syncd daemon on {socket_path}: {exc.strerror or exc}"
        ) from exc
    if not line:
        raise DaemonUnreachable(f"the syncd daemon on {socket_path} closed the connection")
    reply = _parse_reply(line, socket_path)
    if not reply.get("ok"):
        raise DaemonError(str(reply.get("error", "unknown error")))
    return reply.get("result")


def _parse_reply(line: bytes, socket_path: Path) -> dict[str, Any]:
    """The reply, an object. Anything else (not JSON, cut short, a list) means that what
    answers there cannot be used as a syncd daemon: DaemonUnreachable (exit 3), not a
    traceback."""
    try:
        reply = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        why = "not JSON (or cut short)"
    else:
        if isinstance(reply, dict):
            return reply
        why = "JSON, but not an object"
    raise DaemonUnreachable(f"cannot use what answers on {socket_path}: its reply is {why}")

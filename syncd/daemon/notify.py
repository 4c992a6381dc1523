"""sd_notify for systemd `Type=notify` services: a no-op outside systemd, never fatal.

Speaks the datagram protocol directly (a handful of lines; see sd_notify(3)) so the daemon has
no dependency for it. `WATCHDOG_USEC` tells how often systemd wants a sign of life.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("syncd.notify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = environ if environ is not None else dict(os.environ)
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        #: Seconds between WATCHDOG=1 pings (half the deadline, as systemd recommends).
        self.watchdog_interval: float | None = int(usec) / 2e6 if watched else None
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (and a debug log) if it failed."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            log.debug("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """Send STATUS= only when it changed (the main loop calls this every tick)."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

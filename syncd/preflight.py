"""Can the places the config names beyond its pairs be used: the state database, the control
socket, the metrics endpoint? `syncd check` asks, and so do the commands that use them before
they create anything (a refused `run` left `state.db.lock` behind, and `check` said ok of a
state or socket path no command could use). Each function returns why the place cannot
work, as one line for a config error naming its key, or None.

Nothing is left behind, and where the system allows nothing is written: a folder is asked
with access(2), then tried with a file that has no name (O_TMPFILE: the folder's listing and
mtime stay as they were), and only on a filesystem without those (NFS, FUSE, /proc) by making
a named file and removing it again. An address is tried by binding port 0 on it (the port
itself may well be taken by the running daemon).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from pathlib import Path

from syncd.config.model import state_file, state_read_only


def state_problem(url: str) -> str | None:
    """Why the SQLite state at `url` can be neither opened nor created; None for a usable
    one, and for a database that is no file (in memory, a server: its URL is checked when
    the config loads). A state opened read-only (`mode=ro`) needs only to be there and
    readable: nothing is made for it (whether a command may write it is the caller's)."""
    db = state_file(url)
    if db is None:
        return None
    read_only = state_read_only(url)
    try:
        mode = os.stat(db).st_mode
    except OSError as exc:
        if read_only is not None and isinstance(exc, FileNotFoundError):
            return f"{db}: no such file ({read_only} opens only a state that is there)"
        # Missing (it is made at the first pass), or a folder on the way is not one.
        folder = folder_problem(db.parent)
        if folder is not None:
            return f"cannot create {db}: {folder}"
        return None if isinstance(exc, FileNotFoundError) else f"{db}: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return f"{db} is a folder, not a database file"
    if not stat.S_ISREG(mode):
        return f"{db} is not a regular file"
    if not os.access(db, os.R_OK if read_only else os.R_OK | os.W_OK):
        return f"{db}: {os.strerror(errno.EACCES)}"
    if read_only is not None:
        return None
    # Its write-ahead log, shared memory and the instance lock are made beside it.
    folder = folder_problem(db.parent)
    return None if folder is None else f"cannot create files beside {db}: {folder}"


def socket_problem(path: Path) -> str | None:
    """Why the daemon could not create its control socket at `path` (its length is checked
    when the config loads). A socket already there is fine: a live daemon's (which `run`
    then refuses to replace) or a stale one."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        folder = folder_problem(path.parent)
        return None if folder is None else f"cannot create {path}: {folder}"
    if stat.S_ISSOCK(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"{path} is a folder, not a socket"
    return f"{path} exists and is not a socket"


def folder_problem(folder: Path) -> str | None:
    """Why no file can be made in `folder` (made first, with its missing parents, as syncd
    does): the nearest of its folders that exists is a file, or takes no new file (read-only,
    not this user's, /proc). The real errno, not EEXIST: that is what mkdir says of a file in
    the way."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        return f"{existing}: {os.strerror(errno.ENOTDIR)}"
    error = _creation_error(existing)
    if error is None:
        return None
    if error.errno == errno.ENOENT:  # there, but no file can be made in it (/proc)
        return f"{existing}: no file can be created there"
    return f"{existing}: {error.strerror or error}"


#: What open(O_TMPFILE) says on a filesystem that makes no unnamed files (or a kernel before
#: 3.11, which reads the flag as O_DIRECTORY).
_NO_UNNAMED_FILES = frozenset((errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL))


def _creation_error(folder: Path) -> OSError | None:
    """Why no file can be made in the existing `folder`, or None, leaving no trace where the
    system allows: a probe file's name moved the folder's mtime (a dry run's promise to change
    nothing), was left behind by a kill at the wrong moment, and showed up in a watched root.
    access(2) answers for modes, ACLs, read-only mounts and immutable folders; a file with no
    name then finds what it cannot (a full disk, root in /proc)."""
    if os.access(folder, os.W_OK | os.X_OK):
        try:
            os.close(os.open(folder, _unnamed_file_flags(), 0o600))
            return None
        except OSError as exc:
            if exc.errno not in _NO_UNNAMED_FILES:
                return exc
    # A folder access(2) refuses refuses the file too (nothing is made, and its error says
    # why); else a filesystem with no unnamed files is tried with a named one.
    try:
        fd, probe = tempfile.mkstemp(prefix=".syncd-check-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(probe)
    return None


def _unnamed_file_flags() -> int:
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:  # not Linux
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    return int(flag) | os.O_WRONLY | os.O_CLOEXEC


def listen_problem(host: str, port: int) -> str | None:
    """Why the metrics endpoint could not listen on HOST:PORT: the host does not resolve, or
    is no address of this machine. Found the way the endpoint itself finds its address;
    tried on port 0, so a port the running daemon holds is no problem here."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address[0], 0, *address[2:]))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot listen on {where}: {reason}"
    return None

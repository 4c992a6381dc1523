"""The state database: base entries of the three-way comparison and the operation log.

SQLite in WAL mode with a busy timeout; every write goes through one lock, so many worker threads
can record outcomes without "database is locked" errors, while reads stay concurrent.

Recording a synced file is a group commit: a worker that finds the lock taken leaves its record
in a queue, and whichever worker holds the lock next writes every queued record in one
transaction. Each `put` returns only once its own record is committed, so a caller never runs
ahead of the state it relies on; what the group saves is a commit (its locks and WAL pages) per
file, which with 16 workers is most of what recording cost.

One exception: during a one-shot pass (`hold`), records are written behind. `put` updates the
pass's in-memory copy and returns; the queue is committed every few hundred records, before any
other write, and when the pass ends. A record lost to a crash in between costs nothing but work:
the next pass finds both sides holding the same bytes and records them again.

The daemon writes behind too for a remote whose uploads flush in batches (`defer`: a local
folder), where a flush per file was most of what a burst of new files cost. There is no held
copy then: a record waits at most `DEFER_AFTER_S`, and a read of a path whose record waits
commits the queue first, so a decision never sees a base older than what was written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError

from syncd.oserror import not_a_folder_or
from syncd.state import schema

log = structlog.get_logger("syncd.state")


class StateError(Exception):
    """The state database cannot be used (corrupt, newer schema, unreachable)."""

    def __init__(self, message: str, *, corrupt: bool = False, newer: bool = False) -> None:
        super().__init__(message)
        #: The file is not a usable SQLite database: `syncd state rebuild` moves it aside.
        self.corrupt = corrupt
        #: A newer syncd wrote it: `syncd state rebuild` moves it aside too (kept, for that
        #: syncd), as the refusal's own line tells the user to run it.
        self.newer = newer


class StateWriteError(StateError):
    """A write to the state database failed for a reason of the database's own: its disk is
    full, an I/O error, a read-only file, a lock held past the busy timeout. What the write
    would have recorded is not recorded, nothing else is lost: a file it was about to record
    as synced is compared again by a later pass. `reason` is SQLite's first line."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot write to the state database: {reason}")
        self.reason = reason


#: What a write raises when the database cannot take it (SQLAlchemy wraps the driver's error;
#: the driver's own is there for a write made outside SQLAlchemy's handling).
WRITE_ERRORS = (OperationalError, sqlite3.OperationalError)


class BaseEntry(NamedTuple):
    """What both sides held when `path` was last in sync (the 'base' of the comparison).

    A named tuple rather than a frozen dataclass: a reconciliation loads every entry of a pair,
    and a frozen dataclass's `__init__` cost ~2 us per entry (0.2 s per 100,000 files)."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str | None
    remote_etag: str | None
    synced_at: float
    ctime_ns: int = 0
    #: The remote's ObjectInfo.meta_version then (None: not stated, or not known yet).
    remote_version: str | None = None


class RemoteSeen(NamedTuple):
    """What a poll compares a listing with: the fields of a base entry that
    `decide.remote_state` reads, not the whole entry."""

    remote_etag: str | None
    remote_version: str | None
    mtime_ns: int
    synced_at: float


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One line of the operation log."""

    ts: float
    pair: str
    path: str
    op: str
    result: str
    size: int | None = None
    sha256: str | None = None
    duration_ms: float | None = None
    error: str | None = None
    #: The bytes a transfer moved, where not all of `size` (it resumed an interrupted one):
    #: what the byte counters count.
    moved: int | None = None


# -- statements built once ------------------------------------------------------------------
# Building a SQLAlchemy expression costs more CPU than SQLite takes to run it; the hot paths
# (one lookup and one record per synced file) reuse these, so only the parameters change.
_files = schema.files
_ENTRY_COLUMNS = (
    "size",
    "mtime_ns",
    "inode",
    "ctime_ns",
    "sha256",
    "remote_etag",
    "synced_at",
    "remote_version",
)
_GET_ENTRY = select(_files).where(
    _files.c.pair == bindparam("p_pair"), _files.c.path == bindparam("p_path")
)
#: Every entry of a pair, its columns in BaseEntry's field order (older rows may hold NULL
#: for the inode and ctime columns added later).
_ENTRIES = select(
    _files.c.path,
    _files.c.size,
    _files.c.mtime_ns,
    func.coalesce(_files.c.inode, 0),
    _files.c.sha256,
    _files.c.remote_etag,
    _files.c.synced_at,
    func.coalesce(_files.c.ctime_ns, 0),
    _files.c.remote_version,
).where(_files.c.pair == bindparam("p_pair"))
#: The entries of a pair recorded at or after a time (see `recorded_since`).
_RECORDED_SINCE = _ENTRIES.where(_files.c.synced_at >= bindparam("p_since"))
_PATHS_BETWEEN = select(_files.c.path).where(
    _files.c.pair == bindparam("p_pair"),
    _files.c.path >= bindparam("p_low"),
    _files.c.path < bindparam("p_high"),
)
_REMOTE_ETAGS = select(
    _files.c.path,
    _files.c.remote_etag,
    _files.c.remote_version,
    _files.c.mtime_ns,
    _files.c.synced_at,
).where(_files.c.pair == bindparam("p_pair"))
_HAS_SIZE = (
    select(_files.c.path)
    .where(_files.c.pair == bindparam("p_pair"), _files.c.size == bindparam("p_size"))
    .limit(1)
)
_WITH_CONTENT = select(_files).where(
    _files.c.pair == bindparam("p_pair"),
    _files.c.size == bindparam("p_size"),
    _files.c.sha256 == bindparam("p_sha256"),
)
_upsert = sqlite_insert(_files)
_UPSERT_ENTRY = _upsert.on_conflict_do_update(
    index_elements=[_files.c.pair, _files.c.path],
    set_={name: _upsert.excluded[name] for name in _ENTRY_COLUMNS},
)
_DELETE_ENTRY = delete(_files).where(
    _files.c.pair == bindparam("p_pair"), _files.c.path == bindparam("p_path")
)
_INSERT_ENTRY = _files.insert()
_INSERT_OP = schema.oplog.insert()
_bump_insert = sqlite_insert(schema.counters)
_BUMP = _bump_insert.on_conflict_do_update(
    index_elements=[schema.counters.c.pair, schema.counters.c.name],
    set_={"value": schema.counters.c.value + _bump_insert.excluded.value},
)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for in-memory / non-SQLite databases. SQLite's
    URI form (`sqlite:///file:/PATH?mode=rwc&uri=true`) names /PATH: read as a path, it made
    the lock `./file:/PATH.lock`, folders and all, under the working directory."""
    from syncd.config.model import state_file

    return state_file(url)


#: A one-shot pass commits its written-behind records once this many are queued, or once the
#: oldest has waited this long: a crash loses at most that much bookkeeping, never a file.
DEFER_ROWS = 512
DEFER_SECONDS = 1.0
#: A daemon's written-behind record (see `defer`) is committed within this long: a burst of
#: files shares one barrier and one commit, and another process reading the state (`syncd
#: log`) is behind the daemon by no more than this.
DEFER_AFTER_S = 0.05

#: Told the pair, the paths and the error's first line when records written behind could not
#: be committed. Called with the store's write lock held: it must not write to the store.
LostRecords = Callable[[str, list[str], str], None]

#: Connections the pool keeps open: enough for every worker of a large `workers:` setting, the
#: poller, the control socket and the watcher at once; more are opened (and closed) on demand.
POOL_SIZE = 40


class _Queued:
    """One write waiting for a group commit: its rows, then its outcome.

    Rows, not statements: a group commit runs each statement once for the whole batch
    (executemany), so a batch of 16 records costs about what one did.
    """

    __slots__ = ("behind", "bumps", "deferred", "done", "entries", "error", "ops", "pair")

    def __init__(
        self,
        entries: Sequence[dict[str, Any]] = (),
        ops: Sequence[dict[str, Any]] = (),
        bumps: Sequence[dict[str, Any]] = (),
        *,
        pair: str | None = None,
        behind: bool = False,
        deferred: bool = False,
    ) -> None:
        self.entries = entries
        self.ops = ops
        self.bumps = bumps
        #: The pair whose transfers the rows describe (its barrier runs before they commit).
        self.pair = pair
        #: Written behind: nobody waits for its commit.
        self.behind = behind
        #: Written behind by a deferring pair (see `StateStore.defer`): its path counts as
        #: waiting until the commit is over.
        self.deferred = deferred
        self.done = False
        self.error: BaseException | None = None


class _Held:
    """A pair's base entries kept in memory for one pass (see StateStore.hold), with the
    indexes a move's source is looked up by. The indexes are built at their first use: a
    pass that finds nothing gone never looks a move's source up. Callers hold the store's
    `_held_lock` around `set`, `has_size` and `with_content`."""

    __slots__ = ("_content", "_sizes", "entries")

    def __init__(self, entries: dict[str, BaseEntry]) -> None:
        self.entries: dict[str, BaseEntry] = dict(entries)
        self._sizes: dict[int, int] | None = None
        self._content: dict[tuple[int, str], set[str]] = {}

    def set(self, path: str, entry: BaseEntry | None) -> None:
        old = self.entries.pop(path, None)
        if entry is not None:
            self.entries[path] = entry
        if self._sizes is None:
            return
        if old is not None:
            self._index(path, old, -1)
        if entry is not None:
            self._index(path, entry, +1)

    def has_size(self, size: int) -> bool:
        return self._indexed().get(size, 0) > 0

    def with_content(self, size: int, sha256: str) -> list[str]:
        self._indexed()
        return list(self._content.get((size, sha256), ()))

    def _indexed(self) -> dict[int, int]:
        if self._sizes is None:
            self._sizes = {}
            for path, entry in self.entries.items():
                self._index(path, entry, +1)
        return self._sizes

    def _index(self, path: str, entry: BaseEntry, delta: int) -> None:
        assert self._sizes is not None
        self._sizes[entry.size] = self._sizes.get(entry.size, 0) + delta
        if entry.sha256 is not None:
            paths = self._content.setdefault((entry.size, entry.sha256), set())
            if delta > 0:
                paths.add(path)
            else:
                paths.discard(path)


class StateStore:
    """Thread-safe access to the state DB. One instance per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        db_file = sqlite_path(url)
        if db_file is not None:
            try:
                db_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(
                    f"state database {_redacted(url)}: cannot make its folder "
                    f"{exc.filename or db_file.parent}: {not_a_folder_or(exc)}"
                ) from None
        self._write_lock = threading.Lock()
        self._queued: list[_Queued] = []
        self._queue_lock = threading.Lock()
        #: Records written behind and not yet committed, and when the oldest was queued.
        self._behind = 0
        self._behind_since = 0.0
        #: Per pair in a pass (see `hold`): what makes its transfers durable, run before any
        #: record of the pair is committed.
        self._barriers: dict[str, Callable[[], None]] = {}
        #: Pairs whose base entries are held in memory for a pass, and a count of base-entry
        #: writes (under `_held_lock`), so a snapshot read while a write lands is not kept.
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.Lock()
        self._writes = 0
        #: Pairs that write behind outside a pass (see `defer`): per path, how many of its
        #: records are queued or being committed (under `_queue_lock`); and who hears of
        #: records that could not be committed.
        self._deferred: dict[str, dict[str, int]] = {}
        self._on_lost: dict[str, LostRecords] = {}
        #: The listener of a pass holding a pair's entries (`hold`), until its `release`.
        self._on_lost_held: dict[str, LostRecords] = {}
        self._flush_due = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False
        try:
            # A connection per busy thread stays open: with the default 5 (+10 overflow), 16
            # workers kept opening and closing SQLite connections (and re-running the PRAGMAs).
            # (An in-memory SQLite database has a pool of its own kind, one connection per thread.)
            pooling = {"pool_size": POOL_SIZE, "max_overflow": -1} if db_file is not None else {}
            self._engine: Engine = create_engine(url, future=True, **pooling)
            if self._engine.dialect.name == "sqlite":
                event.listen(self._engine, "connect", _configure_sqlite)
            self._initialise()
        except StateWriteError as exc:
            raise StateError(f"state database {_redacted(url)}: {exc.reason}") from exc
        except SQLAlchemyError as exc:
            corrupt = isinstance(exc, DatabaseError) and _is_corruption(exc)
            hint = (
                "; run `syncd state rebuild` to start over (a first sync that deletes nothing; "
                "the unreadable file is kept beside it)"
                if corrupt
                else ""
            )
            raise StateError(
                f"state database {_redacted(url)}: {_first_line(exc)}{hint}", corrupt=corrupt
            ) from exc

    # -- lifecycle -------------------------------------------------------------------------
    def _initialise(self) -> None:
        with self._writing() as conn:
            tables = set(inspect(conn).get_table_names())
            if tables and schema.meta.name not in tables:
                # Another program's database: syncd's tables added to it (and its own `files`
                # read as syncd's) would damage both.
                raise StateError(
                    f"state database {_redacted(self.url)} is not syncd's (it holds tables of "
                    f"another program: {', '.join(sorted(tables)[:5])}); give `state` a file "
                    "of its own"
                )
            schema.metadata.create_all(conn)
            found = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar_one_or_none()
            if found is not None and not found.strip().isdecimal():
                raise StateError(
                    f"state database {_redacted(self.url)}: its schema version {found!r} is "
                    "not a number, the file is damaged; run `syncd state rebuild` to start over "
                    "(a first sync that deletes nothing; the unreadable file is kept beside it)",
                    corrupt=True,
                )
            if found is None:
                conn.execute(
                    schema.meta.insert().values(
                        key="schema_version", value=str(schema.SCHEMA_VERSION)
                    )
                )
            elif int(found) < schema.SCHEMA_VERSION:
                _migrate(conn, int(found))
            elif int(found) > schema.SCHEMA_VERSION:
                raise StateError(
                    f"state database {_redacted(self.url)} was written by a newer syncd "
                    f"(schema {found}, this one knows {schema.SCHEMA_VERSION}); "
                    "upgrade syncd or run `syncd state rebuild`",
                    newer=True,
                )
            if found is not None and conn.dialect.name == "sqlite":
                _check_pages(conn, self.url)

    def close(self) -> None:
        self._closed = True
        self._flush_due.set()  # the flusher wakes up and leaves
        self.flush()  # records a pass or a deferring pair wrote behind
        self._engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write_lock:
            self._commit_queued()  # records written behind land before any later write
            try:
                with self._engine.begin() as conn:
                    yield conn
            except WRITE_ERRORS as exc:
                raise StateWriteError(_first_line(exc)) from exc

    def _grouped(self, mine: _Queued) -> None:
        """Write `mine` in a transaction shared with the other writes queued meanwhile.

        The first writer to get the lock commits the whole queue; the others find their write
        done when they get the lock in turn. If the shared transaction fails, each write is
        retried in a transaction of its own, so one bad record never fails the rest.
        """
        self._enqueue(mine)
        with self._write_lock:
            if not mine.done:
                self._commit_queued()
        if isinstance(mine.error, WRITE_ERRORS):
            raise StateWriteError(_first_line(mine.error)) from mine.error
        if mine.error is not None:
            raise mine.error

    def _enqueue(self, queued: _Queued) -> int:
        """Queue a write; returns how many written-behind records are waiting."""
        with self._queue_lock:
            self._queued.append(queued)
            waiting = self._deferred.get(queued.pair or "") if queued.deferred else None
            if waiting is not None:
                for row in queued.entries:
                    waiting[row["path"]] = waiting.get(row["path"], 0) + 1
            if queued.behind:
                if not self._behind:
                    self._behind_since = time.monotonic()
                self._behind += 1
            return self._behind

    def flush(self) -> None:
        """Commit every queued record now (records written behind included)."""
        with self._write_lock:
            self._commit_queued()

    def _commit_queued(self) -> None:
        """Commit the whole queue. Caller holds the write lock."""
        with self._queue_lock:
            batch, self._queued = self._queued, []
            self._behind = 0
        if not batch:
            return
        try:
            ready = self._past_barriers(batch)
            try:
                with self._engine.begin() as conn:
                    self._write_rows(conn, ready)
            except Exception:
                for queued in ready:
                    try:
                        with self._engine.begin() as conn:
                            self._write_rows(conn, [queued])
                    except Exception as exc:
                        queued.error = exc
        finally:
            for queued in batch:
                queued.done = True
            self._settle_deferred(batch)
        lost: dict[str, list[_Queued]] = {}
        for queued in batch:
            if queued.behind and queued.error is not None and queued.pair is not None:
                lost.setdefault(queued.pair, []).append(queued)
        for pair, failed in lost.items():
            self._lost(pair, failed)

    def _past_barriers(self, batch: list[_Queued]) -> list[_Queued]:
        """Run the barrier of every pair with records in `batch`. The records of a pair whose
        barrier failed are not written (they would describe transfers that may not be
        durable): they fail with its error, and the rest of the batch is returned."""
        failed: dict[str, Exception] = {}
        for pair in {q.pair for q in batch if q.pair is not None}:
            barrier = self._barriers.get(pair)
            if barrier is None:
                continue
            try:
                barrier()
            except Exception as exc:
                failed[pair] = exc
        if not failed:
            return batch
        kept = []
        for queued in batch:
            error = failed.get(queued.pair) if queued.pair is not None else None
            if error is None:
                kept.append(queued)
            else:
                queued.error = error
        return kept

    def _lost(self, pair: str, failed: list[_Queued]) -> None:
        """Records written behind could not be committed. Their files are synced; the state
        just does not say so. Drop the pass's in-memory copy (it no longer matches the
        database): the next pass compares those files again and records them. The pair's
        listener hears the paths: a deferring pair's (the daemon retries them as failures),
        or that of the pass holding it (`syncd once` and the API report them as failures:
        a pass whose records were all lost, a full disk, said exit 0 and "in sync")."""
        error = failed[0].error
        assert error is not None
        reason = _first_line(error)
        log.warning(
            "state records not saved; the next pass looks at those files again",
            pair=pair,
            records=len(failed),
            error=reason,
        )
        self._wrote(pair, None, None)
        deferred = self._on_lost.get(pair)
        held = self._on_lost_held.get(pair)
        for listener, of_deferred in ((deferred, True), (held, False)):
            if listener is None:
                continue
            paths = [
                row["path"]
                for queued in failed
                if queued.deferred == of_deferred
                for row in queued.entries
            ]
            if paths:
                listener(pair, paths, reason)

    def _settle_deferred(self, batch: Sequence[_Queued]) -> None:
        """The commit of `batch` is over (done or failed): its paths stop waiting."""
        with self._queue_lock:
            for queued in batch:
                if not queued.deferred or queued.pair is None:
                    continue
                waiting = self._deferred.get(queued.pair)
                if waiting is None:
                    continue
                for row in queued.entries:
                    path = row["path"]
                    left = waiting.get(path, 0) - 1
                    if left > 0:
                        waiting[path] = left
                    else:
                        waiting.pop(path, None)

    @staticmethod
    def _write_rows(conn: Connection, batch: Sequence[_Queued]) -> None:
        """Every row of `batch`, one statement per kind of row."""
        entries = [row for queued in batch for row in queued.entries]
        if entries:
            if conn.dialect.name == "sqlite":
                conn.execute(_UPSERT_ENTRY, entries)
            else:  # portable fallback for other SQLAlchemy backends
                for row in entries:
                    conn.execute(_DELETE_ENTRY, {"p_pair": row["pair"], "p_path": row["path"]})
                    conn.execute(_INSERT_ENTRY, row)
        ops = [row for queued in batch for row in queued.ops]
        if ops:
            conn.execute(_INSERT_OP, ops)
        totals: dict[tuple[str, str], int] = {}
        for queued in batch:
            for row in queued.bumps:
                key = (row["pair"], row["name"])
                totals[key] = totals.get(key, 0) + row["value"]
        if totals:
            conn.execute(
                _BUMP,
                [{"pair": pair, "name": name, "value": n} for (pair, name), n in totals.items()],
            )

    def writing(self) -> AbstractContextManager[Connection]:
        """One transaction under the process's write lock (for the state's other tables)."""
        return self._writing()

    def reading(self) -> AbstractContextManager[Connection]:
        return self._engine.connect()

    # -- base entries ----------------------------------------------------------------------
    def hold(
        self,
        pair: str,
        barrier: Callable[[], None] | None = None,
        on_lost: LostRecords | None = None,
    ) -> dict[str, BaseEntry]:
        """Every base entry of a pair (as `entries`), also kept in memory until `release`:
        meanwhile `get`, `has_size` and `with_content` answer from memory, every write
        through this store keeps the copy current, and `put` writes behind (see the module
        docstring). For a pass that looks up each path once (`syncd once`), where three
        queries and a commit per file cost more than the file's transfer to a local folder.
        The entries are not kept if a write landed while they were read.

        `barrier` runs before any record of the pair is committed, until `release`: it makes
        the transfers the records describe durable first (a local-folder remote batches its
        fsyncs into it). `on_lost` hears the paths of the records written behind that could
        not be committed (as `defer`'s)."""
        if barrier is not None:
            self._barriers[pair] = barrier
        if on_lost is not None:
            self._on_lost_held[pair] = on_lost
        with self._held_lock:
            start = self._writes
        entries = self.entries(pair)
        with self._held_lock:
            if self._writes == start:
                self._held[pair] = _Held(entries)
        return entries

    def release(self, pair: str) -> None:
        """The end of a pass: stop holding the entries, commit what was written behind (after
        the pair's barrier), forget the barrier."""
        with self._held_lock:
            self._held.pop(pair, None)
        try:
            self.flush()
        finally:
            self._barriers.pop(pair, None)
            self._on_lost_held.pop(pair, None)

    def defer(
        self, pair: str, barrier: Callable[[], None], on_lost: LostRecords | None = None
    ) -> None:
        """Write `pair`'s records behind outside a pass (a daemon whose remote's uploads are
        made durable by `barrier`, see BatchedDurability): `put` returns once its record is
        queued. The queue is committed, after the barrier, within `DEFER_AFTER_S`, before
        any other write, before a read of a path whose record waits (`get`, and `entries`,
        `count`, `remote_etags`, `recorded_since` while any does), and at `close`. The
        lookups of a move's source (`has_size`, `with_content`) do not wait: a record they
        miss is a move seen as an upload and a deletion, which loses nothing."""
        with self._queue_lock:
            self._deferred.setdefault(pair, {})
            self._barriers[pair] = barrier
            if on_lost is not None:
                self._on_lost[pair] = on_lost
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_deferred, name="state-flush", daemon=True
                )
                self._flusher.start()

    def undefer(self, pair: str) -> None:
        """Stop writing `pair`'s records behind: what waits is committed first."""
        self.flush()
        with self._queue_lock:
            self._deferred.pop(pair, None)
            self._on_lost.pop(pair, None)
            self._barriers.pop(pair, None)

    def _flush_deferred(self) -> None:
        """The background commit of deferring pairs' records: a while after the first one of
        a burst was queued, the whole burst at once."""
        while True:
            self._flush_due.wait()
            if not self._closed:
                time.sleep(DEFER_AFTER_S)
            if self._closed:
                return
            self._flush_due.clear()  # a record queued after this wakes the loop again
            try:
                self.flush()
            except Exception as exc:  # each record's own failure is handled in the commit
                log.error("state flush failed", error=_first_line(exc))

    def _read_after_waiting(self, pair: str, path: str | None = None) -> None:
        """Before a read: commit the queue if a deferring pair's record waits (for `path`, or
        any of the pair's), so the read sees it."""
        waiting = self._deferred.get(pair)
        if waiting and (path is None or path in waiting):
            self.flush()

    def _wrote(self, pair: str, paths: Iterable[str] | None, entry: BaseEntry | None) -> None:
        """A base-entry write committed (or failed: then `paths` is None and the pair's held
        copy, which may no longer match the database, is dropped)."""
        with self._held_lock:
            self._writes += 1
            held = self._held.get(pair)
            if held is None:
                return
            if paths is None:
                del self._held[pair]
                return
            for path in paths:
                held.set(path, entry)

    def get(self, pair: str, path: str) -> BaseEntry | None:
        held = self._held.get(pair)
        if held is not None:
            return held.entries.get(path)
        self._read_after_waiting(pair, path)
        with self._engine.connect() as conn:
            row = conn.execute(_GET_ENTRY, {"p_pair": pair, "p_path": path}).first()
        return _entry(row._mapping) if row is not None else None

    def entries(self, pair: str) -> dict[str, BaseEntry]:
        """Every base entry of a pair, keyed by path: one query for a whole reconciliation."""
        self._read_after_waiting(pair)
        with self._engine.connect() as conn:
            rows = conn.execute(_ENTRIES, {"p_pair": pair}).all()
        # Columns in BaseEntry's order: a tuple each, no per-row mapping (100,000 entries:
        # 0.71 -> 0.35 s).
        return {row[0]: BaseEntry._make(row) for row in rows}

    def recorded_since(self, pair: str, since: float) -> dict[str, BaseEntry]:
        """The base entries of a pair recorded at or after `since` (their `synced_at`), keyed
        by path: one query where a lookup per path cost one each (a remote rename of a folder
        remote is known by them, see PairSyncer._renamed_remotely: 20,000 lookups on a
        remote of 20,000 same-size files). A record written behind counts: held, it is in
        the pass's copy; deferred, the queue is committed first, as for `entries`."""
        held = self._held.get(pair)
        if held is not None:
            with self._held_lock:
                return {p: e for p, e in held.entries.items() if e.synced_at >= since}
        self._read_after_waiting(pair)
        with self._engine.connect() as conn:
            rows = conn.execute(_RECORDED_SINCE, {"p_pair": pair, "p_since": since}).all()
        return {row[0]: BaseEntry._make(row) for row in rows}

    def paths_under(self, pair: str, folder: str) -> list[str]:
        """The paths of the base entries inside `folder` (one range of the primary key: a
        folder event in a pair of 100,000 files need not load them all)."""
        # Every path that starts with "folder/" sorts in ["folder/", "folder0"): SQLite
        # compares text bytewise, and "0" follows "/".
        low = folder.rstrip("/") + "/"
        high = low[:-1] + "0"
        with self._engine.connect() as conn:
            rows = conn.execute(_PATHS_BETWEEN, {"p_pair": pair, "p_low": low, "p_high": high})
            return [path for (path,) in rows]

    def remote_etags(self, pair: str) -> dict[str, RemoteSeen]:
        """Each base entry's remote version tokens, keyed by path: all a poll compares a
        listing with. A few columns instead of whole entries: 100,000 entries took ~0.7 s of
        CPU as `entries`, at every poll of a daemon."""
        self._read_after_waiting(pair)
        with self._engine.connect() as conn:
            rows = conn.execute(_REMOTE_ETAGS, {"p_pair": pair})
            return {row[0]: RemoteSeen._make(row[1:]) for row in rows}

    def count(self, pair: str) -> int:
        """How many base entries the pair has, the ones written behind included."""
        with self._held_lock:
            held = self._held.get(pair)
            if held is not None:
                return len(held.entries)
        self._read_after_waiting(pair)
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(schema.files)
                    .where(schema.files.c.pair == pair)
                ).scalar_one()
            )

    def put(self, pair: str, entry: BaseEntry, op: OpRecord | None = None) -> None:
        """Record `entry` as the new base (and the operation that produced it) atomically."""
        values = {
            "pair": pair,
            "path": entry.path,
            "size": entry.size,
            "mtime_ns": entry.mtime_ns,
            "inode": entry.inode,
            "ctime_ns": entry.ctime_ns,
            "sha256": entry.sha256,
            "remote_etag": entry.remote_etag,
            "synced_at": entry.synced_at,
            "remote_version": entry.remote_version,
        }

        ops: list[dict[str, Any]] = []
        bumps: list[dict[str, Any]] = []
        if op is not None:
            ops.append(_op_values(op))
            direction = TRANSFER_COUNTERS.get(op.op)
            if direction is not None and op.result == "ok":
                bumps = [
                    {"pair": pair, "name": f"files_{direction}", "value": 1},
                    {
                        "pair": pair,
                        "name": f"bytes_{direction}",
                        "value": (op.size if op.moved is None else op.moved) or 0,
                    },
                ]
        if pair in self._held:
            self._wrote(pair, [entry.path], entry)
            waiting = self._enqueue(_Queued([values], ops, bumps, pair=pair, behind=True))
            if waiting >= DEFER_ROWS or time.monotonic() - self._behind_since >= DEFER_SECONDS:
                self.flush()
            return
        if pair in self._deferred:
            queued = _Queued([values], ops, bumps, pair=pair, behind=True, deferred=True)
            if self._enqueue(queued) >= DEFER_ROWS:
                self.flush()
            else:
                self._flush_due.set()
            self._wrote(pair, [entry.path], entry)
            return
        try:
            self._grouped(_Queued([values], ops, bumps, pair=pair))
        except BaseException:
            self._wrote(pair, None, None)
            raise
        self._wrote(pair, [entry.path], entry)

    def forget(self, pair: str, paths: Iterable[str] | None = None) -> None:
        """Drop base entries: the given paths, or the whole pair (a later pass is a first sync,
        and its open conflicts are looked at afresh)."""
        paths = None if paths is None else list(paths)
        try:
            with self._writing() as conn:
                stmt = delete(schema.files).where(schema.files.c.pair == pair)
                if paths is None:
                    conn.execute(stmt)
                    conn.execute(delete(schema.conflicts).where(schema.conflicts.c.pair == pair))
                    # A fresh start, a fresh writer id: objects the old one wrote are then
                    # another writer's, never taken for this state's own unrecorded uploads.
                    conn.execute(delete(schema.writers).where(schema.writers.c.pair == pair))
                    conn.execute(
                        delete(schema.meta).where(
                            schema.meta.c.key.in_(
                                [_held_key(pair), _meta_key("synced", pair), _root_key(pair)]
                            )
                        )
                    )
                else:
                    for path in paths:
                        conn.execute(stmt.where(schema.files.c.path == path))
        except BaseException:
            self._wrote(pair, None, None)
            raise
        if paths is None:
            self._wrote(pair, None, None)
        else:
            self._wrote(pair, paths, None)

    def has_size(self, pair: str, size: int) -> bool:
        """Is any base entry this size? The cheap first filter for a move's source (indexed)."""
        held = self._held.get(pair)
        if held is not None:
            with self._held_lock:
                return held.has_size(size)
        with self._engine.connect() as conn:
            found = conn.execute(_HAS_SIZE, {"p_pair": pair, "p_size": size}).first()
        return found is not None

    def with_content(self, pair: str, size: int, sha256: str) -> list[BaseEntry]:
        """Base entries holding exactly this content: the candidates for a move's source."""
        held = self._held.get(pair)
        if held is not None:
            with self._held_lock:
                paths = held.with_content(size, sha256)
            return [entry for path in paths if (entry := held.entries.get(path)) is not None]
        with self._engine.connect() as conn:
            rows = conn.execute(_WITH_CONTENT, {"p_pair": pair, "p_size": size, "p_sha256": sha256})
            return [_entry(row._mapping) for row in rows]

    # -- conflicts waiting for a decision ---------------------------------------------------
    def add_conflict(self, pair: str, path: str, reason: str) -> None:
        with self._writing() as conn:
            exists = conn.execute(
                select(schema.conflicts.c.path).where(
                    schema.conflicts.c.pair == pair, schema.conflicts.c.path == path
                )
            ).first()
            if exists is None:
                conn.execute(
                    schema.conflicts.insert().values(
                        pair=pair, path=path, reason=reason, detected_at=time.time()
                    )
                )

    def clear_conflict(self, pair: str, path: str) -> bool:
        with self._writing() as conn:
            result = conn.execute(
                delete(schema.conflicts).where(
                    schema.conflicts.c.pair == pair, schema.conflicts.c.path == path
                )
            )
            return bool(result.rowcount)

    def conflicts(self, pair: str | None = None) -> list[tuple[str, str, str, float]]:
        """(pair, path, reason, detected_at) of every open conflict."""
        query = select(schema.conflicts).order_by(schema.conflicts.c.pair, schema.conflicts.c.path)
        if pair is not None:
            query = query.where(schema.conflicts.c.pair == pair)
        with self._engine.connect() as conn:
            return [(r.pair, r.path, r.reason, r.detected_at) for r in conn.execute(query)]

    def known_pairs(self) -> set[str]:
        """Every pair name the state holds files, conflicts or a writer id of: pairs of the
        config, and pairs renamed or removed since (their state stays until forgotten)."""
        tables = (schema.files, schema.conflicts, schema.writers)
        with self._engine.connect() as conn:
            return {
                row[0] for table in tables for row in conn.execute(select(table.c.pair).distinct())
            }

    # -- operation log ---------------------------------------------------------------------
    def log(self, op: OpRecord) -> None:
        self._grouped(_Queued(ops=[_op_values(op)]))

    def recent_ops(self, pair: str | None = None, limit: int = 100) -> list[OpRecord]:
        """The newest operations first."""
        query = select(schema.oplog).order_by(schema.oplog.c.id.desc()).limit(limit)
        if pair is not None:
            query = query.where(schema.oplog.c.pair == pair)
        with self._engine.connect() as conn:
            return [_op_record(r) for r in conn.execute(query)]

    def ops(self, pair: str | None = None, since: float | None = None) -> list[OpRecord]:
        """The operation log in the order it was written (the audit trail `syncd log` prints)."""
        query = select(schema.oplog).order_by(schema.oplog.c.id)
        if pair is not None:
            query = query.where(schema.oplog.c.pair == pair)
        if since is not None:
            query = query.where(schema.oplog.c.ts >= since)
        with self._engine.connect() as conn:
            return [_op_record(r) for r in conn.execute(query)]

    def prune_ops(self, before: float) -> int:
        """Drop operation records older than `before` (epoch seconds); returns how many."""
        with self._writing() as conn:
            result = conn.execute(delete(schema.oplog).where(schema.oplog.c.ts < before))
            return int(result.rowcount or 0)

    # -- totals since the state was created ------------------------------------------------
    def writer_id(self, pair: str) -> str:
        """The pair's writer id (see syncd/engine/origin.py), made on first use: random, so
        two pairs, or the same pair on two machines, never share one."""
        table = schema.writers
        with self._writing() as conn:
            found = conn.execute(
                select(table.c.writer).where(table.c.pair == pair)
            ).scalar_one_or_none()
            if found is None:
                found = secrets.token_hex(8)
                conn.execute(table.insert().values(pair=pair, writer=found))
        return str(found)

    def last_sync(self, pair: str) -> float | None:
        """When the pair was last fully in sync, as the last run saw it (None: never)."""
        found = self._meta(_meta_key("synced", pair))
        return float(found) if found else None

    def set_last_sync(self, pair: str, when: float) -> None:
        self._set_meta(_meta_key("synced", pair), repr(when))

    def place(self, pair: str) -> str | None:
        """The local root and remote the pair's state describes (`set_place`), or None for a
        state that never recorded them (made by an older syncd, or a new pair)."""
        return self._meta(_meta_key("place", pair))

    def set_place(self, pair: str, place: str) -> None:
        self._set_meta(_meta_key("place", pair), place)

    def root_folder(self, pair: str) -> str | None:
        """Which folder the pair's local root was when its base was recorded ("FSID:INODE"),
        or None (a new pair, a state forgotten, or one made by an older syncd)."""
        return self._meta(_root_key(pair))

    def set_root_folder(self, pair: str, identity: str) -> None:
        self._set_meta(_root_key(pair), identity)

    def _meta(self, key: str) -> str | None:
        with self._engine.connect() as conn:
            found = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == key)
            ).scalar_one_or_none()
        return str(found) if found is not None else None

    def _set_meta(self, key: str, value: str | None) -> None:
        """Write one meta row (None: remove it)."""
        with self._writing() as conn:
            conn.execute(delete(schema.meta).where(schema.meta.c.key == key))
            if value is not None:
                conn.execute(schema.meta.insert().values(key=key, value=value))

    def held_deletions(self, pair: str) -> set[str]:
        """The paths whose deletion the guard held when it last looked at this pair: kept over
        a restart, since a hold is lifted by --force or by the files coming back, never by
        the pair growing meanwhile (see `guard.hold_reason`)."""
        found = self._meta(_held_key(pair))
        return set(json.loads(found)) if found else set()

    def set_held_deletions(self, pair: str, paths: Iterable[str]) -> None:
        held = sorted(paths)
        self._set_meta(_held_key(pair), json.dumps(held) if held else None)

    def bump(self, pair: str, deltas: dict[str, int]) -> None:
        with self._writing() as conn:
            _bump(conn, pair, deltas)

    def counters(self, pair: str) -> dict[str, int]:
        table = schema.counters
        with self._engine.connect() as conn:
            rows = conn.execute(select(table.c.name, table.c.value).where(table.c.pair == pair))
            return {name: int(value) for name, value in rows}

    def integrity_check(self) -> str:
        with self._engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA integrity_check").scalar_one())


def _migrate(conn: Connection, found: int) -> None:
    """Bring a database of schema `found` up to SCHEMA_VERSION: its steps and the version
    that says they ran commit together, or none of them does. Python's sqlite3 opens a
    transaction only before a data change, so an ALTER TABLE committed on its own; a version
    update that failed after it (a full disk) left the column there and the version old, and
    every later open failed on "duplicate column name". A SAVEPOINT opens the transaction
    before the first step. Each step may run again all the same (see `schema.MIGRATIONS`)."""
    with conn.begin_nested():
        for version in range(found, schema.SCHEMA_VERSION):
            for step in schema.MIGRATIONS.get(version, []):
                _migration_step(conn, step)
        conn.execute(
            schema.meta.update()
            .where(schema.meta.c.key == "schema_version")
            .values(value=str(schema.SCHEMA_VERSION))
        )


def _migration_step(conn: Connection, step: str | schema.AddColumn) -> None:
    if isinstance(step, str):
        conn.exec_driver_sql(step)
        return
    columns = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({step.table})")}
    if step.column not in columns:
        conn.exec_driver_sql(step.sql)


def _configure_sqlite(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; busy_timeout rides out a checkpoint."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _entry(row: Any) -> BaseEntry:
    return BaseEntry(
        path=row["path"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        inode=row["inode"] or 0,
        ctime_ns=row["ctime_ns"] or 0,
        sha256=row["sha256"],
        remote_etag=row["remote_etag"],
        synced_at=row["synced_at"],
        remote_version=row["remote_version"],
    )


#: Operation-log entries that count as a transfer, and their direction.
TRANSFER_COUNTERS = {"upload": "up", "download": "down"}


def _bump(conn: Connection, pair: str, deltas: dict[str, int]) -> None:
    if deltas:
        conn.execute(
            _BUMP, [{"pair": pair, "name": name, "value": delta} for name, delta in deltas.items()]
        )


def _op_record(r: Any) -> OpRecord:
    return OpRecord(
        ts=r.ts,
        pair=r.pair,
        path=r.path,
        op=r.op,
        result=r.result,
        size=r.size,
        sha256=r.sha256,
        duration_ms=r.duration_ms,
        error=r.error,
    )


def _op_values(op: OpRecord) -> dict[str, Any]:
    return {
        "ts": op.ts or time.time(),
        "pair": op.pair,
        "path": op.path,
        "op": op.op,
        "size": op.size,
        "sha256": op.sha256,
        "duration_ms": op.duration_ms,
        "result": op.result,
        "error": op.error,
    }


def _redacted(url: str) -> str:
    """The URL without a password, safe to print."""
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _check_pages(conn: Connection, url: str) -> None:
    """StateError (corrupt) unless every page of the existing database reads as SQLite wrote
    it. The open itself reads only the schema and the meta row: damage further in was found
    by the first read of it, in the middle of a pass (a traceback out of `syncd once`, a
    daemon whose start-up pass died), and `state rebuild` never set the file aside. A quick
    check reads each page once (a few ms for a pair of thousands of files)."""
    problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise StateError(
            f"state database {_redacted(url)} is damaged ({problems[0]}); run `syncd state "
            "rebuild` to start over (a first sync that deletes nothing; the unreadable file "
            "is kept beside it)",
            corrupt=True,
        )


def _is_corruption(exc: DatabaseError) -> bool:
    """SQLite's own words for a file that is not (or no longer) a database."""
    text = str(exc.orig or exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def move_aside(db_file: Path, label: str = "corrupt") -> Path:
    """Rename an unusable database (and its WAL / shared-memory files) out of the way, keeping
    it for a post-mortem (`label` "corrupt") or for the newer syncd that wrote it ("newer");
    returns the new name of the main file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db_file.with_name(f"{db_file.name}.{label}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db_file}{suffix}")
        if source.exists():
            source.rename(Path(f"{target}{suffix}"))
    return target


def _root_key(pair: str) -> str:
    """The meta row of which folder a pair's local root is."""
    return _meta_key("root", pair)


def _held_key(pair: str) -> str:
    """The meta row of a pair's held deletions."""
    return _meta_key("held", pair)


def _meta_key(what: str, pair: str) -> str:
    """A pair's row in the meta table (a digest: the key column is 64 characters)."""
    return f"{what}:" + hashlib.sha256(pair.encode()).hexdigest()[:32]

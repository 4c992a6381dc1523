"""Bringing one path of one pair in sync: look at both sides, decide, act, record.

`PairSyncer` is the only place where the decision meets I/O. It is called from worker threads,
one path at a time per path (the work queue guarantees that), for any number of paths at once.
"""

from __future__ import annotations

import enum
import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from syncd.config import PairConfig
from syncd.engine import localfs
from syncd.engine.decide import decide
from syncd.engine.filters import PathFilter
from syncd.engine.model import Action, Decision, LocalFile
from syncd.engine.paths import UnsafeKey, check_key, is_folder_marker
from syncd.engine.remote_index import RemoteIndex
from syncd.engine.retry import RetryPolicy
from syncd.engine.stats import PairStats
from syncd.providers.base import ObjectInfo, Provider, UploadRequest
from syncd.providers.errors import Cancelled, NotFound, PreconditionFailed, ProviderError
from syncd.state import BaseEntry, OpRecord, StateStore

#: Files up to this size are read into memory once: the bytes hashed are the bytes sent.
SMALL_FILE = 8 * 1024 * 1024

log = structlog.get_logger("syncd.engine")


class Outcome(enum.Enum):
    DONE = "done"  # in sync now (possibly after a transfer)
    REQUEUE = "requeue"  # something moved under us; look again shortly
    FAILED = "failed"  # recorded as a failure; retried later
    CONFLICT = "conflict"  # both sides changed; waiting for the conflict machinery
    DEFERRED = "deferred"  # an action this version does not apply yet (deletions)


@dataclass(frozen=True, slots=True)
class PlanItem:
    path: str
    decision: Decision


class PairFault(Exception):
    """A problem with the whole pair (root missing, remote unreachable): nothing is decided."""


class PairSyncer:
    def __init__(
        self,
        pair: PairConfig,
        provider: Provider,
        store: StateStore,
        *,
        retry: RetryPolicy,
        is_cancelled: Callable[[], bool],
    ) -> None:
        self.pair = pair
        self.name = pair.name
        self.root = Path(pair.local)
        self.provider = provider
        self.store = store
        self.retry = retry
        self.is_cancelled = is_cancelled
        self.index = RemoteIndex()
        self.stats = PairStats()
        self.filter = PathFilter(pair.exclude, self.root)
        self.log = log.bind(pair=pair.name)
        self._warned_skips: set[str] = set()

    # -- whole-pair passes ----------------------------------------------------------------
    def check_root(self) -> None:
        if not self.root.is_dir():
            raise PairFault(f"local root {self.root} is missing or not a folder")

    def list_remote(self) -> dict[str, ObjectInfo]:
        """List the remote, adopt it as the index, and return it keyed by safe local path."""
        started = time.monotonic()
        try:
            listing = self.retry.call(lambda: list(self.provider.list()))
        except ProviderError as exc:
            raise PairFault(f"cannot list {self.pair.remote}: {exc}") from exc
        usable: list[tuple[str, ObjectInfo]] = []
        for info in listing:
            if is_folder_marker(info.key):
                continue
            try:
                path = check_key(info.key)
            except UnsafeKey as exc:
                self._skip_once(info.key, f"remote key refused: {exc}")
                continue
            if self.filter.excluded(path):
                continue
            usable.append((path, info))
        return self.index.replace(usable, started)

    def scan_local(self, start: str = "", clean_temp: bool = False) -> dict[str, LocalFile]:
        return dict(
            localfs.walk(
                self.root, self.filter, self._skip_once, start=start, clean_temp=clean_temp
            )
        )

    def plan(self, *, first_pass: bool = False) -> list[PlanItem]:
        """One full reconciliation: every path whose three-way decision is not 'nothing'."""
        self.check_root()
        self.filter = PathFilter(self.pair.exclude, self.root)
        remote = self.list_remote()
        local = self.scan_local(clean_temp=first_pass)
        base = self.store.entries(self.name)
        plan: list[PlanItem] = []
        for path in sorted(local.keys() | remote.keys() | base.keys()):
            if self.filter.excluded(path):
                continue
            decision = decide(
                base.get(path), local.get(path), remote.get(path), self.pair.direction
            )
            if decision.action is not Action.NOTHING:
                plan.append(PlanItem(path, decision))
        return plan

    # -- one path -------------------------------------------------------------------------
    def sync_path(self, path: str) -> Outcome:
        """Bring `path` in sync, recording the outcome in state and stats."""
        if self.filter.excluded(path):
            return Outcome.DONE
        plog = self.log.bind(path=path)
        try:
            decision, base, local, remote = self._decide(path)
            outcome = self._act(
                path, decision=decision, base=base, local=local, remote=remote, plog=plog
            )
        except Cancelled:
            return Outcome.REQUEUE
        except (ProviderError, OSError, localfs.LocalPathError) as exc:
            message = _describe(exc)
            plog.warning("sync failed", error=message)
            self.stats.failed(path, message)
            self.store.log(OpRecord(time.time(), self.name, path, "sync", "failed", error=message))
            return Outcome.FAILED
        if outcome is Outcome.DONE:
            self.stats.succeeded(path)
        return outcome

    def _decide(
        self, path: str
    ) -> tuple[Decision, BaseEntry | None, LocalFile | None, ObjectInfo | None]:
        base = self.store.get(self.name, path)
        local = localfs.stat_local(self.root, path)
        remote = self.index.get(path)
        while True:
            decision = decide(base, local, remote, self.pair.direction)
            if decision.action is Action.HASH_LOCAL and local is not None:
                stat, sha256, md5 = localfs.hash_file(
                    localfs.to_local(self.root, path), with_md5=True
                )
                local = replace(stat, sha256=sha256, md5=md5)
            elif decision.action is Action.FETCH_REMOTE and remote is not None:
                remote = self._stat_remote(path)
            else:
                return decision, base, local, remote

    def _stat_remote(self, path: str) -> ObjectInfo | None:
        try:
            info: ObjectInfo | None = self.retry.call(lambda: self.provider.stat(path))
        except NotFound:
            info = None
        self.index.put(path, info)
        return info

    def _act(
        self,
        path: str,
        *,
        decision: Decision,
        base: BaseEntry | None,
        local: LocalFile | None,
        remote: ObjectInfo | None,
        plog: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        action = decision.action
        if action is Action.NOTHING:
            return Outcome.DONE
        if action is Action.FORGET:
            self.store.forget(self.name, [path])
            return Outcome.DONE
        if action is Action.RECORD:
            assert local is not None and remote is not None
            sha256 = local.sha256 or remote.sha256 or (base.sha256 if base else None)
            self.store.put(self.name, _base_entry(path, local, sha256, remote.etag))
            return Outcome.DONE
        if action is Action.UPLOAD:
            assert local is not None
            return self._upload(path, local, remote, plog)
        if action is Action.DOWNLOAD:
            assert remote is not None
            return self._download(path, local, remote, plog)
        if action is Action.CONFLICT:
            plog.warning("conflict: both sides changed; left untouched", reason=decision.reason)
            self.stats.conflict(path, decision.reason)
            return Outcome.CONFLICT
        # DELETE_LOCAL / DELETE_REMOTE: propagating deletions needs the trash and the max_delete
        # guard (the reconciliation issue); until then nothing is deleted, the fact is reported.
        plog.info("deletion not propagated", action=action.value, reason=decision.reason)
        self.stats.defer(path, decision.reason)
        return Outcome.DEFERRED

    # -- transfers ------------------------------------------------------------------------
    def _upload(
        self,
        path: str,
        local: LocalFile,
        remote: ObjectInfo | None,
        plog: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        target = localfs.to_local(self.root, path)
        started = time.monotonic()
        with open(target, "rb") as fh:
            before = localfs.local_file(os.fstat(fh.fileno()))
            if before.size <= SMALL_FILE:
                data = fh.read()
                if not _same_stat(before, localfs.local_file(os.fstat(fh.fileno()))):
                    plog.debug("changed while reading; will look again")
                    return Outcome.REQUEUE
                sha256 = hashlib.sha256(data).hexdigest()
                info = self._send(path, before, sha256, remote, lambda: io.BytesIO(data))
                torn = False
            else:
                # Too big for memory: hash first (the metadata header needs it), then stream
                # while hashing again; if the two disagree the file changed under us.
                _, sha256, _ = localfs.hash_file(target)
                readers: list[localfs.HashingReader] = []

                def body() -> localfs.HashingReader:
                    fh.seek(0)
                    readers.append(localfs.HashingReader(fh, self.is_cancelled))
                    return readers[-1]

                info = self._send(path, before, sha256, remote, body)
                after = localfs.stat_local(self.root, path)
                torn = (
                    readers[-1].hexdigest() != sha256
                    or after is None
                    or not _same_stat(before, after)
                )
        if info is None:
            return Outcome.REQUEUE
        if torn:
            # The object holds a mix of versions. Remember it as ours but not in sync (size -1),
            # so the next pass replaces it with the settled file instead of calling it a conflict.
            self.store.put(self.name, replace(_base_entry(path, before, None, info.etag), size=-1))
            plog.info("file changed during upload; sending again")
            return Outcome.REQUEUE
        elapsed = time.monotonic() - started
        self.store.put(
            self.name,
            _base_entry(path, before, sha256, info.etag),
            OpRecord(
                time.time(), self.name, path, "upload", "ok", before.size, sha256, elapsed * 1000
            ),
        )
        self.stats.transferred("upload", before.size)
        plog.info("uploaded", op="upload", bytes=before.size, duration_ms=round(elapsed * 1000, 1))
        return Outcome.DONE

    def _send(
        self,
        path: str,
        local: LocalFile,
        sha256: str,
        remote: ObjectInfo | None,
        body: Callable[[], object],
    ) -> ObjectInfo | None:
        """Upload conditionally on the remote being what we decided on; None if it was not."""

        def attempt() -> ObjectInfo:
            return self.provider.upload(
                UploadRequest(
                    key=path,
                    body=body(),  # type: ignore[arg-type]
                    size=local.size,
                    mtime_ns=local.mtime_ns,
                    sha256=sha256,
                    if_absent=remote is None,
                    if_match=remote.etag if remote is not None else None,
                )
            )

        try:
            info = self.retry.call(attempt)
        except PreconditionFailed:
            # Someone else wrote first: look at what is there now and decide again.
            self.log.info("remote changed before our upload; deciding again", path=path)
            self._stat_remote(path)
            return None
        self.index.put(path, info)
        return info

    def _download(
        self,
        path: str,
        local: LocalFile | None,
        remote: ObjectInfo,
        plog: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        target = localfs.to_local(self.root, path)
        localfs.make_parents(self.root, target)
        started = time.monotonic()
        tmp = localfs.temp_path_for(target)
        try:
            try:
                info, sha256, written = self.retry.call(lambda: self._fetch(path, remote, tmp))
            except PreconditionFailed:
                self._stat_remote(path)
                return Outcome.REQUEUE
            except NotFound:
                self.index.put(path, None)
                return Outcome.REQUEUE
            if info.sha256 is not None and info.sha256 != sha256:
                raise ProviderError(
                    f"checksum mismatch (expected {info.sha256[:12]}…, got {sha256[:12]}…)"
                )
            if written != info.size:
                raise ProviderError(f"short download ({written} of {info.size} bytes)")
            mtime_ns = info.mtime_ns if info.mtime_ns is not None else int(info.modified * 1e9)
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            # The local file must still be what we decided on; if it changed, look again.
            now = localfs.stat_local(self.root, path)
            if (now is None) != (local is None) or (now and local and not _same_stat(now, local)):
                return Outcome.REQUEUE
            if local is None:
                os.link(tmp, target)  # atomic create-only: never clobbers a file that appeared
            else:
                os.replace(tmp, target)
            st = os.lstat(target)
        except FileExistsError:
            return Outcome.REQUEUE
        finally:
            tmp.unlink(missing_ok=True)
        elapsed = time.monotonic() - started
        self.index.put(path, info)
        self.store.put(
            self.name,
            _base_entry(path, localfs.local_file(st), sha256, info.etag),
            OpRecord(
                time.time(), self.name, path, "download", "ok", st.st_size, sha256, elapsed * 1000
            ),
        )
        self.stats.transferred("download", st.st_size)
        plog.info(
            "downloaded", op="download", bytes=st.st_size, duration_ms=round(elapsed * 1000, 1)
        )
        return Outcome.DONE

    def _fetch(self, path: str, remote: ObjectInfo, tmp: Path) -> tuple[ObjectInfo, str, int]:
        """One download attempt into `tmp` (truncated first), fsynced before it returns."""
        with open(tmp, "wb") as fh:
            sink = localfs.HashingWriter(fh, self.is_cancelled)
            info = self.provider.download(path, sink, if_match=remote.etag)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        return info, sink.hexdigest(), sink.bytes_written

    def _skip_once(self, path: str, reason: str) -> None:
        """Report a skipped path once per process, not at every pass."""
        if path not in self._warned_skips:
            self._warned_skips.add(path)
            self.log.warning("skipped", path=path, reason=reason)


def _same_stat(a: LocalFile, b: LocalFile) -> bool:
    return a.size == b.size and a.mtime_ns == b.mtime_ns and a.inode == b.inode


def _base_entry(path: str, local: LocalFile, sha256: str | None, etag: str) -> BaseEntry:
    return BaseEntry(
        path=path,
        size=local.size,
        mtime_ns=local.mtime_ns,
        inode=local.inode,
        sha256=sha256,
        remote_etag=etag,
        synced_at=time.time(),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__

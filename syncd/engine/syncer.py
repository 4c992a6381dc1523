"""Bringing one path of one pair in sync: look at both sides, decide, act, record.

`PairSyncer` is the only place where the decision meets I/O. It is called from worker threads,
one path at a time per path (the work queue guarantees that), for any number of paths at once.
Deletions are not carried out when decided: they wait for the end of the pass, where the
`max_delete` guard sees all of them at once (`flush_deletions`).
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import structlog

from syncd.config import PairConfig
from syncd.engine import folder_id, localfs, trash
from syncd.engine.conflicts import (
    Resolution,
    Winner,
    conflict_name,
    host_name,
    is_conflict_copy_of,
    resolve,
)
from syncd.engine.decide import ARCHIVED, decide, remote_state
from syncd.engine.filters import SYNCIGNORE, PathFilter
from syncd.engine.guard import DeletionBatch, PassFacts, hold_reason
from syncd.engine.landed import Landed
from syncd.engine.model import Action, Decision, LocalFile
from syncd.engine.multipart import LargeTransfers, Meter, PartSettings
from syncd.engine.origin import adopted_base, is_cut_off_upload
from syncd.engine.paths import (
    RESUME_PREFIX,
    UnsafeKey,
    check_key,
    is_folder_marker,
    is_own_temp,
    is_plain_key,
    key_refusal,
    normalize,
    printable,
)
from syncd.engine.progress import InFlight
from syncd.engine.remote_index import RemoteIndex
from syncd.engine.retry import RetryPolicy
from syncd.engine.stats import REFUSED_OPS, PairStats
from syncd.engine.transfer import Result, Transfers, untouched
from syncd.providers import renames
from syncd.providers.base import (
    BatchedDurability,
    MultipartProvider,
    ObjectInfo,
    Provider,
    seconds_to_ns,
)
from syncd.providers.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ProviderError,
)
from syncd.state import BaseEntry, OpRecord, StateStore, StateWriteError
from syncd.state.partials import Partials

log = structlog.get_logger("syncd.engine")

Logger = structlog.typing.FilteringBoundLogger

DELETE_SIDE = {Action.DELETE_LOCAL: "local", Action.DELETE_REMOTE: "remote"}
#: How often, at most, the time a pair was last in sync is written to the state.
SYNC_STORED_EVERY_S = 60.0

#: `syncd resolve PATH --keep X` settles a conflict as if the pair's strategy were this.
#: The longest object key a bucket takes, in bytes (S3, GCS; Azure: 1024 characters).
MAX_KEY = 1024
KEEP_STRATEGY = {"local": "local_wins", "remote": "cloud_wins", "both": "version_preserve"}


class Outcome(enum.Enum):
    DONE = "done"  # in sync now (possibly after a transfer)
    REQUEUE = "requeue"  # something moved under us; look again shortly
    FAILED = "failed"  # recorded as a failure; retried later
    CONFLICT = "conflict"  # waiting for a person (the manual strategy)
    PENDING = "pending"  # a deletion waiting for the end-of-pass guard


#: What records a path that had no base (a new file of the pass), when it settles it.
FIRST_RECORDS = frozenset({Action.UPLOAD, Action.DOWNLOAD, Action.RECORD, Action.CONFLICT})


@dataclass(frozen=True, slots=True)
class PlanItem:
    path: str
    decision: Decision


class PairFault(Exception):
    """A problem with the whole pair (root missing, remote unreachable): nothing is decided."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What was true of one path when it was decided."""

    base: BaseEntry | None
    local: LocalFile | None
    remote: ObjectInfo | None
    #: The remote version the state records for the path (the base's, unless a cut-off
    #: upload stands in for it): what an upload's origin names (see syncd/engine/origin.py).
    recorded_etag: str | None = None


class PairSyncer:
    def __init__(
        self,
        pair: PairConfig,
        provider: Provider,
        store: StateStore,
        *,
        retry: RetryPolicy,
        is_cancelled: Callable[[], bool],
        enqueue: Callable[[str, str], None] | None = None,
        long_running: Callable[[str, str], None] | None = None,
        parts: PartSettings | None = None,
        inflight: InFlight | None = None,
        pace_up: Meter | None = None,
        pace_down: Meter | None = None,
    ) -> None:
        self.pair = pair
        self.name = pair.name
        self.root = Path(pair.local)
        self.provider = provider
        self.store = store
        #: Set when the pair is removed (a reload): its transfers stop as at a stop of syncd.
        self._removed = threading.Event()
        #: Set while the pair is paused (`syncd pause`): its transfers in flight stop too.
        self._paused = threading.Event()
        self._stopping = is_cancelled
        self.enqueue = enqueue or (lambda _pair, _path: None)
        self.index = RemoteIndex()
        #: A daemon's (None elsewhere: no watcher): what its downloads put in place, whose
        #: watcher events are its own writes (see engine/landed.py).
        self.landed: Landed | None = None
        #: The id this pair's uploads carry in their origin metadata (see engine/origin.py).
        self.writer = store.writer_id(pair.name)
        self.large: LargeTransfers | None = None
        if parts is not None and provider.capabilities.multipart:
            self.large = LargeTransfers(
                pair.name,
                cast(MultipartProvider, provider),
                partials=Partials(store),
                settings=parts,
                retry=retry,
                is_cancelled=self.is_cancelled,
                pace_up=pace_up,
                pace_down=pace_down,
                root=self.root,
                set_aside=self._set_aside_temp,
            )
        self.transfers = Transfers(
            provider,
            self.index,
            retry,
            self.is_cancelled,
            pair=pair.name,
            large=self.large,
            inflight=inflight,
            pace_up=pace_up,
            pace_down=pace_down,
            on_long=(lambda path: long_running(pair.name, path)) if long_running else None,
            writer=self.writer,
        )
        self.retry = retry
        self.stats = PairStats()
        self.filter = PathFilter(pair.exclude, self.root, include=pair.include)
        self.bind_log()
        self.host = host_name()
        self.plan_only = False  # dry run: decide and record the plan, touch nothing
        #: False for one-way copies (`syncd upload` / `download`): nothing is ever deleted.
        self.propagate_deletes = True
        #: True for one-way copies: what the destination lost or changed since the last copy is
        #: sent again (see `decide`'s `copy`).
        self.copy = False
        self.planned: list[PlanItem] = []
        #: Dry run: the synced files a planned move takes (never planned as deletions).
        self._moved_from: set[str] = set()
        self._lock = threading.Lock()
        #: Set by the engine when the state describes another place (local root or remote)
        #: than the pair's: forgets it. Run once, when a pass has checked the new root and
        #: listed the new remote (`_take_place_listed`), under `_place_lock`.
        self.take_place: Callable[[], None] | None = None
        #: How long the end of a pass waits for the remote root's probe (`_remote_root_gone`):
        #: None, as long as its retries take, in a one-shot pass; the daemon, whose main loop
        #: ends passes, sets PROBE_WAIT_S.
        self.probe_wait: float | None = None
        self._place_lock = threading.Lock()
        self.deletions = DeletionBatch()
        self._load_kept(store)
        self.keeps: dict[str, str] = {}  # path -> 'local' | 'remote' | 'both', from `resolve`
        #: path -> what a `resolve` of it did, in words ("kept remote"), for its caller to say.
        self.resolutions: dict[str, str] = {}
        self._names: dict[str, str] = {}  # NFC path -> the name on disk, where they differ
        #: In a held pass: the sizes of the synced files its scan found gone locally, the only
        #: ones a new file of the pass can have been moved from (None: ask the state).
        self._gone_sizes: set[int] | None = None
        #: The new files (no base) a full pass planned, and of those the ones recorded since
        #: the guard last looked: not among the synced files the pass's deletions are weighed
        #: against. A move's new name is not one (it stands for the file it was moved from).
        #: Files that came and were synced one by one (the daemon's watcher and polls) count.
        self._planned_new: set[str] = set()
        self._new_in_pass: set[str] = set()
        #: When the pass now under way began (the last end of a pass): see _recorded_sha256.
        self._pass_began = time.time()
        self._moved_to: set[str] = set()
        self._warned_skips: set[str] = set()
        #: A dry run of a download into a folder the real run would make: absent, it is empty.
        self.missing_root_is_empty = False
        #: (device, inode) of the root when `check_root` last found it the synced folder:
        #: each path synced looks that it still is.
        self._root_seen: tuple[int, int] | None = None
        #: A dry run of an upload to a local-folder remote the real run would make: absent,
        #: it is empty.
        self.missing_remote_is_empty = False
        #: Conflicts a one-way pair leaves as they are (see _one_way_refuses): said once.
        self._kept_apart: set[str] = set()
        #: Paths waiting for a deletion of this pass to make room (see _waits_for_deletion):
        #: what stands in the way -> who waits for it.
        self._waiters: dict[str, set[str]] = {}
        self.remote_emptied = False
        #: The fault a listing being retried set (see _listing_retried), cleared on success.
        self._listing_trouble: str | None = None
        #: Local folders the last scan could not list (permissions, I/O errors), or that
        #: vanished while it ran; and of those, the ones that failed (not the vanished).
        self.unlisted: set[str] = set()
        self._failing: set[str] = set()

    def _load_kept(self, store: StateStore) -> None:
        """What the state keeps of the pair across runs: the deletions the guard held and
        nothing let through yet (and the reason last logged for holding them), when the pair
        was last in sync (a restart, held, said null), and its open conflicts."""
        self._held_before: set[str] = store.held_deletions(self.name)
        self._held_stored = frozenset(self._held_before)
        self._held_said: str | None = None
        self.stats.last_sync = store.last_sync(self.name)
        self._sync_stored = self.stats.last_sync or 0.0
        self.open_conflicts = {path for _, path, _, _ in store.conflicts(self.name)}
        for path in self.open_conflicts:
            self.stats.conflict(path, "waiting for a decision")

    def reload_filter(self) -> None:
        """Read the root's `.syncignore` again (with the config's patterns): at each full
        pass, and in the daemon whenever the file changes."""
        self.filter = PathFilter(self.pair.exclude, self.root, include=self.pair.include)

    def bind_log(self) -> None:
        """The pair's logger, made with the log settings of now: a bound logger keeps the
        renderer and level it was made with, so a reload that changes `log` binds again."""
        self.log: Logger = log.bind(pair=self.name)

    # -- whole-pair passes ----------------------------------------------------------------
    def check_root(self) -> None:
        if self.missing_root_is_empty and not os.path.lexists(self.root):
            return  # the real run makes the folder
        if not self.root.is_dir():
            raise PairFault(f"local root {self.root} is missing or not a folder")
        # Said as such: the first read under it (the .syncignore) would name another path.
        unreadable = localfs.root_unreadable(self.root)
        if unreadable is not None:
            raise PairFault(unreadable)
        if self.take_place is None:
            # (Else the state, and the folder it records, are another place's: checked once
            # a pass has listed the new place, `_take_place_listed`.)
            self._check_folder_id()

    def _take_place_listed(self) -> None:
        """A pass found the pair's new place usable on both sides (its root checked, its
        remote listed): only now is the old place's state forgotten (`take_place`), with what
        this syncer loaded from it (its writer id, held deletions, last sync, open
        conflicts), and the new root's folder recorded. An engine or a daemon on a mistyped
        `local` or `remote` forgot it at once, and once the typo was fixed, the next pass was
        a first sync: a file deleted since the last sync came back."""
        if self.take_place is None:
            return
        with self._place_lock:
            if self.take_place is None:
                return  # another thread took it meanwhile
            self.take_place()
            for path in self.open_conflicts:
                self.stats.conflicts.pop(path, None)
            self.writer = self.transfers.writer = self.store.writer_id(self.name)
            self._load_kept(self.store)
            self.take_place = None
        self.remote_emptied = False  # weighed against the state just forgotten
        self._check_folder_id()

    def _check_folder_id(self) -> None:
        """Is the root the folder this pair synced (`folder_id`)? Recorded at its first pass,
        and taken as it is when the state knows none (a state forgotten, or one from an older
        syncd) unless it is empty while the state remembers files. Otherwise a fault:
        nothing is written there, nothing deleted anywhere for what it lacks. One-way copies
        (which delete nothing) take their folders as they are."""
        if not self.propagate_deletes:
            return
        recorded = self.store.root_folder(self.name)
        looked = folder_id.look(self.root)
        if looked is None:
            raise PairFault(f"local root {self.root} is missing or not a folder")
        found, seen = looked
        if recorded is not None:
            if found != recorded:
                raise PairFault(self._not_the_folder())
        elif self.store.count(self.name) and localfs.looks_empty(self.root):
            raise PairFault(
                f"local root {self.root} is empty while the state remembers "
                f"{self.store.count(self.name)} synced files (a disk not mounted?); if it was "
                f"emptied on purpose, delete the files on the remote too, or run `syncd state "
                f"rebuild --pair {self.name}` to fetch them again"
            )
        elif not self.plan_only:
            self.store.set_root_folder(self.name, found)
        self._root_seen = seen

    def _not_the_folder(self) -> str:
        return (
            f"local root {self.root} is not the folder this pair synced (a disk not mounted? "
            f"the folder made anew?); if it is the right folder, `syncd state rebuild --pair "
            f"{self.name}` makes the next pass a first sync, which deletes nothing"
        )

    def list_remote(self) -> dict[str, ObjectInfo]:
        """List the remote, adopt it as the index, and return it keyed by NFC local path."""
        started = time.monotonic()
        url = self.pair.remote_url
        try:
            if self.missing_remote_is_empty and not os.path.lexists(url.path):
                listing: list[ObjectInfo] = []
            elif self.plan_only and getattr(self.pair.options, "create_bucket", False):
                listing = self._list_creating_nothing()
            else:
                listing = self.retry.call(
                    lambda: list(self.provider.list()), on_retry=self._listing_retried
                )
        except ProviderError as exc:
            raise PairFault(f"cannot list {self.pair.remote}: {exc}") from exc
        except Exception as exc:
            # An error no adapter translated (or a bug): the pair cannot be synced now, as
            # for any failed listing; it was a traceback out of `syncd once`.
            message = _describe(exc)
            self.log.error("unexpected error", op="list", error=message, where=_where(exc))
            raise PairFault(f"cannot list {self.pair.remote}: {message}") from exc
        if self._listing_trouble is not None:  # it answers again
            if self.stats.fault == self._listing_trouble:
                self.stats.set_fault(None)
            self._listing_trouble = None
        usable: dict[str, ObjectInfo] = {}
        refused: set[str] = set()
        for info in listing:
            if is_folder_marker(info.key):
                continue
            try:
                path = normalize(check_key(info.key))
            except UnsafeKey as exc:
                if not self._excluded_name(info.key):
                    refused.add(info.key)
                    self._refuse(info.key, f"remote key refused: {exc}", "remote")
                continue
            if self.filter.excluded(path):
                continue
            other = usable.get(path)
            if other is None:
                usable[path] = info
            else:
                usable[path], left = self._one_spelling(path, other, info)
                refused.add(left)
        # A full listing: a refused key it no longer holds was renamed or deleted.
        self.stats.clear_refused("remote", refused)
        merged = self.index.replace(usable.items(), started)
        # An empty listing while the base remembers files is far more likely a fault (wrong
        # prefix, a bucket being restored) than a person deleting everything. So is one that
        # holds only what this pair wrote since its last listing and lacks at least as many
        # files as that: a bucket that lost its data while new files went up meanwhile (they
        # alone in it) is no less emptied. (A few files deleted on another machine while
        # this one rewrote the rest is not: it lacks fewer than it holds.)
        remembered = self.store.count(self.name)
        if not merged:
            self.remote_emptied = remembered > 0
        else:
            only_ours = not merged.keys() - self.index.recent
            self.remote_emptied = only_ours and remembered - len(merged) >= len(merged)
        return merged

    def _list_creating_nothing(self) -> list[ObjectInfo]:
        """A dry run's listing of a pair with `create_bucket`: the provider would make a
        missing bucket (or folder) at its first listing, and a dry run changes nothing. It
        lists without that option, and a missing root is one the real run makes: empty."""
        provider: Any = self.provider  # every adapter keeps its options there
        options = provider.options
        provider.options = options.model_copy(update={"create_bucket": False})
        try:
            return self.retry.call(lambda: list(provider.list()), on_retry=self._listing_retried)
        except NotFound:
            self.log.info("the remote is missing: the real run makes it (create_bucket)")
            return []
        finally:
            provider.options = options

    def _one_spelling(
        self, path: str, first: ObjectInfo, second: ObjectInfo
    ) -> tuple[ObjectInfo, str]:
        """Two remote keys that differ only in Unicode normalization (é as one code point, or
        e plus a combining accent) are one local path: only one of them can be synced. The
        key spelled as the path (NFC) is kept, else the first in code point order, so every
        pass keeps the same one; the other is refused (a failure of that key), and left on
        the remote as it is: never downloaded over the first, never deleted. Returns the one
        kept and the key refused."""
        kept, left = sorted((first, second), key=lambda info: (info.key != path, info.key))
        self._refuse(
            left.key,
            f"remote key refused: {_spellings(left.key, kept.key)}, one local file; only "
            f"{kept.key!r} is synced",
            "remote",
        )
        return kept, left.key

    def _listing_retried(self, exc: BaseException) -> None:
        """A listing failed and is tried again (a remote down, or stalled: each try may wait
        out a timeout): the pair is in error now, saying why, not after the last try."""
        self._listing_trouble = f"cannot list {self.pair.remote}: {exc} (retrying)"
        self.stats.set_fault(self._listing_trouble)
        # Said at each try: a `syncd once` on a remote that never answers sat silent for
        # minutes (a read timeout per try, within retry.max_seconds) before its one line.
        self.log.warning("listing failed; retrying", error=str(exc))

    def _set_aside_temp(self, key: str) -> None:
        """A temp file an earlier run left goes to the trash, not away: an interrupted
        download's bytes, most often, but after a crash at the wrong instant it may be a
        user's write a download swapped out of place (or a user's own file of that shape)."""
        try:
            trash.move_to_local_trash(
                self.root, localfs.to_local(self.root, key), key, datetime.now(UTC)
            )
        except (OSError, trash.WrittenMeanwhile) as exc:  # it stays; the next start tries again
            self.log.warning("cannot move a stale temp file to the trash", path=key, error=str(exc))

    def _stale_temp(self, key: str) -> None:
        """A temp file the start-up walk found: set aside, unless it is a resumable
        download's that its record names (the download goes on into it; the record's own
        clean-up weighs it). One no record names (its folder renamed since the kill) stayed
        for good, a hidden file of the object's size. A one-way copy leaves every resumable
        temp alone: its records are its own, and the folder's pair (a daemon downloading
        into it now) keeps another state."""
        if key.rpartition("/")[2].startswith(RESUME_PREFIX) and (
            not self.propagate_deletes
            or (self.large is not None and self.large.owns_temp(normalize(key)))
        ):
            return
        self._set_aside_temp(key)

    def scan_local(self, start: str = "", clean_temp: bool = False) -> dict[str, LocalFile]:
        """Every regular file under `start`. Folders that cannot be listed are remembered in
        `unlisted`: what is under them is unknown, not deleted."""
        found: dict[str, LocalFile] = {}
        unlisted: set[str] = set()
        failing: set[str] = set()
        refused: set[str] = set()
        if self.missing_root_is_empty and not os.path.lexists(self.root):
            self.unlisted = set()
            return found

        def on_skip(path: str, reason: str) -> None:
            if reason == localfs.VANISHED:
                # Moved or deleted while the scan ran: the watcher (or the next pass) sees
                # where it went; till then nothing under it counts as deleted.
                unlisted.add(path)
                return
            if reason.startswith(localfs.UNLISTABLE):
                unlisted.add(path)  # what is under it is unknown, not deleted
                if self._excluded_name(path):
                    # A folder the filters leave out (walked only for what a `!` rule lets
                    # back in): a root-owned `lost+found/` excluded for that very reason
                    # failed every pass once any `!` rule stood.
                    return
                # A per-path failure (named, exit 1), retried like any other; not a skip.
                failing.add(normalize(path))
                self.stats.failed(normalize(path), reason, op="scan")
                return
            if reason.endswith(localfs.NOT_A_KEY):
                # A per-file failure too (named, exit 1), but never retried: only a rename
                # fixes it.
                if not self._excluded_name(path):
                    refused.add(path)
                    self._refuse(path, reason, "local")
                return
            self._skip_once(path, reason)

        stale = self._stale_temp if clean_temp else None
        for name, local in localfs.walk(
            self.root, self.filter, on_skip, start=start, clean_temp=stale
        ):
            path = normalize(name)
            if path in found and not self._takes_over(path, name, refused):
                continue
            if path != name:
                self._names[path] = name
            else:
                self._names.pop(path, None)
            found[path] = local
        self.unlisted = {normalize(p) for p in unlisted}
        self._failing = failing
        if not start:
            # A full scan: a refused name it no longer found was renamed or deleted (unless
            # its folder could not be listed this time).
            kept = {p for p in self.stats.refused_names("local") if self._in_unlisted(p)}
            self.stats.clear_refused("local", refused | kept)
        for path in self._unreadable_folders(start):
            if path not in failing:  # readable again, or gone
                self.stats.succeeded(path)
        return found

    def _takes_over(self, path: str, name: str, refused: set[str]) -> bool:
        """A second local file whose name is `path` in another Unicode normalization: both
        would be one remote key, so only one is synced. The one spelled as the path (NFC) is
        kept, else the first in code point order, as for remote keys (see _one_spelling); the
        other is refused (a failure of that name, added to `refused`) and left as it is. True
        when `name` is the one to keep."""
        seen = self._names.get(path, path)
        kept, left = sorted((seen, name), key=lambda each: (each != path, each))
        refused.add(left)
        self._refuse(
            left,
            f"local name {_spellings(left, kept)}, one remote key; only {kept!r} is synced",
            "local",
        )
        return kept == name

    def _unreadable_folders(self, start: str) -> list[str]:
        """The folders under `start` whose listing failed at an earlier scan."""
        prefix = start + "/" if start else ""
        return [
            path
            for path, failure in self.stats.failures.copy().items()
            if failure.op == "scan" and (path == start or path.startswith(prefix))
        ]

    def _list_again(self, path: str) -> Outcome:
        """A folder the scan could not read, due for a retry: list it again and queue what it
        holds (which the pass skipped)."""
        found = self.scan_local(start="" if path == "." else path)
        if path in self._failing:
            return Outcome.FAILED  # still unreadable: failed again, with a longer backoff
        for each in found:
            self.enqueue(self.name, each)
        return Outcome.DONE

    def _in_unlisted(self, path: str) -> bool:
        return any(
            folder in (".", "") or path == folder or path.startswith(folder + "/")
            for folder in self.unlisted
        )

    def plan(self, *, first_pass: bool = False, hold: bool = False) -> list[PlanItem]:
        """One full reconciliation: every path whose three-way decision is not 'nothing'.
        `hold` keeps the base entries in memory for the pass that follows (the caller
        releases them: `StateStore.release`)."""
        self.check_root()
        self.reload_filter()
        if self.filter.problem is not None:
            self._repair_syncignore()
        if self.filter.problem is not None:
            raise PairFault(self.filter.problem)
        remote = self.list_remote()
        if self._halted():
            # A listing that answered only as syncd stops (a daemon's start-up pass left
            # behind on a hung remote): no clean-up begins under a closing state.
            raise PairFault("pass abandoned: syncd is stopping")
        self._take_place_listed()
        local = self.scan_local(clean_temp=first_pass and not self.plan_only)
        base = self._hold() if hold else self.store.entries(self.name)
        if hold:
            self._gone_sizes = {entry.size for path, entry in base.items() if path not in local}
        if not self.plan_only and self.propagate_deletes:
            # A one-way copy deletes nothing: the trash of the folder it copies from or into
            # belongs to whatever pair keeps it there, with its own `trash_days`.
            trash.prune_local_trash(self.root, self.pair.trash_days, self._skip_once)
            if first_pass and self.large is not None:
                self.large.cleanup_stale(self._stat_local, self.root)
        plan: list[PlanItem] = []
        excluded: list[str] = []
        for path in sorted(local.keys() | remote.keys() | base.keys()):
            if self.filter.excluded(path):
                if path in base:
                    excluded.append(path)
                continue
            if self.unlisted and self._in_unlisted(path) and path not in local:
                # Its folder could not be read: absent from the scan is not deleted.
                continue
            decision = decide(
                base.get(path),
                local.get(path),
                remote.get(path),
                self.pair.direction,
                copy=self.copy,
            )
            if (
                decision.action is not Action.NOTHING
                or path in self.open_conflicts
                or decision.reason == ARCHIVED
            ):
                plan.append(PlanItem(path, decision))
        if excluded and not self.plan_only:
            self._forget_excluded(excluded)
        with self._lock:
            self._planned_new.update(item.path for item in plan if item.path not in base)
        if first_pass and self.large is not None and not self.plan_only:
            # An unfinished upload of a path with nothing to do is never resumed (issue 5).
            self.large.abandon_all_but({item.path for item in plan})
        return plan

    def _forget_excluded(self, paths: list[str]) -> None:
        """Drop the base entries of paths the pair no longer syncs. While excluded, a change
        to either copy goes unseen; kept, the entry would later read a deletion made
        meanwhile on one side as one to carry out on the other (the file un-excluded on a
        machine that still has it: its copy to the trash). Forgotten, an un-excluded path is
        compared afresh, as at a first sync (rclone bisync wants `--resync` after a filter
        change for the same reason): present on one side, it is copied to the other."""
        self.store.forget(self.name, paths)
        self.log.info("excluded paths forgotten", count=len(paths))

    def _hold(self) -> dict[str, BaseEntry]:
        """The base entries, held in memory for the pass; a remote that can batch its
        flushes (a local folder) does so, its barrier run before each commit of records."""
        barrier = None
        if isinstance(self.provider, BatchedDurability) and not self.plan_only:
            barrier = self.provider.batch()
        return self.store.hold(self.name, barrier, on_lost=self.records_lost)

    def records_lost(self, _pair: str, paths: list[str], reason: str) -> None:
        """Records written behind (`StateStore.hold`, `defer`) that could not be committed:
        their files may well have gone across, only the records did not. Each is a failure,
        said as any other record that could not be saved (`_describe`) and retried: only a
        log line said so, and the pass reported them synced (exit 0)."""
        for path in paths:
            self.stats.failed(path, f"cannot record it in the state database: {reason}")

    def release(self) -> None:
        """The end of a pass planned with `hold`: its records committed (after the barrier),
        the entries no longer held, uploads flushed one by one again."""
        self._gone_sizes = None
        try:
            self.store.release(self.name)
        finally:
            if isinstance(self.provider, BatchedDurability):
                self.provider.unbatch()

    # -- deletions and the max_delete guard ---------------------------------------------
    def flush_deletions(self, force: bool = False) -> list[str]:
        """End of a pass: let the deletions it decided through, or hold all of them.

        Returns the paths approved (to be queued again); sets `stats.held` when held.
        """
        pending = self.deletions.pending()
        sides = list(pending.values())
        fault = self.stats.fault
        if fault is None and "local" in sides:
            fault = self._remote_root_gone()
        if fault is None:
            fault = self._emptied_under_upload()
        renamed = self._renamed_remotely(
            [path for path, side in pending.items() if side == "local"]
        )
        reason = hold_reason(
            PassFacts(
                local_deletions=sides.count("local") - renamed,
                remote_deletions=sides.count("remote"),
                synced_files=self._synced_before_pass(pending.keys()) if pending else 0,
                max_delete=self.pair.max_delete,
                root_present=self.root.is_dir(),
                remote_emptied=self.remote_emptied,
                held_before=len(self._held_before & pending.keys()),
                remote_fault=fault,
            )
        )
        with self._lock:  # the next pass weighs its own new files
            self._planned_new.clear()
            self._new_in_pass.clear()
            self._moved_to.clear()
        self._pass_began = time.time()
        if reason is not None and (not force or fault is not None):
            newly = sorted(set(pending) - set(self.stats.held))
            self.stats.set_held(reason, pending, self._waiting_for(set(pending)))
            if newly or reason != self._held_said:
                # Said when it changes, not at every look (twice a second in the daemon).
                self.log.warning("deletions held", reason=reason, count=len(pending))
                self._held_said = reason
            for path in newly:
                if path in self._held_stored:
                    continue  # held and recorded before a restart or reload: logged then
                base = self.store.get(self.name, path)  # the version the deletion would take
                self._oplog(
                    path,
                    f"delete_{pending[path]}",
                    "held",
                    note=reason,
                    size=base.size if base is not None else None,
                    sha256=base.sha256 if base is not None else None,
                )
            self._held_back(set(newly))
            if fault is None:
                self._remember_held(pending.keys())
            # else held for the fault alone: not "held earlier" once the remote answers (then
            # one deletion made during the outage would wait for --force, run after run).
            return []
        self.deletions.approve(list(pending))
        self.stats.set_held(None, {})
        self._held_said = None
        with self._lock:
            still_held = self._held_before - pending.keys()  # not looked at again yet
        self._remember_held(still_held)
        return sorted(pending)

    def answered(self) -> bool:
        """A full look found the pair's root and remote there and answering: its fault is
        cleared, unless what the listing found is the fault (`_emptied_under_upload`). The
        daemon cleared it at every poll, and stamped `last_sync`: a backup pair over an
        emptied bucket showed `idle`, in sync, where `syncd once` said error. Nor a
        `.syncignore` that cannot be read: every pass stops at it, and a poll's listing
        cleared that fault 2 s after the scan set it (nothing synced, `idle`, no error).
        True when a newer `.syncignore` came down meanwhile (`_repair_syncignore`): what
        was listed under the old rules is stale. The filter is as the last pass read it (the
        daemon's watcher reads it again at each change of the file)."""
        mended = self.filter.problem is not None and self._repair_syncignore()
        if self.filter.problem is not None:
            self.stats.set_fault(self.filter.problem)
        elif self._emptied_under_upload() is None:
            self.stats.set_fault(None)
        return mended

    def _repair_syncignore(self) -> bool:
        """The root's `.syncignore` cannot be read, and every pass stops at it; but a newer
        one on the remote (another machine's fix) comes down all the same, where this one
        is a regular file as last synced: one writer's bad line (a Windows-style `build\\`)
        took every machine of the bucket down, and the fix made on the remote never reached
        them. True when it came down (the filter is read again; a listing made before it is
        stale).

        Only that download, straight: no decision that could move the remote's aside, delete
        it or send anything up (nothing is sent while the rules are unknown), none in a dry
        run, none while the pair waits to take a new place. The pair's filter stays as it is
        meanwhile (workers read it), and the remote's file is asked for once, on its own (a
        listing leaves out every path while the rules are unknown); any error leaves the
        fault as it was."""
        if self.plan_only or not self._writes("local") or self.take_place is not None:
            return False
        if PathFilter(self.pair.exclude, None, include=self.pair.include).excluded(SYNCIGNORE):
            return False
        base = self.store.get(self.name, SYNCIGNORE)
        try:
            local = self._stat_local(SYNCIGNORE)
            if base is None or local is None or not _as_recorded(local, base):
                return False
            remote = self.provider.stat(SYNCIGNORE)
        except (OSError, localfs.LocalPathError, ProviderError):
            return False
        if remote.etag == base.remote_etag:
            return False
        plog = self.log.bind(path=SYNCIGNORE)
        plog.info("a newer .syncignore on the remote: taken, as this one cannot be read")
        self.index.put(SYNCIGNORE, remote)
        try:
            outcome = self._download(SYNCIGNORE, local, remote, plog)
        except (OSError, localfs.LocalPathError, ProviderError) as exc:
            plog.warning("the newer .syncignore could not come down", error=_describe(exc))
            return False
        finally:
            self.reload_filter()
        return outcome is Outcome.DONE

    def _emptied_under_upload(self) -> str | None:
        """An upload-only pair whose remote lost every file it synced (a store restored
        without its data, an `rm --recursive`): it never deletes locally, so no deletion
        would show it to the guard, and it sends nothing again by itself (it leaves the
        remote's changes alone). It said "in sync" run after run over an empty backup; the
        pair is in error instead (the fault returned), until a listing finds the files again,
        or the state is rebuilt (a first sync, which sends them all). Not a one-way copy
        (`syncd upload`): it sends what the remote lost again."""
        if not (self.remote_emptied and self.propagate_deletes and not self._writes("local")):
            return None
        message = (
            f"the remote listing came back without any of the files this pair synced "
            f"(emptied, or another bucket?); an upload-only pair does not send them again by "
            f"itself: `syncd state rebuild --pair {self.name}` starts it over"
        )
        if self.stats.fault != message:  # said once, not at every poll
            self.stats.set_fault(message)
            self.log.error("remote emptied", error=message)
        return message

    def _remote_root_gone(self) -> str | None:
        """Before local files are deleted for objects the remote lacks: is the remote root
        itself still there? A bucket deleted (a remote folder unmounted) since the last
        listing makes every object look deleted to a path looked at on its own (a download
        that finds nothing, `syncd retry`), and one by one max_delete lets them through.

        Returns why the deletions wait, or None. Gone, the pair is in error as after a
        failed listing (its next listing that answers clears it). In doubt (no answer within
        `probe_wait`, an error the retries did not get past), they wait for the next pass,
        the pair not at fault: a 503 is no gone bucket. The probe runs in a thread of its
        own, which the daemon waits for a few seconds at most (`probe_wait`): its main loop
        ends its passes, and a hung remote held it (no watchdog ping, a SIGTERM not heard)
        for minutes."""
        answer = _probe_briefly(self.provider, self.retry, self.probe_wait)
        if answer is None:
            return None
        if isinstance(answer, Cancelled):
            return "syncd is stopping"  # held for now; the next pass decides them again
        if isinstance(answer, NotFound):
            self._listing_trouble = f"cannot list {self.pair.remote}: {_describe(answer)}"
            self.stats.set_fault(self._listing_trouble)
            self.log.warning("remote root gone; deletions held", error=_describe(answer))
            return self._listing_trouble
        why = (
            f"no answer in {self.probe_wait:g} s"
            if isinstance(answer, TimeoutError)
            else _describe(answer)
        )
        self.log.warning("remote root not checked; deletions wait", error=why)
        return f"its root could not be checked: {why}; the deletions wait for the next pass"

    def _renamed_remotely(self, deleting: list[str]) -> int:
        """How many of the local files to be deleted (gone from the remote) stand on the
        remote under another name: a rename made on another machine, which `max_delete` must
        not read as deletions (a folder renamed there held every other machine's pair, as a
        local rename, a move, does not hold this one's). Their bytes are not lost, whatever
        the names: the guard is there for deletions that would lose them. The same bytes: by
        the SHA-256 the listing states or the base records for that very version (a folder
        remote's listing states none), else by an S3 ETag of a single-part object (its MD5,
        which a server-side copy keeps); each other object stands for one deletion."""
        if not deleting:
            return 0
        gone: dict[int, list[BaseEntry]] = {}
        for path in deleting:
            entry = self.store.get(self.name, path)
            if entry is not None:
                gone.setdefault(entry.size, []).append(entry)
        listed = [
            (path, info)
            for path, info in self.index.snapshot().items()
            if info is not None and info.size in gone
        ]
        recorded = self._recorded_in_pass(listed)
        renamed = 0
        for path, info in listed:
            candidates = gone[info.size]
            if not candidates:
                continue
            sha256 = info.sha256 or self._recorded_sha256(recorded.get(path), info)
            for entry in candidates:
                if (sha256 is not None and sha256 == entry.sha256) or (
                    info.etag == entry.remote_etag and "-" not in info.etag
                ):
                    candidates.remove(entry)
                    renamed += 1
                    break
        return renamed

    def _recorded_in_pass(self, listed: list[tuple[str, ObjectInfo]]) -> dict[str, BaseEntry]:
        """The base entries recorded in this pass, if any object of `listed` states no
        SHA-256: one query, not a lookup per object (on a folder remote of 20,000 files of
        one size, one deletion cost 20,000 of them at each end of a pass in the daemon)."""
        if all(info.sha256 for _, info in listed):
            return {}
        return self.store.recorded_since(self.name, self._pass_began)

    def _recorded_sha256(self, base: BaseEntry | None, info: ObjectInfo) -> str | None:
        """The SHA-256 the base records for exactly this version of an object (`base`: its
        path's entry, if recorded in this pass): what a listing that states none (a folder
        remote's) is known by once it came down, as a remote rename's new name did earlier
        in the pass. (A copy synced before is no rename: deleting `photos/` beside an older
        `photos-backup/` is a deletion the guard must weigh.)"""
        if base is None or base.remote_etag != info.etag:
            return None
        return base.sha256

    def _synced_before_pass(self, deleting: Iterable[str]) -> int:
        """How many files were synced when this full pass began: a daemon records each new
        file as it lands, so the state's count already holds the pass's new files (3 of 4
        files deleted and 4 new ones made while it was stopped came out as 3 of 8 at its
        start-up pass, let through). A new file the pass itself deletes (a file that steps
        aside for a folder of its name) stays counted, as the deletion is."""
        with self._lock:
            new = len(self._new_in_pass.difference(deleting))
        return max(0, self.store.count(self.name) - new)

    def _first_recorded(self, path: str) -> None:
        """`path` had no base and was copied or recorded now, a move's new name aside."""
        with self._lock:
            if path in self._moved_to:
                self._moved_to.discard(path)
            elif path in self._planned_new:
                self._new_in_pass.add(path)

    def _remember_held(self, paths: Iterable[str]) -> None:
        """Keep what the guard holds (in the state, over a restart) until it is let through,
        or until a look at the path decides no deletion (the file came back)."""
        with self._lock:
            self._held_before = set(paths)
            held = frozenset(self._held_before)
        if held != self._held_stored and not self.plan_only:
            self.store.set_held_deletions(self.name, held)
            self._held_stored = held

    def in_sync(self) -> bool:
        """Nothing standing between the two sides, as far as this pair knows: no failure (a
        refused name included), no deletion held back, no conflict open. The caller knows
        whether work is still queued."""
        return (
            not self.stats.failures
            and self.stats.held_reason is None
            and not self.open_conflicts
            and self.stats.fault is None
        )

    def mark_synced(self) -> None:
        """The pair is in sync now: said in `status`, and kept in the state (at most once a
        minute: the daemon says it at every quiet poll) so a restart still knows when."""
        when = self.stats.mark_synced()
        if when - self._sync_stored >= SYNC_STORED_EVERY_S and not self.plan_only:
            self.store.set_last_sync(self.name, when)
            self._sync_stored = when

    def keep_last_sync(self) -> None:
        """At a clean stop: store the last in-sync time as status shows it (`mark_synced`
        stores it at most once a minute, so a restart showed an older one)."""
        when = self.stats.last_sync
        if when is not None and when != self._sync_stored and not self.plan_only:
            with contextlib.suppress(StateWriteError):
                self.store.set_last_sync(self.name, when)
                self._sync_stored = when

    def has_pending_deletes(self) -> bool:
        return bool(self.deletions.pending())

    def discard_approved(self) -> None:
        """A dry run approves nothing for real."""
        self.deletions.clear()

    # -- one path -------------------------------------------------------------------------
    def sync_path(self, path: str, keep: str | None = None) -> Outcome:
        """Bring `path` in sync, recording the outcome in state and stats. `keep` settles a
        conflict by hand: 'local', 'remote' or 'both'."""
        outcome = self._sync_path(path, keep)
        if outcome is not Outcome.PENDING:  # not a deletion still waiting for the guard
            self._release_waiters(path)
        return outcome

    def is_cancelled(self) -> bool:
        """syncd is stopping, the pair is removed (`cancel`) or paused (`pause`): what its
        transfers ask at every chunk, bandwidth wait and part."""
        return self._halted() or self._paused.is_set()

    def _halted(self) -> bool:
        """syncd is stopping, or the pair is removed: its passes end too (a paused pair's
        go on, recording changes)."""
        return self._stopping() or self._removed.is_set()

    def pause(self) -> None:
        """`syncd pause`: what the pair has in flight stops as at a stop (Cancelled: nothing
        is recorded, a large transfer keeps its parts and record, a small one is done again),
        and its path is queued again, held by the paused queue. Unlike `cancel`, undone by
        `resume`. A retry's wait is not cut short (the pair's listings share the policy and
        go on while paused): the attempt after it stops at its first byte."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def cancel(self) -> None:
        """The pair is being removed: what it has in flight stops (Cancelled, as at a stop),
        and no path is taken up any more, so nothing is recorded after the caller waited for
        its workers (a changed pair's state is forgotten later: `Engine._take_place`). A
        retry's wait ends at once too (the pair's policy, `RetryPolicy.for_pair`)."""
        self._removed.set()
        self.retry.cancel()

    def _sync_path(self, path: str, keep: str | None) -> Outcome:
        if self._removed.is_set():
            return Outcome.DONE
        if self._root_seen is not None and not folder_id.same_folder(self.root, self._root_seen):
            # The root stopped being the synced folder under a running daemon (a disk
            # unmounted): its next poll finds the pair at fault; until the folder is back,
            # nothing is written to it or deleted for what it lacks.
            self.fail(path, self._not_the_folder(), "sync")
            return Outcome.FAILED
        if self.take_place is not None:
            # No pass took the pair's new place yet (its root missing, its remote not
            # listed): a path asked for meanwhile (a retry, a decision by hand, a file event)
            # waits for it, and is never synced against the old place's state.
            try:
                self.check_root()
            except PairFault as exc:
                self.fail(path, str(exc), "sync")
                return Outcome.FAILED
            self.fail(path, "waits for the pair's first pass over its new place", "sync")
            return Outcome.FAILED
        if self.filter.excluded(path):
            return Outcome.DONE
        failure = self.stats.failures.get(path)
        if failure is not None and failure.op == "scan":
            return self._list_again(path)
        refusal = key_refusal(path) if not is_plain_key(path) else None
        if refusal is not None:  # a watcher event for a name the scan refuses
            if os.path.lexists(self.root / path):
                self._refuse(path, localfs.not_a_key(refusal), "local")
            else:  # renamed or deleted: its failure goes with it
                self.stats.clear_refused("local", (), among=[path])
            return Outcome.DONE
        if self.stats.is_refused(path):
            return Outcome.DONE  # the other spelling of a name (not synced, never succeeds)
        if not path.isascii():
            self._refuse_twin(path)
        self.deletions.forget(path)
        with self._lock:
            keep = keep or self.keeps.pop(path, None)
        outcome = self._settle(path, keep)
        if keep is not None and outcome in (Outcome.REQUEUE, Outcome.FAILED):
            # A decision by hand stands until it is carried out: a side that changed under
            # the attempt (a listing older than the other machine's upload) or a failed
            # transfer tries it again, instead of leaving the conflict open without a word.
            with self._lock:
                self.keeps.setdefault(path, keep)
                self.resolutions.pop(path, None)
        return outcome

    def _settle(self, path: str, keep: str | None) -> Outcome:
        """Decide `path` and act on it; `keep` as for `sync_path`."""
        plog = self.log.bind(path=path)
        op = "stat"
        try:
            decision, facts = self._decide(path)
            op = decision.action.value
            if decision.action not in DELETE_SIDE:
                # No deletion to hold any more, nor one to let through: an approval is for
                # the deletion it weighed, and lapses (a later one is weighed afresh).
                self.deletions.take_approval(path)
                with self._lock:
                    self._held_before.discard(path)
            if self.plan_only:
                return self._plan(path, decision, facts)
            if keep is not None:
                # A side may have changed since the conflict was found (its version deleted,
                # say): then the usual rules settle it, and `resolve` must not claim the keep.
                self.resolutions[path] = (
                    f"kept {keep}"
                    if decision.action is Action.CONFLICT
                    else f"no longer a conflict, settled as any change: {decision.reason}"
                )
            outcome = self._act(path, decision, facts, keep, plog)
            if facts.base is None and outcome is Outcome.DONE and decision.action in FIRST_RECORDS:
                self._first_recorded(path)
            if self.large is not None and outcome not in (Outcome.REQUEUE, Outcome.FAILED):
                # Settled, and not by resuming a recorded upload of it (that one would be gone
                # now): the upload is abandoned, aborted in this pass (issue 5).
                self.large.abandon(path)
        except Cancelled:
            return Outcome.REQUEUE
        except localfs.LocalPathError as exc:
            self._skip_once(path, str(exc))
            return Outcome.DONE
        except Exception as exc:
            # Beyond ProviderError and OSError: an error no adapter translated (or a bug) must
            # fail this path, recorded and retried, not kill the worker and leave the path
            # silently unsynced.
            message = _describe(exc)
            if not isinstance(exc, ProviderError | OSError | StateWriteError):
                plog.error("unexpected error", op=op, error=message, where=_where(exc))
            self.fail(path, message, op)
            return Outcome.FAILED
        if outcome is Outcome.DONE:
            if path in self.open_conflicts:
                try:
                    self.store.clear_conflict(self.name, path)
                except StateWriteError as exc:  # still listed as open: settled again later
                    self.fail(path, _describe(exc), "sync")
                    return Outcome.FAILED
                self.open_conflicts.discard(path)
            self.stats.succeeded(path)
        return outcome

    def fail(self, path: str, message: str, op: str) -> None:
        """Record a failed path everywhere a failure shows: the pair's failures (retried
        with backoff), the totals, the log and the audit trail."""
        failure = self.stats.failed(path, message, op=op)
        with contextlib.suppress(StateWriteError):  # the failure itself is what it says
            if not self.plan_only:
                self.store.bump(self.name, {"failures": 1})
        self.log.warning(
            "sync failed",
            path=path,
            op=op,
            error=message,
            attempts=failure.attempts,
            retry_in_s=round(failure.next_try - time.time(), 1),
        )
        self._oplog(path, op, "failed", note=message, said=True)  # what failed, as status says

    def _refuse(self, path: str, reason: str, side: str) -> None:
        """A name that cannot be synced on `side` ('local', 'remote'): a failure of that path
        (named, exit 1, counted once while it stands), never retried: only a rename fixes it.
        Said once, when it first appears.

        A one-way pair never copies from its destination, so a name only there is no
        failure: no run of it could sync or fix it (a push cannot rename a key in the
        bucket), and it must not turn every `syncd upload` into exit 1. It is reported once
        as skipped, as rclone's copy passes over what only the destination holds."""
        if not self._writes("local" if side == "remote" else "remote"):
            self._skip_once(path, reason)
            return
        if self.stats.refused(path, reason, side):
            if not self.plan_only:  # a dry run changes nothing, the state's totals included
                self.store.bump(self.name, {"failures": 1})
            # `op` and `error` as every failure's line says them (`reason` kept for readers
            # of the older line).
            self.log.warning(
                "refused", path=path, side=side, op=REFUSED_OPS[side], error=reason, reason=reason
            )
            self._oplog(path, REFUSED_OPS[side], "failed", note=reason)

    def _refuse_twin(self, path: str) -> None:
        """A file event for `path` while both its NFC and NFD spellings stand on disk (one
        made beside the other under a running daemon): the NFD one is refused, as a scan
        refuses it (`_takes_over`: the one spelled as the path is kept). Only a full scan
        said so, up to an hour later; meanwhile its edits went nowhere, without a word. (Its
        refusal goes with it: `forget_gone_names`.) On a filesystem that ignores
        normalization (APFS, ZFS normalization=, casefold) both spellings find one file:
        no twin."""
        decomposed = unicodedata.normalize("NFD", path)
        if decomposed == path or self.stats.is_refused(decomposed):
            return
        try:
            # Two files, not one name found twice (a filesystem that ignores normalization).
            twins = not os.path.samestat(
                os.lstat(self.root / path), os.lstat(self.root / decomposed)
            )
        except OSError:
            return  # one of them is not there
        if twins:
            self._refuse(
                decomposed,
                f"local name {_spellings(decomposed, path)}, one remote key; only {path!r} is "
                "synced",
                "local",
            )

    def forget_gone_names(self) -> None:
        """Refused local names no longer on disk (renamed or deleted, or their folder was):
        their failures go with them. For the daemon, which scans in full only now and then
        (a renamed folder's events name what is under it, not the folder)."""
        names = self.stats.refused_names("local")
        gone = [name for name in names if not os.path.lexists(self.root / name)]
        if gone:
            self.stats.clear_refused("local", (), among=gone)

    def _excluded_name(self, name: str) -> bool:
        """A refused name the filters leave out (as a file or as a folder): not synced
        anyway, so no failure."""
        return self.filter.excluded(name) or self.filter.excluded(name, is_dir=True)

    def local_path(self, path: str) -> Path:
        """The on-disk location of an NFC path (an NFD-named file keeps its own name)."""
        return localfs.to_local(self.root, self._disk_name(path))

    def _disk_name(self, path: str) -> str:
        """The root-relative name on disk of an NFC path: itself, or its NFD spelling. A
        spelling remembered from a scan holds while that file stands and the NFC one does
        not: renamed to its NFC spelling, or deleted and made anew so, the file was still
        looked for under the old name (taken for gone, its remote copy deleted)."""
        name = self._names.get(path)
        if name is not None and (
            localfs.stands(self.root / path) or not localfs.stands(self.root / name)
        ):
            self._names.pop(path, None)
            name = None
        if name is None and not path.isascii():
            decomposed = unicodedata.normalize("NFD", path)
            if (
                decomposed != path
                and not localfs.stands(self.root / path)
                and localfs.stands(self.root / decomposed)
            ):
                self._names[path] = name = decomposed
        return name or path

    def know_own_downloads(self) -> None:
        """For a daemon: each download says what it puts in place just before the rename, so
        the watcher's event for it is known as its own (`landed_here`)."""
        if self.landed is None:
            self.landed = Landed()
            self.transfers.landing = self.landed.expect

    def _landed_nothing(self, path: str) -> None:
        """A download that did not land (or not as noted): its note goes."""
        if self.landed is not None:
            self.landed.drop(path)

    def landed_here(self, path: str) -> bool:
        """Is a watcher event for `path` only this pair's own download landing there?"""
        if self.landed is None or not self.landed.holds(path):
            return False
        try:
            now = self._stat_local(path)
        except (OSError, localfs.LocalPathError):
            now = None
        return self.landed.is_ours(path, now)

    def _stat_local(self, path: str) -> LocalFile | None:
        return localfs.stat_local(self.root, self._disk_name(path))

    def _decide(self, path: str) -> tuple[Decision, Facts]:
        base = recorded = self.store.get(self.name, path)
        local = self._stat_local(path)
        remote = self.index.get(path)
        while True:
            decision = decide(base, local, remote, self.pair.direction, copy=self.copy)
            if decision.action is Action.HASH_LOCAL and local is not None:
                stat, sha256, md5 = localfs.hash_file(self.local_path(path), with_md5=True)
                local = replace(stat, sha256=sha256, md5=md5)
            elif decision.action is Action.FETCH_REMOTE and remote is not None:
                remote = self.transfers.stat_remote(path, remote.key)
            elif base is recorded and remote is not None and _both_changed(decision, base, local):
                # Before settling it as a change on both sides: is the remote one our own
                # upload that a crash kept from its record? (Only here, so only now a HEAD
                # where the listing does not carry the origin.)
                if not remote.has_metadata and not self.provider.capabilities.listing_has_metadata:
                    remote = self.transfers.stat_remote(path, remote.key)
                    continue
                if not is_cut_off_upload(path, base, remote, self.writer):
                    return decision, Facts(base, local, remote, _etag_of(recorded))
                base = adopted_base(path, remote)
                self.log.info(
                    "an upload of ours that was never recorded (interrupted): taken as the base",
                    path=path,
                )
            elif decision.action is Action.HASH_REMOTE and remote is not None:
                remote = self.transfers.hash_remote(path, remote)
            else:
                return decision, Facts(base, local, remote, _etag_of(recorded))

    def _plan(self, path: str, decision: Decision, facts: Facts) -> Outcome:
        """Dry run: say what would be done, do none of it."""
        if decision.reason == ARCHIVED:
            # The real run fails it (named, exit 1): the plan must not read "in sync".
            self.stats.failed(path, ARCHIVED, op="download")
            return Outcome.FAILED
        if decision.action is Action.NOTHING or (
            decision.action in DELETE_SIDE and not self.propagate_deletes
        ):
            return Outcome.DONE
        if decision.action is Action.CONFLICT and facts.local and facts.remote:
            resolution = self._resolution(facts.local, facts.remote, None)
            how = resolution.reason
            refused = self._one_way_refuses(resolution)
            if refused is not None:
                # Both stay; the version on the pair's own side crosses beside the other as
                # a conflict copy, once (see `_conflict`): that copy is the plan.
                if self._writes("local"):
                    made = self._local_copy_holding(path, facts.remote)
                    beside = "the remote file comes down beside it as a conflict copy"
                else:
                    made = self._remote_copy_holding(path, facts.local)
                    beside = "the local file goes up beside it as a conflict copy"
                if made is not None:
                    return Outcome.DONE  # kept so already: nothing to do
                how = f"{how}; {refused}: {beside}"
            if resolution.winner is Winner.NONE:  # it would wait: the real run's exit 4
                self.stats.conflict(path, decision.reason)
            decision = Decision(Action.CONFLICT, f"{decision.reason}; {how}")
        if (
            decision.action is Action.UPLOAD
            and facts.base is None
            and facts.remote is None
            and facts.local is not None
        ):
            source = self._plan_move(path, facts.local)
            if source is not None:
                decision = Decision(Action.MOVE, f"moved locally from {source}")
        with self._lock:
            if path in self._moved_from:
                return Outcome.DONE  # the source of a planned move: not deleted
            self.planned.append(PlanItem(path, decision))
            if decision.action in DELETE_SIDE:
                self.deletions.hold(path, DELETE_SIDE[decision.action])
        return Outcome.DONE

    def _act(
        self, path: str, decision: Decision, facts: Facts, keep: str | None, plog: Logger
    ) -> Outcome:
        action = decision.action
        local, remote = facts.local, facts.remote
        if action is Action.NOTHING:
            if decision.reason == ARCHIVED:
                # Not in sync, and nothing can be done until someone restores the object: a
                # per-file failure (named, exit 1), looked at again with the retry backoff.
                self.fail(path, ARCHIVED, "download")
                return Outcome.FAILED
            return Outcome.DONE
        if action is Action.FORGET:
            self.store.forget(self.name, [path])
            return Outcome.DONE
        if action is Action.RECORD:
            assert local is not None and remote is not None
            sha256 = local.sha256 or remote.sha256 or (facts.base.sha256 if facts.base else None)
            # Same bytes on both sides: the newer mtime is carried over, onto a side the pair
            # may write (a one-way copy: its destination only).
            if self._writes("remote"):
                stamped = self._stamp_remote(path, local, remote, facts.base, plog)
                if stamped is None:
                    return Outcome.REQUEUE
                remote = stamped
            elif (
                remote.mtime_ns is None
                and not remote.has_metadata
                and remote_state(facts.base, remote) != "same"
            ):
                # New to this pair or restamped on the remote, whose listing does not state
                # the mtime (S3): a pair that writes only the local side looks it up there.
                fresh = self.transfers.stat_remote(path, remote.key)
                if fresh is None or fresh.etag != remote.etag:
                    return Outcome.REQUEUE
                remote = fresh
            if (
                self._writes("local")
                and remote.mtime_ns is not None
                and remote.mtime_ns > local.mtime_ns
            ):
                local = self._carry_mtime(path, local, remote.mtime_ns, sha256)
            self._record(path, local, sha256, remote, None)
            return Outcome.DONE
        if action is Action.UPLOAD:
            assert local is not None
            if facts.base is None and remote is None and self._try_move(path, local, plog):
                return Outcome.DONE
            overwrites = self.provider.capabilities.replaces_archived
            if remote is not None and remote.archived and not overwrites:
                if not self._clear_archived(path, remote, plog):
                    return Outcome.REQUEUE
                remote = None
            return self._upload(path, remote, plog, facts.recorded_etag)
        if action is Action.DOWNLOAD:
            assert remote is not None
            return self._download(path, local, remote, plog)
        if action in DELETE_SIDE:
            if not self.propagate_deletes:
                return Outcome.DONE
            if self.stats.fault is not None or not self.deletions.take_approval(path):
                # Approved before the remote stopped answering, it waits all the same.
                self.deletions.hold(path, DELETE_SIDE[action])
                return Outcome.PENDING
            if action is Action.DELETE_REMOTE:
                assert remote is not None
                return self._delete_remote(path, remote, decision.reason, plog)
            assert local is not None
            return self._delete_local(path, local, decision.reason, plog)
        assert action is Action.CONFLICT and local is not None and remote is not None
        return self._conflict(
            path,
            local=local,
            remote=remote,
            keep=keep,
            why=decision.reason,
            plog=plog,
            over=facts.recorded_etag,
        )

    def _writes(self, side: str) -> bool:
        """May this pair write `side` ('local' or 'remote')? Not the source of a one-way
        pair (`direction`, and so `syncd upload` / `download`)."""
        return self.pair.direction in ("both", "upload" if side == "remote" else "download")

    def _stamp_remote(
        self,
        path: str,
        local: LocalFile,
        remote: ObjectInfo,
        base: BaseEntry | None,
        plog: Logger,
    ) -> ObjectInfo | None:
        """Same content, newer time locally: the remote takes the newer mtime, in place
        (`Provider.set_mtime`, rclone's SetModTime), so a later download restores it. Returns
        the remote as it is now, whose etag is the one to record; None when it moved meanwhile
        (look again). An archived object keeps its mtime: restamping it is a copy (S3) or a
        metadata write (Azure), both refused until it is restored."""
        if remote.archived:
            return remote
        if remote.mtime_ns is None and not remote.has_metadata:
            # A listing without user metadata (S3) does not state the mtime: a HEAD does (as
            # rclone's). The upload time bounds nothing useful: an object states the mtime of
            # its file, from any time before it (skipped when the local mtime was older than
            # the upload, a first sync of equal bytes left the older mtime there for good).
            fresh = self.transfers.stat_remote(path, remote.key)
            if fresh is None or fresh.etag != remote.etag:
                return None
            remote = fresh
        stated = remote.mtime_ns
        if stated is None:
            # Another tool's object states no mtime. Left as it is at a first sync (equal
            # bytes: nothing of it is ours to rewrite); but once synced, a touch of its file
            # is carried over, its upload time standing for the mtime (a download gives the
            # file that time), or the machines sharing it kept their own times for good.
            if base is None or base.remote_etag != remote.etag:
                return remote
            stated = seconds_to_ns(remote.modified)
        if stated >= local.mtime_ns:
            return remote  # not older
        try:
            stamped = self.retry.call(
                partial(self.provider.set_mtime, remote.key, local.mtime_ns, if_match=remote.etag)
            )
        except (PreconditionFailed, NotFound):
            self.transfers.stat_remote(path, remote.key)
            return None
        self.index.put(path, stamped)
        plog.debug("mtime carried to the remote", op="set_mtime", mtime_ns=local.mtime_ns)
        return stamped

    def _carry_mtime(
        self, path: str, local: LocalFile, mtime_ns: int, sha256: str | None
    ) -> LocalFile:
        """Same content, newer time on the remote: the local file takes the newer mtime.
        The stat returned is recorded with `sha256`, so a write landing in the instant of
        the restamp (which takes the remote's mtime with it) must not hide behind it: the
        file is stamped through its open descriptor and hashed again after, and a file
        whose bytes moved is returned with an mtime no file has (the next look compares
        the content, as after `_put_in_place`)."""
        target = self.local_path(path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with localfs.spot_of(self.root, target) as spot:
                fd = os.open(spot.name, flags, dir_fd=spot.fd)
        except FileNotFoundError:
            return local  # gone meanwhile: the next look decides it again
        try:
            if not untouched(local, localfs.local_file(os.fstat(fd))):
                return local
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            stamped = localfs.local_file(os.fstat(fd))
            same = sha256 is not None and localfs.sha256_of_fd(fd) == sha256
            if same and untouched(stamped, localfs.local_file(os.fstat(fd))):
                return stamped
            return replace(stamped, mtime_ns=-1)
        finally:
            os.close(fd)

    # -- conflicts ------------------------------------------------------------------------
    def _resolution(self, local: LocalFile, remote: ObjectInfo, keep: str | None) -> Resolution:
        chosen = KEEP_STRATEGY[keep] if keep is not None else self.pair.conflict
        # An object written by another tool carries no mtime: its upload time stands in.
        remote_ns = remote.mtime_ns
        if remote_ns is None and remote.modified:
            remote_ns = seconds_to_ns(remote.modified)
        return resolve(chosen, local.mtime_ns, remote_ns)

    def _conflict(
        self,
        path: str,
        *,
        local: LocalFile,
        remote: ObjectInfo,
        keep: str | None,
        why: str,
        plog: Logger,
        over: str | None = None,
    ) -> Outcome:
        started = time.monotonic()
        if remote.mtime_ns is None and not remote.has_metadata:
            # The listing carries no mtime; the strategies need it.
            fresh = self.transfers.stat_remote(path, remote.key)
            if fresh is None or fresh.etag != remote.etag:
                return Outcome.REQUEUE
            remote = fresh
        resolution = self._resolution(local, remote, keep)
        outcome_text = resolution.reason
        refused = self._one_way_refuses(resolution)
        if refused is not None:
            if keep is not None:  # asked by hand: say why, the conflict stays open
                plog.warning("conflict not settled", reason=f"--keep {keep}: {refused}")
                self.resolutions[path] = f"not settled: --keep {keep}: {refused}"
                self.stats.conflict(path, why)
                return Outcome.CONFLICT
            # A one-way pair keeps both on the side it may write: the version that stays
            # where it is crosses beside the other one as a conflict copy (reported).
            how = f"{outcome_text}; {refused}"
            if self._writes("local"):
                return self._remote_version_beside(path, remote, plog, why=why, how=how)
            return self._local_version_beside(path, local, plog, why=why, how=how)
        if resolution.winner is Winner.NONE:
            if path not in self.open_conflicts:
                plog.warning("conflict waits for a decision", reason=why)
                self.open_conflicts.add(path)
                self.store.add_conflict(self.name, path, why)
                self._oplog(path, "conflict", "open", note=why)
            self.stats.conflict(path, why)
            return Outcome.CONFLICT
        if resolution.winner is Winner.LOCAL:
            try:
                self._trash_remote(path, remote)
            except (PreconditionFailed, NotFound):
                self.transfers.stat_remote(path, remote.key)
                return Outcome.REQUEUE
            outcome = self._upload(path, remote, plog, over)
        elif resolution.winner is Winner.REMOTE:
            outcome = self._download(path, local, remote, plog, trash_local=True)
        elif resolution.older == "local":
            outcome = self._preserve_local_copy(path, local)
        else:
            outcome = self._preserve_remote_copy(path, remote, plog, over)
        if outcome is Outcome.DONE:
            plog.info("conflict settled", op="conflict", outcome=outcome_text, reason=why)
            strategy = "manual" if keep is not None else self.pair.conflict  # by whom
            self.stats.settle(path, outcome_text, strategy)
            self.store.bump(self.name, {f"conflicts_resolved:{strategy}": 1})
            # The version the path holds now (the remote one still on its way down where
            # the local one was set aside; the synced one, recorded, otherwise).
            kept = self.store.get(self.name, path)
            size, sha256 = (kept.size, kept.sha256) if kept is not None else (None, None)
            if resolution.winner is Winner.BOTH and resolution.older == "local":
                size, sha256 = remote.size, remote.sha256
            self._oplog(
                path,
                "conflict",
                "ok",
                note=outcome_text,
                size=size,
                sha256=sha256,
                seconds=time.monotonic() - started,
            )
        return outcome

    def _left_as_it_is(self, path: str, why: str, outcome: str, plog: Logger) -> Outcome:
        """A conflict this one-way pair may not settle: both versions stay as they are, each
        on its side, said once (each pass decides it again: a later edit may settle it)."""
        if path not in self._kept_apart:
            self._kept_apart.add(path)
            plog.info("conflict left as it is", reason=why, outcome=outcome)
        return Outcome.DONE

    def _one_way_refuses(self, resolution: Resolution) -> str | None:
        """Why a pair with a `direction` may not carry out `resolution`, or None.

        Settling a conflict writes one side or both: the local winner goes up (the remote
        loser to its trash), the remote winner comes down (the local loser to the trash), and
        keeping both renames the older version on its own side. An upload-only pair never
        writes the local side, a download-only pair never the remote: where the strategy's
        outcome would, both versions stay as they are, each on its side (nothing is lost),
        and the path is decided again at each pass (a later edit may settle it)."""
        winner, older = resolution.winner, resolution.older
        if (winner is Winner.REMOTE or (winner is Winner.BOTH and older == "local")) and (
            not self._writes("local")
        ):
            return "an upload-only pair does not write the local side"
        if (winner is Winner.LOCAL or (winner is Winner.BOTH and older == "remote")) and (
            not self._writes("remote")
        ):
            return "a download-only pair does not write the remote side"
        return None

    def _remote_max_path(self) -> int | None:
        """How long a path syncd makes on the remote (a conflict copy, a trash key) may be, in
        bytes: in a bucket, the object key's 1024 less the prefix; a local-folder remote has
        no such limit. (A copy's name fits in a file name's 255 bytes on either side: see
        `conflict_name`.)"""
        url = self.pair.remote_url
        if url.scheme == "file":
            return None
        return MAX_KEY - len(url.prefix.encode("utf-8", "surrogateescape"))

    def _copy_name(self, path: str) -> str:
        now = datetime.now(UTC)
        return conflict_name(
            path,
            now,
            self.host,
            lambda candidate: (
                localfs.stands(self.local_path(candidate)) or self.index.get(candidate) is not None
            ),
            max_path=self._remote_max_path(),
        )

    def _is_copy_of(self, candidate: str, path: str) -> bool:
        return is_conflict_copy_of(candidate, path, self.host, max_path=self._remote_max_path())

    def _local_copy_made(self, path: str, local: LocalFile) -> str | None:
        """A conflict copy of `path` that is a hard link to the file itself: the first half of
        an earlier _preserve_local_copy that was interrupted before the unlink."""
        folder = self.local_path(path).parent
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return None
        prefix = path.rpartition("/")[0]
        for entry in entries:
            candidate = f"{prefix}/{entry.name}" if prefix else entry.name
            if not self._is_copy_of(normalize(candidate), path):
                continue
            with contextlib.suppress(OSError):
                if entry.inode() == local.inode and entry.is_file(follow_symlinks=False):
                    return normalize(candidate)
        return None

    def _remote_copy_made(self, path: str, remote: ObjectInfo) -> str | None:
        """A remote conflict copy of `path` holding exactly the version about to be copied:
        an earlier _preserve_remote_copy was interrupted after the copy. Content is compared by
        the checksums the listing states, else by the SHA-256 a `stat` states (a local-folder
        remote hashes the file); when neither says, no copy is reused (a duplicate copy is
        better than a lost version)."""
        original: str | None = remote.sha256
        for candidate, info in self.index.snapshot().items():
            if info is None or not self._is_copy_of(candidate, path):
                continue
            if info.size != remote.size:
                continue
            if (remote.sha256 and info.sha256 == remote.sha256) or (
                remote.md5 and info.md5 == remote.md5
            ):
                return candidate
            if remote.md5 and info.md5:
                continue  # both stated, and they differ
            if original is None:
                original = self._stated_sha256(remote.key, remote.etag)
                if original is None:
                    return None
            if self._stated_sha256(info.key, info.etag) == original:
                return candidate
        return None

    def _stated_sha256(self, key: str, etag: str | None) -> str | None:
        """The SHA-256 `stat` states for exactly this version of `key`, if any."""
        try:
            fresh = self.retry.call(lambda: self.provider.stat(key))
        except NotFound:
            return None
        return fresh.sha256 if fresh.etag == etag else None

    def _preserve_local_copy(self, path: str, local: LocalFile) -> Outcome:
        """The local version is older: rename it to a conflict copy (which then goes up as a
        new file) and let the remote version come down under the original name."""
        source = self.local_path(path)
        now = _stat_at(self.root, source)
        if now is None or not untouched(local, now):
            return Outcome.REQUEUE
        copy = self._local_copy_made(path, now)
        try:
            if copy is not None:
                # An interrupted run (or a filesystem without RENAME_NOREPLACE) linked the
                # copy and stopped short of the unlink. The name's link goes to the trash,
                # looked at there: never the copy, which its user may have opened since.
                trash.move_to_local_trash(self.root, source, path, datetime.now(UTC), now)
            else:
                copy = self._copy_name(path)
                target = self.local_path(copy)
                localfs.make_parents(self.root, target)
                with (
                    localfs.spot_of(self.root, source) as spot,
                    localfs.spot_of(self.root, target) as aside,
                ):
                    # Create-only (a name that appeared meanwhile is kept), and whatever
                    # stands at the name moves, a write made since the check with it.
                    renames.move_free(spot.fd, spot.name, aside.fd, aside.name)
        except (FileNotFoundError, FileExistsError, trash.WrittenMeanwhile):
            return Outcome.REQUEUE
        self.enqueue(self.name, copy)
        self.enqueue(self.name, path)
        return Outcome.DONE

    def _preserve_remote_copy(
        self, path: str, remote: ObjectInfo, plog: Logger, over: str | None = None
    ) -> Outcome:
        """The remote version is older: copy it server-side to a conflict copy (which then comes
        down as a new file) and send the local version up under the original name."""
        made = self._remote_copy_made(path, remote)
        if made is not None:
            copy = made  # an interrupted run made it already: finish that conflict
        else:
            copy = self._copy_name(path)
            try:
                info = self.retry.call(
                    lambda: self.provider.copy(remote.key, copy, if_match=remote.etag)
                )
            except PreconditionFailed:
                self.transfers.stat_remote(path, remote.key)
                return Outcome.REQUEUE
            self.index.put(copy, info)
        outcome = self._upload(path, remote, plog, over)
        self.enqueue(self.name, copy)
        return outcome

    def _local_file_aside(self, path: str, blocker: str, plog: Logger) -> Outcome:
        """A local file stands where the remote has a folder (`blocker` is on the way to
        `path`, a file to download): it becomes a conflict copy (which goes up as a new
        file), the folder comes down, and the file's own path is decided again."""
        local = _stat_at(self.root, self.local_path(blocker))
        if local is None:
            return Outcome.REQUEUE
        if self._waits_for_deletion(path, [blocker], plog):
            # Unchanged since the last sync and gone from the remote: the remote replaced it
            # by the folder, and this pass deletes it (deletions go last); the folder comes
            # after.
            return Outcome.PENDING
        plog.warning("a file where the remote has a folder: kept as a conflict copy", file=blocker)
        self._oplog(blocker, "conflict", "ok", note="a folder of this name on the remote")
        if self._preserve_local_copy(blocker, local) is Outcome.DONE:
            note = "a folder of this name on the remote: the local file kept as a conflict copy"
            self.stats.settle(blocker, note)  # a line of the run's summary
        return Outcome.REQUEUE  # this download, once the folder can be made

    def _waits_for_deletion(self, path: str, blockers: list[str], plog: Logger) -> bool:
        """Does `path` wait for this pass to delete `blockers` (a file where its folder
        belongs, or the files of a folder of its name)? Their own decisions say: only a
        deletion makes room; anything else leaves them standing, and what is in their way has
        to step aside. A waiting path is neither done nor failed: it is looked at again once
        they have been dealt with (`_release_waiters`), which a deletion the max_delete guard
        holds puts off (exit 4, not 1)."""
        if not blockers or not self.propagate_deletes:
            return False
        # Registered before the decisions are taken, so a blocker deleted in between still
        # releases it.
        with self._lock:
            for each in blockers:
                self._waiters.setdefault(each, set()).add(path)
        if all(self._decide(each)[0].action in DELETE_SIDE for each in blockers):
            plog.info("waits for a deletion of this pass", blocked_by=blockers[0])
            return True
        with self._lock:
            for each in blockers:
                waiting = self._waiters.get(each, set())
                waiting.discard(path)
                if not waiting:
                    self._waiters.pop(each, None)
        return False

    def _release_waiters(self, blocker: str) -> None:
        """`blocker` was dealt with (deleted, or decided otherwise): what waited for it is
        looked at again."""
        with self._lock:
            waiting = self._waiters.pop(blocker, set())
        for path in sorted(waiting):
            self.enqueue(self.name, path)

    def _waiting_for(self, held: set[str]) -> dict[str, str]:
        """What waits for one of the deletions of `held`: path -> the deletion it waits for."""
        with self._lock:
            return {path: b for b, paths in self._waiters.items() if b in held for path in paths}

    def _held_back(self, held: set[str]) -> None:
        """The guard holds the deletions of `held`: what waits for one of them is said to
        wait for it (log, audit trail), not failed."""
        for path, blocker in sorted(self._waiting_for(held).items()):
            self.log.warning("waits for a held deletion", path=path, blocked_by=blocker)
            self._oplog(path, "sync", "held", note=f"waits for the held deletion of {blocker}")

    def _remote_file_aside(self, path: str, remote: ObjectInfo, plog: Logger) -> Outcome:
        """A local folder stands where the remote has a file: the remote file becomes a
        conflict copy (a server-side copy, then the original deleted, both on condition of its
        version), which comes down as a new file, and the folder's files go up."""
        inside = self.scan_local(start=path)
        if self._waits_for_deletion(path, sorted(inside), plog):
            # Every file in it is synced, unchanged, and gone from the remote: the remote
            # replaced the folder by the file, and this pass deletes them (deletions go last);
            # the file comes after. (A bucket may hold the file beside the folder's files:
            # then the folder stays, and the file steps aside.)
            return Outcome.PENDING
        if not self._writes("remote"):
            return self._remote_version_beside(
                path,
                remote,
                plog,
                why="a folder stands where the remote has a file",
                how="a folder of this name here",
            )
        copy = self._remote_copy_made(path, remote)
        try:
            if copy is None:
                copy = self._copy_name(path)
                made = copy
                info = self.retry.call(
                    lambda: self.provider.copy(remote.key, made, if_match=remote.etag)
                )
                self.index.put(copy, info)
            self.retry.call(lambda: self.provider.delete(remote.key, if_match=remote.etag))
        except (PreconditionFailed, NotFound):
            self.transfers.stat_remote(path, remote.key)
            return Outcome.REQUEUE
        self.index.put(path, None)
        self.store.forget(self.name, [path])
        plog.warning("a folder where the remote has a file: the file kept as a conflict copy")
        note = f"a folder of this name here: the remote file kept as {copy}"
        self._oplog(path, "conflict", "ok", note=note)
        self.stats.settle(path, note)  # a line of the run's summary: where the file went
        self.enqueue(self.name, copy)
        for each in inside:
            self.enqueue(self.name, each)
        return Outcome.DONE

    def _remote_version_beside(
        self, path: str, remote: ObjectInfo, plog: Logger, *, why: str, how: str
    ) -> Outcome:
        """A download-only pair, which may not write the remote: where the remote version
        cannot take the path (a local folder stands there, or the local version of a
        conflict is to stay), it comes down as a conflict copy beside it, once: a copy of
        `path` this machine made that holds this very version already is that copy. The copy
        is a file of the local side only (no base is recorded for it: it is never deleted
        for its absence on the remote); what stands at the path and the remote file stay as
        they are. `why` says what clashed, `how` how it was settled, for the summary."""
        made = self._local_copy_holding(path, remote)
        if made is not None:
            return self._left_as_it_is(path, why, f"the remote file is kept here as {made}", plog)
        copy = self._copy_name(path)
        target = self.local_path(copy)
        got = self.transfers.download(
            path, self.root, target, remote, lambda: _stat_at(self.root, target) is None
        )
        if got.result is not Result.OK:
            return Outcome.REQUEUE
        assert got.local is not None
        self.stats.transferred("download", got.moved, got.seconds)
        return self._copy_made(
            path,
            f"{how}: the remote file kept as {copy}",
            got.local.size,
            got.sha256,
            plog,
            why=why,
            seconds=got.seconds,
        )

    def _local_version_beside(
        self, path: str, local: LocalFile, plog: Logger, *, why: str, how: str
    ) -> Outcome:
        """An upload-only pair, which may not write the local side: where the remote version
        of a conflict is to stay, the local one goes up beside it as a conflict copy, once
        (a copy of `path` this machine made that holds this very version already is that
        copy), so the remote holds every version: a backup that missed the local edit would
        lose it with the disk. The copy is a file of the remote side only (no base: it is
        never deleted for its absence here); both versions at `path` stay as they are."""
        made = self._remote_copy_holding(path, local)
        if made is not None:
            return self._left_as_it_is(
                path, why, f"the local file is kept on the remote as {made}", plog
            )
        copy = self._copy_name(path)
        sent = self.transfers.upload(copy, self.local_path(path), None)
        if sent.result is not Result.OK:
            return Outcome.REQUEUE  # changed, or the name was taken meanwhile: look again
        assert sent.local is not None and sent.info is not None
        self.index.put(copy, sent.info)
        self.stats.transferred("upload", sent.moved, sent.seconds)
        return self._copy_made(
            path,
            f"{how}: the local file kept on the remote as {copy}",
            sent.local.size,
            sent.sha256,
            plog,
            why=why,
            seconds=sent.seconds,
        )

    def _copy_made(
        self,
        path: str,
        outcome: str,
        size: int,
        sha256: str | None,
        plog: Logger,
        *,
        why: str,
        seconds: float,
    ) -> Outcome:
        """A one-way pair's conflict copy is made: said (a warning: both versions are kept,
        each where the pair may write), logged, and listed as settled, once."""
        plog.warning("conflict: both versions kept", reason=why, outcome=outcome)
        self._oplog(path, "conflict", "ok", note=outcome, size=size, sha256=sha256, seconds=seconds)
        self.stats.settle(path, outcome)
        self._kept_apart.add(path)
        return Outcome.DONE

    def _remote_copy_holding(self, path: str, local: LocalFile) -> str | None:
        """A remote conflict copy of `path` made here that holds the local version `local`,
        by the SHA-256 the remote states for it; None when there is none (or none says)."""
        candidates = sorted(
            (candidate, info)
            for candidate, info in self.index.snapshot().items()
            if info is not None and info.size == local.size and self._is_copy_of(candidate, path)
        )
        if not candidates:
            return None
        try:
            _, wanted, _ = localfs.hash_file(self.local_path(path))
        except OSError:
            return None
        for candidate, info in candidates:
            if (info.sha256 or self._stated_sha256(info.key, info.etag)) == wanted:
                return candidate
        return None

    def _local_copy_holding(self, path: str, remote: ObjectInfo) -> str | None:
        """A local conflict copy of `path` made here that holds the remote version `remote`,
        by the checksums the remote states (else by size and the modification time a
        download gives the file); None when there is none, or when it was edited since."""
        prefix = path.rpartition("/")[0]
        try:
            entries = sorted(
                os.scandir(self.local_path(prefix) if prefix else self.root),
                key=lambda entry: entry.name,
            )
        except OSError:
            return None
        wanted: str | None = remote.sha256
        asked = False  # for the SHA-256 a `stat` states, once
        for entry in entries:
            candidate = normalize(f"{prefix}/{entry.name}" if prefix else entry.name)
            if not self._is_copy_of(candidate, path):
                continue
            local = _stat_at(self.root, self.local_path(candidate))
            if local is None or local.size != remote.size:
                continue
            if wanted is None and remote.md5 is None and not asked:
                asked, wanted = True, self._stated_sha256(remote.key, remote.etag)
            if wanted is None and remote.md5 is None:
                mtime_ns = remote.mtime_ns
                if mtime_ns is None:
                    mtime_ns = int(remote.modified * 1e9)
                if local.mtime_ns == mtime_ns:
                    return candidate
                continue
            try:
                _, sha256, md5 = localfs.hash_file(
                    self.local_path(candidate), with_md5=wanted is None
                )
            except OSError:
                continue
            if sha256 == wanted or (wanted is None and md5 == remote.md5):
                return candidate
        return None

    def _clear_archived(self, path: str, remote: ObjectInfo, plog: Logger) -> bool:
        """Make way for a local edit over the archived version it was made on, where the
        service refuses to overwrite an archived object (Azure): delete it, on condition of
        its version, so the new one goes up as a create. False when it moved meanwhile (look
        again). Nothing is kept in the remote trash, as for any upload over the base version:
        the edit replaces it (and a copy of an archived object would be a restore). A crash
        before the upload leaves "edited locally, deleted remotely": the edit goes up then."""
        try:
            self.retry.call(partial(self.provider.delete, remote.key, if_match=remote.etag))
        except (PreconditionFailed, NotFound):
            self.transfers.stat_remote(path, remote.key)
            return False
        self.index.put(path, None)
        plog.debug("archived version deleted for its replacement", op="upload")
        return True

    # -- deletions ------------------------------------------------------------------------
    def _trash_remote(self, path: str, remote: ObjectInfo) -> None:
        """Keep a remote version that is about to be replaced or deleted (remote_trash)."""
        if not self.pair.remote_trash:
            return
        when = datetime.now(UTC)

        def taken(key: str) -> bool:
            try:
                self.provider.stat(key)
            except NotFound:
                return False
            return True

        refused: set[str] = set()
        while True:
            key = trash.remote_trash_key(
                path, when, lambda k: k in refused or taken(k), self._remote_max_path()
            )
            try:
                self.retry.call(partial(self.provider.copy, remote.key, key, if_match=remote.etag))
                return
            except InvalidRequest:
                # A folder remote cannot put it there when that trash folder holds a file of
                # one of its folders' names (`x` trashed as a file this second, now `x/y`):
                # the next trash folder of the second, once.
                if refused:
                    raise
                refused.add(key)

    def _delete_remote(self, path: str, remote: ObjectInfo, why: str, plog: Logger) -> Outcome:
        started = time.monotonic()
        try:
            self._trash_remote(path, remote)
            self.retry.call(lambda: self.provider.delete(remote.key, if_match=remote.etag))
        except (PreconditionFailed, NotFound):
            self.transfers.stat_remote(path, remote.key)
            return Outcome.REQUEUE
        self.index.put(path, None)
        # A folder remote's listing states no SHA-256: the base knows the content deleted.
        base = self.store.get(self.name, path) if remote.sha256 is None else None
        self.store.forget(self.name, [path])
        sha256 = remote.sha256 or (base.sha256 if base is not None else None)
        return self._deleted(
            path, "remote", remote.size, sha256, why=why, started=started, plog=plog
        )

    def _delete_local(self, path: str, local: LocalFile, why: str, plog: Logger) -> Outcome:
        started = time.monotonic()
        source = self.local_path(path)
        now = _stat_at(self.root, source)
        if now is None or not untouched(local, now):
            return Outcome.REQUEUE  # edited meanwhile: an edit beats a delete
        base = self.store.get(self.name, path)
        try:
            trash.move_to_local_trash(self.root, source, path, datetime.now(UTC), local)
        except trash.WrittenMeanwhile:
            return Outcome.REQUEUE
        localfs.prune_empty_parents(self.root, source)
        self.store.forget(self.name, [path])
        sha256 = base.sha256 if base is not None else None
        return self._deleted(path, "local", local.size, sha256, why=why, started=started, plog=plog)

    def _deleted(
        self,
        path: str,
        side: str,
        size: int,
        sha256: str | None,
        *,
        why: str,
        started: float,
        plog: Logger,
    ) -> Outcome:
        """A deletion on `side` ('local', 'remote') is done: its audit line, said, counted."""
        op = f"delete_{side}"
        seconds = time.monotonic() - started
        self._oplog(path, op, "ok", size=size, note=why, sha256=sha256, seconds=seconds)
        said = "deleted remotely" if side == "remote" else "deleted locally (kept in trash)"
        plog.info(said, op=op, reason=why)
        self.stats.note_deleted()
        return Outcome.DONE

    def _move_sources(
        self, path: str, local: LocalFile
    ) -> tuple[str, list[tuple[BaseEntry, ObjectInfo]]] | None:
        """The synced files a new local file can have been moved from: gone locally,
        unchanged remotely, with its very bytes (with its SHA-256); None when there is none.
        A one-way copy (`syncd upload`) never deletes, so it moves nothing either."""
        if not self.propagate_deletes:
            return None
        # Size first (one indexed query), then content: only synced files with these very
        # bytes are looked at on disk, so many files of one size cost no stat storm. In a
        # held pass, only the sizes of files its scan found gone: a first upload of 20,000
        # files of one size hashes none of them twice.
        if self._gone_sizes is not None and local.size not in self._gone_sizes:
            return None
        if not self.store.has_size(self.name, local.size):
            return None
        _, sha256, _ = localfs.hash_file(self.local_path(path))
        sources = []
        for entry in self.store.with_content(self.name, local.size, sha256):
            if entry.path == path or not self._gone_locally(entry.path):
                continue
            old = self.index.get(entry.path)
            if old is not None and old.etag == entry.remote_etag:
                sources.append((entry, old))
        return (sha256, sources) if sources else None

    def _gone_locally(self, path: str) -> bool:
        """Is the synced file `path` gone from the local side (a move's source)? Not when
        it cannot be looked at: now a symlink, a named pipe, under a symlinked folder, in
        an unreadable folder. Its problem is its own, reported by its own look: taken up
        here, it failed or skipped the new file in its place, which then never went up."""
        try:
            return self._stat_local(path) is None
        except (localfs.LocalPathError, OSError):
            return False

    def clear_plan(self) -> None:
        """A new pass: no action planned yet."""
        with self._lock:
            self.planned.clear()
            self._moved_from.clear()

    def _plan_move(self, path: str, local: LocalFile) -> str | None:
        """Dry run: the synced file this new one would be moved from (see _try_move), taken
        out of the plan's deletions as the real run takes it; None if it is a plain upload."""
        found = self._move_sources(path, local)
        with self._lock:
            for entry, _ in found[1] if found else ():
                if entry.path in self._moved_from:
                    continue  # another new file of the pass takes that one
                self._moved_from.add(entry.path)
                self.planned[:] = [item for item in self.planned if item.path != entry.path]
                self.deletions.forget(entry.path)
                return entry.path
        return None

    def _try_move(self, path: str, local: LocalFile, plog: Logger) -> bool:
        """A new local file whose content is a synced file that vanished locally (and is
        unchanged remotely) is that file, moved: copy server-side, delete the old key."""
        found = self._move_sources(path, local)
        if found is None:
            return False
        sha256, sources = found
        for entry, old in sources:
            started = time.monotonic()
            try:
                info = self.retry.call(
                    partial(self.provider.copy, old.key, path, if_match=old.etag)
                )
                self.retry.call(partial(self.provider.delete, old.key, if_match=old.etag))
            except (PreconditionFailed, NotFound):
                continue
            info = self._stamp_move(info, local)
            self.deletions.forget(entry.path)
            self.index.put(entry.path, None)
            self.index.put(path, info)
            self.store.forget(self.name, [entry.path])
            self._record(path, local, sha256, info, None)
            with self._lock:
                self._moved_to.add(path)
            self._oplog(
                path,
                "move",
                "ok",
                size=local.size,
                note=f"from {entry.path}",
                sha256=sha256,
                seconds=time.monotonic() - started,
            )
            plog.info("moved", op="move", source=entry.path)
            self.stats.note_moved()
            return True
        return False

    def _stamp_move(self, info: ObjectInfo, local: LocalFile) -> ObjectInfo:
        """The copy a move made, stamped with the moved file's own mtime, as an upload is.
        A copy keeps its source's (S3's metadata, a folder's file time) or states none
        (another tool's object), yet the new name is often a new file with the old bytes
        (`cp a b && rm a`, a `git checkout`, an extract): left so, every machine would
        download it with the old time, and the base recorded next says both sides equal.
        An archived copy keeps its mtime (restamping it is refused until it is restored);
        a copy changed or gone meanwhile is left to the next look, as it stands."""
        if info.mtime_ns == local.mtime_ns or info.archived:
            return info
        with contextlib.suppress(PreconditionFailed, NotFound):
            return self.retry.call(
                partial(self.provider.set_mtime, info.key, local.mtime_ns, if_match=info.etag)
            )
        return info

    # -- transfers ------------------------------------------------------------------------
    def _upload(
        self, path: str, remote: ObjectInfo | None, plog: Logger, over: str | None
    ) -> Outcome:
        """Send the local file over `remote` (None: create-only); `over` is the version the
        state records for the path, which the upload's origin names."""
        if remote is None:
            # A file replacing a folder (or files replacing a file of their folder's name)
            # waits for the deletions that make room. Only a local folder refuses the upload
            # (below); a bucket took the file beside the folder's files, the guard holding
            # their deletion, and another machine settled that clash against the change.
            blockers = self._remote_clashes(path)
            if blockers and self._waits_for_deletion(path, blockers, plog):
                return Outcome.PENDING
        try:
            sent = self.transfers.upload(path, self.local_path(path), remote, over)
        except InvalidRequest:
            # A remote that cannot hold a file and a folder of one name (a local folder)
            # refuses a file under a name it holds as a file.
            blocked = self._upload_blocked(path, self._remote_file_above(path), plog)
            if blocked is None:
                raise
            return blocked
        if sent.result is Result.RACED and self.index.get(path) is None:
            # Refused as taken, yet no file is there: a folder of its name is.
            blocked = self._folder_in_the_way(path, plog)
            if blocked is not None:
                return blocked
        if sent.result in (Result.MOVED, Result.RACED):
            plog.debug("changed under us; looking again", result=sent.result.value)
            return Outcome.REQUEUE
        assert sent.local is not None and sent.info is not None
        if sent.result is Result.TORN:
            # The object holds a mix of versions. Remember it as ours but not in sync (size -1),
            # so the next pass replaces it with the settled file instead of calling it a conflict.
            self.store.put(
                self.name, _base_entry(path, sent.local, None, sent.info)._replace(size=-1)
            )
            plog.info("file changed during upload; sending again")
            return Outcome.REQUEUE
        return self._transferred(
            "upload",
            path,
            sent.local,
            sha256=sent.sha256,
            info=sent.info,
            seconds=sent.seconds,
            moved=sent.moved,
        )

    def _upload_blocked(self, path: str, blockers: list[str], plog: Logger) -> Outcome | None:
        """The remote's `blockers` keep `path` from going up: it waits if this pass deletes
        them, and an upload-only pair leaves the clash as it is; None otherwise (the caller
        goes on as with any refusal: the other side's clash handling makes room)."""
        if self._waits_for_deletion(path, blockers, plog):
            return Outcome.PENDING
        if blockers and not self._writes("local"):
            # A file and a folder of one name: an upload-only pair settles it on the remote,
            # the side it writes, as a download-only pair does on the local side.
            if path.startswith(blockers[0] + "/"):
                # The remote file steps aside as a conflict copy there (as in a two-way
                # pair), and the folder's files go up.
                remote = self.index.get(blockers[0])
                if remote is None:
                    return Outcome.REQUEUE
                return self._remote_file_aside(blockers[0], remote, plog)
            # The remote's folder stays; the local file goes up beside it as a copy.
            local = _stat_at(self.root, self.local_path(path))
            if local is None:
                return Outcome.REQUEUE
            return self._local_version_beside(
                path,
                local,
                plog,
                why="a folder of this name on the remote, a file here",
                how="a folder of this name on the remote",
            )
        return None

    def _folder_in_the_way(self, path: str, plog: Logger) -> Outcome | None:
        """The upload of `path` was refused for a remote folder of its name (a local-folder
        remote cannot hold both). Its files this pass deals with make room (`_upload_blocked`).
        Files the filters leave out never go: syncd deletes nothing it excludes, so the
        upload cannot happen while they are there. A failure that names them, retried as any;
        requeued, it ended after seconds as "kept changing while being synced"."""
        under = self._remote_files_under(path)
        if under:
            return self._upload_blocked(path, under, plog)
        left_out = self._left_out_under(path)
        if not left_out:
            return None  # nothing there now: looked at again
        shown = ", ".join(left_out[:3]) + (
            f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        )
        self.fail(
            path,
            f"the remote folder {path}/ holds files the filters leave out ({shown}); remove "
            "them there, or stop excluding them",
            "upload",
        )
        return Outcome.FAILED

    def _left_out_under(self, path: str) -> list[str]:
        """The files the filters leave out in the remote folder named `path` (the index holds
        none of them): a listing, made only after an upload was refused for that folder. Only
        a local-folder remote refuses it: a bucket holds `d` beside `d/x.tmp`, and there the
        refusal was another writer's."""
        if self.pair.remote_url.scheme != "file":
            return []
        prefix = path + "/"
        found = []
        for info in self.retry.call(lambda: list(self.provider.list())):
            if is_folder_marker(info.key):
                continue
            try:
                key = normalize(check_key(info.key))
            except UnsafeKey:
                continue
            if key.startswith(prefix) and self.filter.excluded(key):
                found.append(key)
        return sorted(found)

    def _remote_file_above(self, path: str) -> list[str]:
        """The file the remote holds where one of `path`'s folders belongs, if any."""
        folders = path.split("/")[:-1]
        for depth in range(1, len(folders) + 1):
            above = "/".join(folders[:depth])
            if self.index.get(above) is not None:
                return [above]
        return []

    def _remote_clashes(self, path: str) -> list[str]:
        """What the remote holds that a file at `path` clashes with: a file where one of its
        folders belongs, or the files of a folder of its name."""
        above = self._remote_file_above(path)
        if above:
            return above
        return self._remote_files_under(path) if self.index.holds_folder(path) else []

    def _remote_files_under(self, path: str) -> list[str]:
        """The files the remote holds in a folder named `path` (a full look at the index:
        only asked when an upload was refused)."""
        prefix = path + "/"
        return sorted(each for each in self.index.snapshot() if each.startswith(prefix))

    def _download(
        self,
        path: str,
        local: LocalFile | None,
        remote: ObjectInfo,
        plog: Logger,
        trash_local: bool = False,
    ) -> Outcome:
        target = self.local_path(path)
        # A file on one side and a folder of the same name on the other (one side made a
        # folder of the name while the other kept the file): neither can cross until the file
        # steps aside, kept as a conflict copy.
        if localfs.is_folder(target):
            return self._remote_file_aside(path, remote, plog)
        try:
            localfs.make_parents(self.root, target)
        except localfs.FileInTheWay as exc:
            return self._local_file_aside(path, exc.path, plog)
        try:
            localfs.check_name_fits(target)
        except OSError:
            # Said without a byte fetched; but an object gone or changed since it was listed
            # is decided again (a retry found only the stale listing's).
            now = self.transfers.stat_remote(path, remote.key)
            if now is None or now.etag != remote.etag:
                return Outcome.REQUEUE
            raise

        def still_local() -> bool:
            now = _stat_at(self.root, target)
            unchanged = (now is None) == (local is None) and (
                now is None or local is None or untouched(local, now)
            )
            if unchanged and trash_local and now is not None:
                # A losing local version is kept, not overwritten.
                try:
                    trash.move_to_local_trash(self.root, target, path, datetime.now(UTC), now)
                except trash.WrittenMeanwhile:
                    return False
            return unchanged

        # A losing local version went to the trash: the download then takes a free name.
        replacing = None if trash_local else local
        try:
            got = self.transfers.download(
                path, self.root, target, remote, still_local, replacing=replacing
            )
        except BaseException:
            self._landed_nothing(path)
            raise
        if got.result is not Result.OK:
            self._landed_nothing(path)
            return Outcome.REQUEUE
        assert got.local is not None and got.info is not None
        return self._transferred(
            "download",
            path,
            got.local,
            sha256=got.sha256,
            info=got.info,
            seconds=got.seconds,
            moved=got.moved,
        )

    # -- bookkeeping ----------------------------------------------------------------------
    def _transferred(
        self,
        op: str,
        path: str,
        local: LocalFile,
        *,
        sha256: str | None,
        info: ObjectInfo,
        seconds: float,
        moved: int,
    ) -> Outcome:
        """Both sides now hold the same bytes: record the base, count it, say so. `moved`:
        the bytes this transfer moved, which the counters and the line's `bytes` count
        (less than the file's `size` when it resumed an interrupted one)."""
        self._record(path, local, sha256, info, (op, seconds), moved=moved)
        self.stats.transferred(op, moved, seconds)
        self.log.info(
            f"{op}ed",
            path=path,
            op=op,
            bytes=moved,
            size=local.size,
            duration_ms=round(seconds * 1000, 1),
        )
        return Outcome.DONE

    def _record(
        self,
        path: str,
        local: LocalFile,
        sha256: str | None,
        remote: ObjectInfo,
        op: tuple[str, float] | None,
        *,
        moved: int | None = None,
    ) -> None:
        record = None
        if op is not None:
            name, seconds = op
            record = OpRecord(
                time.time(),
                self.name,
                path,
                name,
                "ok",
                local.size,
                sha256,
                seconds * 1000,
                moved=moved,
            )
        self.store.put(self.name, _base_entry(path, local, sha256, remote), record)

    def _oplog(
        self,
        path: str,
        op: str,
        result: str,
        *,
        size: int | None = None,
        note: str | None = None,
        sha256: str | None = None,
        seconds: float | None = None,
        said: bool = False,
    ) -> None:
        """One line of the audit trail (`syncd log`); a dry run writes none. `seconds`: how
        long the operation took (None for a record of nothing done: a held deletion, an open
        conflict, a failure). A state that
        cannot be written loses the line, said in the log (at debug level if the line's news
        was `said` there already): what it records is done (or failed, and reported) already,
        and the pass goes on."""
        if self.plan_only:
            return
        path, note = _storable(path), None if note is None else _storable(note)
        record = OpRecord(
            time.time(),
            self.name,
            path,
            op,
            result,
            size=size,
            sha256=sha256,
            duration_ms=None if seconds is None else seconds * 1000,
            error=note,
        )
        try:
            self.store.log(record)
        except StateWriteError as exc:
            (self.log.debug if said else self.log.warning)(
                "audit trail line not saved", path=path, op=op, result=result, error=exc.reason
            )

    def _skip_once(self, path: str, reason: str) -> None:
        """Report a skipped path once per process, not at every pass."""
        if path not in self._warned_skips:
            self._warned_skips.add(path)
            self.log.warning("skipped", path=path, reason=reason)


def _storable(text: str) -> str:
    """`text` as the state can hold it: a file name that is not UTF-8 shown escaped."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return printable(text)
    return text


def _stat_at(root: Path, target: Path) -> LocalFile | None:
    return localfs.stat_local(root, target.relative_to(root).as_posix())


def _etag_of(base: BaseEntry | None) -> str | None:
    return base.remote_etag if base is not None else None


def _both_changed(decision: Decision, base: BaseEntry | None, local: LocalFile | None) -> bool:
    """Does `decision` settle a path changed on both sides since the base: a conflict, or a
    remote edit against a local deletion (which an edit beats)?"""
    return decision.action is Action.CONFLICT or (
        decision.action is Action.DOWNLOAD and local is None and base is not None
    )


def _base_entry(path: str, local: LocalFile, sha256: str | None, remote: ObjectInfo) -> BaseEntry:
    return BaseEntry(
        path=path,
        size=local.size,
        mtime_ns=local.mtime_ns,
        inode=local.inode,
        ctime_ns=local.ctime_ns,
        sha256=sha256,
        remote_etag=remote.etag,
        synced_at=time.time(),
        remote_version=remote.meta_version,
    )


#: How long the end of a pass waits for the remote root's probe (`_remote_root_gone`).
PROBE_WAIT_S = 5.0


def _probe_briefly(
    provider: Provider, retry: RetryPolicy, wait: float | None
) -> BaseException | None:
    """`provider.probe()` through the retry policy, in a thread of its own (a daemon thread:
    one still waiting on a hung remote keeps no process from ending): None when it answered,
    its error, or TimeoutError when it did not finish within `wait` seconds (None: no
    limit)."""
    done = threading.Event()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            retry.call(provider.probe)
            outcome.append(None)
        except Exception as exc:  # handed to the caller, whatever it is
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="syncd-probe", daemon=True).start()
    if not done.wait(wait):
        return TimeoutError()
    return outcome[0]


def _spellings(left: str, kept: str) -> str:
    """Two names that look the same on screen, told apart: which Unicode normalization each
    is in, and the escaped code points of the refused one (so a person knows which file or
    key to rename)."""

    def form(name: str) -> str:
        for nf in ("NFC", "NFD"):
            if unicodedata.normalize(nf, name) == name:
                return nf
        return "mixed"

    return (
        f"{left!r} ({form(left)}, {left!a}) and {kept!r} ({form(kept)}) are one name in "
        "two Unicode normalizations"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StateWriteError):  # the transfer may be done; its record is not
        return f"cannot record it in the state database: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {named}" if (named := _named_file(exc)) else "")
    if isinstance(exc, ProviderError | OSError):
        return str(exc) or type(exc).__name__
    # An untranslated error's text may quote a request (a signed URL, a header): only its
    # type is shown.
    return f"unexpected {type(exc).__module__}.{type(exc).__name__}"


def _named_file(exc: OSError) -> str | None:
    """The file an OSError is about, as the user knows it: a rename or link from syncd's own
    temp file names its target (`File name too long: <the 300-character name>`), not the
    temp name, which the user never sees."""
    name = exc.filename
    if isinstance(name, str) and is_own_temp(os.path.basename(name)):
        return exc.filename2 if isinstance(exc.filename2, str) else None
    return name if name else None


def _where(exc: BaseException) -> str:
    """file:line where an unexpected error was raised, for the bug report."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def _as_recorded(local: LocalFile, base: BaseEntry) -> bool:
    """Is `local` the very file the base records (not written since it was synced)?"""
    return (local.size, local.mtime_ns, local.inode) == (base.size, base.mtime_ns, base.inode) and (
        not base.ctime_ns or local.ctime_ns == base.ctime_ns
    )

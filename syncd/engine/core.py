"""The engine: pairs, their providers, the work queue and the workers, behind one object.

Both faces of syncd use it: `syncd once` (plan every pair, drain, report) and the daemon (which
adds a watcher, a poller and a control socket around the same engine).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from syncd import __version__, logs
from syncd.config import Config, ConfigError, PairConfig, load_config, load_config_dict
from syncd.config.environment import config_from_env
from syncd.config.model import state_read_only
from syncd.daemon.lock import InstanceLock, instance_lock
from syncd.engine.debounce import Debouncer, Pending
from syncd.engine.multipart import Meter, PartSettings
from syncd.engine.oneway import (
    Direction,
    Patterns,
    in_script_words,
    inherited_options,
    inherited_settings,
    one_way_config,
)
from syncd.engine.progress import InFlight
from syncd.engine.retry import RetryPolicy
from syncd.engine.stats import Failure
from syncd.engine.syncer import Outcome, PairFault, PairSyncer, PlanItem
from syncd.engine.throttle import Limits, TransferDirection, consume_all
from syncd.engine.workers import WorkerPool
from syncd.engine.workqueue import Key, WorkQueue
from syncd.exitcodes import EXIT_ATTENTION, EXIT_FAILED, EXIT_OK
from syncd.providers import open_provider
from syncd.providers.base import BatchedDurability, Provider
from syncd.providers.errors import InvalidRequest, ProviderError
from syncd.providers.options import same_server, served_by, served_by_before
from syncd.providers.url import RemoteURLError
from syncd.state import StateError, StateStore, StateWriteError, sqlite_path

log = structlog.get_logger("syncd.engine")

#: A path that keeps moving under us (written to while we read it) is retried this often,
#: with a growing pause, before it counts as failed for this pass.
MAX_REQUEUES = 8
REQUEUE_BASE_DELAY = 0.25
#: How long removing a pair waits for its transfers to stop (they stop at their next chunk;
#: a request hung on a dead remote ends at its timeout).
REMOVE_WAIT_S = 60.0


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ConflictOutcome:
    """A conflict one pass met: how it was settled, or that it waits for a person."""

    pair: str
    path: str
    strategy: str
    outcome: str  # what the strategy did, or "open: …" for one waiting for a decision


@dataclass
class PairReport:
    name: str
    strategy: str = ""
    uploaded: int = 0
    downloaded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    deleted: int = 0  # on either side, each kept in its side's trash
    moved: int = 0  # local renames carried out as server-side moves
    failures: dict[str, Failure] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    held_reason: str | None = None
    #: Paths that wait for a held deletion (a file/folder swap): path -> the deletion's path.
    waiting: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    planned: list[PlanItem] = field(default_factory=list)


@dataclass
class Report:
    """What one reconciliation did, per pair; `exit_code` follows the contract. The totals
    below add up every pair, for scripts that want one number."""

    pairs: list[PairReport]
    elapsed_s: float

    @property
    def files_up(self) -> int:
        return sum(p.uploaded for p in self.pairs)

    @property
    def files_down(self) -> int:
        return sum(p.downloaded for p in self.pairs)

    @property
    def bytes_up(self) -> int:
        return sum(p.bytes_up for p in self.pairs)

    @property
    def bytes_down(self) -> int:
        return sum(p.bytes_down for p in self.pairs)

    @property
    def speed_bps(self) -> float:
        """Bytes moved (both directions) per second of the whole pass."""
        return (self.bytes_up + self.bytes_down) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def failures(self) -> list[Failure]:
        return [f for p in self.pairs for f in sorted(p.failures.values(), key=lambda f: f.path)]

    @property
    def conflicts(self) -> list[ConflictOutcome]:
        found = []
        for p in self.pairs:
            for path, outcome in sorted(p.settled.items()):
                found.append(ConflictOutcome(p.name, path, p.strategy, outcome))
            for path, reason in sorted(p.conflicts.items()):
                found.append(ConflictOutcome(p.name, path, p.strategy, f"open: {reason}"))
        return found

    @property
    def held_deletions(self) -> dict[str, dict[str, str]]:
        """pair -> {path: side} of the deletions a safety guard held back."""
        return {p.name: dict(p.held) for p in self.pairs if p.held}

    @property
    def exit_code(self) -> int:
        if any(p.failures or p.fault for p in self.pairs):
            return EXIT_FAILED
        if any(p.conflicts or p.held_reason for p in self.pairs):
            return EXIT_ATTENTION
        return EXIT_OK


class Engine:
    """The sync engine: every pair of a config, its workers, its state. The CLI and the daemon
    are built on it, and so are scripts (`from syncd import Engine`):

        with Engine.from_config_file("syncd.yaml") as engine:
            report = engine.sync_once()
            print(report.files_up, report.bytes_up, report.failures)
    """

    def __init__(
        self, config: Config, store: StateStore | None = None, lock: InstanceLock | None = None
    ) -> None:
        self.config = config
        if logs.engine_may_configure():
            # A script's engine logs as the config says, on stderr: structlog's own default
            # printed console lines on stdout, mixed into the script's output, whatever `log:`
            # said. Its own lines only: the script's logging (root handlers, level, warnings)
            # is the script's. The CLI sets logging up itself (with -v / -q) before it makes
            # an engine; a script's later engine applies its own `log:`.
            logs.configure(config.log.level, config.log.format, take_root=False)
        self.started = time.monotonic()
        #: Held by a pass (`sync_once`, `retry_failed`, `resolve`) and by `close()`: one
        #: engine runs one pass at a time. Two threads' passes shared its queue, counters and
        #: dry-run switch: each reported the other's work, and a dry run beside a real pass
        #: made the real one plan only, exit 0. A `close()` from another thread waits for the
        #: pass it cuts short, which lets go of the state before the lock does.
        self._pass_lock = threading.RLock()
        #: Did `close()` cut the pass short (a worker left a path undone, or the workers
        #: stopped before the pairs were through)? Cleared as each pass begins.
        self._interrupted = False
        #: Held while this engine lives (the constructors below take it): one syncd per state.
        self._instance_lock = lock
        self.store = store if store is not None else StateStore(config.state)
        self.queue = WorkQueue()
        self.stopping = threading.Event()
        self._closed = False
        self.retry = RetryPolicy(
            config.retry.attempts, config.retry.max_seconds, stopping=self.stopping
        )
        self.syncers: dict[str, PairSyncer] = {}
        #: Every transfer in progress, for `status` (bytes done, total, speed).
        self.inflight = InFlight()
        #: bandwidth_limit / upload_limit / download_limit: buckets shared by every worker.
        self.limits = Limits.from_config(config)
        #: Pairs whose next end-of-pass deletion check may pass the max_delete guard.
        self.force: set[str] = set()
        #: Pairs that processed work since their last end of pass.
        self.touched: set[str] = set()
        #: Pairs whose deletions went through in the current `sync_once` (see _second_chance).
        self._deleted_in_pass: set[str] = set()
        self._requeues: dict[Key, int] = {}
        self._requeue_lock = threading.Lock()
        #: Set each time a requeue is put back on the queue: `_drain` waits on it.
        self._requeued = threading.Event()
        self.delayed: Debouncer[Key] = Debouncer(self._requeue_due, name="requeue")
        self.delayed.start()
        try:
            for index, pair in enumerate(config.pairs):
                try:
                    self.add_pair(pair)
                except (ProviderError, RemoteURLError) as exc:
                    raise _at_pair(index, pair.name, exc) from exc
        except BaseException:
            # What the pairs before opened (clients, the state, the requeue thread) goes with
            # the engine that never was; the instance lock stays the caller's to release.
            self._instance_lock = None
            self.close()
            raise

    # -- construction, for scripts ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: Config) -> Engine:
        """An engine on `config` that holds the instance lock of its state until `close()`
        (AlreadyRunning if a daemon or another engine uses that state)."""
        lock = instance_lock(config.state, Path(config.socket))
        lock.acquire()
        try:
            return cls(config, lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def from_config_file(cls, path: str | os.PathLike[str]) -> Engine:
        """From a YAML file (ConfigError names the key at fault)."""
        return cls.from_config(load_config(Path(path)))

    @classmethod
    def from_config_dict(cls, data: Mapping[str, Any], *, expand_env: bool = True) -> Engine:
        """From the same structure as the YAML file, as a dict."""
        return cls.from_config(load_config_dict(data, "<dict>", expand_env=expand_env))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Engine:
        """One pair from SYNCD_LOCAL, SYNCD_REMOTE, … (ConfigError names the variable)."""
        return cls.from_config(config_from_env(os.environ if environ is None else environ))

    # -- one-way copies -------------------------------------------------------------------
    def upload(
        self,
        local_dir: str | os.PathLike[str],
        remote_url: str,
        *,
        exclude: Patterns = (),
        include: Patterns = (),
        dry_run: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> Report:
        """Copy LOCAL_DIR to REMOTE_URL like `syncd upload` (nothing is deleted). `options`
        (endpoint, credentials, …) default to those of the engine's pair on the same bucket,
        else on the same service."""
        return self._one_way(
            "upload",
            Path(local_dir),
            remote_url,
            filters=(exclude, include),
            dry_run=dry_run,
            options=options,
        )

    def download(
        self,
        remote_url: str,
        local_dir: str | os.PathLike[str],
        *,
        exclude: Patterns = (),
        include: Patterns = (),
        dry_run: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> Report:
        """Copy REMOTE_URL into LOCAL_DIR like `syncd download` (nothing is deleted); the
        `options` as for `upload`."""
        return self._one_way(
            "download",
            Path(local_dir),
            remote_url,
            filters=(exclude, include),
            dry_run=dry_run,
            options=options,
        )

    def _one_way(
        self,
        direction: Direction,
        local: Path,
        remote_url: str,
        *,
        filters: tuple[Patterns, Patterns],
        dry_run: bool,
        options: Mapping[str, Any] | None,
    ) -> Report:
        """A one-way copy; its ConfigError names the argument at fault as the script wrote
        it (`Engine.upload: exclude: …`), not as the command line's config does."""
        self._require_open()
        try:
            config = one_way_config(
                direction,
                local,
                remote_url,
                exclude=filters[0],
                include=filters[1],
                settings=inherited_settings(self.config),
                options=inherited_options(self.config, remote_url) if options is None else options,
            )
            return run_one_way(config, dry_run=dry_run)
        except ConfigError as exc:
            raise in_script_words(exc, direction) from None

    def open_remote(self, pair: PairConfig) -> Provider:
        """The pair's remote, opened as `add_pair` would: RemoteURLError or InvalidRequest
        (an AWS profile that is not there, a bad region) for what the config check cannot
        see (the engine's constructor raises those as ConfigError, naming the pair's key).
        A reload opens a changed pair's remote before it lets go of the running one."""
        return open_provider(pair.remote, pair.options, workers=self.config.workers)

    def add_pair(self, pair: PairConfig, provider: Provider | None = None) -> PairSyncer:
        """Start syncing `pair` on `provider` (its remote, from `open_remote`; opened here
        if None). The provider is closed if the pair cannot be added."""
        if provider is None:
            provider = self.open_remote(pair)
        try:
            take_place = self._take_place(pair)
            syncer = PairSyncer(
                pair,
                provider,
                self.store,
                # The pair's own: its removal ends its retry waits (`PairSyncer.cancel`).
                retry=self.retry.for_pair(),
                is_cancelled=self.stopping.is_set,
                enqueue=self.queue.put,
                long_running=self.queue.long_running,
                parts=PartSettings(
                    threshold=self.config.multipart_threshold,
                    part_size=self.config.part_size,
                    concurrency=self.config.part_concurrency,
                ),
                inflight=self.inflight,
                pace_up=self._pace("upload"),
                pace_down=self._pace("download"),
            )
        except BaseException:
            provider.close()  # the state could not take the pair (a full disk, say)
            raise
        syncer.take_place = take_place
        self.syncers[pair.name] = syncer
        self.queue.limit(pair.name, provider.capabilities.max_transfers)
        return syncer

    def _take_place(self, pair: PairConfig) -> Callable[[], None] | None:
        """A pair's state (its base, held deletions, open conflicts, writer id) describes one
        local root and one remote. When the config names another one under the same pair
        name, that state is forgotten, as `syncd state rebuild --pair` does: the next pass is
        a first sync, which compares both sides by content and deletes nothing. Kept, the old
        base made the new, empty remote (or local root) look like everything was deleted:
        the pair was held for good, and `--force` would have deleted the files.

        Not here, though: returns what forgets it, which the pair's syncer runs once a pass
        has checked the new root and listed the new remote
        (`PairSyncer._take_place_listed`). An engine made with a mistyped `local` or
        `remote` (a script's that never synced, a `syncd run` showing the pair in error)
        forgot it at once, and the next pass on the right place was a first sync: what was
        deleted since the last sync came back."""
        place = pair_place(pair)
        recorded = self.store.place(pair.name)
        if recorded == place:
            return None
        if recorded is None or same_place(recorded, pair):
            self.store.set_place(pair.name, place)  # a new pair, or as an older syncd wrote it
            return None
        return partial(self._forget_place, pair.name, recorded, place)

    def _forget_place(self, name: str, recorded: str, place: str) -> None:
        log.warning(
            "the pair's local or remote changed: its state is forgotten; the next pass is "
            "a first sync",
            pair=name,
            was=recorded,
            now=place,
        )
        self.store.forget(name)
        self.store.set_place(name, place)

    def write_behind(self, name: str) -> None:
        """For a daemon: a pair whose remote makes uploads durable in batches (a local folder)
        stops flushing each upload, and its records wait for the shared barrier instead
        (`StateStore.defer`). A flush per file cost a burst of new files most of its time
        (bench/README finding 30). A record that cannot be committed makes its path a
        failure, retried like any other."""
        provider = self.syncers[name].provider
        if isinstance(provider, BatchedDurability):
            self.store.defer(
                name, provider.batch(each=True), on_lost=self.syncers[name].records_lost
            )

    def _pace(self, direction: TransferDirection) -> Meter:
        """What a transfer calls per chunk to stay under the limits. The limits are looked up
        at each call: a reload that changes them applies to transfers already running."""
        cancelled = self.stopping.is_set

        def pace(n: int) -> None:
            buckets = self.limits.for_direction(direction)
            if buckets:
                consume_all(buckets, n, cancelled)

        return pace

    def apply_live_settings(self, new: Config) -> list[str]:
        """Take on a reloaded config's top-level settings that can change under a running
        engine (LIVE_SETTINGS: the bandwidth limits, retries, log retention); returns the
        names of the changed ones that need a restart (RESTART_SETTINGS)."""
        self.limits = Limits.from_config(new)
        self.retry.attempts = new.retry.attempts
        self.retry.max_seconds = new.retry.max_seconds
        if new.log != self.config.log:  # logs.configure ran: loggers bound before keep the old
            for syncer in self.syncers.values():
                syncer.bind_log()
        self.config = self.config.model_copy(
            update={key: getattr(new, key) for key in LIVE_SETTINGS}
        )
        return [key for key in RESTART_SETTINGS if getattr(new, key) != getattr(self.config, key)]

    def order_pairs(self, names: list[str]) -> None:
        """Put the pairs in `names`' order (the config's: a pair added anew went last). A
        new dict, bound at once: a reader sees the old order or the new, never a gap."""
        self.syncers = {name: self.syncers[name] for name in names if name in self.syncers}

    def remove_pair(self, name: str) -> None:
        """Stop syncing a pair: drop its queued work, stop what it has in flight (a retry's
        wait ends at once) and wait for that to end, then close its provider. Its state
        stays, so adding it back later is not a first sync. A pair changed by a reload is
        added anew right after, and its state forgotten if its place changed (once a pass has
        found the new one usable): an upload of the old place recorded after that would be a base of
        the new place, its file 'deleted locally' there (`_take_place`)."""
        syncer = self.syncers.pop(name, None)
        self.queue.drop_pair(name)
        if syncer is not None:
            syncer.cancel()
            if not self.queue.wait_landed(name, REMOVE_WAIT_S):
                log.warning("a removed pair's transfers are still running", pair=name)
        if syncer is not None and isinstance(syncer.provider, BatchedDurability):
            # An upload still running flushes itself; the last barrier flushes the others
            # before their records are committed.
            syncer.provider.unbatch()
        self.store.undefer(name)
        if syncer is not None:
            syncer.provider.close()

    # -- the worker side ------------------------------------------------------------------
    def handle(self, key: Key) -> None:
        """Process one queued path; called by worker threads."""
        pair, path = key
        syncer = self.syncers.get(pair)
        if syncer is None:
            return
        if self.stopping.is_set():
            self._interrupted = True  # left undone: the pass is cut short
            return
        self.touched.add(pair)
        outcome = syncer.sync_path(path)
        if outcome is Outcome.REQUEUE and syncer.paused:
            # Stopped by `syncd pause`: held by the paused queue until `resume`. Counted as a
            # path that kept changing, the ninth pause of one big transfer failed it.
            self.queue.put(pair, path)
        elif outcome is Outcome.REQUEUE:
            with self._requeue_lock:
                attempts = self._requeues.get(key, 0) + 1
                self._requeues[key] = attempts
            if attempts > MAX_REQUEUES:
                with self._requeue_lock:
                    self._requeues.pop(key, None)
                syncer.fail(path, "kept changing while being synced; will try again later", "sync")
            else:
                self.delayed.touch(key, REQUEUE_BASE_DELAY * attempts)
        else:
            with self._requeue_lock:
                self._requeues.pop(key, None)

    def _requeue_due(self, key: Key, _pending: Pending) -> None:
        self.queue.put(*key)
        self._requeued.set()

    def pair_busy(self, pair: str) -> bool:
        """Work queued, in flight or waiting to be retried for this pair."""
        return not self.queue.idle(pair) or any(k[0] == pair for k in self.delayed.pending_keys())

    def end_of_pass(self, pair: str, dry_run: bool = False) -> None:
        """A pair went quiet: let its pending deletions through the guard (queueing them), and
        note the time when it is fully in sync."""
        syncer = self.syncers[pair]
        approved = syncer.flush_deletions(force=pair in self.force)
        self.force.discard(pair)
        if dry_run:
            syncer.discard_approved()
            return
        for path in approved:
            self.queue.put(pair, path)
        if approved:
            self._deleted_in_pass.add(pair)
        if not approved and syncer.in_sync():
            syncer.mark_synced()

    # -- one reconciliation ---------------------------------------------------------------
    def plan(self, pair: str) -> list[PlanItem]:
        with self._pass_lock:  # a first pass's clean-up, never beside a running pass
            self._require_open()
            return self.syncers[pair].plan(first_pass=True)

    def sync_once(
        self, pair: str | None = None, dry_run: bool = False, force: bool = False
    ) -> Report:
        """Reconcile every (or one) pair with the configured workers, then report.

        A dry run goes through exactly the same decisions, with every action recorded instead
        of carried out, so the real run right after does what it printed."""
        with self._pass_lock:
            self._require_open()
            if not dry_run:
                self._require_writable("sync_once")
            if pair is not None and pair not in self.syncers:
                raise ValueError(f"no pair named {pair!r} in the config")
            return self._sync_once(pair, dry_run, force)

    def _sync_once(self, pair: str | None, dry_run: bool, force: bool) -> Report:
        started = time.monotonic()
        self._interrupted = False
        names = [pair] if pair is not None else list(self.syncers)
        reports: dict[str, PairReport] = {}
        before = {name: self._begin_pass(name) for name in names}
        try:
            for name in names:
                syncer = self.syncers[name]
                syncer.plan_only = dry_run
                report = reports[name] = PairReport(name, strategy=syncer.pair.conflict)
                try:
                    planned = syncer.plan(first_pass=not dry_run, hold=True)
                except PairFault as exc:
                    report.fault = str(exc)
                    syncer.stats.set_fault(str(exc))
                    log.error("pair cannot be synced", pair=name, error=str(exc))
                    continue
                # Its root and its remote answer (as the daemon's scan clears it): an engine
                # kept by a script reported an earlier pass's fault at every pass after it.
                syncer.answered()
                if force:
                    self.force.add(name)
                for item in planned:
                    self.queue.put(name, item.path)
            self._deleted_in_pass.clear()
            self._drain([n for n in names if reports[n].fault is None], dry_run)
            self._second_chance(names, dry_run)
        finally:
            for name in names:
                self.syncers[name].release()
        for name, report in reports.items():
            syncer = self.syncers[name]
            syncer.plan_only = False
            self._fill(report, before[name])
            self._cut_short(report)
            # What a guard holds back is not done: the plan leaves it to the held lines.
            report.planned = sorted(
                (
                    item
                    for item in syncer.planned
                    if item.path not in report.held and item.path not in report.waiting
                ),
                key=lambda item: item.path,
            )
        if not dry_run:
            self.prune_oplog()
        return Report(list(reports.values()), time.monotonic() - started)

    def _cut_short(self, report: PairReport) -> None:
        """A pass `close()` stopped from another thread is not "in sync": its workers left
        the rest of the queue (or its deletions), which no failure names. The pair is at
        fault (exit 1). One that was through when close() came is not."""
        if self._interrupted and report.fault is None:
            report.fault = "pass cut short: the engine was closed; the next pass goes on"

    def _require_writable(self, call: str) -> None:
        """A state the URL opens read-only (`mode=ro`) cannot take a pass's records: the
        pass went through (files uploaded) with exit 0 and nothing recorded, as the CLI's
        commands that write refuse it (exit 2). A dry run, which records nothing, may."""
        read_only = state_read_only(self.config.state)
        if read_only is not None:
            raise ConfigError(
                f"Engine.{call}",
                f"{read_only} opens the state read-only, and this call writes it",
                key="state",
            )

    def _second_chance(self, names: list[str], dry_run: bool) -> None:
        """Deletions go last in a pass (the guard weighs them all first). What a deletion
        makes room for (a file replaced by a folder of its name, or the other way round)
        waits for it and is queued again after it (PairSyncer._waits_for_deletion); what
        failed for want of that room all the same (a remote that changed since its listing)
        is tried once more where the pass deleted something."""
        again = [
            n for n in names if n in self._deleted_in_pass and self.syncers[n].stats.retryable()
        ]
        if dry_run or not again:
            return
        for name in again:
            for path in self.syncers[name].stats.retryable():
                self.queue.put(name, path)
        self._drain(again, dry_run=False)

    def retry_failed(self) -> Report:
        """Try every failed path again now (what `syncd retry` asks of the daemon). A refused
        name is not tried (only a rename fixes it): it stays a failure in the report."""
        with self._pass_lock:
            self._require_open()
            self._require_writable("retry_failed")
            started = time.monotonic()
            self._interrupted = False
            names = [n for n, s in self.syncers.items() if s.stats.failures]
            before = {name: self._begin_pass(name) for name in names}
            for name in names:
                for path in self.syncers[name].stats.retryable():
                    self.queue.put(name, path)
            self._drain(names, dry_run=False)
            reports = []
            for name in names:
                report = PairReport(name, strategy=self.syncers[name].pair.conflict)
                self._fill(report, before[name])
                self._cut_short(report)
                reports.append(report)
            return Report(reports, time.monotonic() - started)

    def _begin_pass(self, name: str) -> tuple[int, int, int, int, int, int]:
        """What a pass's report counts from: the pair's totals before it (one engine may run
        many passes), and no settled conflicts or planned actions yet."""
        syncer = self.syncers[name]
        syncer.clear_plan()  # a dry run's plan is this pass's alone
        stats = syncer.stats
        stats.settled.clear()
        return (
            stats.uploaded,
            stats.downloaded,
            stats.bytes_up,
            stats.bytes_down,
            stats.deleted,
            stats.moved,
        )

    def _fill(self, report: PairReport, before: tuple[int, int, int, int, int, int]) -> None:
        stats = self.syncers[report.name].stats
        report.uploaded = stats.uploaded - before[0]
        report.downloaded = stats.downloaded - before[1]
        report.bytes_up = stats.bytes_up - before[2]
        report.bytes_down = stats.bytes_down - before[3]
        report.deleted = stats.deleted - before[4]
        report.moved = stats.moved - before[5]
        report.failures = dict(stats.failures)
        report.conflicts = dict(stats.conflicts)
        report.settled = dict(stats.settled)
        report.held, report.held_reason = dict(stats.held), stats.held_reason
        report.waiting = dict(stats.waiting)
        report.fault = report.fault or stats.fault

    def status(self) -> dict[str, Any]:
        """Every pair as the API (and, with the daemon's queue facts, `syncd status`) shows
        it: files in sync, failures, conflicts, held deletions, and totals since this engine
        started and since the state was created."""
        counts = self.queue.counts()
        pairs = []
        for name, syncer in self.syncers.items():
            summary = self.pair_summary(name)
            queued, in_flight = counts.get(name, (0, 0))
            pairs.append(
                {
                    "name": name,
                    "state": _api_state(syncer, queued + in_flight),
                    "local": summary.pop("local"),
                    "remote": summary.pop("remote"),
                    "queued": queued,
                    "in_flight": in_flight,
                    **summary,
                }
            )
        return {
            "state": "closed" if self._closed else "running",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "version": __version__,
            "pairs": pairs,
            "transfers": [asdict(view) for view in self.inflight.snapshot()],
        }

    def pair_summary(self, name: str) -> dict[str, Any]:
        syncer = self.syncers[name]
        stats = syncer.stats
        # A pair in error tries its failures again at the poll that finds the remote back.
        waits_for = "the remote" if stats.fault is not None else None
        failures = sorted(stats.failures.values(), key=lambda f: f.path)[:100]
        return {
            "name": name,
            "local": str(syncer.root),
            "remote": syncer.pair.remote,
            "synced_files": self.store.count(name),
            "failed": len(stats.failures),
            "failures": [f.as_json(waits_for) for f in failures],
            "conflicts": len(stats.conflicts),
            "conflict_paths": sorted(stats.conflicts)[:100],
            "last_sync": _iso(stats.last_sync),
            "last_error": stats.fault or stats.last_error,
            "held": len(stats.held),
            "held_reason": stats.held_reason,
            "waiting": len(stats.waiting),
            "uploaded": stats.uploaded,
            "downloaded": stats.downloaded,
            "deleted": stats.deleted,
            "moved": stats.moved,
            "totals": {"since_start": stats.totals(), "since_install": self._installed(name)},
        }

    def _installed(self, name: str) -> dict[str, object]:
        counters = self.store.counters(name)
        prefix = "conflicts_resolved:"
        return {
            "files_up": counters.get("files_up", 0),
            "bytes_up": counters.get("bytes_up", 0),
            "files_down": counters.get("files_down", 0),
            "bytes_down": counters.get("bytes_down", 0),
            "failures": counters.get("failures", 0),
            "conflicts_resolved": {
                k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)
            },
        }

    def prune_oplog(self, now: float | None = None) -> int:
        """Drop operation records older than `log_retention_days` (0 keeps them all)."""
        days = self.config.log_retention_days
        if days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - days * 86400
        try:
            return self.store.prune_ops(cutoff)
        except StateWriteError as exc:  # a full disk: pruned at the next try
            log.warning("operation log not pruned", error=exc.reason)
            return 0

    def resolve(self, pair: str, path: str, keep: str) -> bool:
        """Settle one open conflict by hand (no daemon running); True when it is settled."""
        with self._pass_lock:
            self._require_open()
            self._require_writable("resolve")
            syncer = self.syncers[pair]
            syncer.check_root()
            syncer.list_remote()
            syncer.keeps[path] = keep
            self.queue.put(pair, path)
            self._drain([pair], dry_run=False)
            return path not in syncer.open_conflicts and not self.stopping.is_set()

    def _drain(self, pairs: list[str], dry_run: bool) -> None:
        """Run workers until every pair is quiet and its end-of-pass check queued nothing.
        `close()` may stop them first (`_interrupted`)."""
        pool = WorkerPool(self.queue, self.handle, self.config.workers)
        pool.start()
        through = False
        try:
            while not self.stopping.is_set():
                self.queue.wait_idle(timeout=0.2)
                self._requeued.clear()
                # Order matters: a worker schedules a requeue before it marks its item done,
                # and the debouncer puts an item on the queue before it stops counting it.
                if not len(self.delayed) and self.queue.idle() and not len(self.delayed):
                    for name in pairs:
                        self.end_of_pass(name, dry_run)
                    if self.queue.idle():
                        through = True
                        break
                elif self.queue.idle():
                    # Only requeues wait (in the debouncer, up to seconds each): wait_idle
                    # returns at once on an idle queue, and this loop spun a CPU meanwhile.
                    # A requeue put back since the clear above has set it: no wait then.
                    self._requeued.wait(timeout=0.2)
                pool.supervise()
        finally:
            pool.stop()
            if not through:
                self._interrupted = True

    # -- lifecycle ------------------------------------------------------------------------
    def _require_open(self) -> None:
        """A closed engine has let go of its state and providers: a pass on it would report
        "in sync" having done nothing."""
        if self._closed:
            raise RuntimeError("this Engine is closed")

    def close(self) -> None:
        """Stop, and let go of the providers, the state and its lock. A pass running in
        another thread stops at its workers' next item (its report says it was cut short),
        and is waited for: the lock is not free while it still writes the state."""
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        with self._pass_lock:
            self.delayed.stop()
            self.store.flush()  # records written behind land after their barrier, providers open
            for syncer in self.syncers.values():
                syncer.provider.close()
            self.store.close()
            if self._instance_lock is not None:
                self._instance_lock.release()
                self._instance_lock = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


#: Top-level settings a reload applies to a running engine (Engine.apply_live_settings).
LIVE_SETTINGS = (
    "bandwidth_limit",
    "upload_limit",
    "download_limit",
    "retry",
    "log",
    "log_retention_days",
)
#: Those a running engine cannot take on: the state, the socket, the worker threads, the
#: part sizes its pairs were set up with, the metrics listener.
RESTART_SETTINGS = (
    "state",
    "socket",
    "workers",
    "multipart_threshold",
    "part_size",
    "part_concurrency",
    "metrics",
)


@contextmanager
def dry_run_state(config: Config) -> Iterator[Config]:
    """`config` for a dry run, which changes nothing, not even the state: a SQLite state that
    does not exist yet is not created (nor its folder, nor its lock); the plan is made
    against a scratch one, empty as a first sync's, removed afterwards. So it is against a
    scratch copy of a state whose pair changed its local or remote (which the engine forgets)."""
    db = sqlite_path(config.state)
    if db is None or (db.exists() and not stale_places(config)):
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="syncd-dry-run-") as scratch:
        copy = Path(scratch) / "state.db"
        if db.exists():
            # A pair whose local or remote changed: its state is forgotten when an engine
            # opens it, so the plan is made on a copy, where that may happen.
            with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(copy)) as dest:
                source.backup(dest)
        yield config.model_copy(update={"state": f"sqlite:///{copy}"})


def same_place(recorded: str | None, pair: PairConfig) -> bool:
    """Is `recorded` the pair's place as an older syncd wrote it: before places named the
    server, or with the server spelled as it was then (`same_server`)? The same place: an
    upgrade must not forget the state of every pair on a custom endpoint or an Azure account
    (its first sync would bring back what the user deleted meanwhile)."""
    if recorded is None:
        return False
    place = _folder_and_url(pair)
    if recorded == place:
        return True
    server = recorded.removeprefix(f"{place} at ")
    if server == recorded:
        return False
    return same_server(server, served_by(pair.options)) or server == served_by_before(pair.options)


def pair_place(pair: PairConfig) -> str:
    """What a pair's state is bound to: its local root and its remote (as parsed, so
    `s3://b/docs` and `s3://b/docs/` are one), with the server or account the bucket is on
    when it is not the service's default (`served_by`)."""
    server = served_by(pair.options)
    place = _folder_and_url(pair)
    return place if server is None else f"{place} at {server}"


def _folder_and_url(pair: PairConfig) -> str:
    return f"{Path(pair.local).absolute()} <-> {pair.remote_url}"


def stale_places(config: Config) -> bool:
    """Does the config name, for a pair the existing state knows, another local root or
    remote than that state describes (Engine._take_place will forget it)?"""
    try:
        store = StateStore(config.state)
    except StateError:  # a damaged state: the engine says so
        return False
    try:
        return any(
            store.place(pair.name) not in (None, pair_place(pair))
            and not same_place(store.place(pair.name), pair)
            for pair in config.pairs
        )
    finally:
        store.close()


class PairRemoteError(ConfigError, InvalidRequest):
    """A pair's remote that its options cannot set up (an AWS profile that is not there, a
    credentials file that is no key). A config error: the CLI answers it with exit 2, so a
    script's `except syncd.ConfigError` must catch it too (it missed a bare InvalidRequest).
    Still an InvalidRequest, for the callers that caught that."""


class PairURLError(ConfigError, RemoteURLError):
    """A pair's remote URL the provider refused: a config error, as PairRemoteError."""


def _api_state(syncer: PairSyncer, busy: int) -> str:
    """A pair's `state` as `syncd status --json` words it, for an engine with no daemon
    around it (no pause): `syncing` while a pass (in another thread) has its paths."""
    stats = syncer.stats
    if stats.fault is not None:
        return "error"
    if busy:
        return "syncing"
    return "held" if stats.held_reason is not None else "idle"


def _at_pair(index: int, name: str, exc: ProviderError | RemoteURLError) -> ConfigError:
    """A pair's remote that cannot be set up, said with the pair: the provider's message names
    only the option (`options.connection_string`) or variable at fault, and a config of many
    pairs leaves the reader guessing which one. An option is the key, as config errors name
    it: `pair 'docs': pairs[0].options.connection_string: PROBLEM`."""
    problem, key = str(exc), None
    if problem.startswith("options."):
        option, _, problem = problem.partition(": ")
        key = f"pairs[{index}].{option}"
    kind = PairURLError if isinstance(exc, RemoteURLError) else PairRemoteError
    return kind(f"pair {name!r}", problem, key=key)


def run_one_way(
    config: Config,
    *,
    dry_run: bool = False,
    show: Callable[[InFlight], AbstractContextManager[Any]] | None = None,
    watch: Callable[[Engine], AbstractContextManager[Any]] | None = None,
) -> Report:
    """One copy in the direction its single pair names: create-only of nothing, delete nothing.
    A missing destination folder of an upload to file:// is made first, like rclone does.
    `show` wraps the pass (progress bars on a terminal) and gets the engine's transfers.
    `watch` wraps it too and gets the engine itself: the command line's SIGINT / SIGTERM
    closes it from the main thread, which stops the pass as any `Engine.close()` does."""
    pair = config.pairs[0]
    local = Path(pair.local)
    if pair.direction == "upload" and not local.is_dir():
        missing = not os.path.lexists(local)
        raise FileNotFoundError(f"{local}: {'no such folder' if missing else 'not a folder'}")
    destination = (
        local
        if pair.direction == "download"
        else Path(pair.remote_url.path)
        if pair.remote_url.scheme == "file"
        else None
    )
    if dry_run:
        if destination is not None:
            _check_destination(destination)  # refused as the real run refuses it
        with dry_run_state(config) as scratch:
            return _copy(scratch, dry_run=True, show=show, watch=watch)
    made = _make_destination(destination) if destination is not None else []
    try:
        report = _copy(config, dry_run=False, show=show, watch=watch)
    except BaseException:
        _remove_made(made)  # stopped before its pass began (`watch` refused it), say
        raise
    if report.pairs and report.pairs[0].fault is not None:
        _remove_made(made)
    return report


def _remove_made(made: list[Path]) -> None:
    """Nothing could be copied (a missing bucket, a remote that does not answer, a copy
    stopped before it began): the folders made for it go again, if they are still empty, as
    if never asked for."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            break


class DestinationUnusable(OSError):
    """A one-way copy's destination folder is a file, or cannot be made: a usage error, said
    in one line before anything is copied."""


def _check_destination(folder: Path) -> None:
    """What `_make_destination` would refuse, said without making anything (a dry run): a
    file there, or on the way there, or a nearest folder syncd may not write in."""
    each = folder
    while not os.path.lexists(each) and each != each.parent:
        each = each.parent
    if not each.is_dir():
        what = "not a folder" if each == folder else "cannot make this folder: Not a directory"
        raise DestinationUnusable(f"{folder}: {what}")
    if each != folder and not os.access(each, os.W_OK | os.X_OK):
        raise DestinationUnusable(f"{folder}: cannot make this folder: Permission denied")


def _make_destination(folder: Path) -> list[Path]:
    """Make a one-way copy's missing destination folder (with its parents, as rclone does);
    return the folders made, outermost first."""
    missing: list[Path] = []
    each = folder
    while each != each.parent and not os.path.lexists(each):
        missing.insert(0, each)
        each = each.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DestinationUnusable(f"{folder}: not a folder") from None
    except OSError as exc:
        raise DestinationUnusable(
            f"{folder}: cannot make this folder: {exc.strerror or exc}"
        ) from None
    return missing


def _copy(
    config: Config,
    *,
    dry_run: bool,
    show: Callable[[InFlight], AbstractContextManager[Any]] | None,
    watch: Callable[[Engine], AbstractContextManager[Any]] | None,
) -> Report:
    with Engine.from_config(config) as engine:
        for syncer in engine.syncers.values():
            syncer.propagate_deletes = False
            syncer.copy = True
            # The real run makes a download's missing folder: the plan starts from nothing.
            syncer.missing_root_is_empty = dry_run and syncer.pair.direction == "download"
            # And an upload's missing folder on a local-folder remote.
            syncer.missing_remote_is_empty = (
                dry_run
                and syncer.pair.direction == "upload"
                and syncer.pair.remote_url.scheme == "file"
            )
        with ExitStack() as around:
            if show is not None:
                around.enter_context(show(engine.inflight))
            if watch is not None:
                around.enter_context(watch(engine))
            return engine.sync_once(dry_run=dry_run)

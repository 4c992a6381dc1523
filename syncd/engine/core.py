"""The engine: pairs, their providers, the work queue and the workers, behind one object.

Both faces of syncd use it: `syncd once` (plan every pair, drain, report) and the daemon (which
adds a watcher, a poller and a control socket around the same engine).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog

from syncd.config import Config, PairConfig
from syncd.engine.debounce import Debouncer, Pending
from syncd.engine.multipart import Meter, PartSettings
from syncd.engine.progress import InFlight
from syncd.engine.retry import RetryPolicy
from syncd.engine.stats import Failure
from syncd.engine.syncer import Outcome, PairFault, PairSyncer, PlanItem
from syncd.engine.throttle import Limits, TransferDirection, consume_all
from syncd.engine.workers import WorkerPool
from syncd.engine.workqueue import Key, WorkQueue
from syncd.providers import open_provider
from syncd.state import StateStore

log = structlog.get_logger("syncd.engine")

#: A path that keeps moving under us (written to while we read it) is retried this often,
#: with a growing pause, before it counts as failed for this pass.
MAX_REQUEUES = 8
REQUEUE_BASE_DELAY = 0.25

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_ATTENTION = 0, 1, 2, 3, 4


@dataclass
class PairReport:
    name: str
    uploaded: int = 0
    downloaded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    failures: dict[str, Failure] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    held_reason: str | None = None
    fault: str | None = None
    planned: list[PlanItem] = field(default_factory=list)


@dataclass
class Report:
    """What one reconciliation did, per pair; `exit_code` follows the contract."""

    pairs: list[PairReport]
    elapsed_s: float

    @property
    def exit_code(self) -> int:
        if any(p.failures or p.fault for p in self.pairs):
            return EXIT_FAILED
        if any(p.conflicts or p.held_reason for p in self.pairs):
            return EXIT_ATTENTION
        return EXIT_OK


class Engine:
    def __init__(self, config: Config, store: StateStore | None = None) -> None:
        self.config = config
        self.store = store if store is not None else StateStore(config.state)
        self.queue = WorkQueue()
        self.stopping = threading.Event()
        self.retry = RetryPolicy(config.retry.attempts, config.retry.max_seconds)
        self.syncers: dict[str, PairSyncer] = {}
        #: Every transfer in progress, for `status` (bytes done, total, speed).
        self.inflight = InFlight()
        #: bandwidth_limit / upload_limit / download_limit: buckets shared by every worker.
        self.limits = Limits.from_config(config)
        #: Pairs whose next end-of-pass deletion check may pass the max_delete guard.
        self.force: set[str] = set()
        #: Pairs that processed work since their last end of pass.
        self.touched: set[str] = set()
        self._requeues: dict[Key, int] = {}
        self._requeue_lock = threading.Lock()
        self.delayed: Debouncer[Key] = Debouncer(self._requeue_due, name="requeue")
        self.delayed.start()
        for pair in config.pairs:
            self.add_pair(pair)

    def add_pair(self, pair: PairConfig) -> PairSyncer:
        provider = open_provider(pair.remote, pair.options, workers=self.config.workers)
        syncer = PairSyncer(
            pair,
            provider,
            self.store,
            retry=self.retry,
            is_cancelled=self.stopping.is_set,
            enqueue=self.queue.put,
            parts=PartSettings(
                threshold=self.config.multipart_threshold,
                part_size=self.config.part_size,
                concurrency=self.config.part_concurrency,
            ),
            inflight=self.inflight,
            pace_up=self._pace("upload"),
            pace_down=self._pace("download"),
        )
        self.syncers[pair.name] = syncer
        return syncer

    def _pace(self, direction: TransferDirection) -> Meter | None:
        """What a transfer calls per chunk to stay under the limits (None: unlimited)."""
        buckets = self.limits.for_direction(direction)
        if not buckets:
            return None
        cancelled = self.stopping.is_set
        return lambda n: consume_all(buckets, n, cancelled)

    def remove_pair(self, name: str) -> None:
        """Stop syncing a pair: drop its queued work and close its provider. Its state stays,
        so adding it back later is not a first sync."""
        syncer = self.syncers.pop(name, None)
        self.queue.drop_pair(name)
        if syncer is not None:
            syncer.provider.close()

    # -- the worker side ------------------------------------------------------------------
    def handle(self, key: Key) -> None:
        """Process one queued path; called by worker threads."""
        pair, path = key
        syncer = self.syncers.get(pair)
        if syncer is None or self.stopping.is_set():
            return
        self.touched.add(pair)
        outcome = syncer.sync_path(path)
        if outcome is Outcome.REQUEUE:
            with self._requeue_lock:
                attempts = self._requeues.get(key, 0) + 1
                self._requeues[key] = attempts
            if attempts > MAX_REQUEUES:
                with self._requeue_lock:
                    self._requeues.pop(key, None)
                syncer.stats.failed(
                    path, "kept changing while being synced; will try again later", op="sync"
                )
            else:
                self.delayed.touch(key, REQUEUE_BASE_DELAY * attempts)
        else:
            with self._requeue_lock:
                self._requeues.pop(key, None)

    def _requeue_due(self, key: Key, _pending: Pending) -> None:
        self.queue.put(*key)

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
        if not approved and not syncer.stats.failures and syncer.stats.held_reason is None:
            syncer.stats.mark_synced()

    # -- one reconciliation ---------------------------------------------------------------
    def plan(self, pair: str) -> list[PlanItem]:
        return self.syncers[pair].plan(first_pass=True)

    def sync_once(
        self, pair: str | None = None, dry_run: bool = False, force: bool = False
    ) -> Report:
        """Reconcile every (or one) pair with the configured workers, then report.

        A dry run goes through exactly the same decisions, with every action recorded instead
        of carried out, so the real run right after does what it printed."""
        started = time.monotonic()
        names = [pair] if pair is not None else list(self.syncers)
        reports: dict[str, PairReport] = {}
        for name in names:
            syncer = self.syncers[name]
            syncer.plan_only = dry_run
            report = reports[name] = PairReport(name)
            try:
                planned = syncer.plan(first_pass=not dry_run)
            except PairFault as exc:
                report.fault = str(exc)
                syncer.stats.set_fault(str(exc))
                log.error("pair cannot be synced", pair=name, error=str(exc))
                continue
            if force:
                self.force.add(name)
            for item in planned:
                self.queue.put(name, item.path)
        self._drain([n for n in names if reports[n].fault is None], dry_run)
        for name, report in reports.items():
            syncer = self.syncers[name]
            stats = syncer.stats
            report.planned = sorted(syncer.planned, key=lambda item: item.path)
            syncer.plan_only = False
            report.uploaded, report.downloaded = stats.uploaded, stats.downloaded
            report.bytes_up, report.bytes_down = stats.bytes_up, stats.bytes_down
            report.failures = dict(stats.failures)
            report.conflicts = dict(stats.conflicts)
            report.settled = dict(stats.settled)
            report.held, report.held_reason = dict(stats.held), stats.held_reason
        if not dry_run:
            self.prune_oplog()
        return Report(list(reports.values()), time.monotonic() - started)

    def prune_oplog(self, now: float | None = None) -> int:
        """Drop operation records older than `log_retention_days` (0 keeps them all)."""
        days = self.config.log_retention_days
        if days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - days * 86400
        return self.store.prune_ops(cutoff)

    def resolve(self, pair: str, path: str, keep: str) -> bool:
        """Settle one open conflict by hand (no daemon running); True when it is settled."""
        syncer = self.syncers[pair]
        syncer.check_root()
        syncer.list_remote()
        syncer.keeps[path] = keep
        self.queue.put(pair, path)
        self._drain([pair], dry_run=False)
        return path not in syncer.open_conflicts

    def _drain(self, pairs: list[str], dry_run: bool) -> None:
        """Run workers until every pair is quiet and its end-of-pass check queued nothing."""
        pool = WorkerPool(self.queue, self.handle, self.config.workers)
        pool.start()
        try:
            while not self.stopping.is_set():
                self.queue.wait_idle(timeout=0.2)
                # Order matters: a worker schedules a requeue before it marks its item done,
                # and the debouncer puts an item on the queue before it stops counting it.
                if not len(self.delayed) and self.queue.idle() and not len(self.delayed):
                    for name in pairs:
                        self.end_of_pass(name, dry_run)
                    if self.queue.idle():
                        break
                pool.supervise()
        finally:
            pool.stop()

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self.stopping.set()
        self.delayed.stop()
        for syncer in self.syncers.values():
            syncer.provider.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
from syncd.engine.retry import RetryPolicy
from syncd.engine.syncer import Outcome, PairFault, PairSyncer, PlanItem
from syncd.engine.workers import WorkerPool
from syncd.engine.workqueue import Key, WorkQueue
from syncd.providers import open_provider
from syncd.state import StateStore

log = structlog.get_logger("syncd.engine")

#: A path that keeps moving under us (written to while we read it) is retried this often,
#: with a growing pause, before it counts as failed for this pass.
MAX_REQUEUES = 8
REQUEUE_BASE_DELAY = 0.25

#: Config keys the contract defines that this version accepts but does not act on yet. They are
#: named in a warning at start-up rather than silently ignored.
NOT_YET_ACTED_ON = {
    "config": (
        "bandwidth_limit",
        "upload_limit",
        "download_limit",
        "multipart_threshold",
        "part_size",
        "part_concurrency",
        "metrics",
    ),
    "pair": ("conflict", "max_delete", "trash_days", "remote_trash"),
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_ATTENTION = 0, 1, 2, 3, 4


@dataclass
class PairReport:
    name: str
    uploaded: int = 0
    downloaded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
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
        if any(p.conflicts or p.deferred for p in self.pairs):
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
        self._requeues: dict[Key, int] = {}
        self._requeue_lock = threading.Lock()
        self.delayed: Debouncer[Key] = Debouncer(self._requeue_due, name="requeue")
        self.delayed.start()
        for pair in config.pairs:
            self.add_pair(pair)
        ignored = unhonoured_settings(config)
        if ignored:
            log.warning("settings not acted on by this version of syncd", keys=ignored)

    def add_pair(self, pair: PairConfig) -> PairSyncer:
        provider = open_provider(pair.remote, pair.options, workers=self.config.workers)
        syncer = PairSyncer(
            pair, provider, self.store, retry=self.retry, is_cancelled=self.stopping.is_set
        )
        self.syncers[pair.name] = syncer
        return syncer

    # -- the worker side ------------------------------------------------------------------
    def handle(self, key: Key) -> None:
        """Process one queued path; called by worker threads."""
        pair, path = key
        syncer = self.syncers.get(pair)
        if syncer is None or self.stopping.is_set():
            return
        outcome = syncer.sync_path(path)
        if outcome is Outcome.REQUEUE:
            with self._requeue_lock:
                attempts = self._requeues.get(key, 0) + 1
                self._requeues[key] = attempts
            if attempts > MAX_REQUEUES:
                with self._requeue_lock:
                    self._requeues.pop(key, None)
                syncer.stats.failed(path, "kept changing while being synced; will try again later")
            else:
                self.delayed.touch(key, REQUEUE_BASE_DELAY * attempts)
        else:
            with self._requeue_lock:
                self._requeues.pop(key, None)
        if (
            self.queue.idle(pair)
            and not syncer.stats.failures
            and pair not in {k[0] for k in self.delayed.pending_keys()}
        ):
            syncer.stats.mark_synced()

    def _requeue_due(self, key: Key, _pending: Pending) -> None:
        self.queue.put(*key)

    # -- one reconciliation ---------------------------------------------------------------
    def plan(self, pair: str) -> list[PlanItem]:
        return self.syncers[pair].plan(first_pass=True)

    def sync_once(self, pair: str | None = None, dry_run: bool = False) -> Report:
        """Plan every (or one) pair, carry the plan out with the configured workers, report."""
        started = time.monotonic()
        names = [pair] if pair is not None else list(self.syncers)
        reports: dict[str, PairReport] = {}
        for name in names:
            report = reports[name] = PairReport(name)
            try:
                report.planned = self.plan(name)
            except PairFault as exc:
                report.fault = str(exc)
                self.syncers[name].stats.set_fault(str(exc))
                log.error("pair cannot be synced", pair=name, error=str(exc))
                continue
            if not dry_run:
                for item in report.planned:
                    self.queue.put(name, item.path)
        if not dry_run:
            self._drain()
        for name, report in reports.items():
            stats = self.syncers[name].stats
            report.uploaded, report.downloaded = stats.uploaded, stats.downloaded
            report.bytes_up, report.bytes_down = stats.bytes_up, stats.bytes_down
            report.failures = dict(stats.failures)
            report.conflicts = dict(stats.conflicts)
            report.deferred = dict(stats.deferred)
        return Report(list(reports.values()), time.monotonic() - started)

    def _drain(self) -> None:
        pool = WorkerPool(self.queue, self.handle, self.config.workers)
        pool.start()
        try:
            while not self.stopping.is_set():
                self.queue.wait_idle(timeout=0.2)
                # Order matters: a worker schedules a requeue before it marks its item done,
                # and the debouncer puts an item on the queue before it stops counting it.
                if not len(self.delayed) and self.queue.idle() and not len(self.delayed):
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


def unhonoured_settings(config: Config) -> list[str]:
    """The keys a user set that this version accepts but does not act on yet."""
    keys = [k for k in NOT_YET_ACTED_ON["config"] if k in config.model_fields_set]
    for index, pair in enumerate(config.pairs):
        keys += [
            f"pairs[{index}].{k}" for k in NOT_YET_ACTED_ON["pair"] if k in pair.model_fields_set
        ]
    return keys

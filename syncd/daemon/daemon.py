"""The long-running daemon: engine + watcher + poller + control socket, under one supervisor.

Each pair's start-up pass (its first full scan, with the clean-ups of what an earlier run left)
runs in a thread of its own: READY=1 and the main loop never wait for a remote, a hung remote
delays no other pair, and a pair's transfers wait (its queue gated) until its pass is through.

Signal handlers only set a flag; the main loop notices it, restarts dead threads while running,
and shuts everything down in order: sources first, then workers (10 s to finish or abort their
transfer), then the database and the socket. A start-up pass still waiting on its remote then
is left behind (a daemon thread): a read blocked on a hung remote cannot be cut short.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from syncd import __version__, logs
from syncd.config import Config, ConfigError, PairConfig, load_config
from syncd.daemon.control import CommandError, ControlServer
from syncd.daemon.notify import Notifier
from syncd.daemon.poller import Poller
from syncd.daemon.remote_changes import RemoteChanges
from syncd.daemon.watcher import Watcher, WatchLimitReached
from syncd.engine.core import Engine
from syncd.engine.debounce import Debouncer, Pending
from syncd.engine.decide import remote_state
from syncd.engine.filters import SYNCIGNORE
from syncd.engine.model import Change
from syncd.engine.paths import is_plain_key, key_refusal, normalize
from syncd.engine.stats import PairStats
from syncd.engine.syncer import PROBE_WAIT_S, PairFault, PairSyncer
from syncd.engine.workers import WorkerPool
from syncd.engine.workqueue import Key
from syncd.providers.base import ObjectInfo, Provider
from syncd.providers.errors import ProviderError
from syncd.providers.url import RemoteURLError
from syncd.state import StateError, StateStore

log = structlog.get_logger("syncd.daemon")

#: How often the poller prunes the operation log (log_retention_days).
PRUNE_EVERY_S = 3600.0
#: How often a watched pair is compared in full all the same (see `_rescan_due`).
RESCAN_EVERY_S = 3600.0
#: A stop lets in-flight transfers finish for this long, then cancels them...
FINISH_GRACE_S = 5.0
#: ...and waits at most this long for them to wind down (a transfer looks at the flag at
#: every chunk, bandwidth wait and retry wait), so that a stop takes under 10 s in all.
CANCEL_GRACE_S = 3.0
#: Then the start-up passes still running get this long to end (a retry's wait ends at once
#: on the engine's flag); one still blocked in a read of its remote is left behind.
STARTUP_GRACE_S = 0.5
#: How long `resolve` waits for its decision to be carried out before it answers "under way":
#: less than the client's 30 s, which would otherwise take a slow answer for no daemon.
RESOLVE_WAIT_S = 25.0


class Daemon:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        config_path: Path | None = None,
        control: ControlServer | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        #: Set by the signal handlers, read by the main loop (see _on_signal).
        self._signalled = False
        self._reload_asked = False
        self.engine = engine
        for syncer in engine.syncers.values():
            syncer.probe_wait = PROBE_WAIT_S  # the main loop ends passes
        self.started = time.monotonic()
        self._stop = threading.Event()
        #: Wakes the main loop before its next tick: a pair's queue ran dry (its pass ends
        #: now: held deletions decided, last_sync stamped), or the daemon stops.
        self._tick = threading.Event()
        # `syncd run` binds the socket before it opens the state (a refusal touches nothing).
        self.control = control or ControlServer(Path(config.socket))
        self.control.dispatch = self.dispatch
        self.settler: Debouncer[Key] = Debouncer(self._settled, name="settle")
        self.watcher = Watcher(self._on_local_change, self._on_overflow, self._on_watch_limit)
        self.remote_changes = RemoteChanges(self.watcher)
        #: Pairs without a file watcher (inotify limits): scanned in full at every poll.
        self._scan_fallback: set[str] = set()
        #: Pairs that had a successful full scan (their start-up pass); until then every poll
        #: starts one, if none is running.
        self._scanned: set[str] = set()
        #: When each pair's last full scan was through (monotonic), for `_rescan_due`.
        self._scanned_at: dict[str, float] = {}
        #: Each pair's last scan thread (its start-up pass, then the full scans asked for
        #: while it ran): the syncer it is for, and its thread.
        self._startups: dict[str, tuple[PairSyncer, threading.Thread]] = {}
        #: The pairs whose scan thread is running: the syncer it is for, and whether the scan
        #: under way is the pair's start-up pass. A thread leaves it (under the lock) only
        #: when no scan was asked for meanwhile (`_next_scan`).
        self._scanning: dict[str, tuple[PairSyncer, bool]] = {}
        #: Pairs a full scan was asked for that no scan has started since.
        self._again: set[str] = set()
        self._startups_lock = threading.Lock()
        #: Held while a reload swaps pairs, and by `status`: see `reload`.
        self._pairs_lock = threading.Lock()
        #: The (device, inode) of each pair's root when its watch was set (None: not set).
        self._watched_roots: dict[str, tuple[int, int] | None] = {}
        self.poller = Poller(self.poll)
        self.workers = WorkerPool(engine.queue, engine.handle, config.workers)
        self.notifier = Notifier()

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        self._serve_metrics()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            for name in self.engine.syncers:
                # Nothing of a pair is transferred before its start-up pass has cleaned up.
                self.engine.queue.close_gate(name)
            self.control.start()
            self.settler.start()
            # Started before the watches are added, so a watch that fails fails alone.
            self.watcher.start()
            for name in self.engine.syncers:
                self.engine.write_behind(name)
                self._watch(name)
            self.engine.queue.on_drained = lambda _pair: self._tick.set()
            self.workers.start()
            for name in self.engine.syncers:
                self.poller.add(name, self.engine.syncers[name].pair.poll_interval)
            # The operation log is pruned at the start, then once an hour, whatever the pairs
            # do: tied to a pair's poll it waited for the first poll_interval (and for ever
            # while every pair was paused).
            self.poller.every("prune", PRUNE_EVERY_S, self._prune_oplog)
            self.poller.start()
            log.info("syncd started", version=__version__, pairs=list(self.engine.syncers))
            for name in self.engine.syncers:
                self._start_pass(name)
            self.notifier.ready(self.status_line())
            last_ping = 0.0
            while not self._stop.is_set():
                self._tick.wait(0.5)
                self._tick.clear()
                if self._signalled:
                    self._stop.set()
                if self._stop.is_set():
                    break
                if self._reload_asked:
                    self._reload_asked = False
                    try:
                        self.reload()
                    except Exception:
                        # The daemon goes on with the pairs it has; the config is stored
                        # only at a reload's end, so the next SIGHUP tries it all again.
                        log.exception("reload failed; send SIGHUP to try again")
                healthy = self._supervise()
                self.remote_changes.drop_fired()
                self._end_quiet_passes()
                self._retry_due_failures()
                self.notifier.status(self.status_line())
                interval = self.notifier.watchdog_interval
                if healthy and interval is not None and time.monotonic() - last_ping >= interval:
                    self.notifier.watchdog()
                    last_ping = time.monotonic()
        finally:
            self.notifier.stopping()
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _serve_metrics(self) -> None:
        """Start the metrics endpoint first: a port it cannot have stops the daemon before
        anything else started (MetricsUnavailable, the engine closed)."""
        if self.config.metrics is None:
            return
        from syncd.daemon.metrics import MetricsUnavailable, serve_metrics

        metrics = self.config.metrics
        try:
            serve_metrics((metrics.host, metrics.port), self.engine, self.status)
        except MetricsUnavailable:
            self.engine.close()
            raise
        log.info("metrics endpoint listening", listen=metrics.listen)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Only a flag, which the main loop reads at its next tick (0.5 s): a handler runs in
        the main thread between two of its steps, maybe inside `self._tick.wait()` holding
        the event's lock, and `Event.set()` here then waited for that lock for ever (a
        SIGTERM now and then never stopped the daemon)."""
        self._signalled = True

    def _on_hangup(self, signum: int, _frame: FrameType | None) -> None:
        self._reload_asked = True  # a flag, as in _on_signal

    def reload(self) -> None:
        """Re-read the config: pairs added, removed or changed take effect now. A config with
        an error is rejected with a log line and the running one stays, all of it: a file
        `load_config` refuses, or a pair whose remote cannot be opened (an AWS profile not
        there yet, a bad region), which the config check cannot see. The next SIGHUP tries
        again."""
        if self.config_path is None:
            log.warning("reload ignored: the daemon was not started from a config file")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected; keeping the running config", error=str(exc))
            return
        old_pairs = {p.name: p for p in self.config.pairs}
        new_pairs = {p.name: p for p in new.pairs}
        changed = [pair for name, pair in new_pairs.items() if old_pairs.get(name) != pair]
        remotes = self._open_remotes(changed)
        if remotes is None:
            return
        if new.log != self.config.log:
            logs.configure(new.log.level, new.log.format)
        retention_changed = new.log_retention_days != self.engine.config.log_retention_days
        for key in self.engine.apply_live_settings(new):
            log.warning("reload: this setting needs a restart; the running value stays", key=key)
        if retention_changed:
            # At once, as README says of every live setting, not at the next hourly prune.
            self._prune_oplog()
        earlier: dict[str, PairStats] = {}
        added: list[str] = []
        # A changed pair is removed and added anew: `status` must never answer in between
        # (the pair missing, `"pairs": []` for a one-pair config), nor list the pairs out of
        # the config's order after it.
        with self._pairs_lock:
            for name, pair in old_pairs.items():
                if new_pairs.get(name) != pair:
                    if name in self.engine.syncers:
                        earlier[name] = self.engine.syncers[name].stats
                    self._remove_pair(name)
            for pair in changed:
                if self._attach_pair(pair, remotes[pair.name], earlier.get(pair.name)):
                    added.append(pair.name)
            self.engine.order_pairs(list(new_pairs))
        for name in added:
            self._start_pair(name)
        # A pair that could not be added is left out of the config kept: the next reload
        # sees it as new and tries again.
        lost = {pair.name for pair in changed} - set(added)
        self.config = new.model_copy(
            update={"pairs": [pair for pair in new.pairs if pair.name not in lost]}
        )
        log.info("config reloaded", pairs=list(new_pairs))

    def _open_remotes(self, pairs: list[PairConfig]) -> dict[str, Provider] | None:
        """The remotes of a reload's new and changed pairs, opened before any running pair
        is touched; None (after a line naming the pair and the problem) if one cannot be.
        Removed first, a changed pair whose remote then failed to open was dropped without
        a word, its new config taken as running, and the reload that next changed it ended
        the daemon."""
        opened: dict[str, Provider] = {}
        for pair in pairs:
            try:
                opened[pair.name] = self.engine.open_remote(pair)
            except (ProviderError, RemoteURLError) as exc:
                for provider in opened.values():
                    provider.close()
                log.error(
                    "reload rejected; keeping the running config", pair=pair.name, error=str(exc)
                )
                return None
        return opened

    def _remove_pair(self, name: str) -> None:
        self.watcher.unwatch(name)
        self._watched_roots.pop(name, None)
        self.remote_changes.remove(name)
        self.poller.remove(name)
        self.engine.remove_pair(name)
        self._scanned.discard(name)
        self._scan_fallback.discard(name)
        log.info("pair removed", pair=name)

    def _attach_pair(
        self, pair: PairConfig, provider: Provider, earlier: PairStats | None = None
    ) -> bool:
        """Add a pair to the engine on its opened remote (or a changed one anew, with the
        since-start counts of `earlier`); True when it could be. `_start_pair` then sets it
        going."""
        self.engine.queue.close_gate(pair.name)
        try:
            syncer = self.engine.add_pair(pair, provider)
        except (ProviderError, RemoteURLError, StateError) as exc:
            self.engine.queue.drop_pair(pair.name)
            log.error("pair cannot be added", pair=pair.name, error=str(exc))
            return False
        if earlier is not None:
            syncer.stats.carry_totals(earlier)
        syncer.probe_wait = PROBE_WAIT_S
        if self.engine.queue.is_paused(pair.name):
            syncer.pause()  # a paused pair changed by a reload stays paused
        self.engine.write_behind(pair.name)
        return True

    def _start_pair(self, name: str) -> None:
        """Watch an attached pair, poll it, and start its first pass."""
        self._watch(name)
        self.poller.add(name, self.engine.syncers[name].pair.poll_interval)
        self._start_pass(name)
        log.info("pair added", pair=name)

    def _watch(self, name: str) -> None:
        """Watch a pair's root; without inotify (limits exhausted) the pair is scanned in full
        at every poll instead, and says so."""
        syncer = self.engine.syncers[name]
        syncer.know_own_downloads()
        self._scan_fallback.discard(name)
        self._watched_roots[name] = None
        self.remote_changes.add(name, syncer.provider)
        try:
            syncer.check_root()
            identity = _identity(syncer.root)
            self.watcher.watch(name, syncer.root)
            self._watched_roots[name] = identity
        except WatchLimitReached as exc:
            self._scan_fallback.add(name)
            log.warning(
                "cannot watch pair; scanning it every poll_interval instead",
                pair=name,
                error=str(exc),
                poll_interval=syncer.pair.poll_interval,
            )
        except (PairFault, OSError) as exc:
            syncer.stats.set_fault(str(exc))
            log.error("cannot watch pair", pair=name, error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._tick.set()

    def _end_quiet_passes(self) -> None:
        """Pairs with nothing queued, settling or in flight have finished a pass: run the
        end-of-pass deletion check (the max_delete guard) for them. Only for a pair that
        did work since its last one (new deletions come from work) or was forced: a held
        pair's deletions are weighed again when its poll has decided them again, not at
        every tick (one state query per held file, twice a second, for days). Not before a
        pair's start-up pass is through: until then its held deletions are not pending
        again (a `sync --force` was spent on none of them), and nothing says it is in sync;
        nor while a full scan of it runs (it is about to queue what it found)."""
        settling = {pair for pair, _ in self.settler.pending_keys()}
        starting = self._scanning_now()
        for name in list(self.engine.syncers):
            touched = name in self.engine.touched
            if not touched and name not in self.engine.force:
                continue
            if name in settling or name in starting or self.engine.queue.is_paused(name):
                continue
            # Unmarked before the look at its queue: a path a worker takes after that look
            # marks the pair again, and its outcome gets an end of pass of its own.
            self.engine.touched.discard(name)
            if self.engine.pair_busy(name):
                if touched:
                    self.engine.touched.add(name)
                continue
            self.engine.end_of_pass(name)

    def _retry_due_failures(self) -> None:
        """A failed path is tried again when its backoff runs out, the `next_try` status
        shows, not at the pair's next poll: with `poll_interval: 60` a retry came up to a
        minute late, with a long one hours. (A pair in `error` waits for its poll: its remote
        did not answer.)"""
        for name, syncer in list(self.engine.syncers.items()):
            if self.engine.queue.is_paused(name) or syncer.stats.fault is not None:
                continue
            for path in syncer.stats.due_failures():
                if not self.engine.queue.holds(name, path):
                    self.engine.queue.put(name, path)

    def _supervise(self) -> bool:
        """Restart what died; True when every part of the daemon is running."""
        self.workers.supervise()
        if not self.settler.is_alive():
            log.error("settle thread died; restarting it")
            self.settler = self.settler.successor()  # with the changes still settling
            self.settler.start()
        return self.watcher.is_alive() and self.poller.is_alive() and self.control.is_alive()

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what the daemon is doing right now. Every pair
        paused (`syncd pause`) is "paused", the issue's word; some of them, "paused: NAME"."""
        states = self._pair_states()
        if states and all(state == "paused" for _, state, _, _ in states):
            return "paused"
        parts = []
        scanning = self._scanning_now()
        for name, state, queued, in_flight in states:
            if state == "syncing" and name in scanning:
                parts.append(f"scanning {name}")
            elif state == "syncing":
                count = queued + in_flight
                parts.append(f"syncing {count} file{'' if count == 1 else 's'} in {name}")
            elif state != "idle":
                parts.append(f"{state}: {name}")
        return "; ".join(parts) or "idle"

    def _shutdown(self) -> None:
        log.info("syncd stopping")
        self.poller.stop()
        self.watcher.stop()
        self.settler.stop()
        # Let in-flight transfers finish; after the grace period cancel them (they check the flag).
        finished = self.workers.stop(timeout=FINISH_GRACE_S)
        if not finished:
            self.engine.stopping.set()
            self.workers.stop(timeout=CANCEL_GRACE_S)
        # Full scans still running (start-up passes among them) end at their next retry wait,
        # or at the end of their listing (PairSyncer.plan looks at the flag): give those a
        # moment. One blocked in a read of a hung remote is left behind; it touches nothing
        # once the flag is set.
        self.engine.stopping.set()
        deadline = time.monotonic() + STARTUP_GRACE_S
        with self._startups_lock:
            passes = [thread for _, thread in self._startups.values()]
        for thread in passes:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [thread.name for thread in passes if thread.is_alive()]
        if left:
            log.warning("full scans still waiting on their remote are left behind", threads=left)
        self.control.stop()
        for syncer in list(self.engine.syncers.values()):
            syncer.keep_last_sync()
        self.engine.close()
        log.info("syncd stopped")

    # -- change sources -------------------------------------------------------------------
    def _start_pass(self, name: str) -> None:
        """Start the pair's start-up pass, unless a scan of it is under way (a poll of a pair
        whose first pass is not through asks for one at every poll_interval)."""
        self._scan(name, asked=False)

    def rescan(self, name: str) -> None:
        """Compare the pair in full, both sides: `syncd sync`, file events lost, a changed
        `.syncignore`. Asked for while one of its scans runs (a big remote takes minutes to
        list), that one runs once more when it ends: the scan under way may have walked past
        what changed. (An APScheduler job asked for while it still ran was dropped, and a
        start-up pass took no other scan.)"""
        self._scan(name, asked=True)

    def _scan(self, name: str, *, asked: bool) -> None:
        """Start the pair's scan thread, unless one is running; `asked`: a scan running
        runs once more. Its listing may wait minutes on a remote (timeouts, retries), and
        neither the main loop (READY=1, the watchdog, signals) nor another pair may wait with
        it. A daemon thread: a read blocked on a hung remote cannot hold up the exit."""
        syncer = self.engine.syncers.get(name)
        if syncer is None or self._stop.is_set():
            return
        with self._startups_lock:
            running = self._scanning.get(name)
            if running is not None and running[0] is syncer:
                if asked:
                    self._again.add(name)  # the thread looks at it when its scan ends
                return
            self._again.add(name)  # the new thread's first scan
            first = name not in self._scanned
            self._scanning[name] = (syncer, first)
            thread = threading.Thread(
                target=self._scan_thread,
                args=(name, syncer),
                name=f"{'startup' if first else 'scan'}-{name}",
                daemon=True,
            )
            self._startups[name] = (syncer, thread)
            thread.start()

    def _scanning_now(self) -> set[str]:
        """The pairs being compared in full (their start-up pass, or one asked for: `syncd
        sync`, `retry`, lost file events, a changed `.syncignore`), or about to be, or that
        have had no start-up pass yet. Such a pair is `syncing`, never `idle`: a client that
        sends `syncd sync` and waits for idle must not read idle before the comparison it
        asked for has even listed the remote."""
        with self._startups_lock:
            running = {
                name
                for name, (syncer, _first) in self._scanning.items()
                if self.engine.syncers.get(name) is syncer
            }
        return running | self._starting()

    def _starting(self) -> set[str]:
        """The pairs whose start-up pass is running or has not been through yet. Such a pair
        is never `idle`: before its first pass nothing says it is in sync, whatever its
        last_sync from the run before says (a client waiting for "idle" would stop early)."""
        with self._startups_lock:
            running = {
                name
                for name, (syncer, first) in self._scanning.items()
                if first and self.engine.syncers.get(name) is syncer
            }
        return running | (set(self.engine.syncers) - self._scanned)

    def _scan_thread(self, name: str, syncer: PairSyncer) -> None:
        """A pair's full scans, one after the other, until none was asked for meanwhile.
        The first one through is the pair's start-up pass: it also clears what an earlier
        run left (temp files of interrupted downloads, stale multipart uploads), and the
        pair's transfers wait for it (its queue is gated until it is through)."""
        try:
            while (first_pass := self._next_scan(name, syncer)) is not None:
                self.full_scan(name, first_pass=first_pass)
        except Exception:
            log.exception("full scan crashed", pair=name)
        finally:
            with self._startups_lock:
                self._drop_scanning(name, syncer)

    def _next_scan(self, name: str, syncer: PairSyncer) -> bool | None:
        """The scan thread's next scan: a first pass (True) until one is through, else a
        later one (False); None when none was asked for, and the thread ends. Decided under
        the lock `_scan` takes: a scan asked for at that moment finds the thread still
        running (and is taken here) or gone (and starts another)."""
        with self._startups_lock:
            if (
                name not in self._again
                or self._stop.is_set()
                or self.engine.syncers.get(name) is not syncer
            ):
                self._drop_scanning(name, syncer)
                return None
            self._again.discard(name)
            first = name not in self._scanned
            self._scanning[name] = (syncer, first)
            return first

    def _drop_scanning(self, name: str, syncer: PairSyncer) -> None:
        """The pair's scan thread for `syncer` ends (called under `_startups_lock`); a
        thread of the pair made anew by a reload stays."""
        running = self._scanning.get(name)
        if running is not None and running[0] is syncer:
            del self._scanning[name]

    def full_scan(self, name: str, *, first_pass: bool = False, backoff: bool = False) -> None:
        """Compare both sides in full and queue every path that needs work. Only the first
        pass cleans up: later ones run beside transfers in flight. Until a first pass is
        through (at start-up, or the remote was down then), a scan asked for is that one,
        in its own thread. `backoff` (a poll's scan, for a pair without a file watcher):
        failed paths wait for their backoff, as at a poll (`_Waiting.past_backoff`)."""
        syncer = self.engine.syncers.get(name)
        if syncer is None:
            return
        if not first_pass and name not in self._scanned:
            self._start_pass(name)
            return
        self.remote_changes.listing(name)
        waiting = _Waiting.of(syncer) if backoff else _Waiting()
        try:
            plan = syncer.plan(first_pass=first_pass)
        except PairFault as exc:
            if self.engine.syncers.get(name) is not syncer:
                return  # removed meanwhile (a reload)
            self.remote_changes.listing_failed(name)
            if self._stop.is_set():
                log.info("full scan abandoned: syncd is stopping", pair=name)
                return
            syncer.stats.set_fault(str(exc))
            log.error("full scan failed", pair=name, error=str(exc))
            return
        if self.engine.syncers.get(name) is not syncer or self._stop.is_set():
            return
        syncer.answered()
        self._scanned.add(name)
        self._scanned_at[name] = time.monotonic()
        # Held deletions are looked at again too: their files may be back (a remote that
        # came back from an empty listing), which no difference from the base shows.
        planned = waiting.past_backoff(syncer, {item.path for item in plan})
        paths = sorted(planned | syncer.deletions.pending().keys())
        for path in paths:
            self.engine.queue.put(name, path)
        if first_pass:
            self.engine.queue.open_gate(name)
        log.info("full scan queued", pair=name, paths=len(paths), first_pass=first_pass)
        if not paths:
            self._mark_if_in_sync(name)

    def _on_overflow(self) -> None:
        """The kernel dropped watch events: look at every pair again in full (both sides)."""
        log.warning("file events were lost (inotify queue overflow); rescanning every pair")
        self.remote_changes.overflowed()
        for name in list(self.engine.syncers):
            syncer = self.engine.syncers.get(name)
            if syncer is not None and syncer.landed is not None:
                syncer.landed.clear()
            self.rescan(name)

    def _on_watch_limit(self, name: str, why: str) -> None:
        """A folder made under a watched root got no watch (inotify limits, watchdog's
        thread): the watch misses changes there, so the pair is scanned at every poll."""
        syncer = self.engine.syncers.get(name)
        if syncer is None or name in self._scan_fallback:
            return
        self._scan_fallback.add(name)
        log.warning(
            "cannot watch pair; scanning it every poll_interval instead",
            pair=name,
            error=why,
            poll_interval=syncer.pair.poll_interval,
        )

    def _on_local_change(self, change: Change) -> None:
        try:
            self._take_local_change(change)
        except Exception as exc:
            # Raised into watchdog, it would end the thread that hands out every pair's
            # events: local changes would go unseen from then on, without a word. Said, and
            # the pair is compared in full instead.
            log.error(
                "file event not handled; comparing the pair in full",
                pair=change.pair,
                path=change.path,
                error=f"{type(exc).__name__}: {exc}",
            )
            self.rescan(change.pair)

    def _take_local_change(self, change: Change) -> None:
        syncer = self.engine.syncers.get(change.pair)
        if syncer is None:
            return
        if change.path == SYNCIGNORE:
            # Its rules apply from now on: a path it now ignores is neither sent nor deleted
            # on the other side (events come in order: one right after it sees the new
            # rules). A path it no longer ignores is found by a full pass.
            syncer.reload_filter()
            self.rescan(change.pair)
        refused = _refused_name(change.path)
        if refused is not None:
            # No key can hold it, nor anything under it: no walk (a folder's paths are
            # looked up in the state as a prefix no row can hold), just the name the scan
            # refuses, checked once it settles (a failure while it is there, none once gone).
            if not _excluded(syncer, refused):
                self.settler.touch((change.pair, refused), syncer.pair.settle)
            return
        if not change.is_dir and syncer.landed_here(change.path):
            return  # a download of this pair landing: nothing changed here since
        self.settler.touch((change.pair, change.path), syncer.pair.settle, walk=change.is_dir)

    def _settled(self, key: Key, pending: Pending) -> None:
        """A local change settled: queue its path, or every path under a folder. Anything
        raised here ended the settle thread (a state database that failed a read, say): the
        rest of its batch was never queued, and the new thread started empty. Said now, and
        the pair is compared in full instead."""
        try:
            self._queue_settled(key, pending)
        except Exception as exc:
            log.error(
                "settled change not handled; comparing the pair in full",
                pair=key[0],
                path=key[1],
                error=f"{type(exc).__name__}: {exc}",
            )
            self.rescan(key[0])

    def _queue_settled(self, key: Key, pending: Pending) -> None:
        pair, path = key
        syncer = self.engine.syncers.get(pair)
        if syncer is None:
            return
        if not pending.walk:
            self.engine.queue.put(pair, path)
            return
        # A folder appeared, vanished or moved: look at every path under it on both sides,
        # and at the path itself (a file it replaced, or one that replaced it, in one burst).
        try:
            paths = set(syncer.scan_local(start=path))
        except OSError:
            paths = set()
        paths.add(path)
        prefix = path + "/"
        paths.update(self.engine.store.paths_under(pair, path))
        paths.update(p for p in syncer.index.snapshot() if p.startswith(prefix))
        # And what is in flight under it (a new file going up, in neither the base nor the
        # index yet): queued behind itself, it is looked at again once done, so a file whose
        # folder moved out of the root meanwhile does not stay on the remote.
        paths.update(p for p in self.engine.queue.in_flight(pair) if p.startswith(prefix))
        for each in sorted(paths):
            self.engine.queue.put(pair, each)

    def _prune_oplog(self) -> None:
        """Drop operation records older than `log_retention_days` (read at each run: a
        reload may change it)."""
        pruned = self.engine.prune_oplog()
        if pruned:
            log.info("operation log pruned", records=pruned)

    def poll(self, name: str) -> None:
        """List the remote and queue every path whose version differs from the base (a pair
        with no file watcher gets a full scan of both sides instead). A watched folder remote
        with no event since its last listing is not listed (see RemoteChanges). A paused
        pair is polled too: its changes keep queueing (status counts them), and nothing
        moves until `resume`."""
        syncer = self.engine.syncers.get(name)
        if syncer is None:
            return
        syncer.forget_gone_names()
        if name in self._scan_fallback or name not in self._scanned or self._rescan_due(name):
            # No watcher, no full scan yet (the remote was down at start-up), or none for
            # RESCAN_EVERY_S: compare both sides in full, so nothing written meanwhile (or
            # that inotify cannot see) is missed.
            self.full_scan(name, backoff=True)
            return
        try:
            try:
                syncer.check_root()
            except PairFault:
                # Missing, or not the folder synced (a disk unmounted): its watch is of no
                # use now, and the folder that comes back (the disk mounted again) is
                # watched anew and compared in full, even with the device and inode of old.
                self._watched_roots[name] = None
                raise
            if self._root_replaced(syncer) or self._rewatched(name):
                return
            if syncer.stats.fault is None and not self.remote_changes.needs_listing(name):
                log.debug("remote unchanged since its last listing; not listed", pair=name)
                self._requeue_due(syncer, [])
                return
            self.remote_changes.listing(name)
            waiting = _Waiting.of(syncer)
            remote = syncer.list_remote()
            log.debug("remote listed", pair=name, objects=len(remote))
        except PairFault as exc:
            if self.engine.syncers.get(name) is not syncer:
                return  # removed by a reload meanwhile ("call abandoned"): no remote's fault
            self.remote_changes.listing_failed(name)
            syncer.stats.set_fault(str(exc))
            log.warning("poll failed", pair=name, error=str(exc))
            return
        if syncer.stats.fault is not None:
            if syncer.answered():
                # A newer .syncignore came down: this listing was made under the old rules
                # (they left every path out), and would read as everything deleted.
                self.rescan(name)
                return
            if syncer.filter.problem is not None:
                return  # its rules are unknown: nothing moves, and the listing left all out
            if syncer.stats.fault is None:
                log.info("pair recovered", pair=name)
        base = self.engine.store.remote_etags(name)
        # New, changed or restamped at the remote (a path the base lacks is new), then gone
        # from it.
        changed = [
            path for path, info in remote.items() if remote_state(base.get(path), info) != "same"
        ]
        changed += base.keys() - remote.keys()
        self._requeue_due(syncer, sorted(waiting.past_backoff(syncer, set(changed))))

    def _rescan_due(self, name: str) -> bool:
        """A watched pair is compared in full every RESCAN_EVERY_S all the same (Syncthing
        rescans behind its watcher too): inotify says nothing of a write through another
        hard link of a file, nor of changes made on another machine to a network filesystem."""
        return time.monotonic() - self._scanned_at.get(name, time.monotonic()) >= RESCAN_EVERY_S

    def _root_replaced(self, syncer: PairSyncer) -> bool:
        """A local root that came back (a disk mounted again, a folder made anew) is another
        folder than the one watched, or none was: the old watch saw nothing of it (and may
        still follow the old folder wherever it was moved). Watch the root as it is now and
        compare both sides in full; True when that was needed."""
        name = syncer.name
        identity = _identity(syncer.root)
        if identity is None or identity == self._watched_roots.get(name):
            return False
        self._watch_again(name, "local root is back or was replaced; watching it again")
        return True

    def _rewatched(self, name: str) -> bool:
        """A folder the watch had to leave out (unreadable then) can be read now: watch the
        pair again, so its later changes are seen, and compare both sides in full; True when
        that was needed."""
        if not self.watcher.readable_again(name):
            return False
        self._watch_again(name, "a folder that could not be watched is readable now; watching it")
        return True

    def _watch_again(self, name: str, why: str) -> None:
        """Watch the pair's root anew, then compare both sides in full: what changed while
        the watch did not see it is found by that pass."""
        log.info(why, pair=name)
        self.watcher.unwatch(name)
        self._watch(name)
        self.full_scan(name)

    def _requeue_due(self, syncer: PairSyncer, changed: list[str]) -> None:
        """Queue what a poll found changed, and the failures whose backoff has run out (the
        rest wait); with nothing to do, the pair is in sync as of now. Not if a reload removed
        the pair since the poll began (a KeyError traceback), or replaced it by one of the
        same name elsewhere: the old listing's paths are not the new pair's, nor is its
        "nothing to do" a first pass of the new place."""
        name = syncer.name
        with self._pairs_lock:
            if self.engine.syncers.get(name) is not syncer:
                return
            changed += syncer.stats.due_failures()
            # Held: decided again, they may be in sync now.
            changed += list(syncer.deletions.pending())
            for path in changed:
                self.engine.queue.put(name, path)
            if not changed:
                self._mark_if_in_sync(name)

    def _mark_if_in_sync(self, name: str) -> None:
        """A poll or scan found nothing to do: the pair is in sync as of now, unless a local
        change is still settling or queued, a retry waits, a failure stands (waiting out its
        backoff), a deletion is held or a conflict is open. `last_sync` must never pass a
        write that has not reached the other side: scripts wait on it."""
        syncer = self.engine.syncers[name]
        settling = any(pair == name for pair, _ in self.settler.pending_keys())
        if not settling and not self.engine.pair_busy(name) and syncer.in_sync():
            syncer.mark_synced()

    # -- control --------------------------------------------------------------------------
    def dispatch(self, cmd: str, args: dict[str, Any]) -> Any:
        if cmd == "ping":
            return "pong"
        if cmd == "status":
            return self.status()
        if cmd == "sync":
            names = self._pairs(args.get("pair"))
            for name in names:
                if args.get("force"):
                    self.engine.force.add(name)
                self.rescan(name)
            # A paused pair compares both sides, but moves nothing until it is resumed.
            paused = [name for name in names if self.engine.queue.is_paused(name)]
            return {"queued": True, "paused": paused}
        if cmd == "resolve":
            return self._resolve(args)
        if cmd in ("pause", "resume"):
            for name in self._pairs(args.get("pair")):
                (self._pause if cmd == "pause" else self._resume)(name)
            return self.status()
        if cmd == "retry":
            count = 0
            for name, syncer in self.engine.syncers.items():
                for path in syncer.stats.retryable():  # not refused names: a rename fixes them
                    self.engine.queue.put(name, path)
                    count += 1
            # A pair in `error` (its remote could not be listed) has no path to requeue: it
            # is compared again now, not at its next poll (which may be minutes away).
            faulty = sorted(
                name for name, syncer in self.engine.syncers.items() if syncer.stats.fault
            )
            for name in faulty:
                self.rescan(name)
            return {"requeued": count, "compared_again": faulty}
        if cmd == "conflicts":
            return conflict_list(self.engine.store, self.engine.syncers)
        raise CommandError(f"unknown command {cmd!r}")

    def _pause(self, name: str) -> None:
        """Hold the pair's queue, then stop what it has in flight: a stopped transfer's path
        is queued again (a large one keeps its parts) and waits in the held queue."""
        self.engine.queue.pause(name)
        syncer = self.engine.syncers.get(name)
        if syncer is not None:
            syncer.pause()

    def _resume(self, name: str) -> None:
        """Let the pair's transfers run again before its queue hands out their paths."""
        syncer = self.engine.syncers.get(name)
        if syncer is not None:
            syncer.resume()
        self.engine.queue.resume(name)

    def _resolve(self, args: dict[str, Any]) -> dict[str, Any]:
        pair, path, keep = args.get("pair"), args.get("path"), args.get("keep")
        if keep not in ("local", "remote", "both") or not isinstance(path, str):
            raise CommandError("resolve needs a path and keep: local, remote or both")
        path = normalize(path)  # conflicts are recorded as NFC; a client may send the NFD
        syncer = self.engine.syncers[self._pairs(pair)[0]]
        if path not in syncer.open_conflicts:
            raise CommandError(f"no open conflict for {path!r} in pair {syncer.name!r}")
        if self.engine.queue.is_paused(syncer.name):
            # Its queue would hold the decision until `resume`, long after the answer.
            raise CommandError(
                f"pair {syncer.name!r} is paused: `syncd resume --pair {syncer.name}` first"
            )
        syncer.keeps[path] = keep
        self.engine.queue.put(syncer.name, path)
        # Until it is carried out: a stale listing or a failed attempt keeps the decision for
        # the next one (`Syncer.sync_path`). Answered before the client gives up waiting.
        deadline = time.monotonic() + RESOLVE_WAIT_S
        while self._carrying_out(syncer, path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._carrying_out(syncer, path):
            return {"resolved": False, "pending": True, "outcome": None}
        resolved = path not in syncer.open_conflicts
        return {"resolved": resolved, "outcome": syncer.resolutions.pop(path, None)}

    def _carrying_out(self, syncer: PairSyncer, path: str) -> bool:
        return path in syncer.keeps or self.engine.queue.holds(syncer.name, path)

    def _pairs(self, name: object) -> list[str]:
        if name is None:
            with self._pairs_lock:
                return list(self.engine.syncers)
        if not isinstance(name, str) or name not in self.engine.syncers:
            raise CommandError(f"no pair named {name!r}")
        return [name]

    def _pair_states(self) -> list[tuple[str, str, int, int]]:
        """(name, state, queued, in flight) of every pair, from memory only: the systemd
        status line asks twice a second, and the summary's counts are queries over the whole
        state (~20 ms with 100,000 files)."""
        counts = self.engine.queue.counts()
        settling: dict[str, int] = {}
        for pair, _path in self.settler.pending_keys() + self.engine.delayed.pending_keys():
            settling[pair] = settling.get(pair, 0) + 1
        scanning = self._scanning_now()
        states = []
        for name, syncer in self.engine.syncers.items():
            queued, in_flight = counts.get(name, (0, 0))
            queued += settling.get(name, 0)
            stats = syncer.stats
            if self.engine.queue.is_paused(name):
                state = "paused"
            elif stats.fault is not None:
                state = "error"
            elif (
                (in_flight and not self._deciding_held_only(name, stats))
                or name in scanning
                or (stats.held_reason is None and (queued or self._pass_unfinished(name)))
            ):
                state = "syncing"
            elif stats.held_reason is not None:
                # Held deletions are decided again at every poll (the files may be back): a
                # queue of those is no syncing; the guard holding changes back is the news.
                state = "held"
            else:
                state = "idle"
            states.append((name, state, queued, in_flight))
        return states

    def _deciding_held_only(self, name: str, stats: PairStats) -> bool:
        """Is what the pair has in flight only its held deletions, decided again at a poll?
        That is no syncing: the pair flickered to `syncing` while a worker looked at one, and
        a script waiting for `held` (or reading it twice) missed it."""
        return stats.held_reason is not None and self.engine.queue.in_flight(name) <= set(
            stats.held
        )

    def _pass_unfinished(self, name: str) -> bool:
        """The pair's queue ran dry, but its pass has not ended yet: the main loop's next tick
        (`_end_quiet_passes`) lets its deletions through the guard, which may queue them, and
        stamps last_sync. Until then it is not `idle`: a client that waits for idle would read
        a last_sync from before, or miss a deletion still to come."""
        return name in self.engine.touched or self.engine.syncers[name].has_pending_deletes()

    def status(self) -> dict[str, Any]:
        with self._pairs_lock:
            return self._status()

    def _status(self) -> dict[str, Any]:
        pairs = []
        for name, state, queued, in_flight in self._pair_states():
            summary = self.engine.pair_summary(name)
            # The contract's keys first, in its order; then the rest of the summary.
            pairs.append(
                {
                    "name": name,
                    "state": state,
                    "local": summary.pop("local"),
                    "remote": summary.pop("remote"),
                    "queued": queued,
                    "in_flight": in_flight,
                    **summary,
                }
            )
        return {
            "state": "stopping" if self._stop.is_set() else "running",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "version": __version__,
            "pairs": pairs,
            "transfers": [asdict(view) for view in self.engine.inflight.snapshot()],
        }


def conflict_list(store: StateStore, pairs: Collection[str]) -> list[dict[str, Any]]:
    """Open conflicts of the config's `pairs` as `syncd conflicts --json` prints them. A pair
    renamed or removed since keeps its state (added back, it is no first sync), but no pass
    settles its conflicts any more: listed, they would wait (exit 4) for good."""
    return [
        {"pair": pair, "path": path, "reason": reason, "detected_at": _iso(detected)}
        for pair, path, reason, detected in store.conflicts()
        if pair in pairs
    ]


def _refused_name(path: str) -> str | None:
    """The first name along a local `path` that no remote key may hold (a folder named in
    bytes that are not UTF-8, say), as the scan refuses it: the whole path up to it. None
    when every name may be a key."""
    if is_plain_key(path):
        return None  # the common case: one regex match
    names = path.split("/")
    for depth, name in enumerate(names, start=1):
        if key_refusal(name) is not None:
            return "/".join(names[:depth])
    return None


def _excluded(syncer: PairSyncer, path: str) -> bool:
    """The filters leave `path` out, as a file or as a folder: a refused name there is no
    failure (see the scan)."""
    return syncer.filter.excluded(path) or syncer.filter.excluded(path, is_dir=True)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Waiting:
    """A pair's failed paths still waiting for their backoff, with the remote version of each
    at the last look (taken before a listing)."""

    seen: dict[str, ObjectInfo | None] = field(default_factory=dict)

    @classmethod
    def of(cls, syncer: PairSyncer) -> _Waiting:
        return cls({path: syncer.index.get(path) for path in syncer.stats.waiting_failures()})

    def past_backoff(self, syncer: PairSyncer, paths: set[str]) -> set[str]:
        """`paths` (found to need work) less the failed ones that wait for their backoff
        (`_requeue_due` takes them when due), plus any of those the remote has changed since
        the last look (a fixed object, or one gone): a path that failed to come down never
        reaches the base, and every poll tried it again, whatever the backoff."""
        moved = {p for p, before in self.seen.items() if _moved(before, syncer.index.get(p))}
        return (paths - self.seen.keys()) | moved


def _moved(before: ObjectInfo | None, now: ObjectInfo | None) -> bool:
    """Whether a remote object is another version (or gone, or new) since `before`."""
    if before is None or now is None:
        return (before is None) != (now is None)
    return (now.etag, now.meta_version) != (before.etag, before.meta_version)


def _identity(root: Path) -> tuple[int, int] | None:
    """The (device, inode) of the folder at `root`, or None when there is none."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

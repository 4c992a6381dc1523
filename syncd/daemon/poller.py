"""The remote side's change source: an APScheduler job per pair lists the remote every
`poll_interval` seconds and queues the paths whose version differs from the base."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

log = structlog.get_logger("syncd.poller")


class Poller:
    def __init__(self, poll: Callable[[str], None]) -> None:
        self._poll = poll
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )

    def add(self, pair: str, interval: float) -> None:
        self._scheduler.add_job(
            self._poll,
            "interval",
            seconds=interval,
            args=[pair],
            id=f"poll:{pair}",
            replace_existing=True,
            next_run_time=datetime.now().astimezone() + timedelta(seconds=interval),
        )

    def every(self, name: str, interval: float, job: Callable[[], None]) -> None:
        """Run `job` now (as soon as a scheduler thread is free), then every `interval`
        seconds: the daemon's housekeeping, which belongs to no pair."""
        self._scheduler.add_job(
            job,
            "interval",
            seconds=interval,
            id=f"every:{name}",
            replace_existing=True,
            next_run_time=datetime.now().astimezone(),
        )

    def remove(self, pair: str) -> None:
        """Stop polling `pair`. A pair that is not polled is no error: one a reload could not
        add has no job, and its removal by a later reload ended the daemon (JobLookupError)."""
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(f"poll:{pair}")

    def start(self) -> None:
        self._scheduler.start()

    def is_alive(self) -> bool:
        return bool(self._scheduler.running)

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

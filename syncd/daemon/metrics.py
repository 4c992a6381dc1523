"""The optional Prometheus endpoint (`metrics: {listen: "127.0.0.1:9464"}`).

A custom collector reads the engine's counters at scrape time, so metrics cost nothing on the
transfer path and can never disagree with `syncd status`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from syncd.engine.core import Engine
from syncd.engine.stats import DURATION_BUCKETS


class EngineCollector(Collector):
    def __init__(self, engine: Engine, status: Callable[[], dict[str, Any]]) -> None:
        self.engine = engine
        self.status = status

    def collect(self) -> Iterator[Metric]:
        files = CounterMetricFamily(
            "syncd_files_transferred", "Files transferred", labels=["pair", "direction"]
        )
        volume = CounterMetricFamily(
            "syncd_bytes_transferred", "Bytes transferred", labels=["pair", "direction"]
        )
        durations = HistogramMetricFamily(
            "syncd_transfer_duration_seconds", "Time per transfer", labels=["pair", "direction"]
        )
        gauges = {
            "queued": GaugeMetricFamily("syncd_queue_depth", "Paths waiting", labels=["pair"]),
            "in_flight": GaugeMetricFamily("syncd_in_flight", "Paths in flight", labels=["pair"]),
            "failed": GaugeMetricFamily("syncd_failures", "Paths failing now", labels=["pair"]),
            "conflicts": GaugeMetricFamily(
                "syncd_conflicts", "Conflicts waiting for a decision", labels=["pair"]
            ),
            "held": GaugeMetricFamily(
                "syncd_held_deletions", "Deletions held by max_delete", labels=["pair"]
            ),
        }
        last_sync = GaugeMetricFamily(
            "syncd_last_sync_timestamp_seconds", "When the pair was last in sync", labels=["pair"]
        )
        by_name = {pair["name"]: pair for pair in self.status()["pairs"]}
        for name, syncer in list(self.engine.syncers.items()):
            stats = syncer.stats
            for direction, count, size in (
                ("upload", stats.uploaded, stats.bytes_up),
                ("download", stats.downloaded, stats.bytes_down),
            ):
                files.add_metric([name, direction], count)
                volume.add_metric([name, direction], size)
                slots = stats.durations.get(direction, [0] * (len(DURATION_BUCKETS) + 1))
                cumulative, buckets = 0, []
                for bound, slot in zip((*map(str, DURATION_BUCKETS), "+Inf"), slots, strict=True):
                    cumulative += slot
                    buckets.append((bound, cumulative))
                durations.add_metric(
                    [name, direction], buckets, sum_value=stats.duration_sums.get(direction, 0.0)
                )
            pair = by_name.get(name, {})
            for key, gauge in gauges.items():
                gauge.add_metric([name], float(pair.get(key) or 0))
            if stats.last_sync is not None:
                last_sync.add_metric([name], stats.last_sync)
        yield from (files, volume, durations, *gauges.values(), last_sync)


class MetricsUnavailable(Exception):
    """The endpoint cannot listen where `metrics.listen` says (the port is taken, the address
    is not this machine's): the daemon does not start."""


def serve_metrics(
    listen: tuple[str, int], engine: Engine, status: Callable[[], dict[str, Any]]
) -> None:
    """Start the endpoint on its own thread (a daemon thread of prometheus_client)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, status))
    host, port = listen
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise MetricsUnavailable(f"cannot listen on {where}: {exc.strerror or exc}") from None

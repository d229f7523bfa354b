"""Prometheus metrics, served at ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.caches import CacheStats
from stream.registry import SessionRegistry

if TYPE_CHECKING:
    from pipelines.memory import MemoryReading

STAGES = ("queue", "decode", "infer", "encode", "total")
# Seconds, from a passthrough frame on loopback to a slow diffusion step.
_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.006,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class _CacheCollector(Collector):
    """The pipeline's cache counters, read when /metrics is scraped."""

    def __init__(self, cache_stats: Callable[[], Mapping[str, CacheStats]]) -> None:
        self._cache_stats = cache_stats

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "livegen_cache_hits", "Work a pipeline cache saved, by cache.", labels=["cache"]
        )
        misses = CounterMetricFamily(
            "livegen_cache_misses", "Work a pipeline cache could not save.", labels=["cache"]
        )
        for name, stats in self._cache_stats().items():
            hits.add_metric([name], stats.hits)
            misses.add_metric([name], stats.misses)
        yield hits
        yield misses


class _MemoryCollector(Collector):
    """Memory pressure, read when /metrics is scraped: the device's on CUDA, the host's on
    a CPU. Left out where it cannot be read."""

    def __init__(self, memory: Callable[[], MemoryReading | None]) -> None:
        self._memory = memory

    def collect(self) -> Iterator[Metric]:
        reading = self._memory()
        if reading is None:
            return
        sizes = GaugeMetricFamily(
            "livegen_memory_bytes",
            "Memory of the device the pipeline runs on (the host's on a CPU): total, "
            "available to allocate, and held by this process.",
            labels=["kind"],
        )
        sizes.add_metric(["total"], reading.total_bytes)
        sizes.add_metric(["available"], reading.available_bytes)
        sizes.add_metric(["process"], reading.process_bytes)
        yield sizes
        yield GaugeMetricFamily(
            "livegen_memory_pressure",
            "Share of that memory in use, 0 to 1: near 1, batches start to run out of memory.",
            value=reading.pressure,
        )


def _no_reading() -> MemoryReading | None:
    return None


def _event_loop_tasks() -> int:
    try:  # /metrics is rendered on the event loop
        return len(asyncio.all_tasks())
    except RuntimeError:  # read from elsewhere (a test's thread)
        return 0


class Metrics:
    def __init__(
        self,
        sessions: SessionRegistry,
        cache_stats: Callable[[], Mapping[str, CacheStats]] = dict,
        memory: Callable[[], MemoryReading | None] = _no_reading,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CacheCollector(cache_stats))
        self.registry.register(_MemoryCollector(memory))
        Gauge(
            "livegen_max_sessions",
            "Sessions the server holds at once (--max-sessions, or what auto derived).",
            registry=self.registry,
        ).set_function(lambda: sessions.max_sessions)
        self.session_state_bytes = Gauge(
            "livegen_session_state_bytes",
            "Device memory one session's cached tensors took at the default params, as "
            "measured after warm-up for --max-sessions auto (0 when not measured).",
            registry=self.registry,
        )
        self.out_of_memory = Counter(
            "livegen_out_of_memory",
            "Pipeline calls that ran out of device memory, by what followed: split (the "
            "batch ran again as two halves), retried (one request, after memory was freed), "
            "refused (one request that did not fit alone: pipeline_failed).",
            ["outcome"],
            registry=self.registry,
        )
        Gauge(
            "livegen_event_loop_tasks",
            "Tasks on the server's event loop: flat over hours, or something leaks.",
            registry=self.registry,
        ).set_function(_event_loop_tasks)
        self.session_states_freed = Counter(
            "livegen_session_states_freed",
            "Detached sessions whose cached tensors were dropped to free device memory.",
            registry=self.registry,
        )
        gauge = Gauge(
            "livegen_sessions", "Sessions held, by state.", ["state"], registry=self.registry
        )
        gauge.labels("attached").set_function(lambda: sessions.attached)
        gauge.labels("detached").set_function(
            lambda: sum(s.expires_at is not None for s in sessions)
        )
        self.frames_in = Counter(
            "livegen_frames_in", "Input frames received.", registry=self.registry
        )
        self.frames_out = Counter(
            "livegen_frames_out", "Generated frames sent.", registry=self.registry
        )
        self.frames_dropped = Counter(
            "livegen_frames_dropped",
            "Frames replaced by a newer one before use: inputs before the pipeline, "
            "outputs before a slow client read them.",
            ["where"],
            registry=self.registry,
        )
        self.errors = Counter(
            "livegen_errors",
            "Error messages sent to clients, by code.",
            ["code"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "livegen_stage_seconds",
            "Per-frame latency by stage; total is receipt to send.",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "livegen_batch_size",
            "Requests per pipeline call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for where in ("input", "output"):
            self.frames_dropped.labels(where)
        for outcome in ("split", "retried", "refused"):
            self.out_of_memory.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics, served at ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.caches import CacheStats
from stream.registry import SessionRegistry

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


class Metrics:
    def __init__(
        self,
        sessions: SessionRegistry,
        cache_stats: Callable[[], Mapping[str, CacheStats]] = dict,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CacheCollector(cache_stats))
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

    def render(self) -> bytes:
        return generate_latest(self.registry)

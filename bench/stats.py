"""Summary statistics shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_ms(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, mean and max in milliseconds of ``latencies`` in seconds."""
    ms = np.asarray(latencies) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    stats = {"p50": p50, "p95": p95, "p99": p99, "mean": ms.mean(), "max": ms.max()}
    return {name: round(float(value), 3) for name, value in stats.items()}

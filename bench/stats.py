"""What every benchmark records: latency statistics and the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def latency_ms(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, mean and max in milliseconds of ``latencies`` in seconds."""
    ms = np.asarray(latencies) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    stats = {"p50": p50, "p95": p95, "p99": p99, "mean": ms.mean(), "max": ms.max()}
    return {name: round(float(value), 3) for name, value in stats.items()}


def describe_machine(packages: Iterable[str]) -> dict[str, Any]:
    """Platform, CPU, Python, the versions of ``packages`` installed, the load at the start."""
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "packages": versions,
        "loadavg_at_start": os.getloadavg(),
    }

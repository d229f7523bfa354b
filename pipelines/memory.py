"""Device memory: what is left, what a session costs, and giving back what is cached.

The inference thread uses this when a batch runs out of device memory (to free
the allocator's cache before it retries smaller batches), the server's
``--max-sessions auto`` divides the memory left after warm-up by what one
session's cached tensors measured, and ``/metrics`` reads the memory pressure
from here. On CUDA the budget is the device's own memory. A CPU (or Apple's
MPS, whose memory is the host's) has no memory of its own to divide: its
tensors share host memory with everything else on the machine, so there is no
budget to derive a session count from; the readings then describe the host.

torch is imported where a device's memory is read, not with this module: the
passthrough pipeline uses it without torch, and so starts in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from pipelines.base import Pipeline


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Memory now: the device's (CUDA) or the host's (a CPU), in bytes."""

    total_bytes: int
    available_bytes: int
    process_bytes: int  # held by this process: CUDA's reserved pool, or the resident set

    @property
    def pressure(self) -> float:
        """The share of the memory in use, by anything: 0 (idle) to 1 (nothing left)."""
        return 1.0 - self.available_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """What ``--max-sessions auto`` divides, measured on the inference thread after warm-up."""

    session_bytes: int  # one session's cached tensors at the default params
    batch_bytes: int  # working memory a full batch needs while it runs
    available_bytes: int | None  # left on the device after warm-up; None without a budget

    def sessions_that_fit(self) -> int | None:
        """Sessions whose cached tensors fit beside a running batch; None when memory sets
        no limit (no device budget, or sessions that cache nothing). At least one: a
        server that could hold none would refuse everyone."""
        if self.available_bytes is None or self.session_bytes == 0:
            return None
        return max(1, (self.available_bytes - self.batch_bytes) // self.session_bytes)


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory error (``torch.cuda.OutOfMemoryError`` is the same)."""
    torch = sys.modules.get("torch")  # not loaded: nothing could have raised its error
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def free_cached(device: torch.device) -> None:
    """Give back what nothing references any more: unreachable tensors, then CUDA's cache."""
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def read_memory(device: torch.device) -> MemoryReading | None:
    """The device's memory on CUDA, the host's elsewhere; None where it cannot be read."""
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        return MemoryReading(total, free, torch.cuda.memory_reserved(device))
    return read_host_memory()


def read_host_memory() -> MemoryReading | None:
    """The host's memory, and this process's resident set; None off Linux."""
    try:  # Linux; elsewhere there is no cheap reading and the metrics leave it out
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        return None
    kib = {name: int(value.split()[0]) * 1024 for name, value in fields.items()}
    return MemoryReading(
        kib["MemTotal"], kib["MemAvailable"], resident_pages * os.sysconf("SC_PAGE_SIZE")
    )


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors and arrays in ``value``, through dataclasses and containers.

    A storage shared by several tensors (views) counts once.
    """
    import torch

    seen: set[int] = set()

    def walk(item: Any) -> int:
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()
        if isinstance(item, np.ndarray):
            return item.nbytes
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return sum(walk(getattr(item, f.name)) for f in dataclasses.fields(item))
        if isinstance(item, dict):
            return sum(walk(v) for v in item.values())
        if isinstance(item, list | tuple):
            return sum(walk(v) for v in item)
        return 0

    return walk(value)


def measure_budget(pipeline: Pipeline, max_batch: int) -> MemoryBudget:
    """Run one image-to-image request at the default params on a fresh session state.

    What that state then holds is one session's cost. On CUDA, the request's peak
    working memory times ``max_batch`` is kept free for a running batch, and the
    memory left (free on the device, plus what the allocator caches unused) is the
    budget. Call it on the inference thread, after warm-up.
    """
    import torch

    from pipelines.base import FrameRequest

    params = pipeline.default_params
    image = np.zeros((params.height, params.width, 3), np.uint8)
    cuda = pipeline.device.type == "cuda"
    if cuda:
        free_cached(pipeline.device)
        torch.cuda.synchronize(pipeline.device)
        torch.cuda.reset_peak_memory_stats(pipeline.device)
        before = torch.cuda.memory_allocated(pipeline.device)
    state = pipeline.new_state()
    pipeline([FrameRequest(state, params, image)])
    session_bytes = tensor_bytes(state)
    if not cuda:
        return MemoryBudget(session_bytes, batch_bytes=0, available_bytes=None)
    torch.cuda.synchronize(pipeline.device)
    working = torch.cuda.max_memory_allocated(pipeline.device) - before - session_bytes
    del state
    free_cached(pipeline.device)
    free, _ = torch.cuda.mem_get_info(pipeline.device)
    return MemoryBudget(session_bytes, max(0, working) * max_batch, free)

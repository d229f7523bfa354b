"""A batch split into lanes that run at once, each on its share of the CPU's threads.

One frame's operators use a CPU's cores poorly: the tiny autoencoder decodes a
256 px frame in 143 ms on one thread and in 91 ms on two, not 72. Two frames side
by side, one thread each, make better use of the same two cores (77 ms a frame).
So on the CPU a batch of several sessions' requests is cut into lanes, each run by
a thread of its own with ``threads // lanes`` intra-op threads; a lone request
keeps every thread on the calling thread, so a single session's latency does not
change. SD-Turbo at 256 px, 4 sessions, bfloat16 on 2 cores: two lanes of two
frames beat one call of four by 1.07x (bench/README.md).

Some kernels (channels-last GroupNorm) sum in an order that depends on the thread
count, so a frame made in a lane can differ from the same frame made alone: by a
level of 255 at most in float32, a few in bfloat16.

PyTorch's intra-op thread count is per thread (OpenMP's), but a thread that has
not run an operator yet takes it from a process-wide default, which
``torch.set_num_threads`` also sets. Lanes set their own count once when they
start and put the default back, so threads started later still get them all.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


class Lanes:
    """Runs ``fn`` over parts of a batch, one part per lane, all at once."""

    def __init__(self, count: int) -> None:
        threads = torch.get_num_threads()
        self.count = max(1, min(count, threads))
        self.threads_each = threads // self.count
        self._pool: ThreadPoolExecutor | None = None
        if self.count > 1:
            started = threading.Barrier(self.count)
            self._pool = ThreadPoolExecutor(
                self.count,
                thread_name_prefix="livegen-lane",
                initializer=self._start_lane,
            )
            # Submit one wait per lane so that every lane thread starts now, then
            # give threads started later the whole count again.
            for wait in [self._pool.submit(started.wait) for _ in range(self.count)]:
                wait.result()
            torch.set_num_threads(threads)

    def _start_lane(self) -> None:
        torch.get_num_threads()  # take the process default first, so it is not applied later
        torch.set_num_threads(self.threads_each)

    def map(self, fn: Callable[[slice], T], batch_size: int) -> list[T]:
        """``fn`` over contiguous slices covering ``range(batch_size)``, in order.

        With one lane, or one sample, ``fn`` runs once here on the whole batch.
        Each lane runs in inference mode, as the pipeline's own calls do.
        """
        lanes = min(self.count, batch_size)
        if self._pool is None or lanes < 2:
            return [fn(slice(0, batch_size))]
        bounds = [batch_size * lane // lanes for lane in range(lanes + 1)]
        parts = [slice(start, end) for start, end in itertools.pairwise(bounds)]
        futures = [self._pool.submit(_in_inference_mode, fn, part) for part in parts]
        return [future.result() for future in futures]


def _in_inference_mode(fn: Callable[[slice], T], part: slice) -> T:
    with torch.inference_mode():
        return fn(part)

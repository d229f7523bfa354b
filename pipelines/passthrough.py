"""The passthrough pipeline: returns each input's pixels unchanged.

It costs nothing, so a round trip through it measures everything that is not
the model: transport, codecs, scheduling. Transport tests and ``bench/`` use it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import fields

import numpy as np

from pipelines.base import FrameRequest, Pipeline
from pipelines.memory import MemoryReading, read_host_memory
from stream.params import Params


class PassthroughPipeline(Pipeline):
    name = "passthrough"
    max_batch_size = 64

    def warmup(self) -> None:
        self([FrameRequest(state=None, params=Params(), image=np.zeros((8, 8, 3), np.uint8))])

    def ignored_params(self) -> frozenset[str]:
        # The output is the input: the params only choose how it is encoded.
        return frozenset(field.name for field in fields(Params)) - {"output_format", "quality"}

    def memory(self) -> MemoryReading | None:
        # No device of its own: the host's memory, read without loading torch.
        return read_host_memory()

    def batch_key(self, request: FrameRequest) -> Hashable:
        # Nothing is computed, so every request can share a call.
        return None

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        outputs = []
        for request in requests:
            if request.image is None:
                raise ValueError("the passthrough pipeline needs an input frame")
            outputs.append(request.image)
        return outputs

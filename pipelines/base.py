"""The pipeline interface: load, warm up, make session state, run a batch.

The server's inference thread is the only caller. It creates per-session state
with :meth:`Pipeline.new_state` the first time a session's request runs, groups
ready requests by :meth:`Pipeline.batch_key`, and calls the pipeline once per
group with at most :attr:`Pipeline.max_batch_size` requests.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from pipelines.caches import CacheStats
from pipelines.memory import MemoryReading, free_cached, read_memory
from stream.params import Params

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """How to load a pipeline. Every field is an option, not a fork of the code."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    # Folder or hub id of a tiny autoencoder (TAESD) used in place of the model's VAE.
    tiny_vae: str | None = None
    # LoRA adapters loaded once at start, by the name sessions pick them with.
    loras: Mapping[str, str] = field(default_factory=dict)
    # Structure controls loaded once at start, by the name sessions pick them with
    # (the ``controlnet`` param): ControlNets and T2I-Adapters, folders or hub ids.
    controlnets: Mapping[str, str] = field(default_factory=dict)
    t2i_adapters: Mapping[str, str] = field(default_factory=dict)
    # NHWC convolutions: 1.4x faster TAESD on the CPU (bench), the layout GPUs prefer too.
    channels_last: bool = True
    # CPU: convolution and linear weights reordered for oneDNN once per input size (prepack.py).
    prepack_weights: bool = True
    compile: bool = False
    # CPU: a batch runs as this many lanes at once, each on its share of the threads (lanes.py).
    cpu_lanes: int = 2
    prompt_cache_size: int = 256


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    import torch  # here: the passthrough pipeline never needs a device, nor torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(slots=True)
class FrameRequest:
    """One session's request in a batch.

    ``image`` is the decoded input, (height, width, 3) uint8 RGB, or None for a
    text-only request. ``state`` is what :meth:`Pipeline.new_state` made for
    this session; the pipeline may update it in place (caches).
    """

    state: Any
    params: Params
    image: np.ndarray | None


class Pipeline(abc.ABC):
    name: str
    max_batch_size: int = 8
    # True when a request without an input image means something (text-to-image).
    text_to_image: bool = False

    def __init__(self, options: PipelineOptions) -> None:
        self.options = options

    @functools.cached_property
    def device(self) -> torch.device:
        """The torch device the options name, resolved (and torch loaded) on first use."""
        return resolve_device(self.options.device)

    @classmethod
    def load(cls, options: PipelineOptions) -> Self:
        """Load whatever the pipeline needs (weights); slow, called once at start."""
        return cls(options)

    @property
    def default_params(self) -> Params:
        """What a new session starts from before its own params apply."""
        return Params()

    @abc.abstractmethod
    def warmup(self) -> None:
        """Run once before the server reports ready, so the first frame is not slow."""

    def new_state(self) -> Any:
        """Per-session state (caches); None when the pipeline keeps none."""
        return None

    def free_memory(self) -> None:
        """Give back device memory nothing uses: after an out-of-memory error, before a retry."""
        free_cached(self.device)

    def memory(self) -> MemoryReading | None:
        """The device's memory now (the host's on a CPU), for the metrics."""
        return read_memory(self.device)

    def cache_stats(self) -> Mapping[str, CacheStats]:
        """Hit and miss counters of each cache, by name, for the metrics."""
        return {}

    def ignored_params(self) -> frozenset[str]:
        """Params this pipeline's frames never depend on, whatever the others are.

        Sessions are told (``session.started``), so a client can show their
        controls as doing nothing.
        """
        return frozenset()

    def controls(self) -> dict[str, list[str]]:
        """The loaded conditioning sessions may pick, by kind (``session.started``)."""
        return {}

    def check_params(self, params: Params) -> None:  # noqa: B027 - accepting all is a default
        """Raise ``ValueError`` naming the problem if this pipeline cannot serve ``params``."""

    def batch_key(self, request: FrameRequest) -> Hashable:
        """Requests with equal keys may run in one call."""
        return (request.params.width, request.params.height, request.params.steps)

    @abc.abstractmethod
    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        """Run a batch; return one (height, width, 3) uint8 RGB array per request."""

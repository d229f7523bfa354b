"""Convolution and linear weights reordered once for oneDNN, on the CPU.

PyTorch's CPU convolutions and matrix products take the weight in PyTorch's plain
layout, and the kernel reorders it into its own blocked layout on every call. For
the UNet's deep, low-resolution layers that reorder costs more than the arithmetic:
a 1280-channel 3x3 weight is 59 MB of float32 copied per call, and SD 2's UNet holds
2.1 GiB of convolution weights, all copied every pass. Inductor's freezing and
Intel's IPEX avoid it by packing each weight once; so does this, in eager mode, with
the same oneDNN operators inductor uses, for the UNet, the autoencoder and the text
encoders (SD-Turbo at 256 px: UNet 2.2 s -> 1.6 s a pass in float32,
bench/README.md; a 1280 -> 5120 linear layer on 64 tokens 4.9 -> 1.6 ms in
bfloat16).

oneDNN picks the packed layout for the input's shape, and a layout packed for one
size is slow for another (SD-Turbo's UNet at 256 px with weights packed for 512 px:
2.4 s a pass instead of 1.6 s, no better than unpacked). So each layer keeps one
packing per input size (a convolution's height and width, a linear layer's token
count), for the ``PACKED_SIZES`` sizes used last (the warm-up size and one more,
typically); the batch size needs no packing of its own (a batch of 4 runs as fast on
weights packed for 1). Outputs equal the plain layer's in float32; in bfloat16 the
two kernels round differently. The price is memory: a packed copy of every weight
per size kept, beside the original (which LoRA adapters and the state dict keep
using). Sessions cycling through more sizes than that repack at each change, which
costs about what the plain layer's own reorder does. A layer whose weight changes in
place is packed again. If the operators are missing or fail (another PyTorch build),
the plain layers run and the reason is logged once.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from pipelines.caches import LruCache

log = logging.getLogger(__name__)


def packable_dtypes() -> tuple[torch.dtype, ...]:
    """The weight dtypes oneDNN packs on this CPU: bfloat16 needs AVX-512 (or AVX-NE-CONVERT)."""
    bfloat16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (torch.float32, torch.bfloat16) if bfloat16 else (torch.float32,)


# Input sizes each layer keeps a packed weight for.
PACKED_SIZES = 2


def available() -> bool:
    """Whether this PyTorch build has oneDNN and the packing operators."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(  # type: ignore[no-untyped-call]
        hasattr(ops, name)
        for name in (
            "_reorder_convolution_weight",
            "_convolution_pointwise",
            "_reorder_linear_weight",
            "_linear_pointwise",
        )
    )


def prepack_weights(module: nn.Module) -> int:
    """Make the plain 2D convolutions and linear layers in ``module`` pack their weights.

    Returns how many layers now do. Only layers oneDNN runs as they are take part:
    float32 or (where the CPU has it) bfloat16 weights, and for convolutions zero
    padding given as numbers (not "same"). Others are left alone, and so is a layer already packing.
    """
    if not available():
        log.info("oneDNN weight packing is not available in this PyTorch build")
        return 0
    dtypes = packable_dtypes()
    count = 0
    for layer in module.modules():
        if isinstance(layer.__dict__.get("forward"), PackedWeight):
            continue
        packing: PackedWeight | None = None
        if type(layer) is nn.Conv2d:
            if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
                packing = PackedConvolution(layer)
        elif type(layer) is nn.Linear:
            packing = PackedLinear(layer)
        if packing is not None and layer.weight.dtype in dtypes:
            layer.forward = packing  # an instance override
            count += 1
    return count


class PackedWeight(ABC):
    """A layer's forward that packs its weight at the first CPU inference call of a size."""

    failed = False  # set on the class: once the operators fail, no layer tries again

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        self.layer = layer
        # size -> the weight packed for inputs of that size.
        self.packed: LruCache[Hashable, torch.Tensor] = LruCache(PACKED_SIZES)
        self._packed_from: tuple[int, int] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight
        if (
            PackedWeight.failed
            or x.device.type != "cpu"
            or x.dtype != weight.dtype
            or not self.fits(x)
            or torch.is_grad_enabled()
        ):
            return self.plain(x)
        try:
            return self.run(x, self._packed_for(x))
        except (RuntimeError, TypeError, AttributeError):
            PackedWeight.failed = True
            log.warning("oneDNN weight packing failed; layers run unpacked", exc_info=True)
            return self.plain(x)

    def _packed_for(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight
        source = (weight.data_ptr(), weight._version)
        if self._packed_from != source:  # a new or changed weight: every packing is stale
            self.packed.clear()
            self._packed_from = source
        [packed] = self.packed.get_many([self.size(x)], lambda _: [self.pack(x)])
        return packed

    @abstractmethod
    def fits(self, x: torch.Tensor) -> bool:
        """Whether the packed operator takes ``x`` (else the plain forward runs)."""

    @abstractmethod
    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's own forward."""

    @abstractmethod
    def size(self, x: torch.Tensor) -> Hashable:
        """What the packed layout depends on, beyond the batch."""

    @abstractmethod
    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's layout for inputs like ``x``."""

    @abstractmethod
    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """The layer's output from the packed weight."""


class PackedConvolution(PackedWeight):
    layer: nn.Conv2d

    def _args(self) -> tuple[Any, ...]:
        conv = self.layer
        return (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

    def fits(self, x: torch.Tensor) -> bool:
        return x.dim() == 4  # batched; an unbatched image goes the plain way

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Conv2d.forward(self.layer, x)

    def size(self, x: torch.Tensor) -> Hashable:
        return (x.shape[-2], x.shape[-1])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        packed: torch.Tensor = torch.ops.mkldnn._reorder_convolution_weight(
            self.layer.weight, *self._args(), list(x.shape)
        )
        return packed

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
            x, packed, self.layer.bias, *self._args(), "none", [], ""
        )
        return output


class PackedLinear(PackedWeight):
    layer: nn.Linear

    def fits(self, x: torch.Tensor) -> bool:
        return x.dim() >= 2

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear.forward(self.layer, x)

    def size(self, x: torch.Tensor) -> Hashable:
        return tuple(x.shape[1:-1])  # the tokens per sample; () for one vector each

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(self.layer.weight, rows)
        return packed

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, packed, self.layer.bias, "none", [], ""
        )
        return output

"""Convolution weights reordered once for oneDNN, on the CPU.

PyTorch's CPU convolution hands oneDNN the weight in PyTorch's plain layout, and
oneDNN reorders it into its blocked layout on every call. For the UNet's deep,
low-resolution layers that reorder costs more than the convolution: a 1280-channel
3x3 weight is 59 MB of float32 copied per call, and SD 2's UNet holds 2.1 GiB of
convolution weights, all copied every pass. Inductor's freezing and Intel's IPEX
avoid it by packing each weight once; so does this, in eager mode, with the same
oneDNN operators inductor uses (SD-Turbo at 256 px: UNet 2.2 s -> 1.6 s a pass,
bench/README.md).

oneDNN picks the packed layout for the input's height and width, and a layout
packed for one size is slow for another (SD-Turbo's UNet at 256 px with weights
packed for 512 px: 2.4 s a pass instead of 1.6 s, no better than unpacked). So
each convolution keeps one packing per input size, for the ``PACKED_SIZES`` sizes
used last (the warm-up size and one more, typically); a batch size needs no
packing of its own. Outputs equal the plain convolution's. The price is memory:
a packed copy of every convolution weight per size kept, beside the original
(which LoRA adapters and the state dict keep using). Sessions cycling through
more sizes than that repack at each change, which costs about what the plain
convolution's own reorder does. A convolution whose weight changes in place is
packed again. If the operators are
missing or fail (another PyTorch build), the plain convolution runs and the
reason is logged once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.bfloat16)

# Input sizes (height, width) each convolution keeps a packed weight for.
PACKED_SIZES = 2


def available() -> bool:
    """Whether this PyTorch build has oneDNN and the packing operators."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(ops, "_reorder_convolution_weight")
        and hasattr(ops, "_convolution_pointwise")
    )


def prepack_convolutions(module: nn.Module) -> int:
    """Make every plain 2D convolution in ``module`` pack its weight once; return how many.

    Only convolutions that oneDNN runs as they are take part: zero padding given as
    numbers (not "same"), float32 or bfloat16 weights. Others are left alone.
    """
    if not available():
        log.info("oneDNN weight packing is not available in this PyTorch build")
        return 0
    count = 0
    for conv in module.modules():
        if (
            type(conv) is nn.Conv2d
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and conv.weight.dtype in _DTYPES
            and not isinstance(conv.__dict__.get("forward"), PackedConvolution)
        ):
            conv.forward = PackedConvolution(conv)  # type: ignore[assignment]  # an instance override
            count += 1
    return count


class PackedConvolution:
    """A ``Conv2d``'s forward that packs its weight at the first CPU inference call of a size."""

    failed = False  # set on the class: once the operators fail, no convolution tries again

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv
        # (height, width) -> the weight packed for inputs of that size, least recent first.
        self.packed: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._packed_from: tuple[int, int] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if (
            PackedConvolution.failed
            or x.device.type != "cpu"
            or x.dtype != conv.weight.dtype
            or torch.is_grad_enabled()
        ):
            return nn.Conv2d.forward(conv, x)
        args: tuple[Any, ...] = (
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
        )
        try:
            output: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_for(x, args), conv.bias, *args, "none", [], ""
            )
            return output
        except (RuntimeError, TypeError, AttributeError):
            PackedConvolution.failed = True
            log.warning("oneDNN weight packing failed; convolutions run unpacked", exc_info=True)
            return nn.Conv2d.forward(conv, x)

    def _packed_for(self, x: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
        weight = self.conv.weight
        source = (weight.data_ptr(), weight._version)
        if self._packed_from != source:  # a new or changed weight: every packing is stale
            self.packed.clear()
            self._packed_from = source
        size = (x.shape[-2], x.shape[-1])
        packed = self.packed.get(size)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *args, list(x.shape))
            self.packed[size] = packed
            if len(self.packed) > PACKED_SIZES:
                self.packed.popitem(last=False)
        else:
            self.packed.move_to_end(size)
        return packed

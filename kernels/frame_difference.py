"""The similarity filter's measure: each frame's mean absolute difference from the last one.

``pipelines.diffusion`` answers an input that is nearly the same as the one the
last frame was made from with that frame, without a UNet pass; "nearly" is the
mean absolute difference of the uint8 pixels, over 255, at most the session's
``similarity_threshold``. In torch that is a widening copy, a subtraction, an
absolute value and a float mean, four passes over two frames; here one read of
each.

The sum of differences is an integer, summed exactly (int32 or int64) in both
the kernel and the reference, then divided in float64: the two give the same float32,
bit for bit, whatever the order of the sum.

Parts: ``_frame_difference_kernel`` (Triton, one program per frame),
``frame_difference_triton`` (its launcher), ``frame_difference_ref`` (plain torch)
and ``frame_difference`` (the dispatcher).
"""

from __future__ import annotations

import torch

from livegen_kernels.dispatch import jit, require, tl, use_triton

BLOCK = 1024


def _check_pair(current: torch.Tensor, last: torch.Tensor) -> None:
    if current.shape != last.shape:
        raise ValueError(
            f"frames to compare must have one shape, got {tuple(current.shape)} and "
            f"{tuple(last.shape)}"
        )
    if current.ndim < 2:
        raise ValueError(f"frames must be a batch (B, ...), got shape {tuple(current.shape)}")


def frame_difference_ref(current: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(B, ...) uint8 twice -> (B,) float32: each frame's mean absolute difference over 255."""
    _check_pair(current, last)
    difference = (current.to(torch.int16) - last.to(torch.int16)).abs().flatten(1)
    # int32 holds the sum up to 8.4 M values a frame (4K is more) and sums as fast as float32.
    exact = torch.int32 if difference.shape[1] * 255 < 2**31 else torch.int64
    total = difference.sum(dim=1, dtype=exact).double()
    return (total / difference.shape[1] / 255.0).float()


def frame_difference(current: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(B, ...) uint8 twice -> (B,) float32 mean absolute difference: Triton on CUDA, else torch."""
    if use_triton(current):
        return frame_difference_triton(current.contiguous(), last.contiguous())
    return frame_difference_ref(current, last)


@jit
def _frame_difference_kernel(
    current,  # (B, N) uint8, contiguous
    last,  # (B, N) uint8, contiguous
    out,  # (B,) float32
    count,  # N
    BLOCK: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64) * count
    sums = tl.zeros((BLOCK,), tl.int64)
    for start in range(0, count, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < count
        a = tl.load(current + frame + offsets, mask=mask, other=0).to(tl.int32)
        b = tl.load(last + frame + offsets, mask=mask, other=0).to(tl.int32)
        sums += tl.abs(a - b).to(tl.int64)
    total = tl.sum(sums, axis=0).to(tl.float64)
    tl.store(out + tl.program_id(0), (total / count / 255.0).to(tl.float32))


def frame_difference_triton(current: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The Triton launcher: two (B, ...) uint8 batches, contiguous, on CUDA (or interpreted)."""
    _check_pair(current, last)
    require("current", current, dtypes=(torch.uint8,), ndim=current.ndim)
    require("last", last, dtypes=(torch.uint8,), ndim=current.ndim, device=current.device)
    batch = current.shape[0]
    out = torch.empty(batch, dtype=torch.float32, device=current.device)
    count = current[0].numel()
    if count == 0:
        raise ValueError("frames to compare must have pixels")
    if batch:
        _frame_difference_kernel[(batch,)](current, last, out, count, BLOCK=BLOCK)
    return out

"""I420 camera frames straight to the model's input, so WebRTC input never becomes RGB on the host.

A VP8 or H.264 decoder hands out I420: a full-size luma plane and two chroma
planes at half the size in each direction (rounded up for odd sizes). Today
``server/webrtc.py`` has libswscale turn each frame into ``rgb24`` on a CPU
thread, then :mod:`livegen_kernels.model_input` resizes it. This kernel reads
the planes where they are and does both: each resampling tap converts its pixel
from BT.601 limited range to RGB (the chroma sample of its 2 x 2 block, as
libswscale's default conversion picks it), rounds it to a uint8 level as the
RGB frame would hold it, and feeds the same cover-resize, centre-crop and
normalisation as RGB input.

Tolerance against the reference: ``ATOL`` (1e-5) on the [-1, 1] output, the
resize's; the conversion itself is exact (the levels are rounded). Against
libswscale's own ``rgb24`` the reference differs by at most a couple of levels
(swscale works in fixed point; ``tests/kernels`` measures it).

Parts: ``_i420_level`` (the Triton source the resize kernel of
:mod:`livegen_kernels.model_input` reads through), ``i420_to_model_input_triton``
(the launcher), ``i420_to_rgb_ref`` and ``i420_to_model_input_ref`` (plain torch)
and ``i420_to_model_input`` (the dispatcher).
"""

from __future__ import annotations

import torch

from livegen_kernels.dispatch import jit, require, tl, use_triton
from livegen_kernels.model_input import ATOL, launch_resize, rgb_to_model_input_ref

__all__ = ["ATOL", "i420_to_model_input", "i420_to_model_input_ref", "i420_to_rgb_ref"]

# BT.601 limited range to RGB levels: luma gain, then the chroma terms.
LUMA_GAIN = 1.164383
RED_FROM_V = 1.596027
GREEN_FROM_U = -0.391762
GREEN_FROM_V = -0.812968
BLUE_FROM_U = 2.017232


def _check_planes(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
    if y.ndim != 3 or u.ndim != 3 or v.ndim != 3:
        raise ValueError(
            f"planes must be (B, H, W) and (B, ceil(H/2), ceil(W/2)), got "
            f"{tuple(y.shape)}, {tuple(u.shape)}, {tuple(v.shape)}"
        )
    half = (y.shape[0], (y.shape[1] + 1) // 2, (y.shape[2] + 1) // 2)
    if tuple(u.shape) != half or tuple(v.shape) != half:
        raise ValueError(
            f"chroma planes of a {tuple(y.shape)} luma plane must be {half}, got "
            f"{tuple(u.shape)} and {tuple(v.shape)}"
        )


def i420_to_rgb_ref(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """I420 planes (B, H, W), (B, ceil(H/2), ceil(W/2)) x 2, uint8 -> (B, H, W, 3) uint8."""
    _check_planes(y, u, v)
    height, width = y.shape[1:]

    def upsampled(plane: torch.Tensor) -> torch.Tensor:
        full = plane.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        return full[:, :height, :width].float() - 128.0

    luma = (y.float() - 16.0) * LUMA_GAIN
    cb, cr = upsampled(u), upsampled(v)
    red = luma + cr * RED_FROM_V
    green = luma + cb * GREEN_FROM_U + cr * GREEN_FROM_V
    blue = luma + cb * BLUE_FROM_U
    rgb = torch.stack([red, green, blue], dim=-1)
    return rgb.round().clamp(0, 255).to(torch.uint8)


def i420_to_model_input_ref(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """I420 planes -> (B, 3, height, width) in [-1, 1], in plain torch."""
    return rgb_to_model_input_ref(i420_to_rgb_ref(y, u, v), size, dtype, channels_last)


def i420_to_model_input(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """I420 planes -> (B, 3, height, width) in [-1, 1]: Triton on CUDA, else torch."""
    if use_triton(y):
        planes = (y.contiguous(), u.contiguous(), v.contiguous())
        return i420_to_model_input_triton(*planes, size, dtype, channels_last)
    return i420_to_model_input_ref(y, u, v, size, dtype, channels_last)


@jit
def _i420_level(luma, u, v, b, c, row, column, in_height, in_width, mask):
    """Channel ``c`` of pixel (row, column) of frame ``b``, as the rounded RGB level."""
    half_height = (in_height + 1) // 2
    half_width = (in_width + 1) // 2
    at = (b.to(tl.int64) * in_height + row) * in_width + column
    chroma_at = (b.to(tl.int64) * half_height + row // 2) * half_width + column // 2
    level = (tl.load(luma + at, mask=mask, other=16).to(tl.float32) - 16.0) * 1.164383
    cb = tl.load(u + chroma_at, mask=mask, other=128).to(tl.float32) - 128.0
    cr = tl.load(v + chroma_at, mask=mask, other=128).to(tl.float32) - 128.0
    red = level + cr * 1.596027
    green = level + cb * -0.391762 + cr * -0.812968
    blue = level + cb * 2.017232
    value = tl.where(c == 0, red, tl.where(c == 1, green, blue))
    # Round half to even (the float32 magic number), then clamp: the RGB frame's level.
    value = (value + 12582912.0) - 12582912.0
    return tl.minimum(tl.maximum(value, 0.0), 255.0)


def i420_to_model_input_triton(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """The Triton launcher: uint8 planes, contiguous, on CUDA (or interpreted)."""
    for name, plane in (("y", y), ("u", u), ("v", v)):
        require(name, plane, dtypes=(torch.uint8,), ndim=3, device=y.device)
    _check_planes(y, u, v)
    batch, height, width = y.shape
    return launch_resize((y, u, v), _i420_level, batch, (height, width), size, dtype, channels_last)

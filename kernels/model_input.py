"""uint8 RGB frames to the model's input in one pass: cover-resize, centre-crop, scale to [-1, 1].

What ``pipelines.diffusion`` does to every input before the VAE encoder, which
in torch is half a dozen launches a frame (permute, float, resize, crop,
normalise, cast): each output pixel is the bilinear resample of the frame scaled
to cover the model's size (antialiased when shrinking, as
``F.interpolate(..., antialias=True)``), centred, then ``2 * (x / 255) - 1`` as
diffusers' image processor normalises, written in the model's dtype and memory
format.

The resampling weights are torch's antialiased bilinear ones: a triangle filter
stretched by the scale when shrinking, clipped at the edges and normalised per
output pixel. The kernel computes them inline; torch computes the same weights
and applies them one axis at a time, so the two agree to float32 rounding: a
max absolute error of 1e-5 on the [-1, 1] output (``ATOL``), a few units in the
last place of a uint8 level; in float16 or bfloat16 output, one unit in the
last place of that dtype.

Parts: ``_resize_crop_normalise_kernel`` (Triton), ``rgb_to_model_input_triton``
(its launcher), ``rgb_to_model_input_ref`` (plain torch) and
``rgb_to_model_input``, which picks one (:mod:`livegen_kernels.dispatch`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from livegen_kernels.dispatch import jit, require, tl, use_triton

ATOL = 1e-5  # float32 output, against the reference
BLOCK = 256


def cover_geometry(source: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, top, left): ``source`` scaled to cover ``size``, centred."""
    height, width = size
    scale = max(height / source[0], width / source[1])
    scaled = (math.ceil(source[0] * scale), math.ceil(source[1] * scale))
    return scaled[0], scaled[1], (scaled[0] - height) // 2, (scaled[1] - width) // 2


def rgb_to_model_input_ref(
    images: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, height, width) in [-1, 1], in plain torch."""
    if len(images) == 0:
        return torch.empty((0, 3, *size), dtype=dtype, device=images.device)
    frames = [_frame_to_model_input(image, size) for image in images]
    x = frames[0][None] if len(frames) == 1 else torch.stack(frames)
    # preserve_format: no copy of a float32 result that needs none (the CPU's path).
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return x.to(dtype, memory_format=memory_format)


def _frame_to_model_input(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) float32, one frame at a time.

    A frame alone: torch picks a faster resize for (1, 3, H, W) made this way than
    for one frame of a (B, H, W, 3) batch permuted (its memory format differs).
    """
    x = image.permute(2, 0, 1).unsqueeze(0).float()
    if x.shape[-2:] != size:
        scaled_height, scaled_width, top, left = cover_geometry(x.shape[-2:], size)
        x = F.interpolate(x, size=(scaled_height, scaled_width), mode="bilinear", antialias=True)
        x = x[..., top : top + size[0], left : left + size[1]]
    return 2.0 * (x[0] / 255.0) - 1.0


def rgb_to_model_input(
    images: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, height, width) in [-1, 1]: Triton on CUDA, else torch."""
    if use_triton(images):
        return rgb_to_model_input_triton(images.contiguous(), size, dtype, channels_last)
    return rgb_to_model_input_ref(images, size, dtype, channels_last)


class AxisResample:
    """One axis of the cover resize: the numbers torch's antialiased bilinear weights use."""

    def __init__(self, source: int, scaled: int) -> None:
        self.scale = source / scaled  # input pixels per output pixel
        self.support = self.scale if self.scale >= 1.0 else 1.0
        self.invscale = 1.0 / self.scale if self.scale >= 1.0 else 1.0
        # The most input pixels one output pixel reads (torch's interp_size).
        self.taps = math.ceil(self.support) * 2 + 1


@jit
def _axis_window(o, scale, support, source):
    """The first input index and the end of the window output index ``o`` reads."""
    center = scale * (o.to(tl.float32) + 0.5)
    first = tl.maximum((center - support + 0.5).to(tl.int32), 0)
    end = tl.minimum((center + support + 0.5).to(tl.int32), source)
    return center, first, end


@jit
def _axis_weight(j, center, first, end, invscale):
    """Tap ``j``'s index (clamped inside the frame) and unnormalised triangle weight."""
    index = first + j
    weight = tl.maximum(1.0 - tl.abs(((first + j).to(tl.float32) - center + 0.5) * invscale), 0.0)
    return tl.minimum(index, end - 1), tl.where(index < end, weight, 0.0)


@jit
def _axis_total(center, first, end, invscale, TAPS: tl.constexpr):
    total = tl.zeros_like(center)
    for j in range(TAPS):
        _, weight = _axis_weight(j, center, first, end, invscale)
        total += weight
    return total


@jit
def _rgb_level(rgb, unused_u, unused_v, b, c, row, column, in_height, in_width, mask):
    """Channel ``c`` of pixel (row, column) of frame ``b`` of a (B, H, W, 3) uint8 batch."""
    at = ((b.to(tl.int64) * in_height + row) * in_width + column) * 3 + c
    return tl.load(rgb + at, mask=mask, other=0).to(tl.float32)


@jit
def _resize_crop_normalise_kernel(
    src_a,  # the frames, read through LOAD: (B, H, W, 3) uint8 RGB, or I420's Y plane
    src_b,  # I420's U plane (unused for RGB)
    src_c,  # I420's V plane (unused for RGB)
    dst,  # (B, 3, height, width), strides below
    total,  # B * 3 * height * width
    height,
    width,
    in_height,
    in_width,
    scale_y,
    support_y,
    invscale_y,
    top,
    scale_x,
    support_x,
    invscale_x,
    left,
    stride_b,
    stride_c,
    stride_y,
    stride_x,
    LOAD: tl.constexpr,  # a jit function: (sources, b, c, row, column, H, W, mask) -> level
    TAPS_Y: tl.constexpr,
    TAPS_X: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < total
    # Output element (b, c, y, x) in NCHW order, whatever the output's memory format.
    x = offsets % width
    y = (offsets // width) % height
    c = (offsets // (width * height)) % 3
    b = offsets // (width * height * 3)
    center_y, first_y, end_y = _axis_window(y + top, scale_y, support_y, in_height)
    center_x, first_x, end_x = _axis_window(x + left, scale_x, support_x, in_width)
    total_y = _axis_total(center_y, first_y, end_y, invscale_y, TAPS_Y)
    total_x = _axis_total(center_x, first_x, end_x, invscale_x, TAPS_X)
    # Rows first, then columns: the order torch's separable passes sum in.
    value = tl.zeros((BLOCK,), tl.float32)
    for i in range(TAPS_X):
        column, weight_x = _axis_weight(i, center_x, first_x, end_x, invscale_x)
        along_y = tl.zeros((BLOCK,), tl.float32)
        for j in range(TAPS_Y):
            row, weight_y = _axis_weight(j, center_y, first_y, end_y, invscale_y)
            level = LOAD(src_a, src_b, src_c, b, c, row, column, in_height, in_width, mask)
            along_y += level * (weight_y / total_y)
        value += along_y * (weight_x / total_x)
    value = 2.0 * (value / 255.0) - 1.0
    at = b.to(tl.int64) * stride_b + c * stride_c + y * stride_y + x * stride_x
    tl.store(dst + at, value.to(dst.dtype.element_ty), mask=mask)


def rgb_to_model_input_triton(
    images: torch.Tensor,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """The Triton launcher: (B, H, W, 3) uint8, contiguous, on CUDA (or interpreted)."""
    require("images", images, dtypes=(torch.uint8,), ndim=4)
    if images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) RGB, got shape {tuple(images.shape)}")
    batch, in_height, in_width, _ = images.shape
    sources = (images, images, images)
    return launch_resize(
        sources, _rgb_level, batch, (in_height, in_width), size, dtype, channels_last
    )


def launch_resize(
    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    load: object,
    batch: int,
    source_size: tuple[int, int],
    size: tuple[int, int],
    dtype: torch.dtype,
    channels_last: bool,
) -> torch.Tensor:
    """Run the resize kernel over frames that ``load`` (a jit function) reads from ``sources``."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if min(size) < 1 or min(source_size) < 1:
        raise ValueError(f"sizes must be positive, got {source_size} to {size}")
    scaled_height, scaled_width, top, left = cover_geometry(source_size, size)
    rows = AxisResample(source_size[0], scaled_height)
    columns = AxisResample(source_size[1], scaled_width)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(
        (batch, 3, *size), dtype=dtype, device=sources[0].device, memory_format=memory_format
    )
    total = out.numel()
    if total:
        _resize_crop_normalise_kernel[(math.ceil(total / BLOCK),)](
            *sources,
            out,
            total,
            *size,
            *source_size,
            rows.scale,
            rows.support,
            rows.invscale,
            top,
            columns.scale,
            columns.support,
            columns.invscale,
            left,
            *out.stride(),
            LOAD=load,
            TAPS_Y=rows.taps,
            TAPS_X=columns.taps,
            BLOCK=BLOCK,
        )
    return out

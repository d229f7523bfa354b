"""The autoencoder's output to what leaves the server: uint8 RGB frames, or I420 planes.

``pipelines.diffusion`` turns each decoded image, (3, H, W) in [-1, 1], into
pixels as diffusers' image processor does: ``x * 0.5 + 0.5``, clamped to [0, 1],
times 255, rounded half to even, as uint8, channels last. In torch that is five
launches and a strided copy; here it is one pass. The same pass can write the
I420 planes a video encoder takes (BT.601, limited range, as libswscale converts
``rgb24`` for VP8 and H.264), so a WebRTC frame need not become RGB on the host
first; the chroma of each 2 x 2 block is the mean of its pixels' chroma.

Both match their references exactly: the uint8 conversion is the same float32
arithmetic, and rounding is exact, so frames are equal, not close (the kernel
rounds with the float32 magic-number trick, which is round-half-to-even like
``torch.round``). I420 planes may differ by one level where float32 sums in
another order land on a half (``I420_ATOL``).

Parts: ``_to_rgb_kernel`` and ``_to_i420_kernel`` (Triton), their launchers
``model_output_to_rgb_triton`` and ``model_output_to_i420_triton``, the plain
torch ``model_output_to_rgb_ref`` and ``model_output_to_i420_ref``, and the
dispatchers ``model_output_to_rgb`` and ``model_output_to_i420``.
"""

from __future__ import annotations

import math

import torch

from livegen_kernels.dispatch import jit, require, tl, use_triton

I420_ATOL = 1  # levels
BLOCK = 256
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# BT.601 limited range, from [0, 1] RGB: rows Y, U, V; offsets in levels.
BT601 = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
BT601_OFFSETS = (16.0, 128.0, 128.0)


def model_output_to_rgb_ref(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 (a channels-last view), in plain torch."""
    pixels = ((images.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1)


def model_output_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8: Triton on CUDA, else torch."""
    if use_triton(images):
        return model_output_to_rgb_triton(images.contiguous())
    return model_output_to_rgb_ref(images)


def model_output_to_i420_ref(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, 3, H, W) in [-1, 1] -> Y (B, H, W), U and V (B, ceil(H/2), ceil(W/2)) uint8."""
    rgb = model_output_to_rgb_ref(images).float() / 255.0  # (B, H, W, 3) in [0, 1]
    matrix = torch.tensor(BT601, dtype=torch.float32, device=images.device)
    offsets = torch.tensor(BT601_OFFSETS, dtype=torch.float32, device=images.device)
    yuv = rgb @ matrix.T + offsets  # (B, H, W, 3)
    luma = yuv[..., 0]
    # Chroma: the mean over each 2 x 2 block, only of the pixels a frame has (odd sizes).
    chroma = yuv[..., 1:].permute(0, 3, 1, 2)  # (B, 2, H, W)
    means = torch.nn.functional.avg_pool2d(chroma, 2, ceil_mode=True, count_include_pad=False)
    return tuple(
        plane.round().clamp(0, 255).to(torch.uint8) for plane in (luma, means[:, 0], means[:, 1])
    )


def model_output_to_i420(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, 3, H, W) in [-1, 1] -> I420 planes (Y, U, V): Triton on CUDA, else torch."""
    if use_triton(images):
        return model_output_to_i420_triton(images.contiguous())
    return model_output_to_i420_ref(images)


@jit
def _round_half_even(value):
    # Adding 1.5 * 2**23 leaves no fraction bits in float32; the add rounds half to even.
    return (value + 12582912.0) - 12582912.0


@jit
def _level(src, at, mask):
    """The uint8 level (as float32) of the model output at ``at``."""
    value = tl.load(src + at, mask=mask, other=0.0).to(tl.float32)
    value = tl.minimum(tl.maximum(value * 0.5 + 0.5, 0.0), 1.0)
    return _round_half_even(value * 255.0)


@jit
def _to_rgb_kernel(
    src,  # (B, 3, H, W) float, contiguous
    dst,  # (B, H, W, 3) uint8, contiguous
    total,  # B * H * W * 3
    plane,  # H * W
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < total
    # Walk the output (channels last) so that the uint8 stores are contiguous.
    c = offsets % 3
    pixel = (offsets // 3) % plane
    b = offsets // (plane * 3)
    level = _level(src, (b * 3 + c).to(tl.int64) * plane + pixel, mask)
    tl.store(dst + offsets, level.to(tl.uint8), mask=mask)


@jit
def _yuv(src, image, pixel, plane, mask, ROW: tl.constexpr, OFFSET: tl.constexpr):
    """One BT.601 row over the pixel's rounded RGB levels, in levels."""
    red = _level(src, image + pixel, mask) / 255.0
    green = _level(src, image + plane + pixel, mask) / 255.0
    blue = _level(src, image + 2 * plane + pixel, mask) / 255.0
    if ROW == 0:
        value = red * 65.481 + green * 128.553 + blue * 24.966
    elif ROW == 1:
        value = red * -37.797 + green * -74.203 + blue * 112.0
    else:
        value = red * 112.0 + green * -93.786 + blue * -18.214
    return value + OFFSET


@jit
def _to_i420_kernel(
    src,  # (B, 3, H, W) float, contiguous
    luma,  # (B, H, W) uint8
    chroma,  # (2, B, ceil(H/2), ceil(W/2)) uint8: U then V
    batch,
    height,
    width,
    BLOCK: tl.constexpr,
):
    # One program per block of 2 x 2 pixel groups: each writes 4 luma and 2 chroma levels.
    half_height = (height + 1) // 2
    half_width = (width + 1) // 2
    total = batch * half_height * half_width
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < total
    cx = offsets % half_width
    cy = (offsets // half_width) % half_height
    b = offsets // (half_width * half_height)
    plane = height * width
    image = b.to(tl.int64) * 3 * plane
    u = tl.zeros((BLOCK,), tl.float32)
    v = tl.zeros((BLOCK,), tl.float32)
    count = tl.zeros((BLOCK,), tl.float32)
    for dy in range(2):
        for dx in range(2):
            y = cy * 2 + dy
            x = cx * 2 + dx
            inside = mask & (y < height) & (x < width)
            pixel = y * width + x
            level = _yuv(src, image, pixel, plane, inside, 0, 16.0)
            at = b.to(tl.int64) * plane + pixel
            tl.store(
                luma + at,
                tl.minimum(tl.maximum(_round_half_even(level), 0.0), 255.0).to(tl.uint8),
                mask=inside,
            )
            u += tl.where(inside, _yuv(src, image, pixel, plane, inside, 1, 128.0), 0.0)
            v += tl.where(inside, _yuv(src, image, pixel, plane, inside, 2, 128.0), 0.0)
            count += tl.where(inside, 1.0, 0.0)
    count = tl.maximum(count, 1.0)
    u = tl.minimum(tl.maximum(_round_half_even(u / count), 0.0), 255.0)
    v = tl.minimum(tl.maximum(_round_half_even(v / count), 0.0), 255.0)
    tl.store(chroma + offsets, u.to(tl.uint8), mask=mask)
    tl.store(chroma + total + offsets, v.to(tl.uint8), mask=mask)


def model_output_to_rgb_triton(images: torch.Tensor) -> torch.Tensor:
    """The Triton launcher: (B, 3, H, W) float, contiguous, on CUDA (or interpreted)."""
    require("images", images, dtypes=FLOAT_DTYPES, ndim=4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    out = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=images.device)
    total = out.numel()
    if total:
        _to_rgb_kernel[(math.ceil(total / BLOCK),)](images, out, total, height * width, BLOCK=BLOCK)
    return out


def model_output_to_i420_triton(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The Triton launcher: (B, 3, H, W) float, contiguous -> Y, U, V uint8 planes."""
    require("images", images, dtypes=FLOAT_DTYPES, ndim=4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    luma = torch.empty((batch, height, width), dtype=torch.uint8, device=images.device)
    half = ((height + 1) // 2, (width + 1) // 2)
    chroma = torch.empty((2, batch, *half), dtype=torch.uint8, device=images.device)
    groups = batch * half[0] * half[1]
    if groups:
        _to_i420_kernel[(math.ceil(groups / BLOCK),)](
            images, luma, chroma, batch, height, width, BLOCK=BLOCK
        )
    return luma, chroma[0], chroma[1]

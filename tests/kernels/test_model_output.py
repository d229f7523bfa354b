"""Model output to uint8 RGB and to I420: the Triton kernels against the references."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from livegen_kernels.model_output import (
    I420_ATOL,
    model_output_to_i420,
    model_output_to_i420_ref,
    model_output_to_i420_triton,
    model_output_to_rgb,
    model_output_to_rgb_ref,
    model_output_to_rgb_triton,
)
from tests.kernels.awkward import random_float, strided

SHAPES = [(1, 3, 5, 7), (7, 3, 4, 9), (2, 3, 17, 16)]


def decoded(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """A decoder's output: mostly in [-1, 1], some outside, and the rounding edges exactly."""
    images = random_float(shape, seed, device) * 0.7
    edges = [-1.0, 1.0, -2.0, 2.0, 2 * (0.5 / 255) - 1, 2 * (1.5 / 255) - 1, 2 * (254.5 / 255) - 1]
    images.view(-1)[: len(edges)] = torch.tensor(edges)
    return images


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_rgb_levels_equal_the_reference(shape, dtype, device) -> None:
    images = decoded(shape, seed=shape[-1], device=device).to(dtype)

    got = model_output_to_rgb_triton(images)

    assert got.is_contiguous() and got.shape == (shape[0], shape[2], shape[3], 3)
    assert torch.equal(got, model_output_to_rgb_ref(images))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_i420_planes_match_the_reference(shape, device) -> None:
    images = decoded(shape, seed=shape[-2], device=device)

    got = model_output_to_i420_triton(images)

    expected = model_output_to_i420_ref(images)
    half = ((shape[2] + 1) // 2, (shape[3] + 1) // 2)
    assert [tuple(p.shape) for p in got] == [
        (shape[0], *shape[2:]),
        (shape[0], *half),
        (shape[0], *half),
    ]
    for plane, reference in zip(got, expected, strict=True):
        assert (plane.int() - reference.int()).abs().max() <= I420_ATOL


def test_strided_outputs_go_through_the_dispatchers(device, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    images = strided(decoded((7, 3, 6, 5), seed=4, device=device), dim=3)

    assert torch.equal(model_output_to_rgb(images), model_output_to_rgb_ref(images))
    for plane, reference in zip(
        model_output_to_i420(images), model_output_to_i420_ref(images), strict=True
    ):
        assert (plane.int() - reference.int()).abs().max() <= I420_ATOL


def test_the_i420_reference_is_what_libswscale_makes_of_the_rgb_frame() -> None:
    # Flat 8 x 8 blocks: luma as swscale's, and chroma away from the blocks' edges (swscale
    # filters chroma over more than the 2 x 2 block it averages here).
    blocks = np.random.default_rng(5).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    rgb = blocks.repeat(8, 0).repeat(8, 1)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    theirs = [
        np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        for p in frame.planes
    ]
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 * 2 - 1

    ours = [plane[0].numpy().astype(int) for plane in model_output_to_i420_ref(images)]

    assert np.abs(ours[0] - theirs[0]).max() <= 1
    inside = np.ix_([1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22], [1, 2, 5, 6, 9, 10, 13, 14])
    for plane, swscale in zip(ours[1:], theirs[1:], strict=True):
        assert np.abs(plane[inside] - swscale[inside].astype(int)).max() <= 1


def test_the_launchers_refuse_what_they_cannot_read(device) -> None:
    images = decoded((1, 3, 4, 4), seed=6, device=device)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        model_output_to_rgb_triton(images[:, :2].contiguous())
    with pytest.raises(ValueError, match="images must be float32 or float16 or bfloat16"):
        model_output_to_i420_triton(images.double())
    with pytest.raises(ValueError, match="must be contiguous"):
        model_output_to_rgb_triton(strided(images, 2))

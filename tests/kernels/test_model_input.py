"""uint8 RGB to model input: the Triton kernel against the plain-torch reference."""

from __future__ import annotations

import pytest
import torch

from livegen_kernels.model_input import (
    ATOL,
    cover_geometry,
    rgb_to_model_input,
    rgb_to_model_input_ref,
    rgb_to_model_input_triton,
)
from tests.kernels.awkward import random_uint8, strided

CASES = [
    # (batch, height, width, model size): shrink by an odd factor, grow, keep, shrink hard, crop
    pytest.param(1, 37, 53, (16, 24), id="shrink-odd"),
    pytest.param(7, 9, 13, (16, 10), id="grow-batch7"),
    pytest.param(1, 16, 24, (16, 24), id="same-size"),
    pytest.param(2, 100, 61, (12, 12), id="shrink-8x"),
    pytest.param(1, 21, 64, (20, 20), id="crop-width"),
]


@pytest.mark.parametrize(("batch", "height", "width", "size"), CASES)
def test_the_kernel_matches_the_reference(batch, height, width, size, device) -> None:
    images = random_uint8((batch, height, width, 3), seed=height * width, device=device)

    expected = rgb_to_model_input_ref(images, size)
    got = rgb_to_model_input_triton(images, size)

    assert got.shape == expected.shape == (batch, 3, *size)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_a_strided_batch_goes_through_the_dispatcher(device, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    images = strided(random_uint8((7, 11, 9, 3), seed=1, device=device), dim=2)

    got = rgb_to_model_input(images, (8, 6))

    torch.testing.assert_close(got, rgb_to_model_input_ref(images, (8, 6)), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)], ids=["float16", "bfloat16"]
)
def test_the_model_dtype_and_channels_last_are_written_directly(dtype, atol, device) -> None:
    images = random_uint8((1, 13, 17, 3), seed=2, device=device)

    got = rgb_to_model_input_triton(images, (10, 12), dtype, channels_last=True)

    expected = rgb_to_model_input_ref(images, (10, 12), dtype, channels_last=True)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), expected.float(), atol=atol, rtol=0)


def test_the_reference_normalises_as_diffusers_and_scales_to_cover() -> None:
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).repeat(1, 4, 6, 1)  # flat colour
    out = rgb_to_model_input_ref(images, (4, 6))
    assert out[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 2 * (51 / 255) - 1], abs=1e-7)
    # A 40 x 100 frame covers 20 x 20 at half size, then loses 15 columns each side.
    assert cover_geometry((40, 100), (20, 20)) == (20, 50, 0, 15)
    # A flat colour stays that colour whatever the resize.
    assert torch.equal(rgb_to_model_input_ref(images, (3, 3))[0, :, 1, 1], out[0, :, 0, 0])


def test_the_launcher_refuses_what_it_cannot_read(device) -> None:
    images = random_uint8((1, 8, 8, 3), seed=3, device=device)
    with pytest.raises(ValueError, match="images must be uint8, got float32"):
        rgb_to_model_input_triton(images.float(), (4, 4))
    with pytest.raises(ValueError, match=r"must be contiguous: call \.contiguous\(\) first"):
        rgb_to_model_input_triton(strided(images, 1), (4, 4))
    with pytest.raises(ValueError, match=r"images must be \(B, H, W, 3\) RGB"):
        rgb_to_model_input_triton(images[..., :2].contiguous(), (4, 4))
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        rgb_to_model_input_triton(images, (4, 4), torch.float64)

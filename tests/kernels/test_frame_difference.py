"""The similarity filter's mean absolute difference: the Triton kernel against the reference."""

from __future__ import annotations

import pytest
import torch

from livegen_kernels.frame_difference import (
    frame_difference,
    frame_difference_ref,
    frame_difference_triton,
)
from tests.kernels.awkward import random_uint8, strided


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (7, 33, 17, 3), (2, 1, 1, 3)], ids=str)
def test_the_kernel_equals_the_reference_bit_for_bit(shape, device) -> None:
    current = random_uint8(shape, seed=1, device=device)
    last = random_uint8(shape, seed=2, device=device)

    got = frame_difference_triton(current, last)

    assert got.dtype == torch.float32 and got.shape == (shape[0],)
    assert torch.equal(got, frame_difference_ref(current, last))


def test_the_measure_is_the_mean_absolute_difference_over_255(device) -> None:
    black = torch.zeros((3, 4, 6, 3), dtype=torch.uint8, device=device)
    other = black.clone()
    other[1] = 255
    other[2, :2] = 51  # half the pixels, 51 levels (0.2) apart

    got = frame_difference_triton(other, black)

    torch.testing.assert_close(got.cpu(), torch.tensor([0.0, 1.0, 0.1]))
    assert torch.equal(frame_difference_triton(black, other), got)  # symmetric


def test_strided_frames_go_through_the_dispatcher(device, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    current = strided(random_uint8((7, 9, 5, 3), seed=3, device=device), dim=1)
    last = random_uint8((7, 9, 5, 3), seed=4, device=device)

    assert torch.equal(frame_difference(current, last), frame_difference_ref(current, last))


def test_frames_of_different_shapes_are_refused(device) -> None:
    with pytest.raises(ValueError, match=r"one shape, got \(1, 4, 4, 3\) and \(1, 4, 5, 3\)"):
        frame_difference(
            random_uint8((1, 4, 4, 3), 0, device), random_uint8((1, 4, 5, 3), 0, device)
        )

"""I420 camera frames to model input: the Triton kernel against the reference."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from livegen_kernels.i420_input import (
    ATOL,
    i420_to_model_input,
    i420_to_model_input_ref,
    i420_to_model_input_triton,
    i420_to_rgb_ref,
)
from tests.kernels.awkward import random_uint8, strided


def planes(batch: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    half = (batch, (height + 1) // 2, (width + 1) // 2)
    return (
        random_uint8((batch, height, width), 1, device),
        random_uint8(half, 2, device),
        random_uint8(half, 3, device),
    )


@pytest.mark.parametrize(
    ("batch", "height", "width", "size"),
    [(1, 9, 13, (8, 8)), (7, 6, 8, (6, 8)), (2, 15, 10, (20, 12))],
    ids=["shrink-odd", "same-size-batch7", "grow-odd"],
)
def test_the_kernel_matches_the_reference(batch, height, width, size, device) -> None:
    y, u, v = planes(batch, height, width, device)

    got = i420_to_model_input_triton(y, u, v, size)

    torch.testing.assert_close(got, i420_to_model_input_ref(y, u, v, size), atol=ATOL, rtol=0)


def test_strided_planes_go_through_the_dispatcher(device, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    y, u, v = planes(1, 7, 11, device)
    y = strided(y, 2)

    got = i420_to_model_input(y, u, v, (4, 4), torch.float16, channels_last=True)

    expected = i420_to_model_input_ref(y, u, v, (4, 4), torch.float16, channels_last=True)
    torch.testing.assert_close(got.float(), expected.float(), atol=1e-3, rtol=0)


def test_the_reference_converts_as_libswscale_does_within_three_levels() -> None:
    frame = av.VideoFrame(48, 32, "yuv420p")
    rng = np.random.default_rng(7)
    for plane in frame.planes:
        plane.update(rng.integers(16, 236, plane.buffer_size, dtype=np.uint8).tobytes())
    arrays = [
        torch.from_numpy(
            np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy()
        )[None]
        for p in frame.planes
    ]

    ours = i420_to_rgb_ref(*arrays)[0].numpy().astype(int)

    difference = np.abs(ours - frame.to_ndarray(format="rgb24").astype(int))
    assert difference.max() <= 3 and difference.mean() < 1.5


def test_chroma_planes_of_the_wrong_size_are_refused(device) -> None:
    y, u, v = planes(1, 9, 13, device)
    with pytest.raises(ValueError, match=r"must be \(1, 5, 7\), got \(1, 4, 7\)"):
        i420_to_model_input(y, u[:, :4], v, (4, 4))

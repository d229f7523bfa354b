"""Awkward inputs for the kernel tests: random values, non-contiguous views."""

from __future__ import annotations

import torch


def random_uint8(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8).to(device)


def random_float(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)


def strided(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """The same values as a non-contiguous view: every other element of a tensor twice as wide."""
    shape = list(tensor.shape)
    shape[dim] *= 2
    wide = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    view = wide[(slice(None),) * dim + (slice(None, None, 2),)]
    view.copy_(tensor)
    assert not view.is_contiguous()
    return view

"""The fused per-sample latent update: the Triton kernel against the reference."""

from __future__ import annotations

import math

import pytest
import torch

from livegen_kernels.latent_step import (
    COLUMNS,
    RTOL,
    coefficients,
    latent_step,
    latent_step_ref,
    latent_step_triton,
)
from tests.kernels.awkward import random_float, strided


def table(batch: int, seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    columns = {name: torch.rand(batch, generator=generator) * 3 - 1 for name in COLUMNS}
    columns["blend"] = torch.rand(batch, generator=generator)  # both halves of lerp's formula
    columns["clip"] = torch.where(torch.arange(batch) % 2 == 0, 1.5, math.inf)
    return coefficients(batch, device, **columns)


def assert_matches(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize(
    "inputs",
    ["", "model_output", "model_output,noise", "model_output,noise,previous", "noise,previous"],
)
def test_the_kernel_matches_the_reference(batch, inputs, device) -> None:
    shape = (batch, 4, 5, 3)
    sample = random_float(shape, 1, device) * 10
    given = {
        name: random_float(shape, i + 2, device) for i, name in enumerate(inputs.split(",")) if name
    }
    coefficients_table = table(batch, batch, device)

    got = latent_step_triton(sample, coefficients_table, **given)

    assert_matches(got, latent_step_ref(sample, coefficients_table, **given))


def test_a_float16_model_output_is_read_as_float32(device) -> None:
    sample = random_float((7, 4, 3, 9), 1, device)
    prediction = random_float((7, 4, 3, 9), 2, device).half()
    coefficients_table = table(7, 3, device)

    got = latent_step_triton(sample, coefficients_table, prediction)

    assert got.dtype == torch.float32
    assert_matches(got, latent_step_ref(sample, coefficients_table, prediction))


def test_strided_latents_go_through_the_dispatcher(device, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    sample = strided(random_float((7, 4, 5, 3), 1, device), dim=3)
    noise = strided(random_float((7, 4, 5, 3), 2, device), dim=1)
    coefficients_table = table(7, 4, device)

    got = latent_step(sample, coefficients_table, noise=noise)

    assert_matches(got, latent_step_ref(sample, coefficients_table, noise=noise))


def test_the_identity_table_leaves_latents_unchanged_and_columns_do_what_they_say() -> None:
    sample, noise = torch.randn((2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    identity = coefficients(2, sample.device)
    assert torch.equal(latent_step_ref(sample, identity, noise=noise), sample)
    # Euler's noise add: latents + sigma * noise.
    noised = latent_step_ref(sample, coefficients(2, sample.device, u=3.0), noise=noise)
    assert torch.equal(noised, sample + 3.0 * noise)


def test_the_launcher_refuses_mismatched_inputs(device) -> None:
    sample = random_float((2, 4, 3, 3), 1, device)
    with pytest.raises(ValueError, match=r"table must be \(2, 7\), got \(3, 7\)"):
        latent_step_triton(sample, table(3, 0, device))
    with pytest.raises(ValueError, match="noise must have the sample's shape"):
        latent_step_triton(sample, table(2, 0, device), noise=sample[:, :2].contiguous())
    with pytest.raises(ValueError, match="sample must be float32, got float16"):
        latent_step_triton(sample.half(), table(2, 0, device))

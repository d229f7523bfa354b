"""Few-step samplers: each request's timesteps, and the math that moves between them.

The schedules are checked against numbers worked out by hand from diffusers'
definitions (trailing spacing rounds; LCM picks from its 50-step distillation
grid), on the published scheduler configs kept in tests/data/configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.samplers import FewStepSampler, make_sampler

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"
CPU = torch.device("cpu")


def published(repo: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        (CONFIGS / repo / "scheduler" / "scheduler_config.json").read_text()
    )
    return config


def euler(**changes: Any) -> FewStepSampler:
    return make_sampler("euler", published("stabilityai--sd-turbo") | changes, CPU)


def lcm(**changes: Any) -> FewStepSampler:
    return make_sampler("lcm", published("SimianLuo--LCM_Dreamshaper_v7") | changes, CPU)


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [
        # Trailing spacing, rounded: 3 steps are 999, 666, 332 (flooring gives 665).
        (1, 1.0, [999]),
        (2, 1.0, [999, 499]),
        (3, 1.0, [999, 666, 332]),
        (4, 1.0, [999, 749, 499, 249]),
        # Below strength 1: diffusers' img2img with steps / strength inference steps.
        (1, 0.5, [499]),
        (2, 0.5, [499, 249]),
        (3, 0.75, [749, 499, 249]),
        (2, 0.75, [749, 374]),  # no whole diffusers step count: still evenly spaced
        (1, 0.0, [0]),
    ],
)
def test_euler_timesteps(steps: int, strength: float, expected: list[int]) -> None:
    assert euler().schedule(steps, strength).timesteps.tolist() == expected


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [
        # LCM's distillation grid (every 20th timestep), not evenly spaced timesteps.
        (1, 1.0, [999]),
        (2, 1.0, [999, 499]),
        (3, 1.0, [999, 679, 339]),
        (4, 1.0, [999, 759, 499, 259]),
        (8, 1.0, [999, 879, 759, 639, 499, 379, 259, 139]),
        # Image to image: the grid cut below strength * T, all steps run.
        (4, 0.5, [499, 379, 259, 139]),
        (2, 0.5, [499, 259]),
    ],
)
def test_lcm_timesteps_come_from_the_distillation_grid(
    steps: int, strength: float, expected: list[int]
) -> None:
    assert lcm().schedule(steps, strength).timesteps.tolist() == expected


def test_lcm_at_a_strength_with_too_few_timesteps_says_what_would_work() -> None:
    with pytest.raises(ValueError, match="keeps 2 of its 50 timesteps, fewer than 4 steps"):
        lcm().schedule(4, 0.05)


def test_euler_text_to_image_starts_from_noise_times_the_largest_sigma() -> None:
    sampler = euler()
    schedule = sampler.batch([sampler.schedule(1, 1.0)])
    noise = torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(0))
    start = sampler.start(torch.zeros_like(noise), noise, torch.tensor([True]), schedule)
    sigma_max = ((1 - sampler.alphas_cumprod[999]) / sampler.alphas_cumprod[999]) ** 0.5
    torch.testing.assert_close(start, noise * sigma_max)
    assert sigma_max > 14  # unit noise would be 15x too small


def test_each_sample_in_a_batch_keeps_its_own_schedule() -> None:
    sampler = euler()
    schedule = sampler.batch([sampler.schedule(2, 1.0), sampler.schedule(2, 0.5)])
    assert schedule.timesteps.tolist() == [[999, 499], [499, 249]]
    assert schedule.part(slice(1, 2)).timesteps.tolist() == [[499], [249]]


def perfect_prediction(
    sampler: FewStepSampler, clean: torch.Tensor, noise: torch.Tensor, t: int
) -> torch.Tensor:
    """What a perfect model outputs at ``t`` for its prediction type."""
    alpha = sampler.alphas_cumprod[t]
    if sampler.prediction_type == "epsilon":
        return noise
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("make", [euler, lcm], ids=["euler", "lcm"])
def test_one_step_with_a_perfect_model_recovers_the_clean_latent(
    make: Any, prediction_type: str
) -> None:
    sampler = make(prediction_type=prediction_type)
    clean, noise = torch.randn((2, 1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    schedule = sampler.batch([sampler.schedule(1, 0.5)])
    t = int(schedule.timesteps[0, 0])
    sample = sampler.start(clean, noise, torch.tensor([False]), schedule)
    model_input = sampler.model_input(sample, 0, schedule)
    # Whatever the sampler's own space, the UNet sees sqrt(a) x0 + sqrt(1 - a) e.
    alpha = sampler.alphas_cumprod[t]
    torch.testing.assert_close(model_input, alpha.sqrt() * clean + (1 - alpha).sqrt() * noise)

    out = sampler.step(sample, perfect_prediction(sampler, clean, noise, t), 0, schedule, None)

    # LCM's boundary condition leaves a trace of the noisy sample at t=499: c_skip ~ 1e-6.
    torch.testing.assert_close(out, clean, atol=1e-3, rtol=1e-3)


def test_an_lcm_step_renoises_with_the_fresh_noise_it_is_given() -> None:
    sampler = lcm()
    clean, noise, fresh = torch.randn((3, 1, 4, 8, 8), generator=torch.Generator().manual_seed(2))
    schedule = sampler.batch([sampler.schedule(2, 1.0)])  # 999, then 499
    sample = sampler.start(clean, noise, torch.tensor([False]), schedule)

    out = sampler.step(sample, noise, 0, schedule, fresh)

    alpha = sampler.alphas_cumprod[499]
    expected = alpha.sqrt() * clean + (1 - alpha).sqrt() * fresh
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)


def test_an_unknown_prediction_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported prediction type 'sample'"):
        euler(prediction_type="sample")

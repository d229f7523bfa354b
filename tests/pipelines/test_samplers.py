"""Few-step samplers: timesteps per sample, and the math that moves between them."""

from __future__ import annotations

import pytest
import torch

from pipelines.samplers import FewStepSampler

CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def sampler(**config: object) -> FewStepSampler:
    return FewStepSampler({**CONFIG, **config}, torch.device("cpu"))


@pytest.mark.parametrize(
    ("strength", "steps", "expected"),
    [
        # What diffusers' trailing spacing runs: 1 to 4 steps from t=999, and at
        # strength 0.5 the second half of twice as many steps.
        (1.0, 1, [999]),
        (1.0, 2, [999, 499]),
        (1.0, 4, [999, 749, 499, 249]),
        (0.5, 1, [499]),
        (0.5, 2, [499, 249]),
        (0.0, 1, [0]),
    ],
)
def test_timesteps_are_evenly_spaced_down_from_strength_times_t(
    strength: float, steps: int, expected: list[int]
) -> None:
    timesteps = sampler().timesteps(torch.tensor([strength]), steps)
    assert timesteps[:, 0].tolist() == expected


def test_each_sample_in_a_batch_gets_its_own_timesteps() -> None:
    timesteps = sampler().timesteps(torch.tensor([1.0, 0.5, 0.25]), 2)
    assert timesteps.tolist() == [[999, 499, 249], [499, 249, 124]]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_recovers_what_add_noise_mixed(prediction_type: str) -> None:
    s = sampler(prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn((2, 2, 1, 4, 4), generator=generator)  # two (2, 1, 4, 4)
    t = torch.tensor([100, 900])
    noisy = s.add_noise(clean, noise, t)
    alpha = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    # What a perfect model would output for each prediction type.
    target = (
        noise if prediction_type == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
    )

    predicted_clean, predicted_noise = s.predict(noisy, target, t)

    torch.testing.assert_close(predicted_clean, clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(predicted_noise, noise, atol=1e-4, rtol=1e-4)


def test_the_last_euler_step_returns_the_clean_prediction() -> None:
    s = sampler()
    clean, noise = torch.randn((2, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999])
    out = s.step("euler", s.add_noise(clean, noise, t), noise, t, None, torch.zeros_like(noise))
    torch.testing.assert_close(out, clean, atol=1e-3, rtol=1e-3)


def test_an_lcm_step_renoises_with_the_fresh_noise_it_is_given() -> None:
    s = sampler()
    clean, noise, fresh = torch.randn((3, 1, 4, 4), generator=torch.Generator().manual_seed(2))
    t, t_next = torch.tensor([999]), torch.tensor([499])
    sample = s.add_noise(clean, noise, t)

    euler = s.step("euler", sample, noise, t, t_next, fresh)
    lcm = s.step("lcm", sample, noise, t, t_next, fresh)

    # At t=999 LCM's boundary condition is almost the identity on the clean estimate.
    torch.testing.assert_close(euler, s.add_noise(clean, noise, t_next), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(lcm, s.add_noise(clean, fresh, t_next), atol=1e-2, rtol=1e-2)


def test_an_unknown_prediction_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported prediction type 'sample'"):
        sampler(prediction_type="sample")

"""Few-step samplers that give every sample in a batch its own timesteps.

diffusers' schedulers keep one timestep schedule per call, but a batch here
mixes sessions with different strengths. These samplers do the same math per
sample, in the variance-preserving form ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e``
where ``a_t`` is the cumulative alpha product of the model's training schedule.

``steps`` counts the UNet passes actually run. Timesteps are evenly spaced from
``strength * T`` down ("trailing" spacing, as SD-Turbo and SDXL-Turbo were
distilled with): one step at strength 1 is t=999, two steps at strength 0.5
are t=499 and t=249, exactly what diffusers runs for 2 and 4 steps at that
strength. A text-to-image request has strength 1 and starts from pure noise.

- ``euler``: deterministic; each step moves to the next timestep along the
  predicted noise (DDIM with eta 0, which Euler's method is in this form).
- ``lcm``: latent consistency sampling: each step predicts a clean latent
  (with LCM's boundary condition) and re-noises it to the next timestep with
  fresh noise; the noise comes from the session's seed, so frames stay stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

SAMPLERS = ("euler", "lcm")
# LCM's boundary condition constants (Song et al. consistency models; LCM paper).
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


def _unsqueeze(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch,) -> (batch, 1, 1, 1) in ``like``'s dtype, to scale latents per sample."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class FewStepSampler:
    def __init__(self, scheduler_config: Mapping[str, Any], device: torch.device) -> None:
        # DDPMScheduler computes every beta schedule diffusers knows from a config.
        from diffusers import DDPMScheduler

        known = {
            k: v
            for k, v in scheduler_config.items()
            if k
            in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        }
        schedule: Any = DDPMScheduler(**known)  # type: ignore[no-untyped-call]
        self.train_timesteps: int = schedule.config.num_train_timesteps
        self.prediction_type: str = scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.timestep_scaling = float(
            scheduler_config.get("timestep_scaling", LCM_TIMESTEP_SCALING)
        )
        self.alphas_cumprod = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)

    def timesteps(self, strengths: torch.Tensor, steps: int) -> torch.Tensor:
        """(steps, batch) integer timesteps, from ``strength * T`` down."""
        fractions = torch.arange(steps, 0, -1, device=strengths.device) / steps  # (steps,)
        starts = strengths.to(torch.float32) * self.train_timesteps  # (batch,)
        timesteps = torch.floor(fractions[:, None] * starts[None, :]).long() - 1
        return timesteps.clamp(0, self.train_timesteps - 1)

    def add_noise(
        self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        alpha = self.alphas_cumprod[t]
        return (
            _unsqueeze(alpha.sqrt(), latents) * latents
            + _unsqueeze((1 - alpha).sqrt(), latents) * noise
        )

    def predict(
        self, sample: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean latent and the noise the model sees in ``sample`` at ``t``."""
        alpha = self.alphas_cumprod[t]
        a, s = _unsqueeze(alpha.sqrt(), sample), _unsqueeze((1 - alpha).sqrt(), sample)
        if self.prediction_type == "epsilon":
            noise = model_output
            clean = (sample - s * model_output) / a
        else:  # v_prediction
            clean = a * sample - s * model_output
            noise = s * sample + a * model_output
        return clean, noise

    def step(
        self,
        name: str,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor | None,
        fresh_noise: torch.Tensor,
    ) -> torch.Tensor:
        """One sampler step from ``t`` to ``t_next`` (None after the last step)."""
        clean, noise = self.predict(sample, model_output.to(sample.dtype), t)
        if name == "lcm":
            clean = self._boundary_condition(sample, clean, t)
            noise = fresh_noise
        if t_next is None:
            return clean
        return self.add_noise(clean, noise, t_next)

    def _boundary_condition(
        self, sample: torch.Tensor, clean: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        scaled = t.to(torch.float32) * self.timestep_scaling
        c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
        return _unsqueeze(c_out, clean) * clean + _unsqueeze(c_skip, sample) * sample

"""Few-step samplers that give every sample in a batch its own timesteps.

diffusers' schedulers keep one schedule per call, but a batch here mixes
sessions with different strengths. So each request's schedule comes from the
diffusers scheduler itself (``set_timesteps``, read from the model's own
scheduler config: spacing, offsets, prediction type, the LCM distillation
grid), and the step math below is the scheduler's ``step``, written once more
with per-sample coefficients and in the same order of operations, so that a
request in a batch makes the frame the diffusers pipeline makes alone.

``steps`` counts the UNet passes run, and ``strength`` (image to image) says
how much of the input is replaced:

- ``euler`` (``EulerDiscreteScheduler``, what SD-Turbo and SDXL-Turbo ship):
  at strength 1 (text to image) the scheduler's own ``steps``-step schedule;
  below 1, ``steps`` timesteps evenly spaced below ``strength * T`` in the
  trailing style: ``round(strength * T * j / steps) - 1`` for j = steps..1.
  That is diffusers' img2img with ``steps / strength`` inference steps
  whenever that is a whole number (2 steps at 0.5: t = 499, 249, as with 4).
- ``euler_a`` (``EulerAncestralDiscreteScheduler``, what SDXL-Turbo ships):
  Euler's timesteps; each step re-noises with fresh noise from the session's
  seed, as diffusers draws it.
- ``lcm`` (``LCMScheduler``): diffusers' own ``set_timesteps(steps,
  strength=strength)``: the steps are picked from the distillation grid
  (50 timesteps by default, cut below ``strength * T``), as the LCM
  image-to-image pipeline runs them. Each step predicts a clean latent, applies
  the consistency boundary condition and re-noises it with fresh noise from the
  session's seed.

The math runs in float32 whatever the model's dtype, as diffusers' schedulers
do: dividing by sqrt(alpha) near t=999 amplifies rounding error. Each sampler
turns its step (and the noise added to input latents) into per-sample
coefficients on its (batch,) levels; one fused update applies them to the
latents (:mod:`livegen_kernels.latent_step`, a Triton kernel on CUDA).
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from livegen_kernels.latent_step import coefficients, latent_step

SAMPLERS = ("euler", "euler_a", "lcm")
# The sampler that runs what a model's own scheduler config names.
SAMPLER_OF_SCHEDULER = {
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_a",
    "LCMScheduler": "lcm",
}
SCHEDULE_CACHE_SIZE = 256  # (steps, strength) pairs: a slider visits a few dozen


@dataclass(frozen=True, slots=True)
class Schedule:
    """One request's schedule: what the UNet is given and what the step needs.

    ``levels`` is per sampler: Euler's sigmas (steps + 1, the last 0), LCM's
    timesteps again as integers (steps + 1, the last repeating the final step,
    as ``LCMScheduler.step`` does).
    """

    timesteps: torch.Tensor  # (steps,) float32
    levels: torch.Tensor  # (steps + 1,)
    init_scale: float  # text to image starts from noise times this


def _unsqueeze(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch,) -> (batch, 1, 1, 1), to scale latents per sample."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _scheduler_kwargs(cls: type[Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's fields that ``cls`` takes (the model may ship another scheduler)."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in accepted}


@dataclass(frozen=True, slots=True)
class BatchSchedule:
    timesteps: torch.Tensor  # (steps, batch) float32: the UNet's timestep per sample
    levels: torch.Tensor  # (steps + 1, batch)
    init_scale: torch.Tensor  # (batch,)

    def part(self, rows: slice) -> BatchSchedule:
        """The schedule of some samples of the batch."""
        return BatchSchedule(self.timesteps[:, rows], self.levels[:, rows], self.init_scale[rows])


class FewStepSampler(ABC):
    """The sampler one batch runs (``euler``, ``euler_a`` or ``lcm``), per-sample schedules."""

    name: str

    def __init__(self, scheduler: Any, device: torch.device) -> None:
        self.scheduler = scheduler
        self.device = device
        self.train_timesteps: int = scheduler.config.num_train_timesteps
        self.prediction_type: str = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self._schedule = functools.lru_cache(maxsize=SCHEDULE_CACHE_SIZE)(self._make_schedule)

    def step_noises(self, steps: int) -> int:
        """How many fresh noises a request draws for its steps, after the initial one."""
        return 0

    def schedule(self, steps: int, strength: float) -> Schedule:
        """The schedule of one request; ``ValueError`` when there is none for these values."""
        return self._schedule(steps, float(strength))

    @abstractmethod
    def _make_schedule(self, steps: int, strength: float) -> Schedule:
        """The schedule, from the diffusers scheduler's own ``set_timesteps``."""

    def batch(self, schedules: Sequence[Schedule]) -> BatchSchedule:
        return BatchSchedule(
            timesteps=torch.stack([s.timesteps for s in schedules], dim=1).to(self.device),
            levels=torch.stack([s.levels for s in schedules], dim=1).to(self.device),
            init_scale=torch.tensor([s.init_scale for s in schedules], device=self.device),
        )

    def start(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        text_only: torch.Tensor,
        schedule: BatchSchedule,
    ) -> torch.Tensor:
        """The first sample: noised input latents, or scaled noise for text to image."""
        keep, add = self.noise_scales(schedule)
        zero = torch.zeros_like(keep)
        table = coefficients(
            len(latents),
            latents.device,
            r=torch.where(text_only, zero, keep),
            u=torch.where(text_only, schedule.init_scale, add),
        )
        return latent_step(latents, table, noise=noise)

    @abstractmethod
    def noise_scales(self, schedule: BatchSchedule) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch,) scales of input latents and noise at each sample's first timestep.

        The scheduler's ``add_noise``: ``latents * keep + noise * add``.
        """

    def model_input(self, sample: torch.Tensor, k: int, schedule: BatchSchedule) -> torch.Tensor:
        """What the UNet is given at step ``k`` (the scheduler's ``scale_model_input``)."""
        return sample

    @abstractmethod
    def step(
        self,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        k: int,
        schedule: BatchSchedule,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """Step ``k`` of the schedule; ``noise`` is the step's fresh noise where it takes one."""


class EulerSampler(FewStepSampler):
    """diffusers' ``EulerDiscreteScheduler`` (no churn), in its own sigma space."""

    name = "euler"

    def _make_schedule(self, steps: int, strength: float) -> Schedule:
        scheduler = self.scheduler
        if strength >= 1.0:
            scheduler.set_timesteps(steps)
            init_scale = float(scheduler.init_noise_sigma)
        else:
            fractions = torch.arange(steps, 0, -1, dtype=torch.float64) / steps
            starts = strength * self.train_timesteps
            trailing = torch.round(fractions * starts) - 1
            scheduler.set_timesteps(timesteps=trailing.clamp(min=0).tolist())
            init_scale = float(scheduler.sigmas[0])
        sigmas = scheduler.sigmas.float().cpu()
        return Schedule(scheduler.timesteps.float().cpu(), sigmas, init_scale)

    def noise_scales(self, schedule: BatchSchedule) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(schedule.levels[0]), schedule.levels[0]

    def model_input(self, sample: torch.Tensor, k: int, schedule: BatchSchedule) -> torch.Tensor:
        sigma = _unsqueeze(schedule.levels[k], sample)
        return sample / ((sigma**2 + 1) ** 0.5)

    def step(
        self,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        k: int,
        schedule: BatchSchedule,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        table = self._move(schedule.levels[k], schedule.levels[k + 1])
        return latent_step(sample, table, model_output)

    def _move(
        self, sigma: torch.Tensor, target: torch.Tensor, **columns: torch.Tensor
    ) -> torch.Tensor:
        """The coefficients of an Euler step from ``sigma`` to ``target`` (each (batch,)).

        The clean latent the model predicts, then ``x + (x - clean) / sigma * (target - sigma)``
        rearranged as ``x * target / sigma + clean * (1 - target / sigma)``.
        """
        if self.prediction_type == "epsilon":
            p, q = torch.ones_like(sigma), -sigma
        else:  # v_prediction
            p, q = 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5
        ratio = target / sigma
        return coefficients(len(sigma), sigma.device, p=p, q=q, r=1 - ratio, s=ratio, **columns)


class EulerAncestralSampler(EulerSampler):
    """diffusers' ``EulerAncestralDiscreteScheduler`` (what SDXL-Turbo ships).

    Its schedule is Euler's (the same timesteps and sigmas); each step goes down
    to ``sigma_down`` and adds fresh noise up to the next sigma. The last step's
    noise is scaled by zero, so it is not drawn.
    """

    name = "euler_a"

    def step_noises(self, steps: int) -> int:
        return steps - 1

    def step(
        self,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        k: int,
        schedule: BatchSchedule,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        sigma, sigma_to = schedule.levels[k], schedule.levels[k + 1]
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        table = self._move(sigma, sigma_down, u=sigma_up)
        return latent_step(sample, table, model_output, noise)


class LCMSampler(FewStepSampler):
    """diffusers' ``LCMScheduler``: consistency steps on the distillation grid."""

    name = "lcm"

    def __init__(self, scheduler: Any, device: torch.device) -> None:
        super().__init__(scheduler, device)
        config = scheduler.config
        if config.thresholding:
            raise ValueError("LCM with dynamic thresholding is not supported")
        self.timestep_scaling = float(config.timestep_scaling)
        self.clip_range = float(config.clip_sample_range) if config.clip_sample else None

    def step_noises(self, steps: int) -> int:
        return steps - 1

    def _make_schedule(self, steps: int, strength: float) -> Schedule:
        try:
            self.scheduler.set_timesteps(steps, strength=strength)
        except ValueError:
            grid = self.scheduler.config.original_inference_steps
            kept = int(grid * strength)
            raise ValueError(
                f"the lcm sampler at strength {strength:g} keeps {kept} of its {grid} "
                f"timesteps, fewer than {steps} steps: use at most {kept} steps or a "
                f"strength of at least {steps / grid:g}"
            ) from None
        timesteps = self.scheduler.timesteps.cpu()
        levels = torch.cat([timesteps, timesteps[-1:]])
        return Schedule(timesteps.float(), levels, float(self.scheduler.init_noise_sigma))

    def noise_scales(self, schedule: BatchSchedule) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alphas_cumprod[schedule.levels[0]]
        return alpha**0.5, (1 - alpha) ** 0.5

    def step(
        self,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        k: int,
        schedule: BatchSchedule,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        t = schedule.levels[k]
        alpha = self.alphas_cumprod[t]
        beta = 1 - alpha
        if self.prediction_type == "epsilon":
            p, q = 1 / alpha.sqrt(), -beta.sqrt() / alpha.sqrt()
        else:  # v_prediction
            p, q = alpha.sqrt(), -beta.sqrt()
        clip = math.inf if self.clip_range is None else self.clip_range
        # The consistency model's boundary condition (LCM paper, sigma_data 0.5).
        scaled = t * self.timestep_scaling
        c_skip = 0.25 / (scaled**2 + 0.25)
        c_out = scaled / (scaled**2 + 0.25) ** 0.5
        # Re-noised to the next timestep with the fresh noise, when there is a next step.
        keep = torch.ones_like(alpha)
        add = torch.zeros_like(alpha)
        if noise is not None:
            alpha_next = self.alphas_cumprod[schedule.levels[k + 1]]
            keep, add = alpha_next.sqrt(), (1 - alpha_next).sqrt()
        table = coefficients(
            len(t), sample.device, p=p, q=q, clip=clip, r=keep * c_out, s=keep * c_skip, u=add
        )
        return latent_step(sample, table, model_output, noise)


def make_sampler(
    name: str, scheduler_config: Mapping[str, Any], device: torch.device
) -> FewStepSampler:
    """The sampler ``name`` over the beta schedule of the model's scheduler config."""
    from diffusers import EulerDiscreteScheduler, LCMScheduler

    cls, sampler = {
        # The ancestral sampler's schedule is Euler's, and only Euler takes custom timesteps.
        "euler": (EulerDiscreteScheduler, EulerSampler),
        "euler_a": (EulerDiscreteScheduler, EulerAncestralSampler),
        "lcm": (LCMScheduler, LCMSampler),
    }[name]
    scheduler: Any = cls
    return sampler(scheduler(**_scheduler_kwargs(cls, scheduler_config)), device)

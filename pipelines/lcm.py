"""Latent consistency models: distilled LCMs and LCM-LoRA on a base model, 1 to 8 steps.

Components: as Stable Diffusion (or SDXL), plus LoRA adapters. A distilled LCM
(its UNet has ``time_cond_proj_dim``) takes the guidance scale as an embedding,
so guidance costs nothing. A base model is made an LCM by an LCM-LoRA loaded as
``--lora lcm=FILE``: every session runs with it, and when it is the only LoRA it
is fused into the weights (a frame then costs what a distilled LCM costs). Other
LoRAs switch per session with the ``lora`` param, on top of the LCM-LoRA. A base
model uses ordinary classifier-free guidance when ``guidance_scale`` is above 1
(1 to 2 is LCM-LoRA's range), which doubles the UNet batch; requests with and
without guidance run in separate batches.

Guidance follows diffusers: a distilled LCM embeds ``w - 1``
(``LatentConsistencyModelPipeline``), a base model with the LoRA mixes
``uncond + w * (cond - uncond)`` (``StableDiffusion(XL)Pipeline`` with an
``LCMScheduler``).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from pipelines.base import FrameRequest
from pipelines.control import Step
from pipelines.diffusion import FewStepPipeline
from pipelines.prompts import PromptEmbedding
from stream.params import Params

log = logging.getLogger(__name__)

LCM_LORA = "lcm"  # the name an LCM-LoRA is loaded under: --lora lcm=FILE
# LCM's guidance embedding scales w like a timestep before the sinusoids.
GUIDANCE_EMBEDDING_SCALE = 1000.0


class LCMPipeline(FewStepPipeline):
    name = "lcm"
    max_steps = 8
    default_sampler = "lcm"

    @property
    def guidance_embedded(self) -> bool:
        return self.unet.config.time_cond_proj_dim is not None

    def family_defaults(self) -> dict[str, Any]:
        # diffusers' default for a distilled LCM; LCM-LoRA wants 1 (no CFG) to 2.
        guidance = 8.5 if self.guidance_embedded else 1.0
        return {"steps": 4, "strength": 0.5, "guidance_scale": guidance}

    def find_standing_lora(self) -> str | None:
        if self.guidance_embedded:
            return None
        if LCM_LORA not in self.loras:
            log.warning(
                "this UNet is not a distilled LCM (no guidance embedding) and no LCM-LoRA is "
                "loaded: unless the LoRA is already fused into it, give one with "
                "--lora lcm=FILE (latent-consistency/lcm-lora-sdv1-5 or lcm-lora-sdxl)"
            )
            return None
        return LCM_LORA

    def unused_params(self, params: Params) -> dict[str, Any]:
        if self._uses_cfg(params):
            return {}
        if self.guidance_embedded:
            return {"negative_prompt": ""}
        # Without guidance a base model's frame depends on neither.
        return {"negative_prompt": "", "guidance_scale": 1.0}

    def ignored_params(self) -> frozenset[str]:
        # A distilled LCM takes its guidance as an embedding, never as CFG, so it
        # has no use for a negative prompt; with an LCM-LoRA both depend on the scale.
        return frozenset({"negative_prompt"}) if self.guidance_embedded else frozenset()

    def batch_key(self, request: FrameRequest) -> Hashable:
        base = super().batch_key(request)
        return (base, self._uses_cfg(request.params))

    def timestep_cond(self, requests: Sequence[FrameRequest]) -> torch.Tensor | None:
        if not self.guidance_embedded:
            return None
        scales = torch.tensor([r.params.guidance_scale - 1 for r in requests])
        embedding = guidance_embedding(scales, self.unet.config.time_cond_proj_dim)
        return embedding.to(self.device, self.dtype)

    def predict_noise(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeddings: Sequence[PromptEmbedding],
        requests: Sequence[FrameRequest],
        step: Step,
    ) -> torch.Tensor:
        if not self._uses_cfg(requests[0].params):
            return self.run_unet(sample, timesteps, embeddings, requests, step)
        negatives = self.prompts.negatives([r.params.negative_prompt for r in requests])
        both = self.run_unet(
            torch.cat([sample, sample]),
            torch.cat([timesteps, timesteps]),
            [*negatives, *embeddings],
            [*requests, *requests],
            step,
        )
        unconditional, conditional = both.chunk(2)
        scales = torch.tensor([r.params.guidance_scale for r in requests], device=self.device)
        scales = scales.to(both.dtype).view(-1, 1, 1, 1)
        return unconditional + scales * (conditional - unconditional)

    def _uses_cfg(self, params: Params) -> bool:
        return not self.guidance_embedded and params.guidance_scale > 1.0


def guidance_embedding(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch,) values of ``w - 1`` -> (batch, dim) sinusoidal embedding, as LCM was trained.

    In the order of operations of diffusers' ``get_guidance_scale_embedding``: the
    angles reach thousands of radians, where a different rounding of the
    frequencies shows in the embedding.
    """
    w = scales.float() * GUIDANCE_EMBEDDING_SCALE
    half = dim // 2
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = w[:, None] * frequencies[None, :]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding

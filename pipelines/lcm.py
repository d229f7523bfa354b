"""Latent consistency models: distilled LCMs and LCM-LoRA on a base model, 1 to 8 steps.

Components: as Stable Diffusion (or SDXL), plus LoRA adapters. A distilled LCM
(its UNet has ``time_cond_proj_dim``) takes the guidance scale as an embedding,
so guidance costs nothing. A base model made fast by an LCM-LoRA loaded with
``--lora NAME=FILE`` uses ordinary classifier-free guidance when
``guidance_scale`` is above 1 (1 to 2 is LCM-LoRA's range), which doubles the
UNet batch; requests with and without guidance run in separate batches.
Sessions switch adapters with the ``lora`` param; the base model stays loaded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from pipelines.base import FrameRequest
from pipelines.diffusion import FewStepPipeline
from pipelines.prompts import PromptEmbedding
from stream.params import Params

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
        # Distilled LCMs were trained with w around 8; LCM-LoRA wants 1 (no CFG) to 2.
        guidance = 8.0 if self.guidance_embedded else 1.0
        return {"steps": 4, "strength": 0.5, "guidance_scale": guidance}

    def batch_key(self, request: FrameRequest) -> Hashable:
        base = super().batch_key(request)
        return (base, self._uses_cfg(request.params))

    def timestep_cond(self, requests: Sequence[FrameRequest]) -> torch.Tensor | None:
        if not self.guidance_embedded:
            return None
        scales = torch.tensor([r.params.guidance_scale - 1.0 for r in requests], device=self.device)
        embedding = guidance_embedding(scales, self.unet.config.time_cond_proj_dim)
        return embedding.to(self.dtype)

    def predict_noise(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeddings: Sequence[PromptEmbedding],
        requests: Sequence[FrameRequest],
    ) -> torch.Tensor:
        if not self._uses_cfg(requests[0].params):
            return self.run_unet(sample, timesteps, embeddings, requests)
        negatives = self.prompts([r.params.negative_prompt for r in requests])
        both = self.run_unet(
            torch.cat([sample, sample]),
            torch.cat([timesteps, timesteps]),
            [*negatives, *embeddings],
            [*requests, *requests],
        )
        unconditional, conditional = both.chunk(2)
        scales = torch.tensor([r.params.guidance_scale for r in requests], device=self.device)
        scales = scales.to(both.dtype).view(-1, 1, 1, 1)
        return unconditional + scales * (conditional - unconditional)

    def _uses_cfg(self, params: Params) -> bool:
        return not self.guidance_embedded and params.guidance_scale > 1.0


def guidance_embedding(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch,) guidance scales -> (batch, dim) sinusoidal embedding, as LCM was trained."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=scales.device) / (half - 1)
    )
    angles = (scales.float() * GUIDANCE_EMBEDDING_SCALE)[:, None] * frequencies[None, :]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding

"""SD-Turbo and SDXL-Turbo: adversarially distilled models, 1 to 4 steps, no guidance.

Components: a UNet, a CLIP text encoder (two for SDXL-Turbo, found in the
folder's ``model_index.json``) and the VAE, or TAESD in its place. Text to image
and image to image (a sketch or a webcam frame in). These models were distilled
to run without classifier-free guidance, so ``guidance_scale`` is not used and
``negative_prompt`` has no effect. Sessions start on the sampler the model's
scheduler config names. Everything else is in
:mod:`pipelines.diffusion`.
"""

from __future__ import annotations

from typing import Any

from pipelines.diffusion import FewStepPipeline
from pipelines.samplers import SAMPLER_OF_SCHEDULER
from stream.params import Params

# Params a model distilled without guidance never uses, with the values they count as.
_UNGUIDED = {"negative_prompt": "", "guidance_scale": 0.0}


class SDTurboPipeline(FewStepPipeline):
    name = "sd-turbo"
    max_steps = 4

    @property
    def default_sampler(self) -> str:  # type: ignore[override]
        # The model's own: Euler for SD-Turbo, Euler ancestral for SDXL-Turbo.
        return SAMPLER_OF_SCHEDULER.get(self.scheduler_class, "euler")

    def family_defaults(self) -> dict[str, Any]:
        return {"steps": 1, "strength": 0.5, "guidance_scale": 0.0}

    def unused_params(self, params: Params) -> dict[str, Any]:
        # Distilled without guidance: an edit of these must not rerun the model.
        return dict(_UNGUIDED)

    def ignored_params(self) -> frozenset[str]:
        return frozenset(_UNGUIDED)

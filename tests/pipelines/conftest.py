"""The ``models`` fixture: each family's livegen pipeline and its diffusers references."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from pipelines import PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from tests.conftest import TinyModels
from tests.pipelines.reference import Model, reference_pipelines


@pytest.fixture(scope="module")
def models(tiny_models: TinyModels) -> Callable[[str, bool], Model]:
    """``models(family, taesd)``: the livegen pipeline and its references, loaded once."""

    @functools.cache
    def load(family: str, taesd: bool) -> Model:
        # (model folder, livegen pipeline, LCM-LoRA file), named as in TinyModels.
        folder_name, name, lora_name = {
            "sd-turbo": ("sd_turbo", "sd-turbo", None),
            "sdxl-turbo": ("sdxl_turbo", "sd-turbo", None),
            "lcm": ("lcm", "lcm", None),
            "lcm-lora-sd": ("sd_base", "lcm", "lcm_lora_sd"),
            "lcm-lora-sdxl": ("sdxl_base", "lcm", "lcm_lora_sdxl"),
        }[family]
        folder = getattr(tiny_models, folder_name)
        lcm_lora = getattr(tiny_models, lora_name) if lora_name else None
        xl = "sdxl" in family
        tiny_vae = (tiny_models.taesdxl if xl else tiny_models.taesd) if taesd else None
        options = PipelineOptions(
            model=str(folder),
            device="cpu",
            dtype="float32",
            tiny_vae=None if tiny_vae is None else str(tiny_vae),
            loras={} if lcm_lora is None else {"lcm": str(lcm_lora)},
        )
        livegen = create_pipeline(name, options)
        assert isinstance(livegen, FewStepPipeline)
        return Model(livegen, *reference_pipelines(family, folder, tiny_vae, lcm_lora))

    return load

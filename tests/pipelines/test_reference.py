"""livegen's frames against diffusers' own pipelines: the same weights, settings and seed.

Random weights hide most mistakes in pixels, so each case compares the final
latents (what diffusers returns for ``output_type="latent"``, caught at its last
step) as well as the frame. The tiny models carry the published configs' fields
(tests/models.py), so the timesteps, noise scaling, guidance, text-encoder
layers and VAE scaling under test are those real weights would meet.

The contract (README, "Frames you can trust"): a livegen request with seed S is
diffusers' pipeline called with ``generator=torch.Generator("cpu").manual_seed(S)``
on one image. For the Euler sampler, livegen's ``steps`` at ``strength`` is
diffusers' img2img with ``steps / strength`` inference steps; LCM's are the same
numbers in both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from pipelines.samplers import make_sampler
from stream.fal import parse_fal_input, resolve_params
from stream.limits import Limits
from stream.params import Params
from tests.conftest import TinyModels
from tests.pipelines.reference import (
    HEIGHT,
    PROMPT,
    WIDTH,
    Model,
    assert_same_frame,
    picture,
    run_diffusers,
    run_livegen,
)

SD_TURBO_SCHEDULER = (
    Path(__file__).resolve().parent.parent
    / "data/configs/stabilityai--sd-turbo/scheduler/scheduler_config.json"
)

VAES = pytest.mark.parametrize("taesd", [False, True], ids=["vae", "taesd"])
TURBO = pytest.mark.parametrize("family", ["sd-turbo", "sdxl-turbo"])
LORA = pytest.mark.parametrize("family", ["lcm-lora-sd", "lcm-lora-sdxl"])


@TURBO
@VAES
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_turbo_text_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], family: str, taesd: bool, steps: int
) -> None:
    model = models(family, taesd)
    assert_same_frame(
        run_livegen(model.livegen, None, steps=steps),
        run_diffusers(model.text, None, num_inference_steps=steps, guidance_scale=0.0),
    )


@TURBO
@VAES
@pytest.mark.parametrize(
    ("steps", "strength"), [(1, 0.5), (2, 0.5), (1, 0.25), (3, 0.75), (2, 1.0)]
)
def test_turbo_image_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], family: str, taesd: bool, steps: int, strength: float
) -> None:
    model = models(family, taesd)
    assert_same_frame(
        run_livegen(model.livegen, picture(), steps=steps, strength=strength),
        run_diffusers(
            model.image,
            picture(),
            num_inference_steps=round(steps / strength),
            strength=strength,
            guidance_scale=0.0,
        ),
    )


@VAES
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 7, 8])
def test_a_distilled_lcm_text_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], taesd: bool, steps: int
) -> None:
    model = models("lcm", taesd)
    assert_same_frame(
        run_livegen(model.livegen, None, steps=steps, guidance_scale=8.5),
        run_diffusers(model.text, None, num_inference_steps=steps, guidance_scale=8.5),
    )


@VAES
@pytest.mark.parametrize(
    ("steps", "strength", "guidance"), [(1, 0.5, 8.5), (2, 0.5, 8.5), (4, 0.5, 2.0), (8, 0.8, 8.5)]
)
def test_a_distilled_lcm_image_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], taesd: bool, steps: int, strength: float, guidance: float
) -> None:
    model = models("lcm", taesd)
    assert_same_frame(
        run_livegen(
            model.livegen, picture(), steps=steps, strength=strength, guidance_scale=guidance
        ),
        run_diffusers(
            model.image,
            picture(),
            num_inference_steps=steps,
            strength=strength,
            guidance_scale=guidance,
        ),
    )


@LORA
@VAES
@pytest.mark.parametrize(("steps", "guidance"), [(1, 1.0), (4, 1.0), (2, 1.5), (4, 2.0)])
def test_lcm_lora_on_a_base_model_text_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], family: str, taesd: bool, steps: int, guidance: float
) -> None:
    model = models(family, taesd)
    assert_same_frame(
        run_livegen(model.livegen, None, steps=steps, guidance_scale=guidance),
        run_diffusers(model.text, None, num_inference_steps=steps, guidance_scale=guidance),
    )


@LORA
@VAES
@pytest.mark.parametrize(("steps", "guidance"), [(2, 1.0), (4, 1.5)])
def test_lcm_lora_on_a_base_model_image_to_image_equals_diffusers(
    models: Callable[[str, bool], Model], family: str, taesd: bool, steps: int, guidance: float
) -> None:
    # diffusers' base img2img keeps the last steps of an n-step LCM schedule; at
    # strength 0.5 with n = 2 * steps those are the steps livegen picks itself.
    model = models(family, taesd)
    assert_same_frame(
        run_livegen(model.livegen, picture(), steps=steps, strength=0.5, guidance_scale=guidance),
        run_diffusers(
            model.image,
            picture(),
            num_inference_steps=2 * steps,
            strength=0.5,
            guidance_scale=guidance,
        ),
    )


def test_the_negative_prompt_guides_as_in_diffusers(
    models: Callable[[str, bool], Model],
) -> None:
    model = models("lcm-lora-sdxl", False)
    assert_same_frame(
        run_livegen(
            model.livegen, None, steps=2, guidance_scale=1.5, negative_prompt="blurry, dark"
        ),
        run_diffusers(
            model.text,
            None,
            num_inference_steps=2,
            guidance_scale=1.5,
            negative_prompt="blurry, dark",
        ),
    )


@pytest.mark.parametrize("family", ["sd-turbo", "sdxl-turbo", "lcm", "lcm-lora-sdxl"])
def test_every_request_of_a_mixed_batch_equals_diffusers(
    models: Callable[[str, bool], Model], family: str
) -> None:
    model = models(family, False)
    pipeline = model.livegen
    guidance = {"lcm": 8.5, "lcm-lora-sdxl": 1.5}.get(family, 0.0)
    base = pipeline.default_params.updated(
        {"width": WIDTH, "height": HEIGHT, "prompt": PROMPT, "steps": 2, "guidance_scale": guidance}
    )
    cases: list[tuple[Params, np.ndarray | None]] = [
        (base.updated({"seed": 1}), None),
        (base.updated({"seed": 2, "prompt": "a dog", "strength": 0.5}), picture(2)),
        (base.updated({"seed": 3, "strength": 0.25 if "turbo" in family else 1.0}), picture(3)),
    ]
    reference_of = functools.partial(run_diffusers, guidance_scale=guidance)
    states = [pipeline.new_state() for _ in cases]
    pipeline(
        [FrameRequest(state, p, image) for state, (p, image) in zip(states, cases, strict=True)]
    )

    for state, (p, image) in zip(states, cases, strict=True):
        if image is None:
            reference = reference_of(model.text, None, p.prompt, p.seed, num_inference_steps=2)
        else:
            # The LCM img2img pipeline runs all n steps; the base img2img keeps int(n * strength).
            n = 2 if family == "lcm" else round(2 / p.strength)
            reference = reference_of(
                model.image, image, p.prompt, p.seed, num_inference_steps=n, strength=p.strength
            )
        # A batch runs in lanes, each on its share of the threads (pipelines/lanes.py):
        # some sums then run in another order.
        assert_same_frame((state.output_latent, state.output), reference, rtol=1e-4, max_levels=2)


@pytest.mark.parametrize(
    ("n", "strength"),
    # Every pair for which diffusers' img2img runs at least one step.
    [
        (n, strength)
        for n in (1, 2, 3, 4, 6, 8, 16)
        for strength in (0.3, 0.5, 0.6, 0.75, 0.9, 1.0)
        if int(n * strength) >= 1
    ],
)
def test_fal_steps_and_strength_run_the_timesteps_of_diffusers_img2img(
    n: int, strength: float
) -> None:
    from diffusers import EulerDiscreteScheduler

    kept = min(int(n * strength), n)
    config = json.loads(SD_TURBO_SCHEDULER.read_text())
    reference = EulerDiscreteScheduler.from_config(config)
    reference.set_timesteps(n)
    fal_input = parse_fal_input(
        {"image": b"an image", "num_inference_steps": n, "strength": strength}, Limits()
    )

    params = resolve_params(Params(scheduler="euler"), fal_input, seed_if_absent=0)

    sampler = make_sampler("euler", config, torch.device("cpu"))
    timesteps = sampler.schedule(params.steps, params.strength).timesteps
    assert timesteps.tolist() == reference.timesteps[n - kept :].tolist()


# diffusers' own loader, asked for a second adapter, passes on peft's caution.
@pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")
def test_a_style_lora_on_top_of_the_lcm_lora_equals_diffusers(tiny_models: TinyModels) -> None:
    from diffusers import AutoPipelineForText2Image, LCMScheduler

    loras = {"lcm": str(tiny_models.lcm_lora_sd), "sketchy": str(tiny_models.lora)}
    options = PipelineOptions(model=str(tiny_models.sd_base), device="cpu", loras=loras)
    livegen = create_pipeline("lcm", options)
    assert isinstance(livegen, FewStepPipeline)
    reference = AutoPipelineForText2Image.from_pretrained(tiny_models.sd_base)
    reference.set_progress_bar_config(disable=True)
    reference.scheduler = LCMScheduler.from_config(reference.scheduler.config)
    for name, file in loras.items():
        reference.load_lora_weights(file, adapter_name=name)

    for session_lora, adapters in (("", ["lcm"]), ("sketchy", ["lcm", "sketchy"])):
        reference.set_adapters(adapters)
        assert_same_frame(
            run_livegen(livegen, None, steps=2, lora=session_lora),
            run_diffusers(reference, None, num_inference_steps=2, guidance_scale=1.0),
        )


# The SDXL pipeline's upcast calls a helper diffusers itself has deprecated.
@pytest.mark.filterwarnings("ignore:`upcast_vae` is deprecated:FutureWarning")
def test_sdxl_in_float16_decodes_in_float32_as_diffusers_does(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    # A VAE that overflows in float16, as SDXL's does; its config says force_upcast.
    import shutil

    from diffusers import AutoPipelineForText2Image

    from tests.models import make_vae_overflow_in_float16

    folder = shutil.copytree(tiny_models.sdxl_turbo, tmp_path / "sdxl-turbo")
    make_vae_overflow_in_float16(folder)
    options = PipelineOptions(model=str(folder), device="cpu", dtype="float16")
    livegen = create_pipeline("sd-turbo", options)
    assert isinstance(livegen, FewStepPipeline)
    assert livegen.vae.dtype == torch.float32 and livegen.dtype == torch.float16
    reference = AutoPipelineForText2Image.from_pretrained(folder, dtype=torch.float16)
    reference.set_progress_bar_config(disable=True)

    latent, frame = run_livegen(livegen, None, steps=1)
    expected = run_diffusers(reference, None, num_inference_steps=1, guidance_scale=0.0)

    assert frame.std() > 10  # not a black (or any flat) frame
    # float16 weights on both sides; livegen's sampler math stays in float32.
    assert_same_frame((latent, frame), expected, rtol=1e-2, max_levels=8, mean_levels=1.0)

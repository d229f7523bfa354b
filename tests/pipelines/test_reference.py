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
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from pipelines.samplers import make_sampler
from stream.fal import parse_fal_input, resolve_params
from stream.limits import Limits
from stream.params import Params, parse_params_patch
from tests.conftest import TinyModels

WIDTH, HEIGHT = 64, 96  # not square: height and width cannot be swapped unseen
PROMPT = "a cat on the moon"
SEED = 7
# float32 on one CPU thread pool: the same math in the same order, up to how a
# kernel splits its sums. The pixels may flip one level where a value sits on .5.
LATENT_RTOL = 1e-5
MAX_LEVELS = 1
SD_TURBO_SCHEDULER = (
    Path(__file__).resolve().parent.parent
    / "data/configs/stabilityai--sd-turbo/scheduler/scheduler_config.json"
)


@dataclass(frozen=True)
class Model:
    """A livegen pipeline and the diffusers pipelines it is held to."""

    livegen: FewStepPipeline
    text: Any  # diffusers' text-to-image pipeline
    image: Any  # diffusers' image-to-image pipeline, sharing the same modules


def _reference(family: str, folder: Path, tiny_vae: Path | None, lcm_lora: Path | None) -> Any:
    from diffusers import (
        AutoencoderTiny,
        AutoPipelineForImage2Image,
        AutoPipelineForText2Image,
        LCMScheduler,
    )

    text = AutoPipelineForText2Image.from_pretrained(folder)
    text.set_progress_bar_config(disable=True)
    if tiny_vae is not None:
        text.vae = AutoencoderTiny.from_pretrained(tiny_vae)
    if lcm_lora is not None:
        # What the LCM-LoRA model cards say to run: the base pipeline, LCM's scheduler.
        text.scheduler = LCMScheduler.from_config(text.scheduler.config)
        text.load_lora_weights(str(lcm_lora))
    image = AutoPipelineForImage2Image.from_pipe(text)
    image.set_progress_bar_config(disable=True)
    return text, image


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
        return Model(livegen, *_reference(family, folder, tiny_vae, lcm_lora))

    return load


def picture(seed: int = 1) -> np.ndarray:
    """A smooth input picture (H, W, 3) uint8 at the model's size."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 3)
    channels = [127 + 120 * np.sin(x / 9 + y / 13 + phase) for phase in phases]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def run_livegen(
    pipeline: FewStepPipeline, image: np.ndarray | None, **params: Any
) -> tuple[torch.Tensor, np.ndarray]:
    # Checked as the server checks a client's params (lists become tuples).
    p = pipeline.default_params.updated(
        parse_params_patch(
            {"width": WIDTH, "height": HEIGHT, "prompt": PROMPT, "seed": SEED, **params}
        )
    )
    state = pipeline.new_state()
    frame = pipeline([FrameRequest(state, p, image)])[0]
    return state.output_latent, frame


def run_diffusers(
    pipe: Any, init: np.ndarray | None, prompt: str = PROMPT, seed: int = SEED, **kwargs: Any
) -> tuple[torch.Tensor, np.ndarray]:
    from PIL import Image

    final: dict[str, torch.Tensor] = {}

    def keep_latents(pipe: Any, step: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        final["latents"] = tensors["latents"].clone()
        return tensors

    # Text to image is told the size; image to image takes the input's.
    inputs = (
        {"width": WIDTH, "height": HEIGHT} if init is None else {"image": Image.fromarray(init)}
    )
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        watch: dict[str, Any] = {"callback_on_step_end": keep_latents}
    else:  # the older callback (the T2I-Adapter pipelines)
        watch = {"callback": lambda step, t, latents: final.update(latents=latents.clone())}
    frame = pipe(
        prompt=prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pil",
        **watch,
        **inputs,
        **kwargs,
    ).images[0]
    return final["latents"][0], np.asarray(frame)


def assert_same_frame(
    livegen: tuple[torch.Tensor, np.ndarray],
    reference: tuple[torch.Tensor, np.ndarray],
    rtol: float = LATENT_RTOL,
    max_levels: int = MAX_LEVELS,
    mean_levels: float = 0.01,
) -> None:
    (latent, frame), (expected_latent, expected_frame) = livegen, reference
    assert latent.shape == expected_latent.shape
    relative = ((latent.float() - expected_latent.float()).norm() / expected_latent.norm()).item()
    assert relative <= rtol, f"latents differ by {relative:.2e} (relative)"
    assert frame.shape == expected_frame.shape
    levels = np.abs(frame.astype(int) - expected_frame.astype(int))
    assert levels.max() <= max_levels, f"pixels differ by up to {levels.max()} levels"
    assert levels.mean() < mean_levels, f"pixels differ by {levels.mean():.3f} levels on average"


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

"""What the reference-equivalence tests share: the size, prompt and seed, running a
livegen pipeline and a diffusers pipeline on one request, and comparing the two.

The contract (README, "Frames you can trust"): a livegen request with seed S is
diffusers' pipeline called with ``generator=torch.Generator("cpu").manual_seed(S)``
on one image; latents and pixels are compared, not a corner of the picture.
The ``models`` fixture (tests/pipelines/conftest.py) loads each family once.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines import FrameRequest
from pipelines.diffusion import FewStepPipeline
from stream.params import parse_params_patch

WIDTH, HEIGHT = 64, 96  # not square: height and width cannot be swapped unseen
PROMPT = "a cat on the moon"
SEED = 7
# float32 on one CPU thread pool: the same math in the same order, up to how a
# kernel splits its sums. The pixels may flip one level where a value sits on .5.
LATENT_RTOL = 1e-5
MAX_LEVELS = 1


@dataclass(frozen=True)
class Model:
    """A livegen pipeline and the diffusers pipelines it is held to."""

    livegen: FewStepPipeline
    text: Any  # diffusers' text-to-image pipeline
    image: Any  # diffusers' image-to-image pipeline, sharing the same modules


def reference_pipelines(
    family: str, folder: Path, tiny_vae: Path | None, lcm_lora: Path | None
) -> Any:
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

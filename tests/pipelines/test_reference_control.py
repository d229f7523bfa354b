"""Structure control against diffusers: ControlNets and T2I-Adapters, alone and batched.

The same contract as tests/pipelines/test_reference.py: latents and pixels equal
diffusers' own pipelines on the same tiny random weights, settings and seed. A
controlled request at strength 1 is diffusers' ControlNet (or Adapter) pipeline
given the frame as its control image; below 1 it is the ControlNet Img2Img
pipeline given the frame as both the picture and the control image. The tiny
ControlNets and adapters have every weight random (tests/models.py), so a
control that is ignored, mis-scaled or applied at the wrong steps shows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from tests.conftest import TinyModels
from tests.pipelines.reference import (
    HEIGHT,
    WIDTH,
    assert_same_frame,
    picture,
    run_diffusers,
    run_livegen,
)

# The SD adapter pipeline decodes through a helper diffusers has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:The decode_latents method:FutureWarning")

FAMILIES = {  # family: (TinyModels field, livegen pipeline, guidance)
    "sd-turbo": ("sd_turbo", "sd-turbo", 0.0),
    "sdxl-turbo": ("sdxl_turbo", "sd-turbo", 0.0),
    "lcm": ("lcm", "lcm", 8.5),
    # SD 1.5 with an LCM-LoRA, as RT-LCM pairs it with ControlNets.
    "lcm-lora-sd": ("sd_base", "lcm", 1.0),
}


@dataclass(frozen=True)
class Controlled:
    livegen: FewStepPipeline
    text: Any  # diffusers' text-to-image pipeline of the model
    controlnets: dict[str, Any]  # diffusers' ControlNetModel, by livegen name
    adapters: dict[str, Any]  # diffusers' T2IAdapter, by livegen name


@pytest.fixture(scope="module")
def controlled(
    tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Controlled]:
    """``controlled(family)``: a livegen pipeline with two ControlNets (and adapters on SD)."""
    from diffusers import AutoPipelineForText2Image, ControlNetModel, LCMScheduler, T2IAdapter

    from tests.models import save_controlnet, save_t2i_adapter

    root = tmp_path_factory.mktemp("controls")

    @functools.cache
    def load(family: str) -> Controlled:
        folder_name, name, _ = FAMILIES[family]
        folder: Path = getattr(tiny_models, folder_name)
        controlnets = {
            "lines": save_controlnet(root / family / "lines", folder, seed=3),
            "edges": save_controlnet(root / family / "edges", folder, seed=5),
        }
        lora = {"lcm": str(tiny_models.lcm_lora_sd)} if family == "lcm-lora-sd" else {}
        adapters = {
            "sketch": save_t2i_adapter(root / family / "sketch", folder, seed=4),
            "grey": save_t2i_adapter(root / family / "grey", folder, seed=6, in_channels=1),
        }
        options = PipelineOptions(
            model=str(folder),
            device="cpu",
            dtype="float32",
            controlnets={n: str(p) for n, p in controlnets.items()},
            t2i_adapters={n: str(p) for n, p in adapters.items()},
            loras=lora,
        )
        livegen = create_pipeline(name, options)
        assert isinstance(livegen, FewStepPipeline)
        text = AutoPipelineForText2Image.from_pretrained(folder)
        text.set_progress_bar_config(disable=True)
        if lora:
            text.scheduler = LCMScheduler.from_config(text.scheduler.config)
            text.load_lora_weights(lora["lcm"])
        return Controlled(
            livegen,
            text,
            {n: ControlNetModel.from_pretrained(p) for n, p in controlnets.items()},
            {n: T2IAdapter.from_pretrained(p) for n, p in adapters.items()},
        )

    return load


def sketch() -> np.ndarray:
    """Dark strokes on white, (H, W, 3) uint8 at the model's size: what a canvas sends."""
    frame = np.full((HEIGHT, WIDTH, 3), 250, np.uint8)
    frame[20:24, 8:56] = 20
    frame[30:80, 30:33] = 40
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frame[np.abs((x - 32) ** 2 + (y - 60) ** 2 - 300) < 40] = (200, 30, 30)
    return frame


def controlnet_pipeline(model: Controlled, names: list[str], image_to_image: bool) -> Any:
    import diffusers

    nets = [model.controlnets[n] for n in names]
    xl = "XL" if model.livegen.prompts.dual else ""
    task = "Img2Img" if image_to_image else ""
    pipeline_class = getattr(diffusers, f"StableDiffusion{xl}ControlNet{task}Pipeline")
    pipe = pipeline_class.from_pipe(model.text, controlnet=nets[0] if len(nets) == 1 else nets)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def adapter_pipeline(model: Controlled, names: list[str]) -> Any:
    from diffusers import (
        MultiAdapter,
        StableDiffusionAdapterPipeline,
        StableDiffusionXLAdapterPipeline,
    )

    adapters = [model.adapters[n] for n in names]
    adapter = adapters[0] if len(adapters) == 1 else MultiAdapter(adapters)
    xl = model.livegen.prompts.dual
    pipeline_class = StableDiffusionXLAdapterPipeline if xl else StableDiffusionAdapterPipeline
    pipe = pipeline_class.from_pipe(model.text, adapter=adapter)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("family", "steps", "guidance"),
    [
        ("sd-turbo", 1, 0.0),
        ("sd-turbo", 3, 0.0),
        ("sdxl-turbo", 2, 0.0),
        ("lcm", 4, 8.5),
        ("lcm-lora-sd", 2, 1.5),  # classifier-free guidance: the ControlNet runs on both halves
    ],
)
def test_a_controlnet_at_strength_1_equals_diffusers_controlnet_pipeline(
    controlled: Callable[[str], Controlled], family: str, steps: int, guidance: float
) -> None:
    model = controlled(family)
    frame = sketch()
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=steps,
            strength=1.0,
            guidance_scale=guidance,
            controlnet="lines",
            control_scale=0.7,
        ),
        run_diffusers(
            controlnet_pipeline(model, ["lines"], image_to_image=False),
            None,
            image=Image.fromarray(frame),
            num_inference_steps=steps,
            guidance_scale=guidance,
            controlnet_conditioning_scale=0.7,
        ),
    )


# diffusers' ControlNet Img2Img pipelines have no guidance embedding, so a distilled LCM
# has no reference there; an LCM-LoRA on SD 1.5 does.
@pytest.mark.parametrize(
    ("family", "steps"), [("sd-turbo", 2), ("sdxl-turbo", 1), ("lcm-lora-sd", 2)]
)
def test_a_controlnet_below_strength_1_equals_diffusers_controlnet_img2img(
    controlled: Callable[[str], Controlled], family: str, steps: int
) -> None:
    model = controlled(family)
    guidance = FAMILIES[family][2]
    frame = picture(4)
    # The img2img pipelines keep int(n * strength) of n steps.
    n = 2 * steps
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=steps,
            strength=0.5,
            guidance_scale=guidance,
            controlnet="edges",
            control_scale=1.3,
        ),
        run_diffusers(
            controlnet_pipeline(model, ["edges"], image_to_image=True),
            frame,
            control_image=Image.fromarray(frame),
            num_inference_steps=n,
            strength=0.5,
            guidance_scale=guidance,
            controlnet_conditioning_scale=1.3,
        ),
    )


@pytest.mark.parametrize(("start", "end"), [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0)])
def test_control_start_and_end_pick_the_steps_diffusers_picks(
    controlled: Callable[[str], Controlled], start: float, end: float
) -> None:
    model = controlled("sd-turbo")
    frame = sketch()
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=4,
            strength=1.0,
            controlnet="lines",
            control_start=start,
            control_end=end,
        ),
        run_diffusers(
            controlnet_pipeline(model, ["lines"], image_to_image=False),
            None,
            image=Image.fromarray(frame),
            num_inference_steps=4,
            guidance_scale=0.0,
            control_guidance_start=start,
            control_guidance_end=end,
        ),
    )


@pytest.mark.parametrize("family", ["sd-turbo", "sdxl-turbo"])
def test_two_controlnets_sum_as_diffusers_multicontrolnet(
    controlled: Callable[[str], Controlled], family: str
) -> None:
    model = controlled(family)
    frame = sketch()
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=2,
            strength=1.0,
            controlnet=["lines", "edges"],
            control_scale=[0.5, 1.2],
        ),
        run_diffusers(
            controlnet_pipeline(model, ["lines", "edges"], image_to_image=False),
            None,
            image=[Image.fromarray(frame)] * 2,
            num_inference_steps=2,
            guidance_scale=0.0,
            controlnet_conditioning_scale=[0.5, 1.2],
        ),
    )


def graded() -> np.ndarray:
    """Boxes of falling contrast on a light ground: edges weak and strong, so a canny at
    other thresholds than livegen's finds other edges."""
    frame = np.full((HEIGHT, WIDTH, 3), 240, np.uint8)
    for i, level in enumerate((225, 210, 190, 160)):
        frame[8 + 22 * i : 24 + 22 * i, 10:54] = level
    return frame


def canny_edges(frame: np.ndarray) -> np.ndarray:
    """kornia's canny at livegen's thresholds, as a white-on-black (H, W, 3) uint8 picture."""
    import kornia

    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    _, edges = kornia.filters.canny(x, 0.1, 0.2)
    return (edges[0, 0].numpy() * 255).astype(np.uint8)[..., None].repeat(3, axis=-1)


@pytest.mark.parametrize(
    ("source", "invert", "control_picture"),
    [
        ("image", True, lambda frame: 255 - frame),
        ("canny", False, canny_edges),
        ("canny", True, lambda frame: 255 - canny_edges(frame)),
    ],
)
def test_inverted_and_canny_control_pictures_equal_diffusers_given_them(
    controlled: Callable[[str], Controlled],
    source: str,
    invert: bool,
    control_picture: Callable[[np.ndarray], np.ndarray],
) -> None:
    model = controlled("sd-turbo")
    frame = graded()
    made = control_picture(frame)
    assert 0 < made.mean() < 255  # a picture with lines, not a blank one
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=2,
            strength=1.0,
            controlnet="lines",
            control_source=source,
            invert=invert,
        ),
        run_diffusers(
            controlnet_pipeline(model, ["lines"], image_to_image=False),
            None,
            image=Image.fromarray(made),
            num_inference_steps=2,
            guidance_scale=0.0,
        ),
    )


@pytest.mark.parametrize(
    ("family", "names", "scales", "steps"),
    [
        ("sd-turbo", ["sketch"], 0.8, 2),
        ("sd-turbo", ["grey"], 1.0, 1),  # a one-channel adapter reads the frame's luma
        ("lcm", ["sketch"], 1.0, 4),
        ("sd-turbo", ["sketch", "grey"], [0.6, 1.1], 2),
        ("sdxl-turbo", ["sketch"], 0.8, 2),
    ],
)
def test_a_t2i_adapter_equals_diffusers_adapter_pipeline(
    controlled: Callable[[str], Controlled],
    family: str,
    names: list[str],
    scales: float | list[float],
    steps: int,
) -> None:
    model = controlled(family)
    guidance = FAMILIES[family][2]
    frame = sketch()
    images = [Image.fromarray(frame).convert("L" if name == "grey" else "RGB") for name in names]
    assert_same_frame(
        run_livegen(
            model.livegen,
            frame,
            steps=steps,
            strength=1.0,
            guidance_scale=guidance,
            controlnet=names,
            control_scale=scales,
        ),
        run_diffusers(
            adapter_pipeline(model, names),
            None,
            image=images[0] if len(images) == 1 else images,
            num_inference_steps=steps,
            guidance_scale=guidance,
            adapter_conditioning_scale=scales,
        ),
    )


def test_every_controlled_request_of_a_batch_equals_diffusers(
    controlled: Callable[[str], Controlled],
) -> None:
    model = controlled("sd-turbo")
    pipeline = model.livegen
    base = pipeline.default_params.updated(
        {"width": WIDTH, "height": HEIGHT, "steps": 2, "controlnet": ("lines",)}
    )
    cases = [
        (base.updated({"seed": 1, "prompt": "a cat", "strength": 1.0}), sketch()),
        (
            base.updated({"seed": 2, "prompt": "a dog", "strength": 1.0, "control_scale": 0.4}),
            picture(6),
        ),
        (base.updated({"seed": 3, "prompt": "a fox", "strength": 0.5}), picture(7)),
    ]
    states = [pipeline.new_state() for _ in cases]
    requests = [FrameRequest(s, p, image) for s, (p, image) in zip(states, cases, strict=True)]
    assert len({pipeline.batch_key(r) for r in requests}) == 1  # one batch, as the server runs it

    pipeline(requests)

    for state, (p, image) in zip(states, cases, strict=True):
        scale = p.control_scale
        if p.strength == 1.0:
            pipe = controlnet_pipeline(model, ["lines"], image_to_image=False)
            inputs: dict[str, Any] = {"image": Image.fromarray(image), "num_inference_steps": 2}
            expected = run_diffusers(
                pipe,
                None,
                p.prompt,
                p.seed,
                guidance_scale=0.0,
                controlnet_conditioning_scale=scale,
                **inputs,
            )
        else:
            pipe = controlnet_pipeline(model, ["lines"], image_to_image=True)
            expected = run_diffusers(
                pipe,
                image,
                p.prompt,
                p.seed,
                control_image=Image.fromarray(image),
                num_inference_steps=4,
                strength=0.5,
                guidance_scale=0.0,
                controlnet_conditioning_scale=scale,
            )
        # Batches run in lanes (pipelines/lanes.py): some sums run in another order.
        assert_same_frame((state.output_latent, state.output), expected, rtol=1e-4, max_levels=2)


@pytest.mark.parametrize("name", ["lines", "sketch"])
def test_a_prompt_edit_on_an_unchanged_sketch_reuses_its_control_picture_and_latents(
    controlled: Callable[[str], Controlled], name: str
) -> None:
    pipeline = controlled("sd-turbo").livegen
    state = pipeline.new_state()
    params = pipeline.default_params.updated(
        {"width": WIDTH, "height": HEIGHT, "strength": 0.5, "controlnet": (name,)}
    )
    frame = sketch()
    pipeline([FrameRequest(state, params.updated({"prompt": "a cat"}), frame)])
    before = {key: (s.hits, s.misses) for key, s in pipeline.cache_stats().items()}

    pipeline([FrameRequest(state, params.updated({"prompt": "a dog"}), frame.copy())])

    after = {key: (s.hits, s.misses) for key, s in pipeline.cache_stats().items()}
    gained = {
        key: (after[key][0] - before[key][0], after[key][1] - before[key][1]) for key in after
    }
    assert gained["control_images"] == (1, 0)
    assert gained["input_latents"] == (1, 0)
    assert gained["adapter_features"] == ((1, 0) if name == "sketch" else (0, 0))


def test_a_new_sketch_makes_a_new_control_picture(
    controlled: Callable[[str], Controlled],
) -> None:
    pipeline = controlled("sd-turbo").livegen
    state = pipeline.new_state()
    params = pipeline.default_params.updated(
        {"width": WIDTH, "height": HEIGHT, "strength": 1.0, "controlnet": ("sketch",)}
    )
    first = pipeline([FrameRequest(state, params, sketch())])[0]
    misses = pipeline.cache_stats()["adapter_features"].misses

    second = pipeline([FrameRequest(state, params, 255 - sketch())])[0]

    assert pipeline.cache_stats()["adapter_features"].misses == misses + 1
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 1


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"controlnet": ("nope",)},
            "unknown ControlNet or T2I-Adapter 'nope'; loaded: lines, edges",
        ),
        ({"controlnet": ("lines", "sketch")}, "pick ControlNets or T2I-Adapters, not both"),
        (
            {"controlnet": ("lines", "edges"), "control_scale": (0.5, 0.5, 0.5)},
            "control_scale has 3 scales for 2 controls",
        ),
        ({"controlnet": ("lines",), "control_start": 0.6, "control_end": 0.5}, "must be below"),
    ],
)
def test_controls_that_cannot_run_are_refused_saying_what_works(
    controlled: Callable[[str], Controlled], patch: dict[str, Any], message: str
) -> None:
    pipeline = controlled("sd-turbo").livegen
    with pytest.raises(ValueError, match=message):
        pipeline.check_params(pipeline.default_params.updated(patch))


@pytest.mark.parametrize("end", [0.5, 0.75])
def test_an_sdxl_adapter_acts_for_the_steps_diffusers_conditioning_factor_gives(
    controlled: Callable[[str], Controlled], end: float
) -> None:
    model = controlled("sdxl-turbo")
    frame = sketch()
    assert_same_frame(
        run_livegen(
            model.livegen, frame, steps=4, strength=1.0, controlnet="sketch", control_end=end
        ),
        run_diffusers(
            adapter_pipeline(model, ["sketch"]),
            None,
            image=Image.fromarray(frame),
            num_inference_steps=4,
            guidance_scale=0.0,
            adapter_conditioning_factor=end,
        ),
    )

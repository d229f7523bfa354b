"""Prompt and seed blends, and prompt transitions, against diffusers given the blend.

diffusers has no blend of its own, so the reference is its pipeline called with
``prompt_embeds`` (and SDXL's pooled embeddings) or ``latents`` mixed here, from
diffusers' own ``encode_prompt`` and the seeds' own noise, by the formulas the
README gives: linear ``sum(w * e) / sum(w)``; slerp folding the items in one at a
time, each at its share of the weight so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from pipelines import FrameRequest
from pipelines.diffusion import FewStepPipeline
from tests.pipelines.reference import (
    HEIGHT,
    WIDTH,
    Model,
    assert_same_frame,
    picture,
    run_diffusers,
    run_livegen,
)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors taken as single vectors (the textbook formula)."""
    x, y = a.double().flatten(), b.double().flatten()
    omega = math.acos(float(torch.dot(x, y) / (x.norm() * y.norm())))
    mixed = (math.sin((1 - t) * omega) * x + math.sin(t * omega) * y) / math.sin(omega)
    return mixed.view(a.shape).to(a.dtype)


def mix(tensors: list[torch.Tensor], weights: list[float], mode: str) -> torch.Tensor:
    if mode == "linear":
        return sum(w * x for x, w in zip(tensors, weights, strict=True)) / sum(weights)
    result, so_far = tensors[0], weights[0]
    for x, w in zip(tensors[1:], weights[1:], strict=True):
        result = slerp(result, x, w / (so_far + w))
        so_far += w
    return result


@torch.no_grad()
def encoded(pipe: Any, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """diffusers' own embedding of ``prompt``: (hidden states, SDXL's pooled vector or None)."""
    if hasattr(pipe, "text_encoder_2"):
        hidden, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
        return hidden, pooled
    hidden, _ = pipe.encode_prompt(prompt, "cpu", 1, do_classifier_free_guidance=False)
    return hidden, None


def blended_embeds(pipe: Any, blend: list[tuple[str, float]], mode: str) -> dict[str, Any]:
    parts = [encoded(pipe, text) for text, _ in blend]
    weights = [w for _, w in blend]
    embeds = {"prompt_embeds": mix([h for h, _ in parts], weights, mode)}
    if parts[0][1] is not None:
        embeds["pooled_prompt_embeds"] = mix([p for _, p in parts], weights, mode)
    return embeds


BLENDS = [
    ([("a cat", 1.0), ("a dog", 1.0)], "linear"),
    ([("a cat", 3.0), ("a dog", 1.0)], "slerp"),
    ([("a cat", 1.0), ("a dog", 2.0), ("the moon", 0.5), ("a red car", 1.5)], "slerp"),
]


@pytest.mark.parametrize("family", ["sd-turbo", "sdxl-turbo"])
@pytest.mark.parametrize(("blend", "mode"), BLENDS)
def test_a_prompt_blend_equals_diffusers_given_the_blended_embeddings(
    models: Callable[[str, bool], Model],
    family: str,
    blend: list[tuple[str, float]],
    mode: str,
) -> None:
    model = models(family, False)
    assert_same_frame(
        run_livegen(
            model.livegen, None, steps=2, prompt=[list(p) for p in blend], prompt_blend=mode
        ),
        run_diffusers(
            model.text,
            None,
            prompt=None,
            num_inference_steps=2,
            guidance_scale=0.0,
            **blended_embeds(model.text, blend, mode),
        ),
    )


@pytest.mark.parametrize("seeds", [[(1, 1.0), (2, 1.0)], [(1, 1.0), (2, 3.0), (3, 1.0)]])
def test_a_seed_blend_equals_diffusers_given_the_slerped_noise(
    models: Callable[[str, bool], Model], seeds: list[tuple[int, float]]
) -> None:
    model = models("sd-turbo", False)
    shape = (1, model.livegen.latent_channels, HEIGHT // 8, WIDTH // 8)
    noises = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s, _ in seeds]
    assert_same_frame(
        run_livegen(model.livegen, None, steps=1, seed=[list(s) for s in seeds]),
        run_diffusers(
            model.text,
            None,
            num_inference_steps=1,
            guidance_scale=0.0,
            latents=mix(noises, [w for _, w in seeds], "slerp"),
        ),
    )


def test_a_blend_of_one_or_with_zero_weights_is_its_single_item(
    models: Callable[[str, bool], Model],
) -> None:
    pipeline = models("sd-turbo", False).livegen
    alone = run_livegen(pipeline, picture(), steps=2, prompt="a cat", seed=5)

    blended = run_livegen(
        pipeline, picture(), steps=2, prompt=[["a cat", 2.0], ["a dog", 0.0]], seed=[[5, 1.0]]
    )

    assert torch.equal(alone[0], blended[0])
    assert np.array_equal(alone[1], blended[1])


def test_blending_known_prompts_runs_no_text_encoder(
    models: Callable[[str, bool], Model],
) -> None:
    pipeline = models("sdxl-turbo", False).livegen
    texts = ["a fox", "a hen", "a barn", "a field"]
    run_livegen(pipeline, None, prompt=texts[0])
    run_livegen(pipeline, None, prompt=[[t, 1.0] for t in texts[1:]])
    calls = []
    hooks = [
        encoder.register_forward_hook(lambda *args: calls.append(1))
        for encoder in pipeline.prompts.text_encoders
    ]
    try:
        for weights in ([1, 1, 1, 1], [0.2, 3, 1, 0.5], [4, 0, 1, 1]):
            blend = [[t, float(w)] for t, w in zip(texts, weights, strict=True)]
            run_livegen(pipeline, None, prompt=blend, prompt_blend="slerp")
    finally:
        for hook in hooks:
            hook.remove()

    assert calls == []


def test_a_prompt_transition_eases_over_its_frames_then_holds(
    models: Callable[[str, bool], Model],
) -> None:
    model = models("sd-turbo", False)
    pipeline: FewStepPipeline = model.livegen
    state = pipeline.new_state()
    base = pipeline.default_params.updated(
        {"width": WIDTH, "height": HEIGHT, "steps": 1, "seed": 3, "prompt_transition": 4}
    )
    image = picture()

    def frame(prompt: str) -> tuple[torch.Tensor, np.ndarray]:
        output = pipeline([FrameRequest(state, base.updated({"prompt": prompt}), image)])[0]
        return state.output_latent, output

    frame("a cat")  # the session's first prompt shows at once
    eased = [frame("a dog") for _ in range(5)]

    cat, dog = encoded(model.text, "a cat")[0], encoded(model.text, "a dog")[0]
    for k, made in enumerate(eased[:4], start=1):
        expected = run_diffusers(
            model.image,
            image,
            prompt=None,
            seed=3,
            num_inference_steps=2,
            strength=0.5,
            guidance_scale=0.0,
            prompt_embeds=torch.lerp(cat, dog, k / 4),
        )
        assert_same_frame(made, expected)
    # Done easing, the same input and params are answered with the last frame.
    assert np.array_equal(eased[4][1], eased[3][1])
    assert pipeline.cache_stats()["unchanged_inputs"].hits >= 1

"""The few-step diffusion pipelines on tiny random-weight models loaded from disk.

Each model was built from a config, saved with ``save_pretrained`` and is loaded
back through ``create_pipeline``, the server's own path. The weights are random,
so the frames are noise; the tests check what the pipeline does with them:
shapes, determinism, what changes a frame, which work the caches skip, and
that a batch gives what each request would alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from stream.params import Params
from tests.conftest import TinyModels

SIZE = {"width": 64, "height": 96}  # not square, so height and width cannot be swapped


def load(name: str, model: object, **options: object) -> FewStepPipeline:
    pipeline = create_pipeline(name, PipelineOptions(model=str(model), device="cpu", **options))  # type: ignore[arg-type]
    assert isinstance(pipeline, FewStepPipeline)
    return pipeline


@pytest.fixture(scope="module")
def turbo(tiny_models: TinyModels) -> FewStepPipeline:
    """sd-turbo with its full VAE: the frames respond clearly to prompt and input."""
    return load("sd-turbo", tiny_models.sd_turbo)


@pytest.fixture(scope="module")
def turbo_taesd(tiny_models: TinyModels) -> FewStepPipeline:
    return load("sd-turbo", tiny_models.sd_turbo, tiny_vae=str(tiny_models.taesd))


@pytest.fixture(scope="module")
def lcm_lora(tiny_models: TinyModels) -> FewStepPipeline:
    """The lcm pipeline on a base model with its LCM-LoRA and a style LoRA: guidance is
    classifier-free, and sessions may add the style."""
    loras = {"lcm": str(tiny_models.lcm_lora_sd), "sketchy": str(tiny_models.lora)}
    return load("lcm", tiny_models.sd_base, loras=loras)


def sketch(seed: int, height: int = 96, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def params(pipeline: FewStepPipeline, **changes: object) -> Params:
    return pipeline.default_params.updated({**SIZE, "prompt": "a cat", **changes})


def run(pipeline: FewStepPipeline, *requests: FrameRequest) -> list[np.ndarray]:
    return pipeline(list(requests))


def alone(pipeline: FewStepPipeline, p: Params, image: np.ndarray | None) -> np.ndarray:
    """The frame a brand-new session gets for this request."""
    return run(pipeline, FrameRequest(pipeline.new_state(), p, image))[0]


@contextmanager
def calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """Count ``module``'s forward calls inside the block."""
    count = [0]
    handle = module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


def stats(pipeline: FewStepPipeline, cache: str) -> tuple[int, int]:
    found = pipeline.cache_stats()[cache]
    return found.hits, found.misses


@pytest.mark.parametrize("family", ["sd_turbo", "sdxl_turbo", "lcm"])
@pytest.mark.parametrize("tiny_vae", [False, True], ids=["vae", "taesd"])
def test_frames_are_uint8_rgb_at_the_requested_size(
    tiny_models: TinyModels, family: str, tiny_vae: bool
) -> None:
    name = "lcm" if family == "lcm" else "sd-turbo"
    options = {"tiny_vae": str(tiny_models.taesd)} if tiny_vae else {}
    pipeline = load(name, getattr(tiny_models, family), **options)
    pipeline.warmup()

    # A text-to-image request, and an input of another size and shape.
    text, image = run(
        pipeline,
        FrameRequest(pipeline.new_state(), params(pipeline), None),
        FrameRequest(pipeline.new_state(), params(pipeline), sketch(1, height=50, width=70)),
    )

    for frame in (text, image):
        assert frame.dtype == np.uint8
        assert frame.shape == (96, 64, 3)
        assert frame.std() > 0


def test_frame_changes_with_the_prompt_the_input_and_the_seed(turbo: FewStepPipeline) -> None:
    base = alone(turbo, params(turbo), sketch(1))

    assert not np.array_equal(alone(turbo, params(turbo, prompt="a dog"), sketch(1)), base)
    assert not np.array_equal(alone(turbo, params(turbo), sketch(2)), base)
    assert not np.array_equal(alone(turbo, params(turbo, seed=7), sketch(1)), base)
    text = alone(turbo, params(turbo), None)
    assert not np.array_equal(alone(turbo, params(turbo, prompt="a dog"), None), text)


def test_same_input_and_params_give_the_same_frame(turbo: FewStepPipeline) -> None:
    state = turbo.new_state()
    first = run(turbo, FrameRequest(state, params(turbo), sketch(1)))[0]
    hits, misses = stats(turbo, "unchanged_inputs")

    with calls(turbo.unet) as unet_calls:
        again = run(turbo, FrameRequest(state, params(turbo, output_format="png"), sketch(1)))[0]

    assert np.array_equal(again, first)
    assert unet_calls[0] == 0
    assert stats(turbo, "unchanged_inputs") == (hits + 1, misses)
    # A new session with the same seed draws the same noise: the same frame, computed.
    assert np.array_equal(alone(turbo, params(turbo), sketch(1)), first)


def test_a_prompt_edit_skips_the_vae_encoder(turbo: FewStepPipeline) -> None:
    state = turbo.new_state()
    first = run(turbo, FrameRequest(state, params(turbo), sketch(3)))[0]
    hits, misses = stats(turbo, "input_latents")

    with calls(turbo.vae.encoder) as encoder_calls, calls(turbo.unet) as unet_calls:
        edited = run(turbo, FrameRequest(state, params(turbo, prompt="a dog"), sketch(3)))[0]

    assert (encoder_calls[0], unet_calls[0]) == (0, 1)
    assert stats(turbo, "input_latents") == (hits + 1, misses)
    assert not np.array_equal(edited, first)
    assert np.array_equal(edited, alone(turbo, params(turbo, prompt="a dog"), sketch(3)))


def test_a_new_input_is_encoded_once(turbo: FewStepPipeline) -> None:
    state = turbo.new_state()
    run(turbo, FrameRequest(state, params(turbo), sketch(3)))
    with calls(turbo.vae.encoder) as encoder_calls:
        run(turbo, FrameRequest(state, params(turbo), sketch(4)))
    assert encoder_calls[0] == 1


def test_a_prompt_seen_before_skips_the_text_encoder(turbo: FewStepPipeline) -> None:
    run(turbo, FrameRequest(turbo.new_state(), params(turbo, prompt="a red house"), sketch(1)))
    hits, misses = stats(turbo, "prompt_embeddings")

    # Another session, another input, the same prompt.
    with calls(turbo.prompts.text_encoders[0]) as encoder_calls:
        run(turbo, FrameRequest(turbo.new_state(), params(turbo, prompt="a red house"), sketch(5)))

    assert encoder_calls[0] == 0
    assert stats(turbo, "prompt_embeddings") == (hits + 1, misses)


def test_new_prompts_in_one_batch_are_encoded_in_one_call(turbo: FewStepPipeline) -> None:
    requests = [
        FrameRequest(turbo.new_state(), params(turbo, prompt=f"batch prompt {i}"), sketch(i))
        for i in range(3)
    ]
    with calls(turbo.prompts.text_encoders[0]) as encoder_calls:
        run(turbo, *requests)
    assert encoder_calls[0] == 1


def test_the_prompt_cache_is_bounded(tiny_models: TinyModels) -> None:
    pipeline = load("sd-turbo", tiny_models.sd_turbo, prompt_cache_size=2)
    for prompt in ("one", "two", "three"):
        run(pipeline, FrameRequest(pipeline.new_state(), params(pipeline, prompt=prompt), None))
    assert len(pipeline.prompts.cache) == 2

    with calls(pipeline.prompts.text_encoders[0]) as encoder_calls:
        run(pipeline, FrameRequest(pipeline.new_state(), params(pipeline, prompt="one"), None))
    assert encoder_calls[0] == 1  # the oldest prompt was evicted


def nudged(image: np.ndarray, pixels: int) -> np.ndarray:
    """``image`` with its first ``pixels`` values raised by 8 levels."""
    changed = image.copy()
    changed.reshape(-1)[:pixels] += 8
    return changed


def test_an_input_within_the_similarity_threshold_gets_the_last_frame(
    turbo: FewStepPipeline,
) -> None:
    state = turbo.new_state()
    p = params(turbo, similarity_threshold=0.001)
    image = sketch(6) // 2  # room to add to every value
    first = run(turbo, FrameRequest(state, p, image))[0]
    slightly = nudged(image, 100)  # mean change 800 / (96 * 64 * 3) / 255 = 0.00018

    with calls(turbo.unet) as unet_calls:
        answered = run(turbo, FrameRequest(state, p, slightly))[0]
    assert np.array_equal(answered, first)
    assert unet_calls[0] == 0

    # Small steps add up: each is compared with the input the last frame was made from.
    with calls(turbo.unet) as unet_calls:
        run(turbo, FrameRequest(state, p, nudged(image, 2000)))
    assert unet_calls[0] == 1


def test_without_a_threshold_any_change_makes_a_new_frame(turbo: FewStepPipeline) -> None:
    state = turbo.new_state()
    image = sketch(6) // 2
    run(turbo, FrameRequest(state, params(turbo), image))
    with calls(turbo.unet) as unet_calls:
        run(turbo, FrameRequest(state, params(turbo), nudged(image, 1)))
    assert unet_calls[0] == 1


def test_latent_feedback_carries_the_last_frame_into_the_next(turbo: FewStepPipeline) -> None:
    def second_frame(feedback: float) -> np.ndarray:
        state = turbo.new_state()
        p = params(turbo, latent_feedback=feedback)
        run(turbo, FrameRequest(state, p, sketch(1)))
        return run(turbo, FrameRequest(state, p, sketch(2)))[0]

    without = second_frame(0.0)
    assert np.array_equal(without, alone(turbo, params(turbo), sketch(2)))
    assert not np.array_equal(second_frame(0.5), without)


def assert_batch_matches_alone(pipeline: FewStepPipeline, requests: list[FrameRequest]) -> None:
    keys = {pipeline.batch_key(request) for request in requests}
    assert len(keys) == 1, "the requests must be able to share one call"
    batched = pipeline(requests)
    # On the CPU a batch runs in lanes, each on fewer threads (pipelines/lanes.py), and
    # some kernels (channels-last GroupNorm) then sum in another order: a level at most
    # in float32, a few in bfloat16 (8 bits of mantissa).
    max_levels, mean_levels = (12, 1.5) if pipeline.dtype == torch.bfloat16 else (2, 0.1)
    for request, frame in zip(requests, batched, strict=True):
        difference = np.abs(frame.astype(int) - alone(pipeline, request.params, request.image))
        assert difference.max() <= max_levels, difference.max()
        assert difference.mean() < mean_levels, difference.mean()


@pytest.mark.parametrize("family", ["sd_turbo", "sdxl_turbo", "lcm"])
def test_a_batch_of_sessions_equals_each_request_run_alone(
    tiny_models: TinyModels, family: str
) -> None:
    pipeline = load("lcm" if family == "lcm" else "sd-turbo", getattr(tiny_models, family))
    p = params(pipeline, steps=2)
    requests = [
        FrameRequest(pipeline.new_state(), p, sketch(1)),
        FrameRequest(pipeline.new_state(), p.updated({"prompt": "a dog", "seed": 9}), sketch(2)),
        FrameRequest(pipeline.new_state(), p.updated({"strength": 0.9, "seed": 3}), sketch(3)),
        FrameRequest(pipeline.new_state(), p.updated({"prompt": "text only"}), None),
    ]
    with calls(pipeline.unet) as unet_calls:
        assert_batch_matches_alone(pipeline, requests)
    # One batched call per step and lane, then two for each request alone.
    assert unet_calls[0] == 2 * pipeline.lanes.count + 2 * len(requests)


def test_a_guided_batch_equals_each_request_run_alone(lcm_lora: FewStepPipeline) -> None:
    p = params(lcm_lora, guidance_scale=1.5, steps=2)
    assert_batch_matches_alone(
        lcm_lora,
        [
            FrameRequest(lcm_lora.new_state(), p, sketch(1)),
            FrameRequest(lcm_lora.new_state(), p.updated({"guidance_scale": 2.0}), sketch(2)),
            FrameRequest(lcm_lora.new_state(), p.updated({"negative_prompt": "blur"}), None),
        ],
    )


def test_classifier_free_guidance_uses_the_negative_prompt(lcm_lora: FewStepPipeline) -> None:
    guided = params(lcm_lora, guidance_scale=1.5)
    unguided = params(lcm_lora, guidance_scale=1.0)

    assert not np.array_equal(
        alone(lcm_lora, guided, sketch(1)),
        alone(lcm_lora, guided.updated({"negative_prompt": "blurry"}), sketch(1)),
    )
    assert np.array_equal(
        alone(lcm_lora, unguided, sketch(1)),
        alone(lcm_lora, unguided.updated({"negative_prompt": "blurry"}), sketch(1)),
    )
    request = FrameRequest(None, guided, None)
    assert lcm_lora.batch_key(request) != lcm_lora.batch_key(FrameRequest(None, unguided, None))


def test_an_lcm_with_guidance_embedding_responds_to_the_guidance_scale(
    tiny_models: TinyModels,
) -> None:
    pipeline = load("lcm", tiny_models.lcm)
    assert pipeline.default_params.guidance_scale == 8.5
    assert not np.array_equal(
        alone(pipeline, params(pipeline, guidance_scale=2.0), sketch(1)),
        alone(pipeline, params(pipeline, guidance_scale=8.0), sketch(1)),
    )


def test_sessions_switch_lora_without_reloading_the_base(lcm_lora: FewStepPipeline) -> None:
    base = alone(lcm_lora, params(lcm_lora), sketch(1))
    with_lora = alone(lcm_lora, params(lcm_lora, lora="sketchy"), sketch(1))

    assert not np.array_equal(with_lora, base)
    assert np.array_equal(alone(lcm_lora, params(lcm_lora), sketch(1)), base)
    request = FrameRequest(None, params(lcm_lora, lora="sketchy"), None)
    assert lcm_lora.batch_key(request) != lcm_lora.batch_key(
        FrameRequest(None, params(lcm_lora), None)
    )


def test_edits_of_params_the_model_does_not_use_do_not_rerun_it(turbo: FewStepPipeline) -> None:
    state = turbo.new_state()
    first = run(turbo, FrameRequest(state, params(turbo), sketch(1)))[0]
    # SD-Turbo runs without guidance: neither of these can change its frame.
    unused = params(turbo, negative_prompt="blurry", guidance_scale=7.5)
    with calls(turbo.unet) as unet_calls:
        again = run(turbo, FrameRequest(state, unused, sketch(1)))[0]
    assert unet_calls[0] == 0
    assert again is first


def test_an_lcm_lora_alone_is_fused_and_every_session_runs_with_it(
    tiny_models: TinyModels, lcm_lora: FewStepPipeline
) -> None:
    fused = load("lcm", tiny_models.sd_base, loras={"lcm": str(tiny_models.lcm_lora_sd)})
    plain = load("sd-turbo", tiny_models.sd_base)

    assert fused.loras == {} and fused.standing_lora == "lcm"
    assert not any("lora" in name for name, _ in fused.unet.named_modules())
    p = params(fused, steps=2)
    frame = alone(fused, p, sketch(1))
    # The same LoRA as an adapter (beside another, so not fused), for a session that
    # asked for no LoRA: the same frame, up to the rounding of the fused weights.
    adapter = alone(lcm_lora, p, sketch(1))
    assert np.abs(frame.astype(int) - adapter).max() <= 1
    without = alone(plain, p.updated({"scheduler": "lcm"}), sketch(1))
    assert np.abs(frame.astype(int) - without).mean() > 1


def test_samplers_give_different_frames_each_deterministic(turbo: FewStepPipeline) -> None:
    euler = params(turbo, steps=3, scheduler="euler")
    lcm = params(turbo, steps=3, scheduler="lcm")
    assert np.array_equal(alone(turbo, lcm, sketch(1)), alone(turbo, lcm, sketch(1)))
    assert not np.array_equal(alone(turbo, euler, sketch(1)), alone(turbo, lcm, sketch(1)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 5}, "sd-turbo runs 1 to 4 steps, got 5"),
        ({"scheduler": "dpm++"}, "unknown scheduler 'dpm++'; sd-turbo has euler, euler_a, lcm"),
        ({"width": 68}, "width 68 does not fit this model: use a multiple of 8"),
        ({"height": 36}, "height 36 does not fit this model: use a multiple of 8"),
        ({"steps": 4, "scheduler": "lcm", "strength": 0.05}, "keeps 2 of its 50 timesteps"),
        ({"lora": "sketchy"}, "unknown LoRA 'sketchy'; loaded: none"),
    ],
)
def test_params_the_model_cannot_serve_raise_clear_errors(
    turbo: FewStepPipeline, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        turbo.check_params(params(turbo, **changes))


def test_lcm_allows_eight_steps_and_names_its_loras(lcm_lora: FewStepPipeline) -> None:
    lcm_lora.check_params(params(lcm_lora, steps=8, lora="sketchy"))
    with pytest.raises(ValueError, match="lcm runs 1 to 8 steps, got 9"):
        lcm_lora.check_params(params(lcm_lora, steps=9))
    with pytest.raises(ValueError, match="unknown LoRA 'other'; loaded: lcm, sketchy"):
        lcm_lora.check_params(params(lcm_lora, lora="other"))


def test_default_size_and_sampler_are_the_models_own(tiny_models: TinyModels) -> None:
    # sample_size is 64 latents in SD-Turbo's and SDXL-Turbo's published UNet configs:
    # 512 pixels, as diffusers defaults it; each starts on the scheduler it ships.
    for model, sampler in ((tiny_models.sd_turbo, "euler"), (tiny_models.sdxl_turbo, "euler_a")):
        pipeline = load("sd-turbo", model)
        assert (pipeline.default_params.width, pipeline.default_params.height) == (512, 512)
        assert pipeline.default_params.scheduler == sampler


def test_a_unet_that_cannot_compile_runs_eagerly(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Compiling for real takes minutes on a CPU; what is under test is the fallback
    # when a device has no working compiler, so the compiler is made to fail.
    def no_compiler(model: torch.nn.Module, **settings: object) -> torch.nn.Module:
        raise RuntimeError("no C++ compiler for this device")

    monkeypatch.setattr(torch, "compile", no_compiler)
    pipeline = load("sd-turbo", tiny_models.sd_turbo, compile=True)
    pipeline.warmup()

    assert "torch.compile failed; the UNet runs eagerly" in caplog.text
    assert pipeline._unet_forward is pipeline.unet
    eager = load("sd-turbo", tiny_models.sd_turbo)
    assert np.array_equal(
        alone(pipeline, params(pipeline), sketch(1)), alone(eager, params(eager), sketch(1))
    )


def test_channels_first_gives_the_same_frames(
    tiny_models: TinyModels, turbo: FewStepPipeline
) -> None:
    # channels-last is the default (``turbo``); the other layout must agree with it.
    assert turbo.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    pipeline = load("sd-turbo", tiny_models.sd_turbo, channels_last=False)
    assert pipeline.unet.conv_in.weight.is_contiguous()
    frame = alone(pipeline, params(pipeline), sketch(1))
    assert np.abs(frame.astype(int) - alone(turbo, params(turbo), sketch(1))).max() <= 2


def test_half_precision_weights_give_nearly_the_same_frames(tiny_models: TinyModels) -> None:
    pipeline = load("sd-turbo", tiny_models.sd_turbo, dtype="bfloat16")
    full = load("sd-turbo", tiny_models.sd_turbo, dtype="float32")
    assert (pipeline.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    frame = alone(pipeline, params(pipeline, steps=2), sketch(1))
    reference = alone(full, params(full, steps=2), sketch(1))
    assert frame.shape == reference.shape
    assert np.abs(frame.astype(int) - reference).mean() < 8

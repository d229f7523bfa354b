"""What each pipeline says it ignores (``session.started``'s ``ignored_params``, which
the pages grey out) is true: changing those params leaves its frames as they were,
and the params it does not name do change them."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from pipelines import FrameRequest, Pipeline, PipelineOptions, create_pipeline
from stream.params import Params
from tests.conftest import TinyModels

SIZE = {"width": 64, "height": 64}
# A value of each param that differs from every pipeline's default.
OTHER_VALUE = {"prompt": "an owl", "negative_prompt": "blurry", "guidance_scale": 4.0}


def load(name: str, model: object, **options: object) -> Pipeline:
    return create_pipeline(name, PipelineOptions(model=str(model), device="cpu", **options))  # type: ignore[arg-type]


def frame(pipeline: Pipeline, **changes: object) -> np.ndarray:
    params = pipeline.default_params.updated({**SIZE, "prompt": "a cat", **changes})
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return pipeline([FrameRequest(pipeline.new_state(), params, image)])[0]


def test_passthrough_ignores_all_but_the_output_encoding() -> None:
    pipeline = create_pipeline("passthrough", PipelineOptions(device="cpu"))

    assert pipeline.ignored_params() == {f.name for f in fields(Params)} - {
        "output_format",
        "quality",
    }
    assert not pipeline.text_to_image


@pytest.mark.parametrize(
    ("family", "ignored", "used"),
    [
        ("sd-turbo", {"guidance_scale", "negative_prompt"}, {"prompt"}),
        ("lcm", {"negative_prompt"}, {"prompt", "guidance_scale"}),
    ],
)
def test_a_param_said_ignored_changes_no_frame_and_the_others_do(
    tiny_models: TinyModels, family: str, ignored: set[str], used: set[str]
) -> None:
    pipeline = load(family, getattr(tiny_models, family.replace("-", "_")))
    base = frame(pipeline)

    assert pipeline.ignored_params() == ignored
    assert pipeline.text_to_image
    for name in ignored:
        assert np.array_equal(frame(pipeline, **{name: OTHER_VALUE[name]}), base), name
    for name in used:
        assert not np.array_equal(frame(pipeline, **{name: OTHER_VALUE[name]}), base), name


def test_with_an_lcm_lora_the_negative_prompt_counts_once_guidance_does(
    tiny_models: TinyModels,
) -> None:
    pipeline = load("lcm", tiny_models.sd_base, loras={"lcm": str(tiny_models.lcm_lora_sd)})
    guided = frame(pipeline, guidance_scale=2.0)

    assert pipeline.ignored_params() == frozenset()
    assert not np.array_equal(frame(pipeline, guidance_scale=2.0, negative_prompt="blurry"), guided)

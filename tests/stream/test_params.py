"""Params and parse_params_patch: every field's type and generic range is checked."""

from __future__ import annotations

import dataclasses

import pytest

from stream.errors import ErrorCode, InvalidParams
from stream.params import MAX_SEED, Params, parse_params_patch, parse_params_query


def test_valid_patch_comes_back_with_ints_for_floats_made_floats() -> None:
    patch = {
        "prompt": "a cat",
        "negative_prompt": "",
        "seed": MAX_SEED,
        "steps": 50,
        "strength": 1,
        "guidance_scale": 7.5,
        "width": 64,
        "height": 2048,
        "output_format": "webp",
        "quality": 1,
        "scheduler": "lcm",
        "lora": "sketchy",
        "similarity_threshold": 0,
        "latent_feedback": 1.0,
    }
    checked = parse_params_patch(patch)
    assert checked == patch
    assert type(checked["strength"]) is float
    assert type(checked["similarity_threshold"]) is float


def test_empty_patch_is_valid() -> None:
    assert parse_params_patch({}) == {}


def test_updated_applies_a_patch_and_leaves_the_original_alone() -> None:
    params = Params()
    changed = params.updated({"prompt": "a dog", "steps": 2})
    assert (changed.prompt, changed.steps, changed.seed) == ("a dog", 2, 0)
    assert params == Params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.steps = 3  # type: ignore[misc]


def test_to_wire_lists_every_param() -> None:
    assert Params(seed=5).to_wire() == {
        "prompt": "",
        "negative_prompt": "",
        "seed": 5,
        "steps": 1,
        "strength": 0.5,
        "guidance_scale": 0.0,
        "width": 512,
        "height": 512,
        "output_format": "jpeg",
        "quality": 85,
        "scheduler": "euler",
        "lora": "",
        "similarity_threshold": 0.0,
        "latent_feedback": 0.0,
        "prompt_blend": "linear",
        "prompt_transition": 0,
        "controlnet": (),
        "control_scale": 1.0,
        "control_start": 0.0,
        "control_end": 1.0,
        "control_source": "image",
        "invert": False,
    }


@pytest.mark.parametrize(
    ("raw", "mention"),
    [
        ([("steps", 2)], "params must be a map, got list"),
        ({"sampler": "euler"}, "unknown param 'sampler'; known params: prompt, "),
        ({b"steps": 2}, "unknown param b'steps'"),
        ({"prompt": 3}, "param 'prompt' must be a str or a list [[text, weight], ...], got int"),
        ({"steps": 2.0}, "param 'steps' must be int, got float"),
        ({"steps": True}, "param 'steps' must be int, got bool"),
        ({"strength": False}, "param 'strength' must be float, got bool"),
        ({"strength": "0.5"}, "param 'strength' must be float, got str"),
        ({"strength": float("nan")}, "param 'strength' must be finite, got nan"),
        ({"guidance_scale": float("inf")}, "param 'guidance_scale' must be finite, got inf"),
        ({"output_format": "gif"}, "param 'output_format' must be one of jpeg, webp, png"),
        ({"output_format": 1}, "param 'output_format' must be str, got int"),
        ({"seed": -1}, "param 'seed' must be in [0, 4294967295], got -1"),
        ({"seed": MAX_SEED + 1}, "param 'seed' must be in"),
        ({"steps": 0}, "param 'steps' must be in [1, 50], got 0"),
        ({"steps": 51}, "param 'steps' must be in [1, 50], got 51"),
        ({"strength": 1.5}, "param 'strength' must be in [0.0, 1.0], got 1.5"),
        ({"quality": 101}, "param 'quality' must be in [1, 100], got 101"),
        ({"width": 56}, "param 'width' must be in [64, 2048], got 56"),
        ({"height": 100}, "param 'height' must be a multiple of 8, got 100"),
        ({"prompt": "ok", "steps": 0}, "'steps'"),
    ],
)
def test_bad_params_are_refused_naming_the_field(raw: object, mention: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params_patch(raw)
    assert caught.value.code == ErrorCode.INVALID_PARAMS
    assert not caught.value.fatal
    assert mention in str(caught.value)


def test_blends_controls_and_scales_come_back_as_tuples() -> None:
    patch = parse_params_patch(
        {
            "prompt": [["a cat", 1], ["a dog", 0.5]],
            "seed": [[1, 2], [7, 0]],
            "controlnet": ["scribble", "canny"],
            "control_scale": [0.5, 1],
            "invert": True,
        }
    )

    assert patch == {
        "prompt": (("a cat", 1.0), ("a dog", 0.5)),
        "seed": ((1, 2.0), (7, 0.0)),
        "controlnet": ("scribble", "canny"),
        "control_scale": (0.5, 1.0),
        "invert": True,
    }
    assert parse_params_patch({"controlnet": "scribble"}) == {"controlnet": ("scribble",)}
    assert parse_params_patch({"controlnet": ""}) == {"controlnet": ()}
    # A plain prompt and seed stay plain.
    assert parse_params_patch({"prompt": "a cat", "seed": 3}) == {"prompt": "a cat", "seed": 3}


@pytest.mark.parametrize(
    ("raw", "mention"),
    [
        ({"prompt": []}, "of 1 to 8 pairs, got 0"),
        ({"prompt": [["a", 1]] * 9}, "of 1 to 8 pairs, got 9"),
        ({"prompt": [["a", 0], ["b", 0]]}, "the weights are all 0; give one a weight above 0"),
        ({"prompt": [["a", -1]]}, "param 'prompt weight' must be in [0.0, 1000000.0], got -1.0"),
        ({"prompt": [["a"]]}, "each item is a [value, weight] pair"),
        ({"prompt": [[1, 1]]}, "param 'prompt' must be str, got int"),
        ({"seed": [[-1, 1]]}, "param 'seed' must be in [0, 4294967295], got -1"),
        ({"seed": "7"}, "param 'seed' must be int, got str"),
        ({"controlnet": [1]}, "param 'controlnet' must be a name or a list of names"),
        ({"controlnet": ["a"] * 9}, "param 'controlnet' takes at most 8 names"),
        ({"control_scale": 2.5}, "param 'control_scale' must be in [0.0, 2.0], got 2.5"),
        ({"control_scale": []}, "param 'control_scale' takes 1 to 8 scales"),
        ({"control_source": "hed"}, "param 'control_source' must be one of image, canny"),
        ({"invert": 1}, "param 'invert' must be bool, got int"),
        ({"prompt_blend": "cubic"}, "param 'prompt_blend' must be one of linear, slerp"),
        ({"prompt_transition": 121}, "param 'prompt_transition' must be in [0, 120]"),
    ],
)
def test_bad_blends_and_controls_are_refused_saying_what_works(
    raw: dict[str, object], mention: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params_patch(raw)
    assert mention in str(caught.value)


def test_params_from_a_query_string_are_read_as_their_fields_types() -> None:
    patch = parse_params_query(
        [
            ("prompt", "a fox, 1920s"),
            ("negative_prompt", "blur"),
            ("strength", "0.25"),
            ("steps", "2"),
            ("seed", "7"),
            ("invert", "true"),
            ("controlnet", "canny"),
        ]
    )

    assert patch == {
        "prompt": "a fox, 1920s",
        "negative_prompt": "blur",
        "strength": 0.25,
        "steps": 2,
        "seed": 7,
        "invert": True,
        "controlnet": ("canny",),
    }


@pytest.mark.parametrize(
    ("pairs", "mention"),
    [
        ([("strength", "lots")], "param 'strength' must be a number, true or false"),
        ([("strength", "2")], "param 'strength' must be in [0.0, 1.0], got 2.0"),
        ([("steps", "1.5")], "param 'steps' must be int, got float"),
        ([("colour", "red")], "unknown param 'colour'"),
    ],
    ids=["not-a-number", "out-of-range", "not-an-int", "unknown"],
)
def test_params_from_a_query_string_get_the_checks_of_a_map(
    pairs: list[tuple[str, str]], mention: str
) -> None:
    with pytest.raises(InvalidParams) as refused:
        parse_params_query(pairs)

    assert mention in str(refused.value)

"""Generation parameters: what a session asks the pipeline for.

Clients send partial updates (a map of field to value); :func:`parse_params_patch`
checks every field's type and generic range, and :meth:`Params.updated` applies a
checked patch. Checks that depend on the model (say, at most 4 steps) belong to
the pipeline, which raises ``ValueError`` for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from stream.errors import InvalidParams, quoted

ImageFormat = Literal["jpeg", "webp", "png"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "webp", "png")
MAX_SEED = 2**32 - 1
# A blend of prompts or seeds: (value, weight) pairs, weights >= 0 and not all 0.
PromptBlend = tuple[tuple[str, float], ...]
SeedBlend = tuple[tuple[int, float], ...]
MAX_BLEND_ITEMS = 8  # each prompt of a blend costs a text-encoder pass the first time
BLEND_MODES = ("linear", "slerp")
CONTROL_SOURCES = ("image", "canny")
MAX_CONTROL_SCALE = 2.0
MAX_PROMPT_TRANSITION_FRAMES = 120


@dataclass(frozen=True, slots=True)
class Params:
    # A prompt, or a blend of weighted prompts (in embedding space, ``prompt_blend``).
    prompt: str | PromptBlend = ""
    negative_prompt: str = ""
    # A seed, or a blend of weighted seeds (their noises blended by slerp).
    seed: int | SeedBlend = 0
    steps: int = 1
    strength: float = 0.5
    guidance_scale: float = 0.0
    width: int = 512
    height: int = 512
    output_format: ImageFormat = "jpeg"
    quality: int = 85
    # Diffusion pipelines: the sampler, a LoRA adapter loaded at start (by name,
    # "" for none), the largest mean pixel change (0 to 1) under which an input
    # counts as unchanged and is answered with the last frame, and how much of
    # the last output's latent is blended into the next input's (webcam coherence).
    scheduler: str = "euler"
    lora: str = ""
    similarity_threshold: float = 0.0
    latent_feedback: float = 0.0
    # How a prompt blend mixes (linear or slerp), and over how many generated frames
    # a new prompt eases in from the last one (0: at once).
    prompt_blend: str = "linear"
    prompt_transition: int = 0
    # Structure control (pipelines/control.py): ControlNets or T2I-Adapters loaded at
    # start, by name; a scale per control (one number counts for all); the fraction
    # of the steps they act in; the control image: the input frame itself or its
    # canny edges, optionally inverted (white lines on black).
    controlnet: tuple[str, ...] = ()
    control_scale: float | tuple[float, ...] = 1.0
    control_start: float = 0.0
    control_end: float = 1.0
    control_source: str = "image"
    invert: bool = False

    def updated(self, patch: dict[str, Any]) -> Params:
        return replace(self, **patch)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Field:
    kind: type
    low: float | None = None
    high: float | None = None
    multiple_of: int | None = None
    choices: tuple[str, ...] | None = None


def _prompt(name: str, value: Any) -> str | PromptBlend:
    if isinstance(value, str):
        return value
    blend: PromptBlend = _blend(name, value, _Field(str), "[[text, weight], ...]")
    return blend


def _seed(name: str, value: Any) -> int | SeedBlend:
    seed = _Field(int, 0, MAX_SEED)
    if isinstance(value, list | tuple):
        blend: SeedBlend = _blend(name, value, seed, "[[seed, weight], ...]")
        return blend
    number: int = _check_value(name, seed, value)
    return number


def _blend(name: str, value: Any, item: _Field, shape: str) -> Any:
    """A list of (value, weight) pairs with weights >= 0, not all 0."""
    expected = f"param {name!r} must be a {item.kind.__name__} or a list {shape}"
    if not isinstance(value, list | tuple):
        raise InvalidParams(f"{expected}, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_BLEND_ITEMS:
        raise InvalidParams(f"{expected} of 1 to {MAX_BLEND_ITEMS} pairs, got {len(value)}")
    pairs = []
    for pair in value:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            got = quoted(pair)
            raise InvalidParams(f"{expected}: each item is a [value, weight] pair, got {got}")
        weight = _check_value(f"{name} weight", _Field(float, 0.0, 1e6), pair[1])
        pairs.append((_check_value(name, item, pair[0]), weight))
    if not any(weight for _, weight in pairs):
        raise InvalidParams(f"param {name!r}: the weights are all 0; give one a weight above 0")
    return tuple(pairs)


def _names(name: str, value: Any) -> tuple[str, ...]:
    """One name, or a list of names; "" or [] for none."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise InvalidParams(f"param {name!r} must be a name or a list of names")
    if len(names) > MAX_BLEND_ITEMS:
        raise InvalidParams(f"param {name!r} takes at most {MAX_BLEND_ITEMS} names")
    return tuple(n for n in names if n)


def _scales(name: str, value: Any) -> float | tuple[float, ...]:
    """One scale for every control, or one per control."""
    scale = _Field(float, 0.0, MAX_CONTROL_SCALE)
    if isinstance(value, list | tuple):
        if not 1 <= len(value) <= MAX_BLEND_ITEMS:
            raise InvalidParams(f"param {name!r} takes 1 to {MAX_BLEND_ITEMS} scales")
        return tuple(_check_value(name, scale, item) for item in value)
    number: float = _check_value(name, scale, value)
    return number


_FIELDS: dict[str, _Field | Callable[[str, Any], Any]] = {
    "prompt": _prompt,
    "negative_prompt": _Field(str),
    "seed": _seed,
    "steps": _Field(int, 1, 50),
    "strength": _Field(float, 0.0, 1.0),
    "guidance_scale": _Field(float, 0.0, 30.0),
    "width": _Field(int, 64, 2048, multiple_of=8),
    "height": _Field(int, 64, 2048, multiple_of=8),
    "output_format": _Field(str, choices=IMAGE_FORMATS),
    "quality": _Field(int, 1, 100),
    "scheduler": _Field(str),
    "lora": _Field(str),
    "similarity_threshold": _Field(float, 0.0, 1.0),
    "latent_feedback": _Field(float, 0.0, 1.0),
    "prompt_blend": _Field(str, choices=BLEND_MODES),
    "prompt_transition": _Field(int, 0, MAX_PROMPT_TRANSITION_FRAMES),
    "controlnet": _names,
    "control_scale": _scales,
    "control_start": _Field(float, 0.0, 1.0),
    "control_end": _Field(float, 0.0, 1.0),
    "control_source": _Field(str, choices=CONTROL_SOURCES),
    "invert": _Field(bool),
}


def parse_params_patch(raw: object) -> dict[str, Any]:
    """Check a client's params map and return it with floats normalised.

    Raises :class:`InvalidParams` naming the first bad field.
    """
    if not isinstance(raw, dict):
        raise InvalidParams(f"params must be a map, got {type(raw).__name__}")
    return {name: _check_field(name, value) for name, value in raw.items()}


def parse_params_query(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Params given as text (``?prompt=...&strength=0.5``, as WHIP takes them).

    Each value is read as its field's type, then checked as
    :func:`parse_params_patch` checks a map; raises :class:`InvalidParams`.
    """
    return parse_params_patch({name: _from_text(name, text) for name, text in pairs})


def _from_text(name: str, text: str) -> Any:
    """Text fields (and names) as they are; numbers, booleans and blends as JSON."""
    spec = _FIELDS.get(name)
    if spec is None or spec in (_prompt, _names) or (isinstance(spec, _Field) and spec.kind is str):
        return text  # an unknown name is refused by the check
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidParams(
            f"param {name!r} must be a number, true or false, or a JSON list; got {text!r}"
        ) from None


def _check_field(name: object, value: Any) -> Any:
    spec = _FIELDS.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(_FIELDS)
        raise InvalidParams(f"unknown param {quoted(name)}; known params: {known}")
    assert isinstance(name, str)
    if isinstance(spec, _Field):
        return _check_value(name, spec, value)
    return spec(name, value)


def _check_value(name: str, spec: _Field, value: Any) -> Any:
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (isinstance(value, bool) and spec.kind is not bool):
        expected, got = spec.kind.__name__, type(value).__name__
        raise InvalidParams(f"param {name!r} must be {expected}, got {got}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParams(f"param {name!r} must be finite, got {value}")
    if spec.choices is not None and value not in spec.choices:
        choices = ", ".join(spec.choices)
        raise InvalidParams(f"param {name!r} must be one of {choices}, got {value!r}")
    number: Any = value  # mypy cannot narrow value to spec.kind
    if spec.low is not None and spec.high is not None and not spec.low <= number <= spec.high:
        raise InvalidParams(f"param {name!r} must be in [{spec.low}, {spec.high}], got {value}")
    if spec.multiple_of is not None and number % spec.multiple_of:
        raise InvalidParams(f"param {name!r} must be a multiple of {spec.multiple_of}, got {value}")
    return value

"""Generation parameters: what a session asks the pipeline for.

Clients send partial updates (a map of field to value); :func:`parse_params_patch`
checks every field's type and generic range, and :meth:`Params.updated` applies a
checked patch. Checks that depend on the model (say, at most 4 steps) belong to
the pipeline, which raises ``ValueError`` for them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from stream.errors import InvalidParams

ImageFormat = Literal["jpeg", "webp", "png"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "webp", "png")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Params:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
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


_FIELDS: dict[str, _Field] = {
    "prompt": _Field(str),
    "negative_prompt": _Field(str),
    "seed": _Field(int, 0, MAX_SEED),
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
}


def parse_params_patch(raw: object) -> dict[str, Any]:
    """Check a client's params map and return it with floats normalised.

    Raises :class:`InvalidParams` naming the first bad field.
    """
    if not isinstance(raw, dict):
        raise InvalidParams(f"params must be a map, got {type(raw).__name__}")
    return {name: _check_field(name, value) for name, value in raw.items()}


def _check_field(name: object, value: Any) -> Any:
    spec = _FIELDS.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(_FIELDS)
        raise InvalidParams(f"unknown param {name!r}; known params: {known}")
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or isinstance(value, bool):
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

"""Named pipelines: ``livegen serve --pipeline NAME`` picks one from here.

Each is imported when it is created: the model families bring torch and diffusers
(seconds to import), which the passthrough pipeline does without.
"""

from __future__ import annotations

import importlib

from pipelines.base import Pipeline, PipelineOptions

# name -> (module, class)
_PIPELINES: dict[str, tuple[str, str]] = {
    "passthrough": ("pipelines.passthrough", "PassthroughPipeline"),
    "sd-turbo": ("pipelines.sd_turbo", "SDTurboPipeline"),
    "lcm": ("pipelines.lcm", "LCMPipeline"),
}


def pipeline_names() -> list[str]:
    return sorted(_PIPELINES)


def create_pipeline(name: str, options: PipelineOptions) -> Pipeline:
    try:
        module, class_name = _PIPELINES[name]
    except KeyError:
        raise ValueError(
            f"unknown pipeline {name!r}; available: {', '.join(pipeline_names())}"
        ) from None
    cls: type[Pipeline] = getattr(importlib.import_module(module), class_name)
    return cls.load(options)

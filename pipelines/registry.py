"""Named pipelines: ``livegen serve --pipeline NAME`` picks one from here."""

from __future__ import annotations

from pipelines.base import Pipeline, PipelineOptions
from pipelines.lcm import LCMPipeline
from pipelines.passthrough import PassthroughPipeline
from pipelines.sd_turbo import SDTurboPipeline

_PIPELINES: dict[str, type[Pipeline]] = {
    cls.name: cls for cls in (PassthroughPipeline, SDTurboPipeline, LCMPipeline)
}


def pipeline_names() -> list[str]:
    return sorted(_PIPELINES)


def create_pipeline(name: str, options: PipelineOptions) -> Pipeline:
    try:
        cls = _PIPELINES[name]
    except KeyError:
        raise ValueError(
            f"unknown pipeline {name!r}; available: {', '.join(pipeline_names())}"
        ) from None
    return cls.load(options)

"""Synchronous model code behind one small interface.

A pipeline is loaded once, warmed up, and then called by the server's single
inference thread with batches of requests from many sessions. Nothing here
imports asyncio or anything from ``server/``. See :mod:`pipelines.base`.

The names below are imported on first use: they bring torch, which a command
that only checks its flags (or reads :mod:`pipelines.sources`) need not wait for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.base import FrameRequest, Pipeline, PipelineOptions
    from pipelines.registry import create_pipeline, pipeline_names

__all__ = ["FrameRequest", "Pipeline", "PipelineOptions", "create_pipeline", "pipeline_names"]
_HOMES = {
    "FrameRequest": "pipelines.base",
    "Pipeline": "pipelines.base",
    "PipelineOptions": "pipelines.base",
    "create_pipeline": "pipelines.registry",
    "pipeline_names": "pipelines.registry",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)

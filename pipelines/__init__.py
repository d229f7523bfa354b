"""Synchronous model code behind one small interface.

A pipeline is loaded once, warmed up, and then called by the server's single
inference thread with batches of requests from many sessions. Nothing here
imports asyncio or anything from ``server/``. See :mod:`pipelines.base`.
"""

from pipelines.base import FrameRequest, Pipeline, PipelineOptions
from pipelines.registry import create_pipeline, pipeline_names

__all__ = ["FrameRequest", "Pipeline", "PipelineOptions", "create_pipeline", "pipeline_names"]

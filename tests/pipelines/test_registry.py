"""The pipeline registry and the passthrough pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline, pipeline_names
from pipelines.base import resolve_device
from stream.params import Params


def test_passthrough_is_registered_and_returns_its_inputs():
    pipeline = create_pipeline("passthrough", PipelineOptions(device="cpu"))
    images = [np.full((4, 6, 3), value, np.uint8) for value in (10, 200)]

    pipeline.warmup()
    outputs = pipeline([FrameRequest(None, Params(), image) for image in images])

    assert "passthrough" in pipeline_names()
    assert [output.tolist() for output in outputs] == [image.tolist() for image in images]


def test_passthrough_needs_an_input_frame():
    pipeline = create_pipeline("passthrough", PipelineOptions(device="cpu"))
    with pytest.raises(ValueError, match="needs an input frame"):
        pipeline([FrameRequest(None, Params(), None)])


def test_an_unknown_pipeline_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown pipeline 'sdxl'; available: .*passthrough"):
        create_pipeline("sdxl", PipelineOptions())


def test_auto_device_is_cpu_without_an_accelerator_and_names_are_taken_as_given():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")

"""The CUDA path, run where a GPU is: compiled with CUDA graphs, frames equal eager ones.

Skipped without CUDA (as in CI). On a GPU machine: ``pytest tests/pipelines/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from tests.conftest import TinyModels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def frames(pipeline: FewStepPipeline) -> list[np.ndarray]:
    """Frames from batches of 1 to 3 sessions, text-to-image mixed in, at 1 and 2 steps."""
    image = np.random.default_rng(0).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    made = []
    for steps in (1, 2):
        states = [pipeline.new_state() for _ in range(3)]
        for count in (1, 3):
            requests = [
                FrameRequest(
                    state,
                    pipeline.default_params.updated(
                        {
                            "prompt": f"a cat {i}",
                            "seed": i,
                            "steps": steps,
                            "width": 64,
                            "height": 96,
                        }
                    ),
                    image if i else None,
                )
                for i, state in enumerate(states[:count])
            ]
            made += pipeline(requests)
    return made


def test_cuda_graphs_give_the_frames_the_eager_unet_gives(tiny_models: TinyModels) -> None:
    def load(**options: object) -> FewStepPipeline:
        pipeline = create_pipeline(
            "sd-turbo",
            PipelineOptions(model=str(tiny_models.sd_turbo), device="cuda", **options),  # type: ignore[arg-type]
        )
        assert isinstance(pipeline, FewStepPipeline)
        pipeline.warmup()
        return pipeline

    eager, compiled = load(), load(compile=True)
    assert compiled._unet_forward is not compiled.unet  # it did compile
    assert eager.dtype == torch.float16
    for made, expected in zip(frames(compiled), frames(eager), strict=True):
        assert np.abs(made.astype(int) - expected).max() <= 2

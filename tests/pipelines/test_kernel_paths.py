"""Frames made through the Triton kernels equal frames made through their references.

The pipelines call the kernels' dispatchers (``livegen_kernels``) for the
model input, the sampler's updates, the similarity filter and the output
pixels. ``LIVEGEN_KERNELS=triton`` takes the kernels even on the CPU, run by
Triton's interpreter (``tests/conftest.py``), so this runs without a GPU: the
same sessions made twice, once per path, must give the same frames (to a level
where float32 rounding of the resize lands on a half).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from tests.conftest import TinyModels

pytest.importorskip("triton", reason="Triton does not import here: pip install triton")

SIZE = {"width": 48, "height": 32}


@pytest.fixture(scope="module")
def turbo(tiny_models: TinyModels) -> FewStepPipeline:
    # One lane: Triton's interpreter patches triton.language while a kernel runs, so two
    # lanes interpreting kernels at once would trip over each other (a GPU has no lanes).
    device = "cuda" if torch.cuda.is_available() else "cpu"  # compiled kernels on a GPU
    options = PipelineOptions(model=str(tiny_models.sd_turbo), device=device, cpu_lanes=1)
    pipeline = create_pipeline("sd-turbo", options)
    assert isinstance(pipeline, FewStepPipeline)
    return pipeline


def session_frames(pipeline: FewStepPipeline, scheduler: str) -> list[np.ndarray]:
    """Three ticks of two sessions: a camera frame to resize (with feedback) and a prompt."""
    camera = pipeline.default_params.updated(
        {
            **SIZE,
            "prompt": "a cat",
            "scheduler": scheduler,
            "steps": 2,
            "strength": 0.7,
            "latent_feedback": 0.3,
            "similarity_threshold": 0.02,
        }
    )
    text = camera.updated({"prompt": "a dog", "steps": 1})
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (41, 75, 3), dtype=np.uint8)
    nearly = first.copy()
    nearly[0, :3] ^= 1  # within the similarity threshold: answered without a UNet pass
    states = [pipeline.new_state(), pipeline.new_state()]
    frames = []
    for image in (first, nearly):
        requests = [FrameRequest(states[0], camera, image), FrameRequest(states[1], text, None)]
        frames += pipeline(requests)
    return frames


def test_the_kernels_make_the_frames_the_references_make(turbo, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_KERNELS", "reference")
    expected = session_frames(turbo, "euler_a")  # Euler's step plus fresh noise
    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    got = session_frames(turbo, "euler_a")

    assert [frame.shape for frame in got] == [(32, 48, 3)] * 4
    # The resize sums in another order (livegen_kernels.model_input.ATOL): a level that
    # lands on a half may round the other way, nothing more.
    for frame, reference in zip(got, expected, strict=True):
        levels = np.abs(frame.astype(int) - reference.astype(int))
        assert levels.max() <= 1 and (levels == 0).mean() > 0.999
    assert np.array_equal(got[1], expected[1])  # text to image: no resize, the same frame
    assert got[2] is got[0]  # the nearly unchanged input was answered with the last frame


def test_the_kernel_path_refuses_cpu_tensors_without_the_interpreter(monkeypatch) -> None:
    from livegen_kernels.dispatch import KernelUnavailable, use_triton

    monkeypatch.setenv("LIVEGEN_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelUnavailable, match="set TRITON_INTERPRET=1"):
        use_triton(torch.zeros(1))
    monkeypatch.setenv("LIVEGEN_KERNELS", "fast")
    with pytest.raises(ValueError, match="LIVEGEN_KERNELS='fast': use one of auto, reference"):
        use_triton(torch.zeros(1))
    monkeypatch.setenv("LIVEGEN_KERNELS", "auto")
    assert use_triton(torch.zeros(1)) is False  # the CPU runs the references

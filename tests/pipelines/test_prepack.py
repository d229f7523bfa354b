"""Weights packed once for oneDNN: same outputs, packing really used, safe fallback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.diffusion import FewStepPipeline
from pipelines.prepack import (
    PACKED_SIZES,
    PackedWeight,
    available,
    packable_dtypes,
    prepack_weights,
)
from stream.params import Params
from tests.conftest import TinyModels

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN")

# (in, out, kernel, stride, padding, bias): the kinds a UNet and an autoencoder use.
CONVOLUTIONS = [
    (8, 16, 3, 1, 1, True),
    (16, 16, 3, 2, 1, True),  # a downsampler
    (16, 8, 1, 1, 0, True),  # a shortcut
    (3, 8, 3, 1, 1, False),
]


def packed(layer: nn.Module) -> PackedWeight:
    forward = layer.__dict__["forward"]
    assert isinstance(forward, PackedWeight)
    return forward


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "bias"), CONVOLUTIONS)
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_a_packed_convolution_equals_the_plain_one_for_any_input_size(
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    padding: int,
    bias: bool,
    memory_format: torch.memory_format,
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias).eval()
    assert prepack_weights(conv) == 1
    for shape in [(1, cin, 13, 17), (3, cin, 8, 6), (2, cin, 13, 17)]:
        x = torch.randn(shape).to(memory_format=memory_format)
        with torch.inference_mode():
            out = conv(x)
            expected = nn.Conv2d.forward(conv, x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert list(packed(conv).packed) == [(8, 6), (13, 17)]  # one packing per size, not per batch
    with torch.inference_mode():  # an unbatched image takes the plain path, packings kept
        x = torch.randn(cin, 9, 9)
        torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x), rtol=1e-5, atol=1e-5)
    assert list(packed(conv).packed) == [(8, 6), (13, 17)] and not PackedWeight.failed


BFLOAT16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(
        torch.bfloat16 not in packable_dtypes(), reason="this CPU packs no bfloat16 (AVX-512)"
    ),
)


@pytest.mark.parametrize("dtype", [torch.float32, BFLOAT16])
@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_linear_layer_equals_the_plain_one_for_any_input_shape(
    dtype: torch.dtype, bias: bool
) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 40, bias=bias).to(dtype).eval()
    assert prepack_weights(linear) == 1
    inputs = [
        torch.randn(1, 77, 24),  # a prompt's tokens
        torch.randn(4, 77, 24),  # a batch of them: no new packing
        torch.randn(3, 16, 24),  # a batch of image tokens
        torch.randn(2, 7, 48)[..., ::2],  # a strided view
        torch.randn(5, 24),  # one vector a sample, as the time embedding
        torch.randn(24),  # a single vector: the plain path
    ]
    with torch.inference_mode():
        for x in inputs:
            x = x.to(dtype)
            tolerance = 1e-5 if dtype == torch.float32 else 1e-2
            expected = nn.Linear.forward(linear, x)
            torch.testing.assert_close(linear(x), expected, rtol=tolerance, atol=tolerance)
    assert list(packed(linear).packed) == [(7,), ()]  # the last two token counts


def test_packings_are_kept_for_the_sizes_used_last_and_evicted_ones_are_redone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reorder = torch.ops.mkldnn._reorder_convolution_weight
    packed_sizes: list[tuple[int, int]] = []

    def counting_reorder(*args: Any) -> torch.Tensor:
        packed_sizes.append(tuple(args[-1][-2:]))
        return reorder(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_convolution_weight", counting_reorder)
    conv = nn.Conv2d(4, 6, 3, padding=1).eval()
    prepack_weights(conv)
    sizes = [(8 + i, 8) for i in range(PACKED_SIZES + 1)]
    with torch.inference_mode():
        for height, width in [*sizes, sizes[-1], sizes[0]]:
            x = torch.randn(2, 4, height, width)
            torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x), rtol=1e-5, atol=1e-5)
    # Each size packed at its first use; the first one again after the last evicted it.
    assert packed_sizes == [*sizes, sizes[0]]
    assert len(packed(conv).packed) == PACKED_SIZES
    assert list(packed(conv).packed)[-2:] == [sizes[-1], sizes[0]]


def test_a_weight_changed_in_place_is_packed_again() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    prepack_weights(conv)
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(2.0)
    with torch.inference_mode():
        after = conv(x)
        torch.testing.assert_close(after, nn.Conv2d.forward(conv, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_only_float_linear_layers_and_plain_zero_padded_convolutions_are_packed() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1),
        nn.Conv2d(3, 3, 3, padding="same"),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(3, 3, 3, padding=1).to(torch.float64),
        nn.Conv1d(3, 3, 3),
        nn.Linear(3, 3),
        nn.Linear(3, 3).to(torch.float16),
    )
    assert prepack_weights(model) == 2
    assert prepack_weights(model) == 0  # already packed: not wrapped twice
    assert [i for i, layer in enumerate(model) if "forward" in layer.__dict__] == [0, 5]


def test_training_runs_the_plain_convolution() -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1)
    prepack_weights(conv)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    conv(x).sum().backward()  # the packed operators have no gradient: the plain path ran
    assert x.grad is not None and not packed(conv).packed
    with torch.inference_mode():
        conv(x.detach())
    assert list(packed(conv).packed) == [(8, 8)]


@pytest.mark.parametrize(
    ("layer", "shape", "operator"),
    [
        (nn.Conv2d(3, 5, 3, padding=1), (2, 3, 9, 7), "_convolution_pointwise"),
        (nn.Linear(3, 5), (2, 9, 3), "_linear_pointwise"),
    ],
)
def test_if_the_operators_fail_the_plain_layer_runs(
    monkeypatch: pytest.MonkeyPatch, layer: nn.Module, shape: tuple[int, ...], operator: str
) -> None:
    def broken(*_: Any) -> torch.Tensor:
        raise RuntimeError("operator changed in this build")

    monkeypatch.setattr(torch.ops.mkldnn, operator, broken)
    monkeypatch.setattr(PackedWeight, "failed", False)
    prepack_weights(layer.eval())
    x = torch.randn(shape)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), type(layer).forward(layer, x))
    assert PackedWeight.failed


def frame(pipeline: FewStepPipeline, prompt: str) -> np.ndarray:
    params = Params(prompt=prompt, width=64, height=96, steps=2, strength=0.6)
    image = np.random.default_rng(3).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    return pipeline([FrameRequest(pipeline.new_state(), params, image)])[0]


def test_a_cpu_without_bfloat16_packing_leaves_bfloat16_layers_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3).to(torch.bfloat16))
    assert prepack_weights(model) == 1
    assert "forward" not in model[1].__dict__


@pytest.mark.parametrize(
    ("dtype", "max_levels"),
    [
        ("float32", 1),
        pytest.param("bfloat16", 8, marks=BFLOAT16.marks),
    ],
)
def test_a_pipeline_on_the_cpu_packs_its_models_and_makes_the_same_frames(
    tiny_models: TinyModels, dtype: str, max_levels: int
) -> None:
    def load(**options: Any) -> FewStepPipeline:
        pipeline = create_pipeline(
            "sd-turbo",
            PipelineOptions(model=str(tiny_models.sd_turbo), device="cpu", dtype=dtype, **options),
        )
        assert isinstance(pipeline, FewStepPipeline)
        return pipeline

    packed_pipeline, plain = load(), load(prepack_weights=False)
    made = frame(packed_pipeline, "a lighthouse")
    models = (packed_pipeline.unet, packed_pipeline.vae, *packed_pipeline.prompts.text_encoders)
    for model in models:
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert layers and all(packed(layer).packed for layer in layers), type(model).__name__
    assert not any("forward" in m.__dict__ for m in plain.unet.modules())
    # Packed and plain kernels round differently: in bfloat16 (8 bits of mantissa)
    # that shows on a few pixels of a random model's frame, not on the frame.
    difference = np.abs(made.astype(int) - frame(plain, "a lighthouse"))
    assert difference.max() <= max_levels, difference.max()
    assert difference.mean() < 0.5, difference.mean()

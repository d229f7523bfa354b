"""Lanes: a batch cut into parts that run at once, each on its share of the threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pipelines import FrameRequest
from pipelines.lanes import Lanes
from tests.conftest import TinyModels
from tests.pipelines.test_diffusion import load, params, sketch


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads for the test, whatever the machine has."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_lanes_split_a_batch_in_order_and_run_the_parts_at_once(two_threads: None) -> None:
    lanes = Lanes(2)
    both_running = threading.Barrier(2, timeout=10)  # broken unless two parts run at once

    def part(samples: slice) -> tuple[slice, str, int, bool]:
        both_running.wait()
        return (
            samples,
            threading.current_thread().name,
            torch.get_num_threads(),
            torch.is_inference_mode_enabled(),
        )

    results = lanes.map(part, 5)

    assert [samples for samples, *_ in results] == [slice(0, 2), slice(2, 5)]
    names = {name for _, name, _, _ in results}
    assert len(names) == 2 and all(name.startswith("livegen-lane") for name in names)
    assert all(threads == 1 and inference for _, _, threads, inference in results)


def test_lanes_leave_every_thread_count_outside_them_alone(two_threads: None) -> None:
    Lanes(2)

    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == 2
    assert later == [2]  # a thread started after the lanes still gets every thread


@pytest.mark.parametrize(("count", "batch_size"), [(2, 1), (1, 4)])
def test_one_sample_or_one_lane_runs_on_the_calling_thread(
    two_threads: None, count: int, batch_size: int
) -> None:
    here = threading.current_thread().name

    assert Lanes(count).map(
        lambda samples: (samples, threading.current_thread().name), batch_size
    ) == [(slice(0, batch_size), here)]


def test_an_error_in_a_lane_reaches_the_caller(two_threads: None) -> None:
    def part(samples: slice) -> None:
        if samples.start:
            raise ValueError("bad sample")

    with pytest.raises(ValueError, match="bad sample"):
        Lanes(2).map(part, 2)


def test_a_pipeline_runs_a_batch_in_lanes_and_a_lone_request_whole(
    tiny_models: TinyModels, two_threads: None
) -> None:
    pipeline = load("sd-turbo", tiny_models.sd_turbo, dtype="float32")
    calls: list[tuple[str, int]] = []
    handle = pipeline.unet.register_forward_pre_hook(
        lambda _, args: calls.append((threading.current_thread().name, len(args[0])))
    )
    p = params(pipeline, steps=1)
    try:
        batched = pipeline([FrameRequest(pipeline.new_state(), p, sketch(s)) for s in (1, 2, 3)])
        lane_calls = list(calls)
        calls.clear()
        whole = load("sd-turbo", tiny_models.sd_turbo, dtype="float32", cpu_lanes=1)
        alone = [whole([FrameRequest(whole.new_state(), p, sketch(s))])[0] for s in (1, 2, 3)]
        single = pipeline([FrameRequest(pipeline.new_state(), p, sketch(1))])
    finally:
        handle.remove()

    assert sorted(size for _, size in lane_calls) == [1, 2]
    assert all(name.startswith("livegen-lane") for name, _ in lane_calls)
    assert calls == [(threading.current_thread().name, 1)]
    for frame, reference in zip([*batched, *single], [*alone, alone[0]], strict=True):
        assert np.abs(frame.astype(int) - reference).max() <= 1

"""Device memory arithmetic: what a session's state costs and how many fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.diffusion import DiffusionState, Posterior
from pipelines.memory import MemoryBudget, is_out_of_memory, read_memory, tensor_bytes

MIB = 2**20


@pytest.mark.parametrize(
    ("budget", "sessions"),
    [
        # 8 GiB left, 1 GiB kept for a running batch, 7 MiB a session.
        (MemoryBudget(7 * MIB, 1024 * MIB, 8192 * MIB), 1024),
        # Not one session fits beside the batch: still one, or nobody could connect.
        (MemoryBudget(7 * MIB, 1024 * MIB, 1000 * MIB), 1),
        # A CPU: no device memory to divide.
        (MemoryBudget(7 * MIB, 0, None), None),
        # Sessions that cache nothing are not limited by memory.
        (MemoryBudget(0, 1024 * MIB, 8192 * MIB), None),
    ],
)
def test_sessions_that_fit_divide_what_is_left_beside_a_batch(budget, sessions):
    assert budget.sessions_that_fit() == sessions


def test_tensor_bytes_counts_a_states_tensors_and_arrays_once_each():
    mean = torch.zeros(4, 8, 8)
    state = DiffusionState(
        input_pixels=torch.zeros(64, 64, 3, dtype=torch.uint8),
        input_posterior=Posterior(mean=mean, std=mean[:2]),  # a view shares mean's storage
        output=np.zeros((64, 64, 3), np.uint8),
    )

    assert tensor_bytes(state) == 64 * 64 * 3 + 4 * 8 * 8 * 4 + 64 * 64 * 3
    assert tensor_bytes({"a": [torch.zeros(2)], "b": (np.zeros(3),)}) == 2 * 4 + 3 * 8
    assert tensor_bytes(None) == 0


def test_torch_out_of_memory_errors_are_told_from_other_failures():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(torch.OutOfMemoryError("out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA out of memory"))  # only torch's own class


def test_on_a_cpu_the_reading_is_the_hosts_memory():
    reading = read_memory(torch.device("cpu"))

    assert reading is not None
    assert 0 < reading.available_bytes < reading.total_bytes
    assert 0 < reading.process_bytes < reading.total_bytes
    assert reading.pressure == pytest.approx(1 - reading.available_bytes / reading.total_bytes)

"""Kernel tests run each Triton kernel against its plain-torch reference.

On a GPU the kernels run compiled on CUDA tensors; without one, Triton's
interpreter runs them on CPU tensors (``TRITON_INTERPRET=1``, set in
``tests/conftest.py`` before anything imports a kernel). The interpreter is
slow, so the shapes are small but awkward: odd sizes, batches of 1 and 7,
strided views.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip(
    "triton", reason="Triton does not import here: pip install triton (bash tests/setup.sh)"
)

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "no GPU and TRITON_INTERPRET is not 1: run pytest from the repository (tests/conftest.py "
        "sets it) or export TRITON_INTERPRET=1",
        allow_module_level=True,
    )


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

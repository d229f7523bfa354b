"""Which implementation a kernel call runs: Triton on CUDA, the plain-torch reference elsewhere.

Every kernel file holds a Triton launcher and a ``*_ref`` in plain torch; its
public function asks :func:`use_triton` which one to run for a tensor. Triton
is optional: CUDA builds of torch bring it, CPU installs run the references
without it. ``LIVEGEN_KERNELS`` overrides the choice, for comparing the two
paths on one machine:

- ``auto`` (the default): Triton for CUDA tensors when Triton imports, else the reference;
- ``reference``: always the reference;
- ``triton``: always Triton; on the CPU that takes Triton's interpreter
  (``TRITON_INTERPRET=1`` set before the kernels are imported), slow but exact
  enough to test the kernels without a GPU.

The launchers check device, dtype and contiguity with :func:`require`, so a
wrong tensor fails with a sentence instead of a Triton compile error or a wild
read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU install: only the references run
    triton = None
    tl = None

MODES = ("auto", "reference", "triton")
MODE_VARIABLE = "LIVEGEN_KERNELS"


class KernelUnavailable(RuntimeError):
    """A Triton kernel was asked for where it cannot run."""


def triton_available() -> bool:
    return triton is not None


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (on CPU tensors)."""
    return triton is not None and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def mode() -> str:
    value = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE}={value!r}: use one of {', '.join(MODES)}")
    return value


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether a kernel call on ``tensor`` runs the Triton path."""
    chosen = mode()
    if chosen == "reference":
        return False
    if chosen == "auto":
        return tensor.is_cuda and triton_available()
    if not triton_available():
        raise KernelUnavailable(
            f"{MODE_VARIABLE}=triton but Triton does not import: pip install triton, "
            f"or set {MODE_VARIABLE}=auto"
        )
    if not tensor.is_cuda and not interpreting():
        raise KernelUnavailable(
            f"{MODE_VARIABLE}=triton on a {tensor.device.type} tensor needs Triton's "
            "interpreter: set TRITON_INTERPRET=1 before livegen starts"
        )
    return True


def jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit`` where Triton imports; elsewhere a stand-in that says why it cannot run."""
    if triton is not None:
        return triton.jit(fn)

    class Unavailable:
        def __getitem__(self, grid: Any) -> Callable[..., Any]:
            raise KernelUnavailable(f"{fn.__name__} needs Triton: pip install triton")

    return Unavailable()


def require(
    name: str,
    tensor: torch.Tensor,
    *,
    dtypes: tuple[torch.dtype, ...],
    ndim: int,
    device: torch.device | None = None,
    contiguous: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``tensor`` is what a launcher can read."""
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in dtypes:
        wanted = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} must be {wanted}, got {str(tensor.dtype).removeprefix('torch.')}")
    if not tensor.is_cuda and not interpreting():
        raise ValueError(
            f"{name} is on {tensor.device}: the Triton kernels run on CUDA tensors "
            "(or on the CPU under TRITON_INTERPRET=1); call the dispatcher to get the reference"
        )
    if device is not None and tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, the other inputs on {device}")
    if contiguous and not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous: call .contiguous() first")

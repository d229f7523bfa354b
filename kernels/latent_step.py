"""The samplers' per-sample latent update in one pass, fused with the latent-feedback blend.

Every update ``pipelines.samplers`` makes to a latent has one shape, with
scalars that differ per sample (each session has its own timesteps):

1. ``x = lerp(sample, previous, blend)``: the latent-feedback blend (temporal
   coherence: the last output's latent pulled into the next input);
2. ``clean = clamp(p * x + q * model_output, -clip, clip)``: the model's
   prediction of the clean latent (epsilon or v prediction, Euler or LCM);
3. ``out = r * clean + s * x + u * noise``: the move to the next noise level,
   with fresh noise where the sampler takes it.

Adding noise to input latents is the same with no model output (``clean = x``),
an Euler step is ``p = 1, q = -sigma, r = 1 - target / sigma, s = target / sigma``,
an LCM step folds its boundary condition into ``r`` and ``s``. The samplers
compute the table of coefficients, (B, 7) float32 in the order of ``COLUMNS``;
this module applies it. In torch that is about ten launches on the latents per
step; here it is one.

The kernel runs the reference's float32 operations in the same order, so the
two agree to rounding (``RTOL``; a GPU may contract a multiply and an add into
one fused operation); ``torch.lerp``'s two-sided formula is kept.

Parts: ``_latent_step_kernel`` (Triton), ``latent_step_triton`` (its launcher),
``latent_step_ref`` (plain torch) and ``latent_step`` (the dispatcher).
"""

from __future__ import annotations

import math

import torch

from livegen_kernels.dispatch import jit, require, tl, use_triton

COLUMNS = ("blend", "p", "q", "clip", "r", "s", "u")
BLEND, P, Q, CLIP, R, S, U = range(len(COLUMNS))
RTOL = 1e-5
BLOCK = 512
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def coefficients(batch: int, device: torch.device, **columns: torch.Tensor | float) -> torch.Tensor:
    """A (batch, 7) table: the identity update (``out = x``) with ``columns`` set.

    Each column is a float or a (batch,) tensor, named as in ``COLUMNS``.
    """
    table = torch.zeros((batch, len(COLUMNS)), dtype=torch.float32, device=device)
    table[:, P] = 1.0
    table[:, CLIP] = math.inf
    table[:, R] = 1.0
    for name, value in columns.items():
        table[:, COLUMNS.index(name)] = value
    return table


def _per_sample(table: torch.Tensor, column: int, like: torch.Tensor) -> torch.Tensor:
    return table[:, column].view(-1, *([1] * (like.ndim - 1)))


def latent_step_ref(
    sample: torch.Tensor,
    table: torch.Tensor,
    model_output: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, ...) float32 latents updated by the (B, 7) ``table``, in plain torch."""
    x = sample
    if previous is not None:
        x = torch.lerp(x, previous, _per_sample(table, BLEND, x))
    clean = x
    if model_output is not None:
        p, q = _per_sample(table, P, x), _per_sample(table, Q, x)
        clean = p * x + q * model_output.to(torch.float32)
        clip = _per_sample(table, CLIP, x)
        clean = torch.minimum(torch.maximum(clean, -clip), clip)
    out = _per_sample(table, R, x) * clean + _per_sample(table, S, x) * x
    if noise is not None:
        out = out + _per_sample(table, U, x) * noise
    return out


def latent_step(
    sample: torch.Tensor,
    table: torch.Tensor,
    model_output: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, ...) float32 latents updated by the (B, 7) ``table``: Triton on CUDA, else torch."""
    if use_triton(sample):
        optional = [None if t is None else t.contiguous() for t in (model_output, noise, previous)]
        return latent_step_triton(sample.contiguous(), table.contiguous(), *optional)
    return latent_step_ref(sample, table, model_output, noise, previous)


@jit
def _latent_step_kernel(
    sample,  # (B, N) float32
    table,  # (B, 7) float32
    model_output,  # (B, N) float, if HAS_MODEL_OUTPUT
    noise,  # (B, N) float32, if HAS_NOISE
    previous,  # (B, N) float32, if HAS_PREVIOUS
    out,  # (B, N) float32
    total,  # B * N
    count,  # N
    HAS_MODEL_OUTPUT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_PREVIOUS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < total
    row = table + (offsets // count) * 7
    x = tl.load(sample + offsets, mask=mask, other=0.0)
    if HAS_PREVIOUS:
        # torch.lerp's two-sided formula: exact at both ends.
        end = tl.load(previous + offsets, mask=mask, other=0.0)
        weight = tl.load(row + 0, mask=mask, other=0.0)
        difference = end - x
        x = tl.where(weight < 0.5, x + weight * difference, end - difference * (1.0 - weight))
    clean = x
    if HAS_MODEL_OUTPUT:
        prediction = tl.load(model_output + offsets, mask=mask, other=0.0).to(tl.float32)
        p = tl.load(row + 1, mask=mask, other=1.0)
        q = tl.load(row + 2, mask=mask, other=0.0)
        clip = tl.load(row + 3, mask=mask, other=0.0)
        clean = p * x + q * prediction
        clean = tl.minimum(tl.maximum(clean, -clip), clip)
    value = tl.load(row + 4, mask=mask, other=0.0) * clean + tl.load(row + 5, mask=mask) * x
    if HAS_NOISE:
        value = value + tl.load(row + 6, mask=mask, other=0.0) * tl.load(
            noise + offsets, mask=mask, other=0.0
        )
    tl.store(out + offsets, value, mask=mask)


def latent_step_triton(
    sample: torch.Tensor,
    table: torch.Tensor,
    model_output: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Triton launcher: contiguous tensors of one shape on CUDA (or interpreted)."""
    require("sample", sample, dtypes=(torch.float32,), ndim=sample.ndim)
    if sample.ndim < 1:
        raise ValueError("sample must be a batch (B, ...)")
    batch = sample.shape[0]
    require("table", table, dtypes=(torch.float32,), ndim=2, device=sample.device)
    if tuple(table.shape) != (batch, len(COLUMNS)):
        raise ValueError(f"table must be ({batch}, {len(COLUMNS)}), got {tuple(table.shape)}")
    optional = {"model_output": model_output, "noise": noise, "previous": previous}
    for name, tensor in optional.items():
        if tensor is None:
            continue
        dtypes = FLOAT_DTYPES if name == "model_output" else (torch.float32,)
        require(name, tensor, dtypes=dtypes, ndim=sample.ndim, device=sample.device)
        if tensor.shape != sample.shape:
            raise ValueError(
                f"{name} must have the sample's shape {tuple(sample.shape)}, "
                f"got {tuple(tensor.shape)}"
            )
    out = torch.empty_like(sample)
    total = sample.numel()
    if total:
        _latent_step_kernel[(math.ceil(total / BLOCK),)](
            sample,
            table,
            sample if model_output is None else model_output,
            sample if noise is None else noise,
            sample if previous is None else previous,
            out,
            total,
            total // batch,
            HAS_MODEL_OUTPUT=model_output is not None,
            HAS_NOISE=noise is not None,
            HAS_PREVIOUS=previous is not None,
            BLOCK=BLOCK,
        )
    return out

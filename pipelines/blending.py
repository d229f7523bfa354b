"""Blends of weighted prompts and seeds, and prompt transitions.

A prompt may be a list of ``[text, weight]`` pairs: their embeddings (each
cached like any prompt's) mix linearly (``sum(w * e) / sum(w)``) or by slerp.
A seed may be a list of ``[seed, weight]`` pairs: their noises mix by slerp,
which keeps the noise's norm where a linear mix would shrink it. Slerp over more
than two items folds them in one at a time, each joining with its share of the
weight so far, so the order of equal weights does not matter much and a single
item (or items of weight 0 beside it) gives that item exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Below this angle two vectors are treated as parallel and mixed linearly.
PARALLEL_RADIANS = 1e-4


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), each taken as one vector."""
    a32, b32 = a.float().flatten(), b.float().flatten()
    cosine = torch.dot(a32, b32) / (a32.norm() * b32.norm()).clamp_min(1e-12)
    angle = torch.arccos(cosine.clamp(-1.0, 1.0))
    if angle.item() < PARALLEL_RADIANS:
        mixed = torch.lerp(a32, b32, t)
    else:
        sine = torch.sin(angle)
        mixed = (torch.sin((1 - t) * angle) / sine) * a32 + (torch.sin(t * angle) / sine) * b32
    return mixed.view(a.shape).to(a.dtype)


def blend(tensors: Sequence[torch.Tensor], weights: Sequence[float], mode: str) -> torch.Tensor:
    """Mix same-shaped tensors by weight (>= 0, not all 0): ``linear`` or ``slerp``."""
    kept = [(x, w) for x, w in zip(tensors, weights, strict=True) if w > 0]
    if not kept:
        raise ValueError("a blend needs a weight above 0")
    if len(kept) == 1:
        return kept[0][0]
    if mode == "linear":
        total = sum(w for _, w in kept)
        mixed = sum((x.float() * (w / total) for x, w in kept), torch.zeros(()))
        return mixed.to(kept[0][0].dtype)
    if mode != "slerp":
        raise ValueError(f"unknown blend {mode!r}; use linear or slerp")
    result, so_far = kept[0]
    for x, w in kept[1:]:
        result = slerp(result, x, w / (so_far + w))
        so_far += w
    return result

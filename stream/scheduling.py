"""Batching policy: which ready requests may share one pipeline call."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


def group_compatible(
    items: Iterable[T], key: Callable[[T], Hashable], max_batch: int
) -> list[list[T]]:
    """Split ``items`` into batches of equal ``key``, each at most ``max_batch`` long.

    Batches come out in the order their first item came in, so no session is
    starved by a busier group.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [
        group[start : start + max_batch]
        for group in groups.values()
        for start in range(0, len(group), max_batch)
    ]

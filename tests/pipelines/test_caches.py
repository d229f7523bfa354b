"""The LRU shared by sessions: bounded, least recently used out first, counted."""

from __future__ import annotations

import pytest

from pipelines.caches import LruCache


def test_missing_keys_are_computed_together_once() -> None:
    cache: LruCache[str, str] = LruCache(4)
    calls: list[list[str]] = []

    def compute(keys: list[str]) -> list[str]:
        calls.append(keys)
        return [key.upper() for key in keys]

    assert cache.get_many(["a", "b", "a"], compute) == ["A", "B", "A"]
    assert cache.get_many(["b", "c"], compute) == ["B", "C"]
    assert calls == [["a", "b"], ["c"]]
    assert (cache.stats.hits, cache.stats.misses) == (2, 3)


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LruCache[int, int] = LruCache(2)
    computed: list[int] = []

    def compute(keys: list[int]) -> list[int]:
        computed.extend(keys)
        return keys

    cache.get_many([1], compute)
    cache.get_many([2], compute)
    cache.get_many([1], compute)  # 1 is now the most recent
    cache.get_many([3], compute)  # so 2 goes
    cache.get_many([1, 2], compute)
    assert computed == [1, 2, 3, 2]
    assert len(cache) == 2


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        LruCache(0)

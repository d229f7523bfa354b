"""Caches that pipelines share across frames and sessions, with hit counters.

Every cache counts its hits and misses in a :class:`CacheStats`; the server
exports them as metrics, so skipped work shows up where operators look.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0


class LruCache(Generic[K, V]):
    """At most ``max_entries`` values; the least recently used goes first.

    Safe to share between threads (a batch's lanes look up prompts and run the same
    packed layers at once).
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"a cache needs room for at least one entry, got {max_entries}")
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first."""
        with self._lock:
            return iter(list(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get_many(self, keys: Sequence[K], compute: Callable[[list[K]], list[V]]) -> list[V]:
        """The value of every key, computing all the missing ones in one call."""
        with self._lock:
            missing = list(dict.fromkeys(key for key in keys if key not in self._entries))
            # A key asked for twice in one call is computed once: one miss, then a hit.
            self.stats.misses += len(missing)
            self.stats.hits += len(keys) - len(missing)
            found = dict(zip(missing, compute(missing), strict=True)) if missing else {}
            values = []
            for key in keys:
                if key in found:
                    value = found[key]
                    self._entries[key] = value
                else:
                    value = self._entries[key]
                self._entries.move_to_end(key)
                values.append(value)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return values

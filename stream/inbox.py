"""A one-slot, latest-wins box that counts what it drops.

The event loop puts inputs in; the inference thread takes them out. When the
pipeline is slower than the input, the older unprocessed item is replaced, so
latency stays bounded instead of growing with a queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestBox(Generic[T]):
    """Holds at most one item. Safe to use from two threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced one never taken."""
        with self._lock:
            replaced = self._item is not None
            self._item = item
            self.dropped += replaced
            return replaced

    def take(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
            return item

    def take_if(self, wanted: Callable[[T], bool]) -> T | None:
        """Take the item only if ``wanted(item)``; otherwise leave it."""
        with self._lock:
            item = self._item
            if item is None or not wanted(item):
                return None
            self._item = None
            return item

    def __bool__(self) -> bool:
        return self._item is not None

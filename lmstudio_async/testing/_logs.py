"""Bounded records for test inspection: the newest entries, capped by count and by size.

The stand-in keeps what clients sent (frames, cancels, notifications) so tests can inspect
it, but it runs for as long as a test session or a demo does and takes input from anyone
who connects: every record it keeps is bounded, by number and by an estimate of its bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["BoundedLog"]


class BoundedLog(Generic[T]):
    """The newest entries, oldest first: at most ``max_items`` of them, and no more than
    ``max_bytes`` together (each entry's size is given when it is added; the newest entry is
    always kept, even alone over the limit, until the next one arrives)."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 0 or max_bytes < 0:
            raise ValueError("the limits of a log must be >= 0")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: deque[tuple[T, int]] = deque()
        self.total_bytes = 0

    def append(self, entry: T, size: int) -> None:
        if self.max_items == 0:
            return
        self._entries.append((entry, size))
        self.total_bytes += size
        while len(self._entries) > self.max_items or (
            self.total_bytes > self.max_bytes and len(self._entries) > 1
        ):
            _old, old_size = self._entries.popleft()
            self.total_bytes -= old_size

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[T]:
        return (entry for entry, _size in self._entries)

"""Bounded records for test inspection: the newest entries, capped by count and by size.

The stand-in keeps what clients sent (frames, cancels, notifications) so tests can inspect
it, but it runs for as long as a test session or a demo does and takes input from anyone
who connects: every record it keeps is bounded, by number and by an estimate of its bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["BoundedLog", "decode_frame", "frame_preview", "preview_value"]


class BoundedLog(Generic[T]):
    """The newest entries, oldest first: at most ``max_items`` of them, and no more than
    ``max_bytes`` together (each entry's size is given when it is added; the newest entry is
    always kept, even alone over the limit, until the next one arrives). A limit of 0 keeps
    nothing."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 0 or max_bytes < 0:
            raise ValueError("the limits of a log must be >= 0")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: deque[tuple[T, int]] = deque()
        self.total_bytes = 0

    def append(self, entry: T, size: int) -> None:
        if self.max_items == 0 or self.max_bytes == 0:
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


# --- frames -------------------------------------------------------------------------------

# Frames up to this many characters (bytes for binary frames) are kept whole; of a longer
# one only its first FRAME_PREVIEW characters and a preview of its JSON value are kept.
FRAME_WHOLE_LIMIT = 64 * 1024
FRAME_PREVIEW = 1024
_PREVIEW_NODES = 64  # values shown in a preview, at most
_PREVIEW_DEPTH = 8
_PREVIEW_STRING = 256  # characters kept of each string
ELLIPSIS = "…"


def decode_frame(raw: str | bytes) -> Any:
    """The JSON value of a frame as the stand-in decodes it (binary frames as UTF-8), or
    ``None`` when it is not JSON (or nested too deeply to decode)."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None


def preview_value(value: Any) -> Any:
    """A small copy of a decoded JSON value for the log: at most 64 values, 8 levels and
    256 characters per string; what is left out is marked with "…" (a trailing "…" item of
    an array, a "…" key of an object giving the number of keys left out)."""
    budget = [_PREVIEW_NODES]

    def shrink(item: Any, depth: int) -> Any:
        budget[0] -= 1
        if isinstance(item, str):
            return item if len(item) <= _PREVIEW_STRING else item[:_PREVIEW_STRING] + ELLIPSIS
        if not isinstance(item, (dict, list)):
            return item
        if depth >= _PREVIEW_DEPTH:
            return ELLIPSIS
        if isinstance(item, list):
            out: list[Any] = []
            for element in item:
                if budget[0] <= 0:
                    out.append(ELLIPSIS)
                    break
                out.append(shrink(element, depth + 1))
            return out
        result: dict[str, Any] = {}
        for count, (key, element) in enumerate(item.items()):
            if budget[0] <= 0:
                result[ELLIPSIS] = f"{len(item) - count} more keys"
                break
            result[key] = shrink(element, depth + 1)
        return result

    return shrink(value, 0)


def frame_preview(raw: str | bytes) -> str | bytes:
    """The first ``FRAME_PREVIEW`` characters (bytes) of a frame too long to keep whole."""
    return raw[:FRAME_PREVIEW]

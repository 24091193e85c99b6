"""Warnings for the caller of an SDK call, named at the caller's own line.

An async call warns from inside the package, often several frames down: the warning names
the first frame outside it (the caller's line when it awaited the call; asyncio's when the
call runs as a task of its own). A sync call runs in the loop thread, where no frame is the
caller's: the sync facade sets :data:`RELAY` for the call, and the warning is issued in the
calling thread instead, at the caller's line there.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["RELAY", "warn_caller", "warn_outside"]

RELAY: ContextVar[Callable[[str, type[Warning]], None] | None] = ContextVar(
    "lmstudio_async_warning_relay", default=None
)
"""Set (by the sync facade) for a call whose warnings belong to another thread."""

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def warn_outside(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` naming the first frame, from the caller of this, outside the package."""
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 names that frame
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


def warn_caller(message: str, category: type[Warning]) -> None:
    """Warn the caller of the current SDK call (in its thread, for a sync call)."""
    relay = RELAY.get()
    if relay is not None:
        relay(message, category)
    else:
        warn_outside(message, category)

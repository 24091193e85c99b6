"""Shared helpers of the async client tests (also used by their sync mirrors)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lmstudio_async.testing import ThreadedStandInServer

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"
NOMIC = "text-embedding-nomic-embed-text-v1.5"


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def loaded_ids(server: ThreadedStandInServer) -> list[str]:
    """Identifiers of the stand-in's loaded instances, in load order."""
    return [i.identifier for i in server.loaded_instances()]

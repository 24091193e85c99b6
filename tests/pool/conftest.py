"""Shared set-up of the model-pool tests: a catalogue of equal-size models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

SIZE = 1_000_000_000
MODEL_BYTES = 1_051_200_000  # what the stand-in estimates for one of them (default context)
EMBED_BYTES = 101_280_000
KEYS = [f"m{i}" for i in range(6)]


def catalog() -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = [
        {
            "type": "llm",
            "modelKey": key,
            "displayName": key.upper(),
            "path": f"test/{key}/{key}.gguf",
            "format": "gguf",
            "sizeBytes": SIZE,
            "maxContextLength": 2048,
        }
        for key in KEYS
    ]
    models.append(
        {
            "type": "embedding",
            "modelKey": "e0",
            "displayName": "E0",
            "path": "test/e0/e0.gguf",
            "format": "gguf",
            "sizeBytes": 100_000_000,
            "maxContextLength": 512,
        }
    )
    return models


def budget_for(n: int) -> int:
    """A budget with room for ``n`` models and not ``n + 1``."""
    return n * MODEL_BYTES + MODEL_BYTES // 2


def standin(**options: Any) -> pytest.MarkDecorator:
    options.setdefault("catalog", catalog())
    options.setdefault("memory_gb", 16)
    options.setdefault("load_seconds", 0.05)
    options.setdefault("tokens_per_second", 2000)
    return pytest.mark.lmstudio_server(**options)


def loaded_keys(server: ThreadedStandInServer) -> list[str]:
    return sorted(i.model_key for i in server.loaded_instances())


@pytest.fixture
async def client(lmstudio_server: ThreadedStandInServer) -> AsyncIterator[lms.AsyncClient]:
    async with lms.AsyncClient(lmstudio_server.host) as c:
        yield c


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (polling) until ``condition()`` holds; fail the test after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {seconds}s")

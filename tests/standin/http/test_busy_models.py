"""A model doing work is not idle: its TTL does not run and auto-evict waits for it, whichever
interface the work came from; an explicit unload mid-request is an error, never a short
success; and just-in-time loads from HTTP and WebSocket share one queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer

from .._wire import RawClient, load_param, messages, stack
from ._http import call

SMOL = "smollm2-135m-instruct"
LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
LONG_PROMPT = " ".join(f"w{i}" for i in range(1000))


def _chat(model: str, content: str = "Tell me about harbors", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")


def _busy(server: StandInServer, key: str) -> bool:
    return any(i.model_key == key for i in server.loaded_instances())


# --- the idle TTL -----------------------------------------------------------------------------


@pytest.mark.lmstudio_server(tokens_per_second=400)
async def test_an_http_request_keeps_its_jit_model_from_expiring(server: StandInServer) -> None:
    """ttl 1 s, and 10 s pass (simulated) while the request processes its prompt and
    generates: the model stays, the answer is whole, and the idle timer starts afresh."""
    request = asyncio.create_task(
        call(
            server.url,
            "POST",
            "/v1/chat/completions",
            _chat(SMOL, LONG_PROMPT, ttl=1, max_tokens=20),
        )
    )
    await _until(lambda: _busy(server, SMOL))
    await asyncio.sleep(0.05)  # prompt processing (1000 tokens at 4000 a second)
    server.advance_clock(10)
    await asyncio.sleep(0.1)  # generation, past the sweeper's turn
    server.advance_clock(10)
    status, reply = await request
    assert status == 200, reply
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 20
    [inst] = server.loaded_instances()  # the idle timer restarted when the request ended
    server.advance_clock(0.9)
    assert server.loaded_instances() == [inst]
    server.advance_clock(0.2)
    assert server.loaded_instances() == []


@pytest.mark.lmstudio_server(tokens_per_second=200)
async def test_a_websocket_prediction_keeps_its_model_from_expiring(
    server: StandInServer, client: RawClient
) -> None:
    llm = await client.connect("llm")
    await llm.channel("loadModel", load_param(SMOL, ttlMs=1000))
    param = {
        "modelSpecifier": {"type": "query", "query": {"identifier": SMOL}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        "predictionConfigStack": stack(
            **{"llm.prediction.maxPredictedTokens": {"checked": True, "value": 30}}
        ),
    }
    channel = await llm.open_channel("predict", param)
    await asyncio.sleep(0.05)
    server.advance_clock(60)
    frames = await llm.collect(channel)
    [done] = [m for m in messages(frames) if m["type"] == "success"]
    assert done["stats"]["stopReason"] == "maxPredictedTokensReached"
    assert done["stats"]["predictedTokensCount"] == 30
    server.advance_clock(0.9)
    assert len(server.loaded_instances()) == 1
    server.advance_clock(0.2)
    assert server.loaded_instances() == []
    await llm.ws.close()

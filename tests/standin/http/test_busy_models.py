"""A model doing work is not idle: its TTL does not run and auto-evict waits for it, whichever
interface the work came from; an explicit unload mid-request is an error, never a short
success; and just-in-time loads from HTTP and WebSocket share one queue."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from lmstudio_async.testing import StandInServer

from .._wire import RawClient, load_param, messages, stack
from ._http import call, stream

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


# --- an explicit unload mid-request -------------------------------------------------------------

UNLOAD_CASES = [
    ("/v1/chat/completions", _chat(LLAMA, max_tokens=100)),
    ("/v1/completions", {"model": LLAMA, "prompt": "Once", "max_tokens": 100}),
    ("/v1/responses", {"model": LLAMA, "input": "Tell me a story", "max_output_tokens": 100}),
    ("/api/v0/chat/completions", _chat(LLAMA, max_tokens=100)),
    ("/api/v1/chat", {"model": LLAMA, "input": "Tell me a story", "max_output_tokens": 100}),
]


async def _unload_soon(client: RawClient) -> None:
    """Unload the model over WebSocket (as another client would) once generation runs."""
    llm = await client.connect("llm")
    await asyncio.sleep(0.15)
    await llm.result("unloadModel", {"identifier": LLAMA})
    await llm.ws.close()


@pytest.mark.lmstudio_server(tokens_per_second=50)
@pytest.mark.parametrize(("path", "body"), UNLOAD_CASES, ids=[c[0] for c in UNLOAD_CASES])
async def test_an_unload_mid_request_is_an_error_not_a_short_answer(
    server: StandInServer, client: RawClient, path: str, body: dict[str, Any]
) -> None:
    server.preload(LLAMA)
    (status, reply), _ = await asyncio.gather(
        call(server.url, "POST", path, body), _unload_soon(client)
    )
    assert status == 503, reply
    error = reply["error"]
    assert "unloaded during the request" in error["message"]
    assert error["code"] == "model_unloaded"
    assert error["type"] == ("internal_error" if path == "/api/v1/chat" else "server_error")


@pytest.mark.lmstudio_server(tokens_per_second=50)
async def test_an_unload_mid_stream_ends_the_stream_with_an_error(
    server: StandInServer, client: RawClient
) -> None:
    server.preload(LLAMA)
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="lm-studio", max_retries=0, timeout=20
    ) as api:

        async def chat() -> list[Any]:
            chunks = []
            stream = await api.chat.completions.create(
                model=LLAMA,
                max_tokens=100,
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Tell me a story"}],
            )
            async for chunk in stream:  # the openai client raises on the error chunk
                chunks.append(chunk)
            return chunks

        with pytest.raises(openai.APIError, match="unloaded during the request"):
            await asyncio.gather(chat(), _unload_soon(client))
    server.preload(LLAMA)
    body = {"model": LLAMA, "input": "Tell me a story", "max_output_tokens": 100, "stream": True}
    (events, _) = await asyncio.gather(
        stream(server.url, "/v1/responses", body), _unload_soon(client)
    )
    name, last = events[-1]
    assert name == "response.failed"
    assert last["response"]["status"] == "failed"
    assert "unloaded" in last["response"]["error"]["message"]
    assert "response.completed" not in [n for n, _ in events]
    server.preload(LLAMA)
    (events, _) = await asyncio.gather(
        stream(server.url, "/api/v1/chat", body), _unload_soon(client)
    )
    names = [n for n, _ in events]
    assert names[-2:] == ["error", "chat.end"]
    assert events[-2][1]["error"]["code"] == "model_unloaded"
    assert events[-1][1]["result"]["stats"]["total_output_tokens"] < 100

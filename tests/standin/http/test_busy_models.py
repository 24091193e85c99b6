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


# --- auto-evict waits for work; one queue for just-in-time loads --------------------------------


def _get_or_load(model: str) -> dict[str, Any]:
    return {"identifier": model, "loadTtlMs": 600_000, "loadConfigStack": stack()}


def _jit(server: StandInServer) -> list[str]:
    return [i.identifier for i in server.loaded_instances() if i.jit]


@pytest.mark.lmstudio_server(tokens_per_second=100)
async def test_a_jit_load_waits_for_the_work_on_the_model_it_evicts(
    server: StandInServer,
) -> None:
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=20))
    )
    await _until(lambda: _busy(server, SMOL))
    await asyncio.sleep(0.05)  # generating (20 tokens: 0.2 s)
    status, vectors = await call(
        server.url, "POST", "/v1/embeddings", {"model": NOMIC, "input": "x"}
    )
    assert chat.done()  # the embedding model was loaded once the chat had ended
    assert status == 200, vectors
    status, reply = await chat
    assert status == 200, reply
    assert reply["usage"]["completion_tokens"] == 20
    assert reply["choices"][0]["finish_reason"] == "length"
    assert _jit(server) == [NOMIC]


@pytest.mark.lmstudio_server(tokens_per_second=100)
async def test_get_or_load_waits_for_http_work_on_the_model_it_evicts(
    server: StandInServer, client: RawClient
) -> None:
    emb = await client.connect("embedding")
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=20))
    )
    await _until(lambda: _busy(server, SMOL))
    frames = await emb.channel("getOrLoad", _get_or_load(NOMIC))
    assert chat.done()
    kinds = [m["type"] for m in messages(frames)]
    assert kinds[:2] == ["startLoading", "unloadingOtherJITModel"]
    assert kinds[-1] == "loadSuccess"
    status, reply = await chat
    assert status == 200, reply
    assert reply["usage"]["completion_tokens"] == 20
    assert _jit(server) == [NOMIC]
    await emb.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_http_joins_a_get_or_load_of_the_same_model(
    server: StandInServer, client: RawClient
) -> None:
    llm = await client.connect("llm")
    channel = await llm.open_channel("getOrLoad", _get_or_load(SMOL))
    await asyncio.sleep(0.1)  # the WebSocket load is in progress
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=3)
    )
    assert status == 200, reply
    assert reply["model"] == SMOL  # not a second instance, SMOL:2
    frames = await llm.collect(channel)
    assert messages(frames)[-1]["type"] == "loadSuccess"
    assert _jit(server) == [SMOL]
    await llm.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_an_http_jit_load_queues_behind_a_get_or_load_and_evicts_it(
    server: StandInServer, client: RawClient
) -> None:
    llm = await client.connect("llm")
    channel = await llm.open_channel("getOrLoad", _get_or_load(SMOL))
    await asyncio.sleep(0.1)
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", _chat(LLAMA, max_tokens=3)
    )
    assert status == 200, reply
    frames = await llm.collect(channel)
    assert messages(frames)[-1]["type"] == "loadSuccess"
    assert _jit(server) == [LLAMA]  # at most one JIT model
    await llm.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_get_or_load_joins_an_http_jit_load_of_the_same_model(
    server: StandInServer, client: RawClient
) -> None:
    llm = await client.connect("llm")
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=3))
    )
    await asyncio.sleep(0.1)  # the HTTP load is in progress
    frames = await llm.channel("getOrLoad", _get_or_load(SMOL))
    assert [m["type"] for m in messages(frames)] == ["alreadyLoaded"]
    assert messages(frames)[0]["info"]["identifier"] == SMOL
    status, _reply = await chat
    assert status == 200
    assert _jit(server) == [SMOL]
    await llm.ws.close()


def _predict(model: str, tokens: int) -> dict[str, Any]:
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": model}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        "predictionConfigStack": stack(
            **{"llm.prediction.maxPredictedTokens": {"checked": True, "value": tokens}}
        ),
    }


@pytest.mark.lmstudio_server(tokens_per_second=20, load_seconds=0.05)
async def test_a_jit_load_evicts_a_busy_instance_after_the_grace(
    server: StandInServer, client: RawClient
) -> None:
    """A WebSocket prediction of 10 s keeps SMOL busy: a JIT load of LLAMA waits the grace
    (0.3 s here), then evicts SMOL anyway; the prediction ends with ``modelUnloaded``."""
    server.jit_evict_grace = 0.3
    llm = await client.connect("llm")
    frames = await llm.channel("getOrLoad", _get_or_load(SMOL))
    assert messages(frames)[-1]["type"] == "loadSuccess"
    channel = await llm.open_channel("predict", _predict(SMOL, 200))
    await _until(lambda: server.open_channel_count(endpoint="predict") == 1)
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(1.5):
        status, reply = await call(
            server.url, "POST", "/v1/chat/completions", _chat(LLAMA, max_tokens=3)
        )
        frames = await llm.collect(channel)
    assert status == 200, reply
    assert asyncio.get_running_loop().time() - started >= 0.3  # it waited the grace
    [done] = [m for m in messages(frames) if m["type"] == "success"]
    assert done["stats"]["stopReason"] == "modelUnloaded"
    assert _jit(server) == [LLAMA]
    await llm.ws.close()


@pytest.mark.lmstudio_server(tokens_per_second=50)
async def test_turning_auto_evict_off_while_a_jit_load_waits_unmarks_its_victims(
    server: StandInServer,
) -> None:
    """SMOL is marked for eviction while the load of NOMIC waits for its work; auto-evict is
    turned off meanwhile: NOMIC loads alongside, and SMOL is no longer on its way out (a
    request for it uses it rather than loading a copy, SMOL:2)."""
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=30))
    )
    await _until(lambda: _busy(server, SMOL))
    embed = asyncio.create_task(
        call(server.url, "POST", "/v1/embeddings", {"model": NOMIC, "input": "x"})
    )
    await asyncio.sleep(0.1)  # NOMIC's load waits for the chat on SMOL
    server.jit_evict = False
    status, vectors = await embed
    assert status == 200, vectors
    assert (await chat)[0] == 200
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=3)
    )
    assert status == 200, reply
    assert reply["model"] == SMOL
    assert sorted(_jit(server)) == sorted([SMOL, NOMIC])


@pytest.mark.lmstudio_server(tokens_per_second=50, load_seconds=0.05)
async def test_a_second_get_or_load_of_a_model_takes_its_turn_and_finds_it_loaded(
    server: StandInServer, client: RawClient
) -> None:
    """SMOL is busy for 0.4 s; two getOrLoads of LLAMA wait for it in turn: the second
    loads no copy alongside SMOL (two JIT models) but answers alreadyLoaded once the first
    has loaded LLAMA, and nothing evicts that instance."""
    x, a, b = [await client.connect("llm") for _ in range(3)]
    await x.channel("getOrLoad", _get_or_load(SMOL))
    busy = await x.open_channel("predict", _predict(SMOL, 20))
    await _until(lambda: server.open_channel_count(endpoint="predict") == 1)
    first = asyncio.create_task(a.channel("getOrLoad", _get_or_load(LLAMA)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(b.channel("getOrLoad", _get_or_load(LLAMA)))
    await asyncio.sleep(0.1)
    assert _jit(server) == [SMOL]  # both wait for SMOL's work
    first_kinds = [m["type"] for m in messages(await first)]
    assert first_kinds[-1] == "loadSuccess"
    [reply] = messages(await second)
    assert (reply["type"], reply["info"]["identifier"]) == ("alreadyLoaded", LLAMA)
    [done] = [m for m in messages(await x.collect(busy)) if m["type"] == "success"]
    assert done["stats"]["stopReason"] == "maxPredictedTokensReached"
    assert _jit(server) == [LLAMA]
    for sock in (x, a, b):
        await sock.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.4)
async def test_http_joiners_of_a_cancelled_get_or_load_load_the_model_themselves(
    server: StandInServer, client: RawClient
) -> None:
    """An HTTP request joins a getOrLoad of LLAMA; that client cancels its load: the HTTP
    request (which cancelled nothing) loads LLAMA itself and is answered."""
    llm = await client.connect("llm")
    channel = await llm.open_channel("getOrLoad", _get_or_load(LLAMA))
    await asyncio.sleep(0.1)  # the WebSocket load is in progress
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(LLAMA, max_tokens=3))
    )
    await asyncio.sleep(0.1)  # the request has joined it
    await llm.send({"type": "channelSend", "channelId": channel, "message": {"type": "cancel"}})
    frames = await llm.collect(channel)
    assert frames[-1]["type"] == "channelError"
    status, reply = await chat
    assert status == 200, reply
    assert reply["model"] == LLAMA
    assert _jit(server) == [LLAMA]
    await llm.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.4)
async def test_a_client_that_gave_up_while_waiting_for_a_jit_load_ends_quietly(
    server: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Streaming requests join a JIT load, and their clients give up before it ends: their
    handlers end without aiohttp logging a failed write to the closed connection."""
    first = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(LLAMA, max_tokens=2))
    )
    await _until(lambda: server.memory_used_bytes() > 0)  # the load is in progress

    async def give_up(path: str, body: dict[str, Any]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await stream(server.url, path, body)

    body = {"model": LLAMA, "input": "hi", "stream": True}
    await asyncio.gather(
        give_up("/v1/chat/completions", _chat(LLAMA, max_tokens=2, stream=True)),
        give_up("/api/v1/chat", body),
    )
    assert (await first)[0] == 200
    await asyncio.sleep(0.05)  # the joiners' handlers end
    assert [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"] == []


@pytest.mark.lmstudio_server(tokens_per_second=20, load_seconds=0.05)
async def test_after_the_grace_http_work_ends_with_503_and_requests_for_the_victim_queue(
    server: StandInServer, client: RawClient
) -> None:
    """An HTTP chat keeps SMOL busy for 10 s; a getOrLoad of LLAMA evicts SMOL after the
    grace: the chat ends with 503 model_unloaded. A request for SMOL made during the grace
    queues for a load of its own after LLAMA's (and then evicts LLAMA)."""
    server.jit_evict_grace = 0.3
    chat = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=200))
    )
    await _until(lambda: _busy(server, SMOL))
    llm = await client.connect("llm")
    load = asyncio.create_task(llm.channel("getOrLoad", _get_or_load(LLAMA)))
    await asyncio.sleep(0.1)  # SMOL is on its way out
    again = asyncio.create_task(
        call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, max_tokens=2))
    )
    async with asyncio.timeout(1.5):
        status, reply = await chat
        assert status == 503, reply
        assert reply["error"]["code"] == "model_unloaded"
        assert messages(await load)[-1]["type"] == "loadSuccess"
        status, reply = await again
    assert status == 200, reply
    assert _jit(server) == [SMOL]
    await llm.ws.close()

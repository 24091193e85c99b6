"""One state behind every interface: what one interface changes, the others see, and the
same input gives the same output over WebSocket (this SDK) and over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import StandInServer

from .._wire import RawClient, messages, stack
from ._http import call, stream

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
VLM = "mobilevlm_v2-1.7b"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about lighthouses and ships"},
]


async def test_rest_load_is_seen_and_unloaded_by_the_sdk(server: StandInServer) -> None:
    status, loaded = await call(server.url, "POST", "/api/v1/models/load", {"model": SMOL})
    assert status == 200
    async with lms.AsyncClient(server.host) as client:
        [handle] = await client.llm.list_loaded()
        assert handle.identifier == loaded["instance_id"]
        assert handle.model_key == SMOL
        await client.llm.unload(handle.identifier)
    status, models = await call(server.url, "GET", "/api/v1/models")
    assert all(m["loaded_instances"] == [] for m in models["models"])


async def test_sdk_load_is_listed_over_http(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        await client.llm.load(SMOL, "my-small", config={"context_length": 2048})
        await client.embedding.load(NOMIC)
        _, openai_models = await call(server.url, "GET", "/v1/models")
        _, v1_models = await call(server.url, "GET", "/api/v1/models")
        _, v0_model = await call(server.url, "GET", f"/api/v0/models/{SMOL}")
        await client.llm.unload("my-small")
        _, after = await call(server.url, "GET", "/v1/models")
    assert openai_models["data"][0]["id"] == "my-small"
    by_key = {m["key"]: m for m in v1_models["models"]}
    assert [(i["id"], i["config"]["context_length"]) for i in by_key[SMOL]["loaded_instances"]] == [
        ("my-small", 2048)
    ]
    assert [i["id"] for i in by_key[NOMIC]["loaded_instances"]] == [NOMIC]
    assert (v0_model["state"], v0_model["loaded_context_length"]) == ("loaded", 2048)
    assert "my-small" not in [m["id"] for m in after["data"]]


async def test_http_requests_use_an_sdk_loaded_instance_by_identifier(
    server: StandInServer,
) -> None:
    async with lms.AsyncClient(server.host) as client:
        await client.llm.load(SMOL, "writer")
        status, reply = await call(
            server.url,
            "POST",
            "/v1/chat/completions",
            {"model": "writer", "messages": CHAT},
        )
        assert status == 200
        assert reply["model"] == "writer"
        [inst] = server.loaded_instances()
        assert not inst.jit  # no JIT load happened: the loaded identifier was used


async def test_http_jit_load_evicts_a_websocket_jit_instance(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        await client.llm.model(SMOL)  # getOrLoad: a JIT instance
        await client.llm.load(VLM, "explicit")  # not JIT: never auto-evicted
        [smol] = [i for i in server.loaded_instances() if i.model_key == SMOL]
        assert smol.jit
        status, _ = await call(
            server.url, "POST", "/v1/chat/completions", {"model": LLAMA, "messages": CHAT}
        )
        assert status == 200
        loaded = {i.identifier: i.jit for i in server.loaded_instances()}
        assert loaded == {"explicit": False, LLAMA: True}
        # ... and the reverse: a websocket getOrLoad evicts the HTTP JIT instance
        await client.llm.model(SMOL)
        loaded = {i.identifier: i.jit for i in server.loaded_instances()}
        assert loaded == {"explicit": False, SMOL: True}


@pytest.mark.lmstudio_server(jit_evict=False)
async def test_without_auto_evict_jit_instances_accumulate(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        await client.llm.model(SMOL)
        for model in (LLAMA, VLM):
            status, _ = await call(
                server.url, "POST", "/v1/chat/completions", {"model": model, "messages": CHAT}
            )
            assert status == 200
    assert sorted(i.identifier for i in server.loaded_instances()) == [LLAMA, VLM, SMOL]


@pytest.mark.lmstudio_server(jit_evict=False)  # keep both JIT instances
async def test_ttl_from_a_request_expires_on_the_simulated_clock(server: StandInServer) -> None:
    request = {"model": SMOL, "messages": CHAT, "ttl": 300}
    status, _ = await call(server.url, "POST", "/v1/chat/completions", request)
    assert status == 200
    status, _ = await call(
        server.url, "POST", "/v1/embeddings", {"model": NOMIC, "input": "x", "ttl": 30}
    )
    assert status == 200
    assert {i.identifier: i.ttl_ms for i in server.loaded_instances()} == {
        SMOL: 300_000,
        NOMIC: 30_000,
    }
    server.advance_clock(200)
    # a request naming the loaded model resets its idle timer (its ttl stays as loaded)
    status, _ = await call(server.url, "POST", "/api/v0/chat/completions", {**request, "ttl": 5})
    assert status == 200
    server.advance_clock(200)
    assert [i.identifier for i in server.loaded_instances()] == [SMOL]
    server.advance_clock(101)
    assert server.loaded_instances() == []
    async with lms.AsyncClient(server.host) as client:
        assert await client.llm.list_loaded() == []


async def test_default_jit_ttl_is_an_hour(server: StandInServer) -> None:
    status, _ = await call(server.url, "POST", "/api/v1/chat", {"model": SMOL, "input": "hi"})
    assert status == 200
    [inst] = server.loaded_instances()
    assert (inst.jit, inst.ttl_ms) == (True, 3_600_000)
    server.advance_clock(3599)
    assert len(server.loaded_instances()) == 1
    server.advance_clock(2)
    assert server.loaded_instances() == []


@pytest.mark.lmstudio_server(jit_ttl=90)
async def test_jit_ttl_option(server: StandInServer) -> None:
    status, _ = await call(
        server.url, "POST", "/v1/completions", {"model": SMOL, "prompt": "Once upon"}
    )
    assert status == 200
    [inst] = server.loaded_instances()
    assert inst.ttl_ms == 90_000
    server.advance_clock(91)
    assert server.loaded_instances() == []


async def test_same_input_same_output_on_every_interface(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        llm = await client.llm.model(LLAMA)
        for config, body in [
            ({}, {}),
            ({"temperature": 0.2, "max_tokens": 7}, {"temperature": 0.2, "max_tokens": 7}),
            (
                {"top_k": 5, "top_p": 0.5, "stop_strings": ["e"]},
                {"top_k": 5, "top_p": 0.5, "stop": "e"},
            ),
        ]:
            ws = await llm.respond(CHAT, config=config)
            status, reply = await call(
                server.url,
                "POST",
                "/v1/chat/completions",
                {"model": LLAMA, "messages": CHAT, **body},
            )
            assert status == 200
            assert reply["choices"][0]["message"]["content"] == ws.content
            assert reply["usage"]["prompt_tokens"] == ws.stats.prompt_tokens_count
            assert reply["usage"]["completion_tokens"] == ws.stats.predicted_tokens_count
            _, v0 = await call(
                server.url,
                "POST",
                "/api/v0/chat/completions",
                {"model": LLAMA, "messages": CHAT, **body},
            )
            assert v0["stats"]["stop_reason"] == ws.stats.stop_reason
            assert v0["choices"][0]["message"]["content"] == ws.content
        raw = await llm.complete("The old harbor")
        _, completion = await call(
            server.url, "POST", "/v1/completions", {"model": LLAMA, "prompt": "The old harbor"}
        )
        assert completion["choices"][0]["text"] == raw.content
        # REST v1 chat: one user message (plus system prompt)
        ws_v1 = await llm.respond(CHAT)
        _, v1 = await call(
            server.url,
            "POST",
            "/api/v1/chat",
            {"model": LLAMA, "input": CHAT[1]["content"], "system_prompt": CHAT[0]["content"]},
        )
        assert v1["output"][0]["content"] == ws_v1.content
        assert v1["stats"]["input_tokens"] == ws_v1.stats.prompt_tokens_count
        emb = await client.embedding.model(NOMIC)
        vectors = await emb.embed(["a quiet harbor", "loud markets"])
        _, http = await call(
            server.url,
            "POST",
            "/v1/embeddings",
            {"model": NOMIC, "input": ["a quiet harbor", "loud markets"]},
        )
        assert [d["embedding"] for d in http["data"]] == vectors
        assert http["usage"]["prompt_tokens"] == sum(
            [await emb.count_tokens("a quiet harbor"), await emb.count_tokens("loud markets")]
        )


@pytest.mark.lmstudio_server(tokens_per_second=400.0, memory_gb=6.0)
async def test_many_concurrent_requests_across_interfaces(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        llm = await client.llm.load(SMOL, "shared")
        emb = await client.embedding.load(NOMIC)

        async def over_ws(n: int) -> str:
            return (await llm.respond(f"question {n} about rivers")).content

        async def over_openai(n: int) -> str:
            _, reply = await call(
                server.url,
                "POST",
                "/v1/chat/completions",
                {
                    "model": "shared",
                    "messages": [{"role": "user", "content": f"question {n} about rivers"}],
                },
            )
            return str(reply["choices"][0]["message"]["content"])

        async def over_v1(n: int) -> str:
            events = await stream(
                server.url,
                "/api/v1/chat",
                {
                    "model": "shared",
                    "input": f"question {n} about rivers",
                    "stream": True,
                    "store": False,
                },
            )
            return str(events[-1][1]["result"]["output"][0]["content"])

        async def embed(n: int) -> list[float]:
            _, body = await call(
                server.url, "POST", "/api/v0/embeddings", {"model": NOMIC, "input": f"text {n}"}
            )
            vector: list[float] = body["data"][0]["embedding"]
            assert vector == await emb.embed(f"text {n}")
            return vector

        results = await asyncio.wait_for(
            asyncio.gather(
                *(over_ws(n) for n in range(6)),
                *(over_openai(n) for n in range(6)),
                *(over_v1(n) for n in range(6)),
                *(embed(n) for n in range(6)),
            ),
            30,
        )
    ws, oa, v1 = results[0:6], results[6:12], results[12:18]
    assert ws == oa == v1
    assert len(set(ws)) == 6
    assert sorted(i.identifier for i in server.loaded_instances()) == ["shared", NOMIC]


async def test_tool_calls_match_the_websocket_predict_channel(
    server: StandInServer, client: RawClient
) -> None:
    qwen = "qwen2.5-7b-instruct-1m"  # trained for tool use
    server.preload(qwen)
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    question = "What is 12 plus 30?"
    llm = await client.connect("llm")
    frames = await llm.channel(
        "predict",
        {
            "modelSpecifier": {"type": "query", "query": {"identifier": qwen}},
            "history": {
                "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]
            },
            "predictionConfigStack": stack(
                **{"llm.prediction.tools": {"type": "toolArray", "tools": [add]}}
            ),
        },
    )
    packets = messages(frames)
    ws_text = "".join(p["fragment"]["content"] for p in packets if p["type"] == "fragment")
    ws_calls = [p["toolCallRequest"] for p in packets if p["type"] == "toolCallGenerationEnd"]
    ws_stats = packets[-1]["stats"]
    status, reply = await call(
        server.url,
        "POST",
        "/v1/chat/completions",
        {"model": qwen, "messages": [{"role": "user", "content": question}], "tools": [add]},
    )
    assert status == 200
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert ws_stats["stopReason"] == "toolCalls"
    assert choice["message"]["content"] == ws_text
    http_calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ]
    assert http_calls == [(c["id"], c["name"], c["arguments"]) for c in ws_calls]
    assert http_calls[0][1:] == ("add", {"a": 12, "b": 30})
    assert reply["usage"]["completion_tokens"] == ws_stats["predictedTokensCount"]
    assert reply["usage"]["prompt_tokens"] == ws_stats["promptTokensCount"]

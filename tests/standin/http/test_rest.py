"""LM Studio's native REST API (v0 and v1) on the stand-in, over plain HTTP."""

from __future__ import annotations

import pytest

from lmstudio_async.testing import StandInServer

from ._http import call, stream

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
VLM = "mobilevlm_v2-1.7b"


# --- REST v1: models, load, unload ----------------------------------------------------------------


async def test_v1_models_lists_downloads_with_their_loaded_instances(server: StandInServer) -> None:
    server.preload(SMOL, identifier="tiny", config={"llm.load.contextLength": 2048})
    status, body = await call(server.url, "GET", "/api/v1/models")
    assert status == 200
    by_key = {m["key"]: m for m in body["models"]}
    assert set(by_key) == {LLAMA, SMOL, NOMIC, VLM, "qwen2.5-7b-instruct-1m"}
    smol = by_key[SMOL]
    assert smol["loaded_instances"] == [
        {
            "id": "tiny",
            "config": {
                "context_length": 2048,
                "eval_batch_size": 2048,
                "parallel": 4,
                "flash_attention": False,
                "num_experts": 0,
                "offload_kv_cache_to_gpu": True,
            },
        }
    ]
    assert smol["type"] == "llm"
    assert smol["quantization"] == {"name": "Q8_0", "bits_per_weight": 8}
    assert smol["max_context_length"] == 8192
    assert by_key[VLM]["capabilities"] == {"vision": True, "trained_for_tool_use": False}
    nomic = by_key[NOMIC]
    assert nomic["type"] == "embedding"
    assert nomic["loaded_instances"] == []
    assert "capabilities" not in nomic
    assert "architecture" not in nomic


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_v1_load_is_an_explicit_load_with_flat_parameters(server: StandInServer) -> None:
    status, body = await call(
        server.url,
        "POST",
        "/api/v1/models/load",
        {"model": LLAMA, "context_length": 8192, "flash_attention": True, "echo_load_config": True},
    )
    assert status == 200, body
    assert body["type"] == "llm"
    assert body["instance_id"] == LLAMA
    assert body["status"] == "loaded"
    assert 0.2 <= body["load_time_seconds"] < 2
    assert body["load_config"] == {
        "context_length": 8192,
        "eval_batch_size": 2048,
        "flash_attention": True,
        "offload_kv_cache_to_gpu": True,
    }
    status, second = await call(server.url, "POST", "/api/v1/models/load", {"model": LLAMA})
    assert (status, second["instance_id"], "load_config" in second) == (200, f"{LLAMA}:2", False)
    loaded = server.loaded_instances()
    assert [(i.identifier, i.jit, i.ttl_ms, i.context_length) for i in loaded] == [
        (LLAMA, False, None, 8192),
        (f"{LLAMA}:2", False, None, 4096),
    ]
    status, emb = await call(
        server.url,
        "POST",
        "/api/v1/models/load",
        {"model": NOMIC, "context_length": 1024, "echo_load_config": True},
    )
    assert (status, emb["type"], emb["load_config"]) == (200, "embedding", {"context_length": 1024})


async def test_v1_unload(server: StandInServer) -> None:
    server.preload(SMOL, identifier="tiny")
    status, body = await call(server.url, "POST", "/api/v1/models/unload", {"instance_id": "tiny"})
    assert (status, body) == (200, {"instance_id": "tiny"})
    assert server.loaded_instances() == []
    status, body = await call(server.url, "POST", "/api/v1/models/unload", {"instance_id": "tiny"})
    assert status == 404
    assert body["error"]["type"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({}, 400, "missing_required_parameter", "model"),
        ({"model": 7}, 400, "invalid_type", "model"),
        ({"model": LLAMA, "context_length": "big"}, 400, "invalid_type", "context_length"),
        ({"model": LLAMA, "context_length": 0}, 400, "invalid_value", "context_length"),
        ({"model": LLAMA, "flash_attention": "yes"}, 400, "invalid_type", "flash_attention"),
        ({"model": LLAMA, "context_length": 10_000_000}, 400, "invalid_value", None),
        ({"model": "no-such-model"}, 404, "model_not_found", "model"),
    ],
)
async def test_v1_load_rejects_bad_input(
    server: StandInServer, body: dict[str, object], status: int, code: str, param: str | None
) -> None:
    got, answer = await call(server.url, "POST", "/api/v1/models/load", body)
    assert got == status
    error = answer["error"]
    assert error["code"] == code
    assert error.get("param") == param
    assert error["message"]
    assert error["type"] in ("invalid_request", "model_not_found")
    assert server.loaded_instances() == []


@pytest.mark.lmstudio_server(memory_gb=1.0)
async def test_v1_load_beyond_the_memory_budget(server: StandInServer) -> None:
    status, body = await call(server.url, "POST", "/api/v1/models/load", {"model": LLAMA})
    assert status == 400
    assert body["error"]["code"] == "model_load_failed"
    assert "insufficient memory" in body["error"]["message"]


# --- REST v1: chat --------------------------------------------------------------------------------


async def test_v1_chat_is_stateful(server: StandInServer) -> None:
    status, first = await call(
        server.url, "POST", "/api/v1/chat", {"model": SMOL, "input": "My favourite colour is teal"}
    )
    assert status == 200, first
    assert first["model_instance_id"] == SMOL
    [message] = first["output"]
    assert message["type"] == "message"
    assert message["content"]
    stats = first["stats"]
    assert stats["total_output_tokens"] > 0
    assert stats["reasoning_output_tokens"] == 0
    assert stats["model_load_time_seconds"] >= 0  # loaded just in time for this request
    assert first["response_id"].startswith("resp_")
    status, follow = await call(
        server.url,
        "POST",
        "/api/v1/chat",
        {"model": SMOL, "input": "Which colour?", "previous_response_id": first["response_id"]},
    )
    assert status == 200
    assert "model_load_time_seconds" not in follow["stats"]
    fresh_input = (
        await call(
            server.url,
            "POST",
            "/api/v1/chat",
            {"model": SMOL, "input": "Which colour?", "store": False},
        )
    )[1]
    assert "response_id" not in fresh_input
    # the follow-up's prompt held the whole first exchange
    assert follow["stats"]["input_tokens"] > (
        fresh_input["stats"]["input_tokens"]
        + first["stats"]["input_tokens"]
        + first["stats"]["total_output_tokens"]
        - 10
    )
    status, bad = await call(
        server.url,
        "POST",
        "/api/v1/chat",
        {"model": SMOL, "input": "x", "previous_response_id": "resp_unknown"},
    )
    assert (status, bad["error"]["param"]) == (400, "previous_response_id")


@pytest.mark.lmstudio_server(load_seconds=0.05)
async def test_v1_chat_stream_events(server: StandInServer) -> None:
    events = await stream(
        server.url,
        "/api/v1/chat",
        {
            "model": LLAMA,
            "input": "Describe the north " * 30,
            "stream": True,
            "system_prompt": "Be brief.",
        },
    )
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[:2] == ["chat.start", "model_load.start"]
    progress = [d["progress"] for n, d in events if n == "model_load.progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    after_load = names[names.index("model_load.end") :]
    assert after_load[:2] == ["model_load.end", "prompt_processing.start"]
    assert "prompt_processing.progress" in after_load  # a long prompt reports progress
    middle = after_load[after_load.index("prompt_processing.end") :]
    assert middle[:2] == ["prompt_processing.end", "message.start"]
    assert middle[-2:] == ["message.end", "chat.end"]
    assert set(middle[2:-2]) == {"message.delta"}
    text = "".join(d["content"] for n, d in events if n == "message.delta")
    result = events[-1][1]["result"]
    assert result["output"] == [{"type": "message", "content": text}]
    assert result["model_instance_id"] == LLAMA
    assert result["stats"]["total_output_tokens"] == len(middle) - 4
    again = await stream(
        server.url, "/api/v1/chat", {"model": LLAMA, "input": "hi", "stream": True}
    )
    assert not [n for n, _ in again if n is not None and n.startswith("model_load")]


async def test_v1_chat_rejects_what_the_stand_in_cannot_do(server: StandInServer) -> None:
    for extra, param in [
        ({"integrations": ["mcp/playwright"]}, "integrations"),
        ({"reasoning": "high"}, "reasoning"),
        ({"reasoning": "extreme"}, "reasoning"),
        ({"input": [{"type": "video"}]}, "input[0].type"),
    ]:
        status, body = await call(
            server.url, "POST", "/api/v1/chat", {"model": SMOL, "input": "hi", **extra}
        )
        assert (status, body["error"]["param"]) == (400, param), extra
    assert server.loaded_instances() == []


# --- REST v0 --------------------------------------------------------------------------------------


async def test_v0_models_with_load_state(server: StandInServer) -> None:
    status, body = await call(server.url, "GET", "/api/v0/models")
    assert status == 200
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert {m["state"] for m in body["data"]} == {"not-loaded"}
    assert by_id[VLM]["type"] == "vlm"
    assert by_id[NOMIC]["type"] == "embeddings"
    assert by_id[LLAMA] == {
        "id": LLAMA,
        "object": "model",
        "type": "llm",
        "publisher": "hugging-quants",
        "arch": "llama",
        "compatibility_type": "gguf",
        "quantization": "Q8_0",
        "state": "not-loaded",
        "max_context_length": 131072,
        "capabilities": ["tool_use"],
    }
    server.preload(LLAMA, identifier="chatty")
    status, one = await call(server.url, "GET", f"/api/v0/models/{LLAMA}")
    assert (status, one["state"], one["loaded_context_length"]) == (200, "loaded", 4096)
    status, same = await call(server.url, "GET", "/api/v0/models/chatty")
    assert (status, same["id"]) == (200, LLAMA)
    status, missing = await call(server.url, "GET", "/api/v0/models/nope/nothing")
    assert (status, missing["error"]["code"]) == (404, "model_not_found")


async def test_v0_inference_adds_lm_studio_stats(server: StandInServer) -> None:
    status, chat = await call(
        server.url,
        "POST",
        "/api/v0/chat/completions",
        {"model": SMOL, "messages": [{"role": "user", "content": "hello"}], "ttl": 300},
    )
    assert status == 200, chat
    assert chat["object"] == "chat.completion"
    assert chat["stats"]["stop_reason"] == "eosFound"
    assert chat["stats"]["tokens_per_second"] > 0
    assert chat["model_info"] == {
        "arch": "llama",
        "quant": "Q8_0",
        "format": "gguf",
        "context_length": 4096,
    }
    assert chat["runtime"]["supported_formats"] == ["gguf"]
    [inst] = server.loaded_instances()
    assert (inst.jit, inst.ttl_ms) == (True, 300_000)
    status, done = await call(
        server.url,
        "POST",
        "/api/v0/completions",
        {"model": SMOL, "prompt": "the meaning of life is", "max_tokens": 4, "stop": "\n"},
    )
    assert status == 200
    assert done["stats"]["stop_reason"] == "maxPredictedTokensReached"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 4
    status, emb = await call(
        server.url, "POST", "/api/v0/embeddings", {"model": NOMIC, "input": "Some text to embed"}
    )
    assert status == 200
    assert len(emb["data"][0]["embedding"]) == 768
    events = await stream(
        server.url,
        "/api/v0/chat/completions",
        {"model": SMOL, "messages": [{"role": "user", "content": "hello"}], "stream": True},
    )
    assert events[-1] == (None, "[DONE]")
    text = "".join(d["choices"][0]["delta"].get("content") or "" for _, d in events[:-1])
    assert text == chat["choices"][0]["message"]["content"]
    assert events[-2][1]["stats"]["stop_reason"] == "eosFound"


@pytest.mark.lmstudio_server(memory_gb=2.0)
async def test_jit_loads_respect_the_memory_budget_and_context_length(
    server: StandInServer,
) -> None:
    # REST v1 chat's context_length applies to its just-in-time load
    status, body = await call(
        server.url, "POST", "/api/v1/chat", {"model": SMOL, "input": "hi", "context_length": 1024}
    )
    assert status == 200, body
    [inst] = server.loaded_instances()
    assert (inst.context_length, inst.jit) == (1024, True)
    server.preload(VLM, identifier="resident")  # explicit: not evicted, takes most of the budget
    status, body = await call(
        server.url,
        "POST",
        "/v1/chat/completions",
        {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 400
    assert body["error"]["code"] == "model_load_failed"
    assert "insufficient memory" in body["error"]["message"]
    # the failed JIT load evicted nothing: the budget check comes first
    assert sorted(i.identifier for i in server.loaded_instances()) == ["resident", SMOL]

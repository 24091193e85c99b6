"""The OpenAI-compatible endpoints' request options, over plain HTTP: what ``/v1/responses``
takes and refuses, and how ``tool_choice`` forces a tool call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._catalog import default_catalog

from ._http import call, stream

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"


async def test_responses_accept_reasoning_and_refuse_tools(server: StandInServer) -> None:
    """LM Studio's responses page sends ``reasoning: {"effort": "low"}``; the stand-in takes
    it (no catalogue model reasons). Tools, function or Remote MCP, are not implemented."""
    base = {"model": LLAMA, "input": "Provide a prime number less than 50", "max_output_tokens": 8}
    status, reply = await call(
        server.url, "POST", "/v1/responses", {**base, "reasoning": {"effort": "low"}}
    )
    assert status == 200, reply
    assert reply["status"] == "incomplete"  # cut by max_output_tokens
    assert reply["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    function = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    mcp = {"type": "mcp", "server_label": "hf", "server_url": "https://huggingface.co/mcp"}
    for tool in (function, mcp):
        status, reply = await call(server.url, "POST", "/v1/responses", {**base, "tools": [tool]})
        assert status == 400, reply
        assert reply["error"]["code"] == "not_implemented"
        assert reply["error"]["param"] == "tools"


# --- tool_choice ----------------------------------------------------------------------------------

DELIVERY = {
    "type": "function",
    "function": {
        "name": "get_delivery_date",
        "description": "Get the delivery date for a customer's order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ORDER = "Give me the delivery date and time for order number 1017"


def _tool_chat(model: str, content: str, choice: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "tools": [WEATHER, DELIVERY],
        "tool_choice": choice,
        **extra,
    }


def _calls(reply: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    message = reply["choices"][0]["message"]
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or []
    ]


async def test_tool_choice_required_makes_the_model_call_a_tool(server: StandInServer) -> None:
    """LM Studio's changelog (0.3.15): "required" means the model must call tools. The
    message names no tool and fills no string parameter, so "auto" answers in text."""
    status, auto = await call(
        server.url, "POST", "/v1/chat/completions", _tool_chat(LLAMA, ORDER, "auto")
    )
    assert status == 200, auto
    assert auto["choices"][0]["finish_reason"] == "stop"
    assert _calls(auto) == []
    for path in ("/v1/chat/completions", "/api/v0/chat/completions"):
        status, reply = await call(server.url, "POST", path, _tool_chat(LLAMA, ORDER, "required"))
        assert status == 200, reply
        assert reply["choices"][0]["finish_reason"] == "tool_calls"
        assert _calls(reply) == [("get_weather", {"city": ""})]  # the first offered tool
    # a named function: that function, and only it
    named = {"type": "function", "function": {"name": "get_delivery_date"}}
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", _tool_chat(LLAMA, ORDER, named)
    )
    assert status == 200, reply
    assert _calls(reply) == [("get_delivery_date", {"order_id": ""})]
    status, reply = await call(
        server.url,
        "POST",
        "/v1/chat/completions",
        _tool_chat(LLAMA, "What is the weather in 'Oslo'?", named),
    )
    assert _calls(reply) == [("get_delivery_date", {"order_id": "Oslo"})]


async def test_tool_choice_required_also_after_tool_results(server: StandInServer) -> None:
    """With "auto" the model answers from the results; "required" calls again."""
    first = _tool_chat(LLAMA, "What is the weather in 'Oslo'?", "auto")
    status, reply = await call(server.url, "POST", "/v1/chat/completions", first)
    [call_] = reply["choices"][0]["message"]["tool_calls"]
    messages = [
        *first["messages"],
        reply["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call_["id"], "content": "sunny"},
    ]
    status, answer = await call(
        server.url, "POST", "/v1/chat/completions", {**first, "messages": messages}
    )
    assert status == 200, answer
    assert _calls(answer) == []
    assert "sunny" in answer["choices"][0]["message"]["content"]
    again = {**first, "messages": messages, "tool_choice": "required"}
    status, forced = await call(server.url, "POST", "/v1/chat/completions", again)
    assert status == 200, forced
    assert _calls(forced) == [("get_weather", {"city": "Oslo"})]


async def test_a_required_tool_call_streams_as_tool_call_deltas(server: StandInServer) -> None:
    body = _tool_chat(LLAMA, ORDER, "required", stream=True)
    events = await stream(server.url, "/v1/chat/completions", body)
    chunks = [data for _name, data in events if data != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    names = [t["function"]["name"] for d in deltas for t in d.get("tool_calls", []) if "id" in t]
    assert names == ["get_weather"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_required_is_llama_cpp_only(tmp_path: Path) -> None:
    """The changelog's "(llama.cpp only)": a GGUF model without tool training is made to
    call a tool too; an MLX model (format safetensors) is not forced."""
    catalog = [m for m in default_catalog() if m["modelKey"] in (SMOL, LLAMA)]
    mlx = {**next(m for m in catalog if m["modelKey"] == LLAMA), "format": "safetensors"}
    mlx.update(modelKey="llama-mlx", path="mlx-community/llama-mlx")
    mlx["indexedModelIdentifier"] = mlx["path"]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([*catalog, mlx]))
    async with StandInServer(0, catalog=path, load_seconds=0) as srv:
        status, reply = await call(
            srv.url, "POST", "/v1/chat/completions", _tool_chat(SMOL, ORDER, "required")
        )
        assert status == 200, reply
        assert _calls(reply) == [("get_weather", {"city": ""})]
        status, reply = await call(
            srv.url, "POST", "/v1/chat/completions", _tool_chat("llama-mlx", ORDER, "required")
        )
        assert status == 200, reply
        assert _calls(reply) == []


async def test_bad_tool_choices_are_refused(server: StandInServer) -> None:
    cases = [
        ({"type": "function", "function": {"name": "no_such_tool"}}, "tool_choice.function.name"),
        ({"type": "function", "function": {}}, "tool_choice.function.name"),
        ({"type": "function"}, "tool_choice.function"),
    ]
    for choice, param in cases:
        status, reply = await call(
            server.url, "POST", "/v1/chat/completions", _tool_chat(LLAMA, ORDER, choice)
        )
        assert status == 400, (choice, reply)
        assert reply["error"]["param"] == param, reply
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    body = _tool_chat(LLAMA, ORDER, "required", response_format=schema)
    status, reply = await call(server.url, "POST", "/v1/chat/completions", body)
    assert status == 400, reply
    assert reply["error"]["param"] == "tool_choice"
    # A call required of no tools (none given, or an empty list).
    for choice in ("required", {"type": "function", "function": {"name": "order"}}):
        for tools in (None, []):
            body = _tool_chat(LLAMA, ORDER, choice)
            if tools is None:
                del body["tools"]
            else:
                body["tools"] = tools
            status, reply = await call(server.url, "POST", "/v1/chat/completions", body)
            assert status == 400, (choice, tools, reply)
            assert reply["error"]["param"] == "tool_choice"
    assert server.loaded_instances() == []  # refused before any just-in-time load

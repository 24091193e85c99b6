"""HTTP errors as LM Studio sends them: status codes and error bodies, never a 500 for bad
input; API-token auth on every HTTP endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer

from ._http import call

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"

POSTS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/api/v0/chat/completions",
    "/api/v0/completions",
    "/api/v0/embeddings",
    "/api/v1/models/load",
    "/api/v1/models/unload",
    "/api/v1/chat",
]
GETS = ["/v1/models", "/api/v0/models", f"/api/v0/models/{LLAMA}", "/api/v1/models"]

# Bodies that are wrong for every POST endpoint, or for some: none may cause a 5xx.
BAD_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"\xff\xfe",
    *(
        json.dumps(body).encode()
        for body in [
            {},
            {"model": 5},
            {"model": ""},
            {"model": LLAMA, "messages": "hello"},
            {"model": LLAMA, "messages": []},
            {"model": LLAMA, "messages": [{"role": "wizard", "content": "x"}]},
            {"model": LLAMA, "messages": [{"role": "user", "content": 5}]},
            {"model": LLAMA, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            {"model": LLAMA, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "stop": [1]},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "ttl": -5},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "ttl": 1e308},
            {"model": LLAMA, "messages": [{"role": ["user"], "content": "x"}]},
            {"model": LLAMA, "messages": [{"role": {"x": 1}, "content": "x"}]},
            {"model": LLAMA, "input": [{"role": ["user"], "content": "x"}]},
            {"model": NOMIC, "input": "x", "ttl": 1e308},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "top_p": 3},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "n": 2},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            {"model": LLAMA, "messages": [{"role": "user", "content": "x"}], "tools": "all"},
            {
                "model": LLAMA,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema"},
            },
            {
                "model": LLAMA,
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{"}}],
                    }
                ],
            },
            {"model": LLAMA, "prompt": 5},
            {"model": LLAMA, "prompt": ["a", "b"]},
            {"model": NOMIC, "input": []},
            {"model": NOMIC, "input": [1, 2, 3]},
            {"model": NOMIC, "input": "x", "encoding_format": "hex"},
            {"model": LLAMA, "input": 5},
            {"model": LLAMA, "input": [{"type": "function_call_output"}]},
            {"model": LLAMA, "input": "x", "previous_response_id": 3},
            {"model": LLAMA, "context_length": -1},
            {"model": LLAMA, "echo_load_config": "yes"},
            {"instance_id": 5},
            {"instance_id": "nothing-loaded"},
            {"model": "no/such/model", "messages": [{"role": "user", "content": "x"}]},
        ]
    ),
]


def _is_error_body(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("message"), str)
        and body["error"]["message"] != ""
    )


@pytest.mark.lmstudio_server(memory_gb=4.0)
async def test_bad_input_never_causes_a_server_error(server: StandInServer) -> None:
    rejected = 0
    for path in POSTS:
        for raw in BAD_BODIES:
            status, body = await call(server.url, "POST", path, raw=raw)
            # a body wrong for one endpoint may be fine for another (unknown fields are ignored)
            assert status in (200, 400, 404), (path, raw, status, body)
            if status != 200:
                assert _is_error_body(body), (path, raw, body)
                rejected += 1
    assert rejected > len(POSTS) * len(BAD_BODIES) * 0.85


async def test_error_shapes(server: StandInServer) -> None:
    status, body = await call(server.url, "POST", "/v1/chat/completions", raw=b"{")
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "invalid_json"
    status, body = await call(server.url, "POST", "/v1/chat/completions", {"model": LLAMA})
    assert status == 400
    assert body["error"]["param"] == "messages"
    assert body["error"]["code"] == "missing_required_parameter"
    status, body = await call(
        server.url,
        "POST",
        "/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 404
    assert body["error"] == {
        "message": 'Model "nope" not found. Please specify a valid model.',
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    # REST v1 uses its own error vocabulary
    status, body = await call(server.url, "POST", "/api/v1/chat", {"input": "x"})
    assert status == 400
    assert body["error"] == {
        "type": "invalid_request",
        "message": "'model' is required",
        "code": "missing_required_parameter",
        "param": "model",
    }


async def test_unknown_endpoints_and_methods(server: StandInServer) -> None:
    status, body = await call(server.url, "GET", "/v1/nothing")
    assert status == 404
    assert body["error"]["message"] == "Unexpected endpoint or method. (GET /v1/nothing)"
    status, body = await call(server.url, "GET", "/v1/chat/completions")
    assert status == 405
    assert _is_error_body(body)
    status, body = await call(server.url, "POST", "/api/v1/models")
    assert status == 405
    assert _is_error_body(body)


@pytest.mark.lmstudio_server(jit=False)
async def test_without_jit_a_model_must_be_loaded_first(server: StandInServer) -> None:
    request = {"model": LLAMA, "messages": [{"role": "user", "content": "x"}]}
    status, body = await call(server.url, "POST", "/v1/chat/completions", request)
    assert status == 404
    assert body["error"]["code"] == "model_not_loaded"
    status, listed = await call(server.url, "GET", "/v1/models")
    assert listed["data"] == []  # without JIT only loaded models are listed
    server.preload(LLAMA)
    status, body = await call(server.url, "POST", "/v1/chat/completions", request)
    assert status == 200
    status, listed = await call(server.url, "GET", "/v1/models")
    assert [m["id"] for m in listed["data"]] == [LLAMA]


@pytest.mark.lmstudio_server(api_token=TOKEN)
async def test_every_http_endpoint_requires_the_token(server: StandInServer) -> None:
    for method, path in [*(("GET", p) for p in GETS), *(("POST", p) for p in POSTS)]:
        for token in (None, "sk-lm-abcd1234:wrongwrongwrongwrong", "lm-studio"):
            status, body = await call(server.url, method, path, {}, token=token)
            assert status == 401, (path, token)
            assert _is_error_body(body)
            error = body["error"]
            assert error["code"] == "invalid_api_key"
            # v1: one of the types LM Studio's streaming-events page lists, the one LM
            # Studio 0.4 logs for a missing token; /v1 and v0 use OpenAI's names
            v1 = path.startswith("/api/v1/")
            assert error["type"] == ("invalid_request" if v1 else "authentication_error")
    status, _ = await call(server.url, "GET", "/v1/models", token=TOKEN)
    assert status == 200
    status, _ = await call(server.url, "POST", "/api/v1/models/load", {"model": LLAMA}, token=TOKEN)
    assert status == 200
    server.faults.ignore_auth = True  # the fault switch applies to HTTP too
    status, _ = await call(server.url, "GET", "/api/v1/models")
    assert status == 200

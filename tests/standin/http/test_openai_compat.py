"""The OpenAI-compatible endpoints' request options, over plain HTTP: what ``/v1/responses``
takes and refuses."""

from __future__ import annotations

from lmstudio_async.testing import StandInServer

from ._http import call

LLAMA = "llama-3.2-1b-instruct"


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

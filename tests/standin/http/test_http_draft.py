"""``draft_model`` over HTTP (LM Studio's API changelog, 0.3.10): the draft is checked as a
WebSocket prediction's ``draftModel`` is, and the statistics name it."""

from __future__ import annotations

from typing import Any

import pytest

from lmstudio_async.testing import StandInServer

from .._wire import RawClient, messages, stack
from ._http import call, stream

LLAMA = "llama-3.2-1b-instruct"  # llama, 1.3 GB
SMOL = "smollm2-135m-instruct"  # llama, 145 MB
QWEN = "qwen2.5-7b-instruct-1m"  # qwen2
NOMIC = "text-embedding-nomic-embed-text-v1.5"
QUESTION = "Tell me about harbors"
DRAFT_STATS = (
    "draft_model",
    "total_draft_tokens_count",
    "accepted_draft_tokens_count",
    "rejected_draft_tokens_count",
    "ignored_draft_tokens_count",
)


def _chat(model: str, draft: str | None, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], **extra}
    if draft is not None:
        body["draft_model"] = draft
    return body


async def test_v0_chat_statistics_name_the_draft_as_over_websocket(
    server: StandInServer, client: RawClient
) -> None:
    status, reply = await call(
        server.url, "POST", "/api/v0/chat/completions", _chat(LLAMA, SMOL, max_tokens=30)
    )
    assert status == 200, reply
    stats = reply["stats"]
    assert stats["draft_model"] == SMOL
    assert stats["total_draft_tokens_count"] == reply["usage"]["completion_tokens"] == 30
    accepted = stats["accepted_draft_tokens_count"]
    assert 0 < accepted < 30
    assert stats["rejected_draft_tokens_count"] == 30 - accepted
    assert stats["ignored_draft_tokens_count"] == 0
    # the same prediction over WebSocket: the same text and the same accepted tokens
    llm = await client.connect("llm")
    user = {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    param = {
        "modelSpecifier": {"type": "query", "query": {"identifier": LLAMA}},
        "history": {"messages": [user]},
        "predictionConfigStack": stack(
            **{
                "llm.prediction.maxPredictedTokens": {"checked": True, "value": 30},
                "llm.prediction.speculativeDecoding.draftModel": SMOL,
            }
        ),
    }
    packets = messages(await llm.channel("predict", param))
    text = "".join(p["fragment"]["content"] for p in packets if p["type"] == "fragment")
    assert reply["choices"][0]["message"]["content"] == text
    assert packets[-1]["stats"]["acceptedDraftTokensCount"] == accepted
    # no draft (or an empty one, as over WebSocket): no draft statistics
    for draft in (None, ""):
        status, plain = await call(
            server.url, "POST", "/api/v0/chat/completions", _chat(LLAMA, draft, max_tokens=5)
        )
        assert status == 200, plain
        assert not set(DRAFT_STATS) & set(plain["stats"])


async def test_every_completion_endpoint_takes_a_draft(server: StandInServer) -> None:
    prompt = {"model": LLAMA, "prompt": "The old port was", "max_tokens": 6, "draft_model": SMOL}
    status, v0 = await call(server.url, "POST", "/api/v0/completions", prompt)
    assert status == 200, v0
    assert v0["stats"]["draft_model"] == SMOL
    assert v0["stats"]["total_draft_tokens_count"] == 6
    events = await stream(server.url, "/api/v0/chat/completions", _chat(LLAMA, SMOL, stream=True))
    final = [d for _n, d in events if d != "[DONE]" and d["choices"][0]["finish_reason"]]
    assert final[0]["stats"]["draft_model"] == SMOL
    status, openai_chat = await call(
        server.url, "POST", "/v1/chat/completions", _chat(LLAMA, SMOL, max_tokens=4)
    )
    assert status == 200, openai_chat
    assert openai_chat["stats"]["draft_model"] == SMOL
    assert openai_chat["stats"]["total_draft_tokens_count"] == 4
    status, openai_text = await call(server.url, "POST", "/v1/completions", prompt)
    assert status == 200, openai_text
    assert openai_text["choices"][0]["text"] == v0["choices"][0]["text"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v0/chat/completions"])
async def test_a_draft_that_cannot_be_used_is_refused_before_loading(
    server: StandInServer, path: str
) -> None:
    cases = [
        (LLAMA, "no-such-draft-model", "draft_model_not_found", "not found"),
        (LLAMA, NOMIC, "draft_model_not_found", "not found"),  # an embedding model
        (LLAMA, QWEN, "draft_model_incompatible", "Architectures differ"),
        (SMOL, LLAMA, "draft_model_incompatible", "not smaller"),
        (LLAMA, LLAMA, "draft_model_incompatible", "itself"),
    ]
    for model, draft, code, words in cases:
        status, reply = await call(server.url, "POST", path, _chat(model, draft))
        assert status == 400, (draft, reply)
        error = reply["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            code,
            "draft_model",
        )
        assert draft in error["message"]
        assert words in error["message"]
    status, reply = await call(server.url, "POST", path, _chat(LLAMA, 5))  # type: ignore[arg-type]
    assert (status, reply["error"]["param"]) == (400, "draft_model")
    assert server.loaded_instances() == []  # nothing was loaded just in time
    server.preload(SMOL, identifier="small")  # also checked against a loaded instance
    status, reply = await call(server.url, "POST", path, _chat("small", LLAMA))
    assert reply["error"]["code"] == "draft_model_incompatible"

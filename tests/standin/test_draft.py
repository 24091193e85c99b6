"""Speculative decoding: draftModel is checked and draft statistics are filled."""

from __future__ import annotations

from typing import Any

import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient, Socket, messages, stack

LLAMA = "llama-3.2-1b-instruct"  # llama, 1.3 GB
SMOL = "smollm2-135m-instruct"  # llama, 145 MB
QWEN = "qwen2.5-7b-instruct-1m"  # qwen2
NOMIC = "text-embedding-nomic-embed-text-v1.5"
DRAFT = "llm.prediction.speculativeDecoding.draftModel"


def _param(model: str, draft: str | None, **config: Any) -> dict[str, Any]:
    if draft is not None:
        config[DRAFT] = draft
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": model}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
        "predictionConfigStack": stack(**config),
    }


@pytest.fixture
async def llm(server: StandInServer, client: RawClient) -> Socket:
    for key in (LLAMA, SMOL, QWEN):
        server.preload(key)
    return await client.connect("llm")


async def test_a_compatible_draft_fills_the_statistics(llm: Socket) -> None:
    frames = await llm.channel("predict", _param(LLAMA, SMOL))
    packets = messages(frames)
    stats = packets[-1]["stats"]
    fragments = [p["fragment"] for p in packets if p["type"] == "fragment"]
    assert stats["usedDraftModelKey"] == SMOL
    assert stats["totalDraftTokensCount"] == len(fragments) == stats["predictedTokensCount"]
    drafted = sum(f["containsDrafted"] for f in fragments)
    assert stats["acceptedDraftTokensCount"] == drafted
    assert 0 < drafted < len(fragments)
    assert stats["rejectedDraftTokensCount"] == len(fragments) - drafted
    assert stats["ignoredDraftTokensCount"] == 0
    again = messages(await llm.channel("predict", _param(LLAMA, SMOL)))[-1]["stats"]
    assert again["acceptedDraftTokensCount"] == stats["acceptedDraftTokensCount"]
    # a draft named by its path works too; no draft: no draft fields
    path = "lmstudio-community/SmolLM2-135M-Instruct-GGUF"
    by_path = messages(await llm.channel("predict", _param(LLAMA, path)))[-1]["stats"]
    assert by_path["usedDraftModelKey"] == SMOL
    plain = messages(await llm.channel("predict", _param(LLAMA, None)))
    assert "usedDraftModelKey" not in plain[-1]["stats"]
    assert not any(p["fragment"]["containsDrafted"] for p in plain if p["type"] == "fragment")
    empty = messages(await llm.channel("predict", _param(LLAMA, "")))[-1]["stats"]
    assert "usedDraftModelKey" not in empty


@pytest.mark.parametrize(
    ("model", "draft", "code", "words"),
    [
        (LLAMA, "no-such-draft", "generic.draftModelNotFound", "not found"),
        (LLAMA, NOMIC, "generic.draftModelNotFound", "not found"),  # not an LLM
        (LLAMA, QWEN, "generic.draftModelIncompatible", "Architectures differ"),
        (SMOL, LLAMA, "generic.draftModelIncompatible", "not smaller"),
        (LLAMA, LLAMA, "generic.draftModelIncompatible", "itself"),
    ],
)
async def test_bad_drafts_are_errors(
    llm: Socket, model: str, draft: str, code: str, words: str
) -> None:
    frames = await llm.channel("predict", _param(model, draft))
    error = frames[-1]
    assert error["type"] == "channelError"
    assert error["error"]["displayData"] == {"code": code, "draftModel": draft}
    assert f'Draft model "{draft}"' in error["error"]["title"]
    assert words in (error["error"]["title"] + error["error"].get("cause", ""))
    assert not [m for m in messages(frames) if m["type"] == "fragment"]


async def test_preload_draft_model(llm: Socket) -> None:
    spec = {"type": "query", "query": {"identifier": LLAMA}}
    ok = await llm.rpc("preloadDraftModel", {"specifier": spec, "draftModelKey": SMOL})
    assert ok["type"] == "rpcResult"
    assert "result" not in ok
    bad = await llm.rpc("preloadDraftModel", {"specifier": spec, "draftModelKey": QWEN})
    assert bad["type"] == "rpcError"
    assert bad["error"]["displayData"]["code"] == "generic.draftModelIncompatible"

"""Typed user code: ``mypy --strict`` runs over this file in CI (`.ci/run`); pytest does not.

Each ``assert_type`` pins what a user's type checker sees, so a loosened signature
(``**kwargs: Any``, ``int | float``, a missing overload) fails the type check.
"""

from __future__ import annotations

from typing import assert_type

import lmstudio_async as lms


async def async_user(client: lms.AsyncClient) -> None:
    llm = await client.llm.model("llama-3.2-1b-instruct", ttl=60)
    assert_type(llm, lms.LLM)
    assert_type(await llm.tokenize("Hello"), list[int])
    assert_type(await llm.tokenize(["a", "b"]), list[list[int]])
    estimate = await client.llm.estimate("llama-3.2-1b-instruct")
    assert_type(estimate.total_bytes, int)
    assert_type(estimate.memory.total_vram_bytes, int)


def sync_user(client: lms.Client) -> None:
    llm = client.llm.model("llama-3.2-1b-instruct", config={"context_length": 4096})
    assert_type(llm, lms.SyncLLM)
    assert_type(llm.tokenize("Hello"), list[int])
    assert_type(llm.tokenize(["a", "b"]), list[list[int]])
    assert_type(llm.count_tokens("Hello"), int)
    embedder = client.embedding.model("text-embedding-nomic-embed-text-v1.5")
    assert_type(embedder.tokenize("Hello"), list[int])


def script_user() -> None:
    model = lms.llm("llama-3.2-1b-instruct", ttl=300, on_config_mismatch="raise")
    assert_type(model, lms.SyncLLM)
    embedder = lms.embedding_model(config=lms.EmbeddingLoadConfig(context_length=512))
    assert_type(embedder, lms.SyncEmbeddingModel)
    config = lms.LlmLoadConfig(context_length=4096, gpu_offload=0.5)
    assert_type(config.context_length, int | None)


def mistakes_are_caught() -> None:
    # With --strict, an unused "type: ignore" is an error: these lines fail the check
    # if the signatures ever accept anything again.
    lms.llm("llama-3.2-1b-instruct", tll=60)  # type: ignore[call-arg]
    lms.LlmLoadConfig(contxt_length=4096)  # type: ignore[call-arg]

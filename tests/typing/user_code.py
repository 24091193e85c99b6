"""Typed user code: ``mypy --strict`` runs over this file in CI (`.ci/run`); pytest does not.

Each ``assert_type`` pins what a user's type checker sees, so a loosened signature
(``**kwargs: Any``, ``int | float``, a missing overload) fails the type check.
"""

from __future__ import annotations

from typing import Any, Literal, assert_type

import msgspec

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
    assert_type(embedder.embed("Hello"), list[float])
    assert_type(embedder.embed(["a", "b"]), list[list[float]])


def script_user() -> None:
    model = lms.llm("llama-3.2-1b-instruct", ttl=300, on_config_mismatch="raise")
    assert_type(model, lms.SyncLLM)
    embedder = lms.embedding_model(config=lms.EmbeddingLoadConfig(context_length=512))
    assert_type(embedder, lms.SyncEmbeddingModel)
    config = lms.LlmLoadConfig(context_length=4096, gpu_offload=0.5)
    assert_type(config.context_length, int | Literal["max"] | None)
    # Lists, as the README writes them (the values are kept as tuples).
    lms.LlmLoadConfig(disabled_gpus=[1])
    model.respond("Hi", config=lms.PredictionConfig(max_tokens=200, stop_strings=["\n\n"]))


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


async def async_agent_user(client: lms.AsyncClient, llm: lms.LLM) -> None:
    result = await llm.act("add 2 and 3", [add], on_message=print, max_parallel_tool_calls=None)
    assert_type(result, lms.ActResult)
    reply = await llm.respond("add 2 and 3", tools=[add], preset="concise")
    assert_type(reply.tool_calls, tuple[lms.ToolCallRequest, ...])
    image = await client.files.prepare_image(b"...", name="x.png")
    assert_type(image, lms.FileHandle)
    lms.Chat().add_user("What is this?", images=[image]).add_assistant(reply)
    results = await client.repository.search_models("smollm2", limit=5)
    assert_type(results, list[lms.ModelSearchResult])
    assert_type(results[0].info, lms.SearchResultData)
    options = await results[0].get_download_options()
    assert_type(options[0].info, lms.DownloadOptionData)
    assert_type(await options[0].download(on_progress=lambda p: print(p.fraction)), str)


class City(msgspec.Struct):
    name: str
    population: int


async def async_structured_user(llm: lms.LLM) -> City:
    city = await llm.respond("A city", response_format=City)
    assert_type(city, lms.StructuredResult[City])
    assert_type(city.parsed, City)
    assert_type(city.parsed.population, int)
    many = await llm.respond("Cities", response_format=list[City])
    assert_type(many.parsed, list[City])
    plain = await llm.respond("A city", response_format={"type": "object"})
    assert_type(plain, lms.PredictionResult)
    assert_type(plain.parsed, Any)
    whole: lms.PredictionResult = city  # still a PredictionResult
    print(whole.content)
    return city.parsed


def sync_structured_user(llm: lms.SyncLLM) -> City:
    city = llm.respond("A city", response_format=City)
    assert_type(city.parsed, City)
    assert_type(llm.respond("Hi").parsed, Any)
    return city.parsed


def sync_agent_user(client: lms.Client) -> None:
    llm = client.llm.model("llama-3.2-1b-instruct")
    assert_type(llm.act("add 2 and 3", [add]), lms.ActResult)
    assert_type(client.files.prepare_image(b"..."), lms.FileHandle)
    results = client.repository.search_models("smollm2")
    assert_type(results, list[lms.SyncModelSearchResult])
    assert_type(results[0].info, lms.SearchResultData)
    option = results[0].get_download_options()[0]
    assert_type(option.info, lms.DownloadOptionData)
    assert_type(option.info.size_bytes, int)
    assert_type(option.download(), str)


def mistakes_are_caught() -> None:
    # With --strict, an unused "type: ignore" is an error: these lines fail the check
    # if the signatures ever accept anything again.
    lms.llm("llama-3.2-1b-instruct", tll=60)  # type: ignore[call-arg]
    lms.LlmLoadConfig(contxt_length=4096)  # type: ignore[call-arg]


async def structured_mistakes_are_caught(llm: lms.LLM) -> None:
    city = await llm.respond("A city", response_format=City)
    print(city.parsed.populaton)  # type: ignore[attr-defined]

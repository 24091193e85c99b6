"""Inference with the official ``lmstudio`` SDK (async and sync clients) against the stand-in."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import lmstudio
import pytest

from lmstudio_async.testing import ThreadedStandInServer

from .test_official_js import needs_js_sdk, run_js

pytestmark = pytest.mark.conformance

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"

BOOK_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "author": {"type": "string"},
        "year": {"type": "integer", "minimum": 1450, "maximum": 2025},
        "genres": {"type": "array", "items": {"enum": ["fiction", "poetry", "history"]}},
    },
    "required": ["title", "author", "year"],
}


class Book(lmstudio.BaseModel):
    title: str
    author: str
    year: int
    in_print: bool


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- async client --------------------------------------------------------------------------


async def test_async_respond_and_complete(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(LLAMA)
        result = await model.respond("What is the capital of France?")
        assert result.content
        assert "France" in result.content
        assert result.stats.stop_reason == "eosFound"
        assert result.stats.predicted_tokens_count == await model.count_tokens(result.content)
        formatted = await model.apply_prompt_template("What is the capital of France?")
        assert formatted.startswith("<|begin_of_text|><|start_header_id|>user")
        assert result.stats.prompt_tokens_count == await model.count_tokens(formatted)
        assert result.model_info.model_key == LLAMA
        assert result.load_config.context_length == 4096
        assert result.prediction_config.temperature == 0.8
        again = await model.respond("What is the capital of France?")
        assert again.content == result.content

        capped = await model.respond("Tell me a story", config={"maxTokens": 20})
        assert capped.stats.stop_reason == "maxPredictedTokensReached"
        assert capped.stats.predicted_tokens_count == 20
        assert capped.prediction_config.max_tokens == 20

        completion = await model.complete("Once upon a time there was a dragon")
        assert completion.content.startswith(" ")
        assert completion.stats.prompt_tokens_count == await model.count_tokens(
            "Once upon a time there was a dragon"
        )
        assert completion.prediction_config.prompt_template is not None

        stopped = await model.respond("Tell me a story", config={"stopStrings": ["."]})
        assert stopped.stats.stop_reason == "stopStringFound"
        assert "." not in stopped.content

        assert len(await model.tokenize("Hello, world!")) == 4
        assert [len(t) for t in await model.tokenize(["Hello", "Hello, world!"])] == [1, 4]
        assert await model.count_tokens("Hello, world!") == 4


async def test_async_respond_stream_and_cancel(lmstudio_server: ThreadedStandInServer) -> None:
    progress: list[float] = []
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(SMOL)
        chat = lmstudio.Chat("You are a helpful assistant.")
        chat.add_user_message("Explain how tides work. " * 12)
        stream = await model.respond_stream(chat, on_prompt_processing_progress=progress.append)
        pieces = [fragment.content async for fragment in stream]
        result = stream.result()
        assert "".join(pieces) == result.content
        assert len(pieces) == result.stats.predicted_tokens_count > 5
        assert progress[0] == 0.0
        assert progress[-1] == 1.0
        assert len(progress) >= 3

        stream = await model.respond_stream("Tell me a long story")
        seen = 0
        async for _fragment in stream:
            seen += 1
            if seen == 3:
                await stream.cancel()
        cancelled = stream.result()
        assert cancelled.stats.stop_reason == "userStopped"
        assert [c.endpoint for c in lmstudio_server.cancels()] == ["predict"]
        assert [m.identifier for m in await client.llm.list_loaded()] == [SMOL]
        assert (await model.respond("Still there?")).stats.stop_reason == "eosFound"


async def test_async_structured_output(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(LLAMA)
        result = await model.respond("Recommend a book", response_format=BOOK_SCHEMA)
        assert result.structured
        book = result.parsed
        assert isinstance(book, dict)
        assert {"title", "author", "year"} <= set(book)
        assert isinstance(book["title"], str)
        assert isinstance(book["year"], int)
        assert 1450 <= book["year"] <= 2025
        assert json.loads(result.content) == book
        typed = await model.respond("Recommend a book", response_format=Book)
        assert isinstance(typed.parsed, dict)
        assert isinstance(typed.parsed["in_print"], bool)
        assert isinstance(typed.parsed["year"], int)


async def test_async_act_calls_the_tool_then_answers(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    # The stand-in's tool rule (issue 17): numbers in the message fill `add`'s parameters.
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(LLAMA)
        act = await model.act("What is 2 + 2?", [add])
        assert act.rounds == 2
        assert calls == [(2, 2)]
        quiet = await model.act("Say hello.", [add])
        assert quiet.rounds == 1


async def test_async_errors(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(LLAMA)
        await model.unload()
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await model.respond("Hello")
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await model.count_tokens("Hello")
        assert lmstudio_server.loaded_instances() == []  # no JIT for inference
        model = await client.llm.model(LLAMA)
        with pytest.raises(lmstudio.LMStudioPresetNotFoundError):
            await model.respond("Hello", preset="nope")


async def test_async_embeddings(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.embedding.model(NOMIC)
        cat, kitten, bank = await model.embed(
            ["The cat sat on the mat", "A cat is sitting on a mat", "Interest rates at the bank"]
        )
        assert len(cat) == 768
        assert math.isclose(sum(v * v for v in cat), 1.0, rel_tol=1e-9)
        assert await model.embed("The cat sat on the mat") == cat
        assert cosine(cat, kitten) > cosine(cat, bank)
        assert await model.count_tokens("Hello, world!") == 4
        assert len(await model.tokenize("Hello, world!")) == 4 + 2  # start and end markers


# --- sync client ---------------------------------------------------------------------------


def test_sync_inference(lmstudio_server: ThreadedStandInServer) -> None:
    with lmstudio.Client(lmstudio_server.host) as client:
        model = client.llm.model(LLAMA)
        result = model.respond("Describe the ocean.", config={"maxTokens": 20})
        assert result.stats.predicted_tokens_count == 20
        assert result.stats.stop_reason == "maxPredictedTokensReached"
        full = model.respond("Describe the ocean.")
        assert full.content.startswith(result.content)
        assert full.stats.stop_reason == "eosFound"

        completion = model.complete("The recipe calls for")
        assert completion.content

        stream = model.respond_stream("Describe the ocean.")
        assert "".join(f.content for f in stream) == full.content

        stream = model.respond_stream("Describe the ocean.")
        for count, _fragment in enumerate(stream, start=1):
            if count == 2:
                stream.cancel()
        assert stream.result().stats.stop_reason == "userStopped"
        assert [m.identifier for m in client.llm.list_loaded()] == [LLAMA]

        structured = model.respond("Recommend a book", response_format=BOOK_SCHEMA)
        assert isinstance(structured.parsed, dict)
        assert isinstance(structured.parsed["author"], str)

        formatted = model.apply_prompt_template(
            {"messages": [{"role": "user", "content": "Hi"}]}, opts={"omitBosToken": True}
        )
        assert formatted.startswith("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
        assert model.count_tokens("Hello, world!") == len(model.tokenize("Hello, world!")) == 4

        smol = client.llm.load_new_instance(SMOL, ttl=None)
        assert smol.apply_prompt_template("Hi") == (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )

        embedding = client.embedding.model(NOMIC)
        vector = embedding.embed("Hello, world!")
        assert len(vector) == 768
        assert embedding.embed("Hello, world!") == vector


# --- JS SDK (optional) ---------------------------------------------------------------------

JS_PROBE = r"""
const { LMStudioClient } = require(process.env.LMS_SDK_PATH);
(async () => {
  const quiet = { info() {}, warn: console.error, error: console.error, debug() {} };
  const client = new LMStudioClient({ baseUrl: process.argv[2], logger: quiet });
  const out = {};
  const model = await client.llm.model("llama-3.2-1b-instruct", { verbose: false });
  const r = await model.respond("What is the capital of France?", { maxTokens: 20 });
  out.respond = { content: r.content, stats: r.stats };
  const prediction = model.respond("Tell me a long story");
  let n = 0;
  for await (const fragment of prediction) { if (++n === 3) prediction.cancel(); }
  out.cancel = (await prediction.result()).stats.stopReason;
  out.complete = (await model.complete("Once upon a time", { maxTokens: 10 })).content;
  out.tokens = await model.tokenize("Hello, world!");
  out.count = await model.countTokens("Hello, world!");
  out.template = await model.applyPromptTemplate([{ role: "user", content: "Hi" }]);
  const schema = { type: "object", properties: { t: { type: "string" } }, required: ["t"] };
  out.structured = (await model.respond("A book", {
    structured: { type: "json", jsonSchema: schema },
  })).content;
  const progress = [];
  await model.respond("word ".repeat(300), { onPromptProcessingProgress: (p) => progress.push(p) });
  out.progress = progress;
  const nomic = "text-embedding-nomic-embed-text-v1.5";
  const emb = await client.embedding.model(nomic, { verbose: false });
  out.embedding = (await emb.embed("Hello")).embedding.length;
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
"""


@needs_js_sdk
# 200 tokens/s: the long story must still be running when the script cancels it after its
# third fragment, even when a busy machine makes Node slow (at 2000 tokens/s it once ended
# first, and the stop reason was not "userStopped").
@pytest.mark.lmstudio_server(tokens_per_second=200)
def test_js_sdk_inference(lmstudio_server: ThreadedStandInServer, tmp_path: Path) -> None:
    script = tmp_path / "probe.cjs"
    script.write_text(JS_PROBE, encoding="utf-8")
    out = run_js(script, lmstudio_server)
    assert out["respond"]["stats"]["stopReason"] == "maxPredictedTokensReached"
    assert out["respond"]["stats"]["predictedTokensCount"] == 20
    assert "France" in out["respond"]["content"]
    assert out["cancel"] == "userStopped"
    assert out["complete"]
    assert out["count"] == len(out["tokens"]) == 4
    assert out["template"].startswith("<|begin_of_text|><|start_header_id|>user")
    assert isinstance(json.loads(out["structured"])["t"], str)
    assert out["progress"][0] == 0
    assert out["progress"][-1] == 1
    assert out["embedding"] == 768

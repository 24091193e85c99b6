"""``python -m lmstudio_async demo``: a tour of the model-management API.

Starts the bundled stand-in LM Studio in this event loop (port 0, short simulated
loads) and drives it with :class:`~lmstudio_async.AsyncClient`, printing each
step. Needs no LM Studio and no optional dependencies; with ``openai`` installed, a last
step shows an SDK-loaded model answering an ``openai`` client over the stand-in's HTTP API.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from .._async.client import LLM, AsyncClient, EmbeddingModel
from ..config import LlmLoadConfig
from ..errors import ModelNotFoundError, ServerError
from ..testing import StandInServer

if TYPE_CHECKING:
    from .commands import Output

__all__ = ["run_demo"]

T = TypeVar("T")

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"
NOMIC = "text-embedding-nomic-embed-text-v1.5"


async def _timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await awaitable
    return result, time.perf_counter() - started


async def run_demo(out: Output, *, load_seconds: float = 0.4) -> int:
    """Run the demo, writing to ``out``; returns the exit code (0)."""
    async with StandInServer(port=0, load_seconds=load_seconds) as server:
        out.line(
            f"lmstudio_async demo: a stand-in LM Studio is listening on {server.host} "
            f"(simulated loads take {load_seconds:g} s)",
            style="bold",
        )
        async with AsyncClient(server.host) as client:
            await _tour(client, server, out, load_seconds)
    out.line()
    out.line("Done. Next: `lmstudio-async --help`, or point AsyncClient at a real LM Studio.")
    return 0


async def _tour(
    client: AsyncClient, server: StandInServer, out: Output, load_seconds: float
) -> None:
    def code(text: str) -> None:
        out.line(f"  >>> {text}", style="dim")

    def say(text: str) -> None:
        out.line(f"  {text}")

    async def all_loaded() -> list[LLM | EmbeddingModel]:
        return [*await client.llm.list_loaded(), *await client.embedding.list_loaded()]

    async def show_loaded() -> None:
        handles = await all_loaded()
        names = ", ".join(h.identifier for h in handles) or "(nothing)"
        say(f"loaded now: {names}")

    downloaded = await client.system.list_downloaded()
    say(f"{len(downloaded)} downloaded models: " + ", ".join(m.model_key for m in downloaded))

    # 1. Any loaded model -----------------------------------------------------------------
    out.heading("1. Any loaded model")
    code("await client.llm.model()")
    try:
        await client.llm.model()
    except ModelNotFoundError as exc:
        say(f"ModelNotFoundError: {exc}")

    # 2. Get-or-load ------------------------------------------------------------------------
    out.heading("2. Get it if loaded, else load it")
    code(f"llm = await client.llm.model({LLAMA!r}, on_progress=...)")
    with out.progress(f"loading {LLAMA}") as on_progress:
        llm, took = await _timed(client.llm.model(LLAMA, on_progress=on_progress))
    say(f"-> {llm.identifier!r}, context length {await llm.get_context_length()} ({took:.2f} s)")
    again, took = await _timed(client.llm.model(LLAMA))
    say(f"again -> the same instance: {again == llm} ({took:.2f} s, no second load)")
    code("await client.llm.model()")
    say(f"-> {(await client.llm.model()).identifier!r}")

    # 3. Named instances --------------------------------------------------------------------
    out.heading("3. New instances: custom and automatic identifiers")
    code(f"await client.llm.load({SMOL!r}, 'summarizer')  # and 'translator', concurrently")
    summarizer, translator = await asyncio.gather(
        client.llm.load(SMOL, "summarizer"), client.llm.load(SMOL, "translator")
    )
    say(f"-> {summarizer.identifier!r} and {translator.identifier!r}, both {SMOL}")
    code(f"await client.llm.load({LLAMA!r})  # no identifier: the server picks one")
    auto = await client.llm.load(LLAMA)
    say(f"-> {auto.identifier!r} ({LLAMA!r} was taken)")
    code(f"await client.llm.load({SMOL!r}, 'summarizer')")
    try:
        await client.llm.load(SMOL, "summarizer")
    except ServerError as exc:
        say(f"{type(exc).__name__}: {exc}")
    await show_loaded()

    # 4. Load config --------------------------------------------------------------------------
    out.heading("4. Load config")
    code("config = LlmLoadConfig(context_length=4096, gpu_offload=0.5)")
    code(f"qwen = await client.llm.load({QWEN!r}, 'qwen-4k', config=config)")
    config = LlmLoadConfig(context_length=4096, gpu_offload=0.5)
    qwen = await client.llm.load(QWEN, "qwen-4k", config=config)
    effective = await qwen.get_load_config()
    code("await qwen.get_load_config()")
    say(f"-> context_length={effective.context_length}, gpu_offload={effective.gpu_offload!r}")

    # 5. TTL ---------------------------------------------------------------------------------
    out.heading("5. Idle TTL: LM Studio unloads idle instances")
    code(f"short = await client.llm.load({SMOL!r}, 'short-lived', ttl=1)")
    short = await client.llm.load(SMOL, "short-lived", ttl=1)
    say(f"-> {short.identifier!r}, ttl={(await short.get_info()).ttl:g} s")
    server.advance_clock(1.5)  # against a real LM Studio: just wait
    say("(1.5 s later: the stand-in's clock was advanced)")
    try:
        await short.get_info()
        say("still loaded?!")
    except ModelNotFoundError as exc:
        say(f"short.get_info() -> ModelNotFoundError: {exc}")

    # 6. Concurrent orchestration ------------------------------------------------------------------
    out.heading("6. Several models at once")
    everything = await all_loaded()
    await asyncio.gather(*(h.unload() for h in everything))
    say(f"unloaded all {len(everything)} instances, then:")
    code("async with asyncio.TaskGroup() as tg: 3 x tg.create_task(client.llm.load(key))")
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.llm.load(key)) for key in (LLAMA, SMOL, QWEN)]
    took = time.perf_counter() - started
    say(
        f"-> {', '.join(t.result().identifier for t in tasks)} in {took:.2f} s "
        f"(one load takes {load_seconds:g} s; one after another: ~{3 * load_seconds:g} s)"
    )

    # 7. Scoped instance -------------------------------------------------------------------------
    out.heading("7. Scoped instance: unloaded when the block exits")
    code(f"async with client.embedding.loaded({NOMIC!r}) as embedder:")
    async with client.embedding.loaded(NOMIC) as embedder:
        say(f"    inside: {embedder.identifier!r} is loaded")
    remaining = [h.identifier for h in await client.embedding.list_loaded()]
    say(f"after: loaded embedding models: {remaining or '(none)'}")

    # 8. Unload --------------------------------------------------------------------------------
    out.heading("8. Unload")
    for task in tasks:
        handle = task.result()
        code(f"await client.llm.unload({handle.identifier!r})")
        await client.llm.unload(handle.identifier)
    await show_loaded()

    # 9. Use loaded models -------------------------------------------------------------------
    out.heading("9. Use loaded models: route prompts across two LLMs, embed the answers")
    code("fast, smart, embedder = await asyncio.gather(3 x load(...))  # concurrently")
    fast, smart, embedder = await asyncio.gather(
        client.llm.load(SMOL, "fast"), client.llm.load(LLAMA, "smart"), client.embedding.load(NOMIC)
    )
    try:
        prompts = ["What is a river?", "Explain how rivers shape the valleys they cross."]
        code("await asyncio.gather(fast.respond(short), smart.respond(long))")
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                (fast if len(p.split()) <= 5 else smart).respond(p, config={"max_tokens": 12})
                for p in prompts
            )
        )
        took = time.perf_counter() - started
        for prompt, answer in zip(prompts, answers, strict=True):
            say(f"[{answer.model_info.identifier}] {prompt} -> {answer.content!r}")
        say(f"({took:.2f} s for both, concurrently on one client)")
        code("async for fragment in smart.respond_stream(...)")
        pieces = [f.content async for f in smart.respond_stream("Say hi", config={"max_tokens": 6})]
        say(f"-> {len(pieces)} fragments: {pieces!r}")
        code("await embedder.embed([answer.content for answer in answers])")
        vectors = await embedder.embed([a.content for a in answers])
        say(f"-> {len(vectors)} vectors of {len(vectors[0])} dimensions")
    finally:
        await asyncio.gather(fast.unload(), smart.unload(), embedder.unload())
    say("(and unloaded again)")

    # 10. The OpenAI-compatible API ------------------------------------------------------------
    await _openai_step(client, server, out)


async def _openai_step(client: AsyncClient, server: StandInServer, out: Output) -> None:
    """A model loaded by this SDK answers an ``openai`` client (when ``openai`` is installed)."""
    out.heading("10. One model, two APIs: loaded by this SDK, answering an openai client")
    try:
        # Imported in a worker thread: the import takes a second, which would block the
        # event loop (and the stand-in serving in it) all that time.
        openai = await asyncio.to_thread(importlib.import_module, "openai")
    except ImportError:
        out.line("  (skipped: `pip install openai` to see it)")
        return

    def code(text: str) -> None:
        out.line(f"  >>> {text}", style="dim")

    question = "What is a harbor?"
    code(f"llm = await client.llm.load({SMOL!r}, 'assistant')")
    llm = await client.llm.load(SMOL, "assistant")
    try:
        base_url = f"http://{server.host}/v1"
        code(f"api = openai.AsyncOpenAI(base_url={base_url!r}, api_key='lm-studio')")
        code("await api.chat.completions.create(model='assistant', messages=..., max_tokens=12)")
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key="lm-studio", max_retries=0, timeout=30
        ) as api:
            reply = await api.chat.completions.create(
                model="assistant",
                messages=[{"role": "user", "content": question}],
                max_tokens=12,
            )
        text = reply.choices[0].message.content or ""
        out.line(f"  -> [{reply.model}] {text!r}")
        same = await llm.respond(question, config={"max_tokens": 12})
        out.line(f"  llm.respond(...) over the WebSocket API: same text: {same.content == text}")
        loaded = [h.identifier for h in await client.llm.list_loaded()]
        out.line(f"  loaded now: {', '.join(loaded)} (the request did not load another copy)")
    finally:
        await llm.unload()

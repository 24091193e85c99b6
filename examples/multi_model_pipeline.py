"""Orchestrate several loaded models on one client: route, generate, embed, stay in budget.

The pipeline:

1. a router sends each prompt to one of two LLMs (short questions to a small model, the
   rest to a larger one); all prompts run concurrently on the one client;
2. an embedding model embeds every answer (one concurrent batch), and the closest pair of
   answers is reported;
3. a model pool keeps the working set within a memory budget: it asks LM Studio for a
   memory estimate *before* loading and unloads the least recently used idle models until
   the new one fits. A final request for a big model shows an eviction.

``--budget-gib`` must be memory the server can give this script: unlike
``lms.AsyncModelPool``, this small pool does not react to a load the server refuses because
other users' models take part of it (``InsufficientMemoryError`` ends the script).

Run it against the bundled stand-in (no LM Studio needed)::

    lmstudio-async serve --port 41343 &
    python examples/multi_model_pipeline.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Literal

import lmstudio_async as lms

GIB = 1024**3
SMALL = "smollm2-135m-instruct"
LARGE = "llama-3.2-1b-instruct"
BIG = "qwen2.5-7b-instruct-1m"
EMBEDDER = "text-embedding-nomic-embed-text-v1.5"

Handle = lms.LLM | lms.EmbeddingModel


class BudgetExceededError(Exception):
    """A model cannot fit: alone it is over budget, or every loaded model is in use."""


class _Entry:
    __slots__ = ("handle", "size", "users")

    def __init__(self, handle: Handle, size: float) -> None:
        self.handle = handle
        self.size = size
        self.users = 0


class ModelPool:
    """Models this pipeline loaded (LLMs and embedding models), least recently used first.

    ``async with pool.use(key) as model:`` gets (or loads) a model and pins it while the
    block runs; pinned models are never evicted. Loads are serialized by a lock so that
    concurrent requests never overshoot the budget; using loaded models is fully concurrent.
    """

    def __init__(self, client: lms.AsyncClient, budget_bytes: float) -> None:
        self._client = client
        self._budget = budget_bytes
        self._lock = asyncio.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.events: list[str] = []
        self.loaded: list[Handle] = []  # every instance this pool loaded, in load order

    @property
    def used_bytes(self) -> float:
        return sum(e.size for e in self._entries.values())

    @property
    def keys(self) -> list[str]:
        return list(self._entries)

    def _log(self, text: str) -> None:
        self.events.append(text)
        print(text)

    async def _acquire(self, key: str, domain: Literal["llm", "embedding"]) -> _Entry:
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                namespace = self._client.llm if domain == "llm" else self._client.embedding
                need = float((await namespace.estimate(key)).total_bytes)
                if need > self._budget:
                    raise BudgetExceededError(f"{key} alone needs {need / GIB:.2f} GiB")
                for old_key, old in list(self._entries.items()):  # LRU first
                    if self.used_bytes + need <= self._budget:
                        break
                    if old.users == 0:
                        del self._entries[old_key]
                        await old.handle.unload()
                        self._log(
                            f"evict  {old_key} (least recently used, {old.size / GIB:.2f} GiB)"
                        )
                if self.used_bytes + need > self._budget:
                    raise BudgetExceededError(f"no idle model to evict for {key}")
                # No fixed identifier: LM Studio's are unique across all its users (another
                # copy of this script included), so the server names the instance.
                handle: Handle = await namespace.load(key)
                self.loaded.append(handle)
                entry = self._entries[key] = _Entry(handle, need)
                self._log(
                    f"load   {key} ({need / GIB:.2f} GiB; in use {self.used_bytes / GIB:.2f} "
                    f"of {self._budget / GIB:.2f} GiB)"
                )
            self._entries.move_to_end(key)
            entry.users += 1
            return entry

    @contextlib.asynccontextmanager
    async def llm(self, key: str) -> AsyncIterator[lms.LLM]:
        """Use the LLM ``key`` (loaded if needed) for the block."""
        entry = await self._acquire(key, "llm")
        try:
            assert isinstance(entry.handle, lms.LLM)
            yield entry.handle
        finally:
            entry.users -= 1

    @contextlib.asynccontextmanager
    async def embedding(self, key: str) -> AsyncIterator[lms.EmbeddingModel]:
        """Use the embedding model ``key`` (loaded if needed) for the block."""
        entry = await self._acquire(key, "embedding")
        try:
            assert isinstance(entry.handle, lms.EmbeddingModel)
            yield entry.handle
        finally:
            entry.users -= 1

    async def aclose(self) -> None:
        """Unload everything the pool loaded."""
        async with self._lock:
            await asyncio.gather(*(e.handle.unload() for e in self._entries.values()))
            self._entries.clear()


def route(prompt: str) -> str:
    """Short questions go to the small model, everything else to the larger one."""
    return SMALL if len(prompt.split()) <= 6 else LARGE


async def answer(pool: ModelPool, prompt: str) -> tuple[str, str]:
    key = route(prompt)
    async with pool.llm(key) as llm:
        result = await llm.respond(prompt, config=lms.PredictionConfig(max_tokens=40))
    return key, result.content


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def run(pool: ModelPool) -> None:
    prompts = [
        "What is a river?",
        "Explain in a few sentences how a river shapes the valley it flows through.",
        "Name a calm colour.",
        "Describe how old harbors changed when steam engines arrived in the port.",
        "What is a lantern?",
        "Explain why rivers carry sediment and where it ends up over many seasons.",
    ]
    answers = await asyncio.gather(*(answer(pool, p) for p in prompts))
    for prompt, (key, text) in zip(prompts, answers, strict=True):
        print(f"[{key}] {prompt}\n    -> {text[:70]}...")
    print(
        f"routed: {sum(k == SMALL for k, _ in answers)} to {SMALL}, "
        f"{sum(k == LARGE for k, _ in answers)} to {LARGE}"
    )

    async with pool.embedding(EMBEDDER) as embedder:
        vectors = await embedder.embed([text for _, text in answers])
    best = max(
        ((i, j) for i in range(len(vectors)) for j in range(i + 1, len(vectors))),
        key=lambda ij: cosine(vectors[ij[0]], vectors[ij[1]]),
    )
    print(
        f"embedded {len(vectors)} answers ({len(vectors[0])} dimensions); closest pair: "
        f"prompts {best[0] + 1} and {best[1] + 1}"
    )

    # A big model: the pool must make room first, evicting the least recently used.
    async with pool.llm(BIG) as big:
        summary = await big.respond(
            "Summarise: " + " ".join(text for _, text in answers),
            config={"max_tokens": 30},
        )
    print(f"[{BIG}] summary: {summary.content[:70]}...")
    print(f"working set: {', '.join(pool.keys)} ({pool.used_bytes / GIB:.2f} GiB)")


async def main(host: str | None, budget_gib: float) -> None:
    async with lms.AsyncClient(host) as client:
        pool = ModelPool(client, budget_gib * GIB)
        try:
            await run(pool)
        finally:
            await pool.aclose()
        # Others' models stay loaded; of the pool's, none should.
        loaded = [*await client.llm.list_loaded(), *await client.embedding.list_loaded()]
        print(f"loaded after closing: {[h.identifier for h in pool.loaded if h in loaded]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    parser.add_argument("--budget-gib", type=float, default=6.3, help="memory budget in GiB")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.budget_gib))

"""Serve many concurrent requests over several models within a memory budget (asyncio).

An async service answers requests that each name a model. An ``AsyncModelPool`` keeps the
working set: it leases an instance per request, loads a model once however many requests
want it at the same time, never unloads a model a request is still using, and makes room
within the budget by unloading idle models that are rarely asked for.

Run it against the bundled stand-in (no LM Studio needed)::

    lmstudio-async serve --port 41343 &
    python examples/async_working_set.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random

import lmstudio_async as lms

GIB = 1024**3
MODELS = [
    "llama-3.2-1b-instruct",
    "smollm2-135m-instruct",
    "mobilevlm_v2-1.7b",
    "qwen2.5-7b-instruct-1m",
]


async def answer(
    pool: lms.AsyncModelPool, key: str, question: str, used: set[lms.LLM]
) -> lms.PredictionResult:
    """One request: lease the model, ask, give the lease back (also on error/cancel)."""
    async with pool.llm(key, timeout=60) as model:
        used.add(model)
        return await model.respond(question, config={"max_tokens": 24})


async def main(host: str | None, budget_gib: float, requests: int) -> None:
    rng = random.Random(1)
    async with lms.AsyncClient(host) as client:
        async with lms.AsyncModelPool(client, memory_budget=int(budget_gib * GIB)) as pool:
            # Skewed traffic: the first models are asked for far more often.
            keys = rng.choices(MODELS, weights=[8, 4, 2, 1], k=requests)
            used: set[lms.LLM] = set()
            replies = await asyncio.gather(
                *(answer(pool, key, f"Question {i}?", used) for i, key in enumerate(keys))
            )
            # A reply cut short (its model unloaded mid-way) raises ModelUnloadedError: every
            # reply here ended normally, at the end of its text or at max_tokens.
            reasons = collections.Counter(r.stop_reason for r in replies)
            print(f"{len(replies)} replies, stop reasons: {dict(sorted(reasons.items()))}")
            stats = pool.stats()
            print(
                f"loads {stats.loads}, evictions {stats.evictions}, hits {stats.hits}, "
                f"waits {stats.waits}"
            )
            for key, counts in stats.by_key.items():
                print(f"  {key}: {counts.loads} load(s), {counts.hits} hit(s)")
            print(stats)  # one line, for a log
        # Leaving the pool unloaded everything it loaded (others' models stay loaded).
        loaded = await client.llm.list_loaded()
        print(f"loaded after closing: {[m.identifier for m in used if m in loaded]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    parser.add_argument("--budget-gib", type=float, default=6.25, help="memory budget in GiB")
    parser.add_argument("--requests", type=int, default=150)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.budget_gib, args.requests))

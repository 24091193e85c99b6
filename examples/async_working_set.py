"""Keep a working set of models loaded within a memory budget (asyncio).

An async service asks for models by key. The working set:

- returns the instance it already holds (and marks it most recently used);
- otherwise asks LM Studio for a memory estimate *before* loading, unloads the least
  recently used instances until the new one fits the budget, then loads it;
- serializes changes with a lock, so concurrent requests never overshoot the budget.

Run it against the bundled stand-in (no LM Studio needed)::

    lmstudio-async serve --port 41343 &
    python examples/async_working_set.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import OrderedDict

import lmstudio_async as lms

GIB = 1024**3


class BudgetExceededError(Exception):
    """The model alone needs more memory than the whole budget."""


class WorkingSet:
    """LLM instances this service loaded, in least- to most-recently-used order."""

    def __init__(self, client: lms.AsyncClient, budget_bytes: float) -> None:
        self._client = client
        self._budget = budget_bytes
        self._lock = asyncio.Lock()
        self._held: OrderedDict[str, tuple[lms.LLM, float]] = OrderedDict()  # key -> (llm, bytes)

    @property
    def used_bytes(self) -> float:
        return sum(size for _, size in self._held.values())

    @property
    def keys(self) -> list[str]:
        return list(self._held)

    async def get(self, key: str) -> lms.LLM:
        """The instance of ``key``, loading it (and evicting others) if needed."""
        async with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                print(f"hit    {key}")
                return self._held[key][0]
            estimate = await self._client.llm.estimate(key)
            need = float(estimate.total_bytes)
            if need > self._budget:
                raise BudgetExceededError(
                    f"{key} needs {need / GIB:.2f} GiB, the budget is {self._budget / GIB:.2f} GiB"
                )
            while self._held and self.used_bytes + need > self._budget:
                old_key, (old, size) = self._held.popitem(last=False)
                await old.unload()
                print(f"evict  {old_key} (least recently used, frees {size / GIB:.2f} GiB)")
            llm = await self._client.llm.load(key, f"ws-{key}")
            self._held[key] = (llm, need)
            print(
                f"load   {key} ({need / GIB:.2f} GiB; in use {self.used_bytes / GIB:.2f}"
                f" of {self._budget / GIB:.2f} GiB)"
            )
            return llm

    async def aclose(self) -> None:
        """Unload everything this working set loaded."""
        async with self._lock:
            await asyncio.gather(*(llm.unload() for llm, _ in self._held.values()))
            self._held.clear()


async def main(host: str | None, budget_gib: float) -> None:
    async with lms.AsyncClient(host) as client:
        working_set = WorkingSet(client, budget_gib * GIB)
        try:
            requests = [
                "llama-3.2-1b-instruct",
                "smollm2-135m-instruct",
                "llama-3.2-1b-instruct",  # hit: now the most recently used
                "qwen2.5-7b-instruct-1m",  # does not fit: evicts smollm2, the LRU one
                "smollm2-135m-instruct",  # evicts llama, now the LRU one
            ]
            for key in requests:
                await working_set.get(key)
            # Concurrent requests for the same key share the lock: one load, then hits.
            await asyncio.gather(*(working_set.get("mobilevlm_v2-1.7b") for _ in range(3)))
            print(f"working set: {', '.join(working_set.keys)}")
        finally:
            await working_set.aclose()
        print(f"loaded after closing: {[m.identifier for m in await client.llm.list_loaded()]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    parser.add_argument("--budget-gib", type=float, default=6.25, help="memory budget in GiB")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.budget_gib))

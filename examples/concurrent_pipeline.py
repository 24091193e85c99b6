"""Bring up several models concurrently, use them, tear them down (asyncio).

A pipeline needs an embedding model and two LLMs. Loading them one after another
costs the sum of the load times; with a TaskGroup it costs about the slowest one.
A failure or Ctrl-C while loading cancels the other loads on the server too, and the
``AsyncExitStack`` of scoped ``loaded()`` instances unloads whatever did load.

    lmstudio-async serve --port 41343 &
    python examples/concurrent_pipeline.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import lmstudio_async as lms

EMBEDDER = "text-embedding-nomic-embed-text-v1.5"
DRAFTER = "smollm2-135m-instruct"
WRITER = "llama-3.2-1b-instruct"


async def main(host: str | None) -> None:
    async with lms.AsyncClient(host) as client, contextlib.AsyncExitStack() as stack:
        started = time.perf_counter()

        def tracker(name: str) -> Callable[[float], None]:
            def on_progress(fraction: float) -> None:
                if fraction == 1.0:
                    print(f"  {name} ready after {time.perf_counter() - started:.2f} s")

            return on_progress

        async with asyncio.TaskGroup() as tg:
            embedder = tg.create_task(
                stack.enter_async_context(
                    client.embedding.loaded(EMBEDDER, on_progress=tracker("embedder"))
                )
            )
            drafter = tg.create_task(
                stack.enter_async_context(
                    client.llm.loaded(
                        DRAFTER,
                        config=lms.LlmLoadConfig(context_length=4096),
                        on_progress=tracker("drafter"),
                    )
                )
            )
            writer = tg.create_task(
                stack.enter_async_context(
                    client.llm.loaded(WRITER, ttl=600, on_progress=tracker("writer"))
                )
            )
        # No fixed identifiers: LM Studio's are unique across all its users, so the server
        # names each instance (the key, or "key:2" if another user has that one).
        ours = [embedder.result(), drafter.result(), writer.result()]
        took = time.perf_counter() - started
        print(f"loaded 3 models concurrently in {took:.2f} s")

        # The stages of the pipeline, each with its own model.
        for stage, handle in (
            ("embed", embedder.result()),
            ("draft", drafter.result()),
            ("write", writer.result()),
        ):
            info = await handle.get_info()
            print(f"{stage}: {handle.identifier} ({info.model_key}, context {info.context_length})")

        # Models are independent: query them all at once too.
        contexts = await asyncio.gather(
            embedder.result().get_context_length(),
            drafter.result().get_context_length(),
            writer.result().get_context_length(),
        )
        print(f"context lengths: {contexts}")
    # Leaving the exit stack unloaded every scoped instance (others' models stay loaded).
    async with lms.AsyncClient(host) as client:
        loaded = [*await client.llm.list_loaded(), *await client.embedding.list_loaded()]
        print(f"ours loaded after the pipeline: {[h.identifier for h in ours if h in loaded]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    asyncio.run(main(parser.parse_args().host))

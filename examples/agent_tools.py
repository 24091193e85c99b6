"""An agent: the model calls Python tools over several rounds, then gives a typed answer.

``act`` runs the official SDKs' loop (predict, run the tools the model asked for, predict
again); coroutine tools run on the event loop, plain ones in worker threads, several at once
with ``max_parallel_tool_calls``. Then ``respond(..., response_format=Report)`` returns a
typed ``Report``.

    lmstudio-async serve --port 41343 &
    python examples/agent_tools.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import msgspec

import lmstudio_async as lms


def plus(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    time.sleep(0.05)  # a blocking tool: it runs in a worker thread
    return a + b


async def times(a: float, b: float) -> float:
    """Multiply two numbers."""
    await asyncio.sleep(0.05)  # a coroutine tool: it runs on the event loop
    return a * b


class Report(msgspec.Struct):
    topic: str
    confidence: float


async def main(host: str | None) -> None:
    async with (
        lms.AsyncClient(host) as client,
        client.llm.loaded("llama-3.2-1b-instruct") as llm,  # unloaded at the end
    ):
        # Two independent calls in one round, run concurrently.
        chat = lms.Chat("You are a calculator.").add_user("plus 2 and 3, then times 4 and 5")
        result = await llm.act(
            chat, [plus, times], max_parallel_tool_calls=None, on_message=chat.append
        )
        print(f"act: {result.rounds} rounds, {len(chat)} messages")
        print(f"  tool results: {[r.content for r in chat.messages[-2].tool_results]}")
        print(f"  answer: {chat.messages[-1].content}")

        # A step that needs the previous result: one more round.
        steps: list[str] = []
        result = await llm.act(
            "plus 1 and 2, then times the result by 4",
            [plus, times],
            on_message=lambda m: steps.extend(c.name for c in m.tool_calls),
        )
        print(f"chained act: {result.rounds} rounds, tools in order: {steps}")

        # Typed structured output.
        report = (await llm.respond("Summarise the weather", response_format=Report)).parsed
        print(f"structured: {type(report).__name__} topic={report.topic!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    asyncio.run(main(parser.parse_args().host))

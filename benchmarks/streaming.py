"""``python -m benchmarks.streaming``: fragments per second through streamed predictions.

Our async and sync clients against the official ``lmstudio`` SDK (1.5, ``respond_stream``),
all in one process and the same run, against one stand-in server in a child process that
generates as fast as it can (``--tokens-per-second`` very high). Rounds are interleaved: in
each round every client streams the same batch of predictions, in an order rotated from
round to round. Fragments per second = fragments received / wall time of the batch; the
ratios are medians of per-round ratios. Targets: ours-async >= 2x official-async, ours-sync
>= 2x official-sync.

Then ``act`` with two tool rounds (the model calls ``add``, then answers with its result),
same interleaving: acts per second, ours against the official ``act`` (async and sync).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import lmstudio

import lmstudio_async

from ._standin import StandInProcess

MODEL: Final = "llama-3.2-1b-instruct"
PROMPT: Final = "Write a long story about a river."
CLIENTS: Final = ("ours-async", "official-async", "ours-sync", "official-sync")
ACT_PROMPT: Final = "Please add 2 and 3."


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


async def main_async(rounds: int, streams: int, tokens_per_second: float, acts: int) -> int:
    server = StandInProcess(extra_args=["--tokens-per-second", str(tokens_per_second)])
    host = server.start()
    try:
        async with (
            lmstudio_async.AsyncClient(host) as ours_async,
            lmstudio.AsyncClient(host) as official_async,
        ):
            ours_sync = lmstudio_async.Client(host)
            official_sync = lmstudio.Client(host)
            try:
                await ours_async.llm.load(MODEL)
                ours_llm = await ours_async.llm.model(MODEL)
                official_llm = await official_async.llm.model(MODEL)
                ours_sync_llm = ours_sync.llm.model(MODEL)
                official_sync_llm = official_sync.llm.model(MODEL)

                async def run_ours_async() -> int:
                    n = 0
                    for _ in range(streams):
                        async for _fragment in ours_llm.respond_stream(PROMPT):
                            n += 1
                    return n

                async def run_official_async() -> int:
                    n = 0
                    for _ in range(streams):
                        stream = await official_llm.respond_stream(PROMPT)
                        async for _fragment in stream:
                            n += 1
                    return n

                async def run_ours_sync() -> int:
                    n = 0
                    for _ in range(streams):
                        for _fragment in ours_sync_llm.respond_stream(PROMPT):
                            n += 1
                    return n

                async def run_official_sync() -> int:
                    n = 0
                    for _ in range(streams):
                        for _fragment in official_sync_llm.respond_stream(PROMPT):
                            n += 1
                    return n

                runners: dict[str, Callable[[], Awaitable[int]]] = {
                    "ours-async": run_ours_async,
                    "official-async": run_official_async,
                    "ours-sync": run_ours_sync,
                    "official-sync": run_official_sync,
                }
                for run in runners.values():  # warm-up
                    await run()
                rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
                fragments: dict[str, int] = {}
                for r in range(rounds):
                    order = CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]
                    for name in order:
                        started = time.perf_counter()
                        n = await runners[name]()
                        rates[name].append(n / (time.perf_counter() - started))
                        fragments[name] = n
                report(rates, fragments, rounds, streams, tokens_per_second)

                async def act_ours_async() -> int:
                    return sum(
                        [(await ours_llm.act(ACT_PROMPT, [add])).rounds for _ in range(acts)]
                    )

                async def act_official_async() -> int:
                    return sum(
                        [(await official_llm.act(ACT_PROMPT, [add])).rounds for _ in range(acts)]
                    )

                async def act_ours_sync() -> int:
                    return sum([ours_sync_llm.act(ACT_PROMPT, [add]).rounds for _ in range(acts)])

                async def act_official_sync() -> int:
                    return sum(
                        [official_sync_llm.act(ACT_PROMPT, [add]).rounds for _ in range(acts)]
                    )

                act_runners: dict[str, Callable[[], Awaitable[int]]] = {
                    "ours-async": act_ours_async,
                    "official-async": act_official_async,
                    "ours-sync": act_ours_sync,
                    "official-sync": act_official_sync,
                }
                for run in act_runners.values():  # warm-up
                    await run()
                act_rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
                for r in range(rounds):
                    order = CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]
                    for name in order:
                        started = time.perf_counter()
                        n = await act_runners[name]()
                        assert n == 2 * acts, f"{name}: {n} prediction rounds for {acts} acts"
                        act_rates[name].append(acts / (time.perf_counter() - started))
                report_acts(act_rates, rounds, acts)
            finally:
                ours_sync.close()
                official_sync.close()
    finally:
        server.stop()
    return 0


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def report(
    rates: dict[str, list[float]],
    fragments: dict[str, int],
    rounds: int,
    streams: int,
    tokens_per_second: float,
) -> None:
    print(
        f"Streaming: {rounds} interleaved rounds x {streams} streams of "
        f"~{fragments['ours-async'] // streams} fragments; stand-in at "
        f"{tokens_per_second:g} tok/s in a child process; Python {sys.version.split()[0]}, "
        f"lmstudio {lmstudio.__version__}"
    )
    print()
    print("| client | fragments/s (median) | min | max | vs official |")
    print("|---|---:|---:|---:|---:|")
    pairs: dict[str, Any] = {
        "ours-async": "official-async",
        "official-async": None,
        "ours-sync": "official-sync",
        "official-sync": None,
    }
    for name in CLIENTS:
        values = rates[name]
        other = pairs[name]
        versus = f"{ratio(values, rates[other]):.2f}x" if other else "1.00x"
        print(
            f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} | {versus} |"
        )


def report_acts(rates: dict[str, list[float]], rounds: int, acts: int) -> None:
    print()
    print(
        f"act with two tool rounds: {rounds} interleaved rounds x {acts} acts "
        "(each: a tool-call prediction, the tool, the answer)"
    )
    print()
    print("| client | acts/s (median) | min | max | vs official |")
    print("|---|---:|---:|---:|---:|")
    for name in CLIENTS:
        values = rates[name]
        other = {"ours-async": "official-async", "ours-sync": "official-sync"}.get(name)
        versus = f"{ratio(values, rates[other]):.2f}x" if other else "1.00x"
        print(
            f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} | {versus} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--streams", type=int, default=20, help="predictions per batch")
    parser.add_argument("--tokens-per-second", type=float, default=1e7)
    parser.add_argument("--acts", type=int, default=10, help="act() calls per batch")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args.rounds, args.streams, args.tokens_per_second, args.acts))


if __name__ == "__main__":
    sys.exit(main())

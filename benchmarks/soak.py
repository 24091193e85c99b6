"""``python -m benchmarks.soak --seconds N``: random multi-model traffic through a model pool
while faults are injected, checking that nothing hangs, leaks or breaks the budget.

Two stand-in hosts (in this process, so that they can be killed and restarted on the same
port) serve a pool with a small memory budget. Worker tasks lease random models (LLMs and an
embedding model) and make random calls (``respond``, a stream they may leave early,
``embed``, ``tokenize``). A fault task keeps injecting, at random: a host killed and
restarted, dropped sockets, slow loads, TTL expiries (the simulated clock jumps), and
instances unloaded behind the pool's back.

Checked, failing the run (exit status 1) otherwise:

- every call ends in a result or a typed error (an ``LMStudioError``) within its deadline;
- peak memory on every host (and every incarnation of it) stays within the pool's budget;
- after ``aclose()`` nothing the pool loaded stays loaded;
- after the clients close, no task of ours is left and no server connection stays open.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

SIZE = 1_000_000_000
MODELS = [f"soak-{i}" for i in range(6)]
EMBEDDER = "soak-embed"
MODEL_BYTES = 1_051_200_000  # the stand-in's estimate for one of MODELS (default context)
BUDGET = 2 * MODEL_BYTES + MODEL_BYTES // 2 + 200_000_000  # two LLMs and the embedder
LEASE_TIMEOUT = 8.0
CALL_TIMEOUT = lms.Timeouts(idle=4.0, total=8.0, connect=2.0)
DEADLINE = 20.0  # lease + call, with room; a call still running after it is a hang
TTL = 30.0


def catalog() -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = [
        {
            "type": "llm",
            "modelKey": key,
            "displayName": key,
            "path": f"soak/{key}/{key}.gguf",
            "format": "gguf",
            "sizeBytes": SIZE,
            "maxContextLength": 2048,
        }
        for key in MODELS
    ]
    models.append(
        {
            "type": "embedding",
            "modelKey": EMBEDDER,
            "displayName": EMBEDDER,
            "path": f"soak/{EMBEDDER}/{EMBEDDER}.gguf",
            "format": "gguf",
            "sizeBytes": 100_000_000,
            "maxContextLength": 512,
        }
    )
    return models


def new_server(port: int = 0) -> ThreadedStandInServer:
    return ThreadedStandInServer(
        port,
        catalog=catalog(),
        memory_gb=BUDGET / 1e9,
        load_seconds=0.1,
        tokens_per_second=400,
        frame_log_size=10,
    ).start()


@dataclass
class Report:
    calls: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    slowest: float = 0.0
    peaks: list[int] = field(default_factory=list)


class Hosts:
    """The stand-ins, restartable on their ports; remembers every incarnation's peak."""

    def __init__(self, count: int) -> None:
        self.servers = [new_server() for _ in range(count)]
        self.peaks: list[int] = []

    def restart(self, index: int) -> None:
        old = self.servers[index]
        self.peaks.append(old.peak_memory_bytes)
        old.stop()
        self.servers[index] = new_server(old.port)

    def stop(self) -> None:
        for server in self.servers:
            self.peaks.append(server.peak_memory_bytes)
            server.stop()


async def one_call(pool: lms.AsyncModelPool, rng: random.Random) -> None:
    choice = rng.random()
    if choice < 0.15:
        async with pool.embedding(EMBEDDER, timeout=LEASE_TIMEOUT) as embedder:
            await embedder.embed(["soak", "test"], timeout=CALL_TIMEOUT)
        return
    weights = [1 / (rank + 1) for rank in range(len(MODELS))]
    key = rng.choices(MODELS, weights)[0]
    async with pool.llm(key, timeout=LEASE_TIMEOUT) as model:
        if choice < 0.6:
            reply = await model.respond(
                "soak", config={"max_tokens": rng.randint(2, 40)}, timeout=CALL_TIMEOUT
            )
            assert reply.stop_reason != "modelUnloaded", "a truncated reply returned as success"
        elif choice < 0.85:
            stream = model.respond_stream(
                "soak stream", config={"max_tokens": 40}, timeout=CALL_TIMEOUT
            )
            async with stream:
                async for index, _ in aenumerate(stream):
                    if index == 3 and rng.random() < 0.5:
                        break  # leave early: the prediction is cancelled, the model stays
        else:
            await model.tokenize("soak tokens", timeout=CALL_TIMEOUT)


async def aenumerate(stream: Any) -> Any:
    index = 0
    async for item in stream:
        yield index, item
        index += 1


async def worker(pool: lms.AsyncModelPool, seed: int, until: float, report: Report) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        started = loop.time()
        report.calls += 1
        try:
            async with asyncio.timeout(DEADLINE):
                await one_call(pool, rng)
        except TimeoutError as exc:
            if isinstance(exc, lms.LMStudioError):
                report.errors[type(exc).__name__] += 1
            else:
                report.violations.append(f"a call hung past {DEADLINE}s")
        except lms.LMStudioError as exc:
            report.errors[type(exc).__name__] += 1
        except AssertionError as exc:
            report.violations.append(str(exc))
        except Exception as exc:  # an untyped error is what we look for
            report.violations.append(f"untyped error: {exc!r}")
        else:
            report.ok += 1
        report.slowest = max(report.slowest, loop.time() - started)


async def faults(hosts: Hosts, until: float, seed: int, report: Report) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    kinds: list[str] = []
    while loop.time() < until - 2:
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        index = rng.randrange(len(hosts.servers))
        server = hosts.servers[index]
        if not kinds:  # every kind once per round, in a random order
            kinds = ["restart", "drop", "slow", "ttl", "unload"]
            rng.shuffle(kinds)
        kind = kinds.pop()
        report.faults[kind] += 1
        if kind == "restart":
            await asyncio.to_thread(hosts.restart, index)
        elif kind == "drop":
            server.faults.drop_connections()
        elif kind == "slow":
            server.load_seconds = 1.5
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            server.load_seconds = 0.1
        elif kind == "ttl":
            server.advance_clock(TTL + 1)
        else:
            server.unload_all()


async def soak(seconds: float, workers: int, seed: int) -> Report:
    report = Report()
    hosts = Hosts(2)
    ours_before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    try:
        clients = [lms.AsyncClient(s.host, timeout=CALL_TIMEOUT) for s in hosts.servers]
        pool = lms.AsyncModelPool(
            clients, memory_budget=BUDGET, ttl=TTL, reconcile_interval=1.0, load_timeout=10
        )
        until = asyncio.get_running_loop().time() + seconds
        try:
            await asyncio.gather(
                faults(hosts, until, seed, report),
                *(worker(pool, seed + 1 + i, until, report) for i in range(workers)),
            )
        finally:
            await pool.aclose()
        for server in hosts.servers:
            left = [i.identifier for i in server.loaded_instances() if "@pool-" in i.identifier]
            if left:
                report.violations.append(f"still loaded after aclose: {left}")
        for client in clients:
            await client.aclose()
        await asyncio.sleep(0.5)
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        leftover -= ours_before
        if leftover:
            report.violations.append(f"tasks left: {sorted(t.get_name() for t in leftover)}")
        for server in hosts.servers:
            for _ in range(50):
                if server.connection_count() == 0:
                    break
                await asyncio.sleep(0.05)
            else:
                report.violations.append(
                    f"{server.connection_count()} connection(s) still open on {server.host}"
                )
    finally:
        await asyncio.to_thread(hosts.stop)
    report.peaks = hosts.peaks
    for peak in hosts.peaks:
        if peak > BUDGET:
            report.violations.append(f"peak memory {peak} over the budget {BUDGET}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long (default 180)")
    parser.add_argument("--workers", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = asyncio.run(soak(args.seconds, args.workers, args.seed))
    elapsed = time.perf_counter() - started
    errors = ", ".join(f"{k} {v}" for k, v in report.errors.most_common()) or "none"
    faults_text = ", ".join(f"{k} {v}" for k, v in sorted(report.faults.items()))
    print(f"soak: {elapsed:.0f} s, {args.workers} workers, seed {args.seed}")
    print(f"calls {report.calls}: ok {report.ok}; typed errors: {errors}")
    print(f"faults injected: {faults_text}")
    print(f"slowest call {report.slowest:.1f} s (deadline {DEADLINE:g} s)")
    print(
        f"peak memory per host incarnation (budget {BUDGET / 1e9:.2f} GB): "
        + ", ".join(f"{p / 1e9:.2f}" for p in report.peaks)
    )
    if report.violations:
        print(f"VIOLATIONS ({len(report.violations)}):")
        for line in collections.Counter(report.violations).most_common(20):
            print(f"  {line[1]}x {line[0]}")
        return 1
    print("no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())

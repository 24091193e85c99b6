"""Run every workload, interleaved, against one stand-in server in a child process.

Clients compared side by side in the same process:

- ``ours-async`` / ``ours-sync``: :class:`lmstudio_async.AsyncClient` / ``Client``;
- ``official-async`` / ``official-sync``: ``lmstudio.AsyncClient`` / ``lmstudio.Client`` (1.5);
- ``raw``: one aiohttp WebSocket + msgspec, a plain request/response loop (lower bound);
- ``raw-mux``: the same with one reader task and a future per ``callId``: the least a
  client multiplexing calls over aiohttp's WebSocket must do, and so the floor of ours,
  which is built the same way.

Each ratio target has its own pairing: ``rounds`` interleaved rounds of just the two
clients it compares, after a fixed warm-up, one batch of each per round, the order
swapped every round. A ratio is the median over rounds of the per-round ratio of batch
medians. Workloads without a ratio target rotate all their clients in one set of rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import lmstudio

import lmstudio_async
from lmstudio_async import Client as OurClient
from lmstudio_async._protocol.kvconfig import load_config_stack

from ._raw import RawClient
from ._standin import StandInProcess
from ._stats import Series, paired_ratio

PRELOAD: Final = ("llama-3.2-1b-instruct", "mobilevlm_v2-1.7b", "qwen2.5-7b-instruct-1m")
MODEL_KEY: Final = "llama-3.2-1b-instruct"  # already loaded: model(key) is the fast path
LOAD_KEY: Final = "smollm2-135m-instruct"  # loaded and unloaded by workload 3
SETTLE_SECONDS: Final = 0.03  # untimed run of a contender before each of its batches
SYNC_THREADS: Final = 8
DEFAULT_JSON: Final = Path(__file__).with_name("results.json")

Batch = Callable[[int], list[float]]
"""Run ``n`` operations (or bursts); returns one duration in seconds per sample."""


@dataclass(frozen=True)
class Plan:
    """Iteration counts; ``quick`` shrinks everything to keep the smoke test fast."""

    rounds: int  # rounds of workloads that rotate all their clients
    rounds_paired: int  # rounds of each pairing (the ratio targets)
    rounds_large: int  # rounds of the 10k-concurrent workload (each burst is long)
    rpc: int  # sequential small RPCs per batch (fast clients)
    rpc_slow: int  # per batch for the official clients (they are slower)
    model: int
    model_slow: int
    load: int
    load_slow: int
    sizes: tuple[int, int, int]  # concurrent burst sizes (100, 1000, 10k)
    bursts_small: int
    bursts_mid: int
    bursts_mid_slow: int
    bursts_large: int
    sync_calls_per_thread: int
    sync_calls_per_thread_slow: int
    cold: int
    cold_slow: int
    memory_warmup: int
    memory_calls: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            rounds=20,
            rounds_paired=40,
            rounds_large=6,
            rpc=125,
            rpc_slow=40,
            model=75,
            model_slow=30,
            load=16,
            load_slow=8,
            sizes=(100, 1000, 10_000),
            bursts_small=3,
            bursts_mid=1,
            bursts_mid_slow=1,
            bursts_large=1,
            sync_calls_per_thread=30,
            sync_calls_per_thread_slow=15,
            cold=3,
            cold_slow=1,
            memory_warmup=10_000,
            memory_calls=100_000,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            rounds=2,
            rounds_paired=2,
            rounds_large=2,
            rpc=20,
            rpc_slow=10,
            model=10,
            model_slow=5,
            load=3,
            load_slow=2,
            sizes=(10, 50, 200),
            bursts_small=2,
            bursts_mid=1,
            bursts_mid_slow=1,
            bursts_large=1,
            sync_calls_per_thread=5,
            sync_calls_per_thread_slow=3,
            cold=2,
            cold_slow=1,
            memory_warmup=200,
            memory_calls=1_000,
        )


@dataclass
class Row:
    key: str  # stable id of the workload, e.g. "small_rpc"
    workload: str
    client: str
    unit: str  # "us" per call, or "calls/s"
    series: Series
    per_sample: int = 1  # operations per sample (bursts: N calls per sample)
    note: str = ""

    def value(self, stat: float) -> float:
        if self.unit == "calls/s":
            return self.per_sample / stat
        return stat * 1e6 / self.per_sample

    def cpu_us_per_call(self) -> float:
        """Client CPU (all threads of this process) per call, in µs."""
        return self.series.cpu_per_sample() * 1e6 / self.per_sample

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "workload": self.workload,
            "client": self.client,
            "unit": self.unit,
            "median": self.value(self.series.median()),
            "p95": self.value(self.series.p95()),
            "client_cpu_us_per_call": self.cpu_us_per_call(),
            "samples": self.series.n,
            "ops_per_sample": self.per_sample,
            "round_medians": [self.value(m) for m in self.series.round_medians()],
            "note": self.note,
        }


@dataclass
class Target:
    name: str
    value: float
    op: str  # "<=" or ">="
    limit: float
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "value": self.value,
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "pass": self.passed,
        }


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    pairs: dict[tuple[str, str, str], tuple[Series, Series]] = field(default_factory=dict)
    """(workload key, a, b) -> the two series of a pairing that alternated a with b."""
    targets: list[Target] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def pair_ratio(self, key: str, a: str, b: str) -> float:
        """Median over the rounds of the (a, b) pairing of a's round median / b's."""
        sa, sb = self.pairs[(key, a, b)]
        return paired_ratio(sa, sb)

    def row(self, key: str, client: str) -> Row:
        for row in self.rows:
            if row.key == key and row.client == client:
                return row
        raise KeyError((key, client))


# --- timing helpers ----------------------------------------------------------------------


_T0 = time.perf_counter()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _timed_async(op: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(n):
        t0 = clock()
        await op()
        out.append(clock() - t0)
    return out


def _timed_sync(op: Callable[[], Any], n: int) -> list[float]:
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(n):
        t0 = clock()
        op()
        out.append(clock() - t0)
    return out


async def _bursts(op: Callable[[], Awaitable[Any]], size: int, bursts: int) -> list[float]:
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(bursts):
        t0 = clock()
        await asyncio.gather(*[op() for _ in range(size)])
        out.append(clock() - t0)
    return out


def _interleave(
    name: str,
    contenders: dict[str, tuple[Batch, int]],
    rounds: int,
    warmup: dict[str, int] | None = None,
) -> dict[str, Series]:
    """Warm every contender up, then run ``rounds`` rounds of one batch each, rotating order.

    Before each batch, untimed: a ``gc.collect()`` (so no client pays for another's
    garbage), then a settle of about ``SETTLE_SECONDS`` of the same contender's operations
    (none for operations slower than that), so its first timed call does not pay for the
    switch from the previous contender. :func:`main` freezes the objects alive after
    setup, which keeps that collection short: a full collection of the unfrozen heap took
    about 70 ms of one core, and right after it a client that wakes threads across cores
    (the sync client) ran its next ~20 load+unload calls up to 2x slower (see
    docs/performance.md).
    """
    names = list(contenders)
    settle: dict[str, int] = {}
    for client in names:
        batch, n = contenders[client]
        samples = batch(max(1, (warmup or {}).get(client, n // 4 or 1)))
        settle[client] = int(SETTLE_SECONDS / max(statistics.median(samples), 1e-6))
    series = {client: Series() for client in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order.reverse()
        for client in order:
            batch, n = contenders[client]
            gc.collect()
            if settle[client]:
                batch(settle[client])
            cpu0 = time.process_time()
            samples = batch(n)
            series[client].add(samples, time.process_time() - cpu0)
    _log(f"  {name}: done at {time.perf_counter() - _T0:.1f} s")
    return series


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- the benchmark -----------------------------------------------------------------------


class Bench:
    """Owns the loop (an :class:`asyncio.Runner` in this thread) and the long-lived clients."""

    def __init__(self, host: str, plan: Plan) -> None:
        self.host = host
        self.plan = plan
        self.runner = asyncio.Runner()
        self.results = Results()
        self.ours_async = lmstudio_async.AsyncClient(host)
        self.ours_sync = OurClient(host)
        self.official_sync = lmstudio.Client(host)
        self.official_async = lmstudio.AsyncClient(host)
        self.raw = RawClient(host)
        self.raw_mux = RawClient(host)
        self._official_stop: asyncio.Event | None = None
        self._official_keeper: asyncio.Task[None] | None = None
        self.pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="bench-sync")

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.runner.run(coro)  # type: ignore[arg-type]

    # --- setup / teardown ---------------------------------------------------------

    async def _keep_official_async(self, ready: asyncio.Event) -> None:
        # lmstudio.AsyncClient must be entered and exited in the same task (task groups).
        self._official_stop = asyncio.Event()
        async with self.official_async:
            ready.set()
            await self._official_stop.wait()

    async def _setup(self) -> None:
        for key in PRELOAD:
            await self.ours_async.llm.load(key)
        ready = asyncio.Event()
        self._official_keeper = asyncio.create_task(self._keep_official_async(ready))
        await ready.wait()
        await self.raw.connect()
        await self.raw_mux.connect()
        self.raw_mux.start_reader()
        loaded = await self.ours_async.llm.list_loaded()
        assert len(loaded) == len(PRELOAD), loaded

    def setup(self) -> None:
        self.run(self._setup())
        # Sanity: every client sees the same server state.
        assert len(self.ours_sync.llm.list_loaded()) == len(PRELOAD)
        assert len(self.official_sync.llm.list_loaded()) == len(PRELOAD)

    async def _close_official_async(self) -> None:
        if self._official_stop is not None and self._official_keeper is not None:
            self._official_stop.set()
            await self._official_keeper
            self._official_stop = None

    def close_shared(self) -> None:
        """Close everything but ``ours_async`` (kept for the memory workload)."""
        self.ours_sync.close()
        self.official_sync.close()
        self.run(self._close_official_async())
        self.run(self.raw.close())
        self.run(self.raw_mux.close())
        self.pool.shutdown()

    def close(self) -> None:
        try:
            self.run(self.ours_async.aclose())
        finally:
            self.runner.close()

    # --- workloads ----------------------------------------------------------------

    def _async_batch(self, op: Callable[[], Awaitable[Any]]) -> Batch:
        return lambda n: self.run(_timed_async(op, n))

    @staticmethod
    def _sync_batch(op: Callable[[], Any]) -> Batch:
        return lambda n: _timed_sync(op, n)

    def _paired(
        self,
        key: str,
        label: str,
        contenders: dict[str, tuple[Batch, int]],
        pairs: list[tuple[str, str]],
        rounds: int,
        warmup: dict[str, int] | None = None,
    ) -> dict[str, Series]:
        """Run each (a, b) pairing as its own interleaved rounds of just those two clients.

        A ratio then compares batches that ran back to back, never batches several
        other clients apart. A client's table row merges its rounds of every pairing.
        """
        merged: dict[str, Series] = {}
        for a, b in pairs:
            got = _interleave(
                f"{label}: {a} vs {b}", {a: contenders[a], b: contenders[b]}, rounds, warmup
            )
            self.results.pairs[(key, a, b)] = (got[a], got[b])
            for client in (a, b):
                merged.setdefault(client, Series()).extend(got[client])
        return {client: merged[client] for client in contenders if client in merged}

    def small_rpc(self) -> None:
        p = self.plan
        c = {
            "ours-async": (self._async_batch(self.ours_async.llm.list_loaded), p.rpc),
            "ours-sync": (self._sync_batch(self.ours_sync.llm.list_loaded), p.rpc),
            "official-async": (self._async_batch(self.official_async.llm.list_loaded), p.rpc_slow),
            "official-sync": (self._sync_batch(self.official_sync.llm.list_loaded), p.rpc_slow),
            "raw": (self._async_batch(lambda: self.raw.rpc_direct("listLoaded")), p.rpc),
            "raw-mux": (self._async_batch(lambda: self.raw_mux.rpc("listLoaded")), p.rpc),
        }
        pairs = [
            ("ours-async", "raw-mux"),
            ("official-async", "ours-async"),
            ("ours-sync", "ours-async"),
            ("official-sync", "ours-sync"),
            ("raw-mux", "raw"),
        ]
        measured = self._paired("small_rpc", "1 small RPC", c, pairs, p.rounds_paired)
        for client, s in measured.items():
            self.results.rows.append(
                Row("small_rpc", "1. list_loaded (3 loaded), sequential", client, "us", s)
            )

    def model_fast_path(self) -> None:
        p = self.plan
        stack = load_config_stack("llm", None)
        creation = {"identifier": MODEL_KEY, "loadConfigStack": stack}
        c = {
            "ours-async": (
                self._async_batch(lambda: self.ours_async.llm.model(MODEL_KEY)),
                p.model,
            ),
            "ours-sync": (self._sync_batch(lambda: self.ours_sync.llm.model(MODEL_KEY)), p.model),
            "official-async": (
                self._async_batch(lambda: self.official_async.llm.model(MODEL_KEY)),
                p.model_slow,
            ),
            "official-sync": (
                self._sync_batch(lambda: self.official_sync.llm.model(MODEL_KEY)),
                p.model_slow,
            ),
            "raw": (
                self._async_batch(lambda: self.raw.channel_direct("getOrLoad", creation)),
                p.model,
            ),
        }
        for client, s in _interleave("2 model(key)", c, p.rounds).items():
            self.results.rows.append(Row("model", "2. model(key), already loaded", client, "us", s))

    def load_unload(self) -> None:
        p = self.plan

        async def ours_async() -> None:
            model = await self.ours_async.llm.load(LOAD_KEY)
            await model.unload()

        def ours_sync() -> None:
            model = self.ours_sync.llm.load(LOAD_KEY)
            model.unload()

        async def official_async() -> None:
            model = await self.official_async.llm.load_new_instance(LOAD_KEY, ttl=None)
            await model.unload()

        def official_sync() -> None:
            model = self.official_sync.llm.load_new_instance(LOAD_KEY, ttl=None)
            model.unload()

        c = {
            "ours-async": (self._async_batch(ours_async), p.load),
            "ours-sync": (self._sync_batch(ours_sync), p.load),
            "official-async": (self._async_batch(official_async), p.load_slow),
            "official-sync": (self._sync_batch(official_sync), p.load_slow),
        }
        pairs = [
            ("ours-sync", "ours-async"),
            ("official-async", "ours-async"),
            ("official-sync", "ours-sync"),
        ]
        measured = self._paired("load_unload", "3 load+unload", c, pairs, p.rounds_paired)
        for client, s in measured.items():
            self.results.rows.append(
                Row("load_unload", "3. load + unload (20 progress msgs)", client, "us", s)
            )

    def throughput(self) -> None:
        p = self.plan
        ours = self.ours_async.llm.list_loaded
        official = self.official_async.llm.list_loaded

        def raw() -> Awaitable[Any]:
            return self.raw_mux.rpc("listLoaded")

        def bursts(op: Callable[[], Awaitable[Any]], size: int) -> Batch:
            return lambda n: self.run(_bursts(op, size, n))

        small, mid, large = p.sizes
        plans: list[tuple[int, dict[str, tuple[Batch, int]]]] = [
            (
                small,
                {
                    "ours-async": (bursts(ours, small), p.bursts_small),
                    "official-async": (bursts(official, small), p.bursts_small),
                    "raw-mux": (bursts(raw, small), p.bursts_small),
                },
            ),
            (
                mid,
                {
                    "ours-async": (bursts(ours, mid), p.bursts_mid),
                    "official-async": (bursts(official, mid), p.bursts_mid_slow),
                    "raw-mux": (bursts(raw, mid), p.bursts_mid),
                },
            ),
            (
                large,
                {
                    "ours-async": (bursts(ours, large), p.bursts_large),
                    "raw-mux": (bursts(raw, large), p.bursts_large),
                },
            ),
        ]
        for (key, size), (_, c) in zip(
            (("gather_small", small), ("gather_mid", mid), ("gather_large", large)),
            plans,
            strict=True,
        ):
            warm = {name: 1 for name in c}
            rounds = p.rounds_large if key == "gather_large" else p.rounds
            label = f"4 gather x{size}"
            if key == "gather_mid":
                pairs = [("official-async", "ours-async"), ("raw-mux", "ours-async")]
                measured = self._paired(key, label, c, pairs, p.rounds_paired, warm)
            else:
                measured = _interleave(label, c, rounds, warm)
            for client, s in measured.items():
                self.results.rows.append(
                    Row(
                        key,
                        f"4. {size} concurrent list_loaded, 1 async client",
                        client,
                        "calls/s",
                        s,
                        size,
                    )
                )

        # Per-call cost at 10k concurrent vs at 100 (ours-async): its own pairing, so each
        # 10k burst is compared with 100-call bursts run right next to it, not with the
        # 100-call phase a minute earlier. Burst times / size = per-call times.
        at_large, at_small = f"ours-async x{large}", f"ours-async x{small}"
        scale = _interleave(
            f"4 per-call cost x{large} vs x{small}",
            {
                at_large: (bursts(ours, large), p.bursts_large),
                at_small: (bursts(ours, small), p.bursts_small),
            },
            p.rounds_large,
            {at_large: 1, at_small: 1},
        )
        self.results.pairs[("gather_scale", at_large, at_small)] = (
            scale[at_large].scaled(1 / large),
            scale[at_small].scaled(1 / small),
        )

        def threaded(call: Callable[[], Any], per_thread: int) -> Batch:
            def one_thread() -> None:
                for _ in range(per_thread):
                    call()

            def batch(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    futures = [self.pool.submit(one_thread) for _ in range(SYNC_THREADS)]
                    for f in futures:
                        f.result()
                    out.append(time.perf_counter() - t0)
                return out

            return batch

        k, k_slow = p.sync_calls_per_thread, p.sync_calls_per_thread_slow
        c = {
            "ours-sync": (threaded(self.ours_sync.llm.list_loaded, k), 2),
            "official-sync": (threaded(self.official_sync.llm.list_loaded, k_slow), 2),
        }
        per = {"ours-sync": k * SYNC_THREADS, "official-sync": k_slow * SYNC_THREADS}
        for client, s in _interleave("4 sync x8 threads", c, p.rounds, {n: 1 for n in c}).items():
            self.results.rows.append(
                Row(
                    "sync_threads",
                    f"4. list_loaded, 1 sync client shared by {SYNC_THREADS} threads",
                    client,
                    "calls/s",
                    s,
                    per[client],
                )
            )

    def cold_start(self) -> None:
        """Create a client, make one call, close it (runs after the shared clients closed)."""
        p = self.plan
        host = self.host

        async def ours_async() -> None:
            async with lmstudio_async.AsyncClient(host) as client:
                await client.llm.list_loaded()

        def ours_sync() -> None:
            with OurClient(host) as client:
                client.llm.list_loaded()

        async def official_async() -> None:
            async with lmstudio.AsyncClient(host) as client:
                await client.llm.list_loaded()

        def official_sync() -> None:
            with lmstudio.Client(host) as client:
                client.llm.list_loaded()

        async def raw() -> None:
            client = RawClient(host)
            await client.connect()
            await client.rpc_direct("listLoaded")
            await client.close()

        async def raw_mux() -> None:
            client = RawClient(host)
            await client.connect()
            client.start_reader()
            await client.rpc("listLoaded")
            await client.close()

        c = {
            "ours-async": (self._async_batch(ours_async), p.cold),
            "ours-sync": (self._sync_batch(ours_sync), p.cold),
            "official-async": (self._async_batch(official_async), p.cold_slow),
            "official-sync": (self._sync_batch(official_sync), p.cold_slow),
            "raw": (self._async_batch(raw), p.cold),
            "raw-mux": (self._async_batch(raw_mux), p.cold),
        }
        warm = {name: 1 if p.rounds < 5 else 2 for name in c}
        for client, s in _interleave("5 cold start", c, p.rounds, warm).items():
            self.results.rows.append(
                Row("cold_start", "5. cold start: create, first call, close", client, "us", s)
            )

    def memory(self) -> None:
        p = self.plan
        op = self.ours_async.llm.list_loaded

        async def calls(n: int) -> None:
            for _ in range(n):
                await op()

        self.run(calls(p.memory_warmup))
        gc.collect()
        rss0 = _rss_bytes()
        checkpoints: list[tuple[int, int]] = [(0, 0)]
        step = max(1, p.memory_calls // 10)
        done = 0
        t0 = time.perf_counter()
        while done < p.memory_calls:
            n = min(step, p.memory_calls - done)
            self.run(calls(n))
            done += n
            gc.collect()
            checkpoints.append((done, _rss_bytes() - rss0))
        elapsed = time.perf_counter() - t0
        growth = checkpoints[-1][1]
        per_100k = growth * 100_000 / done
        self.results.memory = {
            "calls": done,
            "warmup_calls": p.memory_warmup,
            "rss_start_bytes": rss0,
            "rss_growth_bytes": growth,
            "rss_growth_per_100k_bytes": per_100k,
            "extrapolated": done < 100_000,
            "checkpoints": checkpoints,
            "seconds": elapsed,
        }
        _log(f"  6 memory: {done} calls in {elapsed:.1f} s, RSS growth {growth / 1e6:.2f} MB")


# --- targets and report --------------------------------------------------------------------


def compute_targets(res: Results, plan: Plan) -> list[Target]:
    def s(key: str, client: str) -> Series:
        return res.row(key, client).series

    small, mid, large = plan.sizes
    targets = [
        Target(
            "async small RPC: ours-async / raw-mux",
            res.pair_ratio("small_rpc", "ours-async", "raw-mux"),
            "<=",
            1.10,
        ),
        Target(
            "async small RPC: official-async / ours-async",
            res.pair_ratio("small_rpc", "official-async", "ours-async"),
            ">=",
            2.5,
        ),
        Target(
            "sync small RPC: ours-sync / ours-async",
            res.pair_ratio("small_rpc", "ours-sync", "ours-async"),
            "<=",
            1.8,
        ),
        Target(
            "sync small RPC: official-sync / ours-sync",
            res.pair_ratio("small_rpc", "official-sync", "ours-sync"),
            ">=",
            2.5,
        ),
        Target(
            "load+unload: ours-sync / ours-async",
            res.pair_ratio("load_unload", "ours-sync", "ours-async"),
            "<=",
            1.3,
        ),
        Target(
            f"{mid} concurrent: throughput ours-async / official-async",
            res.pair_ratio("gather_mid", "official-async", "ours-async"),
            ">=",
            6.0,
        ),
        Target(
            f"per-call wall time at {large} concurrent / at {small}",
            res.pair_ratio("gather_scale", f"ours-async x{large}", f"ours-async x{small}"),
            "<=",
            1.2,
        ),
    ]
    targets.append(
        Target(
            "cold start: ours-async / raw-mux",
            paired_ratio(s("cold_start", "ours-async"), s("cold_start", "raw-mux")),
            "<=",
            1.2,
        )
    )
    targets.append(
        Target(
            "cold start: official-async / ours-async",
            paired_ratio(s("cold_start", "official-async"), s("cold_start", "ours-async")),
            ">=",
            40.0,
        )
    )
    mem = res.memory.get("rss_growth_per_100k_bytes", float("nan")) / 1e6
    targets.append(Target("RSS growth per 100k calls (ours-async)", mem, "<=", 5.0, "MB"))
    return targets


def _fmt(value: float, unit: str) -> str:
    if unit == "calls/s":
        return f"{value:,.0f}"
    if value >= 10_000:
        return f"{value / 1000:,.1f} ms"
    return f"{value:,.0f} µs" if value >= 100 else f"{value:,.1f} µs"


def markdown(res: Results) -> str:
    lines = [
        "| Workload | Client | Median | p95 | Client CPU / call | Samples |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in res.rows:
        unit = row.unit
        med, p95 = row.value(row.series.median()), row.value(row.series.p95())
        suffix = " calls/s" if unit == "calls/s" else ""
        per = f" × {row.per_sample}" if row.per_sample > 1 else ""
        lines.append(
            f"| {row.workload} | {row.client} | {_fmt(med, unit)}{suffix} | "
            f"{_fmt(p95, unit)}{suffix} | {_fmt(row.cpu_us_per_call(), 'us')} | "
            f"{row.series.n}{per} |"
        )
    mem = res.memory
    if mem:
        extrap = " (extrapolated)" if mem["extrapolated"] else ""
        lines.append(
            f"| 6. RSS growth over {mem['calls']:,} list_loaded (after {mem['warmup_calls']:,} "
            f"warm-up) | ours-async | {mem['rss_growth_bytes'] / 1e6:+.2f} MB | "
            f"{mem['rss_growth_per_100k_bytes'] / 1e6:+.2f} MB / 100k{extrap} | | "
            f"{mem['calls']:,} |"
        )
    lines += ["", "| Target | Measured | Goal | Result |", "|---|---:|---:|---|"]
    for t in res.targets:
        value = f"{t.value:.2f}{'×' if t.unit == 'x' else ' ' + t.unit}"
        goal = f"{t.op} {t.limit:g}{'×' if t.unit == 'x' else ' ' + t.unit}"
        lines.append(f"| {t.name} | {value} | {goal} | {'PASS' if t.passed else 'MISS'} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": version("aiohttp"),
        "msgspec": version("msgspec"),
        "lmstudio": version("lmstudio"),
        "httpx-ws": version("httpx-ws"),
        "lmstudio_async": version("lmstudio-async"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny iteration counts (smoke test)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    started = time.perf_counter()
    load_start = os.getloadavg()
    server = StandInProcess(load_seconds=0.0)
    host = server.start()
    _log(f"stand-in server (pid {server.proc.pid if server.proc else '?'}) at {host}")
    bench: Bench | None = None
    try:
        bench = Bench(host, plan)
        bench.setup()
        # Everything alive now (three clients' modules, the harness) is long-lived: freeze
        # it, so the collection before each batch scans only what the contenders made
        # (about 0 ms instead of about 70 ms; see _interleave).
        gc.collect()
        gc.freeze()
        _log(f"  setup: done at {time.perf_counter() - _T0:.1f} s")
        bench.small_rpc()
        bench.model_fast_path()
        bench.load_unload()
        bench.throughput()
        bench.close_shared()
        bench.cold_start()
        bench.memory()
        res = bench.results
        res.targets = compute_targets(res, plan)
        res.meta = machine() | {
            "quick": args.quick,
            "rounds": plan.rounds,
            "plan": dataclasses.asdict(plan),
            "seconds": round(time.perf_counter() - started, 1),
            "threads_at_end": threading.active_count(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        }
    finally:
        if bench is not None:
            bench.close()
        server.stop()
    meta = res.meta
    print(
        f"{meta['date']} · {meta['cpu']} · {meta['cores']} cores · Python {meta['python']} · "
        f"aiohttp {meta['aiohttp']} · msgspec {meta['msgspec']} · lmstudio {meta['lmstudio']} · "
        f"{meta['seconds']} s{' · QUICK' if args.quick else ''}\n"
    )
    print(markdown(res))
    payload = {
        "meta": meta,
        "rows": [r.to_json() for r in res.rows],
        "memory": res.memory,
        "pairs": [
            {
                "workload": key,
                "a": a,
                "b": b,
                "ratio": res.pair_ratio(key, a, b),
                "round_ratios": [
                    x / y for x, y in zip(sa.round_medians(), sb.round_medians(), strict=True)
                ],
            }
            for (key, a, b), (sa, sb) in res.pairs.items()
        ],
        "targets": [t.to_json() for t in res.targets],
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0

"""``python -m benchmarks.pool``: the model pool on a skewed multi-model workload.

One run, against stand-in servers in child processes (so their CPU never shares our GIL):

1. **Policy**: a seeded Zipf(1.1) trace over 8 equal-size models, a budget for 3, one
   worker, 400 requests. The real pool's model loads against Belady's offline optimum
   for the same order and capacity (target: at most 1.5x), next to offline simulations
   of other eviction policies on the same trace (LRU, LFU with aging (the pool's own
   policy class), GDSF, ARC, a W-TinyLFU-like admission) for the record.
2. **Throughput**: 32 workers, 2,000 requests of the same distribution, each a short
   ``respond``: the pool (0 truncated replies, 0 errors, peak memory within the budget,
   read from the stand-in) against the naive approach (each request calls
   ``client.llm.model(key)`` with LM Studio's JIT auto-evict on; its errors and
   truncated replies do not count as successes). Target: at least 3x the successes/s.
3. **Two hosts**: the same workload over two stand-ins, a budget for 3 models each.
   Target: at least 1.6x the one-host throughput.

``--quick`` runs tiny sizes (for the smoke test); ``--json FILE`` writes the results.
The exit status is 1 when a target is missed (not in ``--quick`` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lmstudio_async as lms
from lmstudio_async._async.pool import LfuAgingPolicy, LruPolicy

MODELS = [f"zipf-model-{i}" for i in range(8)]
SIZE_BYTES = 1_000_000_000
CONTEXT = 2048
ZIPF_S = 1.1
CAPACITY = 3
LOAD_SECONDS = 0.2
TOKENS_PER_SECOND = 100.0
MAX_TOKENS = 8


def catalog() -> list[dict[str, Any]]:
    return [
        {
            "type": "llm",
            "modelKey": key,
            "displayName": key,
            "path": f"bench/{key}/{key}.gguf",
            "format": "gguf",
            "sizeBytes": SIZE_BYTES,
            "maxContextLength": CONTEXT,
        }
        for key in MODELS
    ]


def zipf_trace(n: int, seed: int) -> list[str]:
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(len(MODELS))]
    rng = random.Random(seed)
    return rng.choices(MODELS, weights, k=n)


# --- offline policies on a trace ---------------------------------------------------------------


def belady(trace: Sequence[str], capacity: int) -> int:
    """Loads of Belady's optimal offline policy: evict the model needed furthest ahead."""
    next_use: list[int] = [0] * len(trace)
    seen: dict[str, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        next_use[i] = seen.get(trace[i], math.inf)  # type: ignore[arg-type]
        seen[trace[i]] = i
    cache: dict[str, float] = {}  # key -> its next use
    loads = 0
    for i, key in enumerate(trace):
        if key not in cache:
            loads += 1
            if len(cache) >= capacity:
                del cache[max(cache, key=cache.__getitem__)]
        cache[key] = next_use[i]
    return loads


@dataclass
class _Sim:
    key: str
    last_used: float


def simulate_pool_policy(trace: Sequence[str], capacity: int, policy: Any) -> int:
    """Loads of one of the pool's own policy classes, driven as the pool drives it."""
    cache: dict[str, _Sim] = {}
    loads = 0
    for t, key in enumerate(trace):
        policy.record(key)
        if key in cache:
            cache[key].last_used = t
            continue
        loads += 1
        if len(cache) >= capacity:
            victim = min(cache.values(), key=policy.rank)  # type: ignore[arg-type]
            del cache[victim.key]
        cache[key] = _Sim(key, t)
    return loads


def gdsf(trace: Sequence[str], capacity: int) -> int:
    """Greedy-Dual-Size-Frequency (equal sizes and costs): H = L + frequency."""
    inflation = 0.0
    freq: collections.Counter[str] = collections.Counter()
    value: dict[str, float] = {}
    loads = 0
    for key in trace:
        freq[key] += 1
        if key not in value:
            loads += 1
            if len(value) >= capacity:
                victim = min(value, key=value.__getitem__)
                inflation = value.pop(victim)
        value[key] = inflation + freq[key]
    return loads


def arc(trace: Sequence[str], c: int) -> int:
    """Adaptive Replacement Cache (Megiddo & Modha): recency and frequency lists with ghosts."""
    t1: collections.OrderedDict[str, None] = collections.OrderedDict()
    t2: collections.OrderedDict[str, None] = collections.OrderedDict()
    b1: collections.OrderedDict[str, None] = collections.OrderedDict()
    b2: collections.OrderedDict[str, None] = collections.OrderedDict()
    p = 0.0
    loads = 0

    def replace(key: str) -> None:
        if t1 and (len(t1) > p or (key in b2 and len(t1) == p)):
            old, _ = t1.popitem(last=False)
            b1[old] = None
        else:
            old, _ = t2.popitem(last=False)
            b2[old] = None

    for key in trace:
        if key in t1 or key in t2:
            t1.pop(key, None)
            t2.pop(key, None)
            t2[key] = None
            continue
        loads += 1
        if key in b1:
            p = min(c, p + max(len(b2) / len(b1), 1))
            replace(key)
            del b1[key]
            t2[key] = None
        elif key in b2:
            p = max(0.0, p - max(len(b1) / len(b2), 1))
            replace(key)
            del b2[key]
            t2[key] = None
        else:
            if len(t1) + len(b1) == c:
                if len(t1) < c:
                    b1.popitem(last=False)
                    replace(key)
                else:
                    t1.popitem(last=False)
            elif len(t1) + len(b1) < c and len(t1) + len(t2) + len(b1) + len(b2) >= c:
                if len(t1) + len(t2) + len(b1) + len(b2) == 2 * c:
                    b2.popitem(last=False)
                replace(key)
            t1[key] = None
    return loads


def tinylfu(trace: Sequence[str], capacity: int, window: int = 128) -> int:
    """LRU main cache with TinyLFU admission: a miss that must evict is served, then kept
    only if its (aged) frequency beats the LRU victim's; else it is the next victim."""
    freq: collections.Counter[str] = collections.Counter()
    seen = 0
    cache: collections.OrderedDict[str, None] = collections.OrderedDict()
    probation: str | None = None
    loads = 0
    for key in trace:
        freq[key] += 1
        seen += 1
        if seen >= window:
            seen = 0
            for k in list(freq):
                freq[k] //= 2
        if key in cache:
            cache.move_to_end(key)
            if key == probation:
                probation = None
            continue
        loads += 1
        if len(cache) >= capacity:
            if probation is not None and probation in cache:
                del cache[probation]
            else:
                lru = next(iter(cache))
                del cache[lru]
        cache[key] = None
        lru = next(iter(cache))
        probation = key if freq[key] <= freq[lru] and lru != key else None
    return loads


def policy_table(trace: Sequence[str], capacity: int) -> dict[str, int]:
    return {
        "belady": belady(trace, capacity),
        "lru": simulate_pool_policy(trace, capacity, LruPolicy()),
        "lfu-aging (pool)": simulate_pool_policy(trace, capacity, LfuAgingPolicy()),
        "lfu (no aging)": simulate_pool_policy(trace, capacity, LfuAgingPolicy(window=10**9)),
        "gdsf": gdsf(trace, capacity),
        "arc": arc(trace, capacity),
        "tinylfu-admission": tinylfu(trace, capacity),
    }


# --- stand-ins in child processes ----------------------------------------------------------


class StandIn:
    """A stand-in in a child process (``--serve``), with its peak-memory API over stdin."""

    def __init__(
        self,
        memory_gb: float,
        load_seconds: float,
        catalog_file: Path,
        tokens_per_second: float = TOKENS_PER_SECOND,
    ) -> None:
        self.args = [
            "--tokens-per-second",
            str(tokens_per_second),
            "--memory-gb",
            str(memory_gb),
            "--load-seconds",
            str(load_seconds),
            "--catalog",
            str(catalog_file),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.host = ""

    def __enter__(self) -> StandIn:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pool", "--serve", *self.args],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.host = self._read("READY")
        return self

    def _read(self, tag: str) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(tag + " "):
            raise RuntimeError(f"stand-in child: expected {tag}, got {line!r}")
        return line.split(" ", 1)[1].strip()

    def ask(self, command: str) -> str:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read("OK")

    def peak(self) -> int:
        return int(self.ask("peak"))

    def reset(self) -> None:
        self.ask("reset")

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def serve(argv: Sequence[str]) -> int:
    """Child side: run a stand-in; answer ``peak`` / ``reset`` / ``loaded`` on stdin."""
    from lmstudio_async.testing import ThreadedStandInServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-gb", type=float, required=True)
    parser.add_argument("--load-seconds", type=float, required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--tokens-per-second", type=float, required=True)
    args = parser.parse_args(argv)
    server = ThreadedStandInServer(
        0,
        catalog=args.catalog,
        memory_gb=args.memory_gb,
        load_seconds=args.load_seconds,
        tokens_per_second=args.tokens_per_second,
        frame_log_size=10,
    ).start()
    try:
        print("READY", server.host, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "peak":
                print("OK", server.peak_memory_bytes, flush=True)
            elif command == "reset":
                server.unload_all()
                server.reset_peak_memory()
                print("OK done", flush=True)
            elif command == "loaded":
                print("OK", len(server.loaded_instances()), flush=True)
            else:
                print("OK unknown", flush=True)
    finally:
        server.stop()
    return 0


# --- workloads -----------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    requests: int
    seconds: float
    successes: int = 0
    truncated: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    loads: int | None = None
    peak_bytes: int | None = None
    budget_bytes: int | None = None

    @property
    def rate(self) -> float:
        return self.successes / self.seconds if self.seconds else 0.0


async def run_workers(
    name: str,
    trace: Sequence[str],
    workers: int,
    one: Callable[[str, int], Any],
) -> Outcome:
    """Run ``trace`` with ``workers`` tasks taking the next request in order."""
    outcome = Outcome(name, len(trace), 0.0)
    position = iter(range(len(trace)))

    async def worker() -> None:
        for i in position:
            try:
                stop_reason = await one(trace[i], i)
            except lms.ModelUnloadedError:
                outcome.truncated += 1
            except lms.LMStudioError as exc:
                outcome.errors += 1
                kind = type(exc).__name__
                outcome.error_kinds[kind] = outcome.error_kinds.get(kind, 0) + 1
            else:
                if stop_reason == "modelUnloaded":
                    outcome.truncated += 1
                else:
                    outcome.successes += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    outcome.seconds = time.perf_counter() - started
    return outcome


async def pool_run(
    name: str,
    hosts: Sequence[StandIn],
    trace: Sequence[str],
    workers: int,
    budget: int,
) -> Outcome:
    for host in hosts:
        host.reset()
    clients = [lms.AsyncClient(h.host) for h in hosts]
    try:
        async with lms.AsyncModelPool(clients, memory_budget=budget) as pool:

            async def one(key: str, i: int) -> str:
                async with pool.llm(key, timeout=120) as model:
                    reply = await model.respond(f"request {i}", config={"max_tokens": MAX_TOKENS})
                    return reply.stop_reason

            outcome = await run_workers(name, trace, workers, one)
            outcome.loads = pool.stats().loads
    finally:
        for client in clients:
            await client.aclose()
    outcome.peak_bytes = max(h.peak() for h in hosts)
    outcome.budget_bytes = budget
    return outcome


async def naive_run(host: StandIn, trace: Sequence[str], workers: int) -> Outcome:
    host.reset()
    async with lms.AsyncClient(host.host) as client:

        async def one(key: str, i: int) -> str:
            model = await client.llm.model(key)
            reply = await model.respond(f"request {i}", config={"max_tokens": MAX_TOKENS})
            return reply.stop_reason

        outcome = await run_workers("naive: client.llm.model(key)", trace, workers, one)
    outcome.peak_bytes = host.peak()
    return outcome


# --- the run -------------------------------------------------------------------------------


@dataclass
class Plan:
    policy_requests: int = 400
    requests: int = 2000
    workers: int = 32
    load_seconds: float = LOAD_SECONDS
    policy_load_seconds: float = 0.02


QUICK = Plan(
    policy_requests=40, requests=96, workers=16, load_seconds=0.02, policy_load_seconds=0.0
)


async def run(plan: Plan, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {"plan": asdict(plan), "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        catalog_file = Path(tmp) / "catalog.json"
        catalog_file.write_text(json.dumps(catalog()))
        probe_gb = 64.0
        with StandIn(probe_gb, 0.0, catalog_file) as probe:
            async with lms.AsyncClient(probe.host) as client:
                model_bytes = int((await client.llm.estimate(MODELS[0])).total_bytes)
        budget = CAPACITY * model_bytes + model_bytes // 2
        memory_gb = budget / 1e9
        results["model_bytes"] = model_bytes
        results["budget_bytes"] = budget

        # 1. eviction policy: one worker.
        policy_trace = zipf_trace(plan.policy_requests, seed)
        table = policy_table(policy_trace, CAPACITY)
        with StandIn(memory_gb, plan.policy_load_seconds, catalog_file) as host:
            one_worker = await pool_run("pool, 1 worker", [host], policy_trace, 1, budget)
        results["policy"] = {
            "requests": plan.policy_requests,
            "simulated_loads": table,
            "pool_loads": one_worker.loads,
            "belady_loads": table["belady"],
            "ratio": (one_worker.loads or 0) / table["belady"],
            "errors": one_worker.errors + one_worker.truncated,
        }

        # 2. throughput on one host: pool against naive.
        trace = zipf_trace(plan.requests, seed + 1)
        with StandIn(memory_gb, plan.load_seconds, catalog_file) as host:
            pooled = await pool_run(
                f"pool, {plan.workers} workers, 1 host", [host], trace, plan.workers, budget
            )
            naive = await naive_run(host, trace, plan.workers)
        # 3. the same over two hosts.
        with (
            StandIn(memory_gb, plan.load_seconds, catalog_file) as a,
            StandIn(memory_gb, plan.load_seconds, catalog_file) as b,
        ):
            two = await pool_run(
                f"pool, {plan.workers} workers, 2 hosts", [a, b], trace, plan.workers, budget
            )
    results["runs"] = [asdict(o) | {"rate": o.rate} for o in (pooled, naive, two)]
    one_ratio = results["policy"]["ratio"]
    targets = [
        ("policy: pool loads <= 1.5x Belady (1 worker)", one_ratio, one_ratio <= 1.5),
        (
            "pool: 0 truncated, 0 errors",
            pooled.truncated + pooled.errors,
            pooled.truncated + pooled.errors == 0,
        ),
        (
            "pool: peak memory <= budget",
            pooled.peak_bytes,
            (pooled.peak_bytes or 0) <= budget,
        ),
        (
            "pool successes/s >= 3x naive",
            pooled.rate / naive.rate if naive.rate else math.inf,
            pooled.rate >= 3 * naive.rate,
        ),
        (
            "2 hosts: 0 truncated, 0 errors, peak <= budget per host",
            two.truncated + two.errors,
            two.truncated + two.errors == 0 and (two.peak_bytes or 0) <= budget,
        ),
        (
            "2 hosts: throughput >= 1.6x one host",
            two.rate / pooled.rate if pooled.rate else 0.0,
            two.rate >= 1.6 * pooled.rate,
        ),
    ]
    results["targets"] = [
        {"target": name, "value": value, "pass": bool(ok)} for name, value, ok in targets
    ]
    return results


def report(results: dict[str, Any]) -> str:
    policy = results["policy"]
    lines = [
        f"Zipf({ZIPF_S}) over {len(MODELS)} equal models, budget for {CAPACITY} "
        f"({results['budget_bytes'] / 1e9:.2f} GB), seed {results['seed']}",
        "",
        f"Eviction on {policy['requests']} requests, one worker (model loads):",
        "",
        "| policy | loads | x Belady |",
        "|---|---:|---:|",
    ]
    belady_loads = policy["belady_loads"]
    for name, loads in policy["simulated_loads"].items():
        lines.append(f"| {name} (offline) | {loads} | {loads / belady_loads:.2f} |")
    lines.append(
        f"| **AsyncModelPool (real run)** | {policy['pool_loads']} | {policy['ratio']:.2f} |"
    )
    lines += [
        "",
        "| run | requests | seconds | ok/s | ok | truncated | errors | loads | peak GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        peak = "-" if run["peak_bytes"] is None else f"{run['peak_bytes'] / 1e9:.2f}"
        loads = "-" if run["loads"] is None else str(run["loads"])
        kinds = ", ".join(f"{k} {v}" for k, v in run["error_kinds"].items())
        errors = f"{run['errors']}" + (f" ({kinds})" if kinds else "")
        lines.append(
            f"| {run['name']} | {run['requests']} | {run['seconds']:.1f} | {run['rate']:.1f} "
            f"| {run['successes']} | {run['truncated']} | {errors} | {loads} | {peak} |"
        )
    lines += ["", "| target | value | pass |", "|---|---:|---|"]
    for target in results["targets"]:
        value = target["value"]
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"| {target['target']} | {text} | {'yes' if target['pass'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    started = time.perf_counter()
    results = asyncio.run(run(plan, args.seed))
    results["quick"] = args.quick
    results["seconds"] = time.perf_counter() - started
    print(report(results))
    print(f"\n(whole run: {results['seconds']:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.quick and not all(t["pass"] for t in results["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of one blocking hop from a caller thread into a shared asyncio loop thread.

Run: ``python benchmarks/hop_cost.py [N]``. Prints p50/p90 microseconds per call of
``await noop()`` run in the loop thread, for each hop mechanism, plus the full
sync ``Client`` hop (``lmstudio_async._sync``, its loop thread) when importable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable

import anyio.from_thread


async def noop() -> int:
    return 1


def start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def measure(name: str, hop: Callable[[], object], n: int) -> None:
    for _ in range(200):
        hop()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        hop()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    p50 = statistics.median(samples) / 1000
    p90 = samples[int(len(samples) * 0.9)] / 1000
    print(f"{name:<62} p50 {p50:7.1f} us   p90 {p90:7.1f} us")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(f"Python {sys.version.split()[0]}, {n} calls each")

    with anyio.from_thread.start_blocking_portal() as portal:
        measure("anyio BlockingPortal.call(noop)", lambda: portal.call(noop), n)

    loop, thread = start_loop()

    measure(
        "asyncio.run_coroutine_threadsafe(noop()).result()",
        lambda: asyncio.run_coroutine_threadsafe(noop(), loop).result(),
        n,
    )

    def cf_future() -> object:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()

        def start() -> None:
            task = loop.create_task(noop())
            task.add_done_callback(lambda t: fut.set_result(t.result()))

        loop.call_soon_threadsafe(start)
        return fut.result()

    measure("call_soon_threadsafe + task + concurrent.futures.Future", cf_future, n)

    def lock_hop(chunk: float | None) -> Callable[[], object]:
        def hop() -> object:
            lock = threading.Lock()
            lock.acquire()
            box: list[asyncio.Task[int]] = []

            def start() -> None:
                task = loop.create_task(noop())
                box.append(task)
                task.add_done_callback(lambda _t: lock.release())

            loop.call_soon_threadsafe(start)
            if chunk is None:
                lock.acquire()
            else:
                while not lock.acquire(timeout=chunk):
                    pass
            return box[0].result()

        return hop

    measure("call_soon_threadsafe + task + Lock.acquire()", lock_hop(None), n)
    measure("call_soon_threadsafe + task + Lock.acquire(timeout=0.25) loop", lock_hop(0.25), n)

    def queue_hop() -> object:
        q: queue.SimpleQueue[asyncio.Task[int]] = queue.SimpleQueue()

        def start() -> None:
            loop.create_task(noop()).add_done_callback(q.put)

        loop.call_soon_threadsafe(start)
        while True:
            try:
                return q.get(timeout=0.25).result()
            except queue.Empty:
                pass

    measure("call_soon_threadsafe + task + SimpleQueue.get(timeout=0.25)", queue_hop, n)

    def event_hop() -> object:
        event = threading.Event()
        box: list[asyncio.Task[int]] = []

        def start() -> None:
            task = loop.create_task(noop())
            box.append(task)
            task.add_done_callback(lambda _t: event.set())

        loop.call_soon_threadsafe(start)
        while not event.wait(0.25):
            pass
        return box[0].result()

    measure("call_soon_threadsafe + task + Event.wait(0.25) loop", event_hop, n)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()

    from lmstudio_async import AsyncClient
    from lmstudio_async._sync.client import Client
    from lmstudio_async._sync.loop import _LoopThread
    from lmstudio_async.testing import ThreadedStandInServer

    runner = _LoopThread.acquire()
    try:
        measure("lmstudio_async._sync hop (what Client uses)", lambda: runner.call(noop), n)
    finally:
        runner.release()

    # The hop in context: one small RPC (listLoaded, 1 instance) against the stand-in.
    with ThreadedStandInServer(0, load_seconds=0.0) as server:
        server.preload("smollm2-135m-instruct")

        async def async_rpc() -> list[float]:
            samples = []
            async with AsyncClient(server.host) as client:
                for i in range(n + 200):
                    t0 = time.perf_counter_ns()
                    await client.llm.list_loaded()
                    if i >= 200:
                        samples.append((time.perf_counter_ns() - t0) / 1000)
            return samples

        samples = sorted(asyncio.run(async_rpc()))
        name = "AsyncClient.llm.list_loaded() (stand-in)"
        print(f"{name:<62} p50 {statistics.median(samples):7.1f} us")
        with Client(server.host) as client:
            measure("Client.llm.list_loaded() (stand-in, one hop)", client.llm.list_loaded, n)


if __name__ == "__main__":
    main()

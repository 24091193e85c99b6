"""AsyncModelPool on one host, over real sockets against the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .conftest import (
    EMBED_BYTES,
    KEYS,
    MODEL_BYTES,
    SIZE,
    budget_for,
    eventually,
    loaded_keys,
    standin,
)

pytestmark = standin()

SHORT = {"max_tokens": 4}


def loads_sent(server: ThreadedStandInServer) -> list[str]:
    return [
        m["creationParameter"]["modelKey"]
        for m in server.received_messages(type="channelCreate", endpoint="loadModel")
    ]


# --- leasing and single flight -----------------------------------------------------------


async def test_concurrent_leases_share_one_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client) as pool:

        async def lease() -> str:
            async with pool.llm("m0") as model:
                reply = await model.respond("hi", config=SHORT)
                return model.identifier + reply.stop_reason

        results = await asyncio.gather(*(lease() for _ in range(20)))
        assert len(set(results)) == 1
        assert loads_sent(lmstudio_server) == ["m0"]
        stats = pool.stats()
        assert (stats.loads, stats.in_flight, stats.queued) == (1, 0, 0)
        assert stats.hits == 19  # the callers that shared the load
        async with pool.use("m0") as again:
            assert isinstance(again, lms.LLM)
        assert pool.stats().hits == 20
        assert pool.stats().by_key["m0"].loads == 1
    assert lmstudio_server.loaded_instances() == []  # aclose unloaded it
    # ... where it was, the local machine, not wherever LM Studio looks first.
    [unload] = lmstudio_server.received_messages(type="rpcCall", endpoint="unloadModel")
    assert unload["parameter"]["deviceIdentifier"] is None


async def test_lease_types_follow_the_catalogue(client: lms.AsyncClient) -> None:
    async with lms.AsyncModelPool(client) as pool:
        async with pool.use("e0") as embedder:
            assert isinstance(embedder, lms.EmbeddingModel)
            assert len(await embedder.embed("x")) > 0
        async with pool.embedding("e0") as embedder2:
            assert embedder2 == embedder
        with pytest.raises(lms.DomainMismatchError, match="'e0' is an embedding model, not an LLM"):
            async with pool.llm("e0"):
                pass
        with pytest.raises(lms.LMStudioValueError, match=r"use pool\.llm\(\) or") as info:
            async with pool.embedding("m0"):
                pass
        assert isinstance(info.value, lms.DomainMismatchError)
        assert (info.value.model, info.value.actual_domain) == ("m0", "llm")
        assert info.value.expected_domain == "embedding"
        with pytest.raises(lms.ModelNotFoundError, match="no-such-model"):
            async with pool.use("no-such-model"):
                pass


@standin(load_seconds=0.5)
async def test_a_lease_repr_names_its_key_and_state(client: lms.AsyncClient) -> None:
    async with lms.AsyncModelPool(client) as pool:
        lease = pool.llm("m0")
        assert repr(lease) == "<PoolLease 'm0' not entered>"
        entered = asyncio.Event()

        async def hold() -> None:
            async with lease as model:
                assert repr(lease) == f"<PoolLease 'm0' leased {model.identifier!r}>"
                entered.set()
                await asyncio.sleep(0.05)

        task = asyncio.create_task(hold())
        await eventually(lambda: repr(lease) == "<PoolLease 'm0' waiting>")
        with pytest.raises(lms.LMStudioValueError, match="already in use"):
            async with lease:  # the same lease, entered again while it waits
                pass
        await task
        assert entered.is_set()
        assert repr(lease) == "<PoolLease 'm0' released>"


async def test_pool_loads_explicitly_with_unique_identifiers(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # Someone holds the plain identifier "m0": the pool's own never collides with it.
    lmstudio_server.preload("m1", identifier="m0@pool")
    pool = lms.AsyncModelPool(client, max_replicas=2, max_concurrent_per_instance=1)
    async with pool, pool.llm("m0") as a, pool.llm("m0") as b:
        assert a.identifier != b.identifier
        assert {a.model_key, b.model_key} == {"m0"}
    creations = lmstudio_server.received_messages(type="channelCreate", endpoint="getOrLoad")
    assert creations == []  # never JIT


async def test_someone_elses_jit_load_never_evicts_a_pooled_model(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    assert lmstudio_server.jit_evict  # LM Studio's default
    async with lms.AsyncModelPool(client) as pool, pool.llm("m0") as pooled:
        other = await client.llm.model("m1")  # just in time: evicts JIT-loaded models
        await client.llm.model("m2")  # evicts m1, not the pooled m0
        assert loaded_keys(lmstudio_server) == ["m0", "m2"]
        assert (await pooled.respond("hi", config=SHORT)).stop_reason != "modelUnloaded"
        assert other.model_key == "m1"


async def test_config_variants_are_separate_instances(client: lms.AsyncClient) -> None:
    async with lms.AsyncModelPool(client) as pool:
        async with (
            pool.llm("m0", config={"context_length": 1024}) as small,
            pool.llm("m0", config=lms.LlmLoadConfig(context_length=1024)) as same,
            pool.llm("m0") as default,
        ):
            assert small == same
            assert small != default
            assert await small.get_context_length() == 1024
        assert pool.stats().loads == 2
        # "max": the model's largest context length, the same variant as that number
        most = next(m for m in await client.llm.list_downloaded() if m.model_key == "m0")
        async with (
            pool.llm("m0", config={"context_length": "max"}) as largest,
            pool.llm("m0", config={"context_length": most.max_context_length}) as same_again,
        ):
            assert largest == same_again
            assert await largest.get_context_length() == most.max_context_length
        with pytest.raises(lms.ConfigError, match="context_lenght"):
            async with pool.llm("m0", config={"context_lenght": 5}):
                pass


# --- memory budget and eviction ---------------------------------------------------------------


async def test_budget_holds_and_eviction_prefers_the_rarely_used(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.reset_peak_memory()
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2)) as pool:
        for key in ["m0", "m0", "m0", "m1"]:
            async with pool.llm(key):
                pass
        # LRU would evict m0 (used less recently); the pool evicts m1, the rarely used one.
        async with pool.llm("m2"):
            assert loaded_keys(lmstudio_server) == ["m0", "m2"]
        stats = pool.stats()
        assert (stats.loads, stats.evictions, stats.hits) == (3, 1, 2)
        assert stats.by_key["m1"].evictions == 1
        assert stats.used_bytes[(0, None)] == 2 * MODEL_BYTES
    assert lmstudio_server.peak_memory_bytes <= budget_for(2)


async def test_an_lm_studio_without_estimates_counts_model_sizes_at_once(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # An LM Studio older than estimateModelUsage answers it with only a warning: the
    # pool counts the model's size at once (not after a timeout, not marking the host down).
    lmstudio_server.faults.missing_endpoints = {"estimateModelUsage"}
    started = time.monotonic()
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2)) as pool:
        for key in ["m0", "m1", "m2"]:
            async with pool.llm(key) as model:
                assert (await model.respond("hi", config=SHORT)).stop_reason
        stats = pool.stats()
        assert (stats.loads, stats.evictions) == (3, 1)
        assert stats.used_bytes[(0, None)] == 2 * SIZE
    assert time.monotonic() - started < 5  # each lease's estimate would wait 5 s
    assert lmstudio_server.peak_memory_bytes <= budget_for(2)


async def test_lru_eviction_is_available_for_comparison(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2), eviction="lru") as pool:
        for key in ["m0", "m0", "m0", "m1", "m2"]:
            async with pool.llm(key):
                pass
        assert loaded_keys(lmstudio_server) == ["m1", "m2"]


async def test_pinned_keys_are_never_evicted(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2)) as pool:
        pool.pin("m3")  # before it is loaded
        async with pool.llm("m3"):
            pass
        for key in ["m0", "m1", "m2", "m0", "m1"]:
            async with pool.llm(key):
                assert "m3" in loaded_keys(lmstudio_server)
        assert pool.stats().by_key["m3"].evictions == 0
        pool.unpin("m3")
        pool.unpin("never-pinned")  # no error
        for key in ["m0", "m1"]:
            async with pool.llm(key):
                pass
        assert "m3" not in loaded_keys(lmstudio_server)


async def test_model_larger_than_the_budget_is_refused_at_once(client: lms.AsyncClient) -> None:
    async with lms.AsyncModelPool(client, memory_budget=MODEL_BYTES // 2) as pool:
        with pytest.raises(lms.LMStudioValueError, match="needs more memory than the budget"):
            async with pool.llm("m0", timeout=30):
                pass
        async with pool.embedding("e0") as embedder:  # small enough
            assert embedder.model_key == "e0"
        assert pool.stats().used_bytes[(0, None)] == EMBED_BYTES


async def test_memory_estimates_admit_a_model_whose_estimate_exceeds_the_budget(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    budget = MODEL_BYTES - 1  # LM Studio's estimate of m0 is just too much
    async with lms.AsyncModelPool(client, memory_budget=budget) as pool:
        with pytest.raises(lms.LMStudioValueError, match="needs more memory than the budget"):
            async with pool.llm("m0"):
                pass
    assert lmstudio_server.received_messages(endpoint="estimateModelUsage") != []
    lmstudio_server.clear_logs()
    override = 900_000_000
    async with lms.AsyncModelPool(
        client, memory_budget=budget, memory_estimates={"M0": override}
    ) as pool:
        async with pool.llm("m0") as model:  # the key is case-insensitive
            reply = await model.respond("hi", config=SHORT)
            assert reply.stop_reason == "maxPredictedTokensReached"
            assert pool.stats().used_bytes[(0, None)] == override
        # LM Studio was not asked for an estimate of a key with a figure of its own.
        assert lmstudio_server.received_messages(endpoint="estimateModelUsage") == []
    assert lmstudio_server.loaded_instances() == []


async def test_memory_estimates_are_what_the_budget_counts(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # Room for one model by LM Studio's estimate; two of these by the figures given.
    small = MODEL_BYTES * 3 // 4
    async with lms.AsyncModelPool(
        client,
        memory_budget=budget_for(1),
        memory_estimates={"m0": small, "m1": small, "not-downloaded-yet": 1},  # accepted
    ) as pool:
        async with pool.llm("m0"), pool.llm("m1", timeout=1):  # both fit: no wait, no eviction
            stats = pool.stats()
            assert stats.used_bytes[(0, None)] == 2 * small
            assert (stats.loads, stats.evictions, stats.waits) == (2, 0, 0)
        async with pool.llm("m2"):  # LM Studio's estimate: both others must go
            assert loaded_keys(lmstudio_server) == ["m2"]
            assert pool.stats().used_bytes[(0, None)] == MODEL_BYTES
        assert pool.stats().evictions == 2
        async with pool.llm("m0"):  # 0.79 + 1.05 > 1.58 GB: m2 must go
            assert loaded_keys(lmstudio_server) == ["m0"]
        assert pool.stats().evictions == 3


@standin(memory_gb=2.2)
async def test_without_budget_the_servers_refusals_drive_eviction(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The server has room for two models; the pool knows no budget and learns from refusals.
    async with lms.AsyncModelPool(client) as pool:
        for key in ["m0", "m1", "m2", "m3", "m0"]:
            async with pool.llm(key) as model:
                reply = await model.respond("hi", config=SHORT)
                assert reply.stop_reason == "maxPredictedTokensReached"
        assert pool.stats().evictions >= 3
    assert lmstudio_server.loaded_instances() == []


@standin(memory_gb=1.2)
async def test_orphans_of_failed_loads_are_unloaded(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # A load of this pool that completed after its connection dropped: loaded, untracked.
    async with lms.AsyncModelPool(client) as pool:
        orphan = f"m0@pool-{pool._token}-99"
        lmstudio_server.preload("m0", identifier=orphan)
        async with pool.llm("m1", timeout=10) as model:  # found when the pool first syncs
            assert model.model_key == "m1"
            assert [i.identifier for i in lmstudio_server.loaded_instances()] == [model.identifier]
        assert loads_sent(lmstudio_server) == ["m1"]  # unloaded before the load was sent


@standin(memory_gb=1.2)
async def test_an_orphan_that_appears_later_is_found_when_a_load_is_refused(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, reconcile_interval=None) as pool:
        pool._hosts[0].synced = True  # as if reconciled before the orphan's load completed
        orphan = f"m0@pool-{pool._token}-99"
        lmstudio_server.preload("m0", identifier=orphan)
        async with pool.llm("m1", timeout=10) as model:  # refused for memory, then fine
            assert model.model_key == "m1"
            assert [i.identifier for i in lmstudio_server.loaded_instances()] == [model.identifier]
        assert loads_sent(lmstudio_server) == ["m1", "m1"]


# --- waiting ------------------------------------------------------------------------------------


async def test_callers_wait_in_fifo_order_then_time_out(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        order: list[str] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with pool.llm("m0"):
                await release.wait()

        async def waiter(key: str) -> None:
            async with pool.llm(key, timeout=10):
                order.append(key)

        hold = asyncio.create_task(holder())
        await eventually(lambda: pool.stats().in_flight != 0)
        waiters = []
        for key in ["m1", "m2", "m3"]:
            waiters.append(asyncio.create_task(waiter(key)))
            await eventually(lambda: pool.stats().queued >= len(waiters))
        with pytest.raises(lms.PoolTimeoutError, match="m4") as info:
            async with pool.llm("m4", timeout=0.2):
                pass
        assert isinstance(info.value, TimeoutError)
        assert pool.stats().waits == 4
        release.set()
        await asyncio.gather(hold, *waiters)
        assert order == ["m1", "m2", "m3"]
        assert pool.stats().queued == 0
    assert lmstudio_server.peak_memory_bytes <= budget_for(1)


async def test_a_full_wait_queue_refuses_at_once(client: lms.AsyncClient) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1), max_waiting=2) as pool:
        pool.pin("m0")  # so that the waiters cannot drain it
        async with pool.llm("m0"):
            tasks = [asyncio.create_task(_lease_briefly(pool, k)) for k in ("m1", "m2")]
            await eventually(lambda: pool.stats().queued >= 2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(lms.PoolFullError, match="max_waiting=2"):
                async with pool.llm("m3"):
                    pass
            assert loop.time() - started < 1
            async with pool.llm("m0") as shared:  # a hit on an instance not draining
                assert shared.model_key == "m0"
        pool.unpin("m0")
        await asyncio.gather(*tasks)


async def test_a_waiter_is_not_starved_by_a_stream_of_hits(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        stop = asyncio.Event()

        async def hammer() -> int:
            done = 0
            while not stop.is_set():
                async with pool.llm("m0", timeout=10):
                    await asyncio.sleep(0.02)
                    done += 1
            return done

        hammers = [asyncio.create_task(hammer()) for _ in range(8)]
        await eventually(lambda: pool.stats().in_flight > 0)
        await asyncio.sleep(0.1)  # m0 is never idle from here on
        async with pool.llm("m1", timeout=5):  # served once m0's leases drain
            assert loaded_keys(lmstudio_server) == ["m1"]
        stop.set()
        assert all(count > 0 for count in await asyncio.gather(*hammers))
        assert pool.stats().by_key["m0"].loads == 2


async def _lease_briefly(pool: lms.AsyncModelPool, key: str) -> None:
    async with pool.llm(key, timeout=10):
        pass


async def test_per_instance_limit_queues_and_replicas_add_instances(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, max_concurrent_per_instance=2) as pool:
        held = asyncio.Event()
        release = asyncio.Event()
        holding = 0

        async def hold() -> str:
            nonlocal holding
            async with pool.llm("m0") as model:
                holding += 1
                if holding == 2:
                    held.set()
                await release.wait()
                return model.identifier

        tasks = [asyncio.create_task(hold()) for _ in range(3)]
        await held.wait()
        await asyncio.sleep(0.05)
        assert (pool.stats().in_flight, pool.stats().queued) == (2, 1)
        release.set()
        assert len(set(await asyncio.gather(*tasks))) == 1
    async with lms.AsyncModelPool(
        client, max_concurrent_per_instance=1, max_replicas=3, memory_budget=budget_for(3)
    ) as pool:

        async def busy() -> str:
            async with pool.llm("m0") as model:
                await model.respond("hello there", config={"max_tokens": 30})
                return model.identifier

        identifiers = await asyncio.gather(*(busy() for _ in range(6)))
        assert len(set(identifiers)) == 3
        assert pool.stats().loads == 3
    assert lmstudio_server.peak_memory_bytes <= 16 * 10**9


# --- cancellation and races ----------------------------------------------------------------------


async def test_cancelled_leases_are_released(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        entered = asyncio.Event()

        async def stuck() -> None:
            async with pool.llm("m0"):
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(stuck())
        await entered.wait()
        waiting = asyncio.create_task(_lease_briefly(pool, "m1"))
        await eventually(lambda: pool.stats().queued != 0)
        waiting.cancel()  # cancelled while queued: leaves the queue
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert pool.stats().queued == 0
        task.cancel()  # cancelled inside the block: the lease is released
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert pool.stats().in_flight == 0
        async with pool.llm("m1", timeout=5):  # m0 is idle again, so it can be evicted
            assert loaded_keys(lmstudio_server) == ["m1"]


async def test_a_waiter_cancelled_in_the_step_that_wakes_it_leaves_the_queue(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The release completes the waiter's future, and the waiter is cancelled before it
    # runs again: the cancellation wins (asyncio.wait_for on 3.11 returned the result).
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        body_ran = False

        async def waiter() -> None:
            nonlocal body_ran
            async with pool.llm("m1", timeout=10):
                body_ran = True

        holder = pool.llm("m0")
        await holder.__aenter__()
        waiting = asyncio.create_task(waiter())
        await eventually(lambda: pool.stats().queued == 1)
        await holder.__aexit__(None, None, None)  # wakes the waiter ...
        waiting.cancel()  # ... which is cancelled before it runs
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert waiting.cancelled()
        assert not body_ran
        stats = pool.stats()
        assert (stats.queued, stats.in_flight, stats.loads) == (0, 0, 1)
        assert loads_sent(lmstudio_server) == ["m0"]  # it started no load either


async def test_a_caller_cancelled_in_the_step_its_load_lands_gets_no_lease(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.2
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        body_ran = False

        async def lease() -> None:
            nonlocal body_ran
            async with pool.llm("m0", timeout=10):
                body_ran = True

        leasing = asyncio.create_task(lease())
        await eventually(lambda: lmstudio_server.open_channel_count(endpoint="loadModel") == 1)
        (inst,) = pool._targets[0].instances
        assert inst.done is not None
        # Run right after the callbacks that wake the caller: it is cancelled in that step.
        inst.done.add_done_callback(lambda _: leasing.cancel())
        with contextlib.suppress(asyncio.CancelledError):
            await leasing
        assert leasing.cancelled()
        assert not body_ran
        assert pool.stats().in_flight == 0
        async with pool.llm("m0", timeout=5) as model:  # the load stayed, idle, for others
            assert model.model_key == "m0"
        assert pool.stats().loads == 1


async def test_cancelled_during_the_load_leaves_nothing_behind(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.5
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        task = asyncio.create_task(_lease_briefly(pool, "m0"))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert pool.stats().in_flight == 0
        async with pool.llm("m0") as model:  # the load went on; this lease shares it
            assert model.model_key == "m0"
        assert pool.stats().loads == 1
    assert lmstudio_server.loaded_instances() == []


async def test_a_lease_that_times_out_during_the_load_leaves_the_load_to_the_pool(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.6
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        with pytest.raises(lms.PoolTimeoutError, match="m0") as info:
            async with pool.llm("m0", timeout=0.2):
                pass
        assert isinstance(info.value, TimeoutError)
        assert pool.stats().in_flight == 0
        async with pool.llm("m0", timeout=5) as model:  # the load went on; this one shares it
            reply = await model.respond("hi", config=SHORT)
            assert reply.stop_reason == "maxPredictedTokensReached"
        assert pool.stats().loads == 1
        assert loads_sent(lmstudio_server) == ["m0"]
    assert lmstudio_server.loaded_instances() == []


async def test_a_connection_dropped_mid_load_is_retried_for_every_waiter(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.3
    async with lms.AsyncModelPool(client, reconcile_interval=None) as pool:

        async def lease() -> str:
            async with pool.llm("m0", timeout=10) as model:
                reply = await model.respond("hi", config=SHORT)
                assert reply.stop_reason == "maxPredictedTokensReached"
                return model.identifier

        leases = [asyncio.create_task(lease()) for _ in range(3)]
        await eventually(lambda: lmstudio_server.open_channel_count(endpoint="loadModel") == 1)
        lmstudio_server.faults.drop_after(0, namespace="llm")  # at its next progress report
        identifiers = await asyncio.gather(*leases)
        assert len(set(identifiers)) == 1  # the retry is one load, shared again
        assert loads_sent(lmstudio_server) == ["m0", "m0"]
        assert loaded_keys(lmstudio_server) == ["m0"]  # the dropped load left nothing
        assert pool.stats().loads == 1
    assert lmstudio_server.loaded_instances() == []


async def test_closing_the_pool_during_a_load_fails_its_lease_and_unloads_it(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.5
    pool = lms.AsyncModelPool(client, memory_budget=budget_for(1))
    leasing = asyncio.create_task(_lease_briefly(pool, "m0"))
    await eventually(lambda: lmstudio_server.open_channel_count(endpoint="loadModel") == 1)
    await pool.aclose()
    with pytest.raises(lms.ClientClosedError, match="pool is closed"):
        await leasing
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    await asyncio.sleep(0.6)  # past the simulated load time: the load did not finish later
    assert lmstudio_server.loaded_instances() == []
    assert not client.closed


async def test_eviction_racing_a_new_lease(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.reset_peak_memory()
    async with lms.AsyncModelPool(client, memory_budget=budget_for(1)) as pool:
        async with pool.llm("m0"):
            pass
        # m1 evicts the idle m0; at the same moment another caller wants m0 back.
        results = await asyncio.gather(
            *(_respond(pool, key) for key in ["m1", "m0", "m1", "m0", "m2", "m0"])
        )
        assert results == ["maxPredictedTokensReached"] * 6
    assert lmstudio_server.peak_memory_bytes <= budget_for(1)


async def _respond(pool: lms.AsyncModelPool, key: str) -> str:
    async with pool.llm(key, timeout=20) as model:
        return (await model.respond("hi", config=SHORT)).stop_reason


# --- truth: TTLs, other clients, reconciliation ---------------------------------------------


@standin(tokens_per_second=50)
async def test_an_unload_under_a_lease(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, ttl=60, reconcile_interval=None) as pool:
        async with pool.llm("m0") as model:
            assert model.info.ttl_ms == 60_000
            stream = model.respond_stream("tell me a story", config={"max_tokens": 200})
            with pytest.raises(lms.ModelUnloadedError) as info:  # noqa: PT012
                async with pool.llm("m0") as same, stream:
                    assert same == model
                    async for _ in stream:
                        if lmstudio_server.loaded_instances():
                            lmstudio_server.unload_all()  # the server unloads it mid-way
        assert info.value.subject == model.identifier
        assert info.value.result is not None
        async with pool.llm("m0") as fresh:  # the pool noticed: a new instance
            assert fresh.identifier != model.identifier
            assert (await fresh.respond("hi", config=SHORT)).stop_reason != "modelUnloaded"
        assert pool.stats().loads == 2


async def test_an_instance_idle_for_most_of_its_ttl_is_checked_before_it_is_handed_out(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # No reconciliation: only the check before reuse can notice the server's TTL unload.
    async with lms.AsyncModelPool(client, ttl=0.5, reconcile_interval=None) as pool:
        async with pool.llm("m0") as model:
            first = model.identifier
            await model.respond("hi", config=SHORT)
        await asyncio.sleep(0.8)  # past the TTL: the server unloads it on its own
        await eventually(lambda: lmstudio_server.loaded_instances() == [])
        async with pool.llm("m0") as again:  # checked, found gone, loaded anew
            assert again.identifier != first
            reply = await again.respond("hi", config=SHORT)
            assert reply.stop_reason != "modelUnloaded"
        assert pool.stats().loads == 2


@pytest.mark.parametrize("fault", ["silent", "stopped", "dropped"])
async def test_the_ttl_check_before_reuse_keeps_the_lease_deadline_and_typed_errors(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, fault: str
) -> None:
    async with lms.AsyncModelPool(client, ttl=1.0, reconcile_interval=None) as pool:
        async with pool.llm("m0") as model:
            first = model.identifier
        await asyncio.sleep(0.85)  # idle 85 % of its TTL: the next lease asks the server
        loop = asyncio.get_running_loop()
        started = loop.time()
        if fault == "silent":  # a hung host: the lease ends at its own deadline
            lmstudio_server.faults.silent = True
            with pytest.raises(lms.PoolTimeoutError, match=r"within 0\.5s"):
                async with pool.llm("m0", timeout=0.5):
                    pass
            assert loop.time() - started < 1.5
            lmstudio_server.faults.silent = False
        elif fault == "stopped":  # the host is gone: marked down, HostDownError at the deadline
            lmstudio_server.stop()
            with pytest.raises(lms.HostDownError, match="no host is up") as info:
                async with pool.llm("m0", timeout=0.5):
                    pass
            assert loop.time() - started < 1.5
            assert isinstance(info.value.__cause__, lms.LMStudioConnectionError)
        else:  # the answer is lost with its connection: the host comes back, still has it
            lmstudio_server.faults.drop_after(0, namespace="llm")
            async with pool.llm("m0", timeout=5) as model:
                assert model.identifier == first
                assert (await model.respond("hi", config=SHORT)).stop_reason != "modelUnloaded"
            assert pool.stats().loads == 1
        assert pool.stats().in_flight == 0


@standin(tokens_per_second=40)
async def test_model_unloaded_by_its_owner_mid_lease(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload("m0", identifier="theirs")
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2)) as pool:
        with pytest.raises(lms.ModelUnloadedError) as info:  # noqa: PT012
            async with pool.llm("m0") as model:
                assert model.identifier == "theirs"  # used, not loaded again
                assert pool.stats().used_bytes[(0, None)] == MODEL_BYTES  # counted
                task = asyncio.create_task(model.respond("long", config={"max_tokens": 100}))
                await asyncio.sleep(0.2)
                await client.llm.unload("theirs")
                await task
        assert info.value.result is not None
        async with pool.llm("m0") as again:
            assert again.identifier != "theirs"
            assert (await again.respond("hi", config=SHORT)).stop_reason != "modelUnloaded"
        assert pool.stats().loads == 1


async def test_foreign_instances_are_never_unloaded_by_the_pool(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload("m0", identifier="theirs")
    async with lms.AsyncModelPool(client, memory_budget=budget_for(2)) as pool:
        for key in ["m1", "m2", "m3", "m1"]:
            async with pool.llm(key):
                assert "theirs" in [i.identifier for i in lmstudio_server.loaded_instances()]
    assert [i.identifier for i in lmstudio_server.loaded_instances()] == ["theirs"]


async def test_reconciliation_notices_an_idle_instance_gone(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, reconcile_interval=0.05) as pool:
        async with pool.llm("m0") as model:
            first = model.identifier
        lmstudio_server.unload_all()
        await eventually(lambda: pool.stats().used_bytes[(0, None)] == 0)
        async with pool.llm("m0") as model:
            assert model.identifier != first
            await model.respond("hi", config=SHORT)


async def test_a_call_failing_with_model_not_found_is_verified(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(client, reconcile_interval=None) as pool:
        async with pool.llm("m0") as model:
            first = model.identifier
        lmstudio_server.unload_all()
        with pytest.raises(lms.ModelNotFoundError):
            async with pool.llm("m0") as model:
                await model.respond("hi", config=SHORT)
        # The obvious reaction is to lease again at once: the instance that failed is not
        # handed out while the server is asked about it, then forgotten.
        async with pool.llm("m0", timeout=5) as model:
            assert model.identifier != first
            reply = await model.respond("hi", config=SHORT)
            assert reply.stop_reason == "maxPredictedTokensReached"
        assert pool.stats().used_bytes[(0, None)] == MODEL_BYTES


# --- many callers -----------------------------------------------------------------------------


@standin(tokens_per_second=400, load_seconds=0.05)
async def test_many_concurrent_leases_over_several_models_within_budget(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.reset_peak_memory()
    budget = budget_for(2)
    async with lms.AsyncModelPool(client, memory_budget=budget) as pool:

        async def one(i: int) -> str:
            key = KEYS[(i * 7) % 4] if i % 3 else KEYS[0]
            async with pool.llm(key, timeout=60) as model:
                reply = await model.respond(f"question {i}", config={"max_tokens": 8})
                return reply.stop_reason

        results = await asyncio.gather(*(one(i) for i in range(120)))
        assert results == ["maxPredictedTokensReached"] * 120  # not one truncated reply
        stats = pool.stats()
        assert stats.in_flight == stats.queued == 0
        assert stats.hits + stats.loads <= 120
        assert "PoolStats(loads=" in repr(stats)
    assert lmstudio_server.peak_memory_bytes <= budget
    assert lmstudio_server.loaded_instances() == []


# --- closing and bad input --------------------------------------------------------------------


async def test_close_fails_waiters_and_refuses_new_leases(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    pool = lms.AsyncModelPool(client, memory_budget=budget_for(1))
    entered = asyncio.Event()

    async def holder() -> None:
        async with pool.llm("m0"):
            entered.set()
            await asyncio.sleep(0.3)

    hold = asyncio.create_task(holder())
    await entered.wait()
    waiting = asyncio.create_task(_lease_briefly(pool, "m1"))
    await eventually(lambda: pool.stats().queued != 0)
    await pool.aclose()
    with pytest.raises(lms.ClientClosedError, match="pool is closed"):
        await waiting
    await hold  # its block ends normally; the release after close is harmless
    with pytest.raises(lms.ClientClosedError):
        async with pool.llm("m0"):
            pass
    assert pool.closed
    await pool.aclose()  # idempotent
    assert lmstudio_server.loaded_instances() == []
    assert not client.closed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"memory_budget": -1}, "positive number of bytes"),
        ({"memory_budget": 0.5}, "positive number of bytes"),
        ({"memory_budget": float("inf")}, "positive number of bytes"),
        ({"memory_budget": True}, "positive number of bytes"),
        ({"memory_budget": "8GB"}, "memory_budget must be"),
        ({"memory_budget": [1, 2]}, "2 entries for 1 clients"),
        ({"memory_budget": {(1, None): 10}}, "client_index must be 0..0"),
        ({"memory_budget": {0: 10}}, "keys must be"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"max_concurrent_per_instance": 0}, "max_concurrent_per_instance"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"ttl": 0}, "ttl"),
        ({"reconcile_interval": float("nan")}, "reconcile_interval"),
        ({"eviction": "fifo"}, "eviction"),
        ({"memory_estimates": ["m0"]}, "memory_estimates must be a mapping"),
        ({"memory_estimates": {"m0": 0}}, r"memory_estimates\['m0'\] must be a positive int"),
        ({"memory_estimates": {"m0": -5}}, "must be a positive int"),
        ({"memory_estimates": {"m0": 1.5e9}}, "must be a positive int"),
        ({"memory_estimates": {"m0": True}}, "must be a positive int"),
        ({"memory_estimates": {"": 10}}, "memory_estimates key must not be empty"),
        ({"memory_estimates": {3: 10}}, "memory_estimates key must be a string"),
        ({"memory_estimates": {"m0": 1, "M0": 2}}, "twice"),
    ],
)
def test_bad_arguments_are_typed_errors(kwargs: dict[str, object], match: str) -> None:
    client = lms.AsyncClient("127.0.0.1:1")
    with pytest.raises(lms.LMStudioValueError, match=match):
        lms.AsyncModelPool(client, **kwargs)  # type: ignore[arg-type]


def test_bad_clients_and_lease_arguments() -> None:
    with pytest.raises(lms.LMStudioValueError, match="at least one client"):
        lms.AsyncModelPool([])
    with pytest.raises(lms.LMStudioValueError, match="must be an AsyncClient"):
        lms.AsyncModelPool(["localhost:1234"])  # type: ignore[list-item]
    client = lms.AsyncClient("127.0.0.1:1")
    with pytest.raises(lms.LMStudioValueError, match="twice"):
        lms.AsyncModelPool([client, client])
    pool = lms.AsyncModelPool(client)
    with pytest.raises(lms.LMStudioValueError, match="timeout"):
        pool.use("m0", timeout=-1)
    with pytest.raises(lms.LMStudioValueError, match=r"^key must not be empty"):
        pool.use("")
    with pytest.raises(lms.LMStudioValueError, match=r"^key must be a string"):
        pool.pin(3)  # type: ignore[arg-type]
    for blank in ("   ", "\u3000"):  # whitespace only, ASCII or not
        for method in (pool.use, pool.llm, pool.embedding, pool.pin):
            with pytest.raises(lms.LMStudioValueError, match=r"^key must not be empty or only"):
                method(blank)

"""AsyncModelPool over several hosts and over the LM Link devices of a host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from client.test_connection import free_port  # tests/ is on sys.path

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .conftest import MODEL_BYTES, budget_for, catalog, eventually, loaded_keys, standin

pytestmark = standin()

SHORT = {"max_tokens": 4}


@pytest.fixture
def second_server() -> Iterator[ThreadedStandInServer]:
    server = ThreadedStandInServer(
        0, catalog=catalog(), load_seconds=0.05, memory_gb=16, tokens_per_second=2000
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def clients(
    lmstudio_server: ThreadedStandInServer, second_server: ThreadedStandInServer
) -> AsyncIterator[list[lms.AsyncClient]]:
    timeouts = lms.Timeouts(connect=2, idle=5)
    async with (
        lms.AsyncClient(lmstudio_server.host, timeout=timeouts) as a,
        lms.AsyncClient(second_server.host, timeout=timeouts) as b,
    ):
        yield [a, b]


async def test_leases_go_where_the_key_is_loaded_else_where_it_fits(
    clients: list[lms.AsyncClient],
    lmstudio_server: ThreadedStandInServer,
    second_server: ThreadedStandInServer,
) -> None:
    second_server.preload("m5", identifier="theirs")
    async with lms.AsyncModelPool(clients, memory_budget=[budget_for(2), budget_for(3)]) as pool:
        async with pool.llm("m5") as model:
            assert model.identifier == "theirs"  # already loaded on host 1: used there
        async with pool.llm("m0"), pool.llm("m1"), pool.llm("m2"), pool.llm("m3"):
            assert len(loaded_keys(lmstudio_server)) == 2
            assert len(loaded_keys(second_server)) == 3  # m5 + two of ours
        stats = pool.stats()
        assert stats.by_target[(0, None)].loads == 2
        assert stats.by_target[(1, None)].loads == 2
        assert stats.used_bytes[(1, None)] == 3 * MODEL_BYTES
        async with pool.llm("m0") as again:  # a hit, on whichever host has it
            assert again.model_key == "m0"
        assert pool.stats().loads == 4
    assert lmstudio_server.loaded_instances() == []
    assert [i.identifier for i in second_server.loaded_instances()] == ["theirs"]


@standin(tokens_per_second=50)
async def test_a_host_dropping_mid_lease(
    clients: list[lms.AsyncClient],
    lmstudio_server: ThreadedStandInServer,
    second_server: ThreadedStandInServer,
) -> None:
    async with lms.AsyncModelPool(clients) as pool:
        async with pool.llm("m0") as first:
            pass
        host0 = first._namespace._client is clients[0]
        dropped, other = (
            (lmstudio_server, second_server) if host0 else (second_server, lmstudio_server)
        )
        with pytest.raises(lms.HostDownError) as info:  # noqa: PT012
            async with pool.llm("m0") as model:
                task = asyncio.create_task(model.respond("long", config={"max_tokens": 200}))
                await asyncio.sleep(0.1)
                dropped.stop()
                await task
        assert isinstance(info.value, lms.LMStudioConnectionError)
        assert info.value.__cause__ is not None
        # New leases go to the other host at once.
        async with pool.llm("m0") as moved:
            reply = await moved.respond("hi", config=SHORT)
            assert reply.stop_reason == "maxPredictedTokensReached"
        assert loaded_keys(other) == ["m0"]
        # The host comes back (a new server on its port) once a reconnect succeeds.
        revived = ThreadedStandInServer(
            dropped.port, catalog=catalog(), load_seconds=0.05, memory_gb=16
        ).start()
        try:
            index = 0 if host0 else 1
            await eventually(lambda: pool._hosts[index].up)
            async with pool.llm("m1"), pool.llm("m2"), pool.llm("m3"), pool.llm("m4"):
                assert revived.loaded_instances()  # placed there too
            assert pool.stats().by_target[(index, None)].loads >= 1
            await pool.aclose()
            assert revived.loaded_instances() == []
        finally:
            revived.stop()
    assert other.loaded_instances() == []


async def test_connection_drop_inside_a_lease_marks_the_host_down_until_it_reconnects(
    clients: list[lms.AsyncClient], lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(clients[0], reconcile_interval=None) as pool:
        with pytest.raises(lms.HostDownError, match="dropped"):  # noqa: PT012
            async with pool.llm("m0") as model:
                lmstudio_server.faults.drop_after(0, namespace="llm")
                await model.respond("hi", config=SHORT)
        # The probe reconnects at once (the server is fine): the next lease works.
        async with pool.llm("m0", timeout=10) as model:
            await model.respond("hi", config=SHORT)


async def test_instances_still_loaded_after_a_drop_are_kept_and_a_restart_is_noticed(
    clients: list[lms.AsyncClient], lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(
        clients[0], memory_budget=budget_for(1), reconcile_interval=None
    ) as pool:
        async with pool.llm("m0") as model:
            first = model.identifier
        with pytest.raises(lms.HostDownError):  # noqa: PT012
            async with pool.llm("m0") as model:
                lmstudio_server.faults.drop_after(0, namespace="llm")  # models stay loaded
                await model.respond("hi", config=SHORT)
        await eventually(lambda: pool._hosts[0].up)
        async with pool.llm("m0", timeout=10) as model:  # the same instance, not reloaded
            assert model.identifier == first
            await model.respond("hi", config=SHORT)
        assert pool.stats().loads == 1
        assert [i.identifier for i in lmstudio_server.loaded_instances()] == [first]
        with pytest.raises(lms.HostDownError):  # noqa: PT012
            async with pool.llm("m0") as model:
                lmstudio_server.faults.drop_after(0, namespace="llm")
                await model.respond("hi", config=SHORT)
        lmstudio_server.restart(reset_state=True)  # this time the models are gone
        await eventually(lambda: pool._hosts[0].up)
        async with pool.llm("m0", timeout=10) as model:  # it learned that: loaded again
            assert model.identifier != first
            reply = await model.respond("hi", config=SHORT)
            assert reply.stop_reason == "maxPredictedTokensReached"
        assert pool.stats().loads == 2


async def test_all_hosts_down_is_a_host_down_error_at_the_deadline(
    clients: list[lms.AsyncClient],
    lmstudio_server: ThreadedStandInServer,
    second_server: ThreadedStandInServer,
) -> None:
    async with lms.AsyncModelPool(clients) as pool:
        async with pool.llm("m0"):
            pass
        lmstudio_server.stop()
        second_server.stop()
        with pytest.raises(lms.HostDownError, match="no host is up") as info:
            async with pool.llm("m1", timeout=1):
                pass
        assert isinstance(info.value.__cause__, lms.LMStudioConnectionError)


async def test_a_host_down_from_the_start_is_waited_for_until_the_deadline() -> None:
    # The first lease cannot read any catalogue: it waits for a host (not "no such model").
    port = free_port()
    timeouts = lms.Timeouts(connect=2, idle=5)
    async with (
        lms.AsyncClient(f"127.0.0.1:{port}", timeout=timeouts) as client,
        lms.AsyncModelPool(client) as pool,
    ):
        loop = asyncio.get_running_loop()
        for _ in range(2):  # the second finds the host already marked down
            started = loop.time()
            with pytest.raises(lms.HostDownError, match="no host is up") as info:
                async with pool.llm("m0", timeout=0.3):
                    pass
            assert loop.time() - started >= 0.25  # it waited for its deadline
            assert isinstance(info.value.__cause__, lms.LMStudioConnectionError)

        async def serve_later() -> ThreadedStandInServer:
            await asyncio.sleep(0.3)
            return await asyncio.to_thread(
                ThreadedStandInServer(port, catalog=catalog(), load_seconds=0.05).start
            )

        starting = asyncio.create_task(serve_later())
        try:
            async with pool.llm("m0", timeout=10) as model:  # served once the host is up
                reply = await model.respond("hi", config=SHORT)
                assert reply.stop_reason == "maxPredictedTokensReached"
        finally:
            server = await starting
        await pool.aclose()
        assert server.loaded_instances() == []
        server.stop()


@pytest.mark.parametrize("connected", [False, True])
async def test_a_hung_host_ends_a_lease_at_its_deadline(
    lmstudio_server: ThreadedStandInServer, connected: bool
) -> None:
    # A server that accepts connections and never answers: the lease's timeout bounds the
    # whole wait (connecting included), and it ends with the pool's timeout error.
    async with (
        lms.AsyncClient(lmstudio_server.host) as client,  # connect deadline: 10 s
        lms.AsyncModelPool(client) as pool,
    ):
        if connected:
            async with pool.llm("m0"):
                pass
        lmstudio_server.faults.silent = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(lms.PoolTimeoutError, match=r"within 0\.5s") as info:
            async with pool.llm("m1", timeout=0.5):
                pass
        assert loop.time() - started < 3
        assert isinstance(info.value.__cause__, lms.LMStudioTimeoutError)
        # Only the lease's deadline, as given: not the time that was left of it, which the
        # call it cut short had as its own deadline ("idle deadline (0.499983 s)").
        assert str(info.value) == "model pool: no instance of 'm1' became available within 0.5s"
        lmstudio_server.faults.silent = False


async def test_a_hosts_own_connect_deadline_bounds_the_pools_calls_to_it(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    # The pool's metadata calls keep the host client's connect deadline (they built a
    # Timeouts of their own, whose default 10 s connect then applied).
    client = lms.AsyncClient(lmstudio_server.host, timeout=lms.Timeouts(connect=0.3))
    async with client, lms.AsyncModelPool(client, reconcile_interval=None) as pool:
        lmstudio_server.faults.ignore_auth = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            waiting = asyncio.create_task(pool.llm("m0", timeout=20).__aenter__())
            await eventually(lambda: not pool._hosts[0].up)
            assert loop.time() - started < 2.0
            assert "took longer than 0.3 s" in str(pool._hosts[0].down_cause)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        finally:
            lmstudio_server.faults.ignore_auth = False


async def test_closing_the_pool_ends_a_lease_waiting_for_a_host() -> None:
    async with lms.AsyncClient(f"127.0.0.1:{free_port()}") as client:
        pool = lms.AsyncModelPool(client)
        waiting = asyncio.create_task(pool.llm("m0", timeout=30).__aenter__())
        await eventually(lambda: not pool._hosts[0].up)
        await pool.aclose()
        with pytest.raises(lms.ClientClosedError, match="pool is closed"):
            await waiting


@standin(devices={"gpu-box": 3.2})
async def test_lm_link_devices_are_placement_targets(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.reset_peak_memory()
    budget = {(0, None): budget_for(1), (0, "gpu-box"): budget_for(2)}
    async with lms.AsyncModelPool(client, memory_budget=budget) as pool:
        async with pool.llm("m0") as a, pool.llm("m1") as b, pool.llm("m2") as c:
            devices = sorted(str(m.info.device_identifier) for m in (a, b, c))
            assert devices == ["None", "gpu-box", "gpu-box"]
        for key in ["m3", "m4", "m0", "m1"]:
            async with pool.llm(key) as model:
                assert (await model.respond("hi", config=SHORT)).stop_reason != "modelUnloaded"
        stats = pool.stats()
        assert set(stats.by_target) == {(0, None), (0, "gpu-box")}
        assert stats.used_bytes[(0, "gpu-box")] <= budget_for(2)
    peaks = lmstudio_server.peak_memory_by_device()
    assert peaks.get(None, 0) <= budget_for(1)
    assert peaks.get("gpu-box", 0) <= budget_for(2)
    assert lmstudio_server.loaded_instances() == []


# --- unloads that fail ------------------------------------------------------------------------


async def _warm_up_then_hang_the_eviction_of_m0(
    pool: lms.AsyncModelPool, server: ThreadedStandInServer, timeout: float
) -> asyncio.Task[str]:
    """m1 then m0 leased once (m0 ends loaded and idle in a one-model budget); then the
    server goes silent and a lease of m1 evicts m0: the unload is received, never done."""
    for key in ("m1", "m0"):
        async with pool.llm(key) as model:
            await model.respond("hi", config=SHORT)
    server.reset_peak_memory()
    server.faults.silent = True

    async def lease_m1() -> str:
        async with pool.llm("m1", timeout=timeout) as model:
            return (await model.respond("hi", config=SHORT)).stop_reason

    leasing = asyncio.create_task(lease_m1())
    await eventually(lambda: bool(server.received_messages(type="rpcCall", endpoint="unloadModel")))
    return leasing


async def test_an_instance_whose_unload_failed_counts_against_the_budget_until_it_is_gone(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with lms.AsyncModelPool(
        client, memory_budget=budget_for(1), reconcile_interval=None
    ) as pool:
        leasing = await _warm_up_then_hang_the_eviction_of_m0(pool, lmstudio_server, 10)
        lmstudio_server.faults.silent = False
        lmstudio_server.faults.drop_connections()  # the unload fails: m0 is still loaded
        # The load of m1 waits for the host to return and be reconciled, where m0 is
        # unloaded again; only then does m1 load.
        assert await leasing == "maxPredictedTokensReached"
        assert loaded_keys(lmstudio_server) == ["m1"]
        assert pool.stats().used_bytes[(0, None)] == MODEL_BYTES
    assert lmstudio_server.peak_memory_bytes <= budget_for(1)
    assert lmstudio_server.loaded_instances() == []


async def test_closing_unloads_an_instance_whose_unload_failed(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    pool = lms.AsyncModelPool(client, memory_budget=budget_for(1), reconcile_interval=None)
    leasing = await _warm_up_then_hang_the_eviction_of_m0(pool, lmstudio_server, 0.5)
    with pytest.raises(lms.PoolTimeoutError):
        await leasing
    lmstudio_server.faults.silent = False
    lmstudio_server.faults.drop_connections()  # the unload fails; nothing asks the host again
    # The pool still counts m0 (it may be loaded, and it is), and no load is under way.
    await eventually(lambda: pool.stats().used_bytes[(0, None)] == MODEL_BYTES)
    await eventually(lambda: pool._hosts[0].up)
    assert loaded_keys(lmstudio_server) == ["m0"]
    await pool.aclose()
    assert lmstudio_server.loaded_instances() == []
    assert lmstudio_server.peak_memory_bytes <= budget_for(1)


async def test_closing_unloads_what_the_pool_loaded_and_lost_track_of(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    pool = lms.AsyncModelPool(client, reconcile_interval=None)
    async with pool.llm("m0"):
        pass
    # A load of this pool whose answer was lost with its connection (an orphan), which no
    # reconciliation has seen yet; and someone else's model, which stays.
    lmstudio_server.preload("m1", identifier=f"m1@pool-{pool._token}-99")
    lmstudio_server.preload("m2", identifier="theirs")
    await pool.aclose()
    assert [i.identifier for i in lmstudio_server.loaded_instances()] == ["theirs"]

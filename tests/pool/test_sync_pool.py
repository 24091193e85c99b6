"""The sync ModelPool: the same behaviour through the loop thread, from many threads."""

from __future__ import annotations

import _thread
import inspect
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from client.test_connection import free_port  # tests/ is on sys.path

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .conftest import KEYS, MODEL_BYTES, budget_for, loaded_keys, standin

pytestmark = standin()

SHORT = {"max_tokens": 4}


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[lms.Client]:
    with lms.Client(lmstudio_server.host) as c:
        yield c


def test_constructor_mirrors_the_async_one() -> None:
    sync_params = inspect.signature(lms.ModelPool.__init__).parameters
    async_params = inspect.signature(lms.AsyncModelPool.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in sync_params.values()] == [
        (p.name, p.kind, p.default) for p in async_params.values()
    ]


def test_leases_from_many_threads_within_budget(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.reset_peak_memory()
    with lms.ModelPool(client, memory_budget=budget_for(2)) as pool:

        def one(i: int) -> str:
            with pool.llm(KEYS[i % 3], timeout=30) as model:
                assert isinstance(model, lms.SyncLLM)
                return model.respond(f"q{i}", config=SHORT).stop_reason

        with ThreadPoolExecutor(max_workers=12) as executor:
            results = list(executor.map(one, range(48)))
        assert results == ["maxPredictedTokensReached"] * 48
        stats = pool.stats()
        assert isinstance(stats, lms.PoolStats)
        assert stats.in_flight == stats.queued == 0
        assert stats.used_bytes[(0, None)] <= budget_for(2)
        assert "<ModelPool 1 host(s) open PoolStats(" in repr(pool)
    assert lmstudio_server.peak_memory_bytes <= budget_for(2)
    assert lmstudio_server.loaded_instances() == []
    assert pool.closed


def test_embedding_leases_pins_and_typed_errors(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    with lms.ModelPool(client, memory_budget=budget_for(1)) as pool:
        lease = pool.embedding("e0")
        assert repr(lease) == "<SyncPoolLease 'e0' not entered>"
        with lease as embedder:
            assert repr(lease) == f"<SyncPoolLease 'e0' leased {embedder.identifier!r}>"
            assert isinstance(embedder, lms.SyncEmbeddingModel)
            assert len(embedder.embed("x")) > 0
        pool.pin("m0")
        with pool.use("m0") as model:
            assert isinstance(model, lms.SyncLLM)
        with pytest.raises(lms.PoolTimeoutError), pool.llm("m1", timeout=0.2):
            pass  # m0 is pinned and the budget holds one model
        pool.unpin("m0")
        with pool.llm("m1"):
            assert loaded_keys(lmstudio_server) == ["e0", "m1"]
        with pytest.raises(lms.ModelNotFoundError), pool.use("nope"):
            pass
        with pytest.raises(lms.LMStudioValueError):
            pool.use("")


def test_an_error_in_the_block_reaches_the_pool(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    with lms.ModelPool(client, reconcile_interval=None) as pool:
        with pool.llm("m0") as model:
            first = model.identifier
        lmstudio_server.unload_all()
        with pytest.raises(lms.ModelNotFoundError), pool.llm("m0") as model:
            model.get_info()
        deadline = time.monotonic() + 5
        while pool.stats().used_bytes[(0, None)] and time.monotonic() < deadline:
            time.sleep(0.01)
        with pool.llm("m0") as model:
            assert model.identifier != first
        with pytest.raises(lms.HostDownError), pool.llm("m0") as model:  # noqa: PT012
            lmstudio_server.faults.drop_after(0, namespace="llm")
            model.respond("hi", config=SHORT)
        with pool.llm("m0", timeout=10) as model:  # the host is back
            assert model.respond("hi", config=SHORT).stop_reason != "modelUnloaded"


@standin(tokens_per_second=40)
def test_model_unloaded_mid_lease_reaches_the_pool(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    with lms.ModelPool(client, reconcile_interval=None) as pool:
        with pool.llm("m0") as model:
            first = model.identifier
        timer = threading.Timer(0.3, lmstudio_server.unload_all)
        timer.start()
        try:
            with pytest.raises(lms.ModelUnloadedError), pool.llm("m0") as model:
                model.respond("a long answer", config={"max_tokens": 100})
        finally:
            timer.cancel()
        with pool.llm("m0") as model:  # forgotten at once: a fresh instance
            assert model.identifier != first
            assert model.respond("hi", config=SHORT).stop_reason != "modelUnloaded"
        assert pool.stats().loads == 2


def test_waiting_thread_is_served_when_a_lease_ends(client: lms.Client) -> None:
    with lms.ModelPool(client, memory_budget=budget_for(1)) as pool:
        served = threading.Event()

        def wait_for_m1() -> None:
            with pool.llm("m1", timeout=10):
                served.set()

        with pool.llm("m0"):
            thread = threading.Thread(target=wait_for_m1)
            thread.start()
            deadline = time.monotonic() + 5
            while pool.stats().queued == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pool.stats().queued == 1
            assert not served.is_set()
        thread.join(10)
        assert served.is_set()
        assert pool.stats().by_key["m1"].waits == 1


def test_ctrl_c_while_waiting_leaves_the_queue(client: lms.Client) -> None:
    with lms.ModelPool(client, memory_budget=budget_for(1)) as pool:
        with pool.llm("m0"):
            timer = threading.Timer(0.3, _thread.interrupt_main)
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt), pool.llm("m1", timeout=10):
                    pass
            finally:
                timer.cancel()
            assert pool.stats().queued == 0
            assert pool.stats().in_flight == 1
        assert pool.stats().in_flight == 0
        with pool.llm("m1", timeout=10) as model:  # m0 is idle: evicted for m1
            assert model.model_key == "m1"


def test_bad_clients() -> None:
    with pytest.raises(lms.LMStudioValueError, match="sync Client"):
        lms.ModelPool(lms.AsyncClient("127.0.0.1:1"))  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="at least one client"):
        lms.ModelPool([])


def test_budget_bytes_are_reported(client: lms.Client) -> None:
    with lms.ModelPool(client, memory_budget=float(budget_for(1))) as pool:
        with pool.llm("m0"):
            stats = pool.stats()
        assert stats.used_bytes == {(0, None): MODEL_BYTES}
        assert stats.budget_bytes == {(0, None): budget_for(1)}


def test_memory_estimates_reach_the_pool(client: lms.Client) -> None:
    with lms.ModelPool(
        client, memory_budget=MODEL_BYTES - 1, memory_estimates={"m0": MODEL_BYTES // 2}
    ) as pool:
        with pool.llm("m0") as model:  # refused by LM Studio's estimate alone
            assert model.model_key == "m0"
        assert pool.stats().used_bytes[(0, None)] == MODEL_BYTES // 2
    with pytest.raises(lms.LMStudioValueError, match="memory_estimates"):
        lms.ModelPool(client, memory_estimates={"m0": 0})


def test_a_host_that_cannot_be_reached_is_a_host_down_error_at_the_deadline() -> None:
    with (
        lms.Client(f"127.0.0.1:{free_port()}") as client,
        lms.ModelPool(client) as pool,
    ):
        started = time.monotonic()
        with (
            pytest.raises(lms.HostDownError, match="no host is up") as info,
            pool.llm("m0", timeout=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.25  # it waited for the host until its deadline
        assert isinstance(info.value.__cause__, lms.LMStudioConnectionError)

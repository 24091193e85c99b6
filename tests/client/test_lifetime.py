"""Lifetime semantics (issue 15) against the stand-in, over real sockets: a prediction cut
short by an unload raises ``ModelUnloadedError``; a cancelled or timed-out load leaves
nothing behind before it raises; single flight per model key with the TTL/config mismatch
policy; typed load errors. ``tests/sync/test_sync_lifetime.py`` mirrors them on the sync
Client."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from ._support import LLAMA, QWEN, SMOL, eventually, loaded_ids

SLOW = pytest.mark.lmstudio_server(tokens_per_second=40)
STORY = "Write a long story about a village by the sea."


async def _after_fragments(seen: list[lms.Fragment], count: int = 3) -> None:
    await eventually(lambda: len(seen) >= count)


# --- a prediction whose model goes away -----------------------------------------------------


@SLOW
async def test_respond_raises_when_another_client_unloads_the_model(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.load(LLAMA)
    seen: list[lms.Fragment] = []
    task = asyncio.create_task(llm.respond(STORY, on_fragment=seen.append))
    await _after_fragments(seen)
    async with lms.AsyncClient(lmstudio_server.host) as other:
        await other.llm.unload(LLAMA)
    with pytest.raises(lms.ModelUnloadedError) as info:
        await task
    error = info.value
    assert isinstance(error, lms.ModelNotFoundError)
    assert error.subject == LLAMA
    assert LLAMA in str(error)
    assert error.result is not None
    assert error.result.stop_reason == "modelUnloaded"
    assert error.result.content == "".join(f.content for f in seen)
    assert error.result.content  # the partial reply is kept
    assert lmstudio_server.cancel_count == 0  # the server ended it, not us


@SLOW
async def test_complete_raises_when_the_server_unloads_the_model(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # (a TTL passing mid-prediction does not unload it: a model at work is not idle)
    llm = await client.llm.load(LLAMA, ttl=60)
    seen: list[lms.Fragment] = []
    task = asyncio.create_task(llm.complete("Once upon a time", on_fragment=seen.append))
    await _after_fragments(seen)
    lmstudio_server.advance_clock(120)
    lmstudio_server.unload_all()
    with pytest.raises(lms.ModelUnloadedError) as info:
        await task
    assert info.value.result is not None
    assert info.value.result.stop_reason == "modelUnloaded"
    assert info.value.result.content.startswith("".join(f.content for f in seen))
    assert loaded_ids(lmstudio_server) == []


@SLOW
async def test_stream_raises_when_another_client_unloads_a_jit_model(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # (a JIT load by another client waits for the prediction instead of evicting mid-way)
    llm = await client.llm.model(SMOL)
    stream = llm.respond_stream(STORY)
    received: list[str] = []

    async def consume() -> None:
        async with stream:
            async for fragment in stream:
                received.append(fragment.content)
                if len(received) == 3:
                    async with lms.AsyncClient(lmstudio_server.host) as other:
                        await other.llm.unload(SMOL)

    with pytest.raises(lms.ModelUnloadedError) as info:
        await consume()
    assert info.value.result is not None
    assert info.value.result.content == "".join(received)
    assert stream.done
    assert stream.content == "".join(received)
    with pytest.raises(lms.ModelUnloadedError):
        stream.result()
    assert loaded_ids(lmstudio_server) == []
    assert lmstudio_server.cancel_count == 0


@SLOW
async def test_our_own_cancel_stays_a_normal_result(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.load(LLAMA)
    stream = llm.respond_stream(STORY)
    async for _ in stream:
        await stream.cancel()
    assert stream.result().stop_reason == "userStopped"
    # Concurrent predictions on one model: all of them see the unload.
    seen: list[list[lms.Fragment]] = [[] for _ in range(6)]
    tasks = [asyncio.create_task(llm.respond(STORY, on_fragment=s.append)) for s in seen]
    await eventually(lambda: all(len(s) >= 2 for s in seen))
    await client.llm.unload(LLAMA)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, lms.ModelUnloadedError) for r in results), results


# --- cancelled / timed-out loads leave nothing behind ---------------------------------------


@pytest.mark.lmstudio_server(load_seconds=0.4)
async def test_timed_out_load_then_immediate_retry_with_the_same_identifier(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    for _ in range(4):
        with pytest.raises(lms.LMStudioTimeoutError):
            await client.llm.load(SMOL, "fixed", timeout=lms.Timeouts(total=0.05))
        assert lmstudio_server.memory_used_bytes() == 0  # no reservation left: at once
    handle = await client.llm.load(SMOL, "fixed")
    assert handle.identifier == "fixed"
    assert loaded_ids(lmstudio_server) == ["fixed"]
    assert lmstudio_server.cancel_count == 4


@pytest.mark.lmstudio_server(load_seconds=0.4)
async def test_cancelled_load_then_immediate_retry(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    for _ in range(3):
        started = asyncio.Event()
        task = asyncio.create_task(
            client.llm.load(SMOL, "fixed", on_progress=lambda _p, e=started: e.set())
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lmstudio_server.memory_used_bytes() == 0
    async with lms.AsyncClient(lmstudio_server.host) as other:  # another socket: no ordering
        handle = await other.llm.load(SMOL, "fixed")
    assert handle.identifier == "fixed"


@pytest.mark.lmstudio_server(load_seconds=0.4)
async def test_cancelled_model_then_retry_does_not_make_key_2(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    for _ in range(3):
        started = asyncio.Event()
        task = asyncio.create_task(
            client.llm.model(SMOL, on_progress=lambda _p, e=started: e.set())
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lmstudio_server.memory_used_bytes() == 0
    for _ in range(3):
        with pytest.raises(lms.LMStudioTimeoutError):
            await client.llm.model(SMOL, timeout=lms.Timeouts(total=0.05))
        assert lmstudio_server.memory_used_bytes() == 0
    handle = await client.llm.model(SMOL)
    assert handle.identifier == SMOL
    assert loaded_ids(lmstudio_server) == [SMOL]


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_asyncio_timeout_around_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await client.llm.load(SMOL, "fixed")
    assert lmstudio_server.memory_used_bytes() == 0
    assert (await client.llm.load(SMOL, "fixed")).identifier == "fixed"


# --- single flight per key, TTL and config mismatch ------------------------------------------


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_concurrent_model_calls_share_one_load_whatever_their_ttl_or_config(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.warns(lms.ConfigMismatchWarning) as caught:
        plain, with_ttl, with_config = await asyncio.gather(
            client.llm.model(LLAMA),
            client.llm.model(LLAMA, ttl=60),
            client.llm.model(LLAMA, config={"context_length": 2048}),
        )
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1
    assert plain == with_ttl == with_config
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert any("TTL" in m and "ttl: asked 60.0" in m for m in messages), messages
    assert any("context_length" in m for m in messages), messages


async def test_ttl_mismatch_follows_the_policy(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.model(SMOL)
    with pytest.raises(lms.ConfigMismatchError, match="TTL") as info:
        await client.llm.model(SMOL, ttl=30, on_config_mismatch="raise")
    assert info.value.differences == {"ttl": (30.0, None)}
    same = await client.llm.model(SMOL, ttl=None, on_config_mismatch="raise")  # None: any
    assert same.identifier == SMOL
    reloaded = await client.llm.model(SMOL, ttl=30, on_config_mismatch="reload")
    assert reloaded.info.ttl == 30.0
    assert [(i.identifier, i.ttl_ms) for i in lmstudio_server.loaded_instances()] == [
        (SMOL, 30_000)
    ]


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_joiner_with_reload_policy_reloads_once(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    _, mine = await asyncio.gather(
        client.llm.model(SMOL),
        client.llm.model(SMOL, config={"context_length": 1024}, on_config_mismatch="reload"),
    )
    assert mine.identifier == SMOL
    assert [(i.identifier, i.context_length) for i in lmstudio_server.loaded_instances()] == [
        (SMOL, 1024)
    ]


@pytest.mark.lmstudio_server(load_seconds=0.6)
async def test_a_joiners_reload_stays_within_its_total_deadline(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The reload (unload, then get-or-load again) is part of the joiner's call: it spends
    # the same total deadline as the shared load, and its own load is cancelled when that
    # runs out. Before, each step got a fresh total (0.6 s load + 0.6 s reload > 1 s).
    first = asyncio.ensure_future(client.llm.model(SMOL))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.model(
            SMOL,
            config={"context_length": 1024},
            on_config_mismatch="reload",
            timeout=lms.Timeouts(total=1.0),
        )
    assert time.monotonic() - started < 1.5
    assert (info.value.kind, info.value.timeout) == ("total", 1.0)
    assert "within the total deadline (1 s)" in str(info.value)
    await first
    # The reload's load was cancelled on the server: nothing of it stays loaded.
    await eventually(lambda: lmstudio_server.loaded_instances() == [])
    assert lmstudio_server.cancel_count >= 1


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_joiner_with_raise_policy_raises_alone(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    first, second = await asyncio.gather(
        client.llm.model(SMOL),
        client.llm.model(SMOL, ttl=5, on_config_mismatch="raise"),
        return_exceptions=True,
    )
    assert isinstance(first, lms.LLM)
    assert isinstance(second, lms.ConfigMismatchError)
    assert loaded_ids(lmstudio_server) == [SMOL]


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_a_starter_with_raise_policy_raises_alone(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.model(SMOL)  # loaded without a TTL
    # The first caller starts the shared get-or-load and finds SMOL already loaded: its
    # policy is its own; the caller that joined it asked for nothing in particular.
    first, second = await asyncio.gather(
        client.llm.model(SMOL, ttl=5, on_config_mismatch="raise"),
        client.llm.model(SMOL),
        return_exceptions=True,
    )
    assert isinstance(first, lms.ConfigMismatchError)
    assert isinstance(second, lms.LLM)
    assert second.identifier == SMOL
    assert loaded_ids(lmstudio_server) == [SMOL]


@pytest.mark.lmstudio_server(load_seconds=0.2)
async def test_concurrent_reload_callers_each_reload_and_the_last_one_wins(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # Three callers that disagree, each asking to reload: each gets an instance with its own
    # TTL in turn (no warning telling it to pass "reload"); the last reload replaces the
    # instances the others got, as it would have one after the other.
    ttls = (100, 200, 300)
    handles = await asyncio.gather(
        *(client.llm.model(SMOL, ttl=t, on_config_mismatch="reload") for t in ttls)
    )
    [(identifier, ttl_ms)] = [(i.identifier, i.ttl_ms) for i in lmstudio_server.loaded_instances()]
    assert identifier == SMOL
    winners = [t for t in ttls if t * 1000 == ttl_ms]
    assert len(winners) == 1
    for ttl, handle in zip(ttls, handles, strict=True):
        assert handle.info.ttl == ttl  # what it was given had its TTL
        if ttl in winners:
            assert (await handle.get_info()).ttl == ttl
        else:
            with pytest.raises(lms.ModelNotFoundError):
                await handle.get_info()


# --- typed load errors over the wire ----------------------------------------------------------


@pytest.mark.lmstudio_server(memory_gb=2)
async def test_insufficient_memory_is_typed(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(lms.InsufficientMemoryError, match="insufficient memory") as info:
        await client.llm.load(QWEN)
    assert info.value.error_data is not None
    assert info.value.error_data["requiredBytes"] > info.value.error_data["freeBytes"]
    with pytest.raises(lms.InsufficientMemoryError):
        await client.llm.model(QWEN)  # JIT too
    assert loaded_ids(lmstudio_server) == []


async def test_identifier_taken_is_typed(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.load(SMOL, "worker")
    with pytest.raises(lms.IdentifierTakenError) as info:
        await client.llm.load(LLAMA, "worker")
    assert info.value.identifier == "worker"
    assert isinstance(info.value, lms.ServerError)
    assert loaded_ids(lmstudio_server) == ["worker"]


@pytest.mark.parametrize("unloaded_by_someone_else", [True, False])
async def test_a_loaded_block_whose_exit_is_cancelled_still_unloads_and_reports_nothing(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, unloaded_by_someone_else: bool
) -> None:
    # The task is cancelled (a shutdown) while the block's exit unloads the instance, and
    # the client is closed right after: aclose() lets that unload finish first, and its
    # expected ModelNotFoundError (when someone else had unloaded the instance) is dropped,
    # never logged by asyncio as "Task exception was never retrieved".
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with lms.AsyncClient(lmstudio_server.host) as other:

            async def user() -> None:
                async with client.llm.loaded(SMOL, "scoped") as model:
                    if unloaded_by_someone_else:
                        await other.llm.unload(model.identifier)
                    loop.call_soon(task.cancel)  # lands while the exit's unload runs

            task = asyncio.create_task(user())
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.aclose()  # waits for the exit's unload
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
    assert loaded_ids(lmstudio_server) == []


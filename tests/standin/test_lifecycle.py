"""Cancel, connection drops, concurrency, TTL, JIT auto-evict, memory budget, estimates."""

from __future__ import annotations

import asyncio
import time

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import StandInServer, ThreadedStandInServer

from ._wire import RawClient, load_param, messages, stack, types, wait_until

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"
VLM = "mobilevlm_v2-1.7b"


@pytest.mark.lmstudio_server(load_seconds=2)
@pytest.mark.parametrize("endpoint", ["loadModel", "getOrLoad"])
async def test_cancel_load(server: StandInServer, client: RawClient, endpoint: str) -> None:
    sock = await client.connect("llm")
    creation = (
        load_param(LLAMA)
        if endpoint == "loadModel"
        else {"identifier": LLAMA, "loadConfigStack": stack()}
    )
    channel_id = await sock.open_channel(endpoint, creation)
    frames = []
    while True:  # wait for the first progress packet
        frame = await sock.recv()
        frames.append(frame)
        if frame["type"] == "channelSend" and "rogress" in frame["message"]["type"]:
            break
    started = time.monotonic()
    await sock.send({"type": "channelSend", "channelId": channel_id, "message": {"type": "cancel"}})
    frames += await sock.collect(channel_id)
    assert time.monotonic() - started < 1.0
    assert frames[-1]["type"] == "channelError"
    assert frames[-1]["error"]["title"] == "Model load was cancelled"
    assert "success" not in types(frames)
    assert "loadSuccess" not in types(frames)
    assert server.loaded_instances() == []
    assert server.open_channel_count() == 0
    assert [(c.channel_id, c.endpoint) for c in server.cancels()] == [(channel_id, endpoint)]
    assert await sock.result("listLoaded") == []
    # the identifier is free again
    server.load_seconds = 0.01
    frames = await sock.channel("loadModel", load_param(LLAMA, identifier=LLAMA))
    assert frames[-1]["type"] == "channelClose"
    await sock.ws.close()


@pytest.mark.lmstudio_server(load_seconds=2)
async def test_connection_drop_aborts_load(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.open_channel("loadModel", load_param(LLAMA))
    frame = await sock.recv()
    assert frame["message"]["type"] == "resolved"
    assert server.open_channel_count(namespace="llm", endpoint="loadModel") == 1
    await sock.ws.close()
    await wait_until(lambda: server.connection_count() == 0)
    assert server.open_channel_count() == 0
    assert server.loaded_instances() == []
    other = await client.connect("llm")
    assert await other.result("listLoaded") == []
    await other.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.5)
async def test_loads_run_concurrently(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    llm2 = await client.connect("llm")
    emb = await client.connect("embedding")
    started = time.monotonic()
    results = await asyncio.gather(
        llm.channel("loadModel", load_param(LLAMA)),
        llm2.channel("loadModel", load_param(SMOL)),
        emb.channel("loadModel", load_param(NOMIC)),
    )
    elapsed = time.monotonic() - started
    assert all(r[-1]["type"] == "channelClose" for r in results)
    assert elapsed < 1.2, elapsed  # three 0.5 s loads in parallel, not 1.5 s in series
    assert len(server.loaded_instances()) == 3
    await llm.ws.close()
    await llm2.ws.close()
    await emb.ws.close()


async def test_ttl_expiry_with_advance_clock(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.channel("loadModel", load_param(SMOL, ttlMs=60_000))
    await sock.channel("loadModel", load_param(LLAMA))  # no TTL
    server.advance_clock(59)
    assert len(server.loaded_instances()) == 2
    # listLoaded / getModelInfo / getLoadConfig are not "use"
    await sock.result("listLoaded")
    spec = {"type": "query", "query": {"identifier": SMOL}}
    await sock.result("getModelInfo", {"specifier": spec, "throwIfNotFound": True})
    await sock.result("getLoadConfig", {"specifier": spec})
    server.advance_clock(1.5)
    assert [i.identifier for i in server.loaded_instances()] == [LLAMA]
    server.advance_clock(10**6)
    assert [i.identifier for i in server.loaded_instances()] == [LLAMA]
    await sock.ws.close()


async def test_use_resets_idle_timer(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.channel(
        "getOrLoad", {"identifier": SMOL, "loadTtlMs": 10_000, "loadConfigStack": stack()}
    )
    before = server.loaded_instances()[0].last_used_time
    server.advance_clock(8)
    frames = await sock.channel("getOrLoad", {"identifier": SMOL, "loadConfigStack": stack()})
    assert types(frames)[0] == "alreadyLoaded"
    after = server.loaded_instances()[0].last_used_time
    assert before is not None
    assert after is not None
    assert after - before >= 8000
    server.advance_clock(8)
    spec = {"type": "query", "query": {"identifier": SMOL}}
    await sock.result("countTokens", {"specifier": spec, "inputString": "hi"})
    server.advance_clock(8)
    assert len(server.loaded_instances()) == 1
    server.advance_clock(3)
    assert server.loaded_instances() == []
    await sock.ws.close()


async def test_ttl_expiry_real_time(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.channel("loadModel", load_param(SMOL, ttlMs=150))
    assert len(server.loaded_instances()) == 1
    await asyncio.sleep(0.3)
    assert await sock.result("listLoaded") == []
    await sock.ws.close()


async def test_jit_auto_evict_across_namespaces(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    emb = await client.connect("embedding")
    await llm.channel("loadModel", load_param(LLAMA))  # explicit: never auto-evicted
    await emb.channel(
        "getOrLoad", {"identifier": NOMIC, "loadTtlMs": 300_000, "loadConfigStack": stack()}
    )
    frames = await llm.channel(
        "getOrLoad", {"identifier": SMOL, "loadTtlMs": 300_000, "loadConfigStack": stack()}
    )
    kinds = types(frames)
    assert kinds[:2] == ["startLoading", "unloadingOtherJITModel"]
    assert kinds.count("unloadingOtherJITModel") == 1
    assert messages(frames)[1]["info"]["modelKey"] == NOMIC
    assert messages(frames)[1]["info"]["type"] == "embedding"
    assert [(i.identifier, i.jit) for i in server.loaded_instances()] == [
        (LLAMA, False),
        (SMOL, True),
    ]
    reply = await emb.rpc(
        "getModelInfo",
        {"specifier": {"type": "query", "query": {"identifier": NOMIC}}, "throwIfNotFound": True},
    )
    assert reply["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"
    await llm.ws.close()
    await emb.ws.close()


@pytest.mark.lmstudio_server(jit_evict=False)
async def test_jit_evict_disabled(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    await llm.channel("getOrLoad", {"identifier": LLAMA, "loadConfigStack": stack()})
    frames = await llm.channel("getOrLoad", {"identifier": SMOL, "loadConfigStack": stack()})
    assert "unloadingOtherJITModel" not in types(frames)
    assert len(server.loaded_instances()) == 2
    await llm.ws.close()


async def test_memory_budget(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    emb = await client.connect("embedding")
    # what LM Studio's own test suite keeps loaded, plus more on top
    for sock, model in [
        (llm, LLAMA),
        (emb, NOMIC),
        (llm, SMOL),
        (llm, QWEN),
        (llm, VLM),
        (llm, LLAMA),
    ]:
        frames = await sock.channel("loadModel", load_param(model))
        assert frames[-1]["type"] == "channelClose", frames[-1]
    frames = await llm.channel(
        "loadModel", load_param(QWEN, config={"llm.load.contextLength": 200_000})
    )
    error = frames[-1]["error"]
    assert frames[-1]["type"] == "channelError"
    assert "insufficient memory" in error["title"]
    assert "cause" in error
    assert "suggestion" in error
    assert len(server.loaded_instances()) == 6
    await llm.ws.close()
    await emb.ws.close()


@pytest.mark.lmstudio_server(memory_gb=1)
async def test_memory_budget_small(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    frames = await llm.channel("loadModel", load_param(LLAMA))
    assert "insufficient memory" in frames[-1]["error"]["title"]
    frames = await llm.channel("loadModel", load_param(SMOL))
    assert frames[-1]["type"] == "channelClose"
    await llm.ws.close()


async def test_estimate(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    small = await llm.result("estimateModelUsage", {"modelKey": LLAMA, "loadConfigStack": stack()})
    mem = small["memory"]
    assert mem["confidence"] in ("high", "low")
    assert mem["modelBytes"] == 1_321_082_528
    assert mem["totalBytes"] == mem["modelBytes"] + mem["contextBytes"]
    assert mem["totalVramBytes"] == mem["modelVramBytes"] + mem["contextVramBytes"]
    assert small["passesGuardrails"] is True
    bigger = await llm.result(
        "estimateModelUsage",
        {"modelKey": LLAMA, "loadConfigStack": stack(**{"llm.load.contextLength": 8192})},
    )
    assert bigger["memory"]["contextBytes"] == 2 * mem["contextBytes"]
    half = await llm.result(
        "estimateModelUsage",
        {
            "modelKey": LLAMA,
            "loadConfigStack": stack(**{"llm.load.llama.acceleration.offloadRatio": 0.5}),
        },
    )
    assert half["memory"]["modelVramBytes"] == mem["modelBytes"] // 2
    huge = await llm.result(
        "estimateModelUsage",
        {"modelKey": QWEN, "loadConfigStack": stack(**{"llm.load.contextLength": 1_000_000})},
    )
    assert huge["passesGuardrails"] is False
    reply = await llm.rpc("estimateModelUsage", {"modelKey": "nope", "loadConfigStack": stack()})
    assert reply["error"]["displayData"]["code"] == "generic.pathNotFound"
    await llm.ws.close()


async def test_preload_and_unload_all(server: StandInServer) -> None:
    snap = server.preload(LLAMA, ttl_ms=1000, config={"llm.load.contextLength": 2048})
    assert snap.context_length == 2048
    assert snap.ttl_ms == 1000
    server.preload(NOMIC)
    assert [i.domain for i in server.loaded_instances()] == ["llm", "embedding"]
    assert server.unload_all() == 2
    assert server.loaded_instances() == []


def test_the_threaded_servers_speed_can_be_changed_and_is_checked(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    # A plain attribute before: setting it changed nothing, silently.
    lmstudio_server.tokens_per_second = 25
    assert lmstudio_server.tokens_per_second == 25.0
    with lms.Client(lmstudio_server.host) as client:
        stats = client.llm.model(LLAMA).respond("hi", config={"max_tokens": 5}).stats
    assert stats.tokens_per_second is not None
    assert stats.tokens_per_second < 100  # not the default 2000 tokens/s
    for bad in (0, -1.0, float("nan"), float("inf"), "fast"):
        with pytest.raises(ValueError, match="tokens_per_second"):
            lmstudio_server.tokens_per_second = bad  # type: ignore[assignment]
    assert lmstudio_server.tokens_per_second == 25.0

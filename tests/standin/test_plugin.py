"""The pytest plugin's fixtures, in sync and async tests."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from lmstudio_async.testing import ThreadedStandInServer

from ._wire import RawClient, load_param


def test_sync_fixture(lmstudio_server: ThreadedStandInServer, lmstudio_host: str) -> None:
    assert lmstudio_host == lmstudio_server.host
    with urllib.request.urlopen(f"http://{lmstudio_host}/lmstudio-greeting", timeout=5) as resp:
        assert json.loads(resp.read())["lmstudio"] is True
    assert lmstudio_server.load_seconds == 0.05
    snap = lmstudio_server.preload("smollm2-135m-instruct")
    assert [i.identifier for i in lmstudio_server.loaded_instances()] == [snap.identifier]


async def test_async_fixture(lmstudio_server: ThreadedStandInServer) -> None:
    async with RawClient(lmstudio_server.host) as client:
        sock = await client.connect("llm")
        frames = await sock.channel("loadModel", load_param("smollm2-135m-instruct", ttlMs=1000))
        assert frames[-1]["type"] == "channelClose"
        assert lmstudio_server.open_channel_count() == 0
        assert lmstudio_server.connection_count() == 1
        [msg] = lmstudio_server.received_messages(type="channelCreate")
        assert msg["creationParameter"]["ttlMs"] == 1000
        lmstudio_server.advance_clock(2)
        assert await sock.result("listLoaded") == []
        assert lmstudio_server.faults.drop_connections() == 1
        await sock.ws.receive(timeout=5)


@pytest.mark.lmstudio_server(load_seconds=0.2, memory_gb=8, jit_evict=False)
def test_marker_options(lmstudio_server: ThreadedStandInServer) -> None:
    assert lmstudio_server.load_seconds == 0.2
    assert lmstudio_server.jit_evict is False


def test_threaded_start_is_fast() -> None:
    started = time.perf_counter()
    server = ThreadedStandInServer(0).start()
    try:
        startup = time.perf_counter() - started
    finally:
        server.stop()
    assert startup < 0.5  # typically a few milliseconds


def test_start_in_thread_and_restart() -> None:
    from lmstudio_async.testing import StandInServer

    with StandInServer.start_in_thread(load_seconds=0) as server:
        port = server.port
        server.preload("llama-3.2-1b-instruct")
        server.restart()
        assert server.port == port
        assert len(server.loaded_instances()) == 1

"""Lifetime semantics (issue 15) through the sync Client: ``ModelUnloadedError`` from respond,
complete and ``SyncPredictionStream``; cancelled / timed-out loads leave nothing before they
raise; single flight per key across threads with the TTL/config mismatch policy; typed load
errors and LM Link devices."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .test_sync import eventually, loaded_ids

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"
STORY = "Write a long story about a village by the sea."
SLOW = pytest.mark.lmstudio_server(tokens_per_second=40)


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[lms.Client]:
    with lms.Client(lmstudio_server.host) as c:
        yield c


def _unload_from_another_client_after(
    server: ThreadedStandInServer, seen: list[object], identifier: str
) -> threading.Thread:
    def run() -> None:
        eventually(lambda: len(seen) >= 3, timeout=5.0)
        with lms.Client(server.host) as other:
            other.llm.unload(identifier)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@SLOW
def test_respond_raises_model_unloaded(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = client.llm.load(LLAMA)
    seen: list[lms.Fragment] = []
    thread = _unload_from_another_client_after(lmstudio_server, seen, LLAMA)
    with pytest.raises(lms.ModelUnloadedError) as info:
        llm.respond(STORY, on_fragment=seen.append)
    thread.join(10)
    assert info.value.result is not None
    assert info.value.result.stop_reason == "modelUnloaded"
    assert info.value.result.content == "".join(f.content for f in seen)
    assert info.value.subject == LLAMA


@SLOW
def test_complete_raises_model_unloaded_when_the_server_unloads(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = client.llm.load(LLAMA, ttl=60)
    seen: list[lms.Fragment] = []

    def expire() -> None:
        eventually(lambda: len(seen) >= 3, timeout=5.0)
        lmstudio_server.advance_clock(120)  # (no unload: a model at work is not idle)
        lmstudio_server.unload_all()

    thread = threading.Thread(target=expire)
    thread.start()
    with pytest.raises(lms.ModelUnloadedError) as info:
        llm.complete("Once upon a time", on_fragment=seen.append)
    thread.join(10)
    assert info.value.result is not None
    assert info.value.result.stop_reason == "modelUnloaded"
    assert loaded_ids(lmstudio_server) == []


@SLOW
def test_sync_stream_raises_model_unloaded_when_another_client_unloads(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = client.llm.model(SMOL)
    received: list[str] = []
    stream = llm.respond_stream(STORY)

    def consume() -> None:
        with stream:
            for fragment in stream:
                received.append(fragment.content)
                if len(received) == 3:
                    with lms.Client(lmstudio_server.host) as other:
                        other.llm.unload(SMOL)

    with pytest.raises(lms.ModelUnloadedError) as info:
        consume()
    assert info.value.result is not None
    assert info.value.result.content == "".join(received)
    assert stream.done
    with pytest.raises(lms.ModelUnloadedError):
        stream.result()
    assert lmstudio_server.cancel_count == 0
    assert loaded_ids(lmstudio_server) == []
    with pytest.raises(lms.ModelNotFoundError):  # the handle's instance is gone
        llm.respond("Hi")


@pytest.mark.lmstudio_server(load_seconds=0.4)
def test_timed_out_load_then_immediate_retry(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    for _ in range(3):
        with pytest.raises(lms.LMStudioTimeoutError):
            client.llm.load(SMOL, "fixed", timeout=lms.Timeouts(total=0.05))
        assert lmstudio_server.memory_used_bytes() == 0
    with lms.Client(lmstudio_server.host) as other:
        assert other.llm.load(SMOL, "fixed").identifier == "fixed"
    for _ in range(3):
        with pytest.raises(lms.LMStudioTimeoutError):
            client.llm.model(LLAMA, timeout=lms.Timeouts(total=0.05))
        assert loaded_ids(lmstudio_server) == ["fixed"]
    assert client.llm.model(LLAMA).identifier == LLAMA  # not llama:2
    assert loaded_ids(lmstudio_server) == ["fixed", LLAMA]


@pytest.mark.lmstudio_server(load_seconds=0.2)
def test_single_flight_across_threads_whatever_ttl_or_config(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    calls: list[Callable[[], lms.SyncLLM]] = [
        lambda: client.llm.model(LLAMA),
        lambda: client.llm.model(LLAMA, ttl=60),
        lambda: client.llm.model(LLAMA, config={"context_length": 2048}),
    ]
    with pytest.warns(lms.ConfigMismatchWarning), ThreadPoolExecutor(3) as pool:
        handles = list(pool.map(lambda call: call(), calls))
    assert len(set(handles)) == 1
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1
    with pytest.raises(lms.ConfigMismatchError, match="TTL"):
        client.llm.model(LLAMA, ttl=30, on_config_mismatch="raise")


@pytest.mark.lmstudio_server(memory_gb=2, devices={"gpu-box": 8})
def test_typed_errors_and_devices(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(lms.InsufficientMemoryError):
        client.llm.load(QWEN)
    remote = client.llm.load(QWEN, device="gpu-box")
    assert remote.device == "gpu-box"
    assert remote.info.device == "gpu-box"
    assert client.llm.estimate(QWEN, device="gpu-box").passes_guardrails is False  # 8 GB used
    with pytest.raises(lms.DeviceNotFoundError):
        client.llm.load(SMOL, device="nowhere")
    client.llm.load(SMOL, "worker")
    with pytest.raises(lms.IdentifierTakenError):
        client.llm.load(SMOL, "worker")
    remote.unload()
    assert loaded_ids(lmstudio_server) == ["worker"]
    assert lmstudio_server.peak_memory_by_device()["gpu-box"] > 5_000_000_000

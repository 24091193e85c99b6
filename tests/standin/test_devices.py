"""The stand-in's simulated LM Link devices (``devices=`` / ``--device NAME:GB``) and its peak
memory record, on the wire and through the client."""

from __future__ import annotations

import argparse
import asyncio

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import StandInServer, main
from lmstudio_async.testing._cli import add_arguments, server_from_args

from ._wire import RawClient, load_param, messages

QWEN = "qwen2.5-7b-instruct-1m"  # about 5.16 GB with its default config
LLAMA = "llama-3.2-1b-instruct"  # about 1.46 GB
SMOL = "smollm2-135m-instruct"  # about 0.16 GB
GB = 1_000_000_000

DEVICES = pytest.mark.lmstudio_server(memory_gb=2, devices={"gpu-box": 8, "mini": 1})


# --- the wire -------------------------------------------------------------------------------


@DEVICES
async def test_load_with_a_device_lands_there_with_its_own_budget(
    server: StandInServer, client: RawClient
) -> None:
    ws = await client.connect("llm")
    frames = await ws.channel("loadModel", load_param(QWEN, deviceIdentifier="gpu-box"))
    success = messages(frames)[-1]
    assert success["type"] == "success"
    assert success["info"]["deviceIdentifier"] == "gpu-box"
    [listed] = await ws.result("listLoaded")
    assert listed["deviceIdentifier"] == "gpu-box"
    assert server.memory_used_bytes() == 0
    assert server.memory_used_bytes("gpu-box") > 5 * GB
    # The local machine (2 GB) cannot take it: its own budget, its own error.
    frames = await ws.channel("loadModel", load_param(QWEN))
    assert frames[-1]["type"] == "channelError"
    assert "insufficient memory" in frames[-1]["error"]["title"]
    # Neither can "mini" (1 GB); the cause names the device.
    frames = await ws.channel("loadModel", load_param(LLAMA, deviceIdentifier="mini"))
    assert 'device "mini"' in frames[-1]["error"]["cause"]
    # Local instances report deviceIdentifier null.
    frames = await ws.channel("loadModel", load_param(SMOL))
    assert messages(frames)[-1]["info"]["deviceIdentifier"] is None


@DEVICES
async def test_unknown_device_is_an_error_everywhere(
    server: StandInServer, client: RawClient
) -> None:
    ws = await client.connect("llm")
    frames = await ws.channel("loadModel", load_param(SMOL, deviceIdentifier="nowhere"))
    error = frames[-1]["error"]
    assert error["title"] == 'Unknown device "nowhere"'
    assert '"gpu-box"' in error["cause"]
    reply = await ws.rpc("estimateModelUsage", {**load_param(SMOL), "deviceIdentifier": "x"})
    assert reply["type"] == "rpcError"
    reply = await ws.rpc("unloadModel", {"identifier": SMOL, "deviceIdentifier": "x"})
    assert reply["type"] == "rpcError"
    assert server.loaded_instances() == []


@DEVICES
async def test_estimate_and_unload_per_device(server: StandInServer, client: RawClient) -> None:
    ws = await client.connect("llm")
    fits = await ws.result(
        "estimateModelUsage", {**load_param(QWEN), "deviceIdentifier": "gpu-box"}
    )
    assert fits["passesGuardrails"] is True
    local = await ws.result("estimateModelUsage", load_param(QWEN))
    assert local["passesGuardrails"] is False
    await ws.channel("loadModel", load_param(SMOL, identifier="far", deviceIdentifier="gpu-box"))
    wrong = await ws.rpc("unloadModel", {"identifier": "far", "deviceIdentifier": None})
    assert wrong["type"] == "rpcError"  # null: local only, and "far" is not local
    right = await ws.rpc("unloadModel", {"identifier": "far", "deviceIdentifier": "gpu-box"})
    assert right["type"] == "rpcResult"
    assert server.loaded_instances() == []


# --- peak memory ------------------------------------------------------------------------------


@DEVICES
async def test_peak_memory_overall_and_per_device(server: StandInServer) -> None:
    assert server.peak_memory_bytes == 0
    assert server.peak_memory_by_device() == {None: 0, "gpu-box": 0, "mini": 0}
    async with lms.AsyncClient(server.host) as client:
        await asyncio.gather(
            client.llm.load(QWEN, device="gpu-box"),
            client.llm.load(LLAMA, device="gpu-box"),
            client.llm.load(SMOL),
        )
        both = server.memory_used_bytes("gpu-box")
        local = server.memory_used_bytes()
        assert server.peak_memory_bytes == both + local
        await client.llm.unload(QWEN)
        await client.llm.unload(SMOL)
        peaks = server.peak_memory_by_device()
        assert peaks == {None: local, "gpu-box": both, "mini": 0}
        assert server.peak_memory_bytes == both + local  # peaks stay after unloads
        server.reset_peak_memory()
        remaining = server.memory_used_bytes("gpu-box")
        assert remaining < both
        assert server.peak_memory_bytes == remaining
        assert server.peak_memory_by_device() == {None: 0, "gpu-box": remaining, "mini": 0}


@pytest.mark.lmstudio_server(memory_gb=2, load_seconds=0.3)
async def test_loads_in_progress_count_toward_the_peak(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        task = asyncio.create_task(client.llm.load(LLAMA))
        await asyncio.sleep(0.1)
        assert server.memory_used_bytes() > GB  # reserved while loading
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert server.memory_used_bytes() == 0
    assert server.peak_memory_bytes > GB


# --- through the client -----------------------------------------------------------------------


@DEVICES
async def test_client_device_parameters(server: StandInServer) -> None:
    async with lms.AsyncClient(server.host) as client:
        estimate = await client.llm.estimate(QWEN, device="gpu-box")
        assert estimate.passes_guardrails is True
        with pytest.raises(lms.DeviceNotFoundError, match="nowhere"):
            await client.llm.estimate(QWEN, device="nowhere")
        with pytest.raises(lms.DeviceNotFoundError):
            await client.llm.load(SMOL, device="nowhere")
        with pytest.raises(lms.InsufficientMemoryError, match="mini"):
            await client.llm.load(LLAMA, device="mini")
        far = await client.llm.load(SMOL, "far", device="gpu-box")
        assert far.device == "gpu-box"
        assert far.info.device == "gpu-box"
        near = await client.llm.load(SMOL, "near")
        assert near.device is None
        assert {h.identifier: h.device for h in await client.llm.list_loaded()} == {
            "far": "gpu-box",
            "near": None,
        }
        with pytest.raises(lms.ModelNotFoundError):
            await client.llm.unload("far", device="mini")
        await far.unload()  # the handle unloads from its own device
        async with client.llm.loaded(SMOL, "tmp", device="gpu-box") as tmp:
            assert tmp.device == "gpu-box"
            assert (await tmp.respond("Hi", config={"max_tokens": 2})).content
        assert [i.identifier for i in server.loaded_instances()] == ["near"]
        with pytest.raises(lms.LMStudioValueError):
            await client.llm.load(SMOL, device="")


# --- configuration ----------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_device_option() -> None:
    server = server_from_args(_parse("--device", "gpu-box:48", "--device", "mini:1.5"))
    assert server.devices == {"gpu-box": 48 * GB, "mini": int(1.5 * GB)}
    assert server_from_args(_parse()).devices == {}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("gpu-box", "NAME:GB"),
        (":4", "NAME:GB"),
        ("box:lots", "number of GB"),
        ("box:0", "positive"),
    ],
)
def test_cli_bad_device(value: str, complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--device", value])
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_cli_device_given_twice(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--device", "a:1", "--device", "a:2"]) == 2
    assert "twice" in capsys.readouterr().err


def test_constructor_checks_devices() -> None:
    with pytest.raises(ValueError, match="positive"):
        StandInServer(0, devices={"box": 0})
    with pytest.raises(ValueError, match="non-empty"):
        StandInServer(0, devices={"": 4})

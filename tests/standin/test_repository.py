"""The repository namespace: a simulated hub, search, download options, download, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._hub import HubError, default_hub, validate_hub

from ._wire import RawClient, Socket, messages, types

SMOL360 = "lmstudio-community/SmolLM2-360M-Instruct-GGUF"
QWEN05 = "lmstudio-community/Qwen2.5-0.5B-Instruct-GGUF"


@pytest.fixture
async def repo(client: RawClient) -> Socket:
    return await client.connect("repository")


async def _search(sock: Socket, **opts: Any) -> list[dict[str, Any]]:
    result = await sock.result("searchModels", {"opts": opts})
    return list(result["results"])


async def test_search(repo: Socket) -> None:
    everything = await _search(repo)
    assert len(everything) == len(default_hub())
    smol = await _search(repo, searchTerm="SMOLLM2")
    assert [r["identifier"]["identifier"] for r in smol] == [
        "lmstudio-community/SmolLM2-135M-Instruct-GGUF",
        SMOL360,
    ]
    assert smol[0] == {
        "name": "SmolLM2 135M Instruct",
        "identifier": {"type": "hf", "identifier": smol[0]["identifier"]["identifier"]},
        "staffPick": True,
    }
    words = await _search(repo, searchTerm="qwen 0.5b")
    assert [r["name"] for r in words] == ["Qwen2.5 0.5B Instruct"]
    exact = await _search(repo, searchTerm="qwen2.5-0.5b-instruct")
    assert exact[0]["exact"] is True
    assert await _search(repo, searchTerm="zz-nothing-zz") == []
    assert len(await _search(repo, limit=2)) == 2
    assert await _search(repo, compatibilityTypes=["safetensors"]) == []
    # out-of-range options are a parameter error (LM Studio warns instead of answering)
    await repo.send(
        {
            "type": "rpcCall",
            "endpoint": "searchModels",
            "callId": 1,
            "parameter": {"opts": {"limit": 0}},
        }
    )
    warning = await repo.recv()
    assert warning["type"] == "communicationWarning"
    assert warning["kind"] == "rpcParameterTypeError"


async def test_download_options(repo: Socket) -> None:
    options = await repo.result(
        "getModelDownloadOptions",
        {"modelSearchResultIdentifier": {"type": "hf", "identifier": SMOL360}},
    )
    first, second = options["results"]
    assert first == {
        "name": "SmolLM2-360M-Instruct-Q8_0.gguf",
        "quantization": "Q8_0",
        "sizeBytes": 386_404_992,
        "fitEstimation": "fullGPUOffload",
        "recommended": True,
        "downloadIdentifier": f"{SMOL360}/SmolLM2-360M-Instruct-Q8_0.gguf",
        "indexedModelIdentifier": f"{SMOL360}/SmolLM2-360M-Instruct-Q8_0.gguf",
        "compatibilityType": "gguf",
    }
    assert second["quantization"] == "Q4_K_M"
    assert "recommended" not in second
    missing = await repo.rpc(
        "getModelDownloadOptions",
        {"modelSearchResultIdentifier": {"type": "hf", "identifier": "nobody/nothing"}},
    )
    assert missing["type"] == "rpcError"


@pytest.mark.lmstudio_server(download_mb_per_second=4000)
async def test_download_then_list_and_load(server: StandInServer, client: RawClient) -> None:
    repo = await client.connect("repository")
    system = await client.connect("system")
    download = f"{QWEN05}/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    started = asyncio.get_running_loop().time()
    frames = await repo.channel("downloadModel", {"downloadIdentifier": download})
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed >= 397_807_968 / 4e9  # simulated time
    kinds = types(frames)
    assert kinds == ["downloadProgress"] * 10 + ["startFinalizing", "success", "channelClose"]
    updates = [m["update"] for m in messages(frames) if m["type"] == "downloadProgress"]
    assert [u["downloadedBytes"] for u in updates] == sorted(u["downloadedBytes"] for u in updates)
    assert updates[-1]["downloadedBytes"] == updates[-1]["totalBytes"] == 397_807_968
    assert updates[0]["speedBytesPerSecond"] == 4e9
    assert messages(frames)[-1] == {"type": "success", "defaultIdentifier": "qwen2.5-0.5b-instruct"}
    listed = await system.result("listDownloadedModels")
    model = next(m for m in listed if m["modelKey"] == "qwen2.5-0.5b-instruct")
    assert model["trainedForToolUse"] is True
    assert model["path"] == download
    # loadable, and downloading again does not list it twice
    llm = await client.connect("llm")
    load = await llm.channel(
        "loadModel", {"modelKey": "qwen2.5-0.5b-instruct", "loadConfigStack": {"layers": []}}
    )
    assert messages(load)[-1]["type"] == "success"
    await repo.channel("downloadModel", {"downloadIdentifier": download})
    listed = await system.result("listDownloadedModels")
    assert [m["modelKey"] for m in listed].count("qwen2.5-0.5b-instruct") == 1
    # a restart that resets the state forgets downloads
    await server.restart(reset_state=True)
    async with RawClient(server.host) as fresh:
        again = await (await fresh.connect("system")).result("listDownloadedModels")
        assert "qwen2.5-0.5b-instruct" not in [m["modelKey"] for m in again]


@pytest.mark.lmstudio_server(download_mb_per_second=100)
async def test_cancel_a_download(server: StandInServer, repo: Socket, client: RawClient) -> None:
    download = f"{SMOL360}/SmolLM2-360M-Instruct-Q8_0.gguf"
    channel = await repo.open_channel("downloadModel", {"downloadIdentifier": download})
    first = await repo.recv()
    assert first["message"]["type"] == "downloadProgress"
    await repo.send({"type": "channelSend", "channelId": channel, "message": {"type": "cancel"}})
    frames = await repo.collect(channel)
    assert frames[-1]["type"] == "channelError"
    assert "cancelled" in frames[-1]["error"]["title"]
    assert any(c.endpoint == "downloadModel" for c in server.cancels())
    system = await client.connect("system")
    listed = await system.result("listDownloadedModels")
    assert "smollm2-360m-instruct" not in [m["modelKey"] for m in listed]


async def test_unknown_download_identifier(repo: Socket) -> None:
    frames = await repo.channel("downloadModel", {"downloadIdentifier": "nobody/nothing.gguf"})
    assert frames[-1]["type"] == "channelError"
    assert "Unknown download identifier" in frames[-1]["error"]["title"]


def _hub_entry(**extra: Any) -> dict[str, Any]:
    model = {
        "type": "llm",
        "modelKey": "tiny-model",
        "format": "gguf",
        "displayName": "Tiny",
        "path": "me/tiny-GGUF/tiny.gguf",
        "sizeBytes": 1000,
        "maxContextLength": 2048,
    }
    return {"name": "Tiny", "identifier": "me/tiny-GGUF", "models": [model], **extra}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "JSON list"),
        ([{"identifier": "x", "models": []}], "name"),
        ([_hub_entry(models=[])], "models"),
        ([_hub_entry(type="gh")], "type"),
        ([_hub_entry(staffPick="yes")], "staffPick"),
        ([_hub_entry(), _hub_entry()], "duplicate model path"),
        ([_hub_entry(models=[{"type": "llm"}])], "modelKey"),
    ],
)
def test_bad_hubs(raw: object, message: str) -> None:
    with pytest.raises(HubError, match=message):
        validate_hub(raw)


async def test_hub_file_replaces_the_built_in_hub(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text(json.dumps([_hub_entry()]))
    server = StandInServer(0, hub=path, download_mb_per_second=1e6)
    async with server, RawClient(server.host) as client:
        repo = await client.connect("repository")
        results = await _search(repo)
        assert [r["name"] for r in results] == ["Tiny"]
        download = {"downloadIdentifier": "me/tiny-GGUF/tiny.gguf"}
        frames = await repo.channel("downloadModel", download)
        assert messages(frames)[-1] == {"type": "success", "defaultIdentifier": "tiny-model"}


def test_cli_refuses_a_bad_hub_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmstudio_async.testing import main

    bad = tmp_path / "hub.json"
    bad.write_text(json.dumps([_hub_entry(models=[])]))
    assert main(["--port", "0", "--hub", str(bad)]) == 2
    assert '"models" must be a non-empty list' in capsys.readouterr().err
    assert main(["--port", "0", "--hub", str(tmp_path / "missing.json")]) == 2
    assert "cannot read hub file" in capsys.readouterr().err

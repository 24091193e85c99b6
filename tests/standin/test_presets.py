"""Presets: fuzzyPresetIdentifier on predict, the built-in set, --presets FILE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer, server_from_args
from lmstudio_async.testing._cli import add_arguments
from lmstudio_async.testing._presets import PresetError, resolve_preset, validate_presets

from ._wire import RawClient, Socket, messages, stack

LLAMA = "llama-3.2-1b-instruct"


def _param(preset: str | None, **config: Any) -> dict[str, Any]:
    param: dict[str, Any] = {
        "modelSpecifier": {"type": "query", "query": {"identifier": LLAMA}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
        "predictionConfigStack": stack(**config),
    }
    if preset is not None:
        param["fuzzyPresetIdentifier"] = preset
    return param


def _config(packets: list[dict[str, Any]]) -> dict[str, Any]:
    return {f["key"]: f["value"] for f in packets[-1]["predictionConfig"]["fields"]}


@pytest.fixture
async def llm(server: StandInServer, client: RawClient) -> Socket:
    server.preload(LLAMA)
    return await client.connect("llm")


async def test_a_built_in_preset_applies_and_the_client_overrides_it(llm: Socket) -> None:
    packets = messages(await llm.channel("predict", _param("@local:concise")))
    config = _config(packets)
    assert config["llm.prediction.temperature"] == 0.3
    assert config["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 24}
    assert packets[-1]["stats"]["predictedTokensCount"] <= 24
    override = {"llm.prediction.temperature": 0.9}
    config = _config(messages(await llm.channel("predict", _param("concise", **override))))
    assert config["llm.prediction.temperature"] == 0.9
    assert config["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 24}
    plain = _config(messages(await llm.channel("predict", _param(None))))
    assert plain["llm.prediction.temperature"] == 0.8


async def test_an_unknown_preset_is_preset_not_found(llm: Socket) -> None:
    frames = await llm.channel("predict", _param("no-such-preset"))
    error = frames[-1]["error"]
    assert frames[-1]["type"] == "channelError"
    assert error["displayData"]["code"] == "generic.presetNotFound"
    assert error["displayData"]["specifiedFuzzyPresetIdentifier"] == "no-such-preset"
    assert error["displayData"]["totalAvailablePresets"] == 3
    sample = error["displayData"]["availablePresetsSample"]
    assert {"identifier": "@local:deterministic", "name": "Deterministic"} in sample


def test_fuzzy_resolution_order() -> None:
    presets = validate_presets(
        [
            {"identifier": "@local:Fast", "name": "Speedy"},
            {"identifier": "@local:fast", "name": "Other"},
            {"identifier": "@hub:team/slow", "name": "Careful Mode"},
        ]
    )
    assert resolve_preset(presets, "@local:fast")["name"] == "Other"  # exact wins
    assert resolve_preset(presets, "@LOCAL:FAST")["name"] == "Speedy"  # then any case
    assert resolve_preset(presets, "team/slow")["name"] == "Careful Mode"  # scope-less
    assert resolve_preset(presets, "careful mode")["identifier"] == "@hub:team/slow"  # name


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "JSON list"),
        ([{"name": "x"}], "identifier"),
        ([{"identifier": "a", "operation": []}], "operation"),
        (
            [{"identifier": "a", "operation": {"fields": [{"key": "llm.load.x", "value": 1}]}}],
            "key",
        ),
        ([{"identifier": "a"}, {"identifier": "a"}], "duplicate"),
    ],
)
def test_bad_preset_lists(raw: object, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        validate_presets(raw)


async def test_presets_file_replaces_the_built_in_set(tmp_path: Path) -> None:
    path = tmp_path / "presets.json"
    path.write_text(
        json.dumps(
            [
                {
                    "identifier": "@local:greedy",
                    "name": "Greedy",
                    "operation": {"fields": [{"key": "llm.prediction.temperature", "value": 0}]},
                }
            ]
        )
    )
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    server = server_from_args(parser.parse_args(["--port", "0", "--presets", str(path)]))
    async with server, RawClient(server.host) as client:
        server.preload(LLAMA)
        llm = await client.connect("llm")
        config = _config(messages(await llm.channel("predict", _param("greedy"))))
        assert config["llm.prediction.temperature"] == 0
        frames = await llm.channel("predict", _param("concise"))
        assert frames[-1]["error"]["displayData"]["totalAvailablePresets"] == 1
    path.write_text("[{]")
    with pytest.raises(PresetError, match="not valid JSON"):
        server_from_args(parser.parse_args(["--presets", str(path)]))

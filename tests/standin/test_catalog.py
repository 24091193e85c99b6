"""Custom catalogues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmstudio_async.testing import CatalogError, StandInServer, validate_catalog

from ._wire import RawClient, load_param

MODEL = {
    "type": "llm",
    "modelKey": "tiny-model",
    "format": "safetensors",
    "displayName": "Tiny",
    "path": "someone/Tiny-Model/tiny.safetensors",
    "sizeBytes": 1000,
    "maxContextLength": 512,
}


def test_validate_fills_js_head_fields() -> None:
    [entry] = validate_catalog([MODEL])
    assert entry["publisher"] == "someone"
    assert entry["indexedModelIdentifier"] == MODEL["path"]
    assert entry["deviceIdentifier"] is None
    assert entry["vision"] is False
    assert entry["trainedForToolUse"] is False


@pytest.mark.parametrize(
    "bad",
    [
        {},
        [{**MODEL, "type": "tts"}],
        [{**MODEL, "format": "pte"}],
        [{**MODEL, "sizeBytes": -1}],
        [MODEL, MODEL],
        [{**MODEL, "vision": "yes"}],
    ],
)
def test_validate_rejects(bad: object) -> None:
    with pytest.raises(CatalogError):
        validate_catalog(bad)


async def test_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps([MODEL]))
    async with StandInServer(0, catalog=path, load_seconds=0) as srv, RawClient(srv.host) as c:
        system = await c.connect("system")
        [model] = await system.result("listDownloadedModels")
        assert model["modelKey"] == "tiny-model"
        llm = await c.connect("llm")
        frames = await llm.channel("loadModel", load_param("TINY-MODEL"))
        assert frames[-1]["type"] == "channelClose"
        assert frames[-2]["message"]["info"]["contextLength"] == 512
        await system.ws.close()
        await llm.ws.close()

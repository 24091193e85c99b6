"""The official JS SDK's agent features against the stand-in: ``model.act()`` with tools,
images, presets, draft models and the repository namespace (tests/conformance/js_act.cjs).

Skipped unless Node.js and ``@lmstudio/sdk`` are available (see test_official_js.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstudio_async.testing import ThreadedStandInServer

from .test_official_js import needs_js_sdk, run_js

pytestmark = pytest.mark.conformance


@needs_js_sdk
@pytest.mark.lmstudio_server(download_mb_per_second=4000)
def test_js_act_images_presets_drafts_and_downloads(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    for key in ("qwen2.5-7b-instruct-1m", "mobilevlm_v2-1.7b", "llama-3.2-1b-instruct"):
        lmstudio_server.preload(key)
    out = run_js(Path(__file__).with_name("js_act.cjs"), lmstudio_server)
    # act: one tool round, then the answer
    assert out["actRounds"] == 2
    assert out["actCalls"] == [["add", 123, 3210]]
    assert out["actRoles"] == ["assistant", "tool", "assistant"]
    # two named tools in one round (one a raw JSON-schema tool)
    assert out["parallelRounds"] == 2
    assert out["parallelCalls"] == [["divide", 7, 2], ["multiply", 3, 4]]
    assert out["parallelAnswer"] == (
        'The divide tool returned: 3.5\nThe multiply tool returned: "product 12"'
    )
    assert out["imageType"] == "image"
    assert out["vision"] == "The image is a PNG image of 2x3 pixels"
    assert out["noVision"] == "refused"
    assert out["presetTokens"] <= 24
    assert out["badPreset"] == "rejected"
    assert out["draft"] == "smollm2-135m-instruct"
    assert out["draftAccepted"] > 0
    assert out["search"] == ["Qwen2.5 0.5B Instruct"]
    assert out["options"] == ["Q4_K_M"]
    assert out["downloaded"] == "qwen2.5-0.5b-instruct"
    assert out["progressSteps"] == 10
    assert out["listed"] is True
    assert out["loadedKey"] == "qwen2.5-0.5b-instruct"

"""The official JS SDK (@lmstudio/sdk) against the stand-in.

Skipped unless Node.js and the SDK are available. Install the SDK outside the repository:
``npm install --prefix /tmp/lmsjs @lmstudio/sdk@1.5.0`` (or point ``LMSTUDIO_JS_SDK_DIR`` at
a directory whose ``node_modules`` holds ``@lmstudio/sdk``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.conformance

SDK_DIR = Path(os.environ.get("LMSTUDIO_JS_SDK_DIR", "/tmp/lmsjs"))
SDK_ENTRY = SDK_DIR / "node_modules" / "@lmstudio" / "sdk" / "dist" / "index.cjs"
NODE = shutil.which("node")

needs_js_sdk = pytest.mark.skipif(
    NODE is None or not SDK_ENTRY.exists(), reason="Node.js or @lmstudio/sdk missing"
)


def run_js(script: Path, server: ThreadedStandInServer) -> Any:
    """Run a Node script with the official SDK against ``server``; it must exit 0, and its
    last line of output is JSON, returned decoded."""
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(script), f"ws://{server.host}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LMS_SDK_PATH": str(SDK_ENTRY)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_js_sdk
@pytest.mark.lmstudio_server(load_seconds=0.3)
def test_js_sdk(lmstudio_server: ThreadedStandInServer) -> None:
    out = run_js(Path(__file__).with_name("js_probe.cjs"), lmstudio_server)
    assert len(out["downloaded"]) == 5
    assert out["identifier"] == "js-llama"
    assert out["progressLast"] == 1
    assert out["contextLength"] == 4096
    assert out["cfgContext"] == 4096
    assert out["dup"] == "already exists"
    assert out["smol"] == "smollm2-135m-instruct"
    assert out["any"] == "js-llama"  # empty query: first loaded instance
    assert out["loaded"] == ["js-llama", "smollm2-135m-instruct"]
    assert out["cancel"] == "rejected"
    assert out["unloadUnknown"] == "rejected"
    assert out["embContext"] == 2048
    assert out["embInfo"] == "text-embedding-nomic-embed-text-v1.5"
    assert out["loadedAfter"] == ["smollm2-135m-instruct"]
    # the AbortSignal reached the server as a cancel, and nothing was left loaded by it
    [cancel] = lmstudio_server.cancels()
    assert cancel.endpoint == "loadModel"
    keys = {i.model_key for i in lmstudio_server.loaded_instances()}
    assert "qwen2.5-7b-instruct-1m" not in keys

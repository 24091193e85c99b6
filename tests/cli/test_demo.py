"""The demo (`python -m lmstudio_async demo`): what CI runs after the tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lmstudio_async.cli import main


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--load-seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "No LLM is loaded" in out  # 1. model() with nothing loaded
    assert "100%" in out  # 2. progress display
    assert "'summarizer' and 'translator'" in out  # 3. custom identifiers
    assert "'llama-3.2-1b-instruct:2'" in out  # automatic identifier
    assert 'identifier "summarizer" already exists' in out  # duplicate identifier
    assert "context_length=4096, gpu_offload=0.5" in out  # 4. load config read back
    assert "is no longer loaded" in out  # 5. TTL
    assert "7. Scoped instance" in out
    assert out.rstrip().endswith("point AsyncClient at a real LM Studio.")
    assert "loaded now: (nothing)" in out  # 8. everything unloaded


def test_demo_subprocess_plain_text() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmstudio_async", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "\x1b[" not in proc.stdout  # not a terminal: no escape codes
    assert "8. Unload" in proc.stdout

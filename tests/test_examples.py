"""Each script in examples/ runs to completion against a fresh stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmstudio_async.testing import ThreadedStandInServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CASES = {
    "async_working_set.py": ["150 replies, stop reasons:", "loaded after closing: []"],
    "concurrent_pipeline.py": [
        "loaded 3 models concurrently",
        "context lengths: [2048, 4096",
        "ours loaded after the pipeline: []",
    ],
    "sync_script.py": [
        "loaded: True",
        "context_length=2048",
        "duplicate identifier -> IdentifierTakenError",
        "loaded: False\nduplicate",
        "unloaded: llama-3.2-1b-instruct",
        "loaded: False\n",
    ],
    "agent_tools.py": [
        "act: 2 rounds, 5 messages",
        "tool results: ['5.0', '20.0']",
        "chained act: 3 rounds, tools in order: ['plus', 'times']",
        "structured: Report",
    ],
}
TESTED_ELSEWHERE = {"multi_model_pipeline.py": "tests/test_example_pipeline.py"}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*CASES, *TESTED_ELSEWHERE])


@pytest.mark.lmstudio_server(load_seconds=0.1)
@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, lmstudio_server: ThreadedStandInServer) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--host", lmstudio_server.host],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for expected in CASES[name]:
        assert expected in proc.stdout
    assert lmstudio_server.loaded_instances() == []  # every example cleans up after itself

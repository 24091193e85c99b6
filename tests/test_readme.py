"""Every Python example in README.md runs against the stand-in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmstudio_async.testing import ThreadedStandInServer

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
# Blocks that are pytest tests are run as such below, not as scripts.
SCRIPTS = [b for b in BLOCKS if "def test_" not in b]


def test_readme_has_examples() -> None:
    assert len(SCRIPTS) >= 3


@pytest.mark.lmstudio_server(load_seconds=0.0)
@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_readme_example_runs(index: int, lmstudio_server: ThreadedStandInServer) -> None:
    code = SCRIPTS[index].replace("localhost:1234", lmstudio_server.host)
    if "lms.llm(" in code and "import lmstudio_async as lms" not in code:
        code = "import lmstudio_async as lms\n" + code
    env = {**os.environ, "LMSTUDIO_API_HOST": lmstudio_server.host}
    env.pop("LMSTUDIO_API_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr

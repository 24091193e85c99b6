"""The docs/testing.md recipe (an app that loads models with this SDK and chats through
``openai``) runs as written: its two code blocks become files and pytest runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
HEADING = "## An app that manages models with this SDK and chats through `openai`"


def _recipe_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        first = block.splitlines()[0]
        assert first.startswith("# "), first
        assert first.endswith(".py"), first
        files[first[2:]] = block
    return files


def test_the_recipe_runs(tmp_path: Path) -> None:
    files = _recipe_files()
    assert sorted(files) == ["chatapp.py", "test_chatapp.py"]
    for name, code in files.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    options = ["-q", "-p", "no:cacheprovider", "-W", "error"]
    options += ["-o", "asyncio_default_fixture_loop_scope=function"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "test_chatapp.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout, proc.stdout

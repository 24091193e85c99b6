"""Every Python example of docs/agents.md and of the images section of docs/inference.md runs
against the stand-in as written (with the stand-in's host in place of localhost:1234)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmstudio_async.testing import ThreadedStandInServer

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(page: str, section: str | None = None) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    if section is not None:
        start = text.index(f"## {section}")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", text, re.S)


AGENTS = _blocks("agents.md")
IMAGES = _blocks("inference.md", "Images")
CASES = [("agents.md", i, code) for i, code in enumerate(AGENTS)] + [
    ("inference.md#images", i, code) for i, code in enumerate(IMAGES)
]
EXPECTED = {
    ("agents.md", 0): ['"name": "get_weather"', '"enum": [', "The city name"],
    ("agents.md", 2): ["toolCalls", "add tool returned: 5"],
    ("agents.md", 3): ["round 0", "round 1", "2 rounds", "20.0"],
    ("agents.md", 4): ["Unhandled Python exception: ZeroDivisionError"],
    ("agents.md", 6): ["City True Book", "not a Book:"],
}


def test_the_pages_have_examples() -> None:
    assert len(AGENTS) >= 7
    assert IMAGES


@pytest.mark.lmstudio_server(load_seconds=0.0)
@pytest.mark.parametrize(("page", "index", "code"), CASES, ids=[f"{p}-{i}" for p, i, _ in CASES])
def test_doc_example_runs(
    page: str, index: int, code: str, lmstudio_server: ThreadedStandInServer, tmp_path: Path
) -> None:
    if page.startswith("inference.md") and not _stand_in_has_uploads():
        pytest.skip("the stand-in does not serve files.uploadFileBase64 yet")
    script = code.replace("localhost:1234", lmstudio_server.host)
    env = {**os.environ, "LMSTUDIO_API_HOST": lmstudio_server.host}
    env.pop("LMSTUDIO_API_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for expected in EXPECTED.get((page, index), []):
        assert expected in proc.stdout, proc.stdout


def _stand_in_has_uploads() -> bool:
    from lmstudio_async.testing import _endpoints

    return "uploadFileBase64" in _endpoints.build_namespaces()["files"].rpc

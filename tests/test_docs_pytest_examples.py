"""The pytest examples of README.md and docs/*.md work as copied into a fresh project: each
becomes a test file of its own, run by pytest in a subprocess with an empty ``pytest.ini``
(pytest-asyncio's default strict mode, no ``asyncio_mode = auto``), and every test in it
passes. The testing page's other examples run as scripts.

Blocks that start with a ``# name.py`` line are files of a multi-file recipe, run together by
``test_docs_openai_recipe.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
FILE_HEADER = re.compile(r"# \w+\.py\n")


def _blocks(page: Path) -> list[str]:
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    return [b for b in blocks if not FILE_HEADER.match(b)]


TESTS = [
    (page.relative_to(ROOT).as_posix(), index, code)
    for page in PAGES
    for index, code in enumerate(_blocks(page))
    if re.search(r"^(async )?def test_", code, re.M)
]
SCRIPTS = [
    ("docs/testing.md", index, code)
    for index, code in enumerate(_blocks(ROOT / "docs" / "testing.md"))
    if "def test_" not in code
]


def _ids(cases: list[tuple[str, int, str]]) -> list[str]:
    return [f"{page}-{index}" for page, index, _ in cases]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # PYTHONPATH, if set, still points at this checkout
    for name in ("LMSTUDIO_API_HOST", "LMSTUDIO_API_TOKEN", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return env


def test_the_pages_have_pytest_examples() -> None:
    pages = {page for page, _, _ in TESTS}
    assert {"README.md", "docs/testing.md", "docs/stand-in.md"} <= pages
    assert any("async def test_" in code for _, _, code in TESTS)
    assert SCRIPTS


@pytest.mark.parametrize(("page", "index", "code"), TESTS, ids=_ids(TESTS))
def test_pytest_example_passes_in_strict_mode(
    page: str, index: int, code: str, tmp_path: Path
) -> None:
    # A fresh project: its own (empty) config, so none of this repository's settings apply.
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_example.py").write_text(code, encoding="utf-8")
    options = ["-q", "-p", "no:cacheprovider", "-W", "error", "-o", "asyncio_mode=strict"]
    # Only to keep pytest-asyncio's "unset loop scope" deprecation warning from erroring.
    options += ["-o", "asyncio_default_fixture_loop_scope=function"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "test_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    output = proc.stdout + proc.stderr
    expected = len(re.findall(r"^(?:async )?def test_", code, re.M))
    assert proc.returncode == 0, output
    assert re.search(rf"^{expected} passed in ", proc.stdout, re.M), output


@pytest.mark.parametrize(("page", "index", "code"), SCRIPTS, ids=_ids(SCRIPTS))
def test_testing_page_script_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

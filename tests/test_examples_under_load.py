"""The examples and the doc scripts the way users run them: slow tokens, slow loads, a memory
budget just large enough for every copy at once, several copies of the script at once (each
process another user of one LM Studio), and someone else loading, using and unloading models
the script is not told about meanwhile. Each copy must exit 0 with its expected output and
no traceback; scripts that promise to clean up must leave nothing of theirs loaded.

No timing is asserted: the load only changes how the runs interleave.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EMBEDDER = "text-embedding-nomic-embed-text-v1.5"
# What the disturber holds at most at once: two instances of the embedding model (decimal GB).
DISTURBER_GB = 0.2
TOKENS_PER_SECOND = 50.0
LOAD_SECONDS = 0.3


def _block(page: str, index: int) -> str:
    text = (ROOT / page).read_text(encoding="utf-8")
    return str(re.findall(r"```python\n(.*?)```", text, re.S)[index])


# name -> (copies, decimal GB one copy needs at once, expected stdout lines).
# The memory is the peak of the models a copy has loaded at once (the stand-in's estimates;
# the pools' own budgets for the pool examples), rounded up a little.
EXAMPLE_CASES: dict[str, tuple[int, float, list[str]]] = {
    "sync_script.py": (3, 1.65, ["loaded: True", "duplicate identifier -> IdentifierTakenError"]),
    "agent_tools.py": (3, 1.5, ["tool results: ['5.0', '20.0']", "structured: Report"]),
    "concurrent_pipeline.py": (3, 1.75, ["context lengths: [2048, 4096", "ours loaded after"]),
    "async_working_set.py": (2, 6.75, ["150 replies, stop reasons:", "loaded after closing: []"]),
    "multi_model_pipeline.py": (2, 6.8, ["embedded 6 answers", "loaded after closing: []"]),
}
EXAMPLE_OUTPUT_END = {
    "sync_script.py": "unloaded: ",
    "concurrent_pipeline.py": "ours loaded after the pipeline: []",
}

# (page, block index) -> (copies, GB per copy, expected stdout lines, cleans up).
# Scripts that get a model with model() leave it loaded, as LM Studio's just-in-time loads do.
DOC_CASES: dict[tuple[str, int], tuple[int, float, list[str], bool]] = {
    ("README.md", 0): (2, 6.65, ["context_length=4096"], False),
    ("README.md", 1): (2, 1.65, ["llama-3.2-1b-instruct"], False),
    ("README.md", 3): (2, 1.55, ["[78969] 1"], True),
    ("README.md", 4): (2, 6.8, ["30 PoolStats("], True),
    ("docs/pool.md", 0): (2, 5.2, [], True),
    ("docs/agents.md", 3): (2, 1.5, ["round 0", "round 1", "2 rounds", "20.0"], False),
    ("docs/agents.md", 6): (2, 1.5, ["City True Book", "not a Book:"], False),
    ("docs/inference.md", 4): (2, 1.15, ["image", "no vision:"], False),
}


@contextmanager
def someone_else(server: ThreadedStandInServer) -> Iterator[list[str]]:
    """Another user: unloads a model of theirs that the script is not told about, and keeps
    loading, using and unloading other instances until the script is done. Yields the list of
    errors that user met (none expected: the memory leaves room for them)."""
    server.preload(EMBEDDER, identifier="someone-else-0")
    stop = threading.Event()
    errors: list[str] = []

    def run() -> None:
        with lms.Client(server.host) as client:
            client.embedding.unload("someone-else-0")
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    other = client.embedding.load(EMBEDDER, f"someone-else-{n}")
                    other.embed("a text of theirs")
                    other.unload()
                except lms.LMStudioError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def _run_copies(argv: list[str], copies: int, host: str) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LMSTUDIO_API_HOST": host}
    env.pop("LMSTUDIO_API_TOKEN", None)
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(copies)
    ]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def _server(copies: int, gb_per_copy: float) -> ThreadedStandInServer:
    return ThreadedStandInServer(
        port=0,
        memory_gb=copies * gb_per_copy + DISTURBER_GB,
        tokens_per_second=TOKENS_PER_SECOND,
        load_seconds=LOAD_SECONDS,
    )


def _check(runs: list[subprocess.CompletedProcess[str]], expected: list[str]) -> None:
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        for line in expected:
            assert line in run.stdout, run.stdout


def test_every_example_runs_under_load() -> None:
    assert sorted(EXAMPLE_CASES) == sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", sorted(EXAMPLE_CASES))
def test_example_under_load(name: str) -> None:
    copies, gb, expected = EXAMPLE_CASES[name]
    argv = [sys.executable, str(EXAMPLES / name)]  # the host comes from LMSTUDIO_API_HOST
    with _server(copies, gb) as server:
        with someone_else(server) as errors:
            runs = _run_copies(argv, copies, server.host)
        _check(runs, [*expected, EXAMPLE_OUTPUT_END.get(name, "")])
        assert errors == []
        # every example unloads what it loaded; the other user cleaned up too
        assert server.loaded_instances() == []
        assert server.peak_memory_bytes <= server.memory_budget_bytes


@pytest.mark.parametrize(
    ("page", "index"), sorted(DOC_CASES), ids=[f"{p}-{i}" for p, i in sorted(DOC_CASES)]
)
def test_doc_script_under_load(page: str, index: int) -> None:
    copies, gb, expected, cleans_up = DOC_CASES[(page, index)]
    code = _block(page, index)
    assert "asyncio.run(main())" in code or "with lms.Client(" in code  # a whole script
    with _server(copies, gb) as server:
        argv = [sys.executable, "-c", code.replace("localhost:1234", server.host)]
        with someone_else(server) as errors:
            runs = _run_copies(argv, copies, server.host)
        _check(runs, expected)
        assert errors == []
        if cleans_up:
            assert server.loaded_instances() == []

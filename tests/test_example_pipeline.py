"""examples/multi_model_pipeline.py against the stand-in: as a script, and its pool in-process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "multi_model_pipeline.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("multi_model_pipeline", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-like introspection needs it registered
    spec.loader.exec_module(module)
    return module


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_script_runs(lmstudio_server: ThreadedStandInServer) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--host", lmstudio_server.host],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "routed: 3 to smollm2-135m-instruct, 3 to llama-3.2-1b-instruct" in out
    assert "embedded 6 answers (768 dimensions)" in out
    assert "evict  smollm2-135m-instruct (least recently used" in out
    assert "evict  llama" not in out  # one eviction is enough within 6.3 GiB
    assert "loaded after closing: []" in out
    assert lmstudio_server.loaded_instances() == []


async def test_pool_stays_within_budget_and_cleans_up(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    example = load_example()
    budget = 6.3 * example.GIB
    async with lms.AsyncClient(lmstudio_server.host) as client:
        pool = example.ModelPool(client, budget)
        peak = 0.0
        original = pool._log

        def watch(text: str) -> None:
            nonlocal peak
            peak = max(peak, pool.used_bytes)
            original(text)

        pool._log = watch
        try:
            await example.run(pool)
            assert pool.keys == [example.LARGE, example.EMBEDDER, example.BIG]
            assert {i.model_key for i in lmstudio_server.loaded_instances()} == set(pool.keys)
            assert pool.loaded[-1].identifier == example.BIG  # named by the server
        finally:
            await pool.aclose()
        assert 0 < peak <= budget
        assert lmstudio_server.loaded_instances() == []
        assert [e.split()[0] for e in pool.events].count("evict") == 1


async def test_pool_refuses_a_model_over_budget(lmstudio_server: ThreadedStandInServer) -> None:
    example = load_example()
    async with lms.AsyncClient(lmstudio_server.host) as client:
        pool = example.ModelPool(client, 1.1 * example.GIB)
        with pytest.raises(example.BudgetExceededError, match="alone needs"):
            async with pool.llm(example.BIG):
                pass
        async with pool.llm(example.SMALL) as small, pool.llm(example.SMALL) as again:
            assert small == again  # one instance, used twice concurrently
            with pytest.raises(example.BudgetExceededError, match="no idle model"):
                async with pool.llm("mobilevlm_v2-1.7b"):
                    pass
        await pool.aclose()
        assert lmstudio_server.loaded_instances() == []

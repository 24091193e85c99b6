"""Keeps ``python -m benchmarks.pool`` working: a ``--quick`` run produces every part.

Timings and ratios are never asserted here (the machine may be busy); the invariants
that do not depend on speed are: no truncated reply, no error, peak memory within budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_pool_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "pool.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pool", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True
    policy = data["policy"]
    assert policy["belady_loads"] <= policy["pool_loads"]
    assert policy["belady_loads"] <= min(policy["simulated_loads"].values())
    assert policy["errors"] == 0
    runs = {run["name"]: run for run in data["runs"]}
    assert len(runs) == 3
    for name, run in runs.items():
        assert run["successes"] + run["truncated"] + run["errors"] == run["requests"]
        if name.startswith("pool"):
            assert run["truncated"] == run["errors"] == 0, name
            assert run["peak_bytes"] <= data["budget_bytes"], name
    assert len(data["targets"]) == 6
    for target in data["targets"]:
        assert target["target"] in proc.stdout

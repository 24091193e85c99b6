"""Keeps ``python -m benchmarks`` working: a ``--quick`` run must produce every row.

Timings are never asserted here (the machine may be busy); see ``docs/performance.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = {
    "small_rpc": {"ours-async", "ours-sync", "official-async", "official-sync", "raw", "raw-mux"},
    "model": {"ours-async", "ours-sync", "official-async", "official-sync", "raw"},
    "load_unload": {"ours-async", "ours-sync", "official-async", "official-sync"},
    "gather_small": {"ours-async", "official-async", "raw-mux"},
    "gather_mid": {"ours-async", "official-async", "raw-mux"},
    "gather_large": {"ours-async", "raw-mux"},
    "sync_threads": {"ours-sync", "official-sync"},
    "cold_start": {"ours-async", "ours-sync", "official-async", "official-sync", "raw", "raw-mux"},
}

EXPECTED_PAIRS = {
    ("small_rpc", "ours-async", "raw-mux"),
    ("small_rpc", "official-async", "ours-async"),
    ("small_rpc", "ours-sync", "ours-async"),
    ("small_rpc", "official-sync", "ours-sync"),
    ("small_rpc", "raw-mux", "raw"),
    ("load_unload", "ours-sync", "ours-async"),
    ("load_unload", "official-async", "ours-async"),
    ("load_unload", "official-sync", "ours-sync"),
    ("gather_mid", "official-async", "ours-async"),
    ("gather_mid", "raw-mux", "ours-async"),
    ("gather_scale", "ours-async x200", "ours-async x10"),  # quick sizes
}


def test_quick_benchmark_produces_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())

    rows: dict[str, set[str]] = {}
    for row in data["rows"]:
        rows.setdefault(row["key"], set()).add(row["client"])
        assert row["samples"] > 0
        assert row["median"] > 0
        assert row["p95"] > 0
    assert rows == EXPECTED_ROWS

    # Every ratio target compares a pairing that alternated just those two clients.
    pairs = {(x["workload"], x["a"], x["b"]) for x in data["pairs"]}
    assert pairs == EXPECTED_PAIRS
    for x in data["pairs"]:
        plan = data["meta"]["plan"]
        large = x["workload"] == "gather_scale"
        rounds = plan["rounds_large"] if large else plan["rounds_paired"]
        assert len(x["round_ratios"]) == rounds
        assert x["ratio"] > 0

    assert data["memory"]["calls"] > 0
    assert "rss_growth_per_100k_bytes" in data["memory"]
    assert len(data["targets"]) == 10
    assert all(isinstance(t["pass"], bool) for t in data["targets"])
    assert data["meta"]["quick"] is True

    # The Markdown table on stdout has one line per row, the memory row and every target.
    table = proc.stdout
    assert table.count("| ours-async |") >= 7
    for target in data["targets"]:
        assert target["target"] in table

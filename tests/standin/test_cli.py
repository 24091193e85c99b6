"""``python -m lmstudio_async.testing``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lmstudio_async.testing import main

READY = re.compile(r"^LM Studio stand-in listening on http://127\.0\.0\.1:(\d+)$")


def test_cli_ready_line_and_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmstudio_async.testing", "--port", "0", "--load-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        match = READY.match(line)
        assert match, line
        port = int(match.group(1))
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/lmstudio-greeting", timeout=5
        ) as resp:
            assert json.loads(resp.read())["lmstudio"] is True
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line was printed


def test_cli_bad_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--api-token", "sk-lm-nope"]) == 2
    assert "malformed LM Studio API token" in capsys.readouterr().err


def test_cli_bad_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps([{"type": "llm", "modelKey": "x"}]))
    assert main(["--port", "0", "--catalog", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "catalog" in err
    assert "displayName" in err
    bad.write_text("{oops")
    assert main(["--port", "0", "--catalog", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["--port", "0", "--catalog", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err

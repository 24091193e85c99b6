"""The demo's last step: a model loaded by this SDK answers an ``openai`` client; without
``openai`` installed the demo still runs and says how to see that step."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmstudio_async.cli import main


def test_demo_openai_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--load-seconds", "0"]) == 0
    out = capsys.readouterr().out
    step = out.split("10. One model, two APIs", 1)[1]
    assert "-> [assistant] '" in step
    assert "same text: True" in step
    assert "loaded now: assistant (" in step


def test_demo_runs_without_openai() -> None:
    code = (
        "import sys; sys.modules['openai'] = None\n"  # makes `import openai` fail
        "from lmstudio_async.cli import main\n"
        "raise SystemExit(main(['demo', '--load-seconds', '0']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "(skipped: `pip install openai` to see it)" in proc.stdout
    assert proc.stdout.rstrip().endswith("point AsyncClient at a real LM Studio.")

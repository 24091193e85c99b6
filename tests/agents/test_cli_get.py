"""``lmstudio-async get`` as a real process: Ctrl-C cancels the download on the server."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator

import pytest
from cli.test_subprocess import _start, _stop, _wait_ready  # tests/ is on sys.path

import lmstudio_async as lms

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TARGET = "SmolLM2 360M Instruct"  # in the stand-in's hub, not downloaded; 386 MB


@pytest.fixture
def slow_hub() -> Iterator[str]:
    """A stand-in whose downloads run at 20 MB/s (the target takes ~19 s); yields its host."""
    proc = _start(["lmstudio_async.testing", "--port", "0", "--download-mb-per-second", "20"])
    try:
        yield _wait_ready(proc)
    finally:
        _stop(proc)


async def _paths(host: str) -> set[str]:
    async with lms.AsyncClient(host) as client:
        return {m.path for m in await client.system.list_downloaded()}


def test_ctrl_c_cancels_a_download(slow_hub: str) -> None:
    before = asyncio.run(_paths(slow_hub))
    proc = _start(["lmstudio_async", "--host", slow_hub, "get", TARGET])
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        seen = ""
        while "0%" not in seen:  # the download started: its first progress report
            char = proc.stdout.read(1)
            assert char, f"CLI exited early: {seen!r} {proc.stderr.read()!r}"
            seen += char
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
        out, err = seen + proc.stdout.read(), proc.stderr.read()
    finally:
        _stop(proc)
    assert code == 130, (out, err)
    assert time.monotonic() - started < 5  # did not wait for the ~19 s download
    assert "cancelled" in out
    assert err.startswith("error: interrupted: the download was cancelled")
    assert "Traceback" not in err
    assert asyncio.run(_paths(slow_hub)) == before

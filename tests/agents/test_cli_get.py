"""``lmstudio-async get`` as a real process: Ctrl-C cancels the download on the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
from cli.test_subprocess import (  # tests/ is on sys.path
    _interrupt_at_first_progress,
    _start,
    _stop,
    _wait_ready,
)

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
    code, out, err, elapsed = _interrupt_at_first_progress(["--host", slow_hub, "get", TARGET])
    assert code == 130, (out, err)
    assert elapsed < 5  # did not wait for the ~19 s download
    assert "cancelled" in out
    assert err.startswith("error: interrupted: the download was cancelled")
    assert "Traceback" not in err
    assert asyncio.run(_paths(slow_hub)) == before

"""The CLI as a real process: Ctrl-C during ``load``, ``serve`` and the console script."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

READY = re.compile(r"listening on http://(\S+)")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = READY.search(line)
    assert match, f"no ready line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
    return match.group(1)


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _interrupt_at_first_progress(
    args: list[str], *, before: Callable[[], None] | None = None, again_after: float | None = None
) -> tuple[int, str, str, float]:
    """Run the CLI with ``args``, send Ctrl-C once it prints its first progress report
    ("0%": the operation has started on the server), after calling ``before``, and a
    second Ctrl-C ``again_after`` seconds later; returns the exit code, stdout, stderr and
    the seconds from the last Ctrl-C to the exit."""
    proc = _start(["lmstudio_async", *args])
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        seen = ""
        while "0%" not in seen:
            char = proc.stdout.read(1)
            assert char, f"CLI exited early: {seen!r} {proc.stderr.read()!r}"
            seen += char
        if before is not None:
            before()
        proc.send_signal(signal.SIGINT)
        if again_after is not None:
            time.sleep(again_after)
            assert proc.poll() is None, "exited at the first Ctrl-C"
            proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = proc.wait(20)
        elapsed = time.monotonic() - started
        out, err = seen + proc.stdout.read(), proc.stderr.read()
    finally:
        _stop(proc)
    return code, out, err, elapsed


@pytest.fixture
def slow_standin() -> Iterator[str]:
    """``python -m lmstudio_async.testing --port 0 --load-seconds 5``; yields its host."""
    proc = _start(["lmstudio_async.testing", "--port", "0", "--load-seconds", "5"])
    try:
        yield _wait_ready(proc)
    finally:
        _stop(proc)


async def _loaded(host: str) -> list[str]:
    async with lms.AsyncClient(host) as client:
        llms = await client.llm.list_loaded()
        embeddings = await client.embedding.list_loaded()
    return [h.identifier for h in llms] + [h.identifier for h in embeddings]


def test_ctrl_c_cancels_a_load(slow_standin: str) -> None:
    args = ["--host", slow_standin, "load", "llama-3.2-1b-instruct"]
    code, out, err, elapsed = _interrupt_at_first_progress(args)
    interrupted = time.monotonic() - elapsed  # about when the Ctrl-C was sent (no earlier)
    assert code == 130, (out, err)
    assert elapsed < 4  # did not wait for the 5 s load
    assert "cancelled" in out
    assert err.startswith("error: interrupted")
    assert "Traceback" not in err
    assert asyncio.run(_loaded(slow_standin)) == []
    time.sleep(max(0.0, 5.5 - (time.monotonic() - interrupted)))  # past the simulated load time
    assert asyncio.run(_loaded(slow_standin)) == []


@pytest.mark.lmstudio_server(load_seconds=30)
def test_ctrl_c_against_a_server_that_stopped_answering(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    """The cancel cannot be confirmed: the CLI says so, promptly, instead of claiming it."""

    def hang() -> None:
        lmstudio_server.faults.silent = True  # connected, but answers nothing

    args = ["--host", lmstudio_server.host, "load", "llama-3.2-1b-instruct"]
    code, out, err, elapsed = _interrupt_at_first_progress(args, before=hang)
    assert code == 130, (out, err)
    assert elapsed < 8  # the SDK's 2 s grace for the cancel, then 3 s for the check
    assert "cancelled" in out
    assert err.startswith("error: interrupted, but could not confirm the cancel")
    assert "the model may still be loading on the server" in err
    assert "was cancelled on the server" not in err
    assert err.count("\n") == 1


@pytest.mark.lmstudio_server(load_seconds=30)
def test_second_ctrl_c_stops_waiting_for_the_cancel(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    def hang() -> None:
        lmstudio_server.faults.silent = True

    args = ["--host", lmstudio_server.host, "load", "llama-3.2-1b-instruct"]
    code, out, err, elapsed = _interrupt_at_first_progress(args, before=hang, again_after=0.5)
    assert code == 130, (out, err)
    assert elapsed < 1.5
    assert err.startswith("error: interrupted twice: did not wait for the cancel")
    assert "the model may still be loading on the server" in err
    assert "Traceback" not in err


def _closed_pipe_run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a stdout whose reader has already gone (as `| head` after its lines)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "lmstudio_async", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=ENV,
            check=False,
        )
    finally:
        os.close(write)


def test_output_into_a_closed_pipe(lmstudio_server: ThreadedStandInServer) -> None:
    for args in (["--host", lmstudio_server.host, "ls", "--json"], ["demo"]):
        proc = _closed_pipe_run(args)
        assert (proc.returncode, proc.stderr) == (141, ""), args


def test_serve_runs_the_stand_in_until_ctrl_c() -> None:
    proc = _start(["lmstudio_async", "serve", "--port", "0", "--load-seconds", "0"])
    try:
        host = _wait_ready(proc)
        assert asyncio.run(_loaded(host)) == []
    finally:
        assert _stop(proc) == 0


def test_unreachable_host_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lmstudio_async", "--host", "127.0.0.1:9", "ls"],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr

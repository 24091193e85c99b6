"""A script that never closes its clients still exits (the official JS SDK's #281), and
importing the package starts nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmstudio_async.testing import ThreadedStandInServer

SCRIPT = """
import asyncio, sys, threading
import lmstudio_async as lms

assert threading.active_count() == 1, threading.enumerate()  # the import started nothing
host = sys.argv[1]
client = lms.Client(host)  # never closed
llm = client.llm.model("smollm2-135m-instruct")
stream = llm.respond_stream("Write a long story.")
next(iter(stream))  # left mid-way, never closed
lms.configure_default_client(host)
lms.llm("smollm2-135m-instruct")  # the default client, never closed


async def main():
    other = lms.AsyncClient(host)  # never closed
    await other.llm.model("smollm2-135m-instruct")
    asyncio.create_task(other.llm.load("llama-3.2-1b-instruct"))  # still running at the end


asyncio.run(main())
print("done")
"""


@pytest.mark.lmstudio_server(tokens_per_second=20)  # the stream is still running at exit
def test_a_script_that_never_closes_its_clients_exits(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, lmstudio_server.host],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"

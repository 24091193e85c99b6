"""The stand-in's HTTP-related command-line options: ``--jit-ttl`` and ``--no-jit``."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from lmstudio_async.testing._cli import add_arguments, server_from_args

READY = re.compile(r"^LM Studio stand-in listening on (http://127\.0\.0\.1:\d+)$")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_jit_options_reach_the_server() -> None:
    ns = _parse("--jit-ttl", "120", "--no-jit")
    server = server_from_args(ns)
    assert server._rt.jit_ttl_ms == 120_000
    assert server._rt.state.jit_enabled is False
    defaults = server_from_args(_parse())
    assert defaults._rt.jit_ttl_ms == 3_600_000
    assert defaults._rt.state.jit_enabled is True
    with pytest.raises(ValueError, match="jit_ttl"):
        server_from_args(_parse("--jit-ttl", "0"))


def test_cli_serves_http_on_the_same_port() -> None:
    argv = ["--port", "0", "--load-seconds", "0", "--jit-ttl", "42"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmstudio_async.testing", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        match = READY.match(line)
        assert match, line
        url = match.group(1)
        body = json.dumps({"model": "smollm2-135m-instruct", "input": "hi"}).encode()
        request = urllib.request.Request(url + "/api/v1/chat", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["model_instance_id"] == "smollm2-135m-instruct"
        with urllib.request.urlopen(url + "/api/v0/models/smollm2-135m-instruct", timeout=10) as r:
            assert json.loads(r.read())["state"] == "loaded"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "/v1/nothing", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)

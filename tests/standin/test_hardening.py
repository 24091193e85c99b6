"""Hostile or merely huge input: the stand-in stays responsive, bounded and typed.

Each test here guards one finding of the protocol audit (see the git log of this file):
deep JSON, malformed structured-output settings, work that used to grow without bound in
the event loop, and logs that used to grow without bound in memory.
"""

from __future__ import annotations

import logging

import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient
from .http._http import call

BOMB = "[" * 5000 + "]" * 5000  # msgspec gives up near a thousand levels


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# --- deeply nested JSON ----------------------------------------------------------------------


async def test_deeply_nested_frame_is_dropped_and_the_connection_lives_on(
    server: StandInServer, client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lmstudio_async.testing")
    # after authentication: dropped without a reply (protocol.md §2.7)
    llm = await client.connect("llm")
    await llm.send_raw(BOMB)
    await llm.barrier()
    frame = server.received_frames(namespace="llm")[-2]
    assert frame.message is None
    assert frame.raw == BOMB
    # before authentication: ignored like any invalid packet (§1.4)
    raw = await client.raw("system")
    await raw.send_raw(BOMB.encode())  # binary frames are decoded the same way
    await raw.send({"authVersion": 1, "clientIdentifier": "guest:x", "clientPasskey": "p"})
    assert await raw.recv() == {"success": True}
    await raw.barrier()
    assert "nested too deeply" in caplog.text
    _no_errors_logged(caplog)


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/api/v0/completions", "/api/v1/chat", "/v1/embeddings"]
)
async def test_deeply_nested_http_body_is_a_400(
    server: StandInServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, body = await call(server.url, "POST", path, raw=('{"model":' + BOMB + "}").encode())
    assert status == 400, body
    error = body["error"]
    assert error.get("code") == "invalid_json", error
    assert "nested too deeply" in error["message"]
    # a body that msgspec still decodes but that is too deep to handle is a 400 as well
    deep = "[" * 900 + "]" * 900
    body_text = '{"model": "llama-3.2-1b-instruct", "messages": ' + deep + ', "input": ' + deep
    status, body = await call(server.url, "POST", path, raw=(body_text + "}").encode())
    assert 400 <= status < 500, body
    _no_errors_logged(caplog)

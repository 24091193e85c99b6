"""Our WebSocket client against the `ws` library of Node.js, which LM Studio's server uses.

The stand-in is aiohttp; this checks our framing against the other implementation that
matters: masks, lengths (7, 16 and 64 bits), fragments, pings and close codes as `ws`
sends and checks them. Skipped unless Node.js and `ws` are available (the JS SDK brings
`ws`: ``npm install --prefix /tmp/lmsjs @lmstudio/sdk@1.5.0``, or set ``LMSTUDIO_JS_SDK_DIR``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmstudio_async._io.wsclient import WebSocket, WebSocketClosed, connect

pytestmark = pytest.mark.conformance

SDK_DIR = Path(os.environ.get("LMSTUDIO_JS_SDK_DIR", "/tmp/lmsjs"))
WS_ENTRY = SDK_DIR / "node_modules" / "ws" / "index.js"
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def node_port() -> Iterator[int]:
    if NODE is None or not WS_ENTRY.exists():
        pytest.skip("Node.js or the ws package missing")
    proc = subprocess.Popen(
        [NODE, str(Path(__file__).with_name("ws_server.cjs"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "WS_PATH": str(WS_ENTRY)},
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_frame(self, text: bool, payload: bytes) -> None:
        self.queue.put_nowait((text, payload))

    def on_lost(self, reason: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)

    async def next(self) -> bytes:
        async with asyncio.timeout(5):
            text, payload = await self.queue.get()
        assert text
        return payload


async def open_node(port: int) -> tuple[WebSocket, Inbox]:
    async with asyncio.timeout(5):
        ws = await connect("127.0.0.1", port, "/llm", host_header=f"127.0.0.1:{port}")
    inbox = Inbox()
    ws.attach(inbox.on_frame, inbox.on_lost)
    return ws, inbox


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
async def test_echo_at_every_length_encoding(node_port: int, size: int) -> None:
    ws, inbox = await open_node(node_port)
    text = ("é" * (size // 2 + 1)).encode()[:size]  # multi-byte UTF-8, cut on a boundary
    text = text.decode("utf-8", "ignore").encode()
    ws.send_text(b"echo:" + text)
    assert await inbox.next() == text
    await ws.close()
    assert await asyncio.wait_for(inbox.lost, 5) is None  # a clean close, answered by ws


async def test_big_fragmented_and_ping(node_port: int) -> None:
    ws, inbox = await open_node(node_port)
    ws.send_text(b"big:200000")
    assert await inbox.next() == b"x" * 200_000
    ws.send_text(b"frag:hello fragmented world")
    assert await inbox.next() == b"hello fragmented world"
    ws.send_text(b"ping:are you there")
    assert await inbox.next() == b"pong:are you there"  # our pong reached ws intact
    await ws.close()


async def test_server_close_code_and_reason(node_port: int) -> None:
    ws, inbox = await open_node(node_port)
    ws.send_text(b"close:4000")
    reason = await asyncio.wait_for(inbox.lost, 5)
    assert isinstance(reason, WebSocketClosed)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    with pytest.raises(WebSocketClosed):
        ws.send_text(b"echo:late")
    await ws.close()


async def test_many_messages_in_flight(node_port: int) -> None:
    ws, inbox = await open_node(node_port)
    for i in range(2000):
        ws.send_text(b"echo:%d" % i)
    got = [await inbox.next() for _ in range(2000)]
    assert got == [b"%d" % i for i in range(2000)]
    await ws.close()

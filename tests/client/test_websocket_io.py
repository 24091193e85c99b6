"""The asyncio WebSocket client (``_wsclient``) against a hand-written server over real sockets.

The stand-in (aiohttp) only sends well-formed frames; here a raw TCP server completes
the upgrade by hand and then writes exactly the bytes a test wants: fragments, pings,
close frames, frames a server may not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from protocol._frames import naive_mask, server_frame  # tests/ is on sys.path (rootdir-relative)

from lmstudio_async._io.wsclient import WebSocket, WebSocketClosed, connect
from lmstudio_async._protocol import websocket as wsp


class Peer:
    """The server's end of one upgraded connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, bytes]:
        """One client frame: checks that it is final and masked, returns it unmasked."""
        async with asyncio.timeout(5):
            b0, b1 = await self.reader.readexactly(2)
            assert b0 & 0x80, "client frames here are never fragmented"
            assert b1 & 0x80, "client frames must be masked"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            mask = await self.reader.readexactly(4)
            payload = await self.reader.readexactly(n)
        return b0 & 0x0F, naive_mask(payload, mask)

    async def at_eof(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read() == b""


class RawServer:
    """Answers the upgrade (or, with ``answer``, anything else) and queues each peer."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            writer.close()
            return
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {wsp.accept_key(key)}\r\n\r\n".encode()
        )
        await self.peers.put(Peer(reader, writer))

    async def peer(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.peers.get()


@contextlib.asynccontextmanager
async def raw_server(
    answer: bytes | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    state = RawServer(answer)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for writer in state.writers:
            writer.close()
        await server.wait_closed()
        for writer in state.writers:
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[bool, bytes]] = []
        self.lost: list[BaseException | None] = []
        self.changed = asyncio.Event()

    def on_frame(self, text: bool, payload: bytes) -> None:
        self.frames.append((text, payload))
        self.changed.set()

    def on_lost(self, reason: BaseException | None) -> None:
        self.lost.append(reason)
        self.changed.set()

    async def wait(self, predicate: object) -> None:
        async with asyncio.timeout(5):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


async def open_ws(server: RawServer) -> tuple[WebSocket, Peer, Recorder]:
    async with asyncio.timeout(5):
        ws = await connect("127.0.0.1", server.port, "/llm", host_header=f"127.0.0.1:{server.port}")
    peer = await server.peer()
    rec = Recorder()
    ws.attach(rec.on_frame, rec.on_lost)
    return ws, peer, rec


async def test_upgrade_request_and_a_text_round_trip() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        request = server.requests[0].decode()
        assert request.startswith("GET /llm HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n" in request
        ws.send_text(b'{"type":"rpcCall"}')
        assert await peer.read_frame() == (wsp.TEXT, b'{"type":"rpcCall"}')
        peer.write(server_frame(wsp.TEXT, b'{"type":"rpcResult"}'))
        await rec.wait(lambda: rec.frames)
        assert rec.frames == [(True, b'{"type":"rpcResult"}')]
        await ws.close(timeout=0.1)  # the raw peer never answers a close


async def test_large_messages_both_ways() -> None:
    big = bytes(range(256)) * 1000  # 256 000 bytes: 64-bit length, many TCP reads
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        ws.send_text(big)
        assert await peer.read_frame() == (wsp.TEXT, big)
        peer.write(server_frame(wsp.TEXT, big))
        await rec.wait(lambda: rec.frames)
        assert rec.frames == [(True, big)]
        assert type(rec.frames[0][1]) is bytes
        await ws.close(timeout=0.1)  # the raw peer never answers a close


async def test_fragments_are_joined_and_pings_between_them_answered() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        peer.write(server_frame(wsp.TEXT, b"hel", fin=False))
        peer.write(server_frame(wsp.PING, b"are you there"))
        peer.write(server_frame(0x0, b"lo"))
        peer.write(server_frame(wsp.BINARY, b"\x00\x01"))
        assert await peer.read_frame() == (wsp.PONG, b"are you there")
        await rec.wait(lambda: len(rec.frames) == 2)
        assert rec.frames == [(True, b"hello"), (False, b"\x00\x01")]
        await ws.close(timeout=0.1)  # the raw peer never answers a close


async def test_messages_before_attach_are_read_then_handed_over_in_order() -> None:
    async with raw_server() as server:
        async with asyncio.timeout(5):
            ws = await connect(
                "127.0.0.1", server.port, "/llm", host_header=f"127.0.0.1:{server.port}"
            )
        peer = await server.peer()
        peer.write(server_frame(wsp.TEXT, b"auth reply") + server_frame(wsp.TEXT, b"first"))
        async with asyncio.timeout(5):
            assert await ws.recv() == b"auth reply"
        await asyncio.sleep(0.05)  # "first" has arrived and waits in the queue
        rec = Recorder()
        ws.attach(rec.on_frame, rec.on_lost)
        assert rec.frames == [(True, b"first")]
        await ws.close(timeout=0.1)  # the raw peer never answers a close


async def test_close_handshake_from_the_client() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)

        async def answer() -> None:
            assert await peer.read_frame() == (wsp.CLOSE, wsp.close_payload(1000))
            peer.write(server_frame(wsp.CLOSE, wsp.close_payload(1000)))
            await peer.writer.drain()
            peer.writer.close()

        answering = asyncio.create_task(answer())
        async with asyncio.timeout(1.5):  # well under the 2 s give-up time
            await ws.close()
        await answering
        assert ws.closed
        assert rec.lost == [None]  # the peer answered our close: a clean end
        with pytest.raises(WebSocketClosed):
            ws.send_text(b"late")


async def test_close_gives_up_on_a_silent_peer() -> None:
    async with raw_server() as server:
        ws, peer, _ = await open_ws(server)
        async with asyncio.timeout(2):
            await ws.close(timeout=0.2)
        assert await peer.read_frame() == (wsp.CLOSE, wsp.close_payload(1000))
        assert await peer.at_eof()  # the client dropped the connection itself


async def test_peer_close_is_echoed_and_reported() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        peer.write(server_frame(wsp.CLOSE, wsp.close_payload(1001, "going away")))
        assert await peer.read_frame() == (wsp.CLOSE, (1001).to_bytes(2, "big"))
        await rec.wait(lambda: rec.lost)
        assert isinstance(rec.lost[0], WebSocketClosed)
        assert "code 1001: going away" in str(rec.lost[0])
        assert (ws.close_code, ws.close_reason) == (1001, "going away")
        assert await peer.at_eof()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (server_frame(wsp.TEXT, b"x", mask=b"abcd"), 1002),
        (bytes((0xC1, 1)) + b"x", 1002),  # RSV1: compression was never negotiated
        (server_frame(0x3, b"x"), 1002),  # reserved opcode
        (server_frame(wsp.PING, b"x" * 126), 1002),  # control frame too long
        (server_frame(wsp.CLOSE, b"\x03"), 1002),  # 1-byte close payload
    ],
)
async def test_frames_a_server_may_not_send_close_the_socket(frame: bytes, code: int) -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        peer.write(frame)
        opcode, payload = await peer.read_frame()
        assert (opcode, int.from_bytes(payload[:2], "big")) == (wsp.CLOSE, code)
        await rec.wait(lambda: rec.lost)
        assert isinstance(rec.lost[0], wsp.FrameError)
        assert rec.frames == []
        with pytest.raises(WebSocketClosed):
            ws.send_text(b"x")
        assert await peer.at_eof()


async def test_abrupt_disconnect_is_reported_once() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        peer.writer.transport.abort()
        await rec.wait(lambda: rec.lost)
        await asyncio.sleep(0.05)
        assert len(rec.lost) == 1
        assert ws.closed
        await ws.close()  # already gone: returns at once


async def test_abort_reports_the_given_reason() -> None:
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        reason = RuntimeError("keepalive expired")
        ws.abort(reason)
        await rec.wait(lambda: rec.lost)
        assert rec.lost == [reason]
        assert await peer.at_eof()


@pytest.mark.parametrize(
    ("answer", "status", "match"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404, "HTTP 404"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
            101,
            "Sec-WebSocket-Accept",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", None, "not HTTP"),
    ],
)
async def test_refused_upgrades(answer: bytes, status: int | None, match: str) -> None:
    async with raw_server(answer) as server:
        with pytest.raises(wsp.HandshakeError, match=match) as info:
            async with asyncio.timeout(5):
                await connect("127.0.0.1", server.port, "/llm", host_header="x:1")
        assert info.value.status == status


async def test_hang_up_during_the_upgrade() -> None:
    async with raw_server(b"") as server:
        with pytest.raises(WebSocketClosed, match="during the WebSocket upgrade"):
            async with asyncio.timeout(5):
                await connect("127.0.0.1", server.port, "/llm", host_header="x:1")


async def test_drain_waits_while_the_peer_does_not_read() -> None:
    async with raw_server() as server:
        ws, peer, _ = await open_ws(server)
        chunk = b"x" * 65536
        sent = 0
        while not ws.paused:  # the peer reads nothing: the kernel buffers fill up
            ws.send_text(chunk)
            sent += 1
            assert sent < 10_000, "the transport never asked to pause"
        drain = asyncio.create_task(ws.drain())
        await asyncio.sleep(0.1)
        assert not drain.done()
        for _ in range(sent):
            assert await peer.read_frame() == (wsp.TEXT, chunk)
        async with asyncio.timeout(5):
            await drain
        assert not ws.paused
        await ws.close(timeout=0.2)


async def test_drain_fails_when_the_connection_drops() -> None:
    async with raw_server() as server:
        ws, peer, _ = await open_ws(server)
        while not ws.paused:
            ws.send_text(b"x" * 65536)
        drain = asyncio.create_task(ws.drain())
        await asyncio.sleep(0.05)
        peer.writer.transport.abort()
        with pytest.raises(WebSocketClosed):
            async with asyncio.timeout(5):
                await drain


def _self_signed(tmp: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls(tmp_path: Path) -> None:
    files = _self_signed(tmp_path)
    if files is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with raw_server(tls=server_ctx) as server:
        async with asyncio.timeout(5):
            ws = await connect("127.0.0.1", server.port, "/llm", host_header="x", tls=client_ctx)
        peer = await server.peer()
        ws.send_text(b"over tls")
        assert await peer.read_frame() == (wsp.TEXT, b"over tls")
        await ws.close(timeout=0.2)
        # The system trust store does not know this certificate: verification fails.
        with pytest.raises(ssl.SSLCertVerificationError):
            async with asyncio.timeout(5):
                await connect(
                    "127.0.0.1", server.port, "/llm", host_header="x",
                    tls=ssl.create_default_context(),
                )  # fmt: skip


async def test_a_framing_error_is_reported_at_once_even_when_the_peer_reads_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lmstudio_async._io import wsclient as _wsclient

    monkeypatch.setattr(_wsclient, "CLOSE_TIMEOUT", 0.3)
    async with raw_server() as server:
        ws, peer, rec = await open_ws(server)
        while not ws.paused:  # our close frame cannot be sent: the buffers are full
            ws.send_text(b"x" * 65536)
        drain = asyncio.create_task(ws.drain())
        await asyncio.sleep(0)
        peer.write(server_frame(wsp.TEXT, b"x", mask=b"abcd"))
        await rec.wait(lambda: rec.lost)
        assert isinstance(rec.lost[0], wsp.FrameError)
        with pytest.raises(WebSocketClosed):
            async with asyncio.timeout(1):
                await drain  # a sender waiting for room is released too
        # The peer still reads nothing, so the close frame never drains: the connection
        # is dropped once CLOSE_TIMEOUT has passed.
        async with asyncio.timeout(2):
            await ws.wait_lost()

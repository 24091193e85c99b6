"""The client's WebSocket I/O (aiohttp underneath) against a hand-written server.

The stand-in (aiohttp.web) only sends well-formed frames. Here a raw TCP server answers
the upgrade and the authentication by hand and then writes exactly the bytes a test
wants: fragments, pings, close frames, frames a server may not send, messages too big
to accept, invalid UTF-8. Every test drives the public client, as a user would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from protocol.test_info import LLM_INSTANCE  # tests/ is on sys.path

import lmstudio_async as lms
from lmstudio_async._io import transport as _transport

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_QUICK = lms.Timeouts(idle=5.0, connect=5.0)


@pytest.fixture(autouse=True)
def _short_close_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    # The raw peers below rarely answer a close frame: give up on them after 0.2 s, not 2 s.
    monkeypatch.setattr(_transport, "_WS_TIMEOUT", _transport.aiohttp.ClientWSTimeout(ws_close=0.2))


# --- a raw WebSocket server, written independently of any library ---------------------------


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None
) -> bytes:
    """One unmasked server frame; ``length`` overrides the length header (lying about it)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class Peer:
    """The server's end of one upgraded, authenticated connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send_json(self, message: dict[str, Any]) -> None:
        self.write(frame(TEXT, json.dumps(message).encode()))

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
        return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def read_message(self) -> dict[str, Any]:
        """The next client text message (pongs and the like skipped), decoded."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == TEXT:
                message: dict[str, Any] = json.loads(payload)
                return message

    async def answer_rpc(self, result: Any) -> dict[str, Any]:
        call = await self.read_message()
        assert call["type"] == "rpcCall"
        self.send_json({"type": "rpcResult", "callId": call["callId"], "result": result})
        return call

    async def at_eof(self) -> bool:
        """True once the client has dropped the connection (whatever else it still sends)."""
        async with asyncio.timeout(5):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionResetError:
                pass  # dropped with our bytes unread: a reset rather than a FIN
        return True


class RawServer:
    """Answers the upgrade (or, with ``answer``, anything else), authenticates, queues peers."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.requests.append(head)
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            writer.close()
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        peer = Peer(reader, writer)
        auth = await peer.read_message()
        assert auth["authVersion"] == 1
        peer.send_json({"success": True})
        await self.peers.put(peer)

    async def peer(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.peers.get()

    def host(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"


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
            writer.transport.abort()
        # abort() closes the socket in a later loop step, and on 3.11 wait_closed() returns
        # at once: wait for each connection to be lost, so that a loop closed right after
        # this (the sync TLS test's server thread) leaves no socket to the garbage collector.
        for writer in state.writers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
        await server.wait_closed()


async def call_and_peer(
    client: lms.AsyncClient, server: RawServer
) -> tuple[asyncio.Task[Any], Peer, dict[str, Any]]:
    """Start ``list_loaded`` on a fresh socket; returns the call, the peer and its request."""
    call = asyncio.create_task(client.llm.list_loaded())
    peer = await server.peer()
    request = await peer.read_message()
    assert request["endpoint"] == "listLoaded"
    return call, peer, request


async def fails_with(call: Awaitable[Any], error: type[BaseException], match: str) -> str:
    with pytest.raises(error, match=match) as info:
        async with asyncio.timeout(5):
            await call
    return str(info.value)


# --- the ordinary paths -----------------------------------------------------------------------


async def test_upgrade_auth_and_a_round_trip() -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, request = await call_and_peer(client, server)
        assert request["type"] == "rpcCall"
        peer.send_json({"type": "rpcResult", "callId": request["callId"], "result": []})
        async with asyncio.timeout(5):
            assert await call == []
        head = server.requests[0].decode()
        assert head.startswith("GET /llm HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n" in head
        assert "permessage-deflate" not in head  # no compression is offered


async def test_large_replies_and_fragments_with_pings_between_them() -> None:
    big = "x" * 300_000  # a 64-bit length header, many TCP reads
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, request = await call_and_peer(client, server)
        reply = json.dumps({"type": "rpcResult", "callId": request["callId"], "result": []})
        reply = reply[:-1] + f', "padding": "{big}"}}'
        data = reply.encode()
        peer.write(frame(TEXT, data[:10], fin=False))
        peer.write(frame(PING, b"are you there"))
        peer.write(frame(0x0, data[10:20], fin=False))
        peer.write(frame(0x0, b"", fin=False))  # an empty continuation is legal
        peer.write(frame(0x0, data[20:]))
        assert await peer.read_frame() == (PONG, b"are you there")
        async with asyncio.timeout(5):
            assert await call == []


async def test_a_keep_alive_from_the_server_is_answered() -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, request = await call_and_peer(client, server)
        peer.send_json({"type": "keepAlive"})
        assert await peer.read_message() == {"type": "keepAliveAck"}
        peer.send_json({"type": "rpcResult", "callId": request["callId"], "result": []})
        async with asyncio.timeout(5):
            assert await call == []


async def test_close_handshake_from_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transport, "_WS_TIMEOUT", _transport.aiohttp.ClientWSTimeout(ws_close=2))
    async with raw_server() as server:
        client = lms.AsyncClient(server.host(), timeout=_QUICK)
        call, peer, request = await call_and_peer(client, server)
        peer.send_json({"type": "rpcResult", "callId": request["callId"], "result": []})
        await call

        async def answer() -> None:
            opcode, payload = await peer.read_frame()
            assert (opcode, payload) == (CLOSE, close_payload(1000))
            peer.write(frame(CLOSE, close_payload(1000)))
            await peer.writer.drain()

        answering = asyncio.create_task(answer())
        started = time.monotonic()
        async with asyncio.timeout(5):
            await client.aclose()
        await answering
        assert time.monotonic() - started < 1.0  # the answer ended it, not the give-up time
        assert await peer.at_eof()


async def test_close_gives_up_on_a_silent_peer() -> None:
    async with raw_server() as server:
        client = lms.AsyncClient(server.host(), timeout=_QUICK)
        call, peer, request = await call_and_peer(client, server)
        peer.send_json({"type": "rpcResult", "callId": request["callId"], "result": []})
        await call
        started = time.monotonic()
        async with asyncio.timeout(5):
            await client.aclose()  # the peer never answers the close frame
        assert time.monotonic() - started < 2.0
        assert await peer.read_frame() == (CLOSE, close_payload(1000))
        assert await peer.at_eof()  # the client dropped the connection itself


async def test_a_close_without_a_reason_says_what_its_code_means() -> None:
    # LM Studio refusing a message over its size limit closes with 1009 and no reason.
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, _ = await call_and_peer(client, server)
        peer.write(frame(CLOSE, close_payload(1009)))
        await fails_with(call, lms.LMStudioConnectionError, "code 1009: a message was too big")


async def test_server_close_fails_the_call_names_the_code_and_the_next_call_reconnects() -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, _ = await call_and_peer(client, server)
        peer.write(frame(CLOSE, close_payload(1001, "going away")))
        await fails_with(call, lms.LMStudioConnectionError, "code 1001: going away")
        assert (await peer.read_frame())[0] == CLOSE  # answered
        again = asyncio.create_task(client.llm.list_loaded())
        fresh = await server.peer()
        await fresh.answer_rpc([])
        async with asyncio.timeout(5):
            assert await again == []


async def test_hang_up_fails_the_call_and_the_next_call_reconnects() -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, _ = await call_and_peer(client, server)
        peer.writer.transport.abort()
        await fails_with(call, lms.LMStudioConnectionError, "was lost")
        again = asyncio.create_task(client.llm.list_loaded())
        await (await server.peer()).answer_rpc([])
        async with asyncio.timeout(5):
            assert await again == []


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (bytes((0xC1, 1)) + b"x", 1002),  # RSV1: compression was never negotiated
        (frame(0x3, b"x"), 1002),  # reserved opcode
        (frame(PING, b"x" * 126), 1002),  # control frame too long
        (frame(0x0, b"x"), 1002),  # continuation with nothing to continue
    ],
    ids=["rsv1", "opcode", "long-ping", "stray-continuation"],
)
async def test_frames_a_server_may_not_send_close_the_socket(bad: bytes, code: int) -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        call, peer, _ = await call_and_peer(client, server)
        peer.write(bad)
        text = await fails_with(call, lms.LMStudioConnectionError, "invalid WebSocket message")
        assert f"code {code}" in text
        opcode, payload = await peer.read_frame()
        assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, code)
        assert await peer.at_eof()


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", lms.ProtocolError, "HTTP 404"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
            lms.ProtocolError,
            "does not look like LM Studio",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", lms.ProtocolError, "does not look like LM Studio"),
        (b"", lms.LMStudioConnectionError, "cannot connect"),  # hangs up during the upgrade
        (  # never followed: it would authenticate (send the token) at another host
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://127.0.0.2:9/llm\r\n"
            b"Content-Length: 0\r\n\r\n",
            lms.ProtocolError,
            "answered with a redirect",
        ),
    ],
    ids=["404", "bad-accept", "not-http", "hang-up", "redirect"],
)
async def test_refused_upgrades(answer: bytes, error: type[Exception], match: str) -> None:
    async with raw_server(answer) as server, lms.AsyncClient(server.host(), timeout=_QUICK) as c:
        await fails_with(c.llm.list_loaded(), error, match)


# --- bad frames: typed errors, the socket closed, bounded memory -----------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The process's peak resident size above its size at start, sampled every 2 ms."""

    def __init__(self) -> None:
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss()) - self.base


async def _flood(peer: Peer, chunk: bytes) -> None:
    """Write ``chunk`` again and again until the client hangs up."""
    with contextlib.suppress(ConnectionError, OSError):
        while not peer.writer.is_closing():
            peer.write(chunk)
            await peer.writer.drain()


_MB = 1024 * 1024
_LIMIT = _transport.MAX_MESSAGE_BYTES


async def _oversized(peer: Peer) -> None:
    # A length header of 1 TiB, then payload bytes for as long as the client reads them.
    peer.write(frame(TEXT, length=1 << 40))
    await _flood(peer, b"x" * 65536)


async def _oversized_exact(peer: Peer) -> None:
    # One byte over the limit, announced honestly.
    peer.write(frame(TEXT, length=_LIMIT + 1))
    await _flood(peer, b"x" * 65536)


async def _invalid_utf8(peer: Peer) -> None:
    peer.write(frame(TEXT, b'{"type":"rpcResult","callId":0,"result":"\xff\xfe"}'))
    await peer.writer.drain()


async def _fragment_flood(peer: Peer) -> None:
    # A message that never ends: 64 KiB continuation frames until the client refuses it.
    peer.write(frame(TEXT, b"[", fin=False))
    await _flood(peer, frame(0x0, b"1," * 32768, fin=False))


async def _empty_continuation_flood(peer: Peer) -> None:
    # Empty continuation frames forever: no bytes to buffer, and no message ever ends.
    peer.write(frame(TEXT, b"[", fin=False))
    await _flood(peer, frame(0x0, fin=False) * 4096)


@pytest.mark.parametrize(
    ("misbehave", "match", "code"),
    [
        (_oversized, "exceeds limit", 1009),
        (_oversized_exact, "exceeds limit", 1009),
        (_invalid_utf8, "UTF-8", 1007),
        (_fragment_flood, "exceeds limit", 1009),
        (_empty_continuation_flood, "stopped answering", None),
    ],
    ids=["1TiB-header", "limit+1", "invalid-utf8", "fragment-flood", "empty-continuations"],
)
async def test_bad_messages_end_the_calls_promptly_with_bounded_memory(
    misbehave: Callable[[Peer], Awaitable[None]], match: str, code: int | None
) -> None:
    # An endless message carries nothing the keepalive can see: it is what ends the last case.
    timeouts = lms.Timeouts(idle=30.0, connect=5.0, keepalive_interval=0.3, keepalive_timeout=1.0)
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=timeouts) as client:
        call, peer, _ = await call_and_peer(client, server)
        other = asyncio.create_task(client.llm.list_loaded())  # a second call in flight
        await peer.read_message()
        rss = PeakRss()
        flooding = asyncio.create_task(misbehave(peer))
        started = time.monotonic()
        try:
            text = await fails_with(call, lms.LMStudioConnectionError, match)
            await fails_with(other, lms.LMStudioConnectionError, match)
            elapsed = time.monotonic() - started
        finally:
            grown = rss.stop()
        if code is not None:
            assert f"code {code}" in text
        assert elapsed < 3.0
        print(f"RSS grew by {grown / _MB:.1f} MB in {elapsed:.2f} s")
        assert grown < 50 * _MB, f"RSS grew by {grown / _MB:.0f} MB"
        assert await peer.at_eof()  # the client dropped the socket
        async with asyncio.timeout(5):
            await flooding
        again = asyncio.create_task(client.llm.list_loaded())
        await (await server.peer()).answer_rpc([])
        async with asyncio.timeout(5):
            assert await again == []  # and the next call reconnects


# --- TLS ----------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_wss_with_a_custom_context_and_verification(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with raw_server(tls=server_ctx) as server:
        for scheme in ("wss", "https"):
            async with lms.AsyncClient(server.host(scheme), timeout=_QUICK, ssl=trusting) as c:
                call = asyncio.create_task(c.llm.list_loaded())
                await (await server.peer()).answer_rpc([])
                async with asyncio.timeout(5):
                    assert await call == []
        # Verification is on by default: the system trust store does not know this cert.
        async with lms.AsyncClient(server.host("wss"), timeout=_QUICK) as client:
            await fails_with(client.llm.list_loaded(), lms.LMStudioConnectionError, "TLS")
        # asyncio (3.11) may leave the socket of a refused TLS handshake to the garbage
        # collector, now and then: finalize it here, so that its ResourceWarning (an error
        # under filterwarnings=error) cannot land in whichever test runs next.
        await asyncio.sleep(0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        # ssl=False skips it (a local server with a throwaway certificate).
        async with lms.AsyncClient(server.host("wss"), timeout=_QUICK, ssl=False) as client:
            call = asyncio.create_task(client.llm.list_loaded())
            await (await server.peer()).answer_rpc([])
            async with asyncio.timeout(5):
                assert await call == []


def test_ssl_of_the_wrong_type_is_a_value_error() -> None:
    with pytest.raises(lms.LMStudioValueError, match=r"ssl must be an ssl\.SSLContext"):
        lms.AsyncClient("localhost:1234", ssl="yes")  # type: ignore[arg-type]


# --- channel packets the client does not expect ----------------------------------------------


async def test_a_load_skips_unknown_packets_and_fails_when_the_channel_ends_without_a_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[float] = []
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        load = asyncio.create_task(client.llm.load("some-model", on_progress=seen.append))
        peer = await server.peer()
        create = await peer.read_message()
        assert (create["type"], create["endpoint"]) == ("channelCreate", "loadModel")
        channel = create["channelId"]

        def send(message: dict[str, Any]) -> None:
            peer.send_json({"type": "channelSend", "channelId": channel, "message": message})

        send({"type": "somethingNewer", "detail": 1})  # a kind this client does not know
        send({"type": "progress", "progress": 0.5})  # read after the unknown one
        peer.send_json({"type": "channelClose", "channelId": channel})
        await fails_with(
            load, lms.ProtocolError, "Model load of 'some-model': LM Studio closed the channel"
        )
    assert seen[-1] == 0.5
    assert "ignored an unexpected packet" in caplog.text
    assert "somethingNewer" in caplog.text


class _SilentTlsPeer(threading.Thread):
    """A one-connection wss:// server on a plain socket with an ``ssl.SSLObject``: it
    answers the upgrade, the authentication and one call, then reads raw TCP bytes and
    never answers again: not the close frame, and not the TLS close (close_notify)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(daemon=True)
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.eof_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.listener.close()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)

            def flush() -> None:
                if data := outgoing.read():
                    conn.sendall(data)

            def feed() -> None:
                data = conn.recv(65536)
                if not data:
                    raise ConnectionError("client went away during the exchange")
                incoming.write(data)

            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    feed()
            flush()
            buffer = bytearray()

            def read(n: int) -> bytes:
                while len(buffer) < n:
                    try:
                        buffer.extend(tls.read(65536))
                    except ssl.SSLWantReadError:
                        flush()
                        feed()
                out = bytes(buffer[:n])
                del buffer[:n]
                return out

            def send(data: bytes) -> None:
                tls.write(data)
                flush()

            def read_message() -> dict[str, Any]:
                _, b1 = read(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(read(2), "big")
                mask, payload = read(4), read(n)
                message: dict[str, Any] = json.loads(
                    bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                )
                return message

            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += read(1)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
            send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                + f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            read_message()  # authentication
            send(frame(TEXT, b'{"success": true}'))
            call = read_message()
            result = {"type": "rpcResult", "callId": call["callId"], "result": []}
            send(frame(TEXT, json.dumps(result).encode()))
            self.silent.set()
            # From here on only raw bytes are read, never handed to TLS: nothing is answered.
            try:
                while conn.recv(65536):
                    pass
            except ConnectionResetError:
                pass  # an abort: as good as an end of stream here
            self.eof_at = time.monotonic()  # (a recv timeout raises and leaves this None)


@pytest.mark.skipif(
    not _transport._TLS_CLEANUP,
    reason="aiohttp aborts lingering TLS sockets only on Pythons before 3.12.8 and on 3.13.0",
)
async def test_a_tls_socket_whose_peer_never_answers_the_close_is_closed_with_the_client(
    tmp_path: Path,
) -> None:
    # Without the abort, asyncio keeps such a socket in its TLS shutdown for 30 s, and an
    # event loop closed before then leaves it to the garbage collector (ResourceWarning).
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    peer = _SilentTlsPeer(server_ctx)
    peer.start()
    trusting = ssl.create_default_context(cafile=str(cert))
    async with lms.AsyncClient(f"wss://127.0.0.1:{peer.port}", timeout=_QUICK, ssl=trusting) as c:
        assert await c.llm.list_loaded() == []
        assert peer.silent.wait(5)
    closed_at = time.monotonic()
    await asyncio.to_thread(peer.join, 10)
    assert peer.error is None, peer.error
    assert peer.eof_at is not None
    assert peer.eof_at - closed_at < 1.0  # the socket is gone once the client has closed


async def test_a_prediction_skips_unknown_packets_and_fails_when_the_channel_ends_early(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        any_model = asyncio.create_task(client.llm.model())
        peer = await server.peer()
        await peer.answer_rpc(json.loads(LLM_INSTANCE))  # the "any loaded model" call
        async with asyncio.timeout(5):
            model = await any_model
        pieces: list[str] = []

        async def read_all() -> None:
            async with model.respond_stream("Hello") as stream:
                async for fragment in stream:
                    pieces.append(fragment.content)

        reading = asyncio.create_task(read_all())
        create = await peer.read_message()
        assert (create["type"], create["endpoint"]) == ("channelCreate", "predict")
        channel = create["channelId"]
        for message in (
            {"type": "somethingNewer"},  # a kind this client does not know: skipped
            {"type": "fragment", "fragment": {"content": "Hi"}},
        ):
            peer.send_json({"type": "channelSend", "channelId": channel, "message": message})
        peer.send_json({"type": "channelClose", "channelId": channel})  # no success packet
        await fails_with(
            reading,
            lms.ProtocolError,
            "Chat response of 'llama-3.2-1b-instruct': LM Studio closed the channel",
        )
    assert pieces == ["Hi"]
    assert "ignored an unexpected packet" in caplog.text


async def test_a_hang_up_right_after_a_prediction_ends_does_not_fail_the_next_call() -> None:
    # The server sends the prediction's result, then the connection drops before its
    # channelClose. The result is returned; the call made right after it, with the drop
    # already received but not yet read, goes out on a new socket instead of failing.
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=_QUICK) as client:
        any_model = asyncio.create_task(client.llm.model())
        peer = await server.peer()
        await peer.answer_rpc(json.loads(LLM_INSTANCE))
        async with asyncio.timeout(5):
            model = await any_model
        async def respond_then_list() -> tuple[lms.PredictionResult, list[lms.LLM]]:
            result = await model.respond("Hello")
            return result, await client.llm.list_loaded()  # at once, in the same task

        calls = asyncio.create_task(respond_then_list())
        create = await peer.read_message()
        success = {
            "type": "success",
            "stats": {"stopReason": "eosFound"},
            "modelInfo": json.loads(LLM_INSTANCE),
            "loadModelConfig": {"fields": []},
            "predictionConfig": {"fields": []},
        }
        channel = create["channelId"]
        peer.send_json({"type": "channelSend", "channelId": channel, "message": success})
        peer.writer.transport.abort()  # no channelClose: the connection is gone
        await (await server.peer()).answer_rpc([])
        async with asyncio.timeout(5):
            result, listed = await calls
        assert result.stop_reason == "eosFound"
        assert listed == []


# --- a server that stops reading ------------------------------------------------------------


def _stuck_sends(client: lms.AsyncClient, count: int) -> list[asyncio.Task[Any]]:
    """Calls whose requests (4 MB each) fill the send buffer of a server that reads nothing."""
    return [
        asyncio.create_task(client._rpc("llm", "tokenize", {"text": "a" * 4_000_000}))
        for _ in range(count)
    ]


async def test_sends_waiting_for_a_server_that_stopped_reading_end_at_the_keepalive() -> None:
    timeouts = lms.Timeouts(idle=30.0, connect=5.0, keepalive_interval=0.3, keepalive_timeout=1.0)
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=timeouts) as client:
        call, _peer, _ = await call_and_peer(client, server)  # the peer reads nothing more
        stuck = _stuck_sends(client, 4)
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in stuck)
        stuck[0].cancel()  # one caller gives up: only its own call ends
        await asyncio.sleep(0.1)
        assert stuck[0].cancelled()
        assert not any(task.done() for task in stuck[1:])
        started = time.monotonic()
        for task in [call, *stuck[1:]]:
            await fails_with(task, lms.LMStudioConnectionError, "stopped answering")
        assert time.monotonic() - started < 3


async def test_closing_the_client_ends_sends_waiting_for_a_server_that_stopped_reading() -> None:
    async with raw_server() as server:
        client = lms.AsyncClient(server.host(), timeout=_QUICK)
        call, _peer, _ = await call_and_peer(client, server)
        stuck = _stuck_sends(client, 2)
        await asyncio.sleep(0.2)
        async with asyncio.timeout(3):
            await client.aclose()
        for task in [call, *stuck]:
            await fails_with(task, lms.ClientClosedError, "closed")


async def test_a_stalled_event_loop_does_not_make_the_keepalive_drop_a_live_socket() -> None:
    # The loop is blocked (a long synchronous step; a paused process) past keepalive_timeout
    # while the server answered: the answers are read first, and the socket stays.
    timeouts = lms.Timeouts(idle=30.0, connect=5.0, keepalive_interval=0.8, keepalive_timeout=1.0)
    async with raw_server() as server, lms.AsyncClient(server.host(), timeout=timeouts) as client:
        first, peer, request = await call_and_peer(client, server)
        peer.send_json({"type": "rpcResult", "callId": request["callId"], "result": []})
        assert await first == []
        call = asyncio.create_task(client.llm.list_loaded())
        await peer.answer_rpc([])  # answered at once, but the client's loop is about to stall
        time.sleep(1.5)  # noqa: ASYNC251 -- the loop is blocked on purpose
        async with asyncio.timeout(2):
            assert await call == []
        assert server.peers.empty()  # no reconnect: the same socket goes on

"""asyncio I/O for one client WebSocket, on top of the sans-I/O framing.

:class:`WebSocket` is an :class:`asyncio.Protocol`: bytes from the socket go
through :class:`~lmstudio_async._protocol.websocket.FrameParser`, and each text
message is handed to the owner's callback *inside* ``data_received``. So a reply
resolves its caller's future in the same event-loop step that read it, with no
reader task and no message queue in between. Writes are synchronous
(``transport.write``); :meth:`WebSocket.drain` waits only when the kernel's send
buffer is full.

Pings are answered, a peer's close frame is echoed, and frames a server may not
send close the socket with the right status code. Whatever ends the connection,
the owner's ``on_lost`` callback runs exactly once (unless :meth:`detach` ran first),
as soon as the client knows: a peer's close frame or a framing error ends the
connection for the owner at once, even while the close frame still drains.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable
from typing import Final

from .._protocol.websocket import (
    BINARY,
    CLOSE,
    CLOSE_NORMAL,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameParser,
    Handshake,
    close_payload,
    encode_frame,
    parse_close,
)

__all__ = ["WebSocket", "WebSocketClosed", "connect"]

log = logging.getLogger("lmstudio_async")

CLOSE_TIMEOUT: Final = 2.0
"""How long :meth:`WebSocket.close` waits for the peer to end the connection."""

OnFrame = Callable[[bool, bytes], None]
OnLost = Callable[[BaseException | None], None]


class WebSocketClosed(ConnectionResetError):
    """The WebSocket is closed (or closing); nothing more can be sent or received."""


def _ignore_frame(text: bool, payload: bytes) -> None:
    pass


def _ignore_lost(reason: BaseException | None) -> None:
    pass


class WebSocket(asyncio.Protocol):
    """One client WebSocket connection (made by :func:`connect`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handshake: Handshake) -> None:
        self._loop = loop
        self._handshake: Handshake | None = handshake
        self.opened: asyncio.Future[None] = loop.create_future()
        self._parser = FrameParser()
        self._transport: asyncio.Transport | None = None
        # Before attach(): messages queue for recv(); after: they go to the callbacks.
        self._early: collections.deque[tuple[bool, bytes]] = collections.deque()
        self._early_waiter: asyncio.Future[None] | None = None
        self._on_frame: OnFrame | None = None
        self._on_lost: OnLost = _ignore_lost
        self._lost = False  # the transport reported connection_lost
        self._ended = False  # the owner was told the connection is over
        self._abort_timer: asyncio.TimerHandle | None = None
        self._lost_fut: asyncio.Future[None] = loop.create_future()
        self._close_sent = False
        self._error: BaseException | None = None  # why we are ending it, if we are
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.last_rx = loop.time()
        self.close_code: int | None = None
        self.close_reason = ""

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        assert self._handshake is not None
        transport.write(self._handshake.request)

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            try:
                rest = self._handshake.receive(data)
            except Exception as exc:  # HandshakeError, or a head that is not latin-1 text
                self._handshake = None
                if not self.opened.done():
                    self.opened.set_exception(exc)
                self._abort()
                return
            if rest is None:
                return
            self._handshake = None
            if not self.opened.done():
                self.opened.set_result(None)
            if not rest:
                return
            data = rest
        if self._lost or self._error is not None:
            return
        self.last_rx = self._loop.time()
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._fail(exc, exc.code)
            return
        for opcode, payload in frames:
            if opcode <= BINARY:  # TEXT or BINARY (the parser never returns 0)
                on_frame = self._on_frame
                if on_frame is None:
                    self._early.append((opcode == TEXT, payload))
                    waiter = self._early_waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    continue
                try:
                    on_frame(opcode == TEXT, payload)
                except Exception as exc:  # a bug in the owner's dispatch: end, don't hang
                    log.exception("LM Studio: dispatching a message failed")
                    self._fail(exc, 1011)
                    return
            elif opcode == PING:
                self._write_frame(PONG, payload)
            elif opcode == CLOSE:
                self._peer_closed(payload)
                return
            # PONG: nothing to do (the stream itself counts as a sign of life)
            if self._error is not None:
                return

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        if not self._lost_fut.done():
            self._lost_fut.set_result(None)
        if not self.opened.done():
            self.opened.set_exception(
                WebSocketClosed("the server closed the connection during the WebSocket upgrade")
            )
        self._end(self._error if self._error is not None else exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- owner API ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closing or closed: sends raise :class:`WebSocketClosed`."""
        return self._lost or self._close_sent or self._error is not None

    @property
    def paused(self) -> bool:
        """The kernel's send buffer is full: :meth:`drain` before sending more."""
        return self._paused

    def send_text(self, payload: bytes) -> None:
        """Send one text message now (it is buffered if the socket cannot take it yet)."""
        if self.closed:
            raise WebSocketClosed("the WebSocket is closed")
        self._write_frame(TEXT, payload)

    async def drain(self) -> None:
        """Wait until the send buffer has room again (returns at once if it has)."""
        while self._paused and not self._ended:
            waiter = self._drain_waiter
            if waiter is None or waiter.done():
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter
        if self._ended:
            raise WebSocketClosed("the WebSocket closed while sending")

    async def recv(self) -> bytes:
        """The next message, for use before :meth:`attach` (e.g. the auth reply)."""
        while not self._early:
            if self.closed:
                raise WebSocketClosed("the WebSocket closed before a message arrived")
            waiter = self._early_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._early_waiter = None
        return self._early.popleft()[1]

    async def wait_lost(self) -> None:
        """Return once the connection has ended (for whatever reason)."""
        await asyncio.shield(self._lost_fut)

    def attach(self, on_frame: OnFrame, on_lost: OnLost) -> None:
        """Hand every later message to ``on_frame(is_text, payload)``, and the end of
        the connection to ``on_lost(reason)``; messages queued so far go first."""
        if self._ended:
            on_lost(self._error)
            return
        self._on_frame = on_frame
        self._on_lost = on_lost
        while self._early and self._on_frame is on_frame:
            text, payload = self._early.popleft()
            on_frame(text, payload)

    def detach(self) -> None:
        """Stop calling the owner: later messages are dropped, the end is not reported."""
        self._on_frame = _ignore_frame
        self._on_lost = _ignore_lost

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the connection now, without a close handshake; ``on_lost`` gets ``reason``."""
        if self._error is None:
            self._error = reason
        self._abort()

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close handshake: send a close frame, wait up to ``timeout`` s for the peer to
        end the connection, then drop it. Never raises (except for cancellation)."""
        transport = self._transport
        if transport is None or self._lost:
            return
        try:
            if not self._close_sent and self._error is None:
                self._close_sent = True
                self._write_frame(CLOSE, close_payload(CLOSE_NORMAL))
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._lost_fut)
        except TimeoutError:
            pass
        finally:
            if not self._lost:
                transport.abort()

    # --- internals ---------------------------------------------------------------

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(opcode, payload))

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _end(self, reason: BaseException | None) -> None:
        """The connection is over for the owner: tell it once, fail whoever waits."""
        if self._ended:
            return
        self._ended = True
        closed = WebSocketClosed(str(reason) if reason is not None else "the WebSocket closed")
        for waiter in (self._early_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(closed)
        on_lost, self._on_lost = self._on_lost, _ignore_lost
        self._on_frame = _ignore_frame
        on_lost(reason)

    def _close_transport(self) -> None:
        """Close after the buffered bytes (our close frame) are sent, but drop the
        connection if that takes longer than :data:`CLOSE_TIMEOUT` (a peer not reading)."""
        transport = self._transport
        if transport is None:
            return
        transport.close()
        if self._abort_timer is None and not self._lost:
            self._abort_timer = self._loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _fail(self, error: BaseException, code: int) -> None:
        """End the connection because of ``error``: close frame with ``code``, then close.
        The owner hears of it now, not when the peer has read our close frame."""
        if self._error is None:
            self._error = error
        if not self._close_sent:
            self._close_sent = True
            self._write_frame(CLOSE, close_payload(code))
        self._close_transport()
        self._end(self._error)

    def _peer_closed(self, payload: bytes) -> None:
        try:
            code, reason = parse_close(payload)
        except FrameError as exc:
            self._fail(exc, exc.code)
            return
        self.close_code, self.close_reason = code, reason
        if self._close_sent:
            # The answer to our own close: a clean end (reason None) unless we were failing.
            self._close_transport()
            self._end(self._error)
            return
        detail = "the server closed the WebSocket"
        if code is not None:
            detail += f" (code {code}{': ' + reason if reason else ''})"
        if self._error is None:
            self._error = WebSocketClosed(detail)
        self._close_sent = True  # echo it, then end the connection (RFC 6455 §5.5.1)
        self._write_frame(CLOSE, payload[:2])
        self._close_transport()
        self._end(self._error)


async def connect(
    host: str,
    port: int,
    path: str,
    *,
    host_header: str,
    tls: ssl.SSLContext | None = None,
) -> WebSocket:
    """Open a TCP (or TLS) connection and complete the WebSocket upgrade of ``path``.

    Raises :class:`OSError` when the connection fails (including
    :class:`WebSocketClosed` when the server hangs up during the upgrade) and
    :class:`~lmstudio_async._protocol.websocket.HandshakeError` when the server
    refuses it. Has no deadline of its own: wrap it in one.
    """
    loop = asyncio.get_running_loop()
    ws = WebSocket(loop, Handshake(host_header, path))
    transport, _ = await loop.create_connection(
        lambda: ws, host, port, ssl=tls, server_hostname=host if tls is not None else None
    )
    try:
        await ws.opened
    except BaseException:
        if not ws.opened.done():
            ws.opened.cancel()
        transport.abort()
        raise
    return ws

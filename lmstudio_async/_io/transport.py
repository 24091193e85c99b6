"""Transport: host discovery, one lazy authenticated WebSocket per namespace.

Each :class:`NamespaceSocket` owns one :class:`~lmstudio_async._wsclient.WebSocket`,
which hands every message, as it reads it, to the sans-I/O
:class:`~lmstudio_async._protocol.connection.Connection`; the resulting events
resolve the waiting calls right there. Sockets open on first use;
when one dies (peer gone, keepalive expired, server restarted) every call in
flight on it fails with :class:`~lmstudio_async.errors.LMStudioConnectionError`
and the next call opens a fresh socket.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import re
import secrets
import ssl
from collections.abc import Iterable
from typing import Any, Final

import aiohttp
import msgspec
from msgspec import UNSET, Raw

from .._protocol.connection import (
    ChannelClosed,
    ChannelFailed,
    ChannelMessage,
    Connection,
    KeepAliveAnswered,
    Malformed,
    PeerKeepAlive,
    RpcFailed,
    RpcSucceeded,
    Unroutable,
    Warning_,
)
from .._protocol.errors import SerializedError
from .._protocol.websocket import HandshakeError
from ..errors import (
    AuthenticationError,
    ClientClosedError,
    LMStudioConnectionError,
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    ProtocolError,
)
from ..types import Timeouts
from .wsclient import WebSocket, WebSocketClosed, connect

__all__ = [
    "DEFAULT_PORTS",
    "ChannelStream",
    "NamespaceSocket",
    "RemoteError",
    "Transport",
    "parse_api_host",
    "probe_lmstudio",
]

log = logging.getLogger("lmstudio_async")

DEFAULT_PORTS: Final = (41343, 52993, 16141, 39414, 22931)
"""Ports of LM Studio's always-on local API server, probed when no host is given."""

ENV_API_HOST: Final = "LMSTUDIO_API_HOST"
ENV_API_TOKEN: Final = "LMSTUDIO_API_TOKEN"
_TOKEN_RE: Final = re.compile(r"^sk-lm-([A-Za-z0-9]{8}):([A-Za-z0-9]{20})$")
_HOST_RE: Final = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<netloc>[^/?#\s]+)/?$"
)
SETTLE_SECONDS: Final = 30.0
"""How long a channel is still read after its ``cancel`` (see :meth:`ChannelStream.settle`)."""


# --- configuration helpers ------------------------------------------------------


def parse_api_host(api_host: str) -> tuple[str, str]:
    """Split ``host:port``, ``http://host:port`` or ``ws://host:port`` into (http base, ws base).

    ``https``/``wss`` select TLS. Raises :class:`LMStudioValueError` naming the value.
    """
    if not isinstance(api_host, str):
        raise LMStudioValueError(
            f"api_host must be a string like 'localhost:1234', got {api_host!r}"
        )
    match = _HOST_RE.match(api_host.strip())
    if match is None:
        raise LMStudioValueError(
            f"api_host {api_host!r} is not of the form 'host:port', 'http://host:port' or "
            "'ws://host:port'"
        )
    scheme = (match["scheme"] or "http").lower()
    netloc = match["netloc"]
    if scheme in ("http", "ws"):
        http, ws = "http", "ws"
    elif scheme in ("https", "wss"):
        http, ws = "https", "wss"
    else:
        raise LMStudioValueError(f"api_host {api_host!r} has unsupported scheme {scheme!r}")
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LMStudioValueError(
            f"api_host {api_host!r} needs an explicit port, e.g. 'localhost:1234'"
        )
    return f"{http}://{netloc}", f"{ws}://{netloc}"


def credentials(api_token: str | None) -> tuple[str, str]:
    """(clientIdentifier, clientPasskey) from an API token, or a random guest identity."""
    if api_token is None:
        api_token = os.environ.get(ENV_API_TOKEN, "")
    api_token = api_token.strip()
    if not api_token:
        return (
            "guest:" + base64.b64encode(secrets.token_bytes(18)).decode(),
            base64.b64encode(secrets.token_bytes(18)).decode(),
        )
    match = _TOKEN_RE.match(api_token)
    if match is None:
        # Never echo the token: it is a secret even when malformed.
        raise LMStudioValueError(
            "api_token is malformed: LM Studio tokens look like "
            "'sk-lm-XXXXXXXX:YYYYYYYYYYYYYYYYYYYY' (8 and 20 letters or digits)"
        )
    return match[1], match[2]


async def probe_lmstudio(session: aiohttp.ClientSession, http_base: str, timeout: float) -> bool:
    """True when ``GET <http_base>/lmstudio-greeting`` answers like LM Studio."""
    try:
        async with session.get(
            f"{http_base}/lmstudio-greeting", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                return False
            body = await resp.read()
        data = msgspec.json.decode(body)
    except (OSError, aiohttp.ClientError, msgspec.DecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("lmstudio") is True


async def discover_host(
    session: aiohttp.ClientSession, ports: Iterable[int], timeout: float
) -> str | None:
    """Probe localhost's LM Studio ports concurrently; the first that answers wins."""
    tasks = {
        asyncio.ensure_future(probe_lmstudio(session, f"http://127.0.0.1:{port}", timeout)): port
        for port in ports
    }
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.result():
                    return f"127.0.0.1:{tasks[task]}"
        return None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- calls and channels ---------------------------------------------------------------


class RemoteError(Exception):
    """Internal: a server error not yet given its user-facing context."""

    def __init__(self, error: SerializedError) -> None:
        super().__init__(error.title)
        self.error = error


def _expire(fut: asyncio.Future[Any], waiting_for: str, wait: float, kind: str) -> None:
    # Builds the error only when a deadline really expires: off the hot path.
    if not fut.done():
        fut.set_exception(
            LMStudioTimeoutError(
                f"no {waiting_for} from LM Studio within the {kind} deadline ({wait:g} s)",
                timeout=wait,
                kind=kind,
            )
        )


class _Deadlines:
    """The deadlines of a socket's pending RPCs and channel reads, served by one timer.

    A timer per wait costs a ``TimerHandle``, a heap push and a cancel on every round
    trip (about 10 µs of CPU per call on the benchmark machine). Here a wait adds and
    removes a dict entry; the one timer is re-armed only when it fires, or when a new
    deadline is earlier than the armed one. Expired waits fail exactly as a per-wait
    timer would fail them.
    """

    __slots__ = ("_entries", "_handle", "_loop", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: dict[asyncio.Future[Any], tuple[float, str, float, str]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, fut: asyncio.Future[Any], deadline: float, waiting_for: str, wait: float, kind: str
    ) -> None:
        self._entries[fut] = (deadline, waiting_for, wait, kind)
        if self._handle is None or deadline < self._when:
            self._arm(deadline)

    def watch(
        self,
        fut: asyncio.Future[Any],
        now: float,
        idle: float | None,
        total: float | None,
        waiting_for: str,
    ) -> None:
        """Fail ``fut`` after ``idle`` seconds or the ``total`` seconds left of a whole call,
        whichever is shorter; with neither, ``fut`` has no deadline."""
        if total is not None and (idle is None or total < idle):
            total = max(total, 0.0)
            self.add(fut, now + total, waiting_for, total, "total")
        elif idle is not None:
            self.add(fut, now + idle, waiting_for, idle, "idle")

    def discard(self, fut: asyncio.Future[Any]) -> None:
        self._entries.pop(fut, None)

    def cancel(self) -> None:
        """Disarm the timer (the socket's loop is going away); entries stay untouched."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        # asyncio may run a timer up to its clock resolution early: the armed time counts.
        now = max(self._loop.time(), self._when)
        expired = [(fut, e) for fut, e in self._entries.items() if e[0] <= now]
        for fut, (_, waiting_for, wait, kind) in expired:
            del self._entries[fut]
            _expire(fut, waiting_for, wait, kind)
        if self._entries:
            self._arm(min(e[0] for e in self._entries.values()))


class ChannelStream:
    """Receiving end of one channel: packets queue here until the caller reads them."""

    __slots__ = ("_done", "_error", "_queue", "_waiter", "channel_id", "socket")

    def __init__(self, socket: NamespaceSocket) -> None:
        self.socket = socket
        self.channel_id = -1
        self._queue: collections.deque[Raw] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None

    # called by the socket as it reads (WebSocket.data_received)
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def deliver(self, message: Raw) -> None:
        self._queue.append(message)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._wake()

    @property
    def finished(self) -> bool:
        """The server ended the channel (or the connection died) and the queue is drained."""
        return self._done and not self._queue

    async def receive(self, idle: float | None, deadline: float | None) -> Raw | None:
        """Next packet, or ``None`` once the channel closed normally.

        Raises :class:`RemoteError` for a ``channelError``, the connection error
        when the socket died, and :class:`LMStudioTimeoutError` when ``idle``
        seconds pass without a packet or the loop time passes ``deadline``.
        """
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._done:
                if self._error is not None:
                    raise self._error
                return None
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            now = loop.time()
            deadlines = self.socket.deadlines(loop)
            remaining = None if deadline is None else deadline - now
            deadlines.watch(waiter, now, idle, remaining, "channel message")
            try:
                await waiter
            finally:
                self._waiter = None
                deadlines.discard(waiter)

    def send(self, message: Any) -> None:
        """Send a client packet (e.g. ``{"type": "cancel"}``) if the socket is still up."""
        self.socket.send_channel_message(self, message)

    async def settle(
        self,
        decoder: msgspec.json.Decoder[Any],
        terminal: tuple[type, ...],
        seconds: float = SETTLE_SECONDS,
    ) -> Any | None:
        """After a ``cancel``: read what is left of the channel for up to ``seconds``.

        Returns the first packet (decoded with ``decoder``) that is an instance of one of
        the ``terminal`` types — e.g. a load's success that raced the cancel — or ``None``
        once the channel ends without one, fails, or the time is up. Then the channel is
        forgotten, so nothing more is routed to it.
        """
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            while (raw := await self.receive(None, deadline)) is not None:
                try:
                    packet = decoder.decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
                if isinstance(packet, terminal):
                    return packet
            return None
        except (RemoteError, LMStudioError):
            return None
        finally:
            self.socket.forget_channel(self)


# --- sockets ---------------------------------------------------------------------------


class NamespaceSocket:
    """One namespace's WebSocket: lazily opened, authenticated, demultiplexed."""

    def __init__(self, transport: Transport, namespace: str) -> None:
        self.transport = transport
        self.namespace = namespace
        self._ws: WebSocket | None = None
        self._conn: Connection[Any] = Connection()
        self._open_lock = asyncio.Lock()
        self._keepalive: asyncio.TimerHandle | None = None
        self._guard: asyncio.Task[None] | None = None
        self._deadlines: _Deadlines | None = None
        self.warnings: collections.deque[str] = collections.deque(maxlen=20)
        self.dropped_frames = 0

    def deadlines(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        """The deadlines of this socket's pending calls and channel reads (made on first use)."""
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = _Deadlines(loop)
        return deadlines

    @property
    def is_open(self) -> bool:
        return self._ws is not None

    # --- opening -----------------------------------------------------------

    async def _ensure_open(self) -> WebSocket:
        ws = self._ws
        if ws is not None:
            return ws
        async with self._open_lock:
            if self._ws is not None:
                return self._ws
            return await self._open()

    async def _open(self) -> WebSocket:
        transport = self.transport
        transport.check_open()
        timeouts = transport.timeouts
        host = await transport.resolve_host()
        ws: WebSocket | None = None
        try:
            async with asyncio.timeout(timeouts.connect):
                ws = await self._connect(host)
                conn: Connection[Any] = Connection()
                ws.send_text(Connection.auth_frame(*transport.identity))
                try:
                    reply = await ws.recv()
                except WebSocketClosed:
                    raise LMStudioConnectionError(
                        f"LM Studio at {host} closed the /{self.namespace} socket during "
                        "authentication",
                        host=host,
                    ) from None
                try:
                    result = conn.receive_auth(reply)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    raise ProtocolError(
                        f"{host} does not look like LM Studio: unexpected reply to the "
                        "authentication packet"
                    ) from None
                if not result.success:
                    reason = transport.scrub(str(result.error or "no reason given"))
                    raise AuthenticationError(
                        f"LM Studio at {host} refused the client's credentials: {reason}",
                        host=host,
                    )
        except TimeoutError as exc:
            if ws is not None:
                ws.abort()
            if isinstance(exc, LMStudioTimeoutError):
                raise
            raise LMStudioTimeoutError(
                f"connecting to LM Studio at {host} (/{self.namespace}) took longer than "
                f"{timeouts.connect:g} s",
                timeout=timeouts.connect,
                kind="connect",
            ) from None
        except Exception:
            if ws is not None:
                ws.abort()
            transport.check_open()  # closed while connecting: say so
            raise
        except BaseException:
            if ws is not None:
                ws.abort()
            raise
        if transport.closed:  # closed while we were connecting
            ws.abort()
            transport.check_open()
        self._conn = conn
        self._ws = ws
        ws.attach(self._dispatch, lambda reason: self._teardown(ws, conn, reason))
        self._schedule_keepalive()
        self._guard = asyncio.get_running_loop().create_task(
            self._watch(ws, conn), name=f"lmstudio-socket-{self.namespace}"
        )
        return ws

    async def _watch(self, ws: WebSocket, conn: Connection[Any]) -> None:
        """Lives as long as the socket. Replies never pass through here (the socket
        routes them as it reads them); this task exists so that when the event loop
        shuts down (``asyncio.run`` cancels every task), the socket is dropped and its
        calls fail, instead of a socket outliving its loop."""
        try:
            await ws.wait_lost()
        except asyncio.CancelledError:
            self._teardown(ws, conn, None)
            ws.abort()
            raise

    async def _connect(self, host: str) -> WebSocket:
        """TCP/TLS connection and WebSocket upgrade, errors mapped to the public ones."""
        transport = self.transport
        connect_host, port = transport.address
        try:
            return await connect(
                connect_host,
                port,
                f"/{self.namespace}",
                host_header=host,
                tls=transport.tls_context(),
            )
        except HandshakeError as exc:
            if exc.status is not None and exc.status != 101:
                detail = f"was answered with HTTP {exc.status}"
            else:
                detail = f"failed: {exc}"
            raise ProtocolError(
                f"{host} does not look like LM Studio: the WebSocket upgrade of "
                f"/{self.namespace} {detail}"
            ) from None
        except OSError as exc:
            raise LMStudioConnectionError(
                f"cannot connect to LM Studio at {host}: {exc.strerror or exc}", host=host
            ) from None

    # --- receiving -----------------------------------------------------------

    def _dispatch(self, text: bool, data: bytes) -> None:
        """Route one received message (called by the WebSocket as it reads it)."""
        if not text:
            self._note_dropped(f"binary frame of {len(data)} bytes")
            return
        event = self._conn.receive(data)
        cls = type(event)
        if cls is RpcSucceeded:
            fut = event.target  # type: ignore[attr-defined]
            if not fut.done():
                fut.set_result(event.result)  # type: ignore[attr-defined]
        elif cls is ChannelMessage:
            event.target.deliver(event.message)  # type: ignore[attr-defined]
        elif cls is RpcFailed:
            fut = event.target  # type: ignore[attr-defined]
            if not fut.done():
                fut.set_exception(RemoteError(event.error))  # type: ignore[attr-defined]
        elif cls is ChannelClosed:
            event.target.finish()  # type: ignore[attr-defined]
        elif cls is ChannelFailed:
            event.target.finish(RemoteError(event.error))  # type: ignore[attr-defined]
        elif cls is Warning_:
            text_ = f"{event.kind or 'unknown'}: {event.warning}"  # type: ignore[attr-defined]
            self.warnings.append(text_)
            log.warning("LM Studio /%s warning: %s", self.namespace, text_)
        elif cls is PeerKeepAlive:
            self._send_nowait(PeerKeepAlive.reply)
        elif cls is KeepAliveAnswered:
            pass
        elif cls is Unroutable:
            log.debug("LM Studio /%s: dropped %r", self.namespace, event)
        elif cls is Malformed:
            self._note_dropped(event.detail)  # type: ignore[attr-defined]

    def _note_dropped(self, detail: str) -> None:
        self.dropped_frames += 1
        log.warning("LM Studio /%s: dropped an invalid frame: %s", self.namespace, detail)

    def _teardown(self, ws: WebSocket, conn: Connection[Any], reason: BaseException | None) -> None:
        """The socket is gone (or going): fail what is in flight on it, once."""
        ws.detach()
        if self._ws is ws:
            self._ws = None
            if self._keepalive is not None:
                self._keepalive.cancel()
                self._keepalive = None
        targets = conn.close()
        if targets:
            error = self._lost_error(reason)
            for target in targets:
                if isinstance(target, ChannelStream):
                    target.finish(error)
                elif not target.done():
                    target.set_exception(error)

    def _lost_error(self, reason: BaseException | None) -> BaseException:
        """The error that fails the calls in flight when the socket goes away."""
        transport = self.transport
        if transport.closed:
            return ClientClosedError(
                "the LM Studio client was closed while this call was in flight", host=transport.host
            )
        if isinstance(reason, LMStudioConnectionError):
            return reason
        detail = f": {reason}" if reason is not None and str(reason) else ""
        return LMStudioConnectionError(
            f"connection to LM Studio at {transport.host} (/{self.namespace}) was lost{detail}",
            host=transport.host,
        )

    def _schedule_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self.transport.timeouts.keepalive_interval, self._tick)

    def _tick(self) -> None:
        self._keepalive = None
        ws = self._ws
        if ws is None:
            return
        timeouts = self.transport.timeouts
        silent = asyncio.get_running_loop().time() - ws.last_rx
        if silent >= timeouts.keepalive_timeout:
            ws.abort(
                LMStudioConnectionError(
                    f"LM Studio at {self.transport.host} (/{self.namespace}) stopped answering "
                    f"(nothing received for {silent:.0f} s; keepalive timeout "
                    f"{timeouts.keepalive_timeout:g} s)",
                    host=self.transport.host,
                )
            )
            return
        if silent >= timeouts.keepalive_interval:
            self._send_nowait(Connection.keep_alive_frame())
        self._schedule_keepalive()

    # --- sending -----------------------------------------------------------

    def _send_nowait(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            ws.send_text(frame)
        except WebSocketClosed as exc:
            log.debug("LM Studio: could not send a frame on a closing socket: %s", exc)

    async def rpc(self, endpoint: str, parameter: Any, timeouts: Timeouts) -> Raw | None:
        """One RPC round trip. Raises :class:`RemoteError` for a server error."""
        ws = self._ws
        if ws is None:
            ws = await self._ensure_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Raw | None] = loop.create_future()
        conn = self._conn
        call_id, frame = conn.start_rpc(fut, endpoint, parameter)
        deadlines = self.deadlines(loop)
        deadlines.watch(fut, loop.time(), timeouts.idle, timeouts.total, endpoint)
        try:
            ws.send_text(frame)
            if ws.paused:
                await ws.drain()
            return await fut
        except WebSocketClosed as exc:
            if fut.done() and not fut.cancelled():
                fut.result()  # the socket's own error (lost, closed client) says more
            raise self._lost_error(exc) from None
        finally:
            deadlines.discard(fut)
            conn.forget_call(call_id)  # no-op once answered; stops routing a late reply
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved, even when the send failed first

    async def open_channel(self, endpoint: str, creation_parameter: Any = UNSET) -> ChannelStream:
        """Open a channel; read its packets with :meth:`ChannelStream.receive`."""
        ws = self._ws
        if ws is None:
            ws = await self._ensure_open()
        stream = ChannelStream(self)
        channel_id, frame = self._conn.start_channel(stream, endpoint, creation_parameter)
        stream.channel_id = channel_id
        try:
            ws.send_text(frame)
            if ws.paused:
                await ws.drain()
        except WebSocketClosed as exc:
            self._conn.forget_channel(channel_id)
            raise self._lost_error(exc) from None
        return stream

    def send_channel_message(self, stream: ChannelStream, message: Any) -> None:
        if stream.finished or self._ws is None:
            return
        self._send_nowait(Connection.channel_frame(stream.channel_id, message))

    def forget_channel(self, stream: ChannelStream) -> None:
        self._conn.forget_channel(stream.channel_id)

    async def aclose(self) -> None:
        ws = self._ws
        if ws is not None:
            # Fail what is still in flight (with ClientClosedError) before the close
            # handshake, so no call waits on it.
            self._teardown(ws, self._conn, None)
            await ws.close()
        guard, self._guard = self._guard, None
        if guard is not None:
            await asyncio.wait([guard])  # ends with the connection, which ws.close() ended
        if self._deadlines is not None:
            self._deadlines.cancel()  # every call in flight has failed by now


class Transport:
    """One :class:`NamespaceSocket` per namespace, plus the HTTP session of the host probe."""

    def __init__(self, api_host: str | None, api_token: str | None, timeouts: Timeouts) -> None:
        if api_host is None:
            api_host = os.environ.get(ENV_API_HOST) or None
        self._requested_host = api_host
        self.http_base = ""
        self.ws_base = ""
        self.host: str | None = None
        if api_host is not None:
            self.http_base, self.ws_base = parse_api_host(api_host)
            self.host = self.http_base.split("://", 1)[1]
        self.identity = credentials(api_token)
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._sockets: dict[str, NamespaceSocket] = {}
        self._resolve_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls: ssl.SSLContext | None = None
        self.closed = False

    def scrub(self, text: str) -> str:
        """Remove credentials from a text that may be shown to a person."""
        for secret in self.identity:
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to, from the resolved host (IPv6 without brackets)."""
        assert self.host is not None
        name, _, port = self.host.rpartition(":")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        return name, int(port)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS settings for ``wss://`` hosts (system trust store, hostname checked)."""
        if not self.ws_base.startswith("wss://"):
            return None
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session of the host probe (made on first use)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError("the LM Studio client is closed", host=self.host)

    async def resolve_host(self) -> str:
        if self.host is not None:
            return self.host
        if self._resolve_lock is None:
            self._resolve_lock = asyncio.Lock()
        async with self._resolve_lock:
            if self.host is None:
                found = await discover_host(
                    self.session, DEFAULT_PORTS, min(self.timeouts.connect, 2.0)
                )
                if found is None:
                    ports = ", ".join(map(str, DEFAULT_PORTS))
                    raise LMStudioConnectionError(
                        "LM Studio is not running on this machine "
                        f"(probed 127.0.0.1 ports {ports}); "
                        f"start it, or pass api_host= or set {ENV_API_HOST}",
                        host=None,
                    )
                self.http_base, self.ws_base = f"http://{found}", f"ws://{found}"
                self.host = found
            return self.host

    def socket(self, namespace: str) -> NamespaceSocket:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        sock = self._sockets.get(namespace)
        if sock is None:
            self.check_open()
            sock = self._sockets[namespace] = NamespaceSocket(self, namespace)
        return sock

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            raise LMStudioError(
                "this AsyncClient belongs to the event loop it was first used in; "
                "create one client per event loop (e.g. per asyncio.run), or use the sync Client"
            )
        self._loop = loop

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        sockets = [s for s in self._sockets.values() if s.is_open]
        if len(sockets) == 1:
            await sockets[0].aclose()  # the common case, without gather's extra tasks
        elif sockets:
            await asyncio.gather(*(s.aclose() for s in sockets), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

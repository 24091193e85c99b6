"""Transport: host discovery, one lazy authenticated WebSocket per namespace.

Every socket is an :meth:`aiohttp.ClientSession.ws_connect` WebSocket, read by one
reader task that feeds each message to the sans-I/O
:class:`~lmstudio_async._protocol.connection.Connection` and hands the resulting
events to the waiting calls. Sockets open on first use; when one dies (peer gone,
keepalive expired, server restarted, a frame the client refuses) every call in flight
on it fails with :class:`~lmstudio_async.errors.LMStudioConnectionError` and the next
call opens a fresh socket.

aiohttp does the WebSocket framing, with two protections on that matter here:

* :data:`MAX_MESSAGE_BYTES` (16 MiB) bounds what one message may make the client buffer. A
  frame whose length header is over the limit is refused before any of its payload is
  read; fragments are refused as soon as their sum passes it.
* Text messages must be valid UTF-8 (aiohttp decodes them; the socket is closed with
  1007 otherwise).

Either violation closes the socket (1009 / 1007) and fails the calls in flight on it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import re
import secrets
import select
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal, TypeAlias, TypeVar

import aiohttp
import msgspec
from msgspec import UNSET, Raw

from .._protocol.connection import (
    PROBED_ENDPOINTS,
    ChannelClosed,
    ChannelFailed,
    ChannelMessage,
    Connection,
    EndpointUnsupported,
    KeepAliveAnswered,
    Malformed,
    PeerKeepAlive,
    RpcFailed,
    RpcSucceeded,
    Unroutable,
    Warning_,
    unsupported_error,
)
from .._protocol.errors import SerializedError
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

__all__ = [
    "DEFAULT_PORTS",
    "MAX_MESSAGE_BYTES",
    "ChannelStream",
    "NamespaceSocket",
    "RemoteError",
    "SSLOption",
    "Transport",
    "bounded",
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
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9._~%!$&'()*+,;=-]+$")
"""A host name or IPv4 address: the characters RFC 3986 allows in a reg-name."""
SETTLE_SECONDS: Final = 30.0
"""How long a channel is still read after its ``cancel`` (see :meth:`ChannelStream.settle`)."""

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
"""Largest WebSocket message the client accepts from the server (16 MiB).

aiohttp refuses a longer message with close code 1009 and the calls in flight on the
socket fail. The limit only bounds what the server sends; requests (e.g. images in a
chat) are not limited by it. The largest legitimate server messages are far smaller:
an embedding is one vector per RPC, a ``tokenize`` reply for a million-token context is
about 7 MB of JSON, and model listings are kilobytes per model. The limit is also what a
broken or hostile server can make the client hold: a message sent as fragments is
buffered up to the limit before it is refused, and growing that buffer can briefly take
about twice its size (about 30 MB of RSS at most for 16 MiB)."""

CLOSE_TIMEOUT: Final = 2.0
"""How long a close handshake waits for the server's answer before dropping the socket."""


SSLOption: TypeAlias = "ssl.SSLContext | bool | None"
"""``ssl=`` of the clients: ``None``/``True`` verify ``wss://`` hosts against the system
trust store, ``False`` skips verification, an :class:`ssl.SSLContext` is used as given."""

# A TLS socket closes with a TLS shutdown after our close handshake; if the peer goes
# away during it, the socket can stay open until the garbage collector finds it (seen on
# Python 3.11 in tests/sync/test_sync_tls.py). aiohttp's ``enable_cleanup_closed`` aborts
# such sockets when the session closes (and every 2 s before). aiohttp asks for it on
# Pythons before 3.12.8 and on 3.13.0 (python/cpython#118950) and refuses it elsewhere
# with a DeprecationWarning, so it follows aiohttp's own version test.
_TLS_CLEANUP: Final = sys.version_info < (3, 12, 8) or sys.version_info[:3] == (3, 13, 0)
_TEXT: Final = aiohttp.WSMsgType.TEXT
_BINARY: Final = aiohttp.WSMsgType.BINARY
_ERROR: Final = aiohttp.WSMsgType.ERROR
_CLOSE: Final = aiohttp.WSMsgType.CLOSE
_WS_TIMEOUT: Final = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT)

#: How soon the keepalive looks again when a silent socket turns out to hold unread input.
_RECHECK_SECONDS: Final = 0.05
#: A keepalive timer this late means the event loop could not run (busy, or paused).
_LATE_SECONDS: Final = 0.5
# The longest a first request to a PROBED_ENDPOINT waits for another's first answer.
_PROBE_WAIT_SECONDS: Final = 1.0
_WebSocket: TypeAlias = "aiohttp.ClientWebSocketResponse[Literal[True]]"


# --- configuration helpers ------------------------------------------------------


def parse_api_host(api_host: str) -> tuple[str, str]:
    """Split ``host:port``, ``http://host:port`` or ``ws://host:port`` into (http base, ws base).

    ``https``/``wss`` select TLS; IPv6 addresses go in brackets (``[::1]:1234``).
    Raises :class:`LMStudioValueError` naming the value and what is wrong with it.
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
        raise LMStudioValueError(
            f"api_host {api_host!r} has unsupported scheme {scheme!r} (use http, https, ws or wss)"
        )
    if "@" in netloc:
        # Never echo it: the part before '@' may be a password.
        shown = api_host.replace(netloc.rpartition("@")[0], "***")
        raise LMStudioValueError(
            f"api_host {shown!r} holds credentials ('user:password@'); LM Studio does not "
            "use them: pass api_token= instead"
        )
    host, colon, port = netloc.rpartition(":")
    if host.startswith("["):
        ipv6 = host.endswith("]") and len(host) > 2
        if not ipv6 or not all(c in "0123456789abcdefABCDEF:." for c in host[1:-1]):
            raise LMStudioValueError(
                f"api_host {api_host!r}: {host!r} is not a bracketed IPv6 address"
            )
    elif not colon or not host:
        what = "has no host name" if colon else "needs an explicit port"
        raise LMStudioValueError(f"api_host {api_host!r} {what}, e.g. 'localhost:1234'")
    elif ":" in host:
        raise LMStudioValueError(
            f"api_host {api_host!r} has more than one ':' (one port only; an IPv6 address "
            "goes in brackets, e.g. '[::1]:1234')"
        )
    elif not _NAME_RE.match(host):
        raise LMStudioValueError(f"api_host {api_host!r}: {host!r} is not a valid host name")
    if not port.isascii() or not port.isdigit():
        raise LMStudioValueError(
            f"api_host {api_host!r}: the port {port!r} is not a number, e.g. 'localhost:1234'"
        )
    if not 0 < int(port) < 65536:
        raise LMStudioValueError(
            f"api_host {api_host!r}: the port {int(port)} is out of range (1-65535)"
        )
    netloc = f"{host}:{int(port)}"
    return f"{http}://{netloc}", f"{ws}://{netloc}"


def credentials(api_token: str | None) -> tuple[str, str]:
    """(clientIdentifier, clientPasskey) from an API token, or a random guest identity."""
    if api_token is None:
        api_token = os.environ.get(ENV_API_TOKEN, "")
    if not isinstance(api_token, str):
        # The type only, never the value: a bytes token is as secret as a str one.
        raise LMStudioValueError(
            f"api_token must be a str or None, got {type(api_token).__name__}"
        )
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
    except (OSError, aiohttp.ClientError, msgspec.DecodeError, ValueError, ProtocolError):
        return False  # ProtocolError: a redirect (see _refuse_redirect)
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


#: What the close codes a server may end a socket with mean (RFC 6455 §7.4.1), for errors.
_CLOSE_MEANINGS: Final = {
    1001: "going away",
    1003: "it cannot accept this kind of data",
    1007: "invalid text",
    1008: "policy violation",
    1009: "a message was too big for it",
    1011: "internal error",
}


def _expire(fut: asyncio.Future[Any], waiting_for: str, wait: float, kind: str) -> None:
    # Builds the error only when a deadline really expires: off the hot path.
    if not fut.done():
        if kind == "total":  # LM Studio may have been answering all along (e.g. fragments)
            text = f"{waiting_for} did not finish within the total deadline ({wait:g} s)"
        else:
            text = f"{waiting_for}: nothing from LM Studio within the idle deadline ({wait:g} s)"
        fut.set_exception(LMStudioTimeoutError(text, timeout=wait, kind=kind))


_T = TypeVar("_T")


async def bounded(
    work: Awaitable[_T], deadline: float, error: Callable[[], LMStudioTimeoutError]
) -> _T:
    """``work``, cancelled once the loop time passes ``deadline``; then ``error()`` is
    raised (a timeout error of ``work``'s own passes through as it is)."""
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            return await work
    except TimeoutError as exc:
        if isinstance(exc, LMStudioTimeoutError) or not scope.expired():
            raise
        raise error() from None


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
        configured_total: float | None = None,
    ) -> None:
        """Fail ``fut`` after ``idle`` seconds or the ``total`` seconds left of a whole call,
        whichever is shorter; with neither, ``fut`` has no deadline. The error names
        ``configured_total`` (the whole call's deadline) when given, else ``total``."""
        if total is not None and (idle is None or total < idle):
            total = max(total, 0.0)
            shown = total if configured_total is None else configured_total
            self.add(fut, now + total, waiting_for, shown, "total")
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


_PacketT = TypeVar("_PacketT")


class ChannelStream:
    """Receiving end of one channel: packets queue here until the caller reads them."""

    __slots__ = ("_done", "_error", "_queue", "_waiter", "channel_id", "conn", "probe", "socket")

    def __init__(self, socket: NamespaceSocket, conn: Connection[Any]) -> None:
        self.socket = socket
        # The connection it is registered on: ids start again at 0 on the next one.
        self.conn = conn
        self.channel_id = -1
        self._queue: collections.deque[Raw] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        # (endpoint, turn) while this channel is its connection's probe of the endpoint:
        # the first thing the server says about it ends the probe (see PROBED_ENDPOINTS).
        self.probe: tuple[str, asyncio.Future[None]] | None = None

    # called by the socket's reader task
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def deliver(self, message: Raw) -> None:
        self._queue.append(message)
        if self.probe is not None:
            self._answered(True)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        if self.probe is not None:
            self._answered(error is None or isinstance(error, RemoteError))
        self._wake()

    def _answered(self, known: bool) -> None:
        assert self.probe is not None
        endpoint, turn = self.probe
        self.probe = None
        self.socket._end_turn(endpoint, turn, known)

    @property
    def finished(self) -> bool:
        """The server ended the channel (or the connection died) and the queue is drained."""
        return self._done and not self._queue

    async def receive(
        self,
        idle: float | None,
        deadline: float | None,
        total: float | None = None,
        what: str = "channel",
    ) -> Raw | None:
        """Next packet, or ``None`` once the channel closed normally.

        Raises :class:`RemoteError` for a ``channelError``, the connection error
        when the socket died, and :class:`LMStudioTimeoutError` when ``idle``
        seconds pass without a packet or the loop time passes ``deadline``. ``total``
        is the whole call's configured deadline, which that error reports; ``what``
        names the call there.
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
            deadlines.watch(waiter, now, idle, remaining, what, total)
            try:
                await waiter
            finally:
                self._waiter = None
                deadlines.discard(waiter)

    async def next_packet(
        self,
        decoder: msgspec.json.Decoder[_PacketT],
        idle: float | None,
        deadline: float | None,
        total: float | None,
        what: str,
    ) -> _PacketT:
        """Next packet decoded with ``decoder``, for a call that ends on a result packet.

        A packet that does not decode is logged and skipped (a newer server may send kinds
        this client does not know). Raises :class:`ProtocolError` if the channel closes
        before the caller saw its result, and whatever :meth:`receive` raises. ``what``
        names the call in those messages, e.g. ``"Download of 'x'"``.
        """
        while True:
            raw = await self.receive(idle, deadline, total, what)
            if raw is None:
                raise ProtocolError(f"{what}: LM Studio closed the channel without a result")
            try:
                return decoder.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.warning("%s: ignored an unexpected packet: %s", what, exc)

    def send(self, message: Any) -> None:
        """Send a client packet (e.g. ``{"type": "cancel"}``) if the socket is still up."""
        self.socket.send_channel_message(self, message)

    def release(self) -> None:
        """The caller has its result packet and reads no further: stop routing this channel
        now (the server's ``channelClose`` that follows is dropped). Until then the socket
        counts it as in flight, which skips the check for a close waiting unread (see
        ``NamespaceSocket._stale``) for the next call."""
        self._done = True
        self._queue.clear()
        self.socket.forget_channel(self)

    async def settle(
        self,
        decoder: msgspec.json.Decoder[Any],
        terminal: tuple[type, ...],
        seconds: float = SETTLE_SECONDS,
        idle: float | None = None,
        skipped: Callable[[Any], object] | None = None,
    ) -> Any | None:
        """After a ``cancel``: read what is left of the channel for up to ``seconds``, and
        at most ``idle`` seconds between packets (a server that stopped answering).

        Returns the first packet (decoded with ``decoder``) that is an instance of one of
        the ``terminal`` types — e.g. a load's success that raced the cancel — or ``None``
        once the channel ends without one, fails, or the time is up. Then the channel is
        forgotten, so nothing more is routed to it. ``skipped`` is given each other packet
        decoded on the way.
        """
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            while (raw := await self.receive(idle, deadline)) is not None:
                try:
                    packet = decoder.decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
                if isinstance(packet, terminal):
                    return packet
                if skipped is not None:
                    skipped(packet)
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
        self._ws: _WebSocket | None = None
        self._conn: Connection[Any] = Connection()
        self._reader: asyncio.Task[None] | None = None
        self._open_lock = asyncio.Lock()
        self._keepalive: asyncio.TimerHandle | None = None
        self._death: BaseException | None = None
        self._deadlines: _Deadlines | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._catching_up: asyncio.Future[None] | None = None
        self._poller: select.poll | None = None
        self._ping_sent: float | None = None  # loop time of the keepAlive not answered yet
        self._tick_at = 0.0  # loop time the keepalive timer is armed for
        self.last_rx = 0.0
        self.warnings: collections.deque[str] = collections.deque(maxlen=20)
        self.dropped_frames = 0
        self._turns: dict[str, asyncio.Future[None]] = {}  # see _take_turn

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

    def _stale(self) -> bool:
        """No call is in flight on the socket, yet the kernel holds input not read yet.

        That input may be the server's close (e.g. a restart while this event loop was
        busy): a call sent now would fail with it. :meth:`_usable` lets the reader read
        it first. One ``poll`` system call, made only when the socket is idle."""
        conn, poller = self._conn, self._poller
        return (
            poller is not None
            and not conn.pending_calls
            and not conn.open_channels
            and bool(poller.poll(0))
        )

    async def _usable(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float | None = None,
        total: float | None = None,
        connect: float | None = None,
    ) -> _WebSocket:
        """The open socket, opened first if need be; a :meth:`_stale` one is caught up
        with first (one event-loop step), so a socket the server has closed is replaced
        instead of failing the call. A call's ``deadline`` (loop time; ``total`` is the
        call's configured total deadline, for the error) also bounds the opening, and its
        ``connect`` deadline (None: the client's) bounds its wait for the socket."""
        ws = self._ws
        if ws is not None and self._stale():
            await self._catch_up(loop)
            ws = self._ws
        if ws is None:
            if deadline is None:
                ws = await self._ensure_open(connect)
            else:
                ws = await self._open_by(loop, deadline, total, connect)
        return ws

    async def _open_by(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        total: float | None,
        connect: float | None,
    ) -> _WebSocket:
        def expired() -> LMStudioTimeoutError:
            shown = total if total is not None else max(deadline - loop.time(), 0.0)
            return LMStudioTimeoutError(
                f"could not connect to LM Studio (/{self.namespace}) within the total "
                f"deadline ({shown:g} s)",
                timeout=shown,
                kind="total",
            )

        return await bounded(self._ensure_open(connect), deadline, expired)

    async def _catch_up(self, loop: asyncio.AbstractEventLoop) -> None:
        # A timer due now runs after the I/O callbacks of the next loop iteration (the
        # reader is woken by those), and our task resumes after the reader's step.
        waiter = self._catching_up
        if waiter is None:
            waiter = self._catching_up = loop.create_future()
            loop.call_at(loop.time(), self._caught_up, waiter)
        await asyncio.shield(waiter)

    def _caught_up(self, waiter: asyncio.Future[None]) -> None:
        self._catching_up = None
        if not waiter.done():
            waiter.set_result(None)

    async def _ensure_open(self, connect: float | None = None) -> _WebSocket:
        """The open socket, opened if need be within ``connect`` seconds (None: the
        client's connect deadline), including any wait for another call opening it."""
        ws = self._ws
        if ws is not None:
            return ws
        if connect is None:
            connect = self.transport.timeouts.connect
        limit = asyncio.get_running_loop().time() + connect
        # Another call may be opening it: wait for its outcome, within this call's connect.
        await bounded(
            self._open_lock.acquire(),
            limit,
            lambda: LMStudioTimeoutError(
                f"connecting to LM Studio (/{self.namespace}) took longer than {connect:g} s",
                timeout=connect,
                kind="connect",
            ),
        )
        try:
            if self._ws is not None:
                return self._ws
            return await self._open(connect, limit)
        finally:
            self._open_lock.release()

    async def _open(self, connect: float, limit: float) -> _WebSocket:
        """Connect and authenticate by the loop time ``limit`` (``connect`` seconds after
        the call began waiting for the socket)."""
        transport = self.transport
        transport.check_open()
        host = await transport.resolve_host()
        ws: _WebSocket | None = None
        try:
            async with asyncio.timeout_at(limit):
                ws = await self._connect(host)
                conn: Connection[Any] = Connection()
                await ws.send_frame(Connection.auth_frame(*transport.identity), _TEXT)
                msg = await ws.receive()
                if msg.type is not _TEXT and msg.type is not _BINARY:
                    detail = f": {msg.data}" if msg.type is _ERROR else ""
                    raise LMStudioConnectionError(
                        f"LM Studio at {host} closed the /{self.namespace} socket during "
                        f"authentication{detail}",
                        host=host,
                    )
                try:
                    result = conn.receive_auth(msg.data)
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
                await _close_quietly(ws)
            if isinstance(exc, LMStudioTimeoutError):
                raise
            raise LMStudioTimeoutError(
                f"connecting to LM Studio at {host} (/{self.namespace}) took longer than "
                f"{connect:g} s",
                timeout=connect,
                kind="connect",
            ) from None
        except Exception:
            if ws is not None:
                await _close_quietly(ws)
            transport.check_open()  # closed while connecting: say so
            raise
        except BaseException:
            if ws is not None:
                await _close_quietly(ws)
            raise
        if transport.closed:  # closed while we were connecting
            await _close_quietly(ws)
            transport.check_open()
        loop = asyncio.get_running_loop()
        self._conn = conn
        self._ws = ws
        self._poller = _poller(ws)
        self._death = None
        self._ping_sent = None
        self.last_rx = loop.time()
        self._reader = loop.create_task(
            self._read(ws, conn), name=f"lmstudio-reader-{self.namespace}"
        )
        self._schedule_keepalive()
        return ws

    async def _connect(self, host: str) -> _WebSocket:
        """TCP/TLS connection and WebSocket upgrade, errors mapped to the public ones."""
        transport = self.transport
        url = f"{transport.ws_base}/{self.namespace}"
        try:
            return await transport.session.ws_connect(
                url,
                autoping=True,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=_WS_TIMEOUT,
                ssl=transport.ssl,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 101:
                detail = f"was answered with HTTP {exc.status}"
            else:
                detail = f"failed: {exc.message}"
            raise ProtocolError(
                f"{host} does not look like LM Studio: the WebSocket upgrade of "
                f"/{self.namespace} {detail}"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise LMStudioConnectionError(
                f"cannot connect to LM Studio at {host}: its TLS certificate was not "
                f"accepted ({exc.certificate_error}); pass ssl= a context that trusts it",
                host=host,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise LMStudioConnectionError(
                f"cannot connect to LM Studio at {host}: {exc.os_error.strerror or exc}",
                host=host,
            ) from None
        except aiohttp.ClientResponseError as exc:  # not HTTP at all
            raise ProtocolError(
                f"{host} does not look like LM Studio: the WebSocket upgrade of "
                f"/{self.namespace} got an invalid HTTP answer ({exc.message})"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LMStudioConnectionError(
                f"cannot connect to LM Studio at {host}: {exc}", host=host
            ) from None

    # --- receiving -----------------------------------------------------------

    async def _read(self, ws: _WebSocket, conn: Connection[Any]) -> None:
        """The socket's one reader: routes every message until the socket ends."""
        loop = asyncio.get_running_loop()
        reason: BaseException | None = None
        close_code: int | None = None
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is _TEXT:
                    self.last_rx = loop.time()
                    self._dispatch(True, msg.data)
                elif kind is _BINARY:
                    self.last_rx = loop.time()
                    self._dispatch(False, msg.data)
                else:
                    reason = self._end_reason(msg)
                    break
        except asyncio.CancelledError:
            reason = self._death
            if reason is None:
                # The event loop is shutting down (asyncio.run cancels every task):
                # drop the socket now rather than let it outlive its loop.
                self._teardown(ws, conn, None)
                await _close_quietly(ws)
                await self.transport.release_idle_session()
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # our own cancel (keepalive): handled here
        except Exception as exc:  # a bug in dispatching: end the socket, don't hang
            log.exception("LM Studio: dispatching a message failed")
            reason, close_code = exc, aiohttp.WSCloseCode.INTERNAL_ERROR
        self._teardown(ws, conn, reason)
        if not ws.closed:
            await _close_quietly(ws, close_code or aiohttp.WSCloseCode.OK)

    def _end_reason(self, msg: Any) -> BaseException | None:
        """Why the socket ended, from aiohttp's last message (None: closed by us)."""
        kind = msg.type
        where = f"LM Studio at {self.transport.host} (/{self.namespace})"
        if kind is _CLOSE:
            reason = msg.extra or _CLOSE_MEANINGS.get(msg.data)  # the server's, else the RFC's
            detail = f"code {msg.data}{': ' + reason if reason else ''}"
            return LMStudioConnectionError(
                f"connection to {where} was lost: the server closed the WebSocket ({detail})",
                host=self.transport.host,
            )
        if kind is _ERROR:
            error = msg.data
            code = getattr(error, "code", None)
            closed = f"; the client closed the socket with code {code}" if code else ""
            return LMStudioConnectionError(
                f"{where} sent an invalid WebSocket message ({error}){closed}",
                host=self.transport.host,
            )
        if kind is aiohttp.WSMsgType.CLOSING:
            return None  # aclose is closing it
        return LMStudioConnectionError(
            f"connection to {where} was lost: the server closed the connection",
            host=self.transport.host,
        )

    def _dispatch(self, text: bool, data: Any) -> None:
        """Route one received message."""
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
            kind = event.kind  # type: ignore[attr-defined]
            text_ = f"{kind or 'unknown'}: {event.warning}"  # type: ignore[attr-defined]
            self.warnings.append(text_)
            # channelUnknown answers a packet we sent on a channel the server had just
            # closed (a cancel racing the end of a prediction or load): expected, harmless.
            level = logging.DEBUG if kind == "channelUnknown" else logging.WARNING
            log.log(level, "LM Studio /%s warning: %s", self.namespace, text_)
        elif cls is EndpointUnsupported:
            # An LM Studio too old for the call: fail what waits for that endpoint now
            # (each with an error of its own) rather than at its deadline.
            endpoint, warning = event.endpoint, event.warning  # type: ignore[attr-defined]
            log.info("LM Studio /%s: %s", self.namespace, warning)
            for target in event.targets:  # type: ignore[attr-defined]
                error = unsupported_error(endpoint, warning)
                if isinstance(target, ChannelStream):
                    target.finish(error)
                elif not target.done():
                    target.set_exception(error)
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

    def _teardown(
        self, ws: _WebSocket, conn: Connection[Any], reason: BaseException | None
    ) -> None:
        """The socket is gone (or going): fail what is in flight on it, once."""
        _abort_if_stuck(ws)
        if self._ws is ws:
            self._ws = None
            self._poller = None
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
        self._arm(loop, loop.time() + self.transport.timeouts.keepalive_interval)

    def _tick(self) -> None:
        """The keepalive timer: ``keepalive_interval`` after the last message, send a
        ``keepAlive``; if nothing at all arrives for ``keepalive_timeout`` - interval
        after it, the peer is dead. The timer is armed for the next of those moments."""
        self._keepalive = None
        ws, reader = self._ws, self._reader
        if ws is None or reader is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = now - self._tick_at > _LATE_SECONDS  # this loop was busy, or the process paused
        timeouts = self.transport.timeouts
        grace = timeouts.keepalive_timeout - timeouts.keepalive_interval
        sent = self._ping_sent
        if sent is not None and self.last_rx >= sent:
            sent = self._ping_sent = None  # answered, or other messages came since
        if sent is None:
            due = self.last_rx + timeouts.keepalive_interval
            if now < due:
                self._arm(loop, due)
                return
            self._send_nowait(Connection.keep_alive_frame())
            self._ping_sent = now
            self._arm(loop, now + grace)
            return
        if now < sent + grace:
            self._arm(loop, sent + grace)
            return
        poller = self._poller
        if late and poller is not None and poller.poll(0):
            # Input the reader has not seen yet came while we could not run: the peer may
            # well have answered. Look again once the reader has had its turn.
            self._arm(loop, now + _RECHECK_SECONDS)
            return
        silent = now - self.last_rx
        self._death = LMStudioConnectionError(
            f"LM Studio at {self.transport.host} (/{self.namespace}) stopped answering "
            f"(no message received for {silent:.0f} s; keepalive timeout "
            f"{timeouts.keepalive_timeout:g} s)",
            host=self.transport.host,
        )
        reader.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._tick_at = when
        self._keepalive = loop.call_at(when, self._tick)

    # --- sending -----------------------------------------------------------

    def _send_nowait(self, frame: bytes) -> None:
        """Send from synchronous code (timers, dispatch): in a task, tracked until done."""
        ws = self._ws
        if ws is None:
            return
        task = asyncio.get_running_loop().create_task(_send_quietly(ws, frame))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def rpc(
        self, endpoint: str, parameter: Any, timeouts: Timeouts, deadline: float | None = None
    ) -> Raw | None:
        """One RPC round trip. Raises :class:`RemoteError` for a server error.

        ``deadline`` (loop time) ends the total wait instead of ``timeouts.total`` from now,
        for a call that is one step of a longer operation; the error still reports
        ``timeouts.total``."""
        loop = asyncio.get_running_loop()
        turn = None
        if endpoint in PROBED_ENDPOINTS and endpoint not in self._conn.confirmed:
            turn = await self._take_turn(endpoint, loop)
        fut: asyncio.Future[Raw | None] = loop.create_future()
        try:
            ws = self._ws
            if ws is None or self._stale():
                total = timeouts.total
                if deadline is None and total is not None:
                    deadline = loop.time() + total
                ws = await self._usable(loop, deadline, total, timeouts.connect)
            conn = self._conn
            call_id, frame = conn.start_rpc(fut, endpoint, parameter)
        except BaseException:
            if turn is not None:  # nothing was sent: the next caller probes
                self._end_turn(endpoint, turn, False)
            raise
        deadlines = self.deadlines(loop)
        if deadline is None:
            deadlines.watch(fut, loop.time(), timeouts.idle, timeouts.total, endpoint)
        else:
            now = loop.time()
            deadlines.watch(fut, now, timeouts.idle, deadline - now, endpoint, timeouts.total)
        try:
            await _send(ws, frame, fut, None)
            return await fut
        except ConnectionError as exc:  # the socket is closing: sending failed
            if fut.done() and not fut.cancelled():
                fut.result()  # the socket's own error (lost, closed client) says more
            raise self._lost_error(exc) from None
        finally:
            deadlines.discard(fut)
            conn.forget_call(call_id)  # no-op once answered; stops routing a late reply
            if fut.done() and not fut.cancelled():
                error = fut.exception()  # retrieved, even when the send failed first
                if turn is not None:
                    self._end_turn(endpoint, turn, error is None or type(error) is RemoteError)
            elif turn is not None:
                self._end_turn(endpoint, turn, False)

    async def _take_turn(
        self, endpoint: str, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[None] | None:
        """Before a request to one of :data:`PROBED_ENDPOINTS` that this connection has not
        seen answered: wait while another such request (the probe) waits for its first
        answer, at most ``_PROBE_WAIT_SECONDS`` (a slow first answer means the server knows
        the endpoint: a refusal comes at once). Returns the turn future when this request
        is to be the probe (end it with :meth:`_end_turn`), else None."""
        while True:
            conn = self._conn
            if endpoint in conn.confirmed or endpoint in conn.unsupported:
                return None
            running = self._turns.get(endpoint)
            if running is None:
                turn: asyncio.Future[None] = loop.create_future()
                self._turns[endpoint] = turn
                return turn
            await asyncio.wait({running}, timeout=_PROBE_WAIT_SECONDS)
            if not running.done():
                return None

    def _end_turn(self, endpoint: str, turn: asyncio.Future[None], known: bool) -> None:
        """The probe of ``endpoint`` is over: answered (``known``), refused, or failed
        (timed out, cancelled, connection lost: the next caller probes)."""
        if known:
            self._conn.confirmed.add(endpoint)
        if self._turns.get(endpoint) is turn:
            del self._turns[endpoint]
        if not turn.done():
            turn.set_result(None)

    async def open_channel(
        self,
        endpoint: str,
        creation_parameter: Any = UNSET,
        deadline: float | None = None,
        total: float | None = None,
        connect: float | None = None,
    ) -> ChannelStream:
        """Open a channel; read its packets with :meth:`ChannelStream.receive`. The call's
        ``deadline`` (loop time, for its configured ``total``) bounds the connecting, and so
        does its ``connect`` deadline (None: the client's)."""
        loop = asyncio.get_running_loop()
        turn = None
        if endpoint in PROBED_ENDPOINTS and endpoint not in self._conn.confirmed:
            turn = await self._take_turn(endpoint, loop)
        try:
            ws = await self._usable(loop, deadline, total, connect)
            conn = self._conn
            stream = ChannelStream(self, conn)
            channel_id, frame = conn.start_channel(stream, endpoint, creation_parameter)
        except BaseException:
            if turn is not None:  # nothing was sent: the next caller probes
                self._end_turn(endpoint, turn, False)
            raise
        stream.channel_id = channel_id
        if turn is not None:
            stream.probe = (endpoint, turn)
        try:
            if not await _send(ws, frame, None, deadline):
                raise LMStudioTimeoutError(
                    f"opening a {endpoint} channel: LM Studio did not take the request within "
                    f"the total deadline ({total if total is not None else 0:g} s)",
                    timeout=total,
                    kind="total",
                )
        except ConnectionError as exc:
            self.forget_channel(stream)
            raise self._lost_error(exc) from None
        except BaseException:
            # Cancelled while aiohttp waited for its send buffer to drain (a large request):
            # the frame is already queued, so LM Studio opens the channel. Stop it there;
            # what it sends until it closes the channel is dropped.
            stream.send({"type": "cancel"})
            self.forget_channel(stream)
            raise
        return stream

    def send_channel_message(self, stream: ChannelStream, message: Any) -> None:
        # Not once the server ended the channel, even with packets still unread: it would
        # only answer with a channelUnknown warning (LM Studio sends at most five per
        # connection, and later ones tell of missing endpoints; see PROBED_ENDPOINTS).
        if stream._done or self._ws is None:
            return
        self._send_nowait(Connection.channel_frame(stream.channel_id, message))

    def forget_channel(self, stream: ChannelStream) -> None:
        stream.conn.forget_channel(stream.channel_id)
        if stream.probe is not None:  # given up before the server said anything
            stream._answered(False)

    async def aclose(self) -> None:
        ws, reader = self._ws, self._reader
        if ws is not None:
            # Fail what is still in flight (with ClientClosedError) before the close
            # handshake, so no call waits on it. Closing wakes the reader, which ends.
            self._teardown(ws, self._conn, None)
            await _close_quietly(ws)
        self._reader = None
        if reader is not None and not reader.done():
            await asyncio.wait([reader])
        sends = [task for task in self._sends if not task.done()]
        for task in sends:
            task.cancel()
        if sends:
            await asyncio.wait(sends)
        if self._deadlines is not None:
            self._deadlines.cancel()  # every call in flight has failed by now


async def _refuse_redirect(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
) -> None:
    """LM Studio never redirects; following one would send the API token elsewhere."""
    target = params.response.headers.get("Location", "?")
    raise ProtocolError(
        f"{params.url.host}:{params.url.port} answered with a redirect "
        f"({params.response.status} to {target}); LM Studio does not redirect, so the client "
        "does not follow it"
    )


def _abort_if_stuck(ws: _WebSocket) -> None:
    """Drop the connection at once if data waits in its send buffer (the server stopped
    reading): a graceful close would wait for that buffer to drain for ever, and with it
    every send waiting for room, instead of failing them."""
    writer = getattr(ws, "_writer", None)
    protocol = getattr(writer, "protocol", None)
    transport = getattr(writer, "transport", None)
    if transport is not None and getattr(protocol, "writing_paused", False):
        transport.abort()


def _poller(ws: _WebSocket) -> select.poll | None:
    """A ``poll`` object watching the socket under ``ws`` for input (None where the
    platform or the event loop's transport offers no such socket, e.g. on Windows)."""
    if not hasattr(select, "poll"):
        return None
    connection = ws.get_extra_info("socket")
    fileno = getattr(connection, "fileno", None)
    if fileno is None:
        return None
    poller = select.poll()
    poller.register(fileno(), select.POLLIN)
    return poller


async def _close_quietly(ws: _WebSocket, code: int = aiohttp.WSCloseCode.OK) -> None:
    """Close handshake, bounded by :data:`CLOSE_TIMEOUT` (aiohttp then drops the socket)."""
    try:
        await ws.close(code=code)
    except Exception as exc:  # aiohttp reports most failures itself; never raise here
        log.debug("LM Studio: closing a socket failed: %r", exc)


async def _send(
    ws: _WebSocket, frame: bytes, until: asyncio.Future[Any] | None, deadline: float | None
) -> bool:
    """Send ``frame``; ``False`` if ``until`` ended (a call's deadline, its socket lost) or
    the loop time passed ``deadline`` while the send still waited for room.

    aiohttp writes the whole frame to the transport at once, then, while the send buffer is
    full (the server is not reading), waits for it to drain. That wait is one future shared
    by every send on the socket: awaiting it from the call's task, a cancelled call would
    cancel it for all the others. So the send is stepped here: usually it finishes in its
    first step, and only when it has to wait, it waits (with ``asyncio.wait``, which never
    cancels what it waits for) for the buffer, ``until`` or ``deadline``, whichever first.
    """
    step = ws.send_frame(frame, _TEXT).__await__()
    try:
        waiting = step.send(None)
    except StopIteration:
        return True  # written at once: the usual case
    loop = asyncio.get_running_loop()
    try:
        while True:
            if isinstance(waiting, asyncio.Future):
                # What a task does with a future its coroutine yields (the future protocol):
                # until reset, the next await of this shared future by any send would fail.
                waiting._asyncio_future_blocking = False
                watched: set[asyncio.Future[Any]] = {waiting}
                if until is not None:
                    watched.add(until)
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    await asyncio.wait(
                        watched, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    if not waiting.done():  # given up (or cancelled): nobody awaits it now
                        waiting.add_done_callback(_retrieved)
                if not waiting.done():
                    return False  # the frame stays queued; the socket's end drops it
            else:
                await asyncio.sleep(0)
            try:
                waiting = step.send(None)
            except StopIteration:
                return True
    finally:
        step.close()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # so that it is not logged as "never retrieved"


async def _send_quietly(ws: _WebSocket, frame: bytes) -> None:
    try:
        await _send(ws, frame, None, None)  # stepped: its cancellation cancels no other send
    except ConnectionError as exc:
        log.debug("LM Studio: could not send a frame on a closing socket: %s", exc)


class Transport:
    """One aiohttp session, plus one :class:`NamespaceSocket` per namespace."""

    def __init__(
        self,
        api_host: str | None,
        api_token: str | None,
        timeouts: Timeouts,
        ssl_option: SSLOption = None,
    ) -> None:
        if api_host is None:
            api_host = os.environ.get(ENV_API_HOST) or None
        self._requested_host = api_host
        self.http_base = ""
        self.ws_base = ""
        self.host: str | None = None
        if api_host is not None:
            self.http_base, self.ws_base = parse_api_host(api_host)
            self.host = self.http_base.split("://", 1)[1]
        if ssl_option is not None and not isinstance(ssl_option, bool | ssl.SSLContext):
            raise LMStudioValueError(
                "ssl must be an ssl.SSLContext, True (verify with the system trust store), "
                f"False (do not verify) or None, got {type(ssl_option).__name__}"
            )
        self.ssl: ssl.SSLContext | bool = True if ssl_option is None else ssl_option
        self.identity = credentials(api_token)
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._sockets: dict[str, NamespaceSocket] = {}
        self._resolve_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def scrub(self, text: str) -> str:
        """Remove credentials from a text that may be shown to a person."""
        for secret in self.identity:
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session of the sockets and the host probe (made on first use)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(enable_cleanup_closed=_TLS_CLEANUP)
            redirects = aiohttp.TraceConfig()
            redirects.on_request_redirect.append(_refuse_redirect)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Our own deadlines (Timeouts.connect, a call's total) bound every request;
                # aiohttp's defaults (30 s to connect, 300 s in all) would cut longer ones.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None),
                trace_configs=[redirects],
            )
        return self._session

    async def release_idle_session(self) -> None:
        """Close the session once no socket is open (the event loop is shutting down)."""
        if self._session is not None and not any(s.is_open for s in self._sockets.values()):
            session, self._session = self._session, None
            await session.close()

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
        old = self._loop
        if old is not None:
            if not old.is_closed() or self._session is not None:
                raise LMStudioError(
                    "this AsyncClient is in use by another event loop that is still open "
                    "(or that was closed without cancelling its tasks, so its sockets are "
                    "still open); use one client per event loop, or the sync Client"
                )
            # The old loop has ended, and its shutdown closed every socket and the session
            # (each reader task closes its socket when cancelled): start afresh here.
            self._sockets = {}
            self._resolve_lock = None
        self._loop = loop

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        sockets = list(self._sockets.values())
        if len(sockets) == 1:
            await sockets[0].aclose()  # the common case, without gather's extra tasks
        elif sockets:
            await asyncio.gather(*(s.aclose() for s in sockets), return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

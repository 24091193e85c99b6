"""The stand-in server: runtime, fault injection, in-loop and threaded front ends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from ._catalog import default_catalog, load_catalog_file, validate_catalog
from ._connection import Connection
from ._endpoints import build_namespaces
from ._http import MAX_BODY_BYTES
from ._http import install as install_http
from ._hub import default_hub, load_hub_file, validate_hub
from ._logs import FRAME_WHOLE_LIMIT, BoundedLog, decode_frame, frame_preview, preview_value
from ._presets import default_presets, load_presets_file, validate_presets
from ._state import DEFAULT_JIT_EVICT_GRACE, DEFAULT_JIT_TTL_MS, InstanceSnapshot, ModelState

__all__ = [
    "DEFAULT_PORT",
    "CancelRecord",
    "Faults",
    "Frame",
    "StandInServer",
    "ThreadedStandInServer",
    "parse_api_token",
]

log = logging.getLogger("lmstudio_async.testing")

T = TypeVar("T")

DEFAULT_PORT = 41343
_TOKEN_RE = re.compile(r"^sk-lm-([A-Za-z0-9]{8}):([A-Za-z0-9]{20})$")
_MAX_INCOMING = 64 * 1024 * 1024
# The frame log: per direction, at most this many bytes (besides frame_log_size frames).
DEFAULT_FRAME_LOG_BYTES = 16 * 1024 * 1024
_FRAME_OVERHEAD = 200  # bytes per logged frame besides its text (a rough estimate)
# A frame as the frame logs keep it until a test asks (then it becomes a ``Frame``; building
# one per frame cost the stand-in about a tenth of its time per RPC): its namespace,
# connection id, data, time, and whether ``data`` is a text frame kept as its UTF-8 bytes
# (the stand-in's own replies, never decoded just to be logged). A truncated frame is kept
# as its ``Frame``.
_Logged = tuple[str, int, "str | bytes", float, bool]
# Cancel packets kept for cancels() (cancel_count counts them all).
CANCEL_LOG_SIZE = 1000

FaultKind = Literal[
    "malformed_json", "binary", "oversized", "unknown_call", "unknown_channel", "unsolicited", "raw"
]
FAULT_KINDS: tuple[str, ...] = (
    "malformed_json",
    "binary",
    "oversized",
    "unknown_call",
    "unknown_channel",
    "unsolicited",
    "raw",
)


def parse_api_token(token: str) -> tuple[str, str]:
    """Split an LM Studio API token (``sk-lm-<8 alnum>:<20 alnum>``) into identifier and passkey."""
    match = _TOKEN_RE.match(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise ValueError(
            "malformed LM Studio API token: expected 'sk-lm-' + 8 letters/digits + ':' + "
            "20 letters/digits (e.g. sk-lm-abcDEF78:abcDEF7890abcDEF7890)"
        )
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame received or sent by the stand-in.

    A frame longer than 64 KiB is logged ``truncated``: ``raw`` is its first 1024
    characters (bytes) and ``message`` a preview of its JSON value (see ``_logs``).
    """

    namespace: str
    connection_id: int
    raw: str | bytes
    # Received frames: the decoded JSON value (None when the frame was not JSON). Sent
    # frames: None.
    message: Any
    time: float
    size: int = -1  # the frame's length in characters (bytes for a binary frame)
    truncated: bool = False

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.raw))


@dataclass(frozen=True)
class CancelRecord:
    namespace: str
    connection_id: int
    channel_id: int
    endpoint: str | None  # None when the channel was unknown (already finished)
    time: float


def _frames(
    log: BoundedLog[_Logged | Frame], namespace: str | None, limit: int | None
) -> list[Frame]:
    """The frames of ``log`` on ``namespace`` (None: all), the last ``limit`` of them."""
    kept = [e for e in log if namespace in (None, e[0] if isinstance(e, tuple) else e.namespace)]
    kept = kept if limit is None else kept[-limit:] if limit > 0 else []
    return [e if isinstance(e, Frame) else _frame(*e) for e in kept]


def _frame(namespace: str, conn_id: int, data: str | bytes, at: float, text: bool) -> Frame:
    raw = data.decode("utf-8") if text and isinstance(data, bytes) else data
    return Frame(namespace, conn_id, raw, None, at)


def _fault_payload(kind: str, payload: Any, size: int) -> str | bytes:
    if kind == "malformed_json":
        return '{"type": "channelSend", "channelId": 1, "message": {'
    if kind == "binary":
        return msgspec.json.encode({"type": "communicationWarning", "warning": "binary frame"})
    if kind == "oversized":
        filler = "x" * max(0, size - 64)
        return msgspec.json.encode(
            {"type": "communicationWarning", "warning": filler, "kind": "unknown"}
        ).decode()
    if kind == "unknown_call":
        return msgspec.json.encode(
            {"type": "rpcResult", "callId": 987_654_321, "result": {}}
        ).decode()
    if kind == "unknown_channel":
        return msgspec.json.encode(
            {
                "type": "channelSend",
                "channelId": 987_654_321,
                "message": {"type": "progress", "progress": 0.5},
            }
        ).decode()
    if kind == "unsolicited":
        return msgspec.json.encode(
            payload if payload is not None else {"type": "keepAliveAck"}
        ).decode()
    if kind == "raw":
        if isinstance(payload, (str, bytes)):
            return payload
        return msgspec.json.encode(payload).decode()
    raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")


class Faults:
    """Fault injection, usable from any thread (see docs/stand-in.md).

    ``silent`` and ``ignore_auth`` are plain switches, ``missing_endpoints`` a set of
    endpoint names this server then does not know (an older LM Studio: requests to them get
    the "unknown endpoint" warning); the methods act immediately.
    """

    KINDS = FAULT_KINDS

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.silent = False
        self.ignore_auth = False
        self.missing_endpoints: set[str] = set()

    def drop_connections(self, namespace: str | None = None) -> int:
        """Abort every open connection (optionally only one namespace); returns how many."""
        return self._rt.call(lambda: self._rt.drop_all(namespace))

    def drop_after(self, frames: int, *, namespace: str | None = None) -> None:
        """Abort the connection that sends the ``frames``-th next server frame, right after it.

        ``frames=0`` drops the connection instead of sending the next frame.
        """
        if frames < 0:
            raise ValueError("frames must be >= 0")

        def arm() -> None:
            self._rt.drop_countdown = frames
            self._rt.drop_namespace = namespace

        self._rt.call(arm)

    def inject(
        self,
        kind: FaultKind,
        *,
        target: Literal["all", "next"] = "all",
        namespace: str | None = None,
        payload: Any = None,
        size: int = 2 * 1024 * 1024,
    ) -> int:
        """Send a bad frame to all authenticated connections now, or to the next one to connect.

        Returns the number of connections it was sent to (0 for ``target="next"``).
        """
        data = _fault_payload(kind, payload, size)
        if target not in ("all", "next"):
            raise ValueError("target must be 'all' or 'next'")
        return self._rt.call(lambda: self._rt.inject(data, target, namespace))

    def reset(self) -> None:
        """Switch every fault off."""
        self.silent = False
        self.ignore_auth = False
        self.missing_endpoints = set()

        def clear() -> None:
            self._rt.drop_countdown = None
            self._rt.drop_namespace = None
            self._rt.pending_injections.clear()

        self._rt.call(clear)


class Runtime:
    """State and machinery shared by :class:`StandInServer` and :class:`ThreadedStandInServer`."""

    def __init__(
        self,
        port: int,
        *,
        api_token: str | None,
        catalog: list[dict[str, Any]] | str | Path | None,
        memory_gb: float,
        load_seconds: float,
        jit_evict: bool,
        host: str,
        auth_timeout: float,
        progress_steps: int,
        frame_log_size: int,
        tokens_per_second: float,
        call_timeout: float,
        frame_log_bytes: int = DEFAULT_FRAME_LOG_BYTES,
        jit: bool = True,
        jit_ttl: float | None = DEFAULT_JIT_TTL_MS / 1000,
        devices: Mapping[str, float] | None = None,
        presets: list[dict[str, Any]] | str | Path | None = None,
        hub: list[dict[str, Any]] | str | Path | None = None,
        download_mb_per_second: float = 1000.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        if memory_gb <= 0:
            raise ValueError("memory_gb must be positive")
        if load_seconds < 0:
            raise ValueError("load_seconds must be >= 0")
        if progress_steps < 1:
            raise ValueError("progress_steps must be >= 1")
        if not tokens_per_second > 0:
            raise ValueError("tokens_per_second must be positive")
        self.devices = dict(devices or {})
        for name, gb in self.devices.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"device names must be non-empty strings, got {name!r}")
            if isinstance(gb, bool) or not isinstance(gb, int | float) or not gb > 0:
                raise ValueError(f"the memory of device {name!r} must be a positive GB number")
        self.token = parse_api_token(api_token) if api_token is not None else None
        if catalog is None:
            models = default_catalog()
        elif isinstance(catalog, (str, Path)):
            models = load_catalog_file(catalog)
        else:
            models = validate_catalog(catalog)
        self.catalog = models
        if presets is None:
            self.presets = default_presets()
        elif isinstance(presets, (str, Path)):
            self.presets = load_presets_file(presets)
        else:
            self.presets = validate_presets(presets)
        if hub is None:
            self.hub = default_hub()
        elif isinstance(hub, (str, Path)):
            self.hub = load_hub_file(hub)
        else:
            self.hub = validate_hub(hub)
        if not download_mb_per_second > 0:
            raise ValueError("download_mb_per_second must be positive")
        self.download_bytes_per_second = download_mb_per_second * 1_000_000
        self.memory_gb = memory_gb
        self.jit_evict = jit_evict
        if jit_ttl is not None and not jit_ttl > 0:
            raise ValueError("jit_ttl must be positive (seconds), or None for no TTL")
        self.jit = jit
        self.jit_ttl_ms = None if jit_ttl is None else int(jit_ttl * 1000)
        self.jit_evict_grace = DEFAULT_JIT_EVICT_GRACE
        self.state = self.new_state()
        self.requested_port = port
        self.bound_port: int | None = None
        self.bind_host = host
        self.load_seconds = load_seconds
        self.auth_timeout = auth_timeout
        self.progress_steps = progress_steps
        self.tokens_per_second = tokens_per_second
        self.call_timeout = call_timeout
        self.namespaces = build_namespaces()
        self.faults = Faults(self)
        self.connections: dict[int, Connection] = {}
        if frame_log_size < 0 or frame_log_bytes < 0:
            raise ValueError("frame_log_size and frame_log_bytes must be >= 0")
        # Whole received frames are kept as text only; received_frames() decodes them.
        self.received: BoundedLog[_Logged | Frame] = BoundedLog(frame_log_size, frame_log_bytes)
        self.sent: BoundedLog[_Logged | Frame] = BoundedLog(frame_log_size, frame_log_bytes)
        # The newest cancels; cancel_total counts them all (since the start or clear_logs).
        self.cancels: deque[CancelRecord] = deque(maxlen=CANCEL_LOG_SIZE)
        self.cancel_total = 0
        self.drop_countdown: int | None = None
        self.drop_namespace: str | None = None
        self.pending_injections: list[tuple[str | None, str | bytes]] = []
        self.clients: dict[str, list[Any]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def new_state(self) -> ModelState:
        state = ModelState(
            self.catalog,
            self.memory_gb,
            self.jit_evict,
            jit_enabled=self.jit,
            jit_ttl_ms=self.jit_ttl_ms,
            devices=self.devices,
        )
        state.jit_evict_grace = self.jit_evict_grace
        return state

    # --- thread hopping -------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the server loop (directly when already there) and return its result."""
        loop = self.loop
        if loop is None or not loop.is_running() or threading.get_ident() == self.loop_thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(self.call_timeout)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.bound_port if self.bound_port is not None else self.requested_port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the stand-in server is already running")
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/lmstudio-greeting", self._greeting)
        install_http(app, self)  # REST v0/v1 and OpenAI-compatible, on the same state
        app.router.add_get("/{namespace}", self._websocket)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        port = self.bound_port if self.bound_port is not None else self.requested_port
        site = web.TCPSite(runner, self.bind_host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        addresses = runner.addresses
        if addresses:
            self.bound_port = int(addresses[0][1])
        self._runner = runner
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        conns = list(self.connections.values())
        if conns:
            await asyncio.gather(*(self._close(c) for c in conns), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await runner.cleanup()

    async def restart(self, reset_state: bool) -> None:
        await self.stop()
        if reset_state:
            self.state = self.new_state()
            self.clients.clear()
        await self.start()

    @staticmethod
    async def _close(conn: Connection) -> None:
        try:
            async with asyncio.timeout(0.5):
                await conn.ws.close(code=1001, message=b"server shutdown")
        except (TimeoutError, ConnectionError, RuntimeError):
            conn.abort()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            try:
                self.state.expire()
            except Exception:  # pragma: no cover - defensive
                log.exception("TTL sweeper failed")

    # --- HTTP handlers --------------------------------------------------------------------

    async def _greeting(self, _request: web.Request) -> web.Response:
        return web.json_response({"lmstudio": True, "standIn": "lmstudio_async.testing"})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        if namespace not in self.namespaces:
            raise web.HTTPNotFound(text=f"unknown namespace {namespace!r}")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=_MAX_INCOMING, timeout=1.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, text="WebSocket upgrade required")
        await ws.prepare(request)
        conn_id = next(self._ids)
        conn = Connection(self, conn_id, namespace, ws, request)
        self.connections[conn_id] = conn
        try:
            await conn.run()
        finally:
            self.connections.pop(conn_id, None)
        return ws

    # --- auth -----------------------------------------------------------------------------

    def check_auth(self, identifier: str, passkey: str) -> str | None:
        if self.token is not None and (identifier, passkey) != self.token:
            return (
                "Failed to validate client: this server requires an API token and the client "
                f'"{identifier}" did not present the configured one'
            )
        entry = self.clients.get(identifier)
        if entry is not None and entry[0] != passkey:
            return f'Failed to validate client: Invalid client passkey for client "{identifier}"'
        if entry is None:
            self.clients[identifier] = [passkey, 1]
        else:
            entry[1] += 1
        return None

    def release_client(self, identifier: str) -> None:
        entry = self.clients.get(identifier)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self.clients[identifier]

    async def after_auth(self, conn: Connection) -> None:
        keep: list[tuple[str | None, str | bytes]] = []
        due: list[str | bytes] = []
        for namespace, data in self.pending_injections:
            if namespace is None or namespace == conn.namespace:
                due.append(data)
            else:
                keep.append((namespace, data))
        self.pending_injections = keep
        for data in due:
            await conn.send_raw(data)

    # --- recording ------------------------------------------------------------------------

    def record_received(self, conn: Connection, raw: str | bytes, message: Any) -> None:
        """Log a received frame (``message``: its decoded JSON value, or None)."""
        if len(raw) <= FRAME_WHOLE_LIMIT:
            entry = (conn.namespace, conn.id, raw, time.time(), False)
            self.received.append(entry, sys.getsizeof(raw) + _FRAME_OVERHEAD)
            return
        preview = None if message is None else preview_value(message)
        kept = frame_preview(raw)
        frame = Frame(conn.namespace, conn.id, kept, preview, time.time(), len(raw), True)
        extra = 0 if preview is None else len(msgspec.json.encode(preview))
        self.received.append(frame, sys.getsizeof(kept) + extra + _FRAME_OVERHEAD)

    def record_sent(self, conn: Connection, data: bytes, text: bool) -> None:
        """Log a sent frame: ``data`` is a text frame's UTF-8 bytes when ``text``."""
        if len(data) <= FRAME_WHOLE_LIMIT:
            entry = (conn.namespace, conn.id, data, time.time(), text)
            self.sent.append(entry, sys.getsizeof(data) + _FRAME_OVERHEAD)
            return
        raw = data.decode("utf-8") if text else data
        kept = raw if len(raw) <= FRAME_WHOLE_LIMIT else frame_preview(raw)
        frame = Frame(conn.namespace, conn.id, kept, None, time.time(), len(raw), kept is not raw)
        self.sent.append(frame, sys.getsizeof(kept) + _FRAME_OVERHEAD)

    def record_cancel(self, conn: Connection, channel_id: int, endpoint: str | None) -> None:
        self.cancel_total += 1
        self.cancels.append(
            CancelRecord(conn.namespace, conn.id, channel_id, endpoint, time.time())
        )

    # --- faults ---------------------------------------------------------------------------

    def drop_countdown_applies(self, conn: Connection) -> bool:
        return self.drop_namespace is None or self.drop_namespace == conn.namespace

    def drop_all(self, namespace: str | None) -> int:
        conns = [c for c in self.connections.values() if namespace in (None, c.namespace)]
        for conn in conns:
            conn.abort()
        return len(conns)

    def inject(self, data: str | bytes, target: str, namespace: str | None) -> int:
        if target == "next":
            self.pending_injections.append((namespace, data))
            return 0
        conns = [
            c
            for c in self.connections.values()
            if c.authenticated and namespace in (None, c.namespace)
        ]
        for conn in conns:
            self._spawn(conn.send_raw(data))
        return len(conns)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- inspection -----------------------------------------------------------------------

    def open_channel_count(self, namespace: str | None, endpoint: str | None) -> int:
        return sum(
            1
            for conn in self.connections.values()
            if namespace in (None, conn.namespace)
            for ch in conn.channels.values()
            if endpoint in (None, ch.endpoint)
        )

    def connection_count(self, namespace: str | None) -> int:
        return sum(1 for c in self.connections.values() if namespace in (None, c.namespace))


class _StandInBase:
    """Attributes, inspection and fault injection shared by both front ends (thread-safe)."""

    def __init__(
        self,
        port: int = 0,
        *,
        api_token: str | None = None,
        catalog: list[dict[str, Any]] | str | Path | None = None,
        memory_gb: float = 24,
        load_seconds: float = 0.3,
        jit_evict: bool = True,
        host: str = "127.0.0.1",
        auth_timeout: float = 10.0,
        progress_steps: int = 20,
        frame_log_size: int = 1000,
        tokens_per_second: float = 2000.0,
        call_timeout: float = 10.0,
        frame_log_bytes: int = DEFAULT_FRAME_LOG_BYTES,
        jit: bool = True,
        jit_ttl: float | None = DEFAULT_JIT_TTL_MS / 1000,
        devices: Mapping[str, float] | None = None,
        presets: list[dict[str, Any]] | str | Path | None = None,
        hub: list[dict[str, Any]] | str | Path | None = None,
        download_mb_per_second: float = 1000.0,
    ) -> None:
        self._rt = Runtime(
            port,
            api_token=api_token,
            catalog=catalog,
            memory_gb=memory_gb,
            load_seconds=load_seconds,
            jit_evict=jit_evict,
            host=host,
            auth_timeout=auth_timeout,
            progress_steps=progress_steps,
            frame_log_size=frame_log_size,
            tokens_per_second=tokens_per_second,
            call_timeout=call_timeout,
            frame_log_bytes=frame_log_bytes,
            jit=jit,
            jit_ttl=jit_ttl,
            devices=devices,
            presets=presets,
            hub=hub,
            download_mb_per_second=download_mb_per_second,
        )

    # --- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first start)."""
        return self._rt.port

    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``: what clients take as ``api_host`` (an IPv6 address in
        brackets, ``"[::1]:PORT"``)."""
        host = self._rt.bind_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self._rt.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ws_url(self, namespace: str) -> str:
        return f"ws://{self.host}/{namespace}"

    @property
    def faults(self) -> Faults:
        return self._rt.faults

    # --- settings -------------------------------------------------------------------------

    @property
    def load_seconds(self) -> float:
        return self._rt.load_seconds

    @load_seconds.setter
    def load_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError("load_seconds must be >= 0")
        self._rt.load_seconds = value

    @property
    def tokens_per_second(self) -> float:
        return self._rt.tokens_per_second

    @tokens_per_second.setter
    def tokens_per_second(self, value: float) -> None:
        """Generation speed of the predictions that start from now on."""
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"tokens_per_second must be a positive number, got {value!r}")
        self._rt.tokens_per_second = float(value)

    @property
    def jit_evict(self) -> bool:
        return self._rt.state.jit_evict

    @jit_evict.setter
    def jit_evict(self, value: bool) -> None:
        self._rt.jit_evict = value
        self._rt.state.jit_evict = value

    @property
    def jit_evict_grace(self) -> float:
        return self._rt.state.jit_evict_grace

    @jit_evict_grace.setter
    def jit_evict_grace(self, value: float) -> None:
        """Seconds a JIT load waits for the work on the instances it auto-evicts before it
        evicts them anyway (default 5)."""
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"jit_evict_grace must be a number >= 0, got {value!r}")
        self._rt.jit_evict_grace = float(value)
        self._rt.state.jit_evict_grace = float(value)

    # --- inspection -----------------------------------------------------------------------

    def loaded_instances(self) -> list[InstanceSnapshot]:
        """Loaded instances in load order (all namespaces); expired ones are removed first."""
        return self._rt.call(lambda: self._rt.state.snapshot())

    def open_channel_count(
        self, *, namespace: str | None = None, endpoint: str | None = None
    ) -> int:
        """Channels currently open across all connections (filter by namespace / endpoint)."""
        return self._rt.call(lambda: self._rt.open_channel_count(namespace, endpoint))

    def connection_count(self, namespace: str | None = None) -> int:
        """Open WebSocket connections (authenticated or not)."""
        return self._rt.call(lambda: self._rt.connection_count(namespace))

    @property
    def cancel_count(self) -> int:
        """How many ``{"type": "cancel"}`` channel packets were received (all of them)."""
        return self._rt.call(lambda: self._rt.cancel_total)

    def cancels(self) -> list[CancelRecord]:
        """The ``{"type": "cancel"}`` channel packets received, oldest first (the newest
        ``CANCEL_LOG_SIZE``)."""
        return self._rt.call(lambda: list(self._rt.cancels))

    def received_frames(
        self, *, namespace: str | None = None, limit: int | None = None
    ) -> list[Frame]:
        """The last received frames (oldest first), including auth packets and junk."""

        def get() -> list[Frame]:
            frames = _frames(self._rt.received, namespace, limit)
            return [
                f if f.truncated else dataclasses.replace(f, message=decode_frame(f.raw))
                for f in frames
            ]

        return self._rt.call(get)

    def received_messages(
        self,
        *,
        namespace: str | None = None,
        type: str | None = None,
        endpoint: str | None = None,
    ) -> list[dict[str, Any]]:
        """Decoded JSON objects received, filtered by namespace, envelope type and endpoint."""
        return [
            f.message
            for f in self.received_frames(namespace=namespace)
            if isinstance(f.message, dict)
            and type in (None, f.message.get("type"))
            and endpoint in (None, f.message.get("endpoint"))
        ]

    def sent_frames(self, *, namespace: str | None = None, limit: int | None = None) -> list[Frame]:
        def get() -> list[Frame]:
            return _frames(self._rt.sent, namespace, limit)

        return self._rt.call(get)

    def clear_logs(self) -> None:
        """Forget recorded frames and cancels."""

        def clear() -> None:
            self._rt.received.clear()
            self._rt.sent.clear()
            self._rt.cancels.clear()
            self._rt.cancel_total = 0

        self._rt.call(clear)

    def notifications(self) -> list[dict[str, Any]]:
        """Parameters of the system ``notify`` calls received, oldest first (the newest 1000,
        and no more than 4 MiB of text)."""
        return self._rt.call(lambda: list(self._rt.state.notifications))

    def advance_clock(self, seconds: float) -> None:
        """Move the simulated clock forward (TTL tests) and expire idle instances at once."""

        def advance() -> None:
            self._rt.state.clock.advance(seconds)
            self._rt.state.expire()

        self._rt.call(advance)

    def now_ms(self) -> float:
        """The simulated clock, epoch milliseconds."""
        return self._rt.call(self._rt.state.clock.now_ms)

    # --- memory and LM Link devices ---------------------------------------------------------

    @property
    def devices(self) -> dict[str, int]:
        """The simulated LM Link remote devices: name → memory budget in bytes."""
        return self._rt.call(lambda: dict(self._rt.state.device_budgets))

    @property
    def memory_budget_bytes(self) -> int:
        """The local machine's memory budget in bytes."""
        return self._rt.call(lambda: self._rt.state.memory_budget)

    def memory_used_bytes(self, device: str | None = None) -> int:
        """Memory in use now on ``device`` (``None``: local), loads in progress included."""

        def used() -> int:
            self._rt.state.check_device(device)
            return self._rt.state.used_bytes(device=device)

        return self._rt.call(used)

    @property
    def peak_memory_bytes(self) -> int:
        """The most memory ever in use at once, all devices together (loads in progress
        included), since the start or the last :meth:`reset_peak_memory`."""
        return self._rt.call(lambda: self._rt.state.peak_bytes)

    def peak_memory_by_device(self) -> dict[str | None, int]:
        """The peak per device: ``None`` is the local machine, else the device's name."""
        return self._rt.call(lambda: dict(self._rt.state.device_peak_bytes))

    def reset_peak_memory(self) -> None:
        """Start recording peaks afresh from the memory in use now."""
        self._rt.call(self._rt.state.reset_peak)

    def preload(
        self,
        model: str,
        *,
        identifier: str | None = None,
        ttl_ms: int | None = None,
        jit: bool = False,
        config: dict[str, Any] | None = None,
        device: str | None = None,
    ) -> InstanceSnapshot:
        """Load a model instantly, without a client (test set-up). Same rules as ``loadModel``;
        ``device`` names a simulated LM Link device (``None``: local)."""
        from . import _errors as err
        from ._kvconfig import effective_config

        def load() -> InstanceSnapshot:
            state = self._rt.state
            domain = next(
                (
                    str(m["type"])
                    for m in state.catalog
                    if str(m["modelKey"]).lower() == model.lower()
                    or str(m["path"]).lower().startswith(model.lower())
                ),
                "llm",
            )
            found, _ = state.resolve_downloaded(model, domain)
            if identifier is not None and state.identifier_taken(identifier):
                raise err.identifier_exists(identifier)
            cfg = effective_config(domain, found, dict(config or {}))
            memory = state.estimate(found, cfg)
            where = state.check_device(device)
            state.check_fits(found, memory, freed=[], device=where)
            inst = state.reserve(
                identifier=identifier or state.auto_identifier(str(found["modelKey"])),
                model=found,
                config=cfg,
                memory=memory,
                jit=jit,
                ttl_ms=ttl_ms,
                device=where,
            )
            state.commit(inst)
            return next(
                s for s in state.snapshot() if s.instance_reference == inst.instance_reference
            )

        return self._rt.call(load)

    def unload_all(self) -> int:
        """Unload every instance (and forget in-progress reservations); returns how many."""

        def clear() -> int:
            count = len(self._rt.state.loaded())
            self._rt.state.instances = [i for i in self._rt.state.instances if not i.loaded]
            return count

        return self._rt.call(clear)


class StandInServer(_StandInBase):
    """The stand-in, running in the current event loop.

    ``async with StandInServer(port=0) as server: ...`` then point a client at ``server.host``.
    Inspection and fault methods are synchronous and may be called from any thread.
    """

    async def start(self) -> StandInServer:
        await self._rt.start()
        return self

    async def stop(self) -> None:
        await self._rt.stop()

    async def restart(self, *, reset_state: bool = False) -> None:
        """Stop (dropping every connection) and start again on the same port."""
        await self._rt.restart(reset_state)

    async def __aenter__(self) -> StandInServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @staticmethod
    def start_in_thread(port: int = 0, **options: Any) -> ThreadedStandInServer:
        """Start a :class:`ThreadedStandInServer` (same options) and return it."""
        return ThreadedStandInServer(port, **options).start()


class ThreadedStandInServer(_StandInBase):
    """The stand-in in its own daemon thread and event loop; every method is synchronous.

    Usable from sync code and from async code running in any other loop.
    """

    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float = 10.0) -> ThreadedStandInServer:
        if self._thread is not None:
            raise RuntimeError("the stand-in server is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                try:
                    loop.run_until_complete(self._rt.start())
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(self._rt.stop())
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

        thread = threading.Thread(target=main, name=f"lmstudio-stand-in-{id(self):x}", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the stand-in server did not start in time")
        if failure:
            thread.join(timeout)
            raise failure[0]
        self._thread = thread
        return self

    def _run(self, coro_factory: Callable[[], Any], timeout: float) -> Any:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("the stand-in server is not running")
        return asyncio.run_coroutine_threadsafe(coro_factory(), loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            self._run(self._rt.stop, timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None
            self._loop = None

    def restart(self, *, reset_state: bool = False, timeout: float = 10.0) -> None:
        """Stop (dropping every connection) and start again on the same port."""
        self._run(lambda: self._rt.restart(reset_state), timeout)

    def __enter__(self) -> ThreadedStandInServer:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

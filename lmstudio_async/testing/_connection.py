"""One authenticated WebSocket connection: auth handshake, envelope protocol, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from aiohttp import WSMsgType, web

from . import _schema as s
from ._errors import StandInError

if TYPE_CHECKING:
    from ._server import Runtime

log = logging.getLogger("lmstudio_async.testing")

_AUTH_PACKET = s.obj(
    {
        "authVersion": s.literal(1),
        "clientIdentifier": lambda v: s.string(v) or (None if len(v) <= 256 else "Too long"),
        "clientPasskey": lambda v: s.string(v) or (None if len(v) <= 256 else "Too long"),
    }
)

MAX_WARNINGS = 5

_INT = s.integer()
_ENVELOPES: dict[str, s.Check] = {
    "keepAlive": s.obj({}),
    "communicationWarning": s.obj({"warning": s.string}, {"kind": s.string}),
    "channelCreate": s.obj({"endpoint": s.string, "channelId": _INT}),
    "channelSend": s.obj({"channelId": _INT}, {"ackId": _INT}),
    "channelAck": s.obj({"channelId": _INT, "ackId": _INT}),
    "rpcCall": s.obj({"endpoint": s.string, "callId": _INT}),
    "signalSubscribe": s.obj({"endpoint": s.string, "subscribeId": _INT}),
    "signalUnsubscribe": s.obj({"subscribeId": _INT}),
    "writableSignalSubscribe": s.obj({"endpoint": s.string, "subscribeId": _INT}),
    "writableSignalUnsubscribe": s.obj({"subscribeId": _INT}),
    "writableSignalUpdate": s.obj(
        {"subscribeId": _INT, "patches": s.array(lambda v: None), "tags": s.array(s.string)}
    ),
}


class VoidResult:
    """Marker: the RPC handler returned nothing, so ``rpcResult`` has no ``result`` key."""


VOID = VoidResult()

RpcHandler = Callable[["Connection", Any], Any]
ChannelHandler = Callable[["ChannelContext", Any], Awaitable[None]]


@dataclass(frozen=True)
class RpcEndpoint:
    parameter: s.Check
    handler: RpcHandler | None  # None: known to LM Studio but not simulated


@dataclass(frozen=True)
class ChannelEndpoint:
    creation: s.Check
    to_server: s.Check
    handler: ChannelHandler | None


_EndpointT = TypeVar("_EndpointT", RpcEndpoint, ChannelEndpoint)


@dataclass(frozen=True)
class Namespace:
    rpc: dict[str, RpcEndpoint]
    channels: dict[str, ChannelEndpoint]


_NO_ENDPOINTS = Namespace({}, {})


@dataclass
class OpenChannel:
    endpoint: str
    context: ChannelContext
    task: asyncio.Task[None] | None = None


@dataclass
class ChannelContext:
    conn: Connection
    channel_id: int
    endpoint: str
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def runtime(self) -> Runtime:
        return self.conn.rt

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send(
            {"type": "channelSend", "channelId": self.channel_id, "message": message}
        )

    async def pause(self, seconds: float, on_cancel: Callable[[], StandInError]) -> None:
        """Sleep, but raise ``on_cancel()`` as soon as the client sends ``cancel``."""
        if not self.cancelled.is_set():
            if seconds <= 0:
                await asyncio.sleep(0)
            else:
                # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                # task's own cancellation when the event is set in the same step)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await self.cancelled.wait()
        if self.cancelled.is_set():
            raise on_cancel()

    async def wait_or_cancel(self, seconds: float) -> bool:
        """Sleep (at least one loop turn); return ``True`` once the client sent ``cancel``."""
        if not self.cancelled.is_set():
            if seconds <= 0:
                await asyncio.sleep(0)
            else:
                # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                # task's own cancellation when the event is set in the same step)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await self.cancelled.wait()
        return self.cancelled.is_set()


def _compact(value: Any) -> str:
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError, RecursionError):
        text = _shallow_repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


def _shallow_repr(value: Any) -> str:
    """A short description of a value that cannot be encoded (e.g. nested too deeply)."""
    if isinstance(value, dict):
        return f"<object with {len(value)} keys>"
    if isinstance(value, list):
        return f"<array of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


class Connection:
    def __init__(
        self,
        rt: Runtime,
        conn_id: int,
        namespace: str,
        ws: web.WebSocketResponse,
        request: web.Request,
    ) -> None:
        self.rt = rt
        self.id = conn_id
        self.namespace = namespace
        self.ws = ws
        self.request = request
        self.client_identifier: str | None = None
        self.authenticated = False
        self.warnings_sent = 0
        self.channels: dict[int, OpenChannel] = {}
        self.aborted = False

    # --- output ---------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self._send_frame(msgspec.json.encode(message), text=True)

    async def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` as it is: a text frame for a str, a binary frame for bytes."""
        if isinstance(data, str):
            await self._send_frame(data.encode("utf-8"), text=True)
        else:
            await self._send_frame(data, text=False)

    async def _send_frame(self, data: bytes, *, text: bool) -> None:
        rt = self.rt
        if self.aborted or self.ws.closed or rt.faults.silent:
            return
        if rt.drop_countdown_applies(self) and rt.drop_countdown == 0:
            rt.drop_countdown = None
            self.abort()
            return
        try:
            await self.ws.send_frame(data, WSMsgType.TEXT if text else WSMsgType.BINARY)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("send failed on %s: %s", self.namespace, exc)
            return
        rt.record_sent(self, data, text)
        if rt.drop_countdown_applies(self) and rt.drop_countdown is not None:
            rt.drop_countdown -= 1
            if rt.drop_countdown == 0:
                rt.drop_countdown = None
                self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (simulated network failure).

        Its socket is shut down at once, not at the event loop's next step as
        ``transport.abort()`` alone would: when ``faults.drop_connections()`` returns, the
        client's kernel already has the end of the connection, so a call made right after
        sees a dropped connection, not one that drops under it.
        """
        self.aborted = True
        transport = self.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            transport.abort()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    async def warn(self, kind: str, text: str) -> None:
        if self.warnings_sent >= MAX_WARNINGS:
            return
        self.warnings_sent += 1
        log.info("communicationWarning (%s) on /%s: %s", kind, self.namespace, text)
        await self.send({"type": "communicationWarning", "warning": text, "kind": kind})

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        except Exception:  # a transport-level surprise: log it, never crash the server
            log.exception("connection handler for /%s failed", self.namespace)
        finally:
            await self._cleanup()

    async def _serve(self) -> None:
        if not await self._authenticate():
            return
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                await self._handle_frame(msg.data)
            elif msg.type == WSMsgType.BINARY:
                # LM Studio decodes binary frames as UTF-8 text too.
                await self._handle_frame(
                    bytes(msg.data).decode("utf-8", errors="replace"), msg.data
                )
            elif msg.type == WSMsgType.ERROR:
                break

    async def _cleanup(self) -> None:
        tasks = [ch.task for ch in self.channels.values() if ch.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.channels.clear()
        if self.authenticated and self.client_identifier is not None:
            self.rt.release_client(self.client_identifier)

    async def _authenticate(self) -> bool:
        rt = self.rt
        loop = asyncio.get_running_loop()
        deadline = loop.time() + rt.auth_timeout
        while True:
            timeout: float | None = (
                None if rt.faults.ignore_auth else max(0.0, deadline - loop.time())
            )
            try:
                msg = await self.ws.receive(timeout=timeout)
            except TimeoutError:
                if rt.faults.ignore_auth:
                    continue
                await self.send({"success": False, "error": "Authentication timed out"})
                await self.ws.close()
                return False
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return False
            raw = (
                msg.data
                if msg.type == WSMsgType.TEXT
                else bytes(msg.data).decode("utf-8", "replace")
            )
            packet = self._decode(raw, msg.data)
            if rt.faults.ignore_auth or rt.faults.silent:
                continue
            if packet is None or _AUTH_PACKET(packet) is not None:
                log.info("ignoring invalid frame before authentication on /%s", self.namespace)
                continue
            error = rt.check_auth(packet["clientIdentifier"], packet["clientPasskey"])
            if error is not None:
                await self.send({"success": False, "error": error})
                await self.ws.close()
                return False
            self.client_identifier = packet["clientIdentifier"]
            self.authenticated = True
            await self.send({"success": True})
            await rt.after_auth(self)
            return True

    def _decode(self, text: str, original: str | bytes) -> Any:
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            message = None
            log.info("dropping non-JSON frame on /%s", self.namespace)
        except RecursionError:
            # msgspec gives up on JSON nested about a thousand levels deep; such a frame
            # is dropped like any other that cannot be parsed (protocol.md §2.7).
            message = None
            log.info("dropping a JSON frame nested too deeply on /%s", self.namespace)
        self.rt.record_received(self, original, message)
        return message

    # --- input ----------------------------------------------------------------------------

    async def _handle_frame(self, text: str, original: str | bytes | None = None) -> None:
        message = self._decode(text, text if original is None else original)
        if self.rt.faults.silent:
            return
        try:
            await self._dispatch(message)
        except Exception:  # never let one frame kill the connection
            log.exception("error while handling a frame on /%s", self.namespace)

    async def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        check = _ENVELOPES.get(kind) if isinstance(kind, str) else None
        if check is None or check(message) is not None:
            log.info("dropping malformed envelope on /%s: %s", self.namespace, _compact(message))
            return
        ns = self.rt.namespaces.get(self.namespace, _NO_ENDPOINTS)
        if kind == "keepAlive":
            await self.send({"type": "keepAliveAck"})
        elif kind == "communicationWarning":
            log.warning(
                "client communicationWarning on /%s: %s", self.namespace, message["warning"]
            )
        elif kind == "rpcCall":
            await self._rpc(ns, message)
        elif kind == "channelCreate":
            await self._channel_create(ns, message)
        elif kind == "channelSend":
            await self._channel_send(message)
        elif kind == "channelAck":
            if int(message["channelId"]) not in self.channels:
                await self.warn(
                    "channelUnknown",
                    "Received channelAck for unknown channel, channelId = "
                    f"{int(message['channelId'])}",
                )
        elif kind in ("signalSubscribe", "writableSignalSubscribe"):
            await self.warn(
                f"{kind[:-9]}EndpointUnknown",
                f"Received {kind} for unknown endpoint, endpoint = {message['endpoint']}",
            )
        elif kind == "writableSignalUpdate":
            await self.warn(
                "writableSignalUnknown",
                f"Received writableSignalUpdate for unknown subscription, "
                f"subscribeId = {int(message['subscribeId'])}",
            )
        # signalUnsubscribe / writableSignalUnsubscribe: remembered silently (no-op here)

    async def _endpoint(
        self, table: Mapping[str, _EndpointT], name: str, kind: str, envelope: str
    ) -> _EndpointT | None:
        """The endpoint ``name`` of ``table``; for one LM Studio does not know, or knows
        but the stand-in does not simulate, the ``communicationWarning`` LM Studio sends
        instead (``kind``: "rpc" or "channel"; ``envelope``: the message type) and None."""
        endpoint = table.get(name)
        if name in self.rt.faults.missing_endpoints:
            endpoint = None  # an LM Studio older than the endpoint
        if endpoint is not None and endpoint.handler is not None:
            return endpoint
        state = "Unknown" if endpoint is None else "Unhandled"
        await self.warn(
            f"{kind}Endpoint{state}",
            f"Received {envelope} for {state.lower()} endpoint, endpoint = {name}",
        )
        return None

    async def _rpc(self, ns: Namespace, message: dict[str, Any]) -> None:
        name = message["endpoint"]
        call_id = int(message["callId"])
        endpoint = await self._endpoint(ns.rpc, name, "rpc", "rpcCall")
        if endpoint is None or endpoint.handler is None:  # warned
            return
        parameter = message.get("parameter", s.MISSING)
        problem = endpoint.parameter(parameter)
        if problem is not None:
            await self.warn(
                "rpcParameterTypeError",
                f"Received invalid parameter for rpcCall, endpointName = {name}, parameter = "
                f"{_compact(parameter)}. Zod error:\n\n{problem}",
            )
            return
        try:
            result = endpoint.handler(self, parameter)
        except StandInError as exc:
            await self.send({"type": "rpcError", "callId": call_id, "error": exc.serialize()})
            return
        except Exception as exc:
            log.exception("RPC handler %s failed", name)
            title = f"Internal stand-in error: {exc}"
            await self.send(
                {
                    "type": "rpcError",
                    "callId": call_id,
                    "error": {"title": title, "rootTitle": title},
                }
            )
            return
        reply: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
        if not isinstance(result, VoidResult):
            reply["result"] = result
        await self.send(reply)

    async def _channel_create(self, ns: Namespace, message: dict[str, Any]) -> None:
        name = message["endpoint"]
        channel_id = int(message["channelId"])
        endpoint = await self._endpoint(ns.channels, name, "channel", "channelCreate")
        if endpoint is None or endpoint.handler is None:  # warned
            return
        if channel_id in self.channels:
            await self.warn(
                "channelAlreadyOpen",
                f"Received channelCreate for already open channel, channelId = {channel_id}",
            )
            return
        parameter = message.get("creationParameter", s.MISSING)
        problem = endpoint.creation(parameter)
        if problem is not None:
            await self.warn(
                "channelCreationParameterTypeError",
                f"Received invalid creationParameter for channel, endpointName = {name}, "
                f"creationParameter = {_compact(parameter)}. Zod error:\n\n{problem}",
            )
            return
        context = ChannelContext(self, channel_id, name)
        opened = OpenChannel(name, context)
        self.channels[channel_id] = opened
        opened.task = asyncio.create_task(self._run_channel(endpoint.handler, context, parameter))

    async def _run_channel(
        self, handler: ChannelHandler, context: ChannelContext, parameter: Any
    ) -> None:
        channel_id = context.channel_id
        try:
            try:
                await handler(context, parameter)
            except StandInError as exc:
                await self.send(
                    {"type": "channelError", "channelId": channel_id, "error": exc.serialize()}
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("channel handler %s failed", context.endpoint)
                title = f"Internal stand-in error: {exc}"
                await self.send(
                    {
                        "type": "channelError",
                        "channelId": channel_id,
                        "error": {"title": title, "rootTitle": title},
                    }
                )
            else:
                await self.send({"type": "channelClose", "channelId": channel_id})
        finally:
            self.channels.pop(channel_id, None)

    async def _channel_send(self, message: dict[str, Any]) -> None:
        channel_id = int(message["channelId"])
        payload = message.get("message", s.MISSING)
        opened = self.channels.get(channel_id)
        if isinstance(payload, dict) and payload.get("type") == "cancel":
            self.rt.record_cancel(self, channel_id, opened.endpoint if opened else None)
        if opened is None:
            await self.warn(
                "channelUnknown",
                f"Received channelSend for unknown channel, channelId = {channel_id}",
            )
            return
        endpoint = self.rt.namespaces[self.namespace].channels[opened.endpoint]
        problem = endpoint.to_server(payload)
        if problem is not None:
            await self.warn(
                "channelMessageTypeError",
                f"Received invalid message for channel, endpointName = {opened.endpoint}, "
                f"message = {_compact(payload)}. Zod error:\n\n{problem}",
            )
            return
        opened.context.cancelled.set()

"""A minimal raw-JSON WebSocket client for driving the stand-in in tests."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import aiohttp

TIMEOUT = 5.0
_MISSING = object()


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 100

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
        return json.loads(msg.data)

    async def expect_nothing(self, timeout: float = 0.15) -> None:
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {msg.type!r} {msg.data!r}")

    async def barrier(self) -> None:
        """Assert that nothing else is sent before the reply to a keepAlive sent now."""
        await self.send({"type": "keepAlive"})
        frame = await self.recv()
        assert frame == {"type": "keepAliveAck"}, f"unexpected frame {frame}"

    async def rpc(self, endpoint: str, parameter: Any = _MISSING) -> dict[str, Any]:
        """Send an rpcCall and return the matching rpcResult/rpcError envelope."""
        call_id = self.next_id()
        message: dict[str, Any] = {"type": "rpcCall", "endpoint": endpoint, "callId": call_id}
        if parameter is not _MISSING:
            message["parameter"] = parameter
        await self.send(message)
        while True:
            reply = await self.recv()
            if reply.get("callId") == call_id:
                return dict(reply)
            if reply.get("type") == "communicationWarning":
                raise AssertionError(f"warning instead of a reply: {reply}")

    async def result(self, endpoint: str, parameter: Any = _MISSING) -> Any:
        reply = await self.rpc(endpoint, parameter)
        assert reply["type"] == "rpcResult", reply
        return reply.get("result")

    async def open_channel(self, endpoint: str, creation: Any = _MISSING) -> int:
        channel_id = self.next_id()
        message: dict[str, Any] = {
            "type": "channelCreate",
            "endpoint": endpoint,
            "channelId": channel_id,
        }
        if creation is not _MISSING:
            message["creationParameter"] = creation
        await self.send(message)
        return channel_id

    async def collect(self, channel_id: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Frames for ``channel_id`` up to and including channelClose/channelError."""
        frames: list[dict[str, Any]] = []
        while True:
            frame = await self.recv(timeout)
            if frame.get("channelId") != channel_id:
                continue
            frames.append(frame)
            if frame["type"] in ("channelClose", "channelError"):
                return frames

    async def channel(self, endpoint: str, creation: Any = _MISSING) -> list[dict[str, Any]]:
        return await self.collect(await self.open_channel(endpoint, creation))


def stack(**fields: Any) -> dict[str, Any]:
    """A single apiOverride layer KVConfigStack."""
    return {
        "layers": [
            {
                "layerName": "apiOverride",
                "config": {"fields": [{"key": k, "value": v} for k, v in fields.items()]},
            }
        ]
    }


def load_param(model: str, **extra: Any) -> dict[str, Any]:
    config = extra.pop("config", {})
    return {"modelKey": model, "loadConfigStack": stack(**config), **extra}


def messages(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["message"] for f in frames if f["type"] == "channelSend"]


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["message"]["type"] if f["type"] == "channelSend" else f["type"] for f in frames]


class RawClient:
    """``async with RawClient(host) as c: ws = await c.connect("llm")``."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.session = aiohttp.ClientSession()
        self.identifier = "guest:test-client"
        self.passkey = "test-passkey"

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.close()

    async def raw(self, namespace: str) -> Socket:
        ws = await self.session.ws_connect(f"ws://{self.host}/{namespace}", autoping=True)
        return Socket(ws)

    async def connect(
        self,
        namespace: str,
        *,
        identifier: str | None = None,
        passkey: str | None = None,
    ) -> Socket:
        sock = await self.raw(namespace)
        await sock.send(
            {
                "authVersion": 1,
                "clientIdentifier": identifier or self.identifier,
                "clientPasskey": passkey or self.passkey,
            }
        )
        reply = await sock.recv()
        assert reply == {"success": True}, reply
        return sock


async def wait_until(predicate: Any, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)

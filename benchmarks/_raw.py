"""The practical lower bound: one aiohttp WebSocket to ``/llm`` and msgspec, nothing else.

``RawClient.rpc_direct`` is a plain request/response loop (send, then read frames in the
calling task until the answer arrives); ``RawClient.rpc`` multiplexes concurrent calls by
``callId`` with one reader task and a future per call.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

import aiohttp
import msgspec
from msgspec import UNSET, Raw, UnsetType

from lmstudio_async._io.transport import MAX_MESSAGE_BYTES

_TEXT = aiohttp.WSMsgType.TEXT


class _Envelope(msgspec.Struct):
    type: str
    callId: int | UnsetType = UNSET  # wire names
    channelId: int | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    message: Raw | UnsetType = UNSET


class _Packet(msgspec.Struct):
    type: str


_DECODE_ENVELOPE = msgspec.json.Decoder(_Envelope).decode
_DECODE_PACKET = msgspec.json.Decoder(_Packet).decode
_ENCODE = msgspec.json.encode
_decode = msgspec.json.decode
_TERMINAL = frozenset({"alreadyLoaded", "success", "loadSuccess"})


class RawClient:
    """Minimal client of the ``llm`` namespace."""

    def __init__(self, host: str) -> None:
        self.url = f"ws://{host}/llm"
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.next_id = 0
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.session = aiohttp.ClientSession()
        # The same message size limit as ours (lmstudio_async._io.transport.MAX_MESSAGE_BYTES).
        self.ws = ws = await self.session.ws_connect(
            self.url, autoping=True, max_msg_size=MAX_MESSAGE_BYTES
        )
        auth = {
            "authVersion": 1,
            "clientIdentifier": "guest:" + base64.b64encode(secrets.token_bytes(18)).decode(),
            "clientPasskey": base64.b64encode(secrets.token_bytes(18)).decode(),
        }
        await ws.send_frame(_ENCODE(auth), _TEXT)
        reply = await ws.receive()
        if not _decode(reply.data).get("success"):
            raise RuntimeError(f"authentication failed: {reply.data!r}")

    async def close(self) -> None:
        # A full close handshake (our close frame, then the server's answer), as ours does.
        # Closing first also ends the reader (it sees CLOSING). Cancelling the reader first
        # would skip the handshake: aiohttp marks a socket whose receive() was cancelled as
        # aborted (1006), and its close() then sends a close frame without waiting for the
        # answer, one round trip less than a clean close.
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
            self.reader = None
        if self.session is not None:
            await self.session.close()

    def _frame(self, endpoint: str, parameter: Any = UNSET) -> tuple[int, bytes]:
        call_id = self.next_id
        self.next_id += 1
        if parameter is UNSET:
            msg: dict[str, Any] = {"type": "rpcCall", "endpoint": endpoint, "callId": call_id}
        else:
            msg = {
                "type": "rpcCall",
                "endpoint": endpoint,
                "callId": call_id,
                "parameter": parameter,
            }
        return call_id, _ENCODE(msg)

    # --- sequential: plain request/response -------------------------------------------

    async def rpc_direct(self, endpoint: str, parameter: Any = UNSET) -> Any:
        ws = self.ws
        assert ws is not None
        assert self.reader is None
        call_id, frame = self._frame(endpoint, parameter)
        await ws.send_frame(frame, _TEXT)
        while True:
            msg = await ws.receive()
            env = _DECODE_ENVELOPE(msg.data)
            if env.type == "rpcResult" and env.callId == call_id:
                return None if env.result is UNSET else _decode(env.result)

    async def channel_direct(self, endpoint: str, creation: Any) -> Any:
        """Open a channel and read it up to its terminal packet; returns that packet."""
        ws = self.ws
        assert ws is not None
        assert self.reader is None
        channel_id = self.next_id
        self.next_id += 1
        frame = _ENCODE(
            {
                "type": "channelCreate",
                "endpoint": endpoint,
                "channelId": channel_id,
                "creationParameter": creation,
            }
        )
        await ws.send_frame(frame, _TEXT)
        while True:
            msg = await ws.receive()
            env = _DECODE_ENVELOPE(msg.data)
            if env.channelId != channel_id:
                continue  # e.g. the channelClose of the previous call
            if env.type == "channelSend" and env.message is not UNSET:
                if _DECODE_PACKET(env.message).type in _TERMINAL:
                    return _decode(env.message)
            elif env.type in ("channelClose", "channelError"):
                raise RuntimeError(f"channel ended early: {msg.data!r}")

    # --- concurrent: multiplexed by callId ---------------------------------------------

    def start_reader(self) -> None:
        assert self.ws is not None
        self.reader = asyncio.get_running_loop().create_task(self._read(self.ws))

    async def stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
            self.reader = None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        calls = self.calls
        while True:
            msg = await ws.receive()
            if msg.type is not _TEXT:
                return
            env = _DECODE_ENVELOPE(msg.data)
            if env.type == "rpcResult":
                fut = calls.pop(env.callId, None)  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result(None if env.result is UNSET else env.result)

    async def rpc(self, endpoint: str, parameter: Any = UNSET) -> Any:
        ws = self.ws
        assert ws is not None
        assert self.reader is not None
        call_id, frame = self._frame(endpoint, parameter)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls[call_id] = fut
        await ws.send_frame(frame, _TEXT)
        result = await fut
        return None if result is None else _decode(result)

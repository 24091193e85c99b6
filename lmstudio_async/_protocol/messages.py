"""Wire messages of LM Studio's WebSocket multiplexing protocol.

Every frame is one JSON object. Client-to-server and server-to-client
messages are msgspec tagged unions discriminated by ``type`` (protocol.md
§2.1). Payload fields typed ``any`` on the wire (``parameter``, ``result``,
``message``, ``error``) are kept as :class:`msgspec.Raw` so the demultiplexer
routes a frame without decoding its payload; the consumer decodes the payload
with a typed decoder for its endpoint.

Fields that are absent on the wire use :data:`msgspec.UNSET`, so encoding omits
them exactly as the official clients do (``null`` would fail the server's
schemas).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, Raw, UnsetType

from ..errors import ProtocolError

__all__ = [
    "AuthPacket",
    "AuthResult",
    "ChannelAck",
    "ChannelClose",
    "ChannelCreate",
    "ChannelError",
    "ChannelSend",
    "ClientMessage",
    "CommunicationWarning",
    "KeepAlive",
    "KeepAliveAck",
    "RpcCall",
    "RpcError",
    "RpcResult",
    "ServerMessage",
    "SignalError",
    "SignalUpdate",
    "WritableSignalError",
    "WritableSignalUpdate",
    "client_message_decoder",
    "encode",
    "server_message_decoder",
]


class _Message(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, kw_only=True):
    """Base of every multiplexed message (not itself on the wire)."""


# --- authentication (before the multiplexed protocol starts) -----------------


class AuthPacket(msgspec.Struct, rename="camel", kw_only=True):
    """First client frame on every socket (protocol.md §1.4)."""

    client_identifier: str
    client_passkey: str
    auth_version: int = 1


class AuthResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The server's first frame: ``{"success": true}`` or a failure text."""

    success: bool
    error: str | UnsetType = UNSET


# --- messages both sides may send ---------------------------------------------


class KeepAlive(_Message, tag="keepAlive"):
    """Liveness probe; the server answers :class:`KeepAliveAck`."""


class KeepAliveAck(_Message, tag="keepAliveAck"):
    """Answer to :class:`KeepAlive`."""


class CommunicationWarning(_Message, tag="communicationWarning"):
    """A complaint about a message the peer could not process (§2.7)."""

    warning: str
    kind: str | UnsetType = UNSET


class ChannelSend(_Message, tag="channelSend"):
    """One packet on an open channel."""

    channel_id: int
    message: Raw
    ack_id: int | UnsetType = UNSET


class ChannelAck(_Message, tag="channelAck"):
    """Acknowledgement of a ``channelSend`` that carried an ``ackId``."""

    channel_id: int
    ack_id: int


# --- client to server ---------------------------------------------------------


class RpcCall(_Message, tag="rpcCall"):
    """Request of a one-shot remote call."""

    endpoint: str
    call_id: int
    parameter: Any = UNSET


class ChannelCreate(_Message, tag="channelCreate"):
    """Opens a channel (a long operation such as a model load)."""

    endpoint: str
    channel_id: int
    creation_parameter: Any = UNSET


# --- server to client ---------------------------------------------------------


class RpcResult(_Message, tag="rpcResult"):
    """Successful RPC reply; ``result`` is absent for void results."""

    call_id: int
    result: Raw | UnsetType = UNSET


class RpcError(_Message, tag="rpcError"):
    """Failed RPC reply carrying a serialized server error."""

    call_id: int
    error: Raw


class ChannelClose(_Message, tag="channelClose"):
    """The channel ended normally (after its terminal packet)."""

    channel_id: int


class ChannelError(_Message, tag="channelError"):
    """The channel ended with a serialized server error."""

    channel_id: int
    error: Raw


class SignalUpdate(_Message, tag="signalUpdate"):
    """Signal patch (unused by model management; decoded generically)."""

    subscribe_id: int
    patches: Raw
    tags: Raw = Raw(b"[]")


class SignalError(_Message, tag="signalError"):
    """Signal failure (unused by model management)."""

    subscribe_id: int
    error: Raw


class WritableSignalUpdate(_Message, tag="writableSignalUpdate"):
    """Writable-signal patch (unused by model management)."""

    subscribe_id: int
    patches: Raw
    tags: Raw = Raw(b"[]")


class WritableSignalError(_Message, tag="writableSignalError"):
    """Writable-signal failure (unused by model management)."""

    subscribe_id: int
    error: Raw


ServerMessage = (
    RpcResult
    | RpcError
    | ChannelSend
    | ChannelClose
    | ChannelError
    | ChannelAck
    | CommunicationWarning
    | KeepAliveAck
    | KeepAlive
    | SignalUpdate
    | SignalError
    | WritableSignalUpdate
    | WritableSignalError
)
"""Every message a server may send after authentication."""

ClientMessage = (
    RpcCall | ChannelCreate | ChannelSend | ChannelAck | KeepAlive | CommunicationWarning
)
"""Every message a client sends after authentication (the ones this SDK uses)."""

server_message_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
client_message_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
auth_result_decoder: msgspec.json.Decoder[AuthResult] = msgspec.json.Decoder(AuthResult)

_encoder = msgspec.json.Encoder()
encode = _encoder.encode
"""Encode any message (or plain JSON value) to UTF-8 JSON bytes."""


_ReplyT = TypeVar("_ReplyT")


def decode_reply(decoder: msgspec.json.Decoder[_ReplyT], raw: Raw, what: str) -> _ReplyT:
    """Decode the payload of a reply routed by :class:`Connection` with its endpoint's typed
    decoder; a payload of the wrong shape is a :class:`ProtocolError` naming ``what``."""
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"LM Studio sent an invalid {what}: {exc}") from exc

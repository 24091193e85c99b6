"""Sans-I/O state machine of one authenticated namespace socket.

:class:`Connection` allocates call and channel ids, builds outgoing frames and
demultiplexes incoming frames into :class:`Event` objects. It never touches a
socket and never awaits: the I/O layer feeds it the text of every received
frame and sends the bytes it returns.

Each pending RPC or open channel is registered with an opaque *target* chosen
by the I/O layer (a future, a channel queue …); routed events carry that
target back, so the I/O layer needs no second lookup. Frames that cannot be
routed, or cannot be decoded at all, come back as :class:`Unroutable` and
:class:`Malformed` events — :meth:`Connection.receive` never raises.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, Raw

from ..errors import LMStudioValueError, UnsupportedEndpointError
from .errors import SerializedError, decode_serialized_error
from .messages import (
    AuthPacket,
    AuthResult,
    ChannelAck,
    ChannelClose,
    ChannelCreate,
    ChannelError,
    ChannelSend,
    CommunicationWarning,
    KeepAlive,
    KeepAliveAck,
    RpcCall,
    RpcError,
    RpcResult,
    auth_result_decoder,
    encode,
    server_message_decoder,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "PROBED_ENDPOINTS",
    "ChannelClosed",
    "ChannelFailed",
    "ChannelMessage",
    "Connection",
    "ConnectionState",
    "EndpointUnsupported",
    "Event",
    "KeepAliveAnswered",
    "Malformed",
    "PeerKeepAlive",
    "RpcFailed",
    "RpcSucceeded",
    "Unroutable",
    "Warning_",
    "unsupported_error",
]

T = TypeVar("T")

#: Endpoints this client uses that LM Studio releases still in use may lack (an older
#: server answers a request to one with only a warning): ``estimateModelUsage`` (in
#: lmstudio-js since 2025-09) and ``completeRawText`` (since 2026-07). LM Studio sends at
#: most five warnings per connection, so the I/O layer sends one request to such an
#: endpoint at a time until the connection has seen it answered (``Connection.confirmed``)
#: or refused: concurrent first calls then draw one warning, not one each.
PROBED_ENDPOINTS: frozenset[str] = frozenset({"completeRawText", "estimateModelUsage"})

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Frames larger than this are dropped (reported as :class:`Malformed`)."""

_CANCEL = encode({"type": "cancel"})
_KEEP_ALIVE = encode(KeepAlive())
_KEEP_ALIVE_ACK = encode(KeepAliveAck())


class ConnectionState(enum.Enum):
    """Lifecycle of a namespace socket."""

    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class Event:
    """Base class of everything :meth:`Connection.receive` reports."""

    __slots__ = ()


class RpcSucceeded(Event, Generic[T]):
    """An RPC finished; ``result`` is ``None`` for a void result."""

    __slots__ = ("result", "target")

    def __init__(self, target: T, result: Raw | None) -> None:
        self.target = target
        self.result = result


class RpcFailed(Event, Generic[T]):
    """An RPC failed with a server error."""

    __slots__ = ("error", "target")

    def __init__(self, target: T, error: SerializedError) -> None:
        self.target = target
        self.error = error


class ChannelMessage(Event, Generic[T]):
    """A packet arrived on an open channel (payload still undecoded)."""

    __slots__ = ("message", "target")

    def __init__(self, target: T, message: Raw) -> None:
        self.target = target
        self.message = message


class ChannelClosed(Event, Generic[T]):
    """The server closed a channel normally."""

    __slots__ = ("target",)

    def __init__(self, target: T) -> None:
        self.target = target


class ChannelFailed(Event, Generic[T]):
    """The server ended a channel with an error."""

    __slots__ = ("error", "target")

    def __init__(self, target: T, error: SerializedError) -> None:
        self.target = target
        self.error = error


class Warning_(Event):
    """A top-level ``communicationWarning`` from the server."""

    __slots__ = ("kind", "warning")

    def __init__(self, warning: str, kind: str | None) -> None:
        self.warning = warning
        self.kind = kind

    def __repr__(self) -> str:
        return f"Warning_(kind={self.kind!r}, warning={self.warning!r})"


class EndpointUnsupported(Event, Generic[T]):
    """The server does not know (or does not handle) ``endpoint``: its warning, and the
    calls or channels to that endpoint that were waiting (no longer registered), each to
    be failed with :func:`unsupported_error`. Later requests to it raise that error at
    once (see :meth:`Connection.start_rpc`)."""

    __slots__ = ("endpoint", "targets", "warning")

    def __init__(self, endpoint: str, warning: str, targets: list[T]) -> None:
        self.endpoint = endpoint
        self.warning = warning
        self.targets = targets


#: The warning LM Studio sends for a request to an endpoint it does not have
#: (``ServerPort``: kinds ``rpcEndpointUnknown`` / ``rpcEndpointUnhandled`` /
#: ``channelEndpointUnknown`` / ``channelEndpointUnhandled``); it names the endpoint.
_ENDPOINT_WARNING = re.compile(
    r"^Received (rpcCall|channelCreate) for un(?:known|handled) endpoint, endpoint = (\S+)$"
)


class KeepAliveAnswered(Event):
    """The server answered our ``keepAlive``."""

    __slots__ = ()


class PeerKeepAlive(Event):
    """The server sent ``keepAlive``; send :attr:`reply` back."""

    __slots__ = ()
    reply = _KEEP_ALIVE_ACK


class Unroutable(Event):
    """A well-formed frame that matches nothing pending (late, unknown or unsolicited)."""

    __slots__ = ("detail", "message_type")

    def __init__(self, message_type: str, detail: str) -> None:
        self.message_type = message_type
        self.detail = detail

    def __repr__(self) -> str:
        return f"Unroutable({self.message_type!r}, {self.detail!r})"


class Malformed(Event):
    """A frame that is not a valid protocol message; it was dropped."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def __repr__(self) -> str:
        return f"Malformed({self.detail!r})"


class Connection(Generic[T]):
    """Protocol state of one namespace socket; see the module docstring.

    Ids start at 0 and keep counting for the object's lifetime; calls and
    channels use separate counters, as the server keeps separate id spaces.
    """

    __slots__ = (
        "_call_endpoints",
        "_calls",
        "_channel_endpoints",
        "_channels",
        "_next_call",
        "_next_channel",
        "confirmed",
        "max_frame_bytes",
        "state",
        "unsupported",
    )

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.state = ConnectionState.AUTHENTICATING
        self.max_frame_bytes = max_frame_bytes
        self._next_call = 0
        self._next_channel = 0
        self._calls: dict[int, T] = {}
        self._channels: dict[int, T] = {}
        # Each pending request's endpoint, for an "unknown endpoint" warning to find them.
        self._call_endpoints: dict[int, str] = {}
        self._channel_endpoints: dict[int, str] = {}
        self.unsupported: dict[str, str] = {}
        """Endpoints this server said it does not have, with its warning."""
        self.confirmed: set[str] = set()
        """:data:`PROBED_ENDPOINTS` this server has answered (the I/O layer records them)."""

    # --- authentication -----------------------------------------------------

    @staticmethod
    def auth_frame(client_identifier: str, client_passkey: str) -> bytes:
        """The first frame to send on a fresh socket."""
        return encode(
            AuthPacket(client_identifier=client_identifier, client_passkey=client_passkey)
        )

    def receive_auth(self, data: str | bytes) -> AuthResult:
        """Decode the server's answer to the auth packet.

        On success the connection becomes :attr:`ConnectionState.OPEN`; on a
        refusal it becomes closed and the result (with ``success`` false) is
        returned. Raises :class:`msgspec.DecodeError` /
        :class:`msgspec.ValidationError` when the frame is not an auth result.
        """
        result = auth_result_decoder.decode(data)
        self.state = ConnectionState.OPEN if result.success else ConnectionState.CLOSED
        return result

    # --- outgoing -------------------------------------------------------------

    def start_rpc(self, target: T, endpoint: str, parameter: Any = UNSET) -> tuple[int, bytes]:
        """Register an RPC and return ``(call_id, frame)``. Raises
        :class:`LMStudioValueError`, registering nothing, if ``parameter`` cannot be sent,
        and :class:`UnsupportedEndpointError` if the server said it lacks ``endpoint``."""
        if self.unsupported and endpoint in self.unsupported:
            raise unsupported_error(endpoint, self.unsupported[endpoint])
        call_id = self._next_call
        frame = _encode_request(
            RpcCall(endpoint=endpoint, call_id=call_id, parameter=parameter), endpoint
        )
        self._next_call = call_id + 1
        self._calls[call_id] = target
        self._call_endpoints[call_id] = endpoint
        return call_id, frame

    def start_channel(
        self, target: T, endpoint: str, creation_parameter: Any = UNSET
    ) -> tuple[int, bytes]:
        """Register a channel and return ``(channel_id, frame)``. Raises as
        :meth:`start_rpc` does."""
        if self.unsupported and endpoint in self.unsupported:
            raise unsupported_error(endpoint, self.unsupported[endpoint])
        channel_id = self._next_channel
        frame = _encode_request(
            ChannelCreate(
                endpoint=endpoint, channel_id=channel_id, creation_parameter=creation_parameter
            ),
            endpoint,
        )
        self._next_channel = channel_id + 1
        self._channels[channel_id] = target
        self._channel_endpoints[channel_id] = endpoint
        return channel_id, frame

    @staticmethod
    def channel_frame(channel_id: int, message: Any) -> bytes:
        """A ``channelSend`` frame carrying ``message`` (any JSON value)."""
        return encode(ChannelSend(channel_id=channel_id, message=Raw(encode(message))))

    @staticmethod
    def cancel_frame(channel_id: int) -> bytes:
        """The endpoint-level ``{"type": "cancel"}`` packet for a channel."""
        return encode(ChannelSend(channel_id=channel_id, message=Raw(_CANCEL)))

    @staticmethod
    def keep_alive_frame() -> bytes:
        """A ``keepAlive`` frame; the server answers ``keepAliveAck``."""
        return _KEEP_ALIVE

    def forget_call(self, call_id: int) -> None:
        """Stop waiting for an RPC (timeout or cancellation); a late reply becomes unroutable."""
        self._calls.pop(call_id, None)
        self._call_endpoints.pop(call_id, None)

    def forget_channel(self, channel_id: int) -> None:
        """Stop routing a channel; later packets for it become unroutable."""
        self._channels.pop(channel_id, None)
        self._channel_endpoints.pop(channel_id, None)

    @property
    def pending_calls(self) -> int:
        """Number of RPCs awaiting a reply."""
        return len(self._calls)

    @property
    def open_channels(self) -> int:
        """Number of channels not yet closed."""
        return len(self._channels)

    def close(self) -> list[T]:
        """Mark the connection closed and hand back every pending target (to fail them)."""
        self.state = ConnectionState.CLOSED
        targets = [*self._calls.values(), *self._channels.values()]
        self._calls.clear()
        self._channels.clear()
        self._call_endpoints.clear()
        self._channel_endpoints.clear()
        return targets

    # --- incoming -------------------------------------------------------------

    def receive(self, data: str | bytes) -> Event:
        """Demultiplex one received frame. Never raises."""
        if len(data) > self.max_frame_bytes:
            return Malformed(f"frame of {len(data)} bytes exceeds {self.max_frame_bytes}")
        try:
            msg = server_message_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Malformed(f"{exc} in frame {_preview(data)}")
        # Most frequent first: channel packets (progress, fragments) and RPC results.
        if type(msg) is ChannelSend:
            target = self._channels.get(msg.channel_id)
            if target is None:
                return Unroutable("channelSend", f"unknown channelId {msg.channel_id}")
            return ChannelMessage(target, msg.message)
        if type(msg) is RpcResult:
            target = self._calls.pop(msg.call_id, None)
            if target is None:
                return Unroutable("rpcResult", f"unknown callId {msg.call_id}")
            self._call_endpoints.pop(msg.call_id, None)
            return RpcSucceeded(target, None if msg.result is UNSET else msg.result)
        if type(msg) is RpcError:
            target = self._calls.pop(msg.call_id, None)
            if target is None:
                return Unroutable("rpcError", f"unknown callId {msg.call_id}")
            self._call_endpoints.pop(msg.call_id, None)
            return RpcFailed(target, decode_serialized_error(msg.error))
        if type(msg) is ChannelClose:
            target = self._channels.pop(msg.channel_id, None)
            if target is None:
                return Unroutable("channelClose", f"unknown channelId {msg.channel_id}")
            self._channel_endpoints.pop(msg.channel_id, None)
            return ChannelClosed(target)
        if type(msg) is ChannelError:
            target = self._channels.pop(msg.channel_id, None)
            if target is None:
                return Unroutable("channelError", f"unknown channelId {msg.channel_id}")
            self._channel_endpoints.pop(msg.channel_id, None)
            return ChannelFailed(target, decode_serialized_error(msg.error))
        if type(msg) is CommunicationWarning:
            found = _ENDPOINT_WARNING.match(msg.warning)
            if found is not None:
                return self._unsupported(msg.warning, found[1] == "rpcCall", found[2])
            return Warning_(msg.warning, None if msg.kind is UNSET else msg.kind)
        if type(msg) is KeepAliveAck:
            return KeepAliveAnswered()
        if type(msg) is KeepAlive:
            return PeerKeepAlive()
        if type(msg) is ChannelAck:
            # Neither SDK uses acks; an ack is harmless, so report it but do nothing.
            return Unroutable("channelAck", f"ack {msg.ack_id} on channel {msg.channel_id}")
        # Signals: this client never subscribes, so any signal message is unsolicited.
        return Unroutable(type(msg).__struct_config__.tag or "unknown", "unsolicited message")  # type: ignore[arg-type]


    def _unsupported(self, warning: str, rpc: bool, endpoint: str) -> EndpointUnsupported[T]:
        self.unsupported[endpoint] = warning
        if rpc:
            registry, endpoints = self._calls, self._call_endpoints
        else:
            registry, endpoints = self._channels, self._channel_endpoints
        ids = [i for i, name in endpoints.items() if name == endpoint]
        for i in ids:
            del endpoints[i]
        return EndpointUnsupported(endpoint, warning, [registry.pop(i) for i in ids])


def unsupported_error(endpoint: str, warning: str) -> UnsupportedEndpointError:
    """The error of a request to an endpoint the server said (``warning``) it lacks."""
    return UnsupportedEndpointError(
        f"this LM Studio does not support {endpoint!r}, which the call needs",
        endpoint=endpoint,
        cause=warning,
        suggestion="update LM Studio to a version that has this feature",
    )


def _encode_request(message: Any, endpoint: str) -> bytes:
    try:
        return encode(message)
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError) as exc:
        # e.g. a lone surrogate in a text ("\ud83d" from a JSON source cut mid-emoji)
        raise LMStudioValueError(
            f"the request to {endpoint!r} cannot be sent as JSON: {exc}"
        ) from None


def _preview(data: str | bytes, limit: int = 80) -> str:
    text = data if isinstance(data, str) else data[:limit].decode("utf-8", "replace")
    return repr(text[:limit] + ("…" if len(data) > limit else ""))

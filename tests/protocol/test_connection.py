"""The sans-I/O demultiplexer, without sockets: ids, routing, bad frames, fuzzing."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmstudio_async as lms
from lmstudio_async._protocol.connection import (
    ChannelClosed,
    ChannelFailed,
    ChannelMessage,
    Connection,
    ConnectionState,
    EndpointUnsupported,
    Event,
    KeepAliveAnswered,
    Malformed,
    PeerKeepAlive,
    RpcFailed,
    RpcSucceeded,
    Unroutable,
    Warning_,
)
from lmstudio_async._protocol.messages import (
    ChannelCreate,
    RpcCall,
    client_message_decoder,
    encode,
)


def frame(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_auth_frame_and_reply() -> None:
    conn: Connection[str] = Connection()
    sent = json.loads(Connection.auth_frame("guest:abc", "pass"))
    assert sent == {"authVersion": 1, "clientIdentifier": "guest:abc", "clientPasskey": "pass"}
    assert conn.state is ConnectionState.AUTHENTICATING
    assert conn.receive_auth(b'{"success": true}').success
    assert conn.state is ConnectionState.OPEN


def test_auth_refusal_closes() -> None:
    conn: Connection[str] = Connection()
    result = conn.receive_auth(b'{"success": false, "error": "bad passkey"}')
    assert not result.success
    assert result.error == "bad passkey"
    assert conn.state is ConnectionState.CLOSED


def test_auth_reply_garbage_raises_decode_error() -> None:
    conn: Connection[str] = Connection()
    with pytest.raises(msgspec.DecodeError):
        conn.receive_auth(b"<html>")
    with pytest.raises(msgspec.ValidationError):
        conn.receive_auth(b'{"type": "rpcResult", "callId": 1}')


def test_rpc_ids_are_sequential_and_void_parameter_is_omitted() -> None:
    conn: Connection[str] = Connection()
    ids = []
    for _ in range(3):
        call_id, data = conn.start_rpc("t", "listLoaded")
        ids.append(call_id)
        assert json.loads(data) == {"type": "rpcCall", "endpoint": "listLoaded", "callId": call_id}
    assert ids == [0, 1, 2]
    assert conn.pending_calls == 3


def test_rpc_parameter_is_encoded_and_decodes_as_client_message() -> None:
    conn: Connection[str] = Connection()
    _, data = conn.start_rpc("t", "unloadModel", {"identifier": "x"})
    msg = client_message_decoder.decode(data)
    assert isinstance(msg, RpcCall)
    assert msg.parameter == {"identifier": "x"}


def test_channel_and_call_ids_are_separate_spaces() -> None:
    conn: Connection[str] = Connection()
    call_id, _ = conn.start_rpc("call", "listLoaded")
    channel_id, data = conn.start_channel("chan", "loadModel", {"modelKey": "k"})
    assert call_id == channel_id == 0
    msg = client_message_decoder.decode(data)
    assert isinstance(msg, ChannelCreate)
    assert msg.creation_parameter == {"modelKey": "k"}
    # a result for call 0 goes to the call, a packet for channel 0 to the channel
    ev = conn.receive(
        frame({"type": "channelSend", "channelId": 0, "message": {"type": "progress"}})
    )
    assert isinstance(ev, ChannelMessage)
    assert ev.target == "chan"
    assert json.loads(bytes(ev.message)) == {"type": "progress"}
    ev2 = conn.receive(frame({"type": "rpcResult", "callId": 0, "result": [1]}))
    assert isinstance(ev2, RpcSucceeded)
    assert ev2.target == "call"


def test_rpc_result_void_and_valued() -> None:
    conn: Connection[str] = Connection()
    conn.start_rpc("a", "unloadModel", {"identifier": "x"})
    conn.start_rpc("b", "listLoaded")
    ev = conn.receive(frame({"type": "rpcResult", "callId": 0}))
    assert isinstance(ev, RpcSucceeded)
    assert ev.result is None
    ev = conn.receive(frame({"type": "rpcResult", "callId": 1, "result": []}))
    assert isinstance(ev, RpcSucceeded)
    assert ev.result is not None
    assert bytes(ev.result) == b"[]"
    assert conn.pending_calls == 0


def test_rpc_error_is_decoded() -> None:
    conn: Connection[str] = Connection()
    conn.start_rpc("a", "unloadModel", {"identifier": "x"})
    ev = conn.receive(
        frame(
            {
                "type": "rpcError",
                "callId": 0,
                "error": {
                    "title": "No loaded model matches",
                    "displayData": {"code": "generic.noModelMatchingQuery"},
                },
            }
        )
    )
    assert isinstance(ev, RpcFailed)
    assert ev.error.title == "No loaded model matches"
    assert ev.error.display_data == {"code": "generic.noModelMatchingQuery"}


def test_channel_close_and_error_end_the_channel() -> None:
    conn: Connection[str] = Connection()
    conn.start_channel("a", "loadModel")
    conn.start_channel("b", "loadModel")
    ev = conn.receive(frame({"type": "channelClose", "channelId": 0}))
    assert isinstance(ev, ChannelClosed)
    assert ev.target == "a"
    ev = conn.receive(frame({"type": "channelError", "channelId": 1, "error": {"title": "x"}}))
    assert isinstance(ev, ChannelFailed)
    assert ev.error.title == "x"
    assert conn.open_channels == 0
    # late packets for ended channels are unroutable, not errors
    late = conn.receive(frame({"type": "channelSend", "channelId": 0, "message": {}}))
    assert isinstance(late, Unroutable)


def test_forget_makes_late_replies_unroutable() -> None:
    conn: Connection[str] = Connection()
    call_id, _ = conn.start_rpc("a", "listLoaded")
    conn.forget_call(call_id)
    assert isinstance(conn.receive(frame({"type": "rpcResult", "callId": call_id})), Unroutable)
    channel_id, _ = conn.start_channel("c", "loadModel")
    conn.forget_channel(channel_id)
    assert isinstance(
        conn.receive(frame({"type": "channelClose", "channelId": channel_id})), Unroutable
    )


def test_top_level_messages() -> None:
    conn: Connection[str] = Connection()
    ev = conn.receive(
        frame({"type": "communicationWarning", "warning": "w", "kind": "rpcEndpointUnknown"})
    )
    assert isinstance(ev, Warning_)
    assert (ev.warning, ev.kind) == ("w", "rpcEndpointUnknown")
    ev = conn.receive(frame({"type": "communicationWarning", "warning": "w"}))
    assert isinstance(ev, Warning_)
    assert ev.kind is None
    assert isinstance(conn.receive(b'{"type":"keepAliveAck"}'), KeepAliveAnswered)
    ka = conn.receive(b'{"type":"keepAlive"}')
    assert isinstance(ka, PeerKeepAlive)
    assert json.loads(ka.reply) == {"type": "keepAliveAck"}
    sig = conn.receive(frame({"type": "signalUpdate", "subscribeId": 1, "patches": [], "tags": []}))
    assert isinstance(sig, Unroutable)
    assert sig.message_type == "signalUpdate"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"type": "nope"}',
        b'{"type": "rpcResult"}',
        b'{"type": "rpcResult", "callId": "0"}',
        b'{"type": "channelSend", "channelId": 0}',
        b'{"callId": 0, "result": 1}',
        b"\xff\xfe",
        '{"type": "rpcResult", "callId": 1.5}',
    ],
)
def test_malformed_frames_are_reported_not_raised(data: bytes | str) -> None:
    conn: Connection[str] = Connection()
    conn.start_rpc("a", "listLoaded")
    ev = conn.receive(data)
    assert isinstance(ev, Malformed)
    assert conn.pending_calls == 1  # state untouched


def test_oversized_frame_is_dropped() -> None:
    conn: Connection[str] = Connection(max_frame_bytes=100)
    conn.start_rpc("a", "listLoaded")
    ev = conn.receive(frame({"type": "rpcResult", "callId": 0, "result": "x" * 200}))
    assert isinstance(ev, Malformed)
    assert "exceeds" in ev.detail
    assert conn.pending_calls == 1


def test_close_hands_back_every_pending_target() -> None:
    conn: Connection[str] = Connection()
    conn.receive_auth(b'{"success": true}')
    conn.start_rpc("r1", "listLoaded")
    conn.start_channel("c1", "loadModel")
    assert sorted(conn.close()) == ["c1", "r1"]
    assert conn.state is ConnectionState.CLOSED
    assert conn.pending_calls == conn.open_channels == 0


def test_cancel_and_keepalive_frames() -> None:
    assert json.loads(Connection.cancel_frame(7)) == {
        "type": "channelSend",
        "channelId": 7,
        "message": {"type": "cancel"},
    }
    assert json.loads(Connection.keep_alive_frame()) == {"type": "keepAlive"}
    assert json.loads(Connection.channel_frame(2, {"a": 1})) == {
        "type": "channelSend",
        "channelId": 2,
        "message": {"a": 1},
    }


# --- fuzzing -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
message_types = st.sampled_from(
    [
        "rpcResult",
        "rpcError",
        "channelSend",
        "channelClose",
        "channelError",
        "channelAck",
        "communicationWarning",
        "keepAlive",
        "keepAliveAck",
        "signalUpdate",
        "signalError",
        "writableSignalUpdate",
        "writableSignalError",
        "rpcCall",
        "bogus",
    ]
)
ids = st.integers(-2, 8) | st.text(max_size=2) | st.none()


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    obj: dict[str, Any] = {"type": draw(message_types)}
    for key in ("callId", "channelId", "subscribeId", "ackId"):
        if draw(st.booleans()):
            obj[key] = draw(ids)
    for key in ("result", "message", "error", "warning", "kind", "patches", "tags"):
        if draw(st.integers(0, 3)) == 0:
            obj[key] = draw(json_values)
    data = json.dumps(obj).encode()
    if kind == 1 and data:
        cut = draw(st.integers(0, len(data) - 1))
        data = data[:cut]
    return data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=6))
def test_fuzzed_frames_never_raise_or_corrupt_state(batch: list[bytes]) -> None:
    conn: Connection[str] = Connection()
    calls = {conn.start_rpc(f"call{i}", "listLoaded")[0] for i in range(4)}
    chans = {conn.start_channel(f"chan{i}", "loadModel")[0] for i in range(4)}
    for data in batch:
        ev = conn.receive(data)
        assert isinstance(ev, Event)
        if isinstance(ev, RpcSucceeded | RpcFailed):
            assert ev.target.startswith("call")
        if isinstance(ev, ChannelMessage | ChannelClosed | ChannelFailed):
            assert ev.target.startswith("chan")
    # invariants: nothing pending appeared from nowhere, and ids keep counting
    assert conn.pending_calls <= len(calls)
    assert conn.open_channels <= len(chans)
    next_call, _ = conn.start_rpc("later", "listLoaded")
    assert next_call == 4
    # whatever happened, a well-formed reply to a fresh call is still routed
    ev = conn.receive(encode({"type": "rpcResult", "callId": next_call}))
    assert isinstance(ev, RpcSucceeded)
    assert ev.target == "later"


@pytest.mark.parametrize("bad", ["\ud83d", {"x": object()}], ids=["surrogate", "object"])
def test_a_request_that_cannot_be_encoded_is_a_value_error_and_registers_nothing(
    bad: Any,
) -> None:
    conn: Connection[str] = Connection()
    with pytest.raises(lms.LMStudioValueError, match="'countTokens' cannot be sent as JSON"):
        conn.start_rpc("call", "countTokens", {"inputString": bad})
    with pytest.raises(lms.LMStudioValueError, match="'predict' cannot be sent as JSON"):
        conn.start_channel("channel", "predict", {"history": bad})
    assert (conn.pending_calls, conn.open_channels) == (0, 0)
    call_id, _ = conn.start_rpc("call", "countTokens", {"inputString": "fine"})
    assert call_id == 0  # no id was used up either


def _warning(envelope: str, state: str, endpoint: str) -> bytes:
    kind = ("rpc" if envelope == "rpcCall" else "channel") + f"Endpoint{state.title()}"
    text = f"Received {envelope} for {state} endpoint, endpoint = {endpoint}"
    return frame({"type": "communicationWarning", "warning": text, "kind": kind})


@pytest.mark.parametrize("state", ["unknown", "unhandled"])
def test_an_unknown_endpoint_fails_its_requests_and_is_remembered(state: str) -> None:
    conn: Connection[str] = Connection()
    conn.start_rpc("estimate-1", "estimateModelUsage", {"x": 1})
    conn.start_rpc("list", "listLoaded")
    conn.start_rpc("estimate-2", "estimateModelUsage", {"x": 2})
    conn.start_channel("raw", "completeRawText", {"y": 1})
    conn.start_channel("predict", "predict", {"y": 2})

    event = conn.receive(_warning("rpcCall", state, "estimateModelUsage"))
    assert isinstance(event, EndpointUnsupported)
    assert (event.endpoint, event.targets) == ("estimateModelUsage", ["estimate-1", "estimate-2"])
    assert conn.pending_calls == 1  # listLoaded still waits
    event = conn.receive(_warning("channelCreate", state, "completeRawText"))
    assert isinstance(event, EndpointUnsupported)
    assert event.targets == ["raw"]
    assert conn.open_channels == 1

    # Later requests to them raise before anything is registered or sent.
    for start in (conn.start_rpc, conn.start_channel):
        for endpoint in ("estimateModelUsage", "completeRawText"):
            with pytest.raises(lms.UnsupportedEndpointError) as info:
                start("late", endpoint)
            assert info.value.endpoint == endpoint
            assert "endpoint = " in (info.value.cause or "")
    assert (conn.pending_calls, conn.open_channels) == (1, 1)
    # The others are routed as before.
    assert isinstance(conn.receive(frame({"type": "rpcResult", "callId": 1})), RpcSucceeded)
    event = conn.receive(frame({"type": "channelClose", "channelId": 1}))
    assert isinstance(event, ChannelClosed)
    assert event.target == "predict"


def test_other_warnings_stay_warnings() -> None:
    conn: Connection[str] = Connection()
    conn.start_rpc("call", "getModelInfo", {"x": 1})
    for text in (
        "Received rpcCall with invalid parameter, endpoint = getModelInfo",
        "Received channelSend for unknown channel, channelId = 3",
        "Received rpcCall for unknown endpoint, endpoint = ",
    ):
        event = conn.receive(frame({"type": "communicationWarning", "warning": text}))
        assert isinstance(event, Warning_)
    assert conn.pending_calls == 1
    assert conn.unsupported == {}


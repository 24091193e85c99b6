"""Envelope-level behaviour: silent drops, communicationWarning kinds and cap, void results."""

from __future__ import annotations

import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient, load_param, stack


async def warning(sock, message) -> dict:  # type: ignore[no-untyped-def]
    await sock.send(message)
    reply = await sock.recv()
    assert reply["type"] == "communicationWarning", reply
    assert isinstance(reply["warning"], str)
    return dict(reply)


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[1, 2, 3]",
        '"a string"',
        '{"type": "noSuchType"}',
        '{"type": "rpcCall", "endpoint": "listLoaded"}',
        '{"type": "rpcCall", "endpoint": "listLoaded", "callId": 1.5}',
        '{"type": "rpcCall", "endpoint": 7, "callId": 1}',
        '{"type": "channelClose", "channelId": 1}',
        '{"type": "channelCreate", "endpoint": "loadModel"}',
    ],
)
async def test_malformed_envelopes_dropped_silently(client: RawClient, frame: str) -> None:
    sock = await client.connect("llm")
    await sock.send_raw(frame)
    await sock.barrier()
    await sock.ws.close()


async def test_unknown_rpc_endpoint_warns(client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(sock, {"type": "rpcCall", "endpoint": "noSuchEndpoint", "callId": 1})
    assert w["kind"] == "rpcEndpointUnknown"
    assert w["warning"] == "Received rpcCall for unknown endpoint, endpoint = noSuchEndpoint"
    await sock.ws.close()


async def test_unknown_channel_endpoint_warns(client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(
        sock,
        {"type": "channelCreate", "endpoint": "noSuchChannel", "channelId": 1},
    )
    assert w["kind"] == "channelEndpointUnknown"
    assert w["warning"] == "Received channelCreate for unknown endpoint, endpoint = noSuchChannel"
    await sock.ws.close()


async def test_unhandled_endpoint_warns(client: RawClient) -> None:
    sock = await client.connect("embedding")
    w = await warning(
        sock,
        {"type": "rpcCall", "endpoint": "getBasePredictionConfig", "callId": 1, "parameter": {}},
    )
    assert w["kind"] == "rpcEndpointUnhandled"
    assert w["warning"] == (
        "Received rpcCall for unhandled endpoint, endpoint = getBasePredictionConfig"
    )
    await sock.ws.close()


async def test_null_parameter_warns(client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(
        sock, {"type": "rpcCall", "endpoint": "listLoaded", "callId": 1, "parameter": None}
    )
    assert w["kind"] == "rpcParameterTypeError"
    await sock.ws.close()


@pytest.mark.parametrize("ttl", [0, 1.5, -3, "60", None, True])
async def test_bad_ttl_warns_and_creates_no_channel(
    server: StandInServer, client: RawClient, ttl: object
) -> None:
    sock = await client.connect("llm")
    w = await warning(
        sock,
        {
            "type": "channelCreate",
            "endpoint": "loadModel",
            "channelId": 1,
            "creationParameter": load_param("llama-3.2-1b-instruct", ttlMs=ttl),
        },
    )
    assert w["kind"] == "channelCreationParameterTypeError"
    assert "ttlMs" in w["warning"]
    await sock.barrier()
    assert server.open_channel_count() == 0
    assert server.loaded_instances() == []
    await sock.ws.close()


async def test_bad_load_ttl_on_get_or_load(client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(
        sock,
        {
            "type": "channelCreate",
            "endpoint": "getOrLoad",
            "channelId": 1,
            "creationParameter": {"identifier": "x", "loadTtlMs": 0, "loadConfigStack": stack()},
        },
    )
    assert w["kind"] == "channelCreationParameterTypeError"
    await sock.ws.close()


async def test_other_parameter_errors(client: RawClient) -> None:
    sock = await client.connect("llm")
    bad = [
        ("getModelInfo", {"specifier": {"type": "query", "query": {}}}),  # throwIfNotFound missing
        (
            "getModelInfo",
            {"specifier": {"type": "query", "query": {"identifier": ""}}, "throwIfNotFound": True},
        ),
        ("unloadModel", {}),
    ]
    for endpoint, param in bad:
        w = await warning(
            sock, {"type": "rpcCall", "endpoint": endpoint, "callId": 1, "parameter": param}
        )
        assert w["kind"] == "rpcParameterTypeError"
    await sock.ws.close()


async def test_warnings_capped_at_five(client: RawClient) -> None:
    sock = await client.connect("llm")
    for i in range(5):
        await warning(sock, {"type": "rpcCall", "endpoint": f"nope{i}", "callId": i})
    await sock.send({"type": "rpcCall", "endpoint": "nope", "callId": 9})
    await sock.send({"type": "channelSend", "channelId": 77, "message": {"type": "cancel"}})
    await sock.barrier()  # still alive
    await sock.ws.close()


async def test_channel_unknown_warning(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(sock, {"type": "channelSend", "channelId": 5, "message": {"type": "cancel"}})
    assert w["kind"] == "channelUnknown"
    w = await warning(sock, {"type": "channelAck", "channelId": 5, "ackId": 0})
    assert w["kind"] == "channelUnknown"
    assert server.cancel_count == 1
    await sock.ws.close()


async def test_channel_already_open(client: RawClient) -> None:
    sock = await client.connect("system")
    await sock.send({"type": "channelCreate", "endpoint": "alive", "channelId": 3})
    w = await warning(sock, {"type": "channelCreate", "endpoint": "alive", "channelId": 3})
    assert w["kind"] == "channelAlreadyOpen"
    await sock.ws.close()


async def test_invalid_channel_message(client: RawClient) -> None:
    sock = await client.connect("system")
    await sock.send({"type": "channelCreate", "endpoint": "alive", "channelId": 3})
    w = await warning(sock, {"type": "channelSend", "channelId": 3, "message": {"type": "bogus"}})
    assert w["kind"] == "channelMessageTypeError"
    await sock.ws.close()


async def test_signal_subscribe_warns(client: RawClient) -> None:
    sock = await client.connect("llm")
    w = await warning(
        sock,
        {"type": "signalSubscribe", "endpoint": "x", "subscribeId": 0, "creationParameter": {}},
    )
    assert w["kind"] == "signalEndpointUnknown"
    await sock.send({"type": "signalUnsubscribe", "subscribeId": 4})
    await sock.barrier()
    await sock.ws.close()


async def test_void_results_omit_result(server: StandInServer, client: RawClient) -> None:
    server.preload("llama-3.2-1b-instruct")
    llm = await client.connect("llm")
    reply = await llm.rpc("unloadModel", {"identifier": "llama-3.2-1b-instruct"})
    assert reply == {"type": "rpcResult", "callId": reply["callId"]}
    reply = await llm.rpc(
        "getModelInfo",
        {"specifier": {"type": "query", "query": {"identifier": "gone"}}, "throwIfNotFound": False},
    )
    assert reply == {"type": "rpcResult", "callId": reply["callId"]}
    system = await client.connect("system")
    reply = await system.rpc("notify", {"title": "Hello", "description": "World"})
    assert "result" not in reply
    assert server.notifications() == [{"title": "Hello", "description": "World"}]
    await llm.ws.close()
    await system.ws.close()


async def test_separate_id_spaces(client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.send(
        {
            "type": "channelCreate",
            "endpoint": "loadModel",
            "channelId": 1,
            "creationParameter": load_param("smollm2-135m-instruct"),
        }
    )
    await sock.send({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1})
    seen_result = False
    while True:
        frame = await sock.recv()
        if frame["type"] == "rpcResult":
            assert frame["callId"] == 1
            seen_result = True
        if frame["type"] == "channelClose":
            assert frame["channelId"] == 1
            break
    assert seen_result
    # the channel id may be reused once closed
    frames = await sock.collect(
        await _reopen(sock, 1, load_param("smollm2-135m-instruct", identifier="second"))
    )
    assert frames[-1]["type"] == "channelClose"
    await sock.ws.close()


async def _reopen(sock, channel_id: int, creation: dict) -> int:  # type: ignore[no-untyped-def]
    await sock.send(
        {
            "type": "channelCreate",
            "endpoint": "loadModel",
            "channelId": channel_id,
            "creationParameter": creation,
        }
    )
    return channel_id


async def test_no_unsolicited_frames(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    frames = await llm.channel("loadModel", load_param("smollm2-135m-instruct"))
    assert all("ackId" not in f for f in frames)
    server.advance_clock(10_000)
    await llm.expect_nothing(0.2)
    sent_types = {
        f.raw if isinstance(f.raw, str) else "" for f in server.sent_frames(namespace="llm")
    }
    assert not any('"keepAliveAck"' in t or '"channelAck"' in t for t in sent_types)
    await llm.ws.close()


async def test_client_warning_is_only_logged(client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.send({"type": "communicationWarning", "warning": "hi", "kind": "unknown"})
    await sock.barrier()
    await sock.ws.close()

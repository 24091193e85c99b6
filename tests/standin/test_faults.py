"""Fault injection: drops, silence, ignored auth, bad frames, restart."""

from __future__ import annotations

import json

import aiohttp
import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient, load_param, wait_until

SMOL = "smollm2-135m-instruct"


async def assert_dropped(ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return


async def test_drop_connections(server: StandInServer, client: RawClient) -> None:
    a = await client.connect("llm")
    b = await client.connect("system")
    assert server.faults.drop_connections() == 2
    await assert_dropped(a.ws)
    await assert_dropped(b.ws)
    await wait_until(lambda: server.connection_count() == 0)
    c = await client.connect("llm")  # the server itself is still up
    assert await c.result("listLoaded") == []
    await c.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0.5)
async def test_drop_after_mid_load(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    server.faults.drop_after(3, namespace="llm")  # resolved, progress, progress, then drop
    await sock.open_channel("loadModel", load_param(SMOL))
    received = []
    while True:
        msg = await sock.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        received.append(json.loads(msg.data))
    assert [m["message"]["type"] for m in received] == ["resolved", "progress", "progress"]
    await wait_until(lambda: server.connection_count() == 0)
    assert server.loaded_instances() == []


async def test_silent(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    server.faults.silent = True
    await sock.send({"type": "keepAlive"})
    await sock.send({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1})
    await sock.expect_nothing(0.2)
    assert server.connection_count() == 1
    assert len(server.received_messages(namespace="llm", type="rpcCall")) == 1
    server.faults.silent = False
    await sock.barrier()
    await sock.ws.close()


async def test_ignore_auth(server: StandInServer, client: RawClient) -> None:
    server.faults.ignore_auth = True
    sock = await client.raw("llm")
    await sock.send({"authVersion": 1, "clientIdentifier": "guest:x", "clientPasskey": "y"})
    await sock.expect_nothing(0.2)
    assert server.received_messages(namespace="llm")[0]["authVersion"] == 1
    await sock.ws.close()


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("malformed_json", lambda m: m.type == aiohttp.WSMsgType.TEXT and m.data.startswith("{")),
        ("binary", lambda m: m.type == aiohttp.WSMsgType.BINARY),
        ("oversized", lambda m: len(m.data) >= 2 * 1024 * 1024 - 64),
        ("unknown_call", lambda m: json.loads(m.data)["callId"] == 987_654_321),
        ("unknown_channel", lambda m: json.loads(m.data)["channelId"] == 987_654_321),
        ("unsolicited", lambda m: json.loads(m.data) == {"type": "keepAliveAck"}),
    ],
)
async def test_inject_to_all(
    server: StandInServer, client: RawClient, kind: str, check: object
) -> None:
    sock = await client.connect("llm")
    assert server.faults.inject(kind) == 1  # type: ignore[arg-type]
    msg = await sock.ws.receive(timeout=5)
    assert check(msg)  # type: ignore[operator]
    if kind == "malformed_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(msg.data)
    await sock.barrier()  # the connection still works
    await sock.ws.close()


async def test_inject_next_connection(server: StandInServer, client: RawClient) -> None:
    assert (
        server.faults.inject("raw", target="next", namespace="system", payload={"type": "hello"})
        == 0
    )
    llm = await client.connect("llm")
    await llm.barrier()  # not for this namespace
    system = await client.connect("system")
    assert await system.recv() == {"type": "hello"}
    await system.barrier()
    await llm.ws.close()
    await system.ws.close()


def test_inject_unknown_kind_rejected() -> None:
    srv = StandInServer(0)
    with pytest.raises(ValueError, match="unknown fault kind"):
        srv.faults.inject("nonsense")  # type: ignore[arg-type]


async def test_restart_same_port(server: StandInServer, client: RawClient) -> None:
    port = server.port
    sock = await client.connect("llm")
    await sock.channel("loadModel", load_param(SMOL))
    await server.restart()
    await assert_dropped(sock.ws)
    assert server.port == port
    again = await client.connect("llm")
    assert [i["identifier"] for i in await again.result("listLoaded")] == [SMOL]
    await again.ws.close()
    await server.restart(reset_state=True)
    fresh = await client.connect("llm")
    assert await fresh.result("listLoaded") == []
    await fresh.ws.close()


async def test_faults_reset(server: StandInServer, client: RawClient) -> None:
    server.faults.silent = True
    server.faults.drop_after(1)
    server.faults.reset()
    sock = await client.connect("llm")
    await sock.barrier()
    await sock.barrier()
    await sock.ws.close()

"""Greeting, namespaces, authentication, keep-alive."""

from __future__ import annotations

import aiohttp
import pytest

from lmstudio_async.testing import StandInServer, parse_api_token

from ._wire import RawClient

TOKEN = "sk-lm-abcDEF78:abcDEF7890abcDEF7890"
NAMESPACES = [
    "llm",
    "embedding",
    "system",
    "files",
    "repository",
    "diagnostics",
    "plugins",
    "runtime",
]


async def test_greeting(server: StandInServer, client: RawClient) -> None:
    async with client.session.get(f"{server.url}/lmstudio-greeting") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["lmstudio"] is True


def test_addresses_before_start() -> None:
    srv = StandInServer(41999)
    assert srv.port == 41999
    assert srv.host == "127.0.0.1:41999"
    assert srv.url == "http://127.0.0.1:41999"


@pytest.mark.parametrize("namespace", NAMESPACES)
async def test_every_namespace_authenticates(client: RawClient, namespace: str) -> None:
    sock = await client.connect(namespace)
    await sock.send({"type": "keepAlive"})
    assert await sock.recv() == {"type": "keepAliveAck"}
    await sock.ws.close()


async def test_unknown_namespace_is_404(server: StandInServer, client: RawClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.raw("nosuchnamespace")
    assert info.value.status == 404


async def test_garbage_before_auth_is_ignored(client: RawClient) -> None:
    sock = await client.raw("llm")
    await sock.send_raw("not json at all")
    await sock.send({"authVersion": 2, "clientIdentifier": "x", "clientPasskey": "y"})
    await sock.send({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1})
    await sock.send({"authVersion": 1, "clientIdentifier": "x" * 257, "clientPasskey": "y"})
    await sock.expect_nothing()
    await sock.send({"authVersion": 1, "clientIdentifier": "guest:a", "clientPasskey": "b"})
    assert await sock.recv() == {"success": True}
    # the rpcCall sent before authentication was lost
    await sock.barrier()
    await sock.ws.close()


@pytest.mark.lmstudio_server(auth_timeout=0.2)
async def test_auth_timeout(client: RawClient) -> None:
    sock = await client.raw("llm")
    reply = await sock.recv(timeout=2)
    assert reply == {"success": False, "error": "Authentication timed out"}
    msg = await sock.ws.receive(timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_fcfs_passkey_mismatch(client: RawClient) -> None:
    first = await client.connect("llm", identifier="guest:same", passkey="one")
    sock = await client.raw("system")
    await sock.send({"authVersion": 1, "clientIdentifier": "guest:same", "clientPasskey": "two"})
    reply = await sock.recv()
    assert reply["success"] is False
    assert 'Invalid client passkey for client "guest:same"' in reply["error"]
    await first.ws.close()
    await sock.ws.close()


@pytest.mark.lmstudio_server(api_token=TOKEN)
async def test_api_token_required(client: RawClient) -> None:
    ident, passkey = parse_api_token(TOKEN)
    ok = await client.connect("llm", identifier=ident, passkey=passkey)
    await ok.ws.close()
    sock = await client.raw("llm")
    await sock.send({"authVersion": 1, "clientIdentifier": ident, "clientPasskey": "wrong"})
    reply = await sock.recv()
    assert reply["success"] is False
    assert isinstance(reply["error"], str)
    msg = await sock.ws.receive(timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


@pytest.mark.parametrize(
    "token", ["sk-lm-short:abcDEF7890abcDEF7890", "abcDEF78:abcDEF7890abcDEF7890", ""]
)
def test_malformed_token_refused(token: str) -> None:
    with pytest.raises(ValueError, match="malformed LM Studio API token"):
        StandInServer(0, api_token=token)


async def test_websocket_ping_answered(client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.ws.ping(b"hello")
    # aiohttp's client answers/consumes the pong itself; the connection stays usable
    assert await sock.result("listLoaded") == []
    await sock.ws.close()


async def test_binary_frame_with_json_is_accepted(client: RawClient) -> None:
    sock = await client.connect("llm")
    await sock.send_raw(b'{"type":"keepAlive"}')
    assert await sock.recv() == {"type": "keepAliveAck"}
    await sock.ws.close()


async def test_connection_count(server: StandInServer, client: RawClient) -> None:
    a = await client.connect("llm")
    b = await client.connect("system")
    assert server.connection_count() == 2
    assert server.connection_count("llm") == 1
    await a.ws.close()
    await b.ws.close()
